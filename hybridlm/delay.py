"""MusicGen-style delay pattern for multi-codebook audio tokens.

Why: a codec frame has ``n_q`` tokens (one per residual codebook) that depend on each other. Predicting all of them
in one step forces the heads to guess codebook q without seeing codebooks 0..q-1 of the same frame. Shifting
codebook q right by q steps means that when the model predicts codebook q of frame f, it has already consumed
codebooks 0..q-1 of frame f (and everything before), at the cost of only ``n_q`` extra steps, not ``n_q``x more.

Layout for ``T`` frames (``S = T + n_q`` steps)::

    step:        0    1    2    3   ...
    codebook 0:  BOS  c0,0 c0,1 c0,2 ...  c0,T-1 PAD  ...  PAD
    codebook 1:  BOS  PAD  c1,0 c1,1 ...         c1,T-1 ... PAD
    codebook q:  BOS  (q PADs) cq,0 ... cq,T-1  (n_q-1-q PADs)

so code ``c[q, f]`` sits at step ``1 + q + f``. Special ids (above the 1024 codes, so one 1027-way head covers
them): PAD = 1024 fills gaps and is never a target, BOS = 1025 marks the start step, EOS = 1026 marks the end of
speech. A training pair from a delayed row ``x`` is ``inputs = x[..., :-1]``, ``targets = x[..., 1:]``, with the loss
only where :meth:`target_mask` is True, which gives every codebook exactly ``T`` targets.

With ``eos=True`` (the text-to-speech path: one example per sentence, and sampling must know where speech ends)
every codebook gets one EOS step after its last code, delayed like a frame: EOS of codebook q sits at step
``1 + q + T``, so ``S = T + n_q + 1``. EOS is a target (``T + 1`` per codebook): codebook 0 learns *when* to stop,
and codebook q > 0 learns that EOS follows q steps after codebook 0's. Without ``eos`` (the unconditional 8 s
chunks, which end mid-speech) no EOS is ever built.
"""

from __future__ import annotations

import torch

NUM_SPECIAL = 3


