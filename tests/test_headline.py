"""The declared metrics are the headline of the details, value for value (hybridlm/headline.py)."""

from __future__ import annotations

import json

from hybridlm.headline import headline, write_results

RESULTS = {
    "asr": "pocketsphinx",
    "ceiling": {"wer": 0.5, "cer": 0.25, "asr": "pocketsphinx"},
    "step_2": {"step": 2, "content_gap": 0.1, "content_gap_per_codebook": {"cb0": 0.4, "cb1": 0.05},
               "with_text": {"loss": 3.0}, "wer": 1.0, "duration_correlation": None},
    "step_4": {"step": 4, "content_gap": 0.2, "content_gap_per_codebook": {"cb0": 0.5, "cb1": 0.06},
               "with_text": {"loss": 2.5}, "wer": 0.9, "duration_correlation": 0.7},
}
RESULTS["final"] = RESULTS["step_4"]


def test_the_headline_keeps_the_named_numbers_of_each_step_and_the_ceiling():
    picked = headline(RESULTS, ("content_gap", "content_gap_per_codebook.cb0", "wer", "duration_correlation"))
    assert picked == {
        "ceiling": {"wer": 0.5},
        "step_2": {"content_gap": 0.1, "content_gap_per_codebook": {"cb0": 0.4}, "wer": 1.0},  # None is no number
        "step_4": {"content_gap": 0.2, "content_gap_per_codebook": {"cb0": 0.5}, "wer": 0.9,
                   "duration_correlation": 0.7},
    }
    assert headline(RESULTS, ("with_text.loss",)) == {"step_2": {"with_text": {"loss": 3.0}},
                                                      "step_4": {"with_text": {"loss": 2.5}}}
    assert headline(RESULTS, ("nothing", "with_text.nothing", "step.deeper")) == {}


def test_details_hold_everything_and_metrics_the_headline(tmp_path):
    write_results(tmp_path / "m.json", tmp_path / "d/details.json", RESULTS, ("content_gap",))
    assert json.loads((tmp_path / "d/details.json").read_text()) == RESULTS
    assert json.loads((tmp_path / "m.json").read_text()) == {"step_2": {"content_gap": 0.1},
                                                             "step_4": {"content_gap": 0.2}}
