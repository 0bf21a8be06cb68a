"""The `hybridlm` command line: one command per DVC stage, plus `info`, `bench` and `demo`.

Why one command per stage: dvc.yaml's `cmd:` lines stay one call each, and every stage can be run by hand with the
same code path DVC uses. Every path a stage reads or writes is a required option that dvc.yaml's `cmd` passes, so
dvc.yaml is the only place that names them (tests/test_contract.py checks the two agree). Heavy imports (torch, transformers) happen inside the commands, so `--help`
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


def _path(help: str) -> typer.models.OptionInfo:
    """A required path option: dvc.yaml's `cmd` names every path a stage reads or writes (the library holds none)."""
    return typer.Option(..., help=help, show_default=False)


def _run(stage_module: str, params_path: Path, paths: dict[str, Path], **options) -> None:
    """Clean leftovers of killed runs, load and validate params, then run ``stages/<module>.run(params, ...)``."""
    import importlib

    from hybridlm.pipeline import remove_leftovers

    try:
        remove_leftovers(list(paths.values()))
        params = load_params(params_path)
        module = importlib.import_module(f"hybridlm.stages.{stage_module}")
        module.run(params, **paths, **options)
    except (ParamError, FileNotFoundError, ValueError) as exc:
        _fail(exc)


@app.command()
def download(params: Path = PARAMS, out: Path = _path("Corpus folder to write (LJ layout).")) -> None:
    """Fetch LJ Speech 1.1 (or a local archive/folder, or the synthetic corpus) into --out."""
    _run("download", params, {"out": out})


@app.command()
def resample(
    params: Path = PARAMS,
    raw: Path = _path("Corpus folder (LJ layout) to read."),
    out: Path = _path("Folder to write: wavs/<id>.flac and manifest.tsv."),
    metrics: Path = _path("JSON metrics to write (clip counts, hours, skipped files)."),
    timing: Path = _path("JSON timing to write (wall-clock; kept apart from the reproducible results)."),
    workers: int = typer.Option(0, help="Parallel processes (0 = all cores). Does not change the output."),
) -> None:
    """Resample every clip to 24 kHz mono FLAC and write the clip manifest."""
    _run("resample", params, {"raw": raw, "out": out, "metrics": metrics, "timing": timing}, workers=workers)


@app.command()
def tokenize(
    params: Path = PARAMS,
    resampled: Path = _path("Resample stage output to read."),
    out: Path = _path("Folder to write the token shards to."),
    metrics: Path = _path("JSON metrics to write (counts of clips, chunks, frames, shards)."),
    timing: Path = _path("JSON timing to write (device, wall-clock, real-time factor)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:K. CPU and GPU codes differ by float noise."),
    workers: int = typer.Option(0, help="Parallel processes (0 = one per CPU core, or per GPU on CUDA). Does not "
                                        "change the output."),
) -> None:
    """EnCodec-tokenize 8 s chunks into zstd Parquet shards."""
    _run("tokenize", params, {"resampled": resampled, "out": out, "metrics": metrics, "timing": timing},
         device=device, workers=workers)


@app.command()
def split(
    params: Path = PARAMS,
    tokens: Path = _path("Token shards to read."),
    out: Path = _path("Folder to write {train,val}/ shards to."),
    metrics: Path = _path("JSON metrics to write (clips, chunks, hours per side)."),
) -> None:
    """Clip-level train/val split of the token shards."""
    _run("split", params, {"tokens": tokens, "out": out, "metrics": metrics})


@app.command()
def sentences(
    params: Path = PARAMS,
    split: Path = _path("Split folder ({train,val}/ token shards) to read."),
    raw: Path = _path("Corpus folder (LJ layout) whose metadata.csv holds the transcripts."),
    out: Path = _path("Folder to write {train,val}/ sentence shards to."),
    metrics: Path = _path("JSON metrics to write (sentences, hours, skipped and unknown characters per side)."),
) -> None:
    """One example per clip with its normalised transcript."""
    _run("sentences", params, {"split": split, "raw": raw, "out": out, "metrics": metrics})


@app.command()
def align(
    params: Path = PARAMS,
    sentences: Path = _path("Sentence shards folder ({train,val}/) to align."),
    out: Path = _path("Folder to write {train,val}.jsonl (frames per text id of every sentence) to."),
    metrics: Path = _path("JSON metrics to write (rounds, frames per id; on the synthetic corpus its accuracy)."),
) -> None:
    """Flat-start Viterbi alignment of every sentence's codes to its text ids (fit on train)."""
    _run("align", params, {"sentences": sentences, "out": out, "metrics": metrics})


@app.command()
def train(
    params: Path = PARAMS,
    split: Path = _path("Split folder ({train,val}/ shards) to read."),
    checkpoints: Path = _path("Folder to write step-NNNNNN.pt checkpoints to."),
    live: Path = _path("DVCLive folder to write the per-step curves to."),
    metrics: Path = _path("JSON metrics to write (final losses, data summary)."),
    timing: Path = _path("JSON timing to write (tokens/s, resume point, device)."),
) -> None:
    """Train the hybrid LM; checkpoints at train.save_steps (resumes where it can)."""
    from hybridlm.ops.gated_delta import BackendParityError
    from hybridlm.training.loop import TrainingDiverged

    try:
        _run("train", params, {"split": split, "checkpoints": checkpoints, "live": live, "metrics": metrics,
                               "timing": timing})
    # NaN/inf (the last good state is saved), a kernel failing its start-up check, fla missing: a clear message.
    except (TrainingDiverged, BackendParityError, ImportError) as exc:
        _fail(exc)


