"""Sample files and the results page: WAV + spectrogram PNG per sample; one page with the training curves, a metrics
table per checkpoint and the checkpoints x samples grid.

Why one static page: the question "does it get cleaner with more training" is answered by listening to the same
sample slot across checkpoints, side by side, next to the curves and numbers of the same run. A static HTML file
with relative links and no script or style from the network opens from the DVC workspace (or any file server) with
no tooling, offline included.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import mlab  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from hybridlm.atomic import write_text  # noqa: E402
from hybridlm.results.report import Curve  # noqa: E402


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV; audio is clipped to [-1, 1] first (an untrained codec can overshoot)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")  # also for .tmp names


def write_spectrogram(path: Path, audio: np.ndarray, sample_rate: int, title: str) -> None:
    """Log-power spectrogram (dB) as a PNG: 1024-point FFT, 256 hop, 0-12 kHz, drawn as matplotlib's ``specgram``
    draws it, except that bins of exactly zero power (the synthetic corpus's pauses, an untrained model's silence)
    get the quietest power of the clip instead of log10(0) = -inf, which warned and left them blank. A wholly silent
    clip has no dB scale: its axes say "silent"."""
    fig, ax = plt.subplots(figsize=(6, 2.4), dpi=100)
    nfft, overlap = 1024, 768
    spec, freqs, times = mlab.specgram(audio, NFFT=nfft, Fs=sample_rate, noverlap=overlap)
    if np.any(spec > 0):
        power_db = 10.0 * np.log10(np.where(spec > 0, spec, spec[spec > 0].min()))
        pad = (nfft - overlap) / sample_rate / 2  # half a hop beyond the first and last frame centres
        ax.imshow(np.flipud(power_db), "magma", extent=(times.min() - pad, times.max() + pad, freqs[0], freqs[-1]),
                  origin="upper")
        ax.axis("auto")
    else:
        ax.set_xlim(0, len(audio) / sample_rate)
        ax.text(0.5, 0.5, "silent", transform=ax.transAxes, ha="center", va="center")
    ax.set(title=title, xlabel="time (s)", ylabel="Hz", ylim=(0, sample_rate / 2))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass(frozen=True)
class GallerySample:
    """One cell: paths relative to the page, plus (text-to-speech) the prompt, a note, its alignment plot and, on the
    synthetic corpus, what the recogniser heard (hybridlm.synthetic_asr) as the corpus's tones: WAV, spectrogram
    and the class sequence in words."""

    wav: str
    png: str
    prompt: str | None = None
    alignment: str | None = None
    note: str = ""
    heard_wav: str | None = None
    heard_png: str | None = None
    heard_note: str = ""


def _media(wav: str, png: str | None, alt: str) -> str:
    image = "" if png is None else f'<br><img src="{html.escape(png)}" alt="{html.escape(alt)}">'
    return f'<audio controls preload="metadata" src="{html.escape(wav)}"></audio>{image}'


def _cell(label: str, sample: GallerySample | None) -> str:
    if sample is None:
        return "<td>&mdash;</td>"
    parts = []
    if sample.prompt is not None:
        parts.append(f'<p class="prompt">&ldquo;{html.escape(sample.prompt)}&rdquo; {html.escape(sample.note)}</p>')
    parts.append(_media(sample.wav, sample.png, f"spectrogram of {label} {sample.wav}"))
    if sample.alignment is not None:
        parts.append(f'<br><img src="{html.escape(sample.alignment)}" alt="alignment of {label} '
                     f'{html.escape(sample.wav)}">')
    if sample.heard_wav is not None:
        parts.append(f'<p class="heard">{html.escape(sample.heard_note)}</p>'
                     + _media(sample.heard_wav, sample.heard_png, f"what the recogniser heard in {label} "
                              f"{sample.wav}"))
    return f"<td>{''.join(parts)}</td>"


@dataclass(frozen=True)
class GalleryRow:
    step: int
    evaluation: dict | None  # the checkpoint's entry in evaluate's details (loss, ppl, targets, per_codebook) or None
    train_loss: float | None  # train loss logged at this step (the checkpoint's history)
    reference_loss: float | None  # the reference run's published EMA val loss at this step, when comparable
    samples: list[GallerySample]
    extra: dict[str, str] = field(default_factory=dict)  # more metrics columns (header -> formatted value)


def _number(value: float | None, digits: int) -> str:
    return "&mdash;" if value is None else f"{value:.{digits}f}"


def metrics_table(rows: list[GalleryRow]) -> str:
    """A row per checkpoint: EMA val loss and PPL, train loss, the reference value, val tokens, the rows' extra
    columns, CE per codebook."""
    codebooks = sorted({cb for r in rows if r.evaluation for cb in r.evaluation["per_codebook"]},
                       key=lambda name: int(name.removeprefix("cb")))
    extra = list(dict.fromkeys(name for r in rows for name in r.extra))
    head = ("<th>step</th><th>EMA val loss</th><th>EMA val PPL</th><th>train loss</th><th>reference EMA val loss"
            "</th><th>val tokens</th>" + "".join(f"<th>{html.escape(name)}</th>" for name in extra)
            + "".join(f"<th>{html.escape(cb)}</th>" for cb in codebooks))
    body = []
    for row in rows:
        ev = row.evaluation or {}
        per = ev.get("per_codebook", {})
        cells = [_number(ev.get("loss"), 4), _number(ev.get("ppl"), 2), _number(row.train_loss, 4),
                 _number(row.reference_loss, 4), f"{ev['targets']:,}" if "targets" in ev else "&mdash;"]
        cells += [html.escape(row.extra.get(name, "—")) for name in extra]
        cells += [_number(per.get(cb), 4) for cb in codebooks]
        body.append(f'<tr id="metrics-{row.step}"><th>{row.step}</th>' + "".join(f"<td>{c}</td>" for c in cells)
                    + "</tr>")
    return f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>\n{chr(10).join(body)}\n</tbody></table>'


def curves_section(curves: list[Curve], reference_differences: list[str]) -> str:
    """The curve images and a line saying whether the reference run's published values are drawn, and if not why."""
    if not reference_differences:
        note = ("The EMA val plots also show the reference run's published values (grey squares): this run has the "
                "reference settings.")
    else:
        shown = "; ".join(reference_differences[:6]) + ("; ..." if len(reference_differences) > 6 else "")
        note = f"The reference run's published values are not drawn: this run's settings differ ({shown})."
    images = "".join(f'<img src="{html.escape(c.file)}" alt="{html.escape(c.title)}" width="600">' for c in curves)
    return f"<p>{html.escape(note)}</p>\n<div class=\"curves\">{images}</div>"


