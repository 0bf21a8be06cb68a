"""How sampled readings of val sentences follow their texts: duration tracking, EOS, and (synthetic corpus) the
reading error rate.

Why these beside the teacher-forced losses: a model can lower its val loss with the text by counting characters
without reading them, and then its samples neither stop nor last as long as the text says. Over the val sentences
read (render_tts), ``duration_correlation`` is the Pearson r of the generated against the reference length (the
text's length alone predicts the reference at r ~ 0.95 on the demo, so a reading model should come close),
``eos_rate`` the share of readings that ended with a sampled EOS rather than at the length guard, and on the
synthetic corpus ``reading_error_rate`` what hybridlm.synthetic_asr heard against the text's sound classes, with
``reading_error_floor``, its error on the reference codes of the same sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybridlm import asr
from hybridlm.data.synthetic import LETTER_CLASSES
from hybridlm.synthetic_asr import Recogniser


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson r of ``x`` and ``y``; None where it says nothing (fewer than 3 pairs: two points always give +-1; or
    a constant side)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"pearson: {len(x)} values against {len(y)}")
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def reading_metrics(readings: Sequence[np.ndarray], ended: Sequence[bool], references: Sequence[np.ndarray],
                    texts: Sequence[str], recogniser: Recogniser | None, floor: float | None) -> dict:
    """The metrics entry of one checkpoint's readings (codes ``[n_q, T]``, whether each ended with EOS) of val
    sentences (their reference codes and texts); the reading error only with a ``recogniser`` (and its ``floor``
    on the references)."""
    if not (len(readings) == len(ended) == len(references) == len(texts)) or not texts:
        raise ValueError(f"reading metrics: {len(readings)} readings, {len(ended)} EOS flags, {len(references)} "
                         f"references, {len(texts)} texts (need as many, >= 1)")
    out = {"sentences": len(texts),
           "duration_correlation": pearson([r.shape[-1] for r in readings], [r.shape[-1] for r in references]),
           "eos_rate": float(np.mean(ended))}
    if recogniser is not None:
        out["reading_error_rate"] = recogniser.error_rate(readings, texts)
        out["reading_error_floor"] = floor
    return out


def summary_line(metrics: dict) -> str:
    """One line on the final checkpoint's readings, from render_tts's metrics file (the demo prints it)."""
    final = metrics.get("final")
    if not final or "eos_rate" not in final:
        return "Readings: not measured (no val sentences read)."
    r = final["duration_correlation"]
    line = (f"Readings of {final['sentences']} val sentences at step {final['step']}: duration r "
            f"{'undefined' if r is None else f'{r:.2f}'}, EOS rate {final['eos_rate']:.2f}")
    if "reading_error_rate" in final:
        line += (f", reading error rate {final['reading_error_rate']:.2f} (recogniser floor "
                 f"{final['reading_error_floor']:.2f}; chance ~{1 - 1 / len(LETTER_CLASSES):.3f})")
    return line + "."


def metrics_file(readings: dict[int, dict], reader: str, spoken: dict[int, list[Path]], ceiling: list[Path],
                 texts: list[str], weights: str) -> dict:
    """The ``asr_metrics`` file: per checkpoint the reading metrics (``readings[step]``) and the ASR WER/CER of its
    decoded val readings (``spoken[step]``, in the order of ``texts``); the ASR's ``ceiling`` on the codec
    resynthesis of the same real clips. Where the ASR cannot be imported its entries say ``asr: unavailable (...)``
    and hold no number (hybridlm.asr.asr_metrics)."""
    def scored(wavs: list[Path]) -> dict:
        # No realtime_factor: a timing differs run to run, and this file must be byte-identical for identical params.
        return {k: v for k, v in asr.asr_metrics(wavs, texts).items() if k != "realtime_factor"}

    if not readings:
        return {"asr": "not measured (tts_render.val_sentences is 0: no val prompts)", "codec_weights": weights}
    result = {"codec_weights": weights, "reader": reader}
    if texts:
        result["ceiling"] = scored(ceiling)
        result["asr"] = result["ceiling"]["asr"]
    else:
        result["asr"] = "not measured (synthetic corpus and tts_render.page_val_sentences is 0: no reading decoded)"
    for step, reading in readings.items():
        result[f"step_{step}"] = {"step": step, **reading, **(scored(spoken[step]) if texts else {})}
    result["final"] = result[f"step_{max(readings)}"]
    return result