@app.command("train_tts")
def train_tts(
    params: Path = PARAMS,
    sentences: Path = _path("Sentence shards folder ({train,val}/, with the text column) to read."),
    alignments: Path = _path("The align stage's folder ({train,val}.jsonl: frames per text id) to read."),
    init_from: Path = _path("Unconditional checkpoint to start from, or a folder of them (its latest step)."),
    checkpoints: Path = _path("Folder to write step-NNNNNN.pt checkpoints to."),
    live: Path = _path("DVCLive folder to write the per-step curves to."),
    metrics: Path = _path("JSON metrics to write (final losses with and without text, data summary)."),
    timing: Path = _path("JSON timing to write (tokens/s, resume point, device)."),
) -> None:
    """Fine-tune the text-conditioned model from an unconditional checkpoint (warm start); resumes where it can."""
    from hybridlm.ops.gated_delta import BackendParityError
    from hybridlm.training.loop import TrainingDiverged

    try:
        _run("train_tts", params, {"sentences": sentences, "alignments": alignments, "init_from": init_from,
                                   "checkpoints": checkpoints,
                                   "live": live, "metrics": metrics, "timing": timing})
    except (TrainingDiverged, BackendParityError, ImportError) as exc:
        _fail(exc)


@app.command()
def evaluate(
    params: Path = PARAMS,
    checkpoints: Path = _path("Checkpoint folder to read."),
    split: Path = _path("Split folder to read (val/ is evaluated)."),
    metrics: Path = _path("JSON metrics to write (EMA val loss/PPL per checkpoint)."),
) -> None:
    """EMA validation cross-entropy and perplexity for every checkpoint."""
    _run("evaluate", params, {"checkpoints": checkpoints, "split": split, "metrics": metrics})


@app.command("evaluate_tts")
def evaluate_tts(
    params: Path = PARAMS,
    checkpoints: Path = _path("Text-to-speech checkpoint folder to read."),
    sentences: Path = _path("Sentence shards folder to read (val/ is evaluated)."),
    alignments: Path = _path("The align stage's folder: val.jsonl gives the frames per text id read with; "
                             "val_oracle.jsonl, where present, the true ones (the oracle cap)."),
    init_from: Path = _path("The checkpoint train_tts started from (part of its data identity)."),
    metrics: Path = _path("JSON metrics to write (val loss with and without the text per checkpoint)."),
) -> None:
    """EMA val cross-entropy of every text-to-speech checkpoint, with and without the text."""
    _run("evaluate_tts", params, {"checkpoints": checkpoints, "sentences": sentences, "alignments": alignments,
                                  "init_from": init_from,
                                  "metrics": metrics})


@app.command()
def render(
    params: Path = PARAMS,
    checkpoints: Path = _path("Checkpoint folder to read."),
    eval_metrics: Path = _path("The evaluate stage's metrics (val loss per checkpoint, shown in the gallery)."),
    out: Path = _path("Folder to write WAVs, spectrograms and index.html to."),
) -> None:
    """Unconditional samples from every checkpoint: WAVs, spectrograms and an HTML gallery."""
    _run("render", params, {"checkpoints": checkpoints, "eval_metrics": eval_metrics, "out": out})


@app.command("render_tts")
def render_tts(
    params: Path = PARAMS,
    checkpoints: Path = _path("Text-to-speech checkpoint folder to read."),
    sentences: Path = _path("Sentence shards folder (the val transcripts are prompts)."),
    eval_metrics: Path = _path("The evaluate_tts stage's metrics (val loss per checkpoint, shown in the gallery)."),
    out: Path = _path("Folder to write WAVs, spectrograms, alignment plots and index.html to."),
    asr_metrics: Path = _path("JSON to write the ASR WER/CER of the val readings and their codec ceiling to."),
) -> None:
    """Every text-to-speech checkpoint reads val transcripts and tts_render.texts aloud: a gallery."""
    _run("render_tts", params, {"checkpoints": checkpoints, "sentences": sentences, "eval_metrics": eval_metrics,
                                "out": out, "asr_metrics": asr_metrics})


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

    try:
        seconds, ended = read_aloud(text, checkpoint, out, cfg_scale=cfg_scale, seed=seed, temperature=temperature,
                                    top_k=top_k, max_seconds=max_seconds, device=device)
    except (ParamError, FileNotFoundError, ValueError) as exc:
        _fail(exc)
    typer.echo(f"say: {seconds:.2f} s -> {out}" + ("" if ended else f" (no EOS: cut at --max-seconds {max_seconds:g})"))


@app.command()
def info(params: Path = PARAMS) -> None:
    """Print the model's layer schedule and parameter count for params.yaml's `model:` section."""
    _run("info", params, {})


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
    markdown: Path = typer.Option(None, help="--model/--generate: also write the tables (device, date, figures) "
                                  "to this file."),
) -> None:
    """Time forward+backward of each Gated DeltaNet backend and print the table with ratios (or, with --model,
    the whole training step beside transformers; with --generate, sampling speed)."""
    if model or generate:
        import dataclasses

        from hybridlm.atomic import write_text
        from hybridlm.config import section
        from hybridlm.training.benchmark import benchmark_generation, run_model_benchmark

        precisions = {"both": ("fp32", "bf16"), "bf16": ("bf16",), "fp32": ("fp32",)}
        try:
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
                                                   repeats, device, precisions[precision]))
            if markdown is not None:
                write_text(markdown, "\n\n".join(tables) + "\n")
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


