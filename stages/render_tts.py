"""`hybridlm render_tts`: every text-to-speech checkpoint reads prompts aloud; WAVs, spectrograms, alignment plots,
how well the readings follow their texts, and a results page.

Prompts: the first `tts_render.val_sentences` held-out val transcripts (never heard in training) and every
`tts_render.texts` entry. Each checkpoint reads them with the same seed, stopping at the EOS it samples (or at
`tts_render.max_seconds`), with classifier-free guidance `tts_render.cfg_scale`. The page shows the first
`tts_render.page_val_sentences` val readings and the texts: audio, spectrogram and the alignment plot (the
cross-attention weights, mean over heads and cross-attention layers, of the model re-reading its own sample,
characters against seconds: a rising staircase means it reads in order). Output ``out`` (written whole, atomically):
step-NNNNNN/prompt-K.{wav,png,align.png} (and .heard.{wav,png} on the synthetic corpus), codec-resynthesis/val-K.wav
(the reference row of the page) and index.html.

Metrics (``asr_details``, per checkpoint and "final"; ``asr_metrics``, the DVC metrics, holds only the reading error,
its floor and the WERs: hybridlm/headline.py), over all val readings:
- ``duration_correlation`` and ``eos_rate`` (hybridlm.results.reading_metrics), for any corpus;
- on the synthetic corpus (`data.source: synthetic`), ``reading_error_rate``: the recogniser of
  hybridlm.synthetic_asr, fit on the train sentences, scoring what it hears in each reading against the text's sound
  classes, beside ``reading_error_floor`` (its error on the reference codes). Its hearing is also rendered as the
  corpus's tones (the random codec's own audio is noise);
- ASR WER/CER (hybridlm.asr, pocketsphinx) of the readings, and its ceiling: the same ASR on the codec resynthesis
  (decode of the real codes) of the same val clips. On real data this is the intelligibility number, over every
  val reading. On the synthetic corpus it hears only the page's val readings: the recogniser is the number there,
  its random codec's audio is not speech (a WER near 1.0 is the true figure, ``codec_weights: random``), and
  decoding and transcribing all 31 demo readings would triple the stage's time.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from tqdm import tqdm

from hybridlm import asr
from hybridlm.atomic import atomic_dir
from hybridlm.config import resolve_device, section
from hybridlm.data.codec import load_codec
from hybridlm.data.sentence_reader import read_sentences
from hybridlm.headline import write_results
from hybridlm.interface import Input, Output
from hybridlm.model import with_text
from hybridlm.prompts import checkpoint_vocab, encode_prompt
from hybridlm.results.alignment import reading_alignment, write_alignment
from hybridlm.results.gallery import GalleryRow, GallerySample, write_gallery, write_spectrogram, write_wav
from hybridlm.results.heard import fit_recogniser, write_heard
from hybridlm.results.reading_metrics import metrics_file, reading_metrics
from hybridlm.results.report import write_curves
from hybridlm.sampling import speak
from hybridlm.training.batching import pad_texts
from hybridlm.training.checkpoint import ema_model, load_checkpoint, select_checkpoints, validate_checkpoints
from hybridlm.training.precision import autocast, resolve_precision

# Per checkpoint (and the codec ceiling), in `asr_metrics`; everything else is in `asr_details`.
HEADLINE = ("reading_error_rate", "reading_error_floor", "wer")


def eval_entries(path: Path) -> dict[int, dict]:
    """The evaluate_tts entry (with_text, without_text, gaps) per step, from its details file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run the evaluate_tts stage first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {int(v["step"]): {**v, "with_text": dict(v["with_text"])} for k, v in data.items()
                if k.startswith("step_")}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not an evaluate_tts metrics file ({exc})") from exc






def _number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table_columns(evaluation: dict | None, reading: dict | None) -> dict[str, str]:
    """The page's metrics columns of one checkpoint beyond the loss with the text: the loss without it, the gaps
    (what the text is worth at all, and what its letters are worth), and how the sampled readings follow it."""
    columns = {}
    if evaluation:
        columns["val loss without text"] = _number(evaluation["without_text"]["loss"], 4)
        columns["conditioning gap"] = _number(evaluation["conditioning_gap"], 4)
        if "content_gap" in evaluation:
            columns["content gap"] = _number(evaluation["content_gap"], 4)
            columns["content gap cb0"] = _number(evaluation["content_gap_per_codebook"]["cb0"], 4)
        if "oracle_content_gap" in evaluation:
            columns["oracle content gap"] = _number(evaluation["oracle_content_gap"], 4)
    if reading:
        if "reading_error_rate" in reading:
            columns["reading error (floor)"] = (f"{reading['reading_error_rate']:.3f} "
                                                f"({reading['reading_error_floor']:.3f})")
        columns["duration r"] = _number(reading["duration_correlation"])
        columns["EOS rate"] = _number(reading["eos_rate"], 2)
    return columns








