"""Offline intelligibility: transcribe audio with pocketsphinx and score it against the prompt with jiwer.

Why pocketsphinx: it is the one speech recogniser whose PyPI wheel carries its own en-us acoustic model, language
model and dictionary, so it runs with no download (Whisper-style models need hub weights, unreachable here). It is
a weak recogniser (about 0.2 WER on real LJ Speech clips, ../shared/REFERENCE.md), so its WER on generated speech
is read *against a ceiling*: the same ASR on the codec resynthesis of the real val clips.

Scoring normalisation: hybridlm.text.normalize (the model's own: lower case, accents and quotes removed), then
every punctuation mark but the apostrophe becomes a space ("twenty-two" -> "twenty two", as the recogniser writes
it), since the recogniser outputs words only. Where pocketsphinx or jiwer cannot be imported the result says
``asr: unavailable`` with the reason and holds no WER at all: never a made-up number.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridlm.text import normalize

ASR_SAMPLE_RATE = 16_000  # pocketsphinx's en-us model is trained on 16 kHz speech
_NOT_WORD = re.compile(r"[^a-z' ]+")


def scoring_text(text: str) -> str:
    """``text`` as it is compared with the recogniser's words (rules in the module docstring)."""
    return " ".join(_NOT_WORD.sub(" ", normalize(text)).split())


def unavailable_reason() -> str | None:
    """None when pocketsphinx and jiwer import, else why not (shown in metrics as ``asr: unavailable (...)``)."""
    try:
        import jiwer  # noqa: F401
        import pocketsphinx  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library (OSError): both mean "no ASR here"
        return f"{type(exc).__name__}: {exc}"
    return None


def to_pcm16(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio (any rate) -> 16 kHz 16-bit little-endian PCM, resampled with soxr."""
    import soxr

    audio = np.asarray(samples, dtype=np.float64)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio [samples] or [samples, channels], got shape {audio.shape}")
    if sample_rate != ASR_SAMPLE_RATE:
        audio = soxr.resample(audio, sample_rate, ASR_SAMPLE_RATE, quality="VHQ")
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class Recognizer:
    """One pocketsphinx decoder (about a second to load), reused for every utterance."""

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"asr: unavailable ({reason}); install pocketsphinx and jiwer (pinned in pyproject)")
        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=ASR_SAMPLE_RATE, loglevel="FATAL")

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> str:
        """The recognised words of one utterance ('' for silence)."""
        self._decoder.start_utt()
        self._decoder.process_raw(to_pcm16(samples, sample_rate), full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        samples, rate = sf.read(str(path), dtype="float64", always_2d=False)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise ValueError(f"{path}: not a readable audio file ({exc})") from exc
    return samples, int(rate)


@dataclass(frozen=True)
class AsrScore:
    """Corpus-level WER/CER (errors over all reference words/characters) and the per-file transcripts."""

    wer: float
    cer: float
    hypotheses: list[str]
    references: list[str]
    audio_seconds: float
    wall_seconds: float

    def to_metrics(self) -> dict:
        return {"asr": "pocketsphinx", "wer": round(self.wer, 4), "cer": round(self.cer, 4),
                "utterances": len(self.references), "audio_seconds": round(self.audio_seconds, 2),
                "realtime_factor": round(self.audio_seconds / max(self.wall_seconds, 1e-9), 2)}


def score_files(wavs: Sequence[Path], references: Sequence[str], recognizer: Recognizer | None = None) -> AsrScore:
    """Transcribe each WAV and score all of them against ``references`` (same order). Raises RuntimeError
    ``asr: unavailable (...)`` where pocketsphinx/jiwer cannot be imported: see :func:`asr_metrics`."""
    import jiwer

    if len(wavs) != len(references) or not wavs:
        raise ValueError(f"ASR needs one reference text per audio file (got {len(wavs)} files, "
                         f"{len(references)} texts), at least one")
    refs = [scoring_text(r) for r in references]
    empty = [str(w) for w, r in zip(wavs, refs) if not r]
    if empty:
        raise ValueError(f"ASR reference text is empty after normalisation for {', '.join(empty[:3])}")
    recognizer = recognizer or Recognizer()
    hyps, seconds, start = [], 0.0, time.perf_counter()
    for wav in wavs:
        samples, rate = read_audio(Path(wav))
        seconds += len(samples) / rate
        hyps.append(scoring_text(recognizer.transcribe(samples, rate)))
    wall = time.perf_counter() - start
    return AsrScore(float(jiwer.wer(refs, hyps)), float(jiwer.cer(refs, hyps)), hyps, refs, seconds, wall)


def asr_metrics(wavs: Sequence[Path], references: Sequence[str]) -> dict:
    """Metrics entry for a stage: WER/CER with ``asr: pocketsphinx``, or ``{"asr": "unavailable (...)"}`` where
    the ASR cannot be imported (no WER key at all, so nothing can mistake it for a perfect 0)."""
    reason = unavailable_reason()
    if reason is not None:
        return {"asr": f"unavailable ({reason})"}
    return score_files(wavs, references).to_metrics()


def summary_line(metrics: dict) -> str:
    """One line for the TTS gallery and the demo summary from render_tts's ASR metrics file (its steps, its
    codec-resynthesis ceiling, or why nothing was measured)."""
    if "wer" not in metrics.get("ceiling", {}):
        return f"Intelligibility: ASR {metrics['asr']}."
    steps = "; ".join(f"step {v['step']} WER {v['wer']:.2f} CER {v['cer']:.2f}"
                      for k, v in metrics.items() if k.startswith("step_"))
    ceiling = metrics["ceiling"]
    line = (f"Intelligibility ({metrics['asr']} ASR on the val prompts): {steps}; ceiling (codec resynthesis of the "
            f"real clips) WER {ceiling['wer']:.2f} CER {ceiling['cer']:.2f}.")
    if metrics["codec_weights"] == "random":
        line += " Random codec weights: no speech, so WER ~1.0 is the true figure."
    return line
