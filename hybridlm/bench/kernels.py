"""Timing of the Gated DeltaNet backends (`hybridlm bench`): forward and forward+backward, median of repeats.

Why interleaved repeats: on a shared machine a burst of other work would otherwise land on one backend only;
running one repeat of every backend per round spreads it over all of them, so the ratios stay meaningful.
Speed targets are checked with this command, never with a timed test.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from hybridlm.ops.gated_delta import (
    chunk_gated_delta_rule_torch,
    fla_available,
    fla_chunk,
    recurrent_gated_delta_rule,
)

REFERENCE = "torch_recurrent"


def _external_baselines() -> dict[str, Callable]:
    """transformers' own pure-PyTorch chunk function, as an outside yardstick (only when it is the torch path).

    When fla is installed, transformers binds that name to fla's kernel; it is then not a pure-torch baseline and
    fla_chunk already has its row.
    """
    try:
        from transformers.models.olmo_hybrid import modeling_olmo_hybrid as module
    except Exception:  # transformers without the olmo_hybrid model
        return {}
    fn = getattr(module, "torch_chunk_gated_delta_rule", None)
    if fn is None or getattr(fn, "__module__", "") != module.__name__:
        return {}

    def call(q, k, v, g, beta):
        # Its q is scaled by K^-0.5 inside, as ours by default.
        return fn(q, k, v, g, beta, output_final_state=False)

    return {"transformers torch_chunk (external)": call}


def _backends(device: torch.device) -> dict[str, Callable]:
    backends: dict[str, Callable] = {
        REFERENCE: recurrent_gated_delta_rule,
        "torch_chunk": chunk_gated_delta_rule_torch,
    }
    if device.type == "cuda" and fla_available():
        backends["fla_chunk"] = fla_chunk
    backends.update(_external_baselines())
    return backends


def _inputs(batch, length, heads, key_dim, value_dim, device, generator) -> list[torch.Tensor]:
    def rand(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    q = torch.nn.functional.normalize(rand(batch, length, heads, key_dim), dim=-1)
    k = torch.nn.functional.normalize(rand(batch, length, heads, key_dim), dim=-1)
    v = rand(batch, length, heads, value_dim)
    g = torch.nn.functional.logsigmoid(rand(batch, length, heads) + 3.0)  # realistic decays, ~ -0.05 per step
    beta = torch.sigmoid(rand(batch, length, heads))
    return [x.requires_grad_() for x in (q, k, v, g, beta)]


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run_benchmark(batch: int = 2, length: int = 1024, heads: int = 6, key_dim: int = 48, value_dim: int = 96,
                  repeats: int = 5, device: str = "auto") -> list[dict]:
    """Print (and return) median forward and forward+backward milliseconds per backend, and speed-ups vs the loop.

    Each backend runs once untimed (warm-up), then ``repeats`` interleaved rounds. Rows: name, fwd_ms, fwd_bwd_ms,
    speedup (loop fwd+bwd time / this fwd+bwd time), max_abs_diff (output vs the loop).
    """
    for name, value in (("batch", batch), ("length", length), ("heads", heads), ("key_dim", key_dim),
                        ("value_dim", value_dim), ("repeats", repeats)):
        if value < 1:
            raise ValueError(f"bench: {name} must be >= 1, got {value}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"bench: device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("bench: device 'cuda' requested but torch sees no CUDA GPU")
    dev = torch.device(device)
    inputs = _inputs(batch, length, heads, key_dim, value_dim, dev, torch.Generator().manual_seed(0))
    backends = _backends(dev)

    def forward(fn):
        with torch.no_grad():
            return fn(*inputs)[0]

    def forward_backward(fn):
        for x in inputs:
            x.grad = None
        fn(*inputs)[0].sum().backward()

    reference = forward(backends[REFERENCE])
    diffs = {name: (forward(fn).float() - reference.float()).abs().max().item() for name, fn in backends.items()}
    for fn in backends.values():  # warm-up
        forward_backward(fn)
    fwd: dict[str, list[float]] = {name: [] for name in backends}
    fwd_bwd: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(repeats):
        for name, fn in backends.items():
            fwd[name].append(_timed(lambda: forward(fn), dev))
            fwd_bwd[name].append(_timed(lambda: forward_backward(fn), dev))

    loop_ms = statistics.median(fwd_bwd[REFERENCE]) * 1e3
    rows = []
    for name in backends:
        fb_ms = statistics.median(fwd_bwd[name]) * 1e3
        rows.append({"name": name, "fwd_ms": statistics.median(fwd[name]) * 1e3, "fwd_bwd_ms": fb_ms,
                     "speedup": loop_ms / fb_ms, "max_abs_diff": diffs[name]})

    print(f"gated delta rule, fp32, B={batch} T={length} H={heads} K={key_dim} V={value_dim}, device={device}, "
          f"threads={torch.get_num_threads()}, median of {repeats} (after warm-up)")
    header = f"{'backend':<38} {'fwd ms':>9} {'fwd+bwd ms':>11} {'vs loop':>8} {'max|o-loop|':>12}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['name']:<38} {row['fwd_ms']:>9.1f} {row['fwd_bwd_ms']:>11.1f} {row['speedup']:>7.1f}x "
              f"{row['max_abs_diff']:>12.2e}")
    return rows
