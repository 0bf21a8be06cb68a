"""What text-conditioned checkpoints do on the results page (hybridlm.results.page): read prompts aloud, and how
well the readings follow their texts.

Prompts: the first ``tts_render.val_sentences`` held-out val transcripts (scored) and every ``tts_render.texts``
entry. Each checkpoint reads them with the page's seed, stopping at the EOS it samples (or at ``max_seconds``),
with classifier-free guidance ``cfg_scale``. The page shows the first ``page_val_sentences`` val readings and the
texts, each with its alignment plot (hybridlm.results.alignment) and, on the synthetic corpus, what the sound-class
recogniser heard (hybridlm.results.heard); a reference row plays the real codes of the same val clips through the
codec. The readings are scored by hybridlm.results.reading_metrics: the ASR metrics file.

Why apart from page.py: the unconditional page imports none of this, so an edit here (or to the text front end,
the ASR, the recogniser) does not re-run the unconditional render stage (its code deps are its import graph).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hybridlm import asr
from hybridlm.config import TtsRenderParams
from hybridlm.data.codec import Codec
from hybridlm.data.sentence_reader import read_sentences
from hybridlm.data.shards import Chunk
from hybridlm.model import HybridLM, ModelConfig
from hybridlm.prompts import checkpoint_vocab, encode_prompt
from hybridlm.results.alignment import reading_alignment, write_alignment
from hybridlm.results.gallery import GalleryRow, GallerySample, write_gallery, write_spectrogram, write_wav
from hybridlm.results.heard import fit_recogniser, write_heard
from hybridlm.results.reading_metrics import metrics_file, reading_metrics
from hybridlm.results.report import Curve
from hybridlm.results.trained import Trained
from hybridlm.sampling import speak
from hybridlm.synthetic_asr import Recogniser
from hybridlm.training.batching import pad_texts
from hybridlm.training.precision import autocast


@dataclass
class Readings:
    """The prompts of ``tts_render`` with the recogniser of the synthetic corpus (else None) and its error on the
    real codes of the val sentences (the floor); filled checkpoint by checkpoint with the reading metrics and the
    WAVs the ASR hears."""

    cfg: TtsRenderParams
    val_rows: list[Chunk]
    page_val: int  # how many val readings the page shows
    recogniser: Recogniser | None
    reader: str  # what scores the readings, in words
    floor: float | None
    metrics: dict[int, dict] = field(default_factory=dict)  # step -> reading metrics of its val readings
    spoken: dict[int, list[Path]] = field(default_factory=dict)  # step -> the WAVs of its readings the ASR hears

    @property
    def prompts(self) -> list[tuple[str, str]]:
        """``(text, where it comes from)`` of every prompt, val sentences first."""
        return ([(row.text, f"val {row.clip_id}") for row in self.val_rows]
                + [(text, f"tts_render.texts[{i}]") for i, text in enumerate(self.cfg.texts)])

    @property
    def shown(self) -> list[int]:
        """The prompts on the page: the first ``page_val`` val sentences and every extra text."""
        return [*range(self.page_val), *range(len(self.val_rows), len(self.val_rows) + len(self.cfg.texts))]

    @property
    def heard_by_asr(self) -> int:
        """How many val readings the ASR hears: all, except on the synthetic corpus, where the recogniser is the
        number and the page's readings suffice for the ASR (random codec: no speech), sparing the others' decode."""
        return self.page_val if self.recogniser is not None else len(self.val_rows)

    def summary(self) -> str:
        return f"{len(self.prompts)} prompts ({len(self.shown)} on the page)"

    def read(self, trained: Trained, step: int, state: dict, model: HybridLM, codec: Codec, frame_rate: int,
             generator: torch.Generator, tmp: Path, evaluation: dict | None, train_loss: float | None) -> GalleryRow:
        """Checkpoint ``step`` reads every prompt; the page's readings and those the ASR hears are decoded (one at
        a time: their lengths differ) under ``tmp``/step-NNNNNN; the val readings are scored. Its page row."""
        vocab = checkpoint_vocab(state, trained.checkpoints[step])
        ids = [encode_prompt(vocab, text, f"params.yaml: {where}") for text, where in self.prompts]
        text = pad_texts(ids).to(trained.device)
        cfg = self.cfg
        with autocast(trained.precision, trained.device):
            codes, ended = speak(model, text, max(1, round(cfg.max_seconds * frame_rate)), cfg.temperature,
                                 cfg.top_k, generator, cfg.cfg_scale)
        folder, shown, val = f"step-{step:06d}", set(self.shown), len(self.val_rows)
        samples = []
        for k, ((prompt, where), frames, stopped) in enumerate(zip(self.prompts, codes, ended)):
            if k not in shown and k >= self.heard_by_asr:
                continue  # read and scored from its codes, not decoded
            wav = codec.decode(frames[None].to(trained.device)).cpu().numpy()[0]
            name = f"{folder}/prompt-{k}"
            write_wav(tmp / f"{name}.wav", wav, codec.sample_rate)
            if k not in shown:
                continue  # read and scored, not on the page
            write_spectrogram(tmp / f"{name}.png", wav, codec.sample_rate, f"step {step}, prompt {k}")
            weights = reading_alignment(model, frames, text[k][: len(ids[k])])
            write_alignment(weights, vocab.decode(ids[k]), tmp / f"{name}.align.png", f"step {step}, prompt {k}",
                            frame_rate)
            note = (f"({where}; {frames.shape[-1] / frame_rate:.2f} s, "
                    f"{'EOS' if stopped else 'no EOS: cut at max_seconds'})")
            heard = ((None, None, "") if self.recogniser is None or k >= val else
                     write_heard(tmp, name, self.recogniser, frames.cpu().numpy(), prompt, codec.sample_rate,
                                 f"step {step}, prompt {k}: heard as tones"))
            samples.append(GallerySample(f"{name}.wav", f"{name}.png", prompt, f"{name}.align.png", note, *heard))
        self.spoken[step] = [tmp / f"{folder}/prompt-{k}.wav" for k in range(self.heard_by_asr)]
        if self.val_rows:
            self.metrics[step] = reading_metrics([c.cpu().numpy() for c in codes[:val]], ended[:val],
                                                 [row.codes for row in self.val_rows],
                                                 [row.text for row in self.val_rows], self.recogniser, self.floor)
        return GalleryRow(step, (evaluation or {}).get("with_text"), train_loss, None, samples,
                          table_columns(evaluation, self.metrics.get(step)))

    def write_page(self, tmp: Path, rows: list[GalleryRow], curves: list[Curve], codec: Codec,
                   device: torch.device) -> dict:
        """The reference row, the caption and the metrics note, and the page ``tmp``/index.html; returns the ASR
        metrics file (hybridlm.results.reading_metrics.metrics_file)."""
        reference, ceiling = self._codec_reference(codec, device, tmp)
        texts = [row.text for row in self.val_rows]
        scores = metrics_file(self.metrics, self.reader, self.spoken, ceiling, texts[: self.heard_by_asr],
                              codec.weights)
        cfg = self.cfg
        caption = (f"{len(self.prompts)} prompts per checkpoint read by the EMA weights (cfg scale "
                   f"{cfg.cfg_scale:g}, temperature {cfg.temperature:g}, top-k {cfg.top_k}, seed {cfg.seed}, at "
                   f"most {cfg.max_seconds:g} s), {len(self.shown)} shown; {codec.describe()}. Below each sample: the "
                   f"alignment (cross-attention weights, characters against seconds).")
        if codec.weights == "random":
            caption += " RANDOM codec weights (offline demo): the audio is not speech by construction."
        if self.recogniser is not None:
            caption += (" Below that, what the sound-class recogniser heard in the codes, played as the synthetic "
                        "corpus's own tones.")
        caption += " " + asr.summary_line(scores)
        note = (f"Gaps from evaluate_tts in nats per target: conditioning = loss without the text minus with it; "
                f"content = loss with a wrong text of the same shape (every letter swapped for another sound "
                f"class) minus with the right one (about 0 = the model counts letters without reading them). Over "
                f"the {len(self.val_rows)} val readings: duration r = Pearson r of generated against reference "
                f"length; EOS rate = share ending with a sampled EOS; reading error = class edit distance / length "
                f"heard by {self.reader}, floor = its error on the real codes.")
        write_gallery(tmp / "index.html", rows, caption, curves, ["a text-to-speech fine-tune"],
                      title="text-to-speech results", metrics_note=note, reference=reference)
        return scores

    def _codec_reference(self, codec: Codec, device: torch.device, tmp: Path
                         ) -> tuple[list[GallerySample | None], list[Path]]:
        """The reference row (the page's val clips: their real codes through the codec) and the resynthesis WAVs
        the ASR's ceiling is measured on."""
        (tmp / "codec-resynthesis").mkdir()
        ceiling = [tmp / f"codec-resynthesis/val-{k}.wav" for k in range(self.heard_by_asr)]
        reference: list[GallerySample | None] = []
        for k, (row, wav_path) in enumerate(zip(self.val_rows, ceiling)):
            real = torch.from_numpy(row.codes.astype(np.int64))[None]
            write_wav(wav_path, codec.decode(real.to(device)).cpu().numpy()[0], codec.sample_rate)
            if k < self.page_val:
                heard = ((None, None, "") if self.recogniser is None else
                         write_heard(tmp, f"codec-resynthesis/val-{k}", self.recogniser, row.codes, row.text,
                                     codec.sample_rate, f"val {k} (real codes): heard as tones"))
                reference.append(GallerySample(f"codec-resynthesis/val-{k}.wav", None, row.text, None,
                                               f"(val {row.clip_id}: its real codes)", *heard))
        return reference + [None] * (len(self.shown) - len(reference)), ceiling


def read_prompts(sentences: Path, config: ModelConfig, cfg: TtsRenderParams, synthetic: bool) -> Readings:
    """The :class:`Readings` of ``tts_render`` from ``sentences``/val (and, on the synthetic corpus, the recogniser
    fit on ``sentences``/train)."""
    val_rows = read_sentences(sentences, "val", config)[0][: cfg.val_sentences]
    recogniser, reader = (fit_recogniser(sentences, config) if synthetic and val_rows else
                          (None, "none: the sound-class recogniser needs the synthetic corpus; the ASR is the number"))
    floor = (recogniser.error_rate([row.codes for row in val_rows], [row.text for row in val_rows]) if recogniser
             else None)
    return Readings(cfg, val_rows, min(cfg.page_val_sentences, len(val_rows)), recogniser, reader, floor)


def _number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table_columns(evaluation: dict | None, reading: dict | None) -> dict[str, str]:
    """The page's metrics columns of one text-conditioned checkpoint beyond the loss with the text: the loss without
    it, the gaps (what the text is worth at all, and what its letters are worth), and how the sampled readings
    follow it."""
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
