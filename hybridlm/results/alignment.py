"""Cross-attention alignment plots: which text position each audio frame attends to.

Why: cross-attention text-to-speech models skip and repeat words, and the alignment shows it at a glance: a clean
reading is one bright staircase from the first character (bottom left) to the last (top right); a repeat is a
step back down, a skip a jump up, babble a smear. :func:`alignment_stats` puts two numbers on it so a gallery row
or a metrics file can say it without the picture.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import torch  # noqa: E402

from hybridlm.atomic import atomic_path  # noqa: E402
from hybridlm.data.sentence_reader import sentence_pattern  # noqa: E402
from hybridlm.model import HybridLM  # noqa: E402

MAX_TICK_LABELS = 60  # beyond this many characters, label every k-th one so the labels stay readable


def _as_matrix(weights, text: str) -> np.ndarray:
    """``weights`` (numpy or torch, [frames, text_len]) as float64 numpy, checked against ``text``."""
    if hasattr(weights, "detach"):
        weights = weights.detach().float().cpu().numpy()
    matrix = np.asarray(weights, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise ValueError(f"alignment weights must be [frames, text_len] with both > 0, got shape {matrix.shape}")
    if matrix.shape[1] != len(text):
        raise ValueError(f"alignment weights have {matrix.shape[1]} text positions but the text has {len(text)} "
                         f"characters ({text[:40]!r}); pass the text as encoded (normalised)")
    if not np.isfinite(matrix).all():
        raise ValueError("alignment weights contain NaN or inf")
    return matrix


def alignment_stats(weights, text: str) -> dict[str, float]:
    """``monotonic``: share of consecutive frames whose most-attended text position does not move back;
    ``coverage``: share of text positions that are the most-attended one in at least one frame (1.0 = nothing
    skipped). A clean reading scores near 1.0 on both."""
    matrix = _as_matrix(weights, text)
    focus = matrix.argmax(axis=1)
    steps = np.diff(focus)
    monotonic = float(np.mean(steps >= 0)) if len(steps) else 1.0
    return {"monotonic": round(monotonic, 4), "coverage": round(len(set(focus.tolist())) / len(text), 4)}


def write_alignment(weights, text: str, path: Path | str, title: str = "", frame_rate: float = 75.0) -> None:
    """PNG of ``weights`` [frames, text_len] (e.g. one cross-attention layer, heads averaged): audio frame (and
    seconds) across, text position up, each row labelled with its character; the title carries
    :func:`alignment_stats`. Written atomically."""
    matrix = _as_matrix(weights, text)
    stats = alignment_stats(matrix, text)
    frames, length = matrix.shape
    fig, ax = plt.subplots(figsize=(min(12.0, 4.5 + frames / 60), min(10.0, 2.0 + length / 12)), dpi=100)
    image = ax.imshow(matrix.T, origin="lower", aspect="auto", interpolation="nearest", cmap="viridis")
    every = max(1, -(-length // MAX_TICK_LABELS))
    ticks = list(range(0, length, every))
    ax.set_yticks(ticks, [repr(text[i])[1:-1] if text[i] != " " else "␣" for i in ticks], fontsize=7,
                  fontfamily="monospace")
    ax.set_xlabel(f"audio frame ({frame_rate:g} per second)")
    ax.set_ylabel("text position")
    ax.set_title(f"{title + ': ' if title else ''}monotonic {stats['monotonic']:.2f}, coverage "
                 f"{stats['coverage']:.2f}", fontsize=9)
    seconds = ax.secondary_xaxis("top", functions=(lambda f: f / frame_rate, lambda s: s * frame_rate))
    seconds.set_xlabel("seconds", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label="attention weight")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def reading_alignment(model: HybridLM, codes: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``[frames, characters]``: cross-attention weights of ``model`` re-reading ``codes [n_q, T]`` against
    ``text [L]``, averaged over cross-attention layers; row t is the step that predicts frame t. They are the
    pointer path that :func:`hybridlm.sampling.speak` read the codes with (the duration predictor's): one-hot per step, 0
    once the text is over."""
    delayed = sentence_pattern(model.config).build(codes.cpu()).to(text.device)
    with torch.no_grad():
        weights = model(delayed[None, :, :-1], text=text[None], durations=model.predict_durations(text[None]),
                        return_alignments=True).alignments
    return weights[:, 0].float().mean(0)[: codes.shape[-1]]
