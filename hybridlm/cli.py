"""The `hybridlm` command line: one command per DVC stage, plus `info`, `bench` and `demo`.

Why one command per stage: dvc.yaml's `cmd:` lines stay one short call each, and every stage can be run by hand
with the same code path DVC uses. Heavy imports (torch, transformers) happen inside the commands, so `--help`
stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from hybridlm.config import load_params
from hybridlm.params import ParamError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="params.yaml to read (grouped by stage).")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run(stage_module: str, params_path: Path, **options) -> None:
    """Load and validate params, then run one stage module's `run(params, **options)`."""
    import importlib

    try:
        params = load_params(params_path)
        module = importlib.import_module(f"hybridlm.stages.{stage_module}")
        module.run(params, **options)
    except (ParamError, FileNotFoundError, ValueError) as exc:
        _fail(exc)


@app.command()
def download(params: Path = PARAMS) -> None:
    """Fetch LJ Speech 1.1 (or a local archive/folder, or the synthetic corpus) into data/raw/LJSpeech-1.1."""
    _run("download", params)


@app.command()
def resample(
    params: Path = PARAMS,
    workers: int = typer.Option(0, help="Parallel processes (0 = all cores). Does not change the output."),
) -> None:
    """Resample every clip to 24 kHz mono FLAC and write data/resampled/manifest.tsv."""
    _run("resample", params, workers=workers)


@app.command()
def tokenize(
    params: Path = PARAMS,
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:K. CPU and GPU codes differ by float noise."),
    workers: int = typer.Option(0, help="Parallel processes (0 = one per CPU core, or per GPU on CUDA). Does not "
                                        "change the output."),
) -> None:
    """EnCodec-tokenize 8 s chunks into zstd Parquet shards under data/tokens."""
    _run("tokenize", params, device=device, workers=workers)


@app.command()
def split(params: Path = PARAMS) -> None:
    """Clip-level train/val split of the token shards into data/split/{train,val}; writes metrics/data.json."""
    _run("split", params)


@app.command()
def sentences(params: Path = PARAMS) -> None:
    """One example per clip with its normalised transcript into data/sentences/{train,val}; metrics/sentences.json."""
    _run("sentences", params)


@app.command()
def train(params: Path = PARAMS) -> None:
    """Train the hybrid LM; checkpoints at train.save_steps under data/checkpoints (resumes where it can)."""
    from hybridlm.ops.gated_delta import BackendParityError
    from hybridlm.training.loop import TrainingDiverged

    try:
        _run("train", params)
    # NaN/inf (the last good state is saved), a kernel failing its start-up check, fla missing: a clear message.
    except (TrainingDiverged, BackendParityError, ImportError) as exc:
        _fail(exc)


@app.command()
def evaluate(params: Path = PARAMS) -> None:
    """EMA validation cross-entropy and perplexity for every checkpoint into metrics/eval.json."""
    _run("evaluate", params)


@app.command()
def render(params: Path = PARAMS) -> None:
    """Unconditional samples from every checkpoint: WAVs, spectrograms and an HTML gallery under data/samples."""
    _run("render", params)


@app.command()
def info(params: Path = PARAMS) -> None:
    """Print the model's layer schedule and parameter count for params.yaml's `model:` section."""
    _run("info", params)


@app.command()
def bench(
    batch: int = typer.Option(2, help="Batch size."),
    length: int = typer.Option(1024, help="Sequence length T."),
    heads: int = typer.Option(6, help="Heads H."),
    key_dim: int = typer.Option(48, help="Key head dim K."),
    value_dim: int = typer.Option(96, help="Value head dim V."),
    repeats: int = typer.Option(5, help="Timed repeats per backend (median reported)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    model: bool = typer.Option(False, "--model", help="Instead: whole-model training steps/s, memory and MFU of "
                               "hybridlm and transformers' OlmoHybridModel (params' model section, --batch rows)."),
    params: Path = PARAMS,
    schedule: str = typer.Option("", help="--model: override model.schedule (e.g. AAAAAAAA)."),
    d_ff: int = typer.Option(0, "--d-ff", help="--model: override model.d_ff (0 = keep)."),
    precision: str = typer.Option("both", help="--model: both | bf16 | fp32 (the best of each is compared)."),
    baseline: bool = typer.Option(False, "--baseline", help="--model: also time the parameter-matched "
                                  "pure-attention config (all layers A, d_ff matched; AAAAAAAA/1350 by default)."),
    markdown: Path = typer.Option(None, help="--model: also write the table (device, date, figures) to this file."),
) -> None:
    """Time forward+backward of each Gated DeltaNet backend and print the table with ratios (or, with --model,
    the whole training step beside transformers)."""
    if model:
        import dataclasses

        from hybridlm.config import section
        from hybridlm.training.benchmark import run_model_benchmark

        precisions = {"both": ("fp32", "bf16"), "bf16": ("bf16",), "fp32": ("fp32",)}
        try:
            if precision not in precisions:
                raise ValueError(f"bench: --precision must be both, bf16 or fp32, got {precision!r}")
            overrides = {k: v for k, v in (("schedule", schedule), ("d_ff", d_ff)) if v}
            config = dataclasses.replace(section(load_params(params), "model"), **overrides)
            run_model_benchmark(config, batch, repeats, device, precisions[precision], baseline, markdown)
        except (ParamError, FileNotFoundError, ValueError) as exc:
            _fail(exc)
        return
    from hybridlm.ops.benchmark import run_benchmark

    run_benchmark(batch=batch, length=length, heads=heads, key_dim=key_dim, value_dim=value_dim,
                  repeats=repeats, device=device)


@app.command()
def demo(
    workdir: Path = typer.Option(Path("demo"), help="Workspace to create (a fresh git+DVC repo)."),
) -> None:
    """Run the whole pipeline with `dvc repro` on the synthetic corpus and a tiny model (CPU, a few minutes)."""
    from hybridlm.demo import run_demo

    try:
        run_demo(workdir)
    except (ParamError, FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(exc)


