"""scripts/gpu_check.sh, the GPU acceptance run, rehearsed on CPU (its dry run) as a GPU machine would see it.

Why hide packages: the GPU machines have no network and lack dvc, soundfile, soxr, pocketsphinx, the text front
end's packages and fla (docs/performance.md, "GPU acceptance run"). The dry run below runs with those hidden from
Python, so a module-level import of one of them on the script's path fails here, not during a short GPU lease.
What does travel (scripts/gpu-wheels.txt) must carry the versions the project is tested with.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
# Imported by hybridlm somewhere, absent on the GPU machines, not carried as wheels (fla is, but needs CUDA).
ABSENT_THERE = ["dvc", "dvclive", "soundfile", "soxr", "pocketsphinx", "jiwer", "phonemizer", "espeakng_loader",
                "inflect", "fla"]
HIDE = """import sys
from importlib.machinery import PathFinder

class Hidden(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.split(".")[0] in {names!r} else super().find_spec(name, path, target)

sys.meta_path[:] = [Hidden if finder is PathFinder else finder for finder in sys.meta_path]
"""


def gpu_machine_env(tmp_path: Path) -> dict[str, str]:
    """This environment with ABSENT_THERE hidden (a sitecustomize first on PYTHONPATH) and the venv's python."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE.format(names=set(ABSENT_THERE)))
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "GPU_CHECK_REPORT")}
    env.update(PYTHONPATH=str(hide), PYTHON=sys.executable,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def run_script(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_dry_run_on_cpu_writes_every_section(tmp_path):
    env = gpu_machine_env(tmp_path)
    hidden = subprocess.run([sys.executable, "-c", "import soundfile"], env=env, capture_output=True, text=True)
    assert "No module named 'soundfile'" in hidden.stderr  # the hiding works: the rehearsal is not vacuous
    report = tmp_path / "out" / "gpu_check.md"
    result = run_script(["--device", "cpu", "--dry-run", "--report", str(report), "--wheels", str(tmp_path / "none")],
                        env)
    assert result.returncode == 0, result.stdout + result.stderr
    text = report.read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert [h.split(" ")[0] for h in headings] == ["0.", "1.", "2.", "3.", "Targets"]
    assert "dry run" in text and "device `cpu`" in text and text.count("**ran, passed**") == 3
    # 1: every cuda test is collected (none forgotten), and on CPU each skips itself
    expected = sum(len(re.findall(r"^@pytest\.mark\.cuda$", path.read_text(), re.M))
                   for path in (ROOT / "tests").glob("test_*.py"))
    assert len(re.findall(r"^tests/\S+::\S+ SKIPPED", text, re.M)) == expected >= 3
    # 2: both tables of `bench --model --generate`, transformers beside hybridlm
    assert "| hybridlm | fp32 |" in text and "| transformers | fp32 |" in text and "| 1 | fp32 |" in text
    # 3 and the targets: the number beside the target is the one the training table measured
    train = re.search(r"^## 3\..*?^\| hybridlm \| bf16 \| [\d.]+ \| ([\d,]+) \|", text, re.M | re.S)
    assert train and "| transformers |" not in text[train.start():]
    steps = train.group(1).replace(",", "")
    assert f"| training, delayed steps/s at 2 x 128, bf16 | {steps} ({int(steps) * 8} tokens/s) |" in text
    realtime = re.search(r"^\| 1 \| fp32 \| eager \| [\d.]+ \| ([\d.]+) \|", text, re.M).group(1)
    assert f"| one sample (batch 1, best precision), x real time | {realtime} | >= 20 | not judged (dry run) |" in text
    assert sorted(p.name for p in report.parent.iterdir()) == [
        "gpu_check-bench.log", "gpu_check-tests.log", "gpu_check-train.log", "gpu_check.md"]


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "--device must be cuda or cpu, got 'tpu'"),
    (["--report", "x.txt"], "--report must name a .md file, got 'x.txt'"),
    (["--fast"], "unknown option '--fast'"),
    (["--wheels"], "--wheels needs a value"),
])
def test_bad_usage_exits_2_before_writing_anything(tmp_path, args, message):
    env = gpu_machine_env(tmp_path)
    env["GPU_CHECK_REPORT"] = str(tmp_path / "report.md")
    result = run_script(args, env)
    assert result.returncode == 2 and message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hide"]


def pins(lines: list[str]) -> dict[str, str]:
    """{normalised name: version} of the `name==version` lines."""
    found = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==([^\s;#]+).*", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def test_carried_wheels_are_the_tested_versions():
    carried = pins((ROOT / "scripts" / "gpu-wheels.txt").read_text().splitlines())
    tested = pins((ROOT / "requirements.lock").read_text().splitlines())
    pyproject = (ROOT / "pyproject.toml").read_text()
    tested |= pins(re.findall(r'"([^"]+==[^"]+)"', pyproject.split("[project.optional-dependencies]")[1]))
    tested["fla-core"] = tested["flash-linear-attention"]  # which requires fla-core of its own version
    assert {"flash-linear-attention", "fla-core", "pydantic", "pydantic-core"} <= carried.keys()
    assert {name: version for name, version in carried.items() if tested.get(name) != version} == {}


@pytest.mark.slow
def test_cuda_run_without_a_gpu_reports_the_failures(tmp_path):
    """The control: asked for CUDA where there is none, the parts that need it are reported failed, not passed."""
    if subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit(torch.cuda.is_available())"]).returncode:
        pytest.skip("a GPU is visible: this control needs a machine without one")
    report = tmp_path / "r.md"
    result = run_script(["--dry-run", "--report", str(report), "--wheels", str(tmp_path / "none")],
                        gpu_machine_env(tmp_path))
    text = report.read_text()
    assert result.returncode == 1 and "No CUDA GPU is visible" in text
    assert text.count("**FAILED (exit status 2)**") == 2 and "no such CUDA device" in text
    assert text.count("not measured (see the part above)") == 2
