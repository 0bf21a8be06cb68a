"""Data-parallel training under torchrun: process group, rank helpers, the DDP wrapper and the self-launch.

Why the trajectory does not depend on the number of processes N: ``train.batch_size`` stays the *global* batch.
Every rank builds the same global micro-batch (rows are a pure function of the step, batching.py) and trains on its
slice of it (:func:`local_rows`). The loss is a mean per codebook over valid targets, so a slice's own mean would
weigh the ranks' tokens unequally; each rank instead divides its per-codebook sums by the *global* batch's target
counts, which it computes from the full micro-batch without communication, and multiplies by N to cancel DDP's
gradient averaging. The all-reduced gradient is then the single-process gradient, up to the order of the sums.

Why rank 0 alone touches the resume store, evaluates and logs: the ranks hold identical weights after every
update, so one writer suffices, and one writer cannot race another. Rank 0 reads the store and sends what it found
(and the state it resumes from) to the others (:func:`from_main`), so every rank starts from the same state even
when the store is not on a shared file system.

Launch. ``hybridlm train`` with ``train.nproc_per_node`` > 1 replaces itself by
``python -m torch.distributed.run --standalone --nproc-per-node N <the hybridlm script> <same arguments>``
(:func:`launch`), so the DVC stage's cmd stays ``hybridlm train``. Multi-node rendezvous is torchrun's own: set its ``PET_*``
environment variables (``PET_NNODES``, ``PET_NODE_RANK``, ``PET_RDZV_BACKEND``, ``PET_RDZV_ENDPOINT``,
``PET_RDZV_ID``, ...) and ``--standalone`` is left out. Launching torchrun by hand works too: a process that
already has ``WORLD_SIZE`` in its environment never re-launches.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from hybridlm.params import ParamError

T = TypeVar("T")


def launched() -> bool:
    """True in a process started by torchrun (or another launcher that sets the env:// variables)."""
    return "WORLD_SIZE" in os.environ


def launch(nproc_per_node: int) -> NoReturn:
    """Replace this process by torchrun running the same ``hybridlm`` command line with ``nproc_per_node`` ranks.

    exec, not a child process: signals (Ctrl-C, `dvc exp` cancelling) and the exit status are torchrun's, and
    torchrun's report names the rank that failed and how (e.g. ``Signal 9 (SIGKILL)``). The ranks run the same
    ``hybridlm`` script, not ``-m hybridlm``: ``-m`` would import a ``hybridlm/`` folder in the working directory
    (a DVC workspace holds the source tree) instead of the installed code, and another code version means another
    resume-store key.
    """
    script = Path(sys.argv[0])
    if script.name != "hybridlm" or not script.is_file():
        raise ValueError(f"train.nproc_per_node is {nproc_per_node}: the run must be started with the `hybridlm` "
                         f"command (or under torchrun), not from {sys.argv[0]!r}")
    multi_node = os.environ.get("PET_NNODES", "1") != "1" or "PET_RDZV_ENDPOINT" in os.environ
    command = [sys.executable, "-m", "torch.distributed.run", *([] if multi_node else ["--standalone"]),
               f"--nproc-per-node={nproc_per_node}", str(script.absolute()), *sys.argv[1:]]
    print(f"train: launching {nproc_per_node} processes per node: {' '.join(command)}", file=sys.stderr, flush=True)
    sys.stdout.flush()  # exec drops unflushed output
    os.execv(sys.executable, command)


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join the process group when launched (NCCL on CUDA, gloo on CPU) and yield this rank's device
    (``cuda:LOCAL_RANK`` on CUDA); a single process yields ``device`` unchanged."""
    if not launched():
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def backend() -> str:
    return dist.get_backend() if dist.is_initialized() else "single process"


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_rows(rows: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global micro-batch ``[B, ...]``: B // N rows, one more on the first B % N
    ranks. Every rank must get at least one row (checked by :func:`check_batch`)."""
    base, extra = divmod(rows.shape[0], world_size())
    start = rank() * base + min(rank(), extra)
    return rows[start: start + base + (rank() < extra)]


def check_batch(batch_size: int) -> None:
    """A global batch smaller than the number of ranks would leave a rank without rows: a parameter error."""
    if batch_size < world_size():
        raise ParamError(f"params.yaml: 'train.batch_size' ({batch_size}) must be >= the number of training "
                         f"processes ({world_size()}): each process trains on a share of every micro-batch")


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when in a process group, else ``model`` itself.

    No buffer syncs in forward: the model's only buffer is a constant, and the weights are already equal on every rank
    (all load the same state); DDP still checks that at construction by broadcasting rank 0's parameters."""
    if not dist.is_initialized():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (what holds ``config`` and the state dict), or ``model`` itself."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def no_sync(model: nn.Module, skip: bool):
    """DDP's ``no_sync`` when ``skip`` (an accumulation micro-batch that is not the last), else a no-op: gradients
    are all-reduced once per optimizer step."""
    if skip and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return nullcontext()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over ranks, on its device, without a host sync (``value`` itself in one process)."""
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value


def from_main(read: Callable[[], T]) -> T:
    """``read()`` on rank 0, its result sent to every rank (which never call ``read``). Tensors in the result should
    be on the CPU: they are pickled and arrive on the CPU of every rank."""
    if not dist.is_initialized():
        return read()
    box: list[Any] = [read() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
