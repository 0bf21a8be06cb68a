"""Offline ASR (pocketsphinx + jiwer): scoring normalisation, the real LJ clips, silence, errors, unavailability."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

from hybridlm import asr
from hybridlm.data.ljspeech import parse_metadata
from hybridlm.data.synthetic import write_wav_int16
from hybridlm.results.reading_metrics import metrics_file

def test_scoring_text():
    assert asr.scoring_text('He said, "Twenty-two" (Zürich); don\'t!') == "he said twenty two zurich don't"


@pytest.mark.slow  # 28 s of audio at ~3x real time on the loaded 2-core machine
def test_real_lj_clips_score_in_the_expected_range(shared):
    sample = shared("ljspeech-sample")
    rows = parse_metadata(sample / "metadata.csv")
    score = asr.score_files([sample / "wavs" / f"{r.id}.wav" for r in rows], [r.normalized for r in rows])
    # ../shared/REFERENCE.md: WER 0.21, CER 0.11 on these four clips with this recipe
    assert 0.12 < score.wer < 0.30 and 0.05 < score.cer < 0.18, score
    assert len(score.hypotheses) == 4 and "exhibition" in score.hypotheses[0]
    metrics = score.to_metrics()
    assert metrics["asr"] == "pocketsphinx" and metrics["utterances"] == 4 and metrics["audio_seconds"] > 25


def test_silence_scores_as_nothing_said(tmp_path):
    write_wav_int16(tmp_path / "silence.wav", np.zeros(22_050))
    score = asr.score_files([tmp_path / "silence.wav"], ["printing in the only sense"])
    assert len(score.hypotheses[0].split()) <= 1  # pocketsphinx may hallucinate one short word ("dog") on silence
    assert score.wer == 1.0 and score.cer > 0.8


def test_input_errors(tmp_path):
    write_wav_int16(tmp_path / "a.wav", np.zeros(1000))
    (tmp_path / "bad.wav").write_bytes(b"RIFF nothing")
    with pytest.raises(ValueError, match="one reference text per audio file"):
        asr.score_files([tmp_path / "a.wav"], ["a", "b"])
    with pytest.raises(ValueError, match="empty after normalisation for .*a.wav"):
        asr.score_files([tmp_path / "a.wav"], ['"" ...'])
    with pytest.raises(ValueError, match="bad.wav: not a readable audio file"):
        asr.score_files([tmp_path / "bad.wav"], ["word"])


def test_unavailable_asr_is_said_never_a_zero(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_pocketsphinx(name, *args, **kwargs):
        if name == "pocketsphinx":
            raise ImportError("No module named 'pocketsphinx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pocketsphinx)
    metrics = asr.asr_metrics([Path(tmp_path / "x.wav")], ["word"])
    assert metrics == {"asr": "unavailable (ImportError: No module named 'pocketsphinx')"}
    with pytest.raises(RuntimeError, match="asr: unavailable"):
        asr.Recognizer()
    # render_tts's metrics file: every entry says so, and no WER/CER number anywhere (not even the ceiling).
    readings = {2: {"eos_rate": 1.0}, 4: {"eos_rate": 0.0}}
    scores = metrics_file(readings, "none", {2: [tmp_path / "a.wav"], 4: [tmp_path / "b.wav"]},
                          [tmp_path / "c.wav"], ["word"], "random")
    assert scores["asr"] == scores["ceiling"]["asr"] == scores["final"]["asr"] == metrics["asr"]
    assert sorted(scores) == ["asr", "ceiling", "codec_weights", "final", "reader", "step_2", "step_4"]
    assert scores["final"]["eos_rate"] == 0.0  # the reading metrics stay
    assert not {"wer", "cer"} & {key for entry in scores.values() if isinstance(entry, dict) for key in entry}
    assert asr.summary_line(scores) == f"Intelligibility: ASR {metrics['asr']}."


def test_summary_line_reads_steps_and_ceiling():
    scores = {"asr": "pocketsphinx", "codec_weights": "random", "ceiling": {"asr": "pocketsphinx", "wer": 1.0,
              "cer": 0.9}, "step_2": {"step": 2, "wer": 1.5, "cer": 0.75}, "final": {"step": 2, "wer": 1.5}}
    line = asr.summary_line(scores)
    assert "step 2 WER 1.50 CER 0.75; ceiling (codec resynthesis of the real clips) WER 1.00 CER 0.90" in line
    assert line.count("step ") == 1 and "Random codec weights" in line
