"""The `hybridlm` command line: one command per stage module (stages/*.py), plus `say`, `bench` and `demo`.

Why one command per stage: dvc.yaml's `cmd:` lines stay one call each, and every stage can be run by hand with the
same code path DVC uses. Each stage command is generated from its module's ``run()`` signature (hybridlm/interface.py):
every path it reads or writes is a required option that dvc.yaml's `cmd` passes, so a path is named in dvc.yaml and
in the stage's keyword argument, nowhere else (tests/test_contract.py checks they agree). The signatures are read from
the source and the stage is imported only when its command runs, so `--help` stays fast.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from pathlib import Path

import typer

from hybridlm.codegraph import SOURCE_ROOT
from hybridlm.config import load_params
from hybridlm.interface import StageFailure, StageSignature, read_stage
from hybridlm.params import ParamError, naming_file

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])

@app.callback()
def _start() -> None:
    """Before any command: glibc malloc keeps freed memory for reuse (hybridlm/allocator.py says why and what it
    costs), for training, evaluation and the benchmarks alike."""
    from hybridlm.allocator import keep_freed_memory

    keep_freed_memory()


PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="params.yaml to read (grouped by stage).")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@contextmanager
def _clear_errors(*also: type[Exception], params_file: Path | None = None):
    """Bad params or paths, a missing file, a failure the user must act on (hybridlm/interface.py), a missing optional
    package: one red line and exit 2 instead of a traceback. Every command runs under it; a params error names
    ``params_file``, the file the command read."""
    try:
        yield
    except ParamError as exc:
        _fail(exc if params_file is None else naming_file(exc, params_file))
    except (FileNotFoundError, ValueError, StageFailure, ImportError, *also) as exc:
        _fail(exc)


def _run_stage(name: str, params_path: Path, signature: StageSignature, arguments: dict) -> None:
    """Clean leftovers of killed runs, load and validate params, then run ``stages/<name>.run(params, ...)``."""
    import importlib

    from hybridlm.pipeline import remove_leftovers

    with _clear_errors(params_file=params_path):
        remove_leftovers([arguments[n] for n in signature.paths()])
        params = load_params(params_path)
        importlib.import_module(f"hybridlm.stages.{name}").run(params, **arguments)


def _stage_command(name: str, signature: StageSignature) -> None:
    """Register ``hybridlm <name>``: ``--params/-p`` and one option per argument of the stage's run() (a path option
    is required: dvc.yaml's cmd passes it)."""

    def command(params: Path, **arguments) -> None:
        _run_stage(name, params, signature, arguments)

    options = [inspect.Parameter(a.name, inspect.Parameter.KEYWORD_ONLY, annotation=a.type,
                                 default=typer.Option(a.default, help=a.role.help, show_default=a.default is not ...))
               for a in signature.arguments]
    command.__signature__ = inspect.Signature(
        [inspect.Parameter("params", inspect.Parameter.KEYWORD_ONLY, annotation=Path, default=PARAMS), *options])
    app.command(name, help=signature.help)(command)


for _source in sorted((SOURCE_ROOT / "stages").glob("[!_]*.py")):
    _stage_command(_source.stem, read_stage(_source))


@app.command()
def say(
    text: str = typer.Argument(..., help="What to say (numbers, money, years: spelled out as LJ Speech reads them)."),
    checkpoint: Path = typer.Option(..., help="A checkpoint of the train_tts stage (step-NNNNNN.pt)."),
    out: Path = typer.Option(Path("speech.wav"), help="WAV file to write."),
    cfg_scale: float = typer.Option(3.0, help="Classifier-free guidance scale, 0..100 (1 = plain conditional "
                                              "sampling)."),
    seed: int = typer.Option(0, help="Sampling seed, 0..2^64-1."),
    temperature: float = typer.Option(1.0, help="Sampling temperature, 0.001..100."),
    top_k: int = typer.Option(250, help="Sample among the k most likely codes (>= 1)."),
    max_seconds: float = typer.Option(12.0, help="Length guard when the model samples no EOS (at most 60; a text "
                                                 "that cannot fit at 25 characters per second is refused)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:K."),
) -> None:
    """Read one sentence aloud with a text-to-speech checkpoint and write it as a WAV file."""
    from hybridlm.say import say as read_aloud

    with _clear_errors():
        seconds, ended = read_aloud(text, checkpoint, out, cfg_scale=cfg_scale, seed=seed, temperature=temperature,
                                    top_k=top_k, max_seconds=max_seconds, device=device)
    typer.echo(f"say: {seconds:.2f} s -> {out}" + ("" if ended else f" (no EOS: cut at --max-seconds {max_seconds:g})"))


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
    peer: bool = typer.Option(True, "--peer/--no-peer", help="--model: time transformers' OlmoHybridModel beside "
                              "hybridlm (--no-peer: hybridlm alone, as scripts/gpu_check.sh times the reference batch)."),
    generate: bool = typer.Option(False, "--generate", help="Instead (or with --model): cached sampling speed "
                                  "and real-time factor at batch 1 and --generate-batch."),
    frames: int = typer.Option(150, help="--generate: frames per sample (75 = 1 s)."),
    generate_batch: int = typer.Option(16, help="--generate: the batched setting timed beside batch 1."),
    compile: bool = typer.Option(False, "--compile", help="--generate: also time the compiled decode step "
                                 "(torch.compile; its compile time is reported; on a CPU it needs a C++ compiler)."),
    markdown: Path = typer.Option(None, help="--model/--generate: also write the tables (device, date, figures) "
                                  "to this file."),
) -> None:
    """Time forward+backward of each Gated DeltaNet backend and print the table with ratios (or, with --model,
    the whole training step beside transformers; with --generate, sampling speed)."""
    if compile and not generate:
        with _clear_errors():
            raise ValueError("bench: --compile times the compiled decode step; give it with --generate")
    if model or generate:
        import dataclasses

        from hybridlm.atomic import write_text
        from hybridlm.config import section
        from hybridlm.bench.whole_model import benchmark_generation, run_model_benchmark

        precisions = {"both": ("fp32", "bf16"), "bf16": ("bf16",), "fp32": ("fp32",)}
        with _clear_errors(params_file=params):
            if precision not in precisions:
                raise ValueError(f"bench: --precision must be both, bf16 or fp32, got {precision!r}")
            overrides = {k: v for k, v in (("schedule", schedule), ("d_ff", d_ff)) if v}
            config = dataclasses.replace(section(load_params(params), "model"), **overrides)
            tables = []
            if model:
                tables.append(run_model_benchmark(config, batch, repeats, device, precisions[precision],
                                                  baseline, peer)[1])
            if generate:
                tables.append(benchmark_generation(config, frames, tuple(dict.fromkeys((1, generate_batch))),
                                                   repeats, device, precisions[precision], compile))
            if markdown is not None:
                write_text(markdown, "\n\n".join(tables) + "\n")
        return
    from hybridlm.bench.kernels import run_benchmark

    with _clear_errors():
        run_benchmark(batch=batch, length=length, heads=heads, key_dim=key_dim, value_dim=value_dim,
                      repeats=repeats, device=device)


@app.command()
def demo(
    workdir: Path = typer.Option(Path("demo"), help="Workspace to create (a fresh git+DVC repo)."),
) -> None:
    """Run the whole pipeline with `dvc repro` on the synthetic corpus and a tiny model (CPU, a few minutes)."""
    from hybridlm.demo import run_demo

    with _clear_errors(RuntimeError):  # a command of the demo failed (hybridlm/workspace.py): its output
        run_demo(workdir)


