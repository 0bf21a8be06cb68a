"""`hybridlm train`: train on ``split``/train, keep states in the resume store, copy checkpoints to ``checkpoints``.

This stage reads the split's chunks and packs them into rows; the rest (launch, loop, resume store, outputs
``checkpoints``, ``live``, ``metrics``, ``timing``) is the training stages' common body, hybridlm/training/driver.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from hybridlm.config import TrainParams, section
from hybridlm.data.split_reader import read_split
from hybridlm.delay import DelayPattern
from hybridlm.interface import Input, Output
from hybridlm.model import ModelConfig
from hybridlm.training.batching import PackedRows, delayed_sequences
from hybridlm.training.checkpoint import data_hash
from hybridlm.training.driver import Outputs, TrainData, train_with


def run(params: dict, *,
        split: Annotated[Path, Input("Split folder ({train,val}/ shards) to read.")],
        checkpoints: Annotated[Path, Output("Folder to write step-NNNNNN.pt checkpoints to.")],
        live: Annotated[Path, Output("DVCLive folder to write the per-step curves to.")],
        metrics: Annotated[Path, Output("JSON metrics to write (final losses, data summary).")],
        timing: Annotated[Path, Output("JSON timing to write (tokens/s, resume point, device).")]) -> None:
    """Train the hybrid LM; checkpoints at train.save_steps (resumes where it can)."""
    model_config, cfg = section(params, "model"), section(params, "train")
    train_with(model_config, cfg, "train", lambda: _split_data(model_config, cfg, split),
               Outputs(checkpoints, live, metrics, timing))


def _split_data(model_config: ModelConfig, cfg: TrainParams, split: Path) -> TrainData:
    """The unconditional run's data: the split's chunks, packed into rows."""
    train_chunks, meta = read_split(split, "train", model_config)
    val_chunks, _ = read_split(split, "val", model_config)
    pattern = DelayPattern(model_config.num_codebooks, model_config.codebook_size)
    rows = PackedRows(train_chunks, pattern, model_config.context, cfg.seed)
    summary = (f"train: {len(train_chunks)} chunks -> {rows.rows_per_epoch} rows of {model_config.context} steps per "
               f"epoch; padded positions {rows.pad_fraction:.2%}, positions with a code target "
               f"{rows.target_fraction:.2%}")
    return TrainData(rows, delayed_sequences(val_chunks, pattern), meta, data_hash(split), summary,
                     {"pad_fraction": rows.pad_fraction, "target_fraction": rows.target_fraction,
                      "train_chunks": len(train_chunks)})
