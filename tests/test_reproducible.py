"""Byte reproducibility: the pipeline (demo params, fewer steps) in two fresh workspaces records the same hash in
dvc.lock for every output, except the timing files, which hold wall-clock figures on purpose."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from hybridlm.demo import demo_overrides
from hybridlm.params import read_yaml
from hybridlm.workspace import create_workspace, merge, run_tool

pytestmark = pytest.mark.slow

# The demo pipeline, cut to what still exercises every stage and output: 8 short clips, 8 + 4 steps, 2 short
# samples.
SMALLER = {
    "data": {"synthetic": {"clips": 8, "max_seconds": 2.5, "long_every": 0}},
    "train": {"steps": 8, "save_steps": [4, 8], "batch_size": 2, "eval_every": 2},
    "render": {"samples": 2, "seconds": 0.3},
    "tts_train": {"steps": 4, "save_steps": [2, 4], "eval_every": 2},
}
TIMING = "metrics/timing/"


def out_hashes(workspace) -> dict[str, str]:
    """``{"stage:path": md5}`` for every out of every stage in the workspace's dvc.lock."""
    lock = read_yaml(workspace / "dvc.lock")
    return {f"{stage}:{out['path']}": out["md5"] for stage, body in lock["stages"].items() for out in body["outs"]}


def test_two_fresh_workspaces_record_identical_output_hashes(tmp_path, monkeypatch):
    """The two runs go side by side (half the wall time on 2 cores: most of a stage is starting Python), one
    thread each: tiny models gain nothing from more, and the runs must not depend on timing anyway."""
    monkeypatch.delenv("HYBRIDLM_CACHE", raising=False)  # each workspace trains from scratch in its own store
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    workspaces = [create_workspace(tmp_path / name, merge(demo_overrides(), SMALLER)) for name in ("a", "b")]
    with ThreadPoolExecutor(len(workspaces)) as pool:
        list(pool.map(lambda workspace: run_tool(workspace, "dvc", "repro", capture=True), workspaces))
    first, second = [out_hashes(workspace) for workspace in workspaces]
    assert sorted(first) == sorted(second)
    timing = {key for key in first if key.split(":", 1)[1].startswith(TIMING)}
    assert {key.split(":", 1)[0] for key in timing} == {"resample", "tokenize", "train", "train_tts"}
    differing = sorted(key for key in first if first[key] != second[key])
    assert set(differing) <= timing, f"outputs whose bytes differ between identical runs: {differing}"
    assert len(first) - len(timing) >= 10  # every result: corpus, shards, checkpoints, curves, metrics, samples