class DelayPattern:
    """Build, revert and mask delayed code sequences for ``num_codebooks`` codebooks of ``codebook_size`` codes."""

    def __init__(self, num_codebooks: int = 8, codebook_size: int = 1024, eos: bool = False) -> None:
        if num_codebooks < 1:
            raise ValueError(f"DelayPattern: num_codebooks must be >= 1, got {num_codebooks}")
        if codebook_size < 1:
            raise ValueError(f"DelayPattern: codebook_size must be >= 1, got {codebook_size}")
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.pad_id = codebook_size
        self.bos_id = codebook_size + 1
        self.eos_id = codebook_size + 2
        self.vocab_size = codebook_size + NUM_SPECIAL
        self.eos = eos

    def num_steps(self, num_frames: int) -> int:
        """Delayed steps for ``num_frames`` frames: one start step plus ``num_frames + num_codebooks - 1``, plus one
        for the EOS step with ``eos``."""
        return num_frames + self.num_codebooks + int(self.eos)

    def num_frames(self, num_steps: int) -> int:
        """Frames held by a delayed sequence of ``num_steps`` steps (the inverse of :meth:`num_steps`)."""
        return num_steps - self.num_codebooks - int(self.eos)

    def _frame_index(self, num_steps: int, device: torch.device | str | None) -> torch.Tensor:
        """``[n_q, num_steps]``: the frame each position holds (``step - 1 - q``; out of range = no frame)."""
        steps = torch.arange(num_steps, device=device)
        return steps[None, :] - 1 - torch.arange(self.num_codebooks, device=device)[:, None]

    def step_ids(self, step: int, codes: torch.Tensor, num_frames: torch.Tensor) -> torch.Tensor:
        """The ids at ``step`` of rows being sampled: ``codes [B, n_q]`` (one drawn per codebook) where codebook q
        holds a frame there (frame ``step - 1 - q`` in ``[0, num_frames)``), EOS at frame ``num_frames`` with
        ``eos``, PAD elsewhere. ``num_frames [B]`` is each row's length, -1 while not known yet (no EOS sampled):
        every frame from 0 on is then a code. The step-by-step form of :meth:`build`, for a decoding loop."""
        frame = (step - 1 - torch.arange(self.num_codebooks, device=codes.device))[None, :]  # [1, n_q]
        end = num_frames[:, None]
        is_code = (frame >= 0) & ((end < 0) | (frame < end))
        is_eos = (end >= 0) & (frame == end) & self.eos
        return torch.where(is_code, codes, torch.where(is_eos, self.eos_id, self.pad_id))

    def code_mask(self, num_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Bool ``[n_q, num_steps]``: True where the pattern holds a code (step ``1 + q + f``, ``0 <= f < T``)."""
        frame = self._frame_index(num_steps, device)
        return (frame >= 0) & (frame < self.num_frames(num_steps))

    def eos_mask(self, num_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Bool ``[n_q, num_steps]``: True at each codebook's EOS step (``1 + q + T``); all False without ``eos``."""
        frame = self._frame_index(num_steps, device)
        return (frame == self.num_frames(num_steps)) & self.eos

    def build(self, codes: torch.Tensor) -> torch.Tensor:
        """``[..., n_q, T]`` codes in ``[0, codebook_size)`` -> ``[..., n_q, T + n_q]`` delayed sequence."""
        self._check_codebook_axis(codes, "codes")
        num_frames = codes.shape[-1]
        if num_frames < 1:
            raise ValueError(f"DelayPattern.build: codes have no frames (shape {tuple(codes.shape)})")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"DelayPattern.build: codes must lie in [0, {self.codebook_size}), got values in "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        steps = self.num_steps(num_frames)
        delayed = codes.new_full((*codes.shape[:-1], steps), self.pad_id, dtype=torch.long)
        delayed[..., 0] = self.bos_id
        for q in range(self.num_codebooks):
            delayed[..., q, 1 + q : 1 + q + num_frames] = codes[..., q, :]
            if self.eos:
                delayed[..., q, 1 + q + num_frames] = self.eos_id
        return delayed

    def revert(self, delayed: torch.Tensor) -> torch.Tensor:
        """``[..., n_q, S]`` delayed sequence -> ``[..., n_q, S - n_q]`` codes; checks every position's role."""
        self._check_codebook_axis(delayed, "delayed")
        steps = delayed.shape[-1]
        if steps < self.num_steps(1):
            raise ValueError(
                f"DelayPattern.revert: need at least {self.num_steps(1)} steps (one frame), got {steps}"
            )
        num_frames = self.num_frames(steps)
        codes_at = self.code_mask(steps, delayed.device)
        expected_special = torch.full_like(codes_at, self.pad_id, dtype=torch.long)
        expected_special[:, 0] = self.bos_id
        expected_special[self.eos_mask(steps, delayed.device)] = self.eos_id
        bad_code = codes_at & ((delayed < 0) | (delayed >= self.codebook_size))
        bad_special = ~codes_at & (delayed != expected_special)
        what_special = "BOS at step 0 / PAD in gaps" + (" / EOS after the last frame" if self.eos else "")
        for bad, what in ((bad_code, "a code"), (bad_special, what_special)):
            if bool(bad.any()):
                index = tuple(int(i) for i in bad.nonzero()[0])
                raise ValueError(
                    f"DelayPattern.revert: position {index} (..., codebook, step) holds {int(delayed[index])} "
                    f"where the pattern expects {what}"
                )
        return torch.stack(
            [delayed[..., q, 1 + q : 1 + q + num_frames] for q in range(self.num_codebooks)], dim=-2
        )

    def target_mask(self, delayed: torch.Tensor) -> torch.Tensor:
        """Bool mask of the positions that carry loss: real codes (``0 <= id < codebook_size``), and EOS with ``eos``.
        The one definition of "a target": the loss, the evaluator and the batching statistics all take it."""
        self._check_codebook_axis(delayed, "delayed")
        mask = (delayed >= 0) & (delayed < self.codebook_size)
        return mask | (delayed == self.eos_id) if self.eos else mask

    def _check_codebook_axis(self, tensor: torch.Tensor, name: str) -> None:
        if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise ValueError(f"DelayPattern: {name} must be an integer tensor, got {tensor.dtype}")
        if tensor.ndim < 2 or tensor.shape[-2] != self.num_codebooks:
            raise ValueError(
                f"DelayPattern: {name} must have shape [..., {self.num_codebooks}, steps], got {tuple(tensor.shape)}"
            )
