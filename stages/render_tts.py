"""`hybridlm render_tts`: every text-to-speech checkpoint reads prompts aloud; WAVs, spectrograms, alignment plots
and a gallery page.

Prompts: the first `tts_render.val_sentences` held-out val transcripts (never heard in training) and every
`tts_render.texts` entry. Each checkpoint reads them with the same seed, stopping at the EOS it samples (or at
`tts_render.max_seconds`), with classifier-free guidance `tts_render.cfg_scale`. The alignment plot is the
cross-attention weights (mean over heads and cross-attention layers) of the model re-reading its own sample: a
rising diagonal means it reads in order. Output ``out`` (written whole, atomically):
step-NNNNNN/prompt-K.{wav,png,align.png}, codec-resynthesis/val-K.wav and index.html.

Intelligibility (``asr_metrics``): the offline ASR (hybridlm.asr) transcribes each checkpoint's readings of the val
transcripts and scores WER/CER against them. Its ceiling is the same ASR on the codec resynthesis (decode of the
real codes) of the same val clips: what a perfect code LM would score through this codec and this recogniser. It is
done here because this stage already decodes the audio; only the val prompts are scored (the `texts` have no
recording to set a ceiling with). With random codec weights (the offline demo) the audio is not speech, so a WER
near 1.0 is the true figure there, and the metrics say ``codec_weights: random``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hybridlm import asr
from hybridlm.atomic import atomic_dir, write_json
from hybridlm.config import resolve_device, section
from hybridlm.data.codec import load_codec
from hybridlm.model import HybridLM, with_text
from hybridlm.training.batching import pad_texts
from hybridlm.training.checkpoint import ema_model, load_checkpoint, select_checkpoints, validate_checkpoints
from hybridlm.training.gallery import (GalleryRow, GallerySample, write_alignment, write_gallery, write_spectrogram,
                                       write_wav)
from hybridlm.training.precision import autocast, resolve_precision
from hybridlm.training.report import write_curves
from hybridlm.training.sentences import checkpoint_vocab, encode_prompt, read_sentences, sentence_pattern

def eval_entries(path: Path) -> dict[int, dict]:
    """The evaluate_tts entry with the text (loss, ppl, targets, per_codebook) per step, from its metrics."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run the evaluate_tts stage first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {int(v["step"]): dict(v["with_text"]) for k, v in data.items() if k.startswith("step_")}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not an evaluate_tts metrics file ({exc})") from exc


