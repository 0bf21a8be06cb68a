"""The compiled decode step: :class:`hybridlm.model.HybridLM`'s cached one-position forward through ``torch.compile``
(inductor), which sampling takes when asked to (``compile=True`` in :mod:`hybridlm.sampling`).

Why: a batch-1 decode step is bound by ~800 small ops around 33 GEMVs (docs/performance.md); inductor fuses the
ops between the GEMVs (norms, the conv, gates, the recurrence, RoPE) into a few kernels. What it costs: a compile
when a process first samples (tens of seconds on a 2-core CPU, less once inductor's on-disk cache holds the kernels),
so it pays off for long or many samples, not for one short sentence; and its codes differ from the eager step's
(other rounding), so it is opt-in.

How:
- ``freezing``: the weights become constants of the graph, so their stacked copies fold at compile time and
  inductor packs them for its GEMVs (oneDNN in bf16 on a CPU) as the eager step does by hand. It is switched on
  around each call of the compiled step (a compile may happen at any call): ``torch.compile``'s ``options``
  did not reach the packing (measured: plain GEMMs, 11 ms per delayed step against 8 eager).
- ``dynamic=True``: the attention caches grow by one step per call and the RoPE offset with them, so one graph
  with symbolic lengths serves every step. The compiler specialises lengths 0 and 1 (each would be a graph of its
  own), so the first two steps run eagerly. Duck sizing is off: it gave a cache length the symbol of a model dim
  of the same size at that step (2 KV heads, 3 conv inputs), which the graph then fixed (a second compile).
- Frozen weights are a copy, and the graph's guards check shapes, not values: a model whose parameters changed
  (an optimizer step, ``load_state_dict``) or another model would run a stale graph. So the compiled step belongs
  to one model at a time and is compiled afresh (``torch._dynamo.reset()``, which drops every compiled graph of
  the process) when the model, any parameter's storage or version, or the autocast dtype changes.
"""

from __future__ import annotations

import os
import shutil
import weakref
from collections.abc import Callable

import torch
from torch._inductor import config as inductor_config
from torch.fx.experimental import _config as shape_config

from hybridlm.model import HybridLM, ModelCache

EAGER_STEPS = 2  # cache lengths the compiler would specialise (0 and 1): run eagerly

# (model, its parameters' versions and the autocast dtype, compiled forward)
_compiled: tuple[weakref.ref, tuple, Callable] | None = None


def cpp_compiler() -> str | None:
    """The C++ compiler inductor builds its CPU kernels with (``$CXX``, else g++), or None when it is not on PATH."""
    return shutil.which(os.environ.get("CXX") or "g++")


def compiled_forward(model: HybridLM) -> Callable[[torch.Tensor, ModelCache], torch.Tensor]:
    """``step(tokens, cache) -> logits``: ``model(tokens, cache)``, compiled from the third cached step on (the
    first two run eagerly). Compiles on first use per model, parameter state and autocast dtype (see the module
    docstring). On a CPU without a C++ compiler: a clear error before any step, not inductor's traceback mid-way."""
    global _compiled
    device = model.heads.weight.device.type
    if device == "cpu" and cpp_compiler() is None:
        raise FileNotFoundError(f"compiling the decode step on a CPU needs a C++ compiler for inductor's kernels: "
                                f"{os.environ.get('CXX') or 'g++'} is not on PATH (install g++, or set CXX)")
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    state = (dtype, *[(p.data_ptr(), p._version) for p in model.parameters()])
    if _compiled is None or _compiled[0]() is not model or _compiled[1] != state:
        torch._dynamo.reset()  # drop graphs frozen from another model or other weights
        _compiled = (weakref.ref(model), state, torch.compile(model.forward, dynamic=True))
    forward = _compiled[2]

    def step(tokens: torch.Tensor, cache: ModelCache) -> torch.Tensor:
        if cache.length < EAGER_STEPS:
            return model(tokens, cache)
        with inductor_config.patch(freezing=True), shape_config.patch(use_duck_shape=False):
            return forward(tokens.clone(), cache)  # a view would guard its base (the whole sequence)

    return step

