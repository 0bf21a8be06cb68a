"""Checkpoint files: one ``torch.save`` dict of tensors and plain containers, loaded with ``weights_only=True``.

Why this format: ``torch.load(weights_only=True)`` refuses to unpickle arbitrary objects, so a checkpoint from
elsewhere cannot run code; everything inside is tensors, numbers, strings, lists and dicts. A checkpoint is a full
training state (model, EMA, optimizer, RNG, data position, metric history) *and* carries its provenance, so the same
file serves resume, evaluation and rendering, and a mismatch (other model shape, other data) is caught by comparing
provenance before any weights are loaded.

Layout of the dict (FORMAT = "hybridlm-checkpoint/1"):
    format, step                 format tag; optimizer updates done
    model, ema                   model state dict; {"decay", "updates", "shadow": {param name: fp32 tensor}}
    optimizer, rng               AdamW state dict; {"torch": ByteTensor, "cuda": [ByteTensor, ...]}
    data                         {"next_row", "epoch", "row"}: where the packed-row stream continues
    history                      [{"step", "train/loss", ...}, ...]: every logged record up to `step`
    provenance                   {"params", "params_hash", "data_hash", "code_version", "key"}
    model_config, codec          the model section; the token shards' codec metadata (render decodes with it)
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import OrderedDict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from hybridlm.atomic import atomic_path
from hybridlm.codegraph import SOURCE_ROOT, stage_code
from hybridlm.config import TrainParams
from hybridlm.model import HybridLM, ModelConfig
from hybridlm.params import params_hash
from hybridlm.training.ema import with_averaged

FORMAT = "hybridlm-checkpoint/1"
NAME = re.compile(r"^step-(\d{6,})\.pt$")
# Model fields that choose an implementation, not a shape: a checkpoint may be evaluated with another backend.
RUNTIME_MODEL_FIELDS = ("gdn_backend",)


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (a killed process leaves the previous file or none, never a truncated one) and
    canonically: equal states give equal bytes, however they were built (see canonical)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # Through a file object: torch.save(state, <path>) names the zip's inner folder after the (random) temporary
        # file name, so equal states would give different bytes; with a file object the folder is always "archive".
        torch.save(canonical(state), fh)


def canonical(value: Any, shared: dict | None = None) -> Any:
    """A copy of ``value`` whose pickle depends only on its values, not on which of its objects are the same object.

    Why: pickle writes an object that it has already written as a back-reference (memo), by identity. A state built
    in a straight run holds the code's string literals ("step", "exp_avg", ...), the same object wherever they
    occur; a state restored by torch.load holds the strings the unpickler made, distinct from those literals. So
    a resumed run's checkpoint spelled "step" out again where a straight run's referred back, and its file
    differed (hundreds of bytes) though every value was equal. Here every equal string (and bytes) becomes one
    object and every dict, list and tuple a new one, so sharing is the same whatever built the state. Tensors are
    kept as they are (torch.save writes each storage once, by storage, not by object); an OrderedDict keeps its
    attributes (a state dict's ``_metadata``).
    """
    shared = {} if shared is None else shared
    kind = type(value)
    if kind in (str, bytes):
        return shared.setdefault((kind, value), value)
    if kind in (list, tuple):
        return kind(canonical(v, shared) for v in value)
    if kind in (dict, OrderedDict):
        copy = kind((canonical(k, shared), canonical(v, shared)) for k, v in value.items())
        for name, attribute in vars(value).items() if kind is OrderedDict else ():
            setattr(copy, name, canonical(attribute, shared))
        return copy
    return value


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check the format tag; a missing, corrupt or foreign file raises an error that names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        raise ValueError(f"{path}: not a readable checkpoint (corrupt or truncated?): {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a hybridlm checkpoint (format {found!r}, expected {FORMAT!r})")
    return state


def list_checkpoints(folder: Path) -> dict[int, Path]:
    """``{step: path}`` of the ``step-NNNNNN.pt`` files in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: checkpoint folder not found (run the train stage first)")
    found = {int(m.group(1)): p for p in folder.iterdir() if (m := NAME.match(p.name))}
    if not found:
        raise FileNotFoundError(f"{folder}: no step-NNNNNN.pt checkpoints in it (run the train stage first)")
    return dict(sorted(found.items()))


def select_checkpoints(folder: Path, steps: list[int], key: str) -> dict[int, Path]:
    """The checkpoints of ``steps`` (all when empty); a step that was not saved raises an error naming ``key`` and
    listing the steps that were."""
    available = list_checkpoints(folder)
    unknown = [s for s in steps if s not in available]
    if unknown:
        raise FileNotFoundError(
            f"params.yaml: '{key}' asks for step(s) {unknown} but {folder} holds checkpoints for steps "
            f"{', '.join(map(str, available))}"
        )
    return {s: available[s] for s in sorted(steps)} if steps else available


def validate_checkpoints(checkpoints: dict[int, Path], model_config: dict[str, Any],
                         data_hash: str | None = None) -> None:
    """Load every one of ``checkpoints`` (``{step: path}``) and check it (readable, this model, given ``data_hash``
    this data, the step its name says) before any is used; the first bad one raises an error naming it.

    Why up front: evaluate and render spend minutes per checkpoint, so a corrupt or foreign later file found in
    the loop is found only after all the earlier work, which is then thrown away.
    """
    for step, path in checkpoints.items():
        state = load_checkpoint(path)
        check_compatible(state, path, model_config, data_hash)
        if state["step"] != step:
            raise ValueError(f"{path}: holds the state after step {state['step']}, but its name says step {step}")


def ema_model(state: dict[str, Any], config: ModelConfig, device: torch.device) -> HybridLM:
    """A model (eval mode, on ``device``) holding a checkpoint's EMA weights: what evaluate and render use."""
    model = HybridLM(config)
    model.load_state_dict(with_averaged(state["model"], state["ema"]["shadow"]))
    return model.to(device).eval()


def check_compatible(state: dict[str, Any], path: Path, model_config: dict[str, Any],
                     data_hash: str | None = None) -> None:
    """Refuse a checkpoint of another model shape or (given ``data_hash``) trained on other data, naming the
    differing keys."""
    theirs = state["model_config"]
    diffs = [
        f"model.{key}: checkpoint {theirs.get(key)!r}, params.yaml {model_config.get(key)!r}"
        for key in sorted(set(theirs) | set(model_config))
        if key not in RUNTIME_MODEL_FIELDS and theirs.get(key) != model_config.get(key)
    ]
    if diffs:
        raise ValueError(f"{path}: incompatible checkpoint (other model): " + "; ".join(diffs))
    if data_hash is not None and state["provenance"]["data_hash"] != data_hash:
        raise ValueError(
            f"{path}: incompatible checkpoint (other data): trained on data hash "
            f"{state['provenance']['data_hash'][:12]}, the split data now hashes to {data_hash[:12]}; re-run training"
        )


def hash_files(named: dict[str, Path]) -> str:
    """SHA-256 over (name, contents) pairs in name order: a content hash of a set of files."""
    digest = hashlib.sha256()
    for name in sorted(named):
        digest.update(name.encode() + b"\0")
        with open(named[name], "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def data_hash(split_dir: Path) -> str:
    """Content hash of the split shards (train and val): the data a trajectory and its val metrics come from."""
    split_dir = Path(split_dir)
    files = sorted(split_dir.glob("*/*.parquet"))
    if not files:
        raise FileNotFoundError(f"{split_dir}: no Parquet shards under train/ or val/ (run the split stage first)")
    return hash_files({f.relative_to(split_dir).as_posix(): f for f in files})


def code_version(command: str = "train") -> str:
    """``hybridlm <version> src:<hash>``: the package version plus a content hash of the training stage's code (the
    files hybridlm/codegraph.py derives from the imports of stages/<command>.py, the same list as its code deps in
    dvc.yaml), so an edit to the model or the loop never resumes a state made by other code."""
    digest = hash_files({name: SOURCE_ROOT / name for name in stage_code(command)})
    try:
        package = version("hybridlm")
    except PackageNotFoundError:
        package = "unknown"
    return f"hybridlm {package} src:{digest[:16]}"


# Train fields that only say how far to go and where to stop / log along the way: changing them continues the same run.
# device and precision are exempt as *names* because trajectory_params records what they resolved to instead
# (`auto` may mean bf16 on one machine and fp32 on another). nproc_per_node: the global batch and the data order
# do not depend on it (distributed.py), so a run may resume with another process count.
TRAJECTORY_EXEMPT = ("steps", "save_steps", "eval_every", "device", "precision", "nproc_per_node")


def trajectory_params(model: dict, train: TrainParams, device_type: str, precision: str) -> dict:
    """What shapes the weights at every step: the model section, the train section minus TRAJECTORY_EXEMPT, and
    the device type and (resolved) precision actually used: bf16 and fp32, CPU and CUDA give different
    trajectories, so a state of one must never resume the other."""
    kept = {k: v for k, v in dataclasses.asdict(train).items() if k not in TRAJECTORY_EXEMPT}
    return {"model": dict(model), "train": kept, "device_type": device_type, "precision": precision}


def provenance(trajectory_params: dict[str, Any], data_digest: str, code_version: str) -> dict[str, Any]:
    """Everything a trajectory depends on, and the key of its resume store."""
    phash = params_hash(trajectory_params)
    key = params_hash({"params": phash, "data": data_digest, "code": code_version})
    return {"params": trajectory_params, "params_hash": phash, "data_hash": data_digest,
            "code_version": code_version, "key": key}
