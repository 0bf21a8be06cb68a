"""Sample files and the HTML gallery: WAV + spectrogram PNG per sample, one page of checkpoints x samples.

Why one static page: the question "does it get cleaner with more training" is answered by listening to the same
sample slot across checkpoints, side by side, with the step and EMA val loss next to each row. A static HTML file
with relative links opens from the DVC workspace (or any file server) with no tooling.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from hybridlm.atomic import write_text  # noqa: E402


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV; audio is clipped to [-1, 1] first (an untrained codec can overshoot)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")


def write_spectrogram(path: Path, audio: np.ndarray, sample_rate: int, title: str) -> None:
    """Log-power spectrogram (dB) as a PNG: 1024-point FFT, 256 hop, 0-12 kHz."""
    fig, ax = plt.subplots(figsize=(6, 2.4), dpi=100)
    ax.specgram(audio, NFFT=1024, Fs=sample_rate, noverlap=768, cmap="magma", scale="dB")
    ax.set(title=title, xlabel="time (s)", ylabel="Hz", ylim=(0, sample_rate / 2))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass(frozen=True)
class GalleryRow:
    step: int
    val_loss: float | None  # EMA val CE of the checkpoint (metrics/eval.json); None if not evaluated
    samples: list[tuple[str, str]]  # (wav, png) paths relative to the page


def write_gallery(path: Path, rows: list[GalleryRow], caption: str) -> None:
    """One HTML page: a row per checkpoint (step, EMA val loss), a cell per sample (audio player + spectrogram)."""
    columns = max(len(r.samples) for r in rows)
    head = "".join(f"<th>sample {i}</th>" for i in range(columns))
    body = []
    for row in rows:
        loss = "n/a" if row.val_loss is None else f"{row.val_loss:.4f}"
        cells = "".join(
            f'<td><audio controls preload="metadata" src="{html.escape(wav)}"></audio><br>'
            f'<img src="{html.escape(png)}" alt="spectrogram of step {row.step} {html.escape(wav)}" width="420"></td>'
            for wav, png in row.samples
        )
        body.append(f'<tr id="step-{row.step}"><th class="step">step {row.step}<br>'
                    f'<span class="loss">EMA val loss {loss}</span></th>{cells}</tr>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hybridlm samples</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 6px; vertical-align: top; }}
th.step {{ text-align: left; white-space: nowrap; }} .loss {{ font-weight: normal; color: #555; }}
audio {{ width: 420px; }}
</style></head>
<body>
<h1>hybridlm: unconditional samples per checkpoint</h1>
<p>{html.escape(caption)}</p>
<table>
<thead><tr><th>checkpoint</th>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
<script>
// Self-check for headless browsers (scripts/check_gallery.py reads these attributes): how many spectrograms decoded
// and how many audio files a browser could open.
window.addEventListener("load", async () => {{
  const images = [...document.images];
  const players = [...document.querySelectorAll("audio")];
  const playable = await Promise.all(players.map((a) => new Promise((done) => {{
    if (a.readyState >= 1) return done(true);
    a.addEventListener("loadedmetadata", () => done(true));
    a.addEventListener("error", () => done(false));
    a.load();
  }})));
  document.body.dataset.images = `${{images.filter((i) => i.complete && i.naturalWidth > 0).length}}/${{images.length}}`;
  document.body.dataset.audio = `${{playable.filter(Boolean).length}}/${{players.length}}`;
}});
</script>
</body></html>
"""
    write_text(path, page)
