"""The results page of a run's checkpoints: the one implementation of the render and render_tts stages,
parameterised by whether the checkpoints are text-conditioned (a :class:`Reader` of prompts, or none).

Every selected checkpoint samples with the same seed, so slot K is comparable across checkpoints; the codes are
decoded by the codec the token shards were made with (Codec.decode: always under the deterministic kernels); each
sample is a WAV and a spectrogram; the page (hybridlm.results.gallery) holds the training curves (from the last
saved checkpoint's history: hybridlm.results.trained), a metrics table per checkpoint from the evaluate stage's
metrics and the checkpoints x samples grid.

Unconditional: ``render.samples`` samples of ``render.seconds`` each, all decoded and shown; the reference run's
published EMA val losses beside the table and curves when the run has the reference settings. Text-conditioned:
the reader (hybridlm.results.readings.Readings) has every checkpoint read its prompts aloud and writes the page
with their scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from hybridlm.atomic import atomic_dir
from hybridlm.config import RenderParams, TtsRenderParams
from hybridlm.data.codec import Codec, shard_codec
from hybridlm.model import HybridLM
from hybridlm.results.gallery import GalleryRow, GallerySample, write_gallery, write_spectrogram, write_wav
from hybridlm.results.report import REFERENCE_EMA_VAL_LOSS, Curve, write_curves
from hybridlm.results.trained import Trained
from hybridlm.sampling import generate
from hybridlm.training.precision import autocast


class Reader(Protocol):
    """What text-conditioned checkpoints do on the page (implemented by hybridlm.results.readings.Readings; a
    protocol here so that the unconditional page does not import the text-to-speech code)."""

    def read(self, trained: Trained, step: int, state: dict, model: HybridLM, codec: Codec, frame_rate: int,
             generator: torch.Generator, tmp: Path, evaluation: dict | None, train_loss: float | None
             ) -> GalleryRow: ...

    def write_page(self, tmp: Path, rows: list[GalleryRow], curves: list[Curve], codec: Codec,
                   device: torch.device) -> dict: ...

    def summary(self) -> str: ...


def eval_entries(path: Path, conditioned: bool) -> dict[int, dict]:
    """The evaluate (or, ``conditioned``, evaluate_tts) stage's entry per step, from its details file; the loss,
    ppl, targets and per-codebook CE the table shows (with the text, for a conditioned run) checked present."""
    stage = "evaluate_tts" if conditioned else "evaluate"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run the {stage} stage first)")
    try:
        entries = {int(v["step"]): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()
                   if k.startswith("step_")}
        for entry in entries.values():
            headline = entry["with_text"] if conditioned else entry
            float(headline["loss"]), float(headline["ppl"]), int(headline["targets"])
            dict(headline["per_codebook"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not an {stage} details file ({exc})") from exc
    return entries


def render_page(trained: Trained, cfg: RenderParams | TtsRenderParams, out: Path, eval_metrics: Path, *,
                reader: Reader | None = None, differences: list[str] | None = None) -> dict[str, Any] | None:
    """Write the page of ``trained``'s checkpoints to ``out`` (as a whole, atomically); with a ``reader`` the
    checkpoints read its prompts aloud and its ASR metrics file is returned. ``differences``: why the run is not
    comparable with the reference run (unconditional only; hybridlm.results.report.reference_differences)."""
    name = "render" if reader is None else "render_tts"
    evaluations = eval_entries(eval_metrics, conditioned=reader is not None)
    history = trained.history()
    train_loss = {int(r["step"]): float(r["train/loss"]) for r in history}
    codec, rows, scores = None, [], None
    with atomic_dir(out) as tmp:
        for step, state, model in tqdm(trained.models(), total=len(trained.checkpoints), desc=name, unit="ckpt"):
            codec = codec or shard_codec(state["codec"], trained.device)
            frame_rate = int(state["codec"]["hybridlm.frame_rate"])
            generator = torch.Generator(trained.device).manual_seed(cfg.seed)
            (tmp / f"step-{step:06d}").mkdir()
            if reader is None:
                samples = _samples(trained, model, codec, cfg, frame_rate, generator, tmp, step)
                rows.append(GalleryRow(step, evaluations.get(step), train_loss.get(step),
                                       None if differences else REFERENCE_EMA_VAL_LOSS.get(step), samples))
            else:
                rows.append(reader.read(trained, step, state, model, codec, frame_rate, generator, tmp,
                                        evaluations.get(step), train_loss.get(step)))
        curves = write_curves(tmp / "curves", history, reference=reader is None and not differences)
        if reader is None:
            caption = (f"{cfg.samples} samples of {cfg.seconds:g} s per checkpoint from the EMA weights (temperature "
                       f"{cfg.temperature:g}, top-k {cfg.top_k}, seed {cfg.seed}); {codec.describe()}.")
            if codec.weights == "random":
                caption += " RANDOM codec weights (offline demo): the audio is noise by construction."
            write_gallery(tmp / "index.html", rows, caption, curves, differences)
        else:
            scores = reader.write_page(tmp, rows, curves, codec, trained.device)
    what = f"{cfg.samples} samples" if reader is None else reader.summary()
    print(f"{name}: {len(rows)} checkpoints x {what} -> {out}/index.html")
    return scores


def _samples(trained: Trained, model: HybridLM, codec: Codec, cfg: RenderParams, frame_rate: int,
             generator: torch.Generator, tmp: Path, step: int) -> list[GallerySample]:
    """An unconditional checkpoint's samples, all decoded (as one batch: they are the same length) and shown."""
    num_frames = max(1, round(cfg.seconds * frame_rate))
    with autocast(trained.precision, trained.device):
        codes = generate(model, num_frames, cfg.samples, cfg.temperature, cfg.top_k, generator)
    samples = []
    for k, wav in enumerate(codec.decode(codes).cpu().numpy()):
        name = f"step-{step:06d}/sample-{k}"
        write_wav(tmp / f"{name}.wav", wav, codec.sample_rate)
        write_spectrogram(tmp / f"{name}.png", wav, codec.sample_rate, f"step {step}, sample {k}")
        samples.append(GallerySample(f"{name}.wav", f"{name}.png"))
    return samples
