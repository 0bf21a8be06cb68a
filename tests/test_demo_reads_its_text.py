"""The offline proof that the demo's text-to-speech model READS its text, not just its length: the demo trained by
`dvc repro` with params.demo.yaml exactly as `make demo` trains it must meet issue 15's targets with a margin.

Why these numbers and not the text-vs-none gap: a model that only counts characters earns most of that gap (an
earlier demo did, with a gap of 0.09 nats and a content gap of 0.0003). What a letter-ignoring model cannot pass:
- the content gap: val loss with a wrong text of the same shape (every letter swapped for one of another sound
  class, the same durations) minus with the right one, overall and on codebook 0, and at least half of what the
  same model gets when it reads with the true alignment (the oracle cap);
- the reading error of its sampled val readings (a recogniser from codes to letter classes, fit on train; chance
  is about 0.875) close to the recogniser's own floor on the real codes;
- the readings' length following the text (duration correlation) and ending in a sampled EOS.
"""

from __future__ import annotations

import json

import pytest

from hybridlm.demo import demo_overrides
from hybridlm.pipeline import read_stages
from hybridlm.workspace import create_workspace, run_tool

pytestmark = pytest.mark.slow


def test_the_demo_model_reads_its_text(tmp_path, monkeypatch):
    monkeypatch.delenv("HYBRIDLM_CACHE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny model: one thread is faster on a busy machine
    workspace = create_workspace(tmp_path / "demo", demo_overrides())
    run_tool(workspace, "dvc", "repro", "render_tts", capture=True)
    stages = read_stages(workspace / "dvc.yaml")

    def metrics(stage: str, key: str) -> dict:
        return json.loads((workspace / stages[stage].options()[key]).read_text())

    align = metrics("align", "metrics")["synthetic_check"]
    assert align["val"] > align["val_diagonal"] + 0.03, align  # the aligner beats the diagonal it starts from

    final = metrics("evaluate_tts", "details")["final"]  # the whole record; the declared metrics are its headline
    assert final["step"] == demo_overrides()["tts_train"]["steps"]
    gap, cb0 = final["content_gap"], final["content_gap_per_codebook"]["cb0"]
    # targets 0.02 / 0.08 / half the oracle (`make demo`: 0.126 / 0.517, oracle 0.123 / 0.509;
    # fp32 0.109 / 0.430; docs/tts.md); a wrong text is worse
    # than the right one overall and on codebook 0
    assert gap > 0.03 and cb0 > 0.12, final
    assert gap > 0.6 * final["oracle_content_gap"], final
    assert cb0 > 0.6 * final["oracle_content_gap_per_codebook"]["cb0"], final

    reading = metrics("render_tts", "asr_details")["final"]
    # targets: <= 0.35 and within 0.25 of the floor; r >= 0.8; EOS >= 0.9. Sampled readings vary with threads,
    # precision and seed (one thread as here 0.19, `make demo` 0.16, fp32 0.14, seed 1 0.14; floor 0.00), so the
    # margin is on the absolute error and the floor-relative bound is the target itself.
    assert reading["reading_error_rate"] < 0.3, reading
    assert reading["reading_error_rate"] - reading["reading_error_floor"] <= 0.25, reading
    assert reading["duration_correlation"] > 0.85, reading
    assert reading["eos_rate"] >= 0.9, reading
