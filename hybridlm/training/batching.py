"""Training rows packed from delayed chunk sequences, and padded whole-chunk batches for evaluation.

Packing, not padding. A chunk of 2-10 s is 158-758 delayed steps, a row holds ``context`` (1024). Padding each chunk
to a row would waste 26-85% of every row; packing wastes nothing but the tail of each epoch. So each epoch lays the
chunks' delayed sequences back to back in a seeded random order, every one starting with its BOS step, and cuts the
stream into rows of ``context + 1`` steps (inputs = row[:-1], targets = row[1:], so the model sees exactly
``context`` positions and consecutive rows share one boundary step). There is no cross-chunk attention mask: the
BOS step tells the model a new utterance starts and it learns to ignore what came before (standard LM packing; the
end of one chunk carries no information about the next, and evaluation and sampling always start from BOS alone).
Only the last row of each epoch is padded, with PAD (never a target); :attr:`PackedRows.pad_fraction` reports it.

Determinism: the rows of optimizer step ``s`` are a pure function of (seed, s, batch_size) - global row indices
``s * rows_per_step ...`` mapped to (epoch, row) - so a resumed run reads exactly the batches an uninterrupted run
reads, with no loader state to save beyond the step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hybridlm.delay import DelayPattern
from hybridlm.layers.text_encoder import TEXT_PAD_ID


def delayed_sequences(chunks: Sequence, pattern: DelayPattern) -> list[np.ndarray]:
    """Each chunk's codes ``[n_q, T]`` as its delayed sequence ``[n_q, T + n_q]`` (uint16: ids fit below 65,536)."""
    out = []
    for chunk in chunks:
        codes = torch.from_numpy(np.asarray(chunk.codes, dtype=np.int64))
        out.append(pattern.build(codes).numpy().astype(np.uint16))
    return out