def run(params: dict, *,
        checkpoints: Annotated[Path, Input("Text-to-speech checkpoint folder to read.")],
        sentences: Annotated[Path, Input("Sentence shards folder (the val transcripts are prompts).")],
        eval_metrics: Annotated[Path, Input("The evaluate_tts stage's metrics (val loss per checkpoint, shown in "
                                            "the gallery).")],
        out: Annotated[Path, Output("Folder to write WAVs, spectrograms, alignment plots and index.html to.")],
        asr_metrics: Annotated[Path, Output("JSON metrics to write (per checkpoint the reading error and its floor, "
                                            "the ASR WER; the ASR's WER on the codec resynthesis).")],
        asr_details: Annotated[Path, Output("JSON to write every reading metric per checkpoint to (duration r, EOS "
                                            "rate, ASR WER/CER and what was measured).")]) -> None:
    """Every text-to-speech checkpoint reads val transcripts and tts_render.texts aloud: a gallery."""
    config = with_text(section(params, "model"), section(params, "tts_model"))
    cfg = section(params, "tts_render")
    synthetic = section(params, "data").source == "synthetic"
    device = resolve_device(cfg.device, "tts_render.device")
    precision = resolve_precision(cfg.precision, device, "tts_render.precision")
    checkpoints = select_checkpoints(checkpoints, cfg.steps, "tts_render.steps")
    validate_checkpoints(checkpoints, dataclasses.asdict(config))
    evaluations = eval_entries(eval_metrics)
    val_rows = read_sentences(sentences, "val", config)[0][: cfg.val_sentences]
    texts = [row.text for row in val_rows]
    recogniser, reader = (fit_recogniser(sentences, config) if synthetic and val_rows else
                          (None, "none: the sound-class recogniser needs the synthetic corpus; the ASR is the number"))
    floor = recogniser.error_rate([row.codes for row in val_rows], texts) if recogniser else None
    prompts = [(row.text, f"val {row.clip_id}") for row in val_rows]
    prompts += [(text, f"tts_render.texts[{i}]") for i, text in enumerate(cfg.texts)]
    page_val = min(cfg.page_val_sentences, len(val_rows))
    shown = [*range(page_val), *range(len(val_rows), len(prompts))]
    # The ASR hears every val reading, except on the synthetic corpus: there the recogniser is the number, and the
    # page's readings suffice for the ASR (random codec: no speech), sparing the decode and ASR of the others.
    heard_by_asr = page_val if recogniser is not None else len(val_rows)
    codec, rows, spoken, readings = None, [], {}, {}
    with atomic_dir(out) as tmp:
        for step, path in tqdm(checkpoints.items(), desc="render_tts", unit="ckpt"):
            state = load_checkpoint(path)
            vocab = checkpoint_vocab(state, path)
            ids = [encode_prompt(vocab, text, f"params.yaml: {where}") for text, where in prompts]
            meta = state["codec"]
            frame_rate = int(meta["hybridlm.frame_rate"])
            if codec is None:
                codec = load_codec(meta["hybridlm.weights"], meta["hybridlm.codec"], device)
            model = ema_model(state, config, device)
            max_frames = max(1, round(cfg.max_seconds * frame_rate))
            text = pad_texts(ids).to(device)
            generator = torch.Generator(device).manual_seed(cfg.seed)
            with autocast(precision, device):
                codes, ended = speak(model, text, max_frames, cfg.temperature, cfg.top_k, generator, cfg.cfg_scale)
            folder = tmp / f"step-{step:06d}"
            folder.mkdir()
            samples = []
            for k, ((prompt, where), frames, stopped) in enumerate(zip(prompts, codes, ended)):
                if k not in shown and k >= heard_by_asr:
                    continue  # read and scored from its codes, not decoded
                wav = codec.decode(frames[None].to(device)).cpu().numpy()[0]
                name = f"{folder.name}/prompt-{k}"
                write_wav(tmp / f"{name}.wav", wav, codec.sample_rate)
                if k not in shown:
                    continue  # read and scored, not on the page
                write_spectrogram(tmp / f"{name}.png", wav, codec.sample_rate, f"step {step}, prompt {k}")
                weights = reading_alignment(model, frames, text[k][: len(ids[k])])
                write_alignment(weights, vocab.decode(ids[k]), tmp / f"{name}.align.png",
                                f"step {step}, prompt {k}", frame_rate)
                seconds = frames.shape[-1] / frame_rate
                note = f"({where}; {seconds:.2f} s, {'EOS' if stopped else 'no EOS: cut at max_seconds'})"
                heard = ((None, None, "") if recogniser is None or k >= len(val_rows) else
                         write_heard(tmp, name, recogniser, frames.cpu().numpy(), prompt, codec.sample_rate,
                                     f"step {step}, prompt {k}: heard as tones"))
                samples.append(GallerySample(f"{name}.wav", f"{name}.png", prompt, f"{name}.align.png", note,
                                             *heard))
            spoken[step] = [tmp / f"{folder.name}/prompt-{k}.wav" for k in range(heard_by_asr)]
            if val_rows:
                readings[step] = reading_metrics([c.cpu().numpy() for c in codes[: len(val_rows)]],
                                                 ended[: len(val_rows)], [row.codes for row in val_rows], texts,
                                                 recogniser, floor)
            train_loss = {int(r["step"]): r["train/loss"] for r in state["history"]}
            rows.append(GalleryRow(step, (evaluations.get(step) or {}).get("with_text"), train_loss.get(step), None,
                                   samples, table_columns(evaluations.get(step), readings.get(step))))
            history = state["history"]
        (tmp / "codec-resynthesis").mkdir()
        ceiling = [tmp / f"codec-resynthesis/val-{k}.wav" for k in range(heard_by_asr)]
        reference: list[GallerySample | None] = []
        for k, (row, wav_path) in enumerate(zip(val_rows, ceiling)):
            real = torch.from_numpy(row.codes.astype(np.int64))[None]
            write_wav(wav_path, codec.decode(real.to(device)).cpu().numpy()[0], codec.sample_rate)
            if k < page_val:
                heard = ((None, None, "") if recogniser is None else
                         write_heard(tmp, f"codec-resynthesis/val-{k}", recogniser, row.codes, row.text,
                                     codec.sample_rate, f"val {k} (real codes): heard as tones"))
                reference.append(GallerySample(f"codec-resynthesis/val-{k}.wav", None, row.text, None,
                                               f"(val {row.clip_id}: its real codes)", *heard))
        reference += [None] * (len(shown) - len(reference))
        scores = metrics_file(readings, reader, spoken, ceiling, texts[:heard_by_asr], meta["hybridlm.weights"])
        caption = (f"{len(prompts)} prompts per checkpoint read by the EMA weights (cfg scale {cfg.cfg_scale:g}, "
                   f"temperature {cfg.temperature:g}, top-k {cfg.top_k}, seed {cfg.seed}, at most "
                   f"{cfg.max_seconds:g} s), {len(shown)} shown; codec {meta['hybridlm.codec']} with "
                   f"{meta['hybridlm.weights']} weights at {codec.sample_rate} Hz. Below each sample: the alignment "
                   f"(cross-attention weights, characters against seconds).")
        if meta["hybridlm.weights"] == "random":
            caption += " RANDOM codec weights (offline demo): the audio is not speech by construction."
        if recogniser is not None:
            caption += (" Below that, what the sound-class recogniser heard in the codes, played as the synthetic "
                        "corpus's own tones.")
        caption += " " + asr.summary_line(scores)
        note = (f"Gaps from evaluate_tts in nats per target: conditioning = loss without the text minus with it; "
                f"content = loss with a wrong text of the same shape (every letter swapped for another sound class) "
                f"minus with the right one (about 0 = the model counts letters without reading them). Over the "
                f"{len(val_rows)} val readings: duration r = Pearson r of generated against reference length; EOS "
                f"rate = share ending with a sampled EOS; reading error = class edit distance / length heard by "
                f"{reader}, floor = its error on the real codes.")
        curves = write_curves(tmp / "curves", history, reference=False)
        write_gallery(tmp / "index.html", rows, caption, curves, ["a text-to-speech fine-tune"],
                      title="text-to-speech results", metrics_note=note, reference=reference)
    write_results(asr_metrics, asr_details, scores, HEADLINE)
    print(f"render_tts: {len(rows)} checkpoints x {len(prompts)} prompts ({len(shown)} on the page) -> "
          f"{out}/index.html")
