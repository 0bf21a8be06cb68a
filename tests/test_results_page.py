"""The offline results page: curves drawn from a checkpoint's history, the reference overlay only for the reference
settings, a metrics table per checkpoint, and the whole page (curves, spectrograms, audio) loading in headless
Chromium from disk with no network resource."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from hybridlm.config import load_params
from hybridlm.data.synthetic import synthesize
from hybridlm.demo import demo_overrides
from hybridlm.results.alignment import write_alignment
from hybridlm.results.gallery import GalleryRow, GallerySample, write_gallery, write_spectrogram, write_wav
from hybridlm.results.report import REFERENCE_EMA_VAL_LOSS, reference_differences, write_curves
from hybridlm.workspace import merge

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import check_gallery  # noqa: E402


def history(records: int = 40, every: int = 50, eval_every: int = 10) -> list[dict[str, float]]:
    """A made-up run logged every ``every`` steps up to ``records * every`` (default 2000: past the reference's 1800)."""
    out = []
    for i in range(1, records + 1):
        record = {"step": i * every, "train/loss": 7.0 - i / 10, "train/lr": 1e-3 * min(1, i / 5),
                  "train/grad_norm": 2.0 / i}
        if i % eval_every == 0:
            record.update({"val/ema_loss": 6.5 - i / 20, "val/ema_ppl": math.exp(6.5 - i / 20)})
        out.append(record)
    return out


def test_reference_overlay_only_for_the_reference_settings():
    params = load_params(ROOT / "params.yaml")
    assert reference_differences(params) == []
    # what may change without changing what the val loss measures
    assert reference_differences(merge(params, {"train": {"steps": 12000, "device": "cpu", "precision": "fp32"},
                                                "model": {"gdn_backend": "torch_chunk"},
                                                "data": {"source": "/data/LJSpeech-1.1.tar.bz2"}})) == []
    demo = reference_differences(merge(params, demo_overrides()))
    assert "tokenize.weights: 'random' (reference 'pretrained')" in demo
    assert demo[0].startswith("data.source: 'synthetic'")  # the corpus first: the page shows the first six
    assert reference_differences(merge(params, {"train": {"lr": 3e-4}})) == ["train.lr: 0.0003 (reference 0.001)"]
    assert reference_differences(merge(params, {"data": {"source": "/corpora/LJSpeech-1.1"}}))[0].startswith(
        "data.source: '/corpora/LJSpeech-1.1' (reference: the LJ Speech 1.1 archive")


def test_curves_are_drawn_from_the_history_with_the_overlay_on_request(tmp_path):
    plain = write_curves(tmp_path / "a" / "curves", history(), reference=False)
    overlaid = write_curves(tmp_path / "b" / "curves", history(), reference=True)
    files = ["train_loss.png", "lr.png", "grad_norm.png", "val_loss.png", "val_ppl.png"]
    assert [c.file for c in plain] == [f"curves/{f}" for f in files] == [c.file for c in overlaid]
    for name in files:
        a, b = (tmp_path / "a/curves" / name).read_bytes(), (tmp_path / "b/curves" / name).read_bytes()
        assert a[:8] == b"\x89PNG\r\n\x1a\n"
        assert (a == b) == (not name.startswith("val_")), name  # the overlay changes the val plots only
    again = write_curves(tmp_path / "c" / "curves", history(), reference=True)
    assert all((tmp_path / "c" / c.file).read_bytes() == (tmp_path / "b" / c.file).read_bytes() for c in again)
    # a run too short to have an EMA evaluation gets the train curves only
    assert [c.file for c in write_curves(tmp_path / "d" / "curves", history(4), False)] == [
        f"curves/{f}" for f in files[:3]]
    # the published points are drawn up to the run's last step only: none before step 200
    write_curves(tmp_path / "f" / "curves", history(every=1), reference=True)
    write_curves(tmp_path / "g" / "curves", history(every=1), reference=False)
    assert (tmp_path / "f/curves/val_loss.png").read_bytes() == (tmp_path / "g/curves/val_loss.png").read_bytes()
    with pytest.raises(ValueError, match="history is empty"):
        write_curves(tmp_path / "e", [], False)
    # a text-to-speech history: the val loss without the text joins that plot (and only that one)
    tts = [{**r, "val/ema_loss_no_text": r["val/ema_loss"] + 0.1} if "val/ema_loss" in r else r for r in history()]
    write_curves(tmp_path / "t" / "curves", tts, reference=False)
    for name in files:
        same = (tmp_path / "t/curves" / name).read_bytes() == (tmp_path / "a/curves" / name).read_bytes()
        assert same == (name != "val_loss.png"), name


def build_page(folder: Path, reference: bool) -> Path:
    """A results page as the render stage writes it: curves, two checkpoints x two samples, a metrics table."""
    curves = write_curves(folder / "curves", history(), reference=reference)
    rng = np.random.default_rng(0)
    rows = []
    for step in (1000, 2000):
        samples = []
        for k in range(2):
            audio = 0.1 * rng.standard_normal(4800).astype(np.float32)
            write_wav(folder / f"step-{step:06d}/sample-{k}.wav", audio, 24_000)
            write_spectrogram(folder / f"step-{step:06d}/sample-{k}.png", audio, 24_000, f"step {step}, sample {k}")
            samples.append(GallerySample(f"step-{step:06d}/sample-{k}.wav", f"step-{step:06d}/sample-{k}.png"))
        evaluation = {"step": step, "loss": 6.5 - step / 1000, "ppl": math.exp(6.5 - step / 1000), "targets": 1234,
                      "per_codebook": {f"cb{i}": 6.0 + i / 10 for i in range(8)}}
        reference = REFERENCE_EMA_VAL_LOSS.get(step) if reference else None
        rows.append(GalleryRow(step, evaluation, 7.0 - step / 1000, reference, samples))
    write_gallery(folder / "index.html", rows, "caption", curves,
                  [] if reference else ["tokenize.weights: 'random' (reference 'pretrained')"])
    return folder / "index.html"


def test_page_holds_curves_metrics_and_samples_with_relative_paths_only(tmp_path):
    page = build_page(tmp_path, reference=True).read_text()
    assert page.count('<img src="curves/') == 5 and page.count("<audio") == 4
    assert not re.search(r'(src|href)="(https?:|//|/)', page)  # nothing from the network, nothing absolute
    for step in (1000, 2000):
        row = re.search(rf'<tr id="metrics-{step}">(.*?)</tr>', page, re.S).group(1)
        assert f"{6.5 - step / 1000:.4f}" in row and f"{math.exp(6.5 - step / 1000):.2f}" in row
        assert f"{7.0 - step / 1000:.4f}" in row and "1,234" in row
        assert ("4.8500" in row) == (step == 1000)  # the reference column, where the reference run has a value
    other = build_page(tmp_path / "other", reference=False).read_text()
    assert "not drawn" in other and "tokenize.weights: &#x27;random&#x27; (reference &#x27;pretrained&#x27;)" in other


@pytest.mark.skipif(check_gallery.find_browser() is None, reason="needs Chromium (apt-get install -y chromium)")
def test_page_loads_offline_in_headless_chromium(tmp_path):
    page = build_page(tmp_path / "site", reference=True)
    ok, summary = check_gallery.check(page, tmp_path / "shot.png")
    assert ok, summary
    assert "decoded 9/9" in summary and "playable 4/4" in summary  # 5 curves + 4 spectrograms
    from PIL import Image

    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("L"), dtype=np.float32)
    assert shot.std() > 10  # not a blank page


