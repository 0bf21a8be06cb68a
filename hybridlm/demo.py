"""`hybridlm demo`: the project's own dvc.yaml, end to end, offline on CPU, in a fresh git+DVC workspace.

Why a workspace and not the checkout: the demo must not touch the checkout's params.yaml, DVC cache or outputs,
and it must run exactly what a user runs (`dvc repro`), only with params.demo.yaml's overrides (synthetic corpus,
random-weight codec, tiny model, 40 steps). Afterwards the workspace is a normal DVC project to explore with
`dvc exp run -S train.steps=60`, `dvc metrics diff`, `dvc plots diff`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hybridlm.asr import summary_line
from hybridlm.params import read_yaml
from hybridlm.pipeline import read_stages
from hybridlm.results.reading_metrics import summary_line as reading_line
from hybridlm.workspace import SOURCE_ROOT, create_workspace, run_tool

DEMO_PARAMS = SOURCE_ROOT / "params.demo.yaml"


def demo_overrides() -> dict:
    """params.demo.yaml as a mapping (the overrides merged into params.yaml)."""
    if not DEMO_PARAMS.is_file():
        raise FileNotFoundError(f"{DEMO_PARAMS}: not found; the demo needs a source checkout of hybridlm")
    return read_yaml(DEMO_PARAMS)


def summary(workdir: Path) -> str:
    """EMA val loss/PPL per checkpoint and the training summary, from the results files the stages wrote (the
    details: the declared metrics hold only the headline)."""
    stages = read_stages(workdir / "dvc.yaml")
    train_paths = stages["train"].options()

    def load(path: Path) -> dict:
        return json.loads((workdir / path).read_text(encoding="utf-8"))

    evals = load(stages["evaluate"].options()["details"])
    train, timing = load(train_paths["metrics"]), load(train_paths["timing"])
    lines = [f"  step {v['step']:>5}: EMA val loss {v['loss']:.4f}  ppl {v['ppl']:8.2f}"
             for k, v in evals.items() if k != "final"]
    lines.append(f"  train: {train['step']} steps, last train loss {train['train_loss']:.4f}, padded positions "
                 f"{train['pad_fraction']:.2%}, {timing['tokens_per_second'] or 0:,.0f} tokens/s (median)")
    tts = load(stages["evaluate_tts"].options()["details"])
    lines += [f"  text-to-speech step {v['step']:>5}: EMA val loss {v['with_text']['loss']:.4f} with the text, "
              f"{v['without_text']['loss']:.4f} without (gap {v['conditioning_gap']:+.4f} nats), content gap "
              f"{v['content_gap']:+.4f} (codebook 0 {v['content_gap_per_codebook']['cb0']:+.4f})"
              for k, v in tts.items() if k != "final"]
    readings = load(stages["render_tts"].options()["asr_details"])
    lines += ["  " + reading_line(readings), "  " + summary_line(readings)]
    return "\n".join(lines)


def run_demo(workdir: Path) -> None:
    """Create ``workdir`` from the checkout with the demo params, run `dvc repro`, and say where everything is."""
    workdir = Path(workdir).resolve()
    tic = time.perf_counter()
    overrides = demo_overrides()
    create_workspace(workdir, overrides)
    print(f"demo: workspace {workdir} (git + DVC, params.yaml = params.yaml + params.demo.yaml); running dvc repro",
          flush=True)
    run_tool(workdir, "dvc", "repro")
    steps = overrides["train"]["steps"]
    # Commit the results, so that `dvc exp run` / `dvc metrics diff` / `dvc plots diff` compare against this run.
    run_tool(workdir, "git", "add", "-A", capture=True)
    run_tool(workdir, "git", "commit", "-q", "-m", f"demo: dvc repro ({steps} steps)", capture=True)
    minutes = (time.perf_counter() - tic) / 60
    stages = read_stages(workdir / "dvc.yaml")
    train, evaluate, render, render_tts = (stages[name].options()
                                           for name in ("train", "evaluate", "render", "render_tts"))
    checkpoints = sorted(p.name for p in (workdir / train["checkpoints"]).glob("step-*.pt"))
    longer = steps + max(1, steps // 2)
    print(f"""
demo: pipeline finished in {minutes:.1f} min.
{summary(workdir)}
  checkpoints   {workdir / train["checkpoints"]}/   ({', '.join(checkpoints)})
  metrics       {workdir / evaluate["metrics"]} (EMA val loss/PPL per checkpoint), {train["metrics"]}
  details       {workdir / evaluate["details"]} (every number per checkpoint: per codebook, val targets)
  timing        {workdir / train["timing"]} (tokens/s; apart from the results, which are byte-reproducible)
  curves        {workdir / train["live"]}/plots/metrics/  ->  cd {workdir} && dvc plots show   (writes dvc_plots/index.html)
  gallery       {workdir / render["out"]}/index.html
  speech        {workdir / render_tts["out"]}/index.html (text-to-speech: prompts, audio, alignments)
  next          . {Path(sys.executable).parent}/activate && cd {workdir} && dvc exp run -S train.steps={longer} && dvc metrics diff && dvc plots diff
                (continues the {steps}-step run from its stored state; the checkpoints above stay byte-identical)""")