class PackedRows:
    """Deterministic packed rows of ``context + 1`` delayed steps over an endless sequence of shuffled epochs."""

    def __init__(self, chunks: Sequence, pattern: DelayPattern, context: int, seed: int) -> None:
        if not chunks:
            raise ValueError("PackedRows: no training chunks")
        if context < 2:
            raise ValueError(f"PackedRows: context must be >= 2, got {context}")
        self.pattern = pattern
        self.context = context
        self.seed = seed
        self.sequences = delayed_sequences(chunks, pattern)
        self.stream_steps = sum(seq.shape[1] for seq in self.sequences)
        targets = self.stream_steps - 1
        self.rows_per_epoch = -(-targets // context)  # ceil
        positions = self.rows_per_epoch * context
        self.pad_fraction = (positions - targets) / positions
        code_positions = sum(int(pattern.target_mask(torch.from_numpy(seq.astype(np.int64))).sum())
                             for seq in self.sequences)
        # Share of target positions (steps x codebooks) that carry loss: the rest are delay gaps, BOS and padding.
        self.target_fraction = code_positions / (positions * pattern.num_codebooks)
        self._epochs: OrderedDict[int, np.ndarray] = OrderedDict()

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Chunk order of one epoch: a permutation seeded by (seed, epoch) alone."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.sequences))

    def _epoch_stream(self, epoch: int) -> np.ndarray:
        if epoch in self._epochs:
            self._epochs.move_to_end(epoch)
            return self._epochs[epoch]
        stream = np.concatenate([self.sequences[i] for i in self.epoch_order(epoch)], axis=1)
        length = self.rows_per_epoch * self.context + 1
        padded = np.full((stream.shape[0], length), self.pattern.pad_id, dtype=np.uint16)
        padded[:, : stream.shape[1]] = stream
        self._epochs[epoch] = padded
        while len(self._epochs) > 2:  # a batch spans at most two epochs
            self._epochs.popitem(last=False)
        return padded

    def position(self, global_row: int) -> tuple[int, int]:
        """(epoch, row within the epoch) of the ``global_row``-th row ever read."""
        return divmod(global_row, self.rows_per_epoch)

    def rows(self, first: int, count: int) -> torch.Tensor:
        """Rows ``first .. first + count - 1`` of the endless stream as LongTensor ``[count, n_q, context + 1]``."""
        out = []
        for global_row in range(first, first + count):
            epoch, row = self.position(global_row)
            stream = self._epoch_stream(epoch)
            out.append(stream[:, row * self.context : row * self.context + self.context + 1])
        return torch.from_numpy(np.stack(out).astype(np.int64))


def pad_sequences(group: Sequence[np.ndarray], pattern: DelayPattern) -> torch.Tensor:
    """Delayed sequences right-padded with PAD into one LongTensor ``[B, n_q, S_max]``."""
    width = max(seq.shape[1] for seq in group)
    batch = np.full((len(group), pattern.num_codebooks, width), pattern.pad_id, dtype=np.int64)
    for row, seq in enumerate(group):
        batch[row, :, : seq.shape[1]] = seq
    return torch.from_numpy(batch)


def pad_texts(texts: Sequence[Sequence[int]]) -> torch.Tensor:
    """Text id lists right-padded with TEXT_PAD_ID into ``[B, L_max]`` (an empty list: a row of pads = no text).
    The same for their durations (frames per id, padding 0 frames)."""
    batch = np.full((len(texts), max(1, max(len(t) for t in texts))), TEXT_PAD_ID, dtype=np.int64)
    for row, ids in enumerate(texts):
        batch[row, : len(ids)] = ids
    return torch.from_numpy(batch)


def eval_batches(sequences: Sequence[np.ndarray], pattern: DelayPattern,
                 batch_size: int) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Whole delayed chunk sequences, each from its own BOS, right-padded with PAD into ``[B, n_q, S_max]`` batches,
    with the indices of the sequences in each (to fetch their texts).

    Right padding is exact for a causal model: positions after a sequence's end never influence its earlier
    positions, and PAD targets carry no loss. Sequences are grouped by length (stable order) to keep padding small.
    """
    order = sorted(range(len(sequences)), key=lambda i: (sequences[i].shape[1], i))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        yield indices, pad_sequences([sequences[i] for i in indices], pattern)


@dataclass(frozen=True)
class TextRows:
    """A micro-batch of sentences: delayed codes ``[B, n_q, S_max]`` (PAD after each one's EOS), their text ids
    ``[B, L_max]`` (rows whose text was dropped are all pad), the frames of each id ``[B, L_max]`` (where the
    pointer reads) and ``hidden [B, n_q, S_max]``: input positions shown as PAD (input dropout; targets keep them)."""

    tokens: torch.Tensor
    text: torch.Tensor
    durations: torch.Tensor
    hidden: torch.Tensor


def hidden_frames(num_steps: int, pattern: DelayPattern, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``[n_q, num_steps]`` bool: every codebook's position of a ``fraction`` of the frames (drawn from ``rng``) of
    a delayed sentence of ``num_steps`` steps.

    Why (decoder input dropout, as Tacotron 2's prenet dropout): a decoder that always sees the previous frame
    lowers its loss by continuing it, and then little gradient reaches the text (the copy-previous-frame shortcut);
    with frames missing from its input it has to read. Why whole frames, through the delay pattern, and not whole
    steps: measured on the demo (600 steps), hiding 30% of frames gave a content gap of 0.098 nats (codebook 0:
    0.395), hiding 30% of steps 0.059 (0.247)."""
    frames = np.flatnonzero(rng.random(pattern.num_frames(num_steps)) < fraction)
    mask = np.zeros((pattern.num_codebooks, num_steps), dtype=bool)
    for q in range(pattern.num_codebooks):
        mask[q, 1 + q + frames] = True
    return mask


class SentenceRows:
    """Deterministic micro-batches of whole sentences (one clip each, with EOS) over endless shuffled epochs.

    No packing, unlike :class:`PackedRows`: a sentence must be read from its own BOS against its own text, and it
    must end in its EOS. Each row is one sentence, padded to the longest in its micro-batch, with its text's
    ``durations`` (frames per id, from the align stage). Text dropout for classifier-free guidance and the input
    frames hidden by ``input_dropout`` are drawn per global row from ``(seed, row)``: like the order, a pure function
    of the step, so resumed runs drop exactly what an uninterrupted run drops.
    """

    def __init__(self, sentences: Sequence, texts: Sequence[Sequence[int]], durations: Sequence[Sequence[int]],
                 pattern: DelayPattern, seed: int, text_dropout: float, input_dropout: float = 0.0) -> None:
        if not sentences:
            raise ValueError("SentenceRows: no training sentences")
        if not pattern.eos:
            raise ValueError("SentenceRows: sentences need a delay pattern with EOS")
        if [len(t) for t in texts] != [len(d) for d in durations]:
            raise ValueError("SentenceRows: every text needs one duration per id")
        self.pattern = pattern
        self.seed = seed
        self.text_dropout = text_dropout
        self.input_dropout = input_dropout
        self.sequences = delayed_sequences(sentences, pattern)
        self.texts = [list(t) for t in texts]
        self.durations = [list(d) for d in durations]
        self.rows_per_epoch = len(self.sequences)
        steps = sum(seq.shape[1] - 1 for seq in self.sequences)
        self.target_fraction = sum(int(pattern.target_mask(torch.from_numpy(seq[:, 1:].astype(np.int64))).sum())
                                   for seq in self.sequences) / (steps * pattern.num_codebooks)

    def epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.sequences))

    def position(self, global_row: int) -> tuple[int, int]:
        """(epoch, row within the epoch) of the ``global_row``-th row ever read."""
        return divmod(global_row, self.rows_per_epoch)

    def rows(self, first: int, count: int) -> TextRows:
        picked, texts, durations, hidden = [], [], [], []
        for global_row in range(first, first + count):
            epoch, row = self.position(global_row)
            index = int(self.epoch_order(epoch)[row])
            dropped = np.random.default_rng([self.seed, global_row, 1]).random() < self.text_dropout
            picked.append(self.sequences[index])
            texts.append([] if dropped else self.texts[index])
            durations.append([] if dropped else self.durations[index])
            hidden.append(hidden_frames(picked[-1].shape[1], self.pattern, self.input_dropout,
                                        np.random.default_rng([self.seed, global_row, 2])))
        mask = np.zeros((count, self.pattern.num_codebooks, max(h.shape[1] for h in hidden)), dtype=bool)
        for row, h in enumerate(hidden):
            mask[row, :, : h.shape[1]] = h
        return TextRows(pad_sequences(picked, self.pattern), pad_texts(texts), pad_texts(durations),
                        torch.from_numpy(mask))
