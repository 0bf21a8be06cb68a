"""`hybridlm render`: unconditional samples from every checkpoint's EMA weights, decoded to 24 kHz audio, on one
offline results page.

Output ``out`` (data/samples/, written as a whole, atomically): step-NNNNNN/sample-K.wav and .png for every
checkpoint and sample slot; curves/*.png, the training curves drawn from the last checkpoint's history
(hybridlm.results.report); and index.html, the results page: curves, a metrics table per checkpoint (from
``eval_metrics``, metrics/eval.json) and the checkpoints x samples gallery. Every checkpoint uses the same seed, so sample slot K is comparable across
checkpoints. Audio is decoded by the codec the token shards were made with (recorded in each checkpoint): with
`tokenize.weights: random` (demo/tests) that codec is random, so the audio is noise by construction.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import torch
from tqdm import tqdm

from hybridlm.atomic import atomic_dir
from hybridlm.config import resolve_device, section
from hybridlm.data.codec import deterministic_kernels, load_codec
from hybridlm.interface import Input, Output
from hybridlm.results.gallery import GalleryRow, GallerySample, write_gallery, write_spectrogram, write_wav
from hybridlm.results.report import REFERENCE_EMA_VAL_LOSS, reference_differences, write_curves
from hybridlm.sampling import generate
from hybridlm.training.checkpoint import (ema_model, list_checkpoints, load_checkpoint, select_checkpoints,
                                         validate_checkpoints)
from hybridlm.training.precision import autocast, resolve_precision


def eval_entries(path: Path) -> dict[int, dict]:
    """The evaluate stage's entry (loss, ppl, targets, per_codebook) per step, from its details file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run the evaluate stage first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {int(v["step"]): {"loss": float(v["loss"]), "ppl": float(v["ppl"]), "targets": int(v["targets"]),
                                 "per_codebook": {str(cb): float(ce) for cb, ce in v["per_codebook"].items()}}
                for k, v in data.items() if k.startswith("step_")}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not an evaluate metrics file ({exc})") from exc


def run(params: dict, *,
        checkpoints: Annotated[Path, Input("Checkpoint folder to read.")],
        eval_metrics: Annotated[Path, Input("The evaluate stage's metrics (val loss per checkpoint, shown in the "
                                            "gallery).")],
        out: Annotated[Path, Output("Folder to write WAVs, spectrograms and index.html to.")]) -> None:
    """Unconditional samples from every checkpoint: WAVs, spectrograms and an HTML gallery."""
    model_config = section(params, "model")
    cfg = section(params, "render")
    device = resolve_device(cfg.device, "render.device")
    precision = resolve_precision(cfg.precision, device, "render.precision")
    selected = select_checkpoints(checkpoints, cfg.steps, "render.steps")
    evaluations = eval_entries(eval_metrics)
    validate_checkpoints(selected, dataclasses.asdict(model_config))
    differences = reference_differences(params)
    saved = list_checkpoints(checkpoints)  # the last one holds the whole run's history (render.steps may skip it)
    history = load_checkpoint(saved[max(saved)])["history"]
    train_loss = {int(r["step"]): float(r["train/loss"]) for r in history}
    codec = None
    rows = []
    with atomic_dir(out) as tmp:
        for step, path in tqdm(selected.items(), desc="render", unit="ckpt"):
            state = load_checkpoint(path)
            meta = state["codec"]
            if codec is None:
                codec = load_codec(meta["hybridlm.weights"], meta["hybridlm.codec"], device)
            model = ema_model(state, model_config, device)
            num_frames = max(1, round(cfg.seconds * int(meta["hybridlm.frame_rate"])))
            generator = torch.Generator(device).manual_seed(cfg.seed)
            with autocast(precision, device):
                codes = generate(model, num_frames, cfg.samples, cfg.temperature, cfg.top_k, generator)
            with deterministic_kernels():  # else the thread split changes the audio bytes (docs/reproducibility.md)
                audio = codec.decode(codes).cpu().numpy()
            folder = tmp / f"step-{step:06d}"
            folder.mkdir()
            samples = []
            for k, wav in enumerate(audio):
                write_wav(folder / f"sample-{k}.wav", wav, codec.sample_rate)
                write_spectrogram(folder / f"sample-{k}.png", wav, codec.sample_rate, f"step {step}, sample {k}")
                samples.append(GallerySample(f"{folder.name}/sample-{k}.wav", f"{folder.name}/sample-{k}.png"))
            rows.append(GalleryRow(step, evaluations.get(step), train_loss.get(step),
                                   None if differences else REFERENCE_EMA_VAL_LOSS.get(step), samples))
        curves = write_curves(tmp / "curves", history, reference=not differences)
        caption = (f"{cfg.samples} samples of {cfg.seconds:g} s per checkpoint from the EMA weights (temperature "
                   f"{cfg.temperature:g}, top-k {cfg.top_k}, seed {cfg.seed}); codec {meta['hybridlm.codec']} with "
                   f"{meta['hybridlm.weights']} weights at {codec.sample_rate} Hz.")
        if meta["hybridlm.weights"] == "random":
            caption += " RANDOM codec weights (offline demo): the audio is noise by construction."
        write_gallery(tmp / "index.html", rows, caption, curves, differences)
    print(f"render: {len(rows)} checkpoints x {cfg.samples} samples -> {out}/index.html")
