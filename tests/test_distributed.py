"""Data-parallel training: 2 gloo processes follow the 1-process trajectory (same global batch), a run resumes with
another process count, and under `hybridlm train` a SIGKILLed rank fails the whole run, which a re-run resumes, writing
the same bytes as an uninterrupted run.

Tolerance. The 2-process update differs from the 1-process one only in the order of the gradient sums (each rank
sums its rows, gloo adds the two), i.e. by float32 rounding (~1e-7 relative), which AdamW's normalisation can
amplify for a parameter whose gradient is near zero. Measured on this tiny model after 4 steps (fp32, 2-core AMD
EPYC): max |diff| of any parameter 1.65e-06 (an update moves a parameter by up to lr = 3e-3); the tests allow 1e-5.
Without the global loss normalisers the same comparison gives 2.2e-02.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml

from hybridlm.config import TrainParams, TtsTrainParams
from hybridlm.data.shards import Chunk, write_shards
from hybridlm.delay import DelayPattern
from hybridlm.model import ModelConfig, TextConfig
from hybridlm.pipeline import read_stages
from hybridlm.training import distributed
from hybridlm.training.batching import PackedRows, SentenceRows, delayed_sequences
from hybridlm.training.checkpoint import load_checkpoint, trajectory_params
from hybridlm.training.loop import train
from hybridlm.training.store import ResumeStore
from hybridlm.workspace import SOURCE_ROOT, merge

TINY = ModelConfig(schedule="LA", d_model=32, d_ff=64, n_heads=2, n_kv_heads=1, gdn_key_dim=8, gdn_value_dim=16,
                   context=32)
TINY_TTS = dataclasses.replace(TINY, text=TextConfig(layers=1, d_model=16, n_heads=2, d_ff=32, vocab_size=40,
                                                    pointer_early=1))
CPU = torch.device("cpu")
TOLERANCE = 1e-5
# batch 3 over 2 ranks: uneven shares (2 + 1 rows), and 2 accumulation micro-batches (no_sync on the first)
CFG = TrainParams(steps=4, save_steps=[4], batch_size=3, grad_accum=2, lr=3e-3, warmup_steps=1, decay_steps=50,
                  eval_every=2, ema_decay=0.9, precision="fp32")
TTS_CFG = TtsTrainParams(**{**dataclasses.asdict(CFG), "init_from": "uncond", "text_dropout": 0.3,
                             "input_dropout": 0.3})


def chunks(n: int, seed: int) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    return [Chunk(f"clip{i}", 0, rng.integers(0, 64, (8, int(rng.integers(10, 30)))).astype(np.uint16))
            for i in range(n)]


def run_train(store_root: Path, cfg: TrainParams):
    provenance = {"key": "ddp-test", "params": {}}
    store = ResumeStore(store_root, provenance) if distributed.is_main() else None
    if isinstance(cfg, TtsTrainParams):  # sentences with texts and durations, some dropped, inputs hidden
        eos, texts = DelayPattern(eos=True), [[2 + (i + j) % 30 for j in range(3 + i % 5)] for i in range(12)]
        durations = [[1 + (i + j) % 3 for j in range(len(t))] for i, t in enumerate(texts)]
        rows = SentenceRows(chunks(12, 0), texts, durations, eos, cfg.seed, cfg.text_dropout, cfg.input_dropout)
        return train(cfg, TINY_TTS, rows, delayed_sequences(chunks(3, 1), eos), store, provenance, {}, CPU,
                     val_texts=texts[:3], val_durations=durations[:3])
    rows = PackedRows(chunks(12, 0), DelayPattern(), TINY.context, cfg.seed)
    val = delayed_sequences(chunks(3, 1), DelayPattern())
    return train(cfg, TINY, rows, val, store, provenance, {}, CPU)


def _rank(rank: int, world: int, port: int, store_root: Path, cfg: TrainParams) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    with distributed.process_group(CPU):
        run_train(store_root, cfg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def max_param_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def one_and_two_processes(tmp_path: Path, cfg: TrainParams) -> tuple[dict, dict]:
    """The step-4 states of ``cfg`` trained in this process (store ``tmp_path/one``) and by 2 gloo ranks
    (``tmp_path/two``)."""
    torch.set_num_threads(1)
    single = run_train(tmp_path / "one", cfg)
    mp.spawn(_rank, args=(2, free_port(), tmp_path / "two", cfg), nprocs=2)
    return (load_checkpoint(single.checkpoints[4]),
            load_checkpoint(next((tmp_path / "two").glob("train/*/step-000004.pt"))))


def test_two_gloo_processes_match_one_process_and_resume_with_another_count(tmp_path):
    one, two = one_and_two_processes(tmp_path, CFG)
    diff = max_param_diff(one["model"], two["model"])
    print(f"max |param diff| 1 vs 2 processes after 4 steps: {diff:.2e}")
    assert 0 < diff < TOLERANCE  # not bit-identical: the ranks really split the batch
    assert max_param_diff(one["ema"]["shadow"], two["ema"]["shadow"]) < TOLERANCE
    for a, b in zip(one["history"], two["history"]):
        assert a["step"] == b["step"] and a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
        assert a.get("val/ema_loss", 0) == pytest.approx(b.get("val/ema_loss", 0), rel=1e-5)
    # the 2-process store resumes in 1 process (nproc_per_node is not part of the trajectory key)
    assert "nproc_per_node" not in trajectory_params({}, TrainParams(nproc_per_node=2), "cpu", "fp32")["train"]
    longer = TrainParams(**{**CFG.__dict__, "steps": 6, "save_steps": [4, 6]})
    resumed = run_train(tmp_path / "two", longer)
    straight = run_train(tmp_path / "one", longer)
    assert resumed.start_step == 4 and straight.start_step == 4
    assert max_param_diff(load_checkpoint(resumed.checkpoints[6])["model"],
                          load_checkpoint(straight.checkpoints[6])["model"]) < TOLERANCE


def test_text_to_speech_with_durations_and_input_dropout_in_two_processes_matches_one_process(tmp_path):
    """The penalty is normalised by the global count of frames with text, as the loss by its global counts; a
    per-rank count would weigh the rank with fewer text frames more. Measured: 1.39e-06 (a per-rank count: 2.25e-02)."""
    one, two = one_and_two_processes(tmp_path, TTS_CFG)
    diff = max_param_diff(one["model"], two["model"])
    print(f"text-to-speech, pointer + duration loss: max |param diff| 1 vs 2 processes after 4 steps: {diff:.2e}")
    assert 0 < diff < TOLERANCE
    assert all(a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5) for a, b in zip(one["history"],
                                                                                          two["history"]))


def test_local_rows_split_the_global_batch(monkeypatch):
    rows = torch.arange(5)
    shares = []
    for rank in range(3):
        monkeypatch.setattr(distributed, "world_size", lambda: 3)
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        shares.append(distributed.local_rows(rows).tolist())
    assert shares == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match=r"'train.batch_size' \(2\) must be >= the number of training processes"):
        distributed.check_batch(2)


def test_launch_needs_the_hybridlm_command(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/python3", "train"])
    with pytest.raises(ValueError, match="must be started with the `hybridlm` command"):
        distributed.launch(2)


def write_split(folder: Path) -> None:
    meta = {"codec": "facebook/encodec_24khz", "weights": "random", "bandwidth": 6.0, "num_codebooks": 8,
            "codebook_size": 1024, "frame_rate": 75, "sample_rate": 24_000, "params_hash": "test"}
    for name, n, seed in (("train", 24, 0), ("val", 3, 1)):
        write_shards(folder / name, chunks(n, seed), meta, 100)


def rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the worker with RANK=rank among torchrun's children (Linux /proc)."""
    for children in Path(f"/proc/{launcher}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(pid)
    return None


def output_hashes(folder: Path, options: dict[str, str]) -> dict[str, str]:
    """sha256 of every file the train stage writes under ``folder``, except its timing file (wall-clock on purpose):
    what dvc.lock would record for its outs."""
    files = [p for key in ("checkpoints", "live", "metrics") for p in sorted((folder / options[key]).rglob("*"))
             if p.is_file()] + [folder / options["metrics"]]
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the rank processes through Linux /proc")
def test_sigkilled_rank_fails_the_run_and_a_rerun_resumes_byte_identical(tmp_path):
    """Under `hybridlm train` with 2 gloo processes, SIGKILL rank 1 once a periodic state is stored: the run fails;
    the re-run resumes and writes the same bytes as an uninterrupted 2-process run (trained beside it meanwhile)."""
    params = yaml.safe_load((SOURCE_ROOT / "params.yaml").read_text(encoding="utf-8"))
    model = {k: v for k, v in TINY.__dict__.items() if k in params["model"]}
    train_section = {"steps": 400, "save_steps": [400], "batch_size": 2, "eval_every": 2, "warmup_steps": 1,
                     "decay_steps": 500, "device": "cpu", "nproc_per_node": 2}
    shorter = {**train_section, "steps": 8, "save_steps": [4, 8]}  # steps, save_steps: the same trajectory
    stage = read_stages(SOURCE_ROOT / "dvc.yaml")["train"]  # dvc.yaml's cmd, with its path options
    options = stage.options()

    def start(folder: Path, train: dict) -> subprocess.Popen:
        (folder / "params.yaml").write_text(yaml.safe_dump(merge(params, {"model": model, "train": train})))
        env = {**os.environ, "HYBRIDLM_CACHE": str(folder / "cache"), "OMP_NUM_THREADS": "1",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        return subprocess.Popen(stage.argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    for name in ("killed", "uninterrupted"):
        write_split(tmp_path / name / options["split"])
    # a DVC workspace holds the source tree: the ranks must still import the code the `hybridlm` command runs
    (tmp_path / "killed/hybridlm").mkdir()
    (tmp_path / "killed/hybridlm/__init__.py").write_text("raise ImportError('the hybridlm/ folder in the cwd was imported')")
    reference = start(tmp_path / "uninterrupted", shorter)
    proc = start(tmp_path / "killed", train_section)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "killed/cache").glob("train/*/resume-*.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "no periodic state appeared"
        time.sleep(0.05)
    victim = rank_pid(proc.pid, 1)
    assert victim is not None, "rank 1 not found among torchrun's children"
    os.kill(victim, signal.SIGKILL)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0
    assert "Signal 9 (SIGKILL)" in output and "rank      : 1" in output, output[-3000:]
    assert not (tmp_path / "killed" / options["checkpoints"]).exists()
    rerun = start(tmp_path / "killed", shorter)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output[-3000:]
    resumed = re.search(r"train: resuming from step (\d+)", output)
    assert resumed and int(resumed.group(1)) < 8, output[-3000:]  # it trained on after resuming
    output = reference.communicate(timeout=300)[0]
    assert reference.returncode == 0 and "starting from scratch" in output, output[-3000:]
    ours, theirs = (output_hashes(tmp_path / name, options) for name in ("killed", "uninterrupted"))
    assert sorted(ours) == sorted(theirs) and len([k for k in ours if k.endswith(".pt")]) == 2
    assert ours == theirs
