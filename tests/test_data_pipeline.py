"""The data stages end to end: `dvc repro split` in a fresh git+DVC workspace, a no-op re-run, the real sample clips."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from data_helpers import STAGES, stage_paths

from hybridlm.data.ljspeech import parse_metadata
from hybridlm.data.shards import read_shards
from hybridlm.stages import resample as resample_stage
from hybridlm.stages import tokenize as tokenize_stage
from hybridlm.text import normalize
from hybridlm.workspace import SOURCE_ROOT, create_workspace, run_tool

# Tiny and fast on 2 CPU cores: 4 short clips; 1 s chunks so that clips are cut and short tails merged.
OVERRIDES = {
    "data": {"source": "synthetic", "synthetic": {"clips": 4, "seed": 5, "min_seconds": 1.0, "max_seconds": 2.6,
                                                   "long_every": 0}},
    "tokenize": {"weights": "random", "chunk_seconds": 1.0, "min_tail_seconds": 0.4},
    "split": {"val_fraction": 0.25},
}


def test_params_yaml_defaults_are_the_reference_run():
    params = yaml.safe_load((SOURCE_ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert params["data"]["source"] == "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"
    assert params["data"]["sha256"] == "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5"
    assert params["resample"]["sample_rate"] == 24_000
    tok = params["tokenize"]
    assert (tok["weights"], tok["model_id"], tok["bandwidth"]) == ("pretrained", "facebook/encodec_24khz", 6.0)
    assert (tok["chunk_seconds"], tok["min_tail_seconds"]) == (8.0, 2.0)
    assert params["split"]["val_fraction"] == 0.05


@pytest.mark.slow
def test_dvc_repro_sentences_end_to_end_then_noop(tmp_path):
    work = create_workspace(tmp_path / "ws", OVERRIDES)
    first = run_tool(work, "dvc", "repro", "sentences", capture=True)
    for stage in ("download", "resample", "tokenize", "split", "sentences"):
        assert f"Running stage '{stage}'" in first.stdout
    assert "RANDOM weights" in first.stderr

    rows = parse_metadata(work / "data/raw/LJSpeech-1.1/metadata.csv")
    assert len(rows) == 4 and any('"' in r.text or "£" in r.text for r in rows)
    manifest = (work / "data/resampled/manifest.tsv").read_text().splitlines()
    assert manifest[0] == "id\tseconds\tsamples" and len(manifest) == 5
    samples = {line.split("\t")[0]: int(line.split("\t")[2]) for line in manifest[1:]}

    tokens, meta = read_shards(work / "data/tokens")
    assert meta["hybridlm.weights"] == "random" and meta["hybridlm.num_codebooks"] == 8
    for clip_id, n in samples.items():  # 1 s chunks (75 frames), tails < 0.4 s merged, frames = ceil(n / 320)
        pieces = sorted((c for c in tokens if c.clip_id == clip_id), key=lambda c: c.chunk_index)
        assert sum(c.num_frames for c in pieces) == math.ceil(n / 320)
        assert all(c.num_frames == 75 for c in pieces[:-1]) and pieces[-1].num_frames < 75 + 30
        tail = n - 24_000 * (len(pieces) - 1)
        assert tail >= 0.4 * 24_000 or len(pieces) == 1
    assert len(tokens) > len(samples)  # clips were cut

    train, _ = read_shards(work / "data/split/train")
    val, val_meta = read_shards(work / "data/split/val")
    assert val_meta["hybridlm.split"] == "val"
    assert len({c.clip_id for c in val}) == 1 and not {c.clip_id for c in val} & {c.clip_id for c in train}
    data = json.loads((work / "metrics/data.json").read_text())
    assert data["total"]["chunks"] == len(tokens) and data["val"]["clips"] == 1 and data["train"]["clips"] == 3
    assert json.loads((work / "metrics/tokenize.json").read_text())["chunks"] == len(tokens)

    # one row per clip, its chunks joined, on the same side as in data/split, with its normalised transcript
    texts = {r.id: normalize(r.normalized) for r in rows}
    for side, chunks in (("train", train), ("val", val)):
        sentences, meta = read_shards(work / f"data/sentences/{side}")
        assert meta["hybridlm.split"] == side and {s.clip_id for s in sentences} == {c.clip_id for c in chunks}
        for row in sentences:
            assert row.text == texts[row.clip_id]
            assert row.num_frames == math.ceil(samples[row.clip_id] / 320)

    second = run_tool(work, "dvc", "repro", "sentences", capture=True)
    assert "Running stage" not in second.stdout
    for stage in ("download", "resample", "tokenize", "split", "sentences"):
        assert f"Stage '{stage}' didn't change, skipping" in second.stdout
    status = run_tool(work, "dvc", "status", "sentences", capture=True)
    assert "up to date" in status.stdout


@pytest.mark.slow
def test_cli_rejects_bad_params_before_work(tmp_path):
    work = create_workspace(tmp_path / "ws", {"data": {"source": "synthetic", "synthetic": {"clips": -1}}})
    with pytest.raises(RuntimeError, match=r"exit code 2: .*'data.synthetic.clips' must be >= 1"):
        run_tool(work, *STAGES["download"].argv, capture=True)
    assert not (work / "data").exists()


@pytest.mark.slow
def test_real_sample_clips_through_resample_and_tokenize(tmp_path, monkeypatch, shared):
    raw = tmp_path / "data/raw/LJSpeech-1.1"
    shutil.copytree(shared("ljspeech-sample"), raw)
    monkeypatch.chdir(tmp_path)
    resample_stage.run({"resample": {"on_bad_file": "fail"}}, workers=2, **stage_paths("resample"))
    params = yaml.safe_load((SOURCE_ROOT / "params.yaml").read_text(encoding="utf-8"))
    tokenize_stage.run({"tokenize": {**params["tokenize"], "weights": "random"}}, device="cpu",
                       **stage_paths("tokenize"))

    ids = [r.id for r in parse_metadata(raw / "metadata.csv")]
    seconds = {i: sf.info(str(raw / "wavs" / f"{i}.wav")).duration for i in ids}
    assert sum(s > 8.0 for s in seconds.values()) == 2
    tokens, meta = read_shards(Path("data/tokens"))
    assert meta["hybridlm.params_hash"] and meta["hybridlm.bandwidth"] == 6.0
    for clip_id, secs in seconds.items():
        pieces = [c for c in tokens if c.clip_id == clip_id]
        samples = sf.info(f"data/resampled/wavs/{clip_id}.flac").frames
        assert samples == round(secs * 24_000)
        assert sum(c.num_frames for c in pieces) == math.ceil(samples / 320)
        # LJ001-0001 (9.66 s) has a 1.66 s tail: merged into one 10 s piece; nothing here reaches 10 s
        assert len(pieces) == 1
    assert max(c.num_frames for c in tokens) > 600
    codes = np.concatenate([c.codes for c in tokens], axis=1)
    assert codes.shape[0] == 8 and codes.max() < 1024
