"""Whole-model training-step benchmark (`hybridlm bench --model`): hybridlm beside transformers' OlmoHybridModel.

What is timed: one full optimizer step exactly as training runs it (hybridlm.training.loop.train_step: forward,
the chunked 8-head loss, backward, gradient clipping, AdamW) on ``batch`` random rows of ``model.context`` delayed
steps. Both implementations go through that same function with the same embeddings, heads, loss and optimizer
(hybridlm.bench.peer), so the difference is the backbone. Each (implementation, precision) pair gets its own
model and optimizer, two untimed warm-up steps, then ``repeats`` interleaved rounds (one step of every pair per
round, so a burst of other load on a shared machine hits all pairs alike); the median is reported.

Throughput is delayed steps per second: batch x context / step time (one delayed step = 8 codec tokens).

MFU = achieved FLOP/s / device peak. FLOPs per delayed step (forward + backward = 3 x forward):
    6 * P_matmul                                   (every weight matrix and conv filter, not the embeddings)
  + per layer, its kind's mixing_flops (hybridlm.layers.registry):
    attention: 6 * n_heads * head_dim * T          (causal QK^T and AV: 2 x 2 x T/2 per position, x3)
    Gated DeltaNet: 18 * n_heads * K * V           (the recurrence: 3 K x V products per step, x3)
The device peak: on CUDA a table of dense bf16/fp32 tensor-core peaks by GPU name (unknown GPU: no MFU); on CPU
cores x clock (from /proc/cpuinfo) x FLOPs per cycle per core for fp32 FMA: 32 with AVX2 (two 8-wide FMA units),
64 with AVX-512 (turbo clocks and bf16/AMX units ignored, so CPU MFU is an estimate).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from hybridlm.allocator import release_freed_memory
from hybridlm.config import TrainParams, resolve_device
from hybridlm.delay import DelayPattern
from hybridlm.layers.registry import layer_kind
from hybridlm.model import HybridLM, ModelConfig
from hybridlm.sampling import generate
from hybridlm.training.loop import build_model, make_optimizer, train_step
from hybridlm.training.precision import autocast

WARMUP_STEPS = 2
# Dense peak FLOP/s by GPU name substring: (bf16, fp32 non-tensor). Vendor datasheets (SXM parts).
GPU_PEAKS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12),
             "L40S": (362e12, 91.6e12), "A10G": (70e12, 31.2e12), "L4": (121e12, 30.3e12)}


def random_rows(config: ModelConfig, batch: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[batch, n_q, context + 1]`` training rows: BOS then random codes (no PAD), reproducible from ``seed``.

    The one input builder for the whole-model benchmark and the implementation parity tests.
    """
    pattern = DelayPattern(config.num_codebooks, config.codebook_size)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, config.codebook_size, (batch, config.num_codebooks, config.context + 1),
                         generator=generator)
    rows[..., 0] = pattern.bos_id
    return rows.to(device)


def flops_per_step(config: ModelConfig) -> float:
    """Training FLOPs per delayed step (module docstring formula)."""
    with torch.device("meta"):
        model = HybridLM(config)
    matmul = sum(p.numel() for n, p in model.named_parameters() if p.ndim >= 2 and not n.startswith("embed."))
    return 6.0 * matmul + sum(layer_kind(letter).mixing_flops(config) for letter in config.schedule)


