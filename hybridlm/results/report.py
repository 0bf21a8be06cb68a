"""Training curves as static PNGs, and whether a run may be compared with the reference run's published numbers.

Why static images: ``dvc plots show`` writes HTML that loads its chart library from the internet, so on an offline
machine (most GPU boxes) the curves are blank. Matplotlib's Agg backend draws PNGs that any browser shows from disk,
and the render stage puts them on the sample gallery page, so one page holds curves, numbers and samples.

Why from the last checkpoint: every checkpoint stores the whole logged history up to its step (train loss, lr, grad
norm, EMA val loss/PPL), so the curves need no DVCLive folder and are exactly those of the run being sampled.

Why the reference overlay is conditional: the published EMA val losses are only a yardstick for a run with the
reference settings (LJ Speech 1.1 checked by its SHA-256, pretrained EnCodec at 6 kbps, the default chunking, split,
model and optimisation). Drawn under any other run they would invite a comparison that means nothing.
"""

from __future__ import annotations

import dataclasses
import math
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from hybridlm.config import schema, section  # noqa: E402
from hybridlm.data.ljspeech import ARCHIVE_SUFFIXES  # noqa: E402
from hybridlm.training.checkpoint import RUNTIME_MODEL_FIELDS, TRAJECTORY_EXEMPT  # noqa: E402

# The reference run's EMA val loss (nats per codebook token) by step, as published with it (README).
REFERENCE_EMA_VAL_LOSS = {200: 6.79, 1000: 4.85, 1800: 4.28, 3200: 4.05, 5200: 3.92, 7400: 3.86, 10000: 3.83,
                          12000: 3.8207}

# Fields that do not change what the val loss measures, per section: how far the run goes and where it logs, the
# backend and device (same maths), how output is cut into files, and the synthetic corpus' shape (unused then).
NOT_COMPARED = {
    "data": ("source", "synthetic"),  # source: checked below (the SHA-256 is what identifies the corpus)
    "tokenize": ("shard_chunks",),
    "split": ("shard_chunks",),
    "model": RUNTIME_MODEL_FIELDS,
    "train": TRAJECTORY_EXEMPT,
}
COMPARED_SECTIONS = ("data", "resample", "tokenize", "split", "model", "train")


def reference_differences(params: dict[str, Any]) -> list[str]:
    """The settings in which ``params`` differs from the reference run (the schema defaults), as
    ``section.key: ours (reference ...)``; empty when the published numbers apply."""
    diffs = []
    source = section(params, "data").source
    if not (urllib.parse.urlsplit(source).scheme in ("http", "https") or source.endswith(ARCHIVE_SUFFIXES)):
        # a folder or the synthetic corpus is never checked against the SHA-256, so it cannot count as LJ Speech
        diffs.append(f"data.source: {source!r} (reference: the LJ Speech 1.1 archive, checked by data.sha256)")
    for name in COMPARED_SECTIONS:
        ours, ref = dataclasses.asdict(section(params, name)), dataclasses.asdict(schema(name)())
        diffs += [f"{name}.{key}: {ours[key]!r} (reference {ref[key]!r})" for key in ref
                  if key not in NOT_COMPARED.get(name, ()) and ours[key] != ref[key]]
    return diffs


@dataclass(frozen=True)
class Curve:
    """One PNG of the results page: its file name (relative to the page's folder) and what it shows."""

    file: str
    title: str


def _series(history: list[dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    points = [(int(r["step"]), float(r[key])) for r in history if key in r]
    return [s for s, _ in points], [v for _, v in points]


def _figure(path: Path, title: str, ylabel: str, series: list[tuple[str, list[int], list[float], dict]],
            log_y: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    for label, steps, values, style in series:
        ax.plot(steps, values, label=label, **style)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_curves(folder: Path, history: list[dict[str, float]], reference: bool) -> list[Curve]:
    """Draw the run's curves from a checkpoint's ``history`` into ``folder`` (PNG, deterministic bytes); with
    ``reference`` the val plots also show the reference run's published values up to the run's last step, and a
    text-to-speech history's val loss is drawn with and without the text. Returns what was drawn."""
    if not history:
        raise ValueError("checkpoint history is empty: no curves to draw")
    folder.mkdir(parents=True, exist_ok=True)
    line = {"linewidth": 1.0}
    marked = {"marker": "o", "markersize": 3, "linewidth": 1.2}
    published = {"marker": "s", "markersize": 4, "linestyle": "--", "color": "tab:gray"}
    # the published points within this run's range: a 1,800-step run is compared at 200, 1000 and 1800
    last = max(int(r["step"]) for r in history)
    ref_steps = [s for s in sorted(REFERENCE_EMA_VAL_LOSS) if s <= last] if reference else []
    ref_loss = [REFERENCE_EMA_VAL_LOSS[s] for s in ref_steps]
    no_text = _series(history, "val/ema_loss_no_text")  # text-to-speech runs: the gap is what the text is worth
    plots = [
        ("train_loss.png", "train loss (cross-entropy per codebook token)", "nats",
         [("train loss", *_series(history, "train/loss"), line)], False),
        ("lr.png", "learning rate", "lr", [("lr", *_series(history, "train/lr"), line)], False),
        ("grad_norm.png", "gradient norm (before clipping)", "L2 norm",
         [("grad norm", *_series(history, "train/grad_norm"), line)], True),
        ("val_loss.png", "EMA val loss", "nats",
         [("with the text" if no_text[0] else "this run", *_series(history, "val/ema_loss"), marked)]
         + ([("text dropped", *no_text, {**marked, "linestyle": "--"})] if no_text[0] else [])
         + ([("reference run (published)", ref_steps, ref_loss, published)] if ref_steps else []), False),
        ("val_ppl.png", "EMA val perplexity", "PPL",
         [("this run", *_series(history, "val/ema_ppl"), marked)]
         + ([("reference run (published)", ref_steps, [math.exp(v) for v in ref_loss], published)]
            if ref_steps else []), True),
    ]
    curves = []
    for file, title, ylabel, series, log_y in plots:
        if not series[0][1]:
            continue  # e.g. no EMA evaluation logged yet in a very short run
        _figure(folder / file, title, ylabel, series, log_y)
        curves.append(Curve(f"{folder.name}/{file}", title))
    return curves
