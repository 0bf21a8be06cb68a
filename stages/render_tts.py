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
The implementation, shared with render: hybridlm/results/page.py, reading aloud in hybridlm/results/readings.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from hybridlm.config import section
from hybridlm.headline import write_results
from hybridlm.interface import Input, Output
from hybridlm.model import with_text
from hybridlm.results.page import render_page
from hybridlm.results.readings import read_prompts
from hybridlm.results.trained import open_trained

# Per checkpoint (and the codec ceiling), in `asr_metrics`; everything else is in `asr_details`.
HEADLINE = ("reading_error_rate", "reading_error_floor", "wer")


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
    trained = open_trained(checkpoints, config, cfg, "tts_render")
    reader = read_prompts(sentences, config, cfg, synthetic=section(params, "data").source == "synthetic")
    write_results(asr_metrics, asr_details, render_page(trained, cfg, out, eval_metrics, reader=reader), HEADLINE)
