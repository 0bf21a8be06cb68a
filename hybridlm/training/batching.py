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

import numpy as np
import torch

from hybridlm.delay import DelayPattern


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


def eval_batches(sequences: Sequence[np.ndarray], pattern: DelayPattern, batch_size: int) -> Iterator[torch.Tensor]:
    """Whole delayed chunk sequences, each from its own BOS, right-padded with PAD into ``[B, n_q, S_max]`` batches.

    Right padding is exact for a causal model: positions after a sequence's end never influence its earlier
    positions, and PAD targets carry no loss. Sequences are grouped by length (stable order) to keep padding small.
    """
    order = sorted(range(len(sequences)), key=lambda i: (sequences[i].shape[1], i))
    for start in range(0, len(order), batch_size):
        group = [sequences[i] for i in order[start : start + batch_size]]
        width = max(seq.shape[1] for seq in group)
        batch = np.full((len(group), pattern.num_codebooks, width), pattern.pad_id, dtype=np.int64)
        for row, seq in enumerate(group):
            batch[row, :, : seq.shape[1]] = seq
        yield torch.from_numpy(batch)
