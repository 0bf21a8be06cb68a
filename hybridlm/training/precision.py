"""Numeric precision of training, evaluation and sampling: ``auto | bf16 | fp32`` -> an autocast context.

``bf16`` means bf16 *autocast*: the weights, the AdamW state, the norms, the Gated DeltaNet recurrence and the loss
stay fp32; autocast runs the matmuls (projections, attention, the heads) in bf16. No loss scaling is needed (bf16
has fp32's exponent range).

``auto`` resolves per device, from measurement:
- CUDA: bf16 (every GPU this project targets has bf16 tensor cores; the reference runs were bf16).
- CPU: bf16 only when the CPU has native bf16 matrix instructions (``avx512_bf16`` or ``amx_bf16`` in
  /proc/cpuinfo). Without them oneDNN emulates bf16 and it is *slower* than fp32: on the AVX2-only 2-core AMD EPYC
  these tests run on, a [3072 x 384] x [384 x 8216] matmul took 1.38 s in bf16 against 0.49 s in fp32. With them
  (the machine issue 8 was measured on) a whole training step ran 1.66 s in bf16 against 2.61 s in fp32.
  Elsewhere (no /proc/cpuinfo) ``auto`` is fp32.

The resolved precision is part of a run's identity (``trajectory_params``): bf16 and fp32 runs take different
trajectories, so resuming one from the other's states would silently mix them.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
import torch

from hybridlm.config import PRECISIONS
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """True when the CPU advertises bf16 matrix instructions (Linux /proc/cpuinfo flags); False when unknown."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def resolve_precision(name: str, device: torch.device | str, key: str = "train.precision") -> str:
    """``auto`` -> ``bf16`` or ``fp32`` for ``device`` (see the module docstring); ``bf16``/``fp32`` unchanged."""
    if name not in PRECISIONS:
        raise ValueError(f"params.yaml: '{key}' must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name != "auto":
        return name
    device_type = torch.device(device).type
    if device_type == "cuda":
        return "bf16"
    if device_type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context to run a forward in: bf16 autocast on ``device`` for ``bf16``, nothing for ``fp32``.

    ``precision`` must already be resolved (not ``auto``), so that the caller has recorded what it ran in.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be resolved to bf16 or fp32 before use, got {precision!r}")