def alignment(model: HybridLM, codes: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``[steps, characters]``: cross-attention weights of ``model`` re-reading ``codes [n_q, T]`` against
    ``text [L]``, averaged over heads and cross-attention layers."""
    delayed = sentence_pattern(model.config).build(codes.cpu()).to(text.device)
    weights: list[torch.Tensor] = []
    with torch.no_grad():
        model(delayed[None, :, :-1], text=text[None], alignments=weights)
    return torch.stack([w[0].float().mean(0) for w in weights]).mean(0)


def intelligibility(spoken: dict[int, list[Path]], ceiling: list[Path], texts: list[str], weights: str) -> dict:
    """The ``asr_metrics`` file: ASR WER/CER of each checkpoint's readings (``spoken[step]``, in the order of
    ``texts``) and of the codec resynthesis of the real clips (``ceiling``). Where the ASR cannot be imported every
    entry says ``asr: unavailable (...)`` and holds no number (hybridlm.asr.asr_metrics)."""
    def scored(wavs: list[Path]) -> dict:
        # No realtime_factor: a timing differs run to run, and this file must be byte-identical for identical params.
        return {k: v for k, v in asr.asr_metrics(wavs, texts).items() if k != "realtime_factor"}

    if not texts:
        return {"asr": "not measured (tts_render.val_sentences is 0: no val prompts)", "codec_weights": weights}
    result = {"codec_weights": weights, "ceiling": scored(ceiling)}
    result["asr"] = result["ceiling"]["asr"]
    for step, wavs in spoken.items():
        result[f"step_{step}"] = {"step": step, **scored(wavs)}
    result["final"] = result[f"step_{max(spoken)}"]
    return result


def run(params: dict, *, checkpoints: Path, sentences: Path, eval_metrics: Path, out: Path,
        asr_metrics: Path) -> None:
    config = with_text(section(params, "model"), section(params, "tts_model"))
    cfg = section(params, "tts_render")
    device = resolve_device(cfg.device, "tts_render.device")
    precision = resolve_precision(cfg.precision, device, "tts_render.precision")
    checkpoints = select_checkpoints(checkpoints, cfg.steps, "tts_render.steps")
    validate_checkpoints(checkpoints, dataclasses.asdict(config))
    evaluations = eval_entries(eval_metrics)
    val_rows = read_sentences(sentences, "val", config)[0][: cfg.val_sentences]
    prompts = [(row.text, f"val {row.clip_id}") for row in val_rows]
    prompts += [(text, f"tts_render.texts[{i}]") for i, text in enumerate(cfg.texts)]
    codec, rows, spoken = None, [], {}
    with atomic_dir(out) as tmp:
        for step, path in tqdm(checkpoints.items(), desc="render_tts", unit="ckpt"):
            state = load_checkpoint(path)
            vocab = checkpoint_vocab(state, path)
            ids = [encode_prompt(vocab, text, f"params.yaml: {where}") for text, where in prompts]
            meta = state["codec"]
            if codec is None:
                codec = load_codec(meta["hybridlm.weights"], meta["hybridlm.codec"], device)
            model = ema_model(state, config, device)
            max_frames = max(1, round(cfg.max_seconds * int(meta["hybridlm.frame_rate"])))
            text = pad_texts(ids).to(device)
            generator = torch.Generator(device).manual_seed(cfg.seed)
            with autocast(precision, device):
                codes, ended = model.speak(text, max_frames, cfg.temperature, cfg.top_k, generator, cfg.cfg_scale)
            folder = tmp / f"step-{step:06d}"
            folder.mkdir()
            samples = []
            for k, ((prompt, where), frames, stopped) in enumerate(zip(prompts, codes, ended)):
                wav = codec.decode(frames[None].to(device)).cpu().numpy()[0]
                name = f"{folder.name}/prompt-{k}"
                write_wav(tmp / f"{name}.wav", wav, codec.sample_rate)
                write_spectrogram(tmp / f"{name}.png", wav, codec.sample_rate, f"step {step}, prompt {k}")
                weights = alignment(model, frames, text[k][: len(ids[k])]).cpu().numpy()
                write_alignment(tmp / f"{name}.align.png", weights, prompt, f"step {step}, prompt {k}: alignment")
                seconds = frames.shape[-1] / int(meta["hybridlm.frame_rate"])
                note = f"({where}; {seconds:.2f} s, {'EOS' if stopped else 'no EOS: cut at max_seconds'})"
                samples.append(GallerySample(f"{name}.wav", f"{name}.png", prompt, f"{name}.align.png", note))
            spoken[step] = [tmp / f"{folder.name}/prompt-{k}.wav" for k in range(len(val_rows))]
            train_loss = {int(r["step"]): r["train/loss"] for r in state["history"]}
            rows.append(GalleryRow(step, evaluations.get(step), train_loss.get(step), None, samples))
            history = state["history"]
        (tmp / "codec-resynthesis").mkdir()
        ceiling = [tmp / f"codec-resynthesis/val-{k}.wav" for k in range(len(val_rows))]
        for row, wav_path in zip(val_rows, ceiling):
            real = torch.from_numpy(row.codes.astype(np.int64))[None]
            write_wav(wav_path, codec.decode(real.to(device)).cpu().numpy()[0], codec.sample_rate)
        scores = intelligibility(spoken, ceiling, [row.text for row in val_rows], meta["hybridlm.weights"])
        caption = (f"{len(prompts)} prompts per checkpoint read by the EMA weights (cfg scale {cfg.cfg_scale:g}, "
                   f"temperature {cfg.temperature:g}, top-k {cfg.top_k}, seed {cfg.seed}, at most "
                   f"{cfg.max_seconds:g} s); codec {meta['hybridlm.codec']} with {meta['hybridlm.weights']} weights "
                   f"at {codec.sample_rate} Hz. Below each sample: cross-attention weights, character against step.")
        if meta["hybridlm.weights"] == "random":
            caption += " RANDOM codec weights (offline demo): the audio is not speech by construction."
        caption += " " + asr.summary_line(scores)
        curves = write_curves(tmp / "curves", history, reference=False)
        write_gallery(tmp / "index.html", rows, caption, curves, ["a text-to-speech fine-tune"],
                      title="text-to-speech results")
    write_json(asr_metrics, scores)
    print(f"render_tts: {len(rows)} checkpoints x {len(prompts)} prompts -> {out}/index.html")