def write_gallery(path: Path, rows: list[GalleryRow], caption: str, curves: list[Curve],
                  reference_differences: list[str], title: str = "results", metrics_note: str = "",
                  reference: list[GallerySample | None] | None = None) -> None:
    """The results page: training curves, the metrics table (``metrics_note`` explains its extra columns), then a
    row per checkpoint (step, EMA val loss) with a cell per sample (audio player + spectrogram; for text-to-speech
    the prompt above and the alignment below), after a ``reference`` row (the real clips through the codec) when
    given. The sample columns share the page width, so none is cut off. Every path in it is relative to the page."""
    columns = max(len(r.samples) for r in rows)
    head = "".join(f"<th>sample {i}</th>" for i in range(columns))
    body = []
    if reference is not None:
        cells = "".join(_cell("the reference", sample) for sample in reference)
        body.append(f'<tr id="reference"><th class="step">reference<br><span class="loss">the real codes, '
                    f'decoded (codec resynthesis)</span></th>{cells}</tr>')
    for row in rows:
        loss = "n/a" if row.evaluation is None else f"{row.evaluation['loss']:.4f}"
        cells = "".join(_cell(f"step {row.step}", sample) for sample in row.samples)
        body.append(f'<tr id="step-{row.step}"><th class="step">step {row.step}<br>'
                    f'<span class="loss">EMA val loss {loss}</span></th>{cells}</tr>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hybridlm results</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 6px; vertical-align: top; }}
th.step {{ text-align: left; width: 8em; }} .loss {{ font-weight: normal; color: #555; }}
table.samples {{ width: 100%; table-layout: fixed; }} table.samples img {{ width: 100%; max-width: 600px; }}
audio {{ width: 100%; max-width: 420px; }} .prompt, .heard {{ margin: 0 0 4px; overflow-wrap: anywhere; }}
.heard {{ margin-top: 6px; color: #333; }} .curves img {{ margin: 0 8px 8px 0; max-width: 100%; }}
table.metrics {{ font-size: 0.85em; }} table.metrics th {{ font-weight: 600; }}
table.metrics td {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
</style></head>
<body>
<h1>hybridlm: {html.escape(title)}</h1>
<h2>Training curves</h2>
{curves_section(curves, reference_differences)}
<h2>Metrics per checkpoint</h2>
<p>EMA val loss and PPL from the evaluate stage; train loss as logged at that step; cross-entropy
per codebook in nats.{" " + html.escape(metrics_note) if metrics_note else ""}</p>
{metrics_table(rows)}
<h2>Samples</h2>
<p>{html.escape(caption)}</p>
<table class="samples">
<thead><tr><th class="step">checkpoint</th>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
<script>
// Self-check for headless browsers (scripts/check_gallery.py reads these attributes): how many images decoded,
// how many audio files a browser could open, and how far the page is wider than the window (> 0: cut off).
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
  document.body.dataset.overflow = `${{document.documentElement.scrollWidth - document.documentElement.clientWidth}}`;
}});
</script>
</body></html>
"""
    write_text(path, page)