def device_peak(device: torch.device, precision: str) -> tuple[float | None, str]:
    """(peak FLOP/s or None, how it was obtained) for the MFU column."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (bf16, fp32) in GPU_PEAKS.items():
            if key in name:
                peak = bf16 if precision == "bf16" else fp32
                return peak, f"{name}: {peak / 1e12:g} TFLOP/s dense {precision} (datasheet)"
        return None, f"{name}: peak unknown, no MFU"
    flags, mhz = set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.partition(":")[2].split())
            elif line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.partition(":")[2])
    except OSError:
        pass
    if mhz is None:
        return None, "CPU clock unknown, no MFU"
    per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags else 16
    cores = torch.get_num_threads()
    peak = cores * mhz * 1e6 * per_cycle
    return peak, (f"CPU: {cores} threads x {mhz / 1e3:.2f} GHz x {per_cycle} fp32 FLOP/cycle "
                  f"= {peak / 1e9:.0f} GFLOP/s (assumed peak, both precisions)")


def _proc_status(field: str) -> float | None:
    """A memory field of /proc/self/status in bytes (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _memory_mark(device: torch.device) -> float | None:
    """Reset the peak counter and return the current level: allocated tensors on CUDA, resident memory on CPU.

    On a CPU the memory freed by the pairs measured before goes back to the kernel first (release_freed_memory):
    left resident, it was counted in this mark and then reused, so whichever implementation ran second looked
    smaller (measured at batch 2 in fp32: transformers 0.51 GiB after hybridlm, 1.83 GiB alone or first).
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return float(torch.cuda.memory_allocated(device))
    release_freed_memory()
    try:  # Linux: writing 5 resets the process's peak RSS (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _proc_status("VmRSS")


def _peak_memory_since(device: torch.device, mark: float | None) -> float | None:
    """Peak bytes above ``mark`` since ``_memory_mark``: this model, its optimizer state and a step's activations
    (the other pairs' models, built earlier, are not counted)."""
    if mark is None:
        return None
    peak = float(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else _proc_status("VmHWM")
    return None if peak is None else peak - mark


@dataclass
class Row:
    name: str
    precision: str
    seconds: float  # median step time
    steps_per_second: float  # delayed steps / s
    peak_memory: float | None
    mfu: float | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_training(config: ModelConfig, batch: int, device: torch.device, repeats: int,
                       precisions: tuple[str, ...], implementations: dict[str, Callable[[ModelConfig], object]],
                       say: Callable[[str], None] = print) -> list[Row]:
    """Median step time of every (implementation, precision) pair; see the module docstring."""
    rows = random_rows(config, batch, seed=0)
    pattern = DelayPattern(config.num_codebooks, config.codebook_size)
    train_cfg = TrainParams()
    pairs, memory, flops = {}, {}, {}
    for name, build in implementations.items():
        for precision in precisions:
            mark = _memory_mark(device)
            torch.manual_seed(0)
            model = build(config).to(device).train()
            optimizer = make_optimizer(model, train_cfg, device)
            flops[name] = flops_per_step(model.config) * batch * config.context

            def step(model=model, optimizer=optimizer, precision=precision):
                train_step(model, optimizer, [rows], train_cfg.lr, train_cfg.grad_clip, device, precision=precision,
                           pattern=pattern)

            for _ in range(WARMUP_STEPS):
                step()
            _sync(device)
            memory[name, precision] = _peak_memory_since(device, mark)
            pairs[name, precision] = step
            say(f"bench: {name} {precision}: warmed up")
    times: dict[tuple[str, str], list[float]] = {key: [] for key in pairs}
    for round_ in range(repeats):
        for key, step in pairs.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[key].append(time.perf_counter() - start)
        say(f"bench: round {round_ + 1}/{repeats} done")
    result = []
    for (name, precision), values in times.items():
        seconds = statistics.median(values)
        peak, _ = device_peak(device, precision)
        result.append(Row(name, precision, seconds, batch * config.context / seconds, memory[name, precision],
                          None if peak is None else flops[name] / seconds / peak))
    return result


def hybridlm_builder(config: ModelConfig) -> HybridLM:
    return build_model(config, seed=0, device=torch.device("cpu"))


def transformers_builder(config: ModelConfig):
    from hybridlm.bench.peer import TransformersPeer

    return TransformersPeer(config)


def format_table(rows: list[Row], config: ModelConfig, batch: int, device: torch.device, repeats: int) -> str:
    """A markdown table with a header naming device, date, shapes and the FLOP/peak assumptions, and the ratio."""
    _, peak_note = device_peak(device, "bf16" if device.type == "cuda" else "fp32")
    threads = torch.get_num_threads()
    cpu = platform.processor() or platform.machine()
    lines = [
        f"Whole-model training step (forward + loss + backward + clip + AdamW), schedule {config.schedule}, "
        f"d_model {config.d_model}, d_ff {config.d_ff}, batch {batch} x {config.context} delayed steps; "
        f"device {device.type} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu}, "
        f"{threads} threads); torch {torch.__version__}; {datetime.date.today().isoformat()}; median of {repeats} "
        f"after {WARMUP_STEPS} warm-up steps; load average {os.getloadavg()[0]:.1f} at the end.",
        f"MFU peak: {peak_note}. FLOPs per delayed step: {flops_per_step(config) / 1e6:.1f} M.",
        "",
        "| implementation | precision | s/step | delayed steps/s | peak memory | MFU |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        memory = "-" if row.peak_memory is None else f"{row.peak_memory / 2**30:.2f} GiB"
        mfu = "-" if row.mfu is None else f"{row.mfu:.1%}"
        lines.append(f"| {row.name} | {row.precision} | {row.seconds:.3f} | {row.steps_per_second:,.0f} | "
                     f"{memory} | {mfu} |")
    best = {}
    for row in rows:
        if row.name not in best or row.seconds < best[row.name].seconds:
            best[row.name] = row
    if "hybridlm" in best and "transformers" in best:
        ours, theirs = best["hybridlm"], best["transformers"]
        lines += ["", f"Best precision each: hybridlm {ours.precision} {ours.seconds:.3f} s/step, transformers "
                      f"{theirs.precision} {theirs.seconds:.3f} s/step: hybridlm is "
                      f"**{theirs.seconds / ours.seconds:.2f}x** transformers' speed."]
    return "\n".join(lines)


def matched_transformer(config: ModelConfig) -> ModelConfig:
    """The pure-attention config with the same layer count and (to within one MLP width step) the same parameter
    count: every layer attention, d_ff chosen so the MLPs absorb the difference. Default: AAAAAAAA, d_ff 1350."""
    def count(cfg: ModelConfig) -> int:
        with torch.device("meta"):
            return HybridLM(cfg).num_parameters()

    layers = len(config.schedule)
    narrow = dataclasses.replace(config, schedule="A" * layers, d_ff=1)
    per_unit = 3 * config.d_model * layers  # parameters per unit of d_ff (SwiGLU: gate, up, down)
    d_ff = 1 + round((count(config) - count(narrow)) / per_unit)
    return dataclasses.replace(narrow, d_ff=max(1, d_ff))


def run_model_benchmark(config: ModelConfig, batch: int, repeats: int, device: str, precisions: tuple[str, ...],
                        baseline: bool, peer: bool = True) -> tuple[list[Row], str]:
    """`hybridlm bench --model`: time hybridlm and transformers (and the matched transformer); print and return
    the rows and the markdown table. ``peer=False`` times hybridlm alone (`--no-peer`): the GPU acceptance run's
    throughput at the reference batch needs no transformers model beside it, and must not pay for one."""
    if batch < 1 or repeats < 1:
        raise ValueError(f"bench: --batch and --repeats must be >= 1, got {batch}, {repeats}")
    dev = resolve_device(device, "bench --device")
    implementations: dict[str, Callable[[ModelConfig], object]] = {"hybridlm": hybridlm_builder}
    if peer:
        implementations["transformers"] = transformers_builder
    if baseline:
        matched = matched_transformer(config)
        implementations[f"hybridlm {matched.schedule} d_ff {matched.d_ff} (matched transformer)"] = \
            lambda _config: hybridlm_builder(matched)
    rows = benchmark_training(config, batch, dev, repeats, precisions, implementations)
    table = format_table(rows, config, batch, dev, repeats)
    print(table)
    return rows, table


ENCODEC_FRAME_RATE = 75  # frames per second of facebook/encodec_24khz: what "real time" means for sampling


def benchmark_generation(config: ModelConfig, frames: int, batches: tuple[int, ...], repeats: int, device: str,
                         precisions: tuple[str, ...], compile: bool = False) -> str:
    """Cached sampling speed (hybridlm.sampling.generate, top-k 250) as ms per delayed step and real-time factor.

    Real-time factor = seconds of audio produced (batch x frames / 75) per second of wall time; > 1 is faster than
    real time. Random weights: the work per step does not depend on the weights. Median of ``repeats`` after one
    untimed short run per setting. ``compile``: each setting also with the compiled decode step
    (:mod:`hybridlm.compiled`), its untimed first run (the compile) reported. Returns the markdown table (also
    printed).
    """
    if frames < 1 or repeats < 1 or not batches or min(batches) < 1:
        raise ValueError(f"bench: --frames, --repeats and batch sizes must be >= 1, got {frames}, {repeats}, "
                         f"{batches}")
    dev = resolve_device(device, "bench --device")
    torch.manual_seed(0)
    model = HybridLM(config).to(dev).eval()
    steps = DelayPattern(config.num_codebooks, config.codebook_size).num_steps(frames) - 1
    lines = [f"Cached generation, schedule {config.schedule}, {frames} frames ({steps} delayed steps) per sample, "
             f"device {dev.type}, {torch.get_num_threads()} threads, median of {repeats}; real time = "
             f"{ENCODEC_FRAME_RATE} frames/s.", "",
             "| batch | precision | decode step | ms per delayed step | x real time | first run s |",
             "| ---: | --- | --- | ---: | ---: | ---: |"]
    for batch in batches:
        for precision in precisions:
            for compiled in (False, True) if compile else (False,):
                times = []
                with autocast(precision, dev):
                    start = time.perf_counter()  # warm-up: allocations, fused weight copies, the compile
                    generate(model, 2, batch_size=batch, compile=compiled)
                    first = time.perf_counter() - start
                    for _ in range(repeats):
                        _sync(dev)
                        start = time.perf_counter()
                        generate(model, frames, batch_size=batch, generator=torch.Generator(dev).manual_seed(0),
                                 compile=compiled)
                        _sync(dev)
                        times.append(time.perf_counter() - start)
                seconds = statistics.median(times)
                lines.append(f"| {batch} | {precision} | {'compiled' if compiled else 'eager'} | "
                             f"{seconds / steps * 1e3:.1f} | {batch * frames / ENCODEC_FRAME_RATE / seconds:.2f} | "
                             f"{first:.1f} |")
    table = "\n".join(lines)
    print(table)
    return table
