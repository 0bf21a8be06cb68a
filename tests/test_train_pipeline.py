"""End to end: the project's dvc.yaml on the synthetic corpus in a temporary git+DVC workspace (tiny model, 8
steps), then render outputs, the gallery in headless Chromium, a SIGKILLed run resumed, and `dvc exp run -S
train.steps=12` extending the run with the earlier checkpoints byte-identical. One workspace for the module."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from typer.testing import CliRunner

from hybridlm.cli import app
from hybridlm.demo import demo_overrides, summary
from hybridlm.pipeline import read_stages
from hybridlm.training.checkpoint import load_checkpoint
from hybridlm.workspace import create_workspace, merge, run_tool, tool_env

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import check_gallery  # noqa: E402
from test_reproducible import TIMING, out_hashes  # noqa: E402

STAGES = read_stages(ROOT / "dvc.yaml")

OVERRIDES = {
    "data": {"synthetic": {"clips": 8, "max_seconds": 2.5, "long_every": 0}},
    "train": {"steps": 8, "save_steps": [4, 8], "batch_size": 2, "eval_every": 2},
    "render": {"samples": 2, "seconds": 0.3},
    "tts_train": {"steps": 4, "save_steps": [2, 4], "eval_every": 2},
    "tts_render": {"val_sentences": 1, "texts": ["a word."], "max_seconds": 0.3},
}
SECONDS_FRAMES = round(0.3 * 75)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    env = pytest.MonkeyPatch()
    env.delenv("HYBRIDLM_CACHE", raising=False)
    env.setenv("OMP_NUM_THREADS", "1")  # tiny model: op overhead dominates; one thread is faster on a busy box
    ws = tmp_path_factory.mktemp("e2e") / "ws"
    create_workspace(ws, merge(demo_overrides(), OVERRIDES))
    run_tool(ws, "dvc", "repro", capture=True)
    run_tool(ws, "git", "add", "-A", capture=True)
    run_tool(ws, "git", "commit", "-q", "-m", "8-step run", capture=True)
    yield ws
    env.undo()


def test_repro_writes_checkpoints_metrics_and_curves(workspace):
    ckpts = sorted(p.name for p in (workspace / "data/checkpoints").iterdir())
    assert ckpts == ["step-000004.pt", "step-000008.pt"]
    state = load_checkpoint(workspace / "data/checkpoints/step-000008.pt")
    assert state["step"] == 8 and state["codec"]["hybridlm.weights"] == "random"
    evals = json.loads((workspace / "metrics/details/eval.json").read_text())
    assert set(evals) == {"step_4", "step_8", "final"} and evals["final"] == evals["step_8"]
    for entry in evals.values():
        assert entry["ppl"] == pytest.approx(math.exp(entry["loss"]))
        assert entry["loss"] == pytest.approx(sum(entry["per_codebook"].values()) / 8)
    # the declared metrics: the headline of the details, the same numbers
    assert json.loads((workspace / "metrics/eval.json").read_text()) == {
        key: {"loss": evals[key]["loss"], "ppl": evals[key]["ppl"]} for key in ("step_4", "step_8")}
    # The final EMA val loss logged during training is the evaluate stage's number for the same weights.
    train = json.loads((workspace / "metrics/train.json").read_text())
    assert train["step"] == 8 and train["val_ema_loss"] == pytest.approx(evals["step_8"]["loss"], rel=1e-4)
    assert 0 <= train["pad_fraction"] < 0.5
    assert "tokens_per_second" not in train and "train/tokens_per_second" not in state["history"][-1]
    timing = json.loads((workspace / "metrics/timing/train.json").read_text())
    assert timing["tokens_per_second"] > 0 and timing["started_from_step"] == 0 and timing["device"] == "cpu"
    shown = summary(workspace)  # what `hybridlm demo` prints, read through dvc.yaml's paths
    assert f"step     8: EMA val loss {evals['step_8']['loss']:.4f}" in shown and "tokens/s" in shown
    loss_rows = (workspace / "dvclive/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert loss_rows[0].split("\t") == ["step", "loss"] and len(loss_rows) == 1 + 8
    assert len((workspace / "dvclive/plots/metrics/val/ema_loss.tsv").read_text().splitlines()) == 1 + 4
    status = run_tool(workspace, "dvc", "status", capture=True).stdout
    assert "up to date" in status
    assert (workspace / ".hybridlm/.gitignore").read_text().strip().endswith("*")
    assert "hybridlm" not in run_tool(workspace, "git", "status", "--porcelain", capture=True).stdout


def test_render_writes_wavs_spectrograms_and_gallery(workspace):
    samples = workspace / "data/samples"
    evals = json.loads((workspace / "metrics/eval.json").read_text())
    page = (samples / "index.html").read_text()
    for step in (4, 8):
        audios = []
        for k in range(2):
            audio, rate = sf.read(samples / f"step-{step:06d}/sample-{k}.wav")
            assert rate == 24000 and len(audio) == SECONDS_FRAMES * 320
            audios.append(audio)
            assert (samples / f"step-{step:06d}/sample-{k}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f'src="step-{step:06d}/sample-{k}.wav"' in page
        # different samples render to clearly different audio (even with the random codec): difference RMS over
        # half the signal RMS, so a render reusing one code sequence for every sample fails here
        rms = [float(np.sqrt(np.mean(a ** 2))) for a in (*audios, audios[0] - audios[1])]
        assert rms[2] > 0.5 * max(rms[:2]), rms
        assert f"step {step}<br>" in page and f"EMA val loss {evals[f'step_{step}']['loss']:.4f}" in page
    assert page.count("<audio") == 4 and page.count("<img") == 4 + 5  # samples, curves
    assert "published values are not drawn" in page  # the demo is not the reference run
    for step in (4, 8):
        assert f'<tr id="metrics-{step}"><th>{step}</th><td>{evals[f"step_{step}"]["loss"]:.4f}</td>' in page


@pytest.mark.skipif(check_gallery.find_browser() is None, reason="needs Chromium (apt-get install -y chromium)")
def test_gallery_loads_in_headless_chromium(workspace, tmp_path):
    ok, summary = check_gallery.check(workspace / "data/samples/index.html", tmp_path / "shot.png")
    assert ok, summary
    assert "decoded 9/9" in summary and "playable 4/4" in summary  # 5 curves + 4 spectrograms
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def file_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sigkill_during_repro_then_repro_equals_uninterrupted(workspace, tmp_path):
    """In a copy of the workspace with an empty resume store, for train and then train_tts: `dvc repro -f -s` is
    SIGKILLed (dvc and the stage: its process group) once the run has stored its first state, then `dvc repro -s`
    (no run-cache: the stage must really run) resumes. Every file of the stage's outputs and every out hash in
    dvc.lock, except the timing file's (wall-clock on purpose), must equal the uninterrupted run's, so nothing
    downstream is stale: equal tensors in different files would re-run evaluate, render and the TTS stages."""
    copy = tmp_path / "ws"
    shutil.copytree(workspace, copy, symlinks=True)
    cache = tmp_path / "cache"
    env = {**tool_env(), "HYBRIDLM_CACHE": str(cache)}
    for stage in ("train", "train_tts"):
        stored = set(cache.glob("train/*/*.pt"))
        proc = subprocess.Popen(["dvc", "repro", "-f", "-s", stage], cwd=copy, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not set(cache.glob("train/*/*.pt")) - stored:
            assert proc.poll() is None and time.monotonic() < deadline, f"{stage}: no state stored before the end"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, f"{stage}: the run had finished before the kill"
        rerun = subprocess.run(["dvc", "repro", "--no-run-cache", "-s", stage], cwd=copy, env=env,
                               capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert "train: resuming from step" in rerun.stderr, rerun.stderr
        ours, reference = out_hashes(copy), out_hashes(workspace)
        outs = [key for key in reference if key.startswith(f"{stage}:") and TIMING not in key]
        assert len(outs) == 3  # checkpoints, the DVCLive folder, the metrics file
        assert {k: ours[k] for k in outs} == {k: reference[k] for k in outs}
        for out in outs:
            path = out.split(":", 1)[1]
            if (workspace / path).is_dir():
                assert file_hashes(copy / path) == file_hashes(workspace / path), path
    assert "up to date" in run_tool(copy, "dvc", "status", capture=True).stdout  # evaluate, render, ...: not stale


def test_bad_inputs_give_clear_errors(workspace, tmp_path, monkeypatch):
    """Missing/empty shards, a corrupt or incompatible checkpoint, a step that does not exist: exit 2 + message."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYBRIDLM_CACHE", str(tmp_path / "cache"))

    def hybridlm(stage: str, overrides: dict | None = None) -> str:
        """Run the CLI command in-process (fast); it must fail with exit code 2 and return its message."""
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(merge(params, overrides or {})))
        result = CliRunner().invoke(app, list(STAGES[stage].argv[1:]))
        assert result.exit_code == 2, result.output
        return result.output

    assert "data/split/train: no such shard file or folder" in hybridlm("train")
    (tmp_path / "data/split/train").mkdir(parents=True)
    assert "data/split/train: folder holds no .parquet shards" in hybridlm("train")
    from hybridlm.data.shards import read_shards, write_shards
    _, meta = read_shards(workspace / "data/split/train")
    write_shards(tmp_path / "data/split/train", [], {k.removeprefix("hybridlm."): v for k, v in meta.items()}, 10)
    assert "data/split/train: the shards hold no chunks" in hybridlm("train")

    shutil.rmtree(tmp_path / "data/split")
    shutil.copytree(workspace / "data/split", tmp_path / "data/split")
    assert "gated_delta backend 'fla_chunk' needs a CUDA device" in hybridlm("train", {"model": {"gdn_backend": "fla_chunk"}})
    diverged = hybridlm("train", {"train": {"lr": 1e30, "warmup_steps": 0, "grad_clip": 1e30}})
    assert "non-finite loss at step 2" in diverged and "last good state (step 1) is saved" in diverged
    shutil.copytree(workspace / "data/checkpoints", tmp_path / "data/checkpoints")
    shutil.copytree(workspace / "metrics", tmp_path / "metrics")
    assert "asks for step(s) [5]" in hybridlm("evaluate", {"evaluate": {"steps": [5]}})
    assert "model.d_model: checkpoint 64, params.yaml 96" in hybridlm("evaluate", {"model": {"d_model": 96}})
    val = sorted((tmp_path / "data/split/val").glob("*.parquet"))[0]
    original = val.read_bytes()
    (tmp_path / "data/split/val" / "shard-extra.parquet").write_bytes(original)  # other data: another hash
    assert "incompatible checkpoint (other data)" in hybridlm("evaluate")
    (tmp_path / "data/split/val" / "shard-extra.parquet").unlink()
    # A corrupt LATER checkpoint stops evaluate and render before they process the earlier one: nothing written.
    later = tmp_path / "data/checkpoints/step-000008.pt"
    results = [tmp_path / "metrics/eval.json", tmp_path / "metrics/details/eval.json"]
    intact, before = later.read_bytes(), [path.read_bytes() for path in results]
    later.write_bytes(intact[: len(intact) // 2])
    for stage in ("evaluate", "render"):
        output = hybridlm(stage)
        assert "step-000008.pt: not a readable checkpoint" in output, output
        assert "step 4:" not in output and "RANDOM weights" not in output, output  # no model or codec work began
    assert [path.read_bytes() for path in results] == before and not (tmp_path / "data/samples").exists()
    assert not list((tmp_path / "data").glob(".samples.*"))
    later.write_bytes(intact)
    ckpt = tmp_path / "data/checkpoints/step-000004.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert "step-000004.pt: not a readable checkpoint" in hybridlm("evaluate")
    assert "step-000004.pt: not a readable checkpoint" in hybridlm("render")


def test_exp_run_extends_and_keeps_earlier_checkpoints_byte_identical(workspace):
    before = {p.name: p.read_bytes() for p in (workspace / "data/checkpoints").iterdir()}
    out = run_tool(workspace, "dvc", "exp", "run", "-S", "train.steps=12", capture=True)
    assert "train: resuming from step 8" in out.stdout + out.stderr
    after = {p.name: p.read_bytes() for p in (workspace / "data/checkpoints").iterdir()}
    assert sorted(after) == ["step-000004.pt", "step-000008.pt", "step-000012.pt"]
    assert all(after[name] == data for name, data in before.items())
    evals = json.loads((workspace / "metrics/details/eval.json").read_text())
    assert evals["final"]["step"] == 12 and "step_4" in evals
    diff = run_tool(workspace, "dvc", "metrics", "diff", capture=True).stdout
    assert "metrics/eval.json" in diff and "step_12.loss" in diff
    # Only the headline is declared: the new checkpoint's loss/PPL and the re-run text-to-speech numbers, a few lines
    # (the files declared before changed in 176 values here); per codebook and the rest are in metrics/details/.
    changed = json.loads(run_tool(workspace, "dvc", "metrics", "diff", "--json", capture=True).stdout)
    names = [name for metrics in changed.values() for name in metrics]
    assert {"step_12.loss", "step_12.ppl"} <= set(names) and len(names) <= 12, names
    assert {name.rsplit(".", 1)[-1] for name in names} <= {"loss", "ppl", "content_gap", "cb0", "reading_error_rate",
                                                          "reading_error_floor", "wer"}, names
    # The documented readable `dvc exp show`: the metrics and params that differ, no dependency hashes.
    shown = next(line for line in (ROOT / "docs/training.md").read_text().splitlines()
                 if line.startswith("$ dvc exp show"))
    table = run_tool(workspace, *shlex.split(shown)[1:], "--no-pager", "--csv", capture=True).stdout
    columns = table.splitlines()[0].split(",")
    assert columns[:3] == ["Experiment", "rev", "typ"] and "train.steps" in columns, columns
    assert {"step_12.loss", "step_12.ppl"} <= set(columns) <= {"Experiment", "rev", "typ", "train.steps", *names}, columns
    assert len((workspace / "dvclive/plots/metrics/train/loss.tsv").read_text().splitlines()) == 1 + 12
    plots = run_tool(workspace, "dvc", "plots", "diff", "-o", "plots-diff", capture=True)
    assert plots.returncode == 0 and (workspace / "plots-diff/index.html").is_file()


def test_tts_stages_write_checkpoints_the_gap_a_gallery_and_say_reads(workspace, tmp_path):
    """train_tts -> evaluate_tts -> render_tts ran in the same repro, from the train stage's latest checkpoint."""
    tts = STAGES["train_tts"].options()
    assert sorted(p.name for p in (workspace / tts["checkpoints"]).iterdir()) == ["step-000002.pt", "step-000004.pt"]
    state = load_checkpoint(workspace / tts["checkpoints"] / "step-000004.pt")
    assert state["model_config"]["text"]["layers"] >= 1 and state["text_vocab"]["version"] == "chars-v1"
    train = json.loads((workspace / tts["metrics"]).read_text())
    assert train["conditioning_gap"] == pytest.approx(train["val_ema_loss_no_text"] - train["val_ema_loss"])
    evaluate_tts = STAGES["evaluate_tts"].options()
    evals = json.loads((workspace / evaluate_tts["details"]).read_text())
    final = evals["final"]
    assert final["step"] == 4 and final["with_text"]["targets"] == final["without_text"]["targets"] > 0
    assert final["conditioning_gap"] == pytest.approx(final["without_text"]["loss"] - final["with_text"]["loss"])
    # the content gap: a same-shape wrong text against the right one, overall and per codebook
    assert final["content_gap"] == pytest.approx(final["wrong_text"]["loss"] - final["with_text"]["loss"])
    assert final["content_gap"] != 0 and final["wrong_text"]["targets"] == final["with_text"]["targets"]
    assert final["content_gap_per_codebook"]["cb0"] == pytest.approx(
        final["wrong_text"]["per_codebook"]["cb0"] - final["with_text"]["per_codebook"]["cb0"])
    out = workspace / STAGES["render_tts"].options()["out"]
    page = (out / "index.html").read_text()
    # 2 checkpoints x 2 prompts, and the reference row's val clip
    assert page.count('class="prompt"') == 2 * 2 + 1 and "&ldquo;a word.&rdquo;" in page
    for step in (2, 4):
        for k in range(2):
            for suffix in (".wav", ".png", ".align.png") + ((".heard.wav", ".heard.png") if k == 0 else ()):
                assert (out / f"step-{step:06d}" / f"prompt-{k}{suffix}").stat().st_size > 0
    assert (out / "codec-resynthesis/val-0.wav").stat().st_size > 0
    assert 'src="codec-resynthesis/val-0.wav"' in page and "content gap cb0" in page and "EOS rate" in page
    # Intelligibility: the ASR on the 1 val reading per checkpoint and on the codec resynthesis of its real clip.
    render_tts = STAGES["render_tts"].options()
    scores = json.loads((workspace / render_tts["asr_details"]).read_text())
    assert scores["asr"] == "pocketsphinx" and scores["codec_weights"] == "random", scores
    assert sorted(k for k in scores if k.startswith("step_")) == ["step_2", "step_4"] and scores["final"]["step"] == 4
    for key in ("ceiling", "step_2", "step_4"):
        assert 0 <= scores[key]["wer"] < math.inf and 0 <= scores[key]["cer"] < math.inf
        assert scores[key]["utterances"] == 1 and "realtime_factor" not in scores[key]  # timing: not a result
    for key in ("step_2", "step_4"):  # one val reading: no correlation; the sound-class recogniser scores it
        assert scores[key]["sentences"] == 1 and scores[key]["duration_correlation"] is None
        assert scores[key]["eos_rate"] in (0.0, 1.0) and scores[key]["reading_error_rate"] >= 0
        assert scores[key]["reading_error_floor"] == scores["final"]["reading_error_floor"]
    assert scores["reader"].startswith("hybridlm.synthetic_asr")
    # the declared metrics: the headline of the details, the same numbers
    assert json.loads((workspace / evaluate_tts["metrics"]).read_text()) == {
        f"step_{step}": {"content_gap": evals[f"step_{step}"]["content_gap"],
                         "content_gap_per_codebook": {"cb0": evals[f"step_{step}"]["content_gap_per_codebook"]["cb0"]}}
        for step in (2, 4)}
    assert json.loads((workspace / render_tts["asr_metrics"]).read_text()) == {
        "ceiling": {"wer": scores["ceiling"]["wer"]},
        **{f"step_{step}": {key: scores[f"step_{step}"][key] for key in ("reading_error_rate", "reading_error_floor",
                                                                        "wer")} for step in (2, 4)}}
    assert f"step 4 WER {scores['step_4']['wer']:.2f}" in page and "ceiling (codec resynthesis" in page
    printed = summary(workspace)
    assert "Intelligibility (pocketsphinx ASR" in printed and "content gap" in printed
    assert "Readings of 1 val sentences at step 4: duration r undefined" in printed and "recogniser floor" in printed
    wav = tmp_path / "speech.wav"
    said = run_tool(workspace, "hybridlm", "say", "A word.", "--checkpoint",
                    str(workspace / tts["checkpoints"] / "step-000004.pt"), "--out", str(wav), "--max-seconds", "0.4",
                    capture=True)
    assert "say: " in said.stdout and wav.stat().st_size > 44


def test_exp_run_with_phonemes_reruns_only_the_text_stages_and_say_reads_through_espeak(workspace, tmp_path):
    """`-S tts_model.frontend=phonemes`: the aligner and the text-to-speech stages work on espeak-ng IPA, the
    unconditional run and the sentences stay as they were, and the checkpoint carries the phoneme vocabulary that `say` then uses."""
    tts = STAGES["train_tts"].options()
    unconditional = {p.name: p.read_bytes() for p in (workspace / "data/checkpoints").iterdir()}
    out = run_tool(workspace, "dvc", "exp", "run", "-S", "tts_model.frontend=phonemes", capture=True)
    ran = {line.split("'")[1] for line in (out.stdout + out.stderr).splitlines() if line.startswith("Running stage")}
    assert ran == {"align", "train_tts", "evaluate_tts", "render_tts"}, ran  # align: the ids it aligns change
    assert {p.name: p.read_bytes() for p in (workspace / "data/checkpoints").iterdir()} == unconditional
    state = load_checkpoint(sorted((workspace / tts["checkpoints"]).iterdir())[-1])
    assert state["model_config"]["text"]["frontend"] == "phonemes"
    assert state["text_vocab"]["frontend"] == "phonemes" and "ˈ" in state["text_vocab"]["symbols"]
    wav = tmp_path / "speech.wav"
    said = run_tool(workspace, "hybridlm", "say", "In 1963.", "--checkpoint",  # spelled out before espeak
                    str(sorted((workspace / tts["checkpoints"]).iterdir())[-1]), "--out", str(wav),
                    "--max-seconds", "1.5", capture=True)
    assert "say: " in said.stdout and wav.stat().st_size > 44
