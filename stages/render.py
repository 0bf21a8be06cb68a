"""`hybridlm render`: unconditional samples from every checkpoint's EMA weights, decoded to 24 kHz audio.

Output ``out`` (data/samples/, written as a whole, atomically): step-NNNNNN/sample-K.wav and .png for every
checkpoint and sample slot, and index.html, the gallery (checkpoints x samples, with each checkpoint's EMA val loss
from ``eval_metrics``, metrics/eval.json). Every checkpoint uses the same seed, so sample slot K is comparable across
checkpoints. Audio is decoded by the codec the token shards were made with (recorded in each checkpoint): with
`tokenize.weights: random` (demo/tests) that codec is random, so the audio is noise by construction.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from tqdm import tqdm

from hybridlm.atomic import atomic_dir
from hybridlm.config import resolve_device, section
from hybridlm.data.codec import deterministic_kernels, load_codec
from hybridlm.training.checkpoint import ema_model, load_checkpoint, select_checkpoints, validate_checkpoints
from hybridlm.training.gallery import GalleryRow, write_gallery, write_spectrogram, write_wav
from hybridlm.training.precision import autocast, resolve_precision

def eval_losses(path: Path) -> dict[int, float]:
    """EMA val loss per step from metrics/eval.json (written by the evaluate stage)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run the evaluate stage first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {int(v["step"]): float(v["loss"]) for k, v in data.items() if k.startswith("step_")}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not an evaluate metrics file ({exc})") from exc


def run(params: dict, *, checkpoints: Path, eval_metrics: Path, out: Path) -> None:
    model_config = section(params, "model")
    cfg = section(params, "render")
    device = resolve_device(cfg.device, "render.device")
    precision = resolve_precision(cfg.precision, device, "render.precision")
    selected = select_checkpoints(checkpoints, cfg.steps, "render.steps")
    losses = eval_losses(eval_metrics)
    validate_checkpoints(selected, dataclasses.asdict(model_config))
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
                codes = model.generate(num_frames, cfg.samples, cfg.temperature, cfg.top_k, generator)
            with deterministic_kernels():  # else the thread split changes the audio bytes (docs/reproducibility.md)
                audio = codec.decode(codes).cpu().numpy()
            folder = tmp / f"step-{step:06d}"
            folder.mkdir()
            samples = []
            for k, wav in enumerate(audio):
                write_wav(folder / f"sample-{k}.wav", wav, codec.sample_rate)
                write_spectrogram(folder / f"sample-{k}.png", wav, codec.sample_rate, f"step {step}, sample {k}")
                samples.append((f"{folder.name}/sample-{k}.wav", f"{folder.name}/sample-{k}.png"))
            rows.append(GalleryRow(step, losses.get(step), samples))
        caption = (f"{cfg.samples} samples of {cfg.seconds:g} s per checkpoint from the EMA weights (temperature "
                   f"{cfg.temperature:g}, top-k {cfg.top_k}, seed {cfg.seed}); codec {meta['hybridlm.codec']} with "
                   f"{meta['hybridlm.weights']} weights at {codec.sample_rate} Hz.")
        if meta["hybridlm.weights"] == "random":
            caption += " RANDOM codec weights (offline demo): the audio is noise by construction."
        write_gallery(tmp / "index.html", rows, caption)
    print(f"render: {len(rows)} checkpoints x {cfg.samples} samples -> {out}/index.html")