PROMPTS = ["a quiet word.", "the prisoner was taken to the court on the following morning.", "bat ok.", "zz top."]


def build_tts_page(folder: Path) -> Path:
    """A text-to-speech page as render_tts writes it: a reference row, two checkpoints x four prompts with labelled
    alignments and what the recogniser heard, and the reading columns in the metrics table. The cells of a prompt
    share its files (the layout is under test, not the audio)."""
    curves = write_curves(folder / "curves", history(), reference=False)
    cells = []
    for k, prompt in enumerate(PROMPTS):
        clip = synthesize(prompt, sample_rate=24_000)
        write_wav(folder / f"prompt-{k}.wav", clip.samples, 24_000)
        write_spectrogram(folder / f"prompt-{k}.png", clip.samples, 24_000, f"prompt {k}")
        write_alignment(np.eye(len(clip.text))[np.maximum(clip.char_of_frame, 0)], clip.text,
                        folder / f"prompt-{k}.align.png", f"prompt {k}")
        cells.append((f"prompt-{k}.wav", f"prompt-{k}.png", prompt, f"prompt-{k}.align.png", "(val)"))
    write_wav(folder / "codec-resynthesis/val-0.wav", np.zeros(2400), 24_000)
    heard = (f"prompt-0.wav", f"prompt-0.png", "heard as sound classes: ...")
    reference = [GallerySample("codec-resynthesis/val-0.wav", None, PROMPTS[k], None, "(real codes)", *heard)
                 for k in range(2)] + [None, None]
    rows = []
    for step in (100, 200):
        samples = [GallerySample(*cell, *(heard if k < 2 else ())) for k, cell in enumerate(cells)]
        evaluation = {"step": step, "loss": 0.9, "ppl": math.exp(0.9), "targets": 999,
                      "per_codebook": {f"cb{i}": 0.8 + i / 100 for i in range(8)}}
        extra = {"val loss without text": "0.9859", "conditioning gap": "0.0897", "content gap": f"{step / 1e4:.4f}",
                 "content gap cb0": "0.0950", "reading error (floor)": "0.170 (0.000)", "duration r": "0.912",
                 "EOS rate": "0.97"}
        rows.append(GalleryRow(step, evaluation, 0.5, None, samples, extra))
    write_gallery(folder / "index.html", rows, "caption", curves, ["a text-to-speech fine-tune"],
                  title="text-to-speech results", metrics_note="what the columns mean", reference=reference)
    return folder / "index.html"


