"""The training stages' common body: the torchrun self-launch, the backend check, the loop, and the outputs.

Why in the library: `hybridlm train` and `hybridlm train_tts` differ only in the data they read (packed chunks, or
sentences with their texts and a warm start); the rest (resume store, DVCLive curves, checkpoint copies, metrics and
timing files) must be the same code, so each stage module holds only its data reading and calls :func:`train_with`.
Outputs (paths from dvc.yaml): ``checkpoints``/step-NNNNNN.pt (train.save_steps up to train.steps, plus the final
step), ``live`` (DVCLive per-step curves for `dvc plots`), ``metrics`` (summary for `dvc metrics` / `dvc exp show`;
only results, so two runs of the same params write the same bytes) and ``timing`` (throughput, where the run
started from, the device: what differs between machines and runs, kept apart from the results).
The checkpoint files are byte copies of the resume store's files (hybridlm/training/store.py explains why).
With `train.nproc_per_node` > 1 the command re-launches itself under torchrun (hybridlm/training/distributed.py).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hybridlm.atomic import atomic_dir, write_json
from hybridlm.config import TrainParams, resolve_device
from hybridlm.layers.registry import layer_kind
from hybridlm.model import ModelConfig
from hybridlm.ops.gated_delta import check_backend_parity, resolve_backend
from hybridlm.training import distributed
from hybridlm.training.batching import PackedRows, SentenceRows
from hybridlm.training.checkpoint import checkpoint_name, code_version, provenance, trajectory_params
from hybridlm.training.loop import train
from hybridlm.training.precision import resolve_precision
from hybridlm.training.store import ResumeStore, store_root


@dataclass(frozen=True)
class Outputs:
    """Where a training stage writes (paths from dvc.yaml), and its command (whose code the trajectory key hashes)."""

    checkpoints: Path
    live: Path
    metrics: Path
    timing: Path
    command: str = "train"


@dataclass
class TrainData:
    """What a training stage trains on, as the loop takes it (see loop.train for the text-to-speech fields)."""

    rows: PackedRows | SentenceRows
    val_sequences: list
    meta: dict[str, Any]  # the shards' codec metadata, stored with every checkpoint
    data_hash: str  # part of the trajectory key: other data (or another warm start) never resumes this run
    summary: str  # one line for the log
    metrics: dict[str, Any] = field(default_factory=dict)  # extra entries for the metrics file
    loop_options: dict[str, Any] = field(default_factory=dict)  # val_texts, init, extra_state


def train_with(model_config: ModelConfig, cfg: TrainParams, key: str, read_data: Callable[[], TrainData],
               outputs: Outputs) -> None:
    """The training stages' common body: the torchrun self-launch, then :func:`_train` on every rank. ``key`` is the
    params section (for error messages), ``read_data`` reads the data once the process group exists."""
    if cfg.nproc_per_node > 1 and not distributed.launched():
        distributed.launch(cfg.nproc_per_node)  # replaces this process by torchrun running this same command
    with distributed.process_group(resolve_device(cfg.device, f"{key}.device")) as device:
        _train(model_config, cfg, device, read_data, outputs)


def _train(model_config: ModelConfig, cfg: TrainParams, device: torch.device, read_data: Callable[[], TrainData],
           outputs: Outputs) -> None:
    """One rank's part (the whole job in a single process): rank 0 alone logs and writes outputs."""
    main = distributed.is_main()
    say = print if main else lambda message: None
    distributed.check_batch(cfg.batch_size)
    if distributed.world_size() > 1:
        say(f"train: {distributed.world_size()} processes ({distributed.backend()}), each on a share of the global "
            f"batch of {cfg.batch_size} rows")
    precision = resolve_precision(cfg.precision, device)
    # A broken kernel stack fails here, in a second, not after hours of NaNs.
    if any(layer_kind(c).uses_gdn_kernel for c in model_config.schedule):
        backend = resolve_backend(model_config.gdn_backend, device)
        worst = check_backend_parity(backend, device, bf16=precision == "bf16")
        say(f"train: Gated DeltaNet backend {backend} on {device.type} in {precision}: matches the reference "
            f"(max relative diff {worst:.1e} on the start-up check)")
    else:
        say(f"train: {precision} on {device.type}")
    data = read_data()
    prov = provenance(trajectory_params(dataclasses.asdict(model_config), cfg, device.type, precision),
                      data.data_hash, code_version(outputs.command))
    store = ResumeStore(store_root(Path.cwd()), prov) if main else None  # rank 0 alone reads and writes it
    rows, val_sequences, meta = data.rows, data.val_sequences, data.meta
    if not main:  # the other ranks train: rank 0 logs, copies the checkpoints and writes the metrics
        train(cfg, model_config, rows, val_sequences, store, prov, meta, device, **data.loop_options)
        return
    print(data.summary)

    from dvclive import Live  # imported here: it is slow to import and only this stage needs it

    with Live(str(outputs.live), resume=False, report=None, save_dvc_exp=False, dvcyaml=False) as logger:
        def log(record: dict) -> None:
            logger.step = int(record["step"])
            for name, value in record.items():
                if name != "step":
                    logger.log_metric(name, value)

        result = train(cfg, model_config, rows, val_sequences, store, prov, meta, device, log=log,
                       **data.loop_options)
    with atomic_dir(outputs.checkpoints) as tmp:
        for step, path in result.checkpoints.items():
            shutil.copyfile(path, tmp / checkpoint_name(step))
    last = result.history[-1]
    write_json(outputs.metrics, {
        "step": result.steps,
        "train_loss": last["train/loss"],
        "val_ema_loss": last.get("val/ema_loss"),
        "val_ema_ppl": last.get("val/ema_ppl"),
        **({"val_ema_loss_no_text": last["val/ema_loss_no_text"],
            "conditioning_gap": last["val/ema_loss_no_text"] - last["val/ema_loss"]}
           if "val/ema_loss_no_text" in last else {}),
        **data.metrics,
    })
    write_json(outputs.timing, {"tokens_per_second": result.tokens_per_second, "started_from_step": result.start_step,
                        "device": device.type})
    print(f"train: checkpoints {sorted(result.checkpoints)} in {outputs.checkpoints}/ (trajectory {prov['key'][:12]}, "
          f"store {store.folder})")