@pytest.fixture(scope="module")
def tts_page(tmp_path_factory) -> Path:
    return build_tts_page(tmp_path_factory.mktemp("tts-page"))


def test_tts_page_puts_the_reading_metrics_beside_the_losses_and_links_the_reference(tts_page):
    page = tts_page.read_text()
    head = re.search(r'<table class="metrics"><thead>(.*?)</thead>', page, re.S).group(1)
    assert head.index("EMA val loss") < head.index("val loss without text") < head.index("content gap") < \
        head.index("reading error (floor)") < head.index("duration r") < head.index("EOS rate") < head.index("<th>cb0</th>")
    row = re.search(r'<tr id="metrics-200">(.*?)</tr>', page, re.S).group(1)
    assert "<td>0.0200</td>" in row and "<td>0.170 (0.000)</td>" in row and "<td>0.912</td>" in row
    reference = re.search(r'<tr id="reference">(.*?)</tr>', page, re.S).group(1)
    assert reference.count('src="codec-resynthesis/val-0.wav"') == 2 and reference.count("&mdash;") == 2
    assert page.index('id="reference"') < page.index('id="step-100"')
    assert page.count('class="heard"') == 2 + 2 * 2 and "what the columns mean" in page


@pytest.mark.skipif(check_gallery.find_browser() is None, reason="needs Chromium (apt-get install -y chromium)")
def test_tts_page_fits_1400_px_in_headless_chromium(tts_page, tmp_path):
    ok, summary = check_gallery.check(tts_page, tmp_path / "shot.png")
    assert ok and "0 px wider than the 1400 px window" in summary, summary


def test_spectrograms_of_silence_and_of_pauses_draw_without_warnings(tmp_path, recwarn):
    """Exact zeros have no dB (log10 of 0): a clip with a pause draws the pause at its quietest power instead of
    warning and leaving it blank, a wholly silent clip says "silent", and a clip without zeros is the very image
    matplotlib's specgram draws."""
    import matplotlib.pyplot as plt

    clip = (np.sin(np.arange(48_000) * 0.05) * 0.3).astype(np.float32) + np.float32(0.01)
    paused = clip.copy()
    paused[10_000:30_000] = 0
    for name, audio in {"clip": clip, "paused": paused, "silent": np.zeros_like(clip)}.items():
        write_spectrogram(tmp_path / f"{name}.png", audio, 24_000, "t")
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    images = {name: (tmp_path / f"{name}.png").read_bytes() for name in ("clip", "paused", "silent")}
    assert len(set(images.values())) == 3
    fig, ax = plt.subplots(figsize=(6, 2.4), dpi=100)
    ax.specgram(clip, NFFT=1024, Fs=24_000, noverlap=768, cmap="magma", scale="dB")
    ax.set(title="t", xlabel="time (s)", ylabel="Hz", ylim=(0, 12_000))
    fig.tight_layout()
    fig.savefig(tmp_path / "matplotlib.png")
    plt.close(fig)
    assert images["clip"] == (tmp_path / "matplotlib.png").read_bytes()
