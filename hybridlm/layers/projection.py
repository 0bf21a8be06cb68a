"""How the layers multiply by their weights: :func:`project` (several bias-free Linear layers as one GEMM, and in a
decode step the layout that reads the weights fastest for one row), on weight copies kept by :func:`derived`
(stacked, transposed, oneDNN-packed, a conv's taps), rebuilt when a weight changes."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def project(owner: nn.Module, x: torch.Tensor, *names: str) -> torch.Tensor:
    """``x [..., S, in]`` through ``owner``'s bias-free Linear submodules ``names`` at once: their outputs
    concatenated, ``[..., S, sum of outs]``, from one GEMM.

    Training multiplies by the concatenated weights inside the autograd graph (the concat, one ~MB copy, is small
    beside the matmul). Without gradients the stacked weights are a copy kept on ``owner`` (:func:`_stacked`):
    evaluation multiplies by it as F.linear does. A decode step (S = 1) is a GEMV per row, bound by reading the
    weights, and gets the layout that reads them fastest: in bf16 on a CPU with oneDNN, oneDNN's pre-packed
    (blocked) copy (:func:`_decode_gemv`); otherwise the transpose, stored contiguous, ``x @ W^T`` (measured on
    the default model, 1 thread: the 384 -> 8216 heads in fp32 0.30 ms against F.linear's 0.83 ms). In fp32 the
    two layouts may round differently in the last bit; in bf16 all three give the same bits. A compiled decode
    step (:mod:`hybridlm.compiled`) takes ``F.linear`` on the stacked rows: the compiler freezes them as constants
    and packs them itself.
    """
    if not torch.is_grad_enabled():
        if x.shape[-2] == 1 and not torch.compiler.is_compiling():
            return _decode_gemv(owner, x, names)
        return F.linear(x, getattr(owner, names[0]).weight if len(names) == 1 else _stacked(owner, names, "rows"))
    weights = [getattr(owner, name).weight for name in names]
    return F.linear(x, weights[0] if len(weights) == 1 else torch.cat(weights))


def _onednn_bf16() -> bool:
    """Whether this torch has oneDNN's bf16 linear (x86 CPUs with AVX-512; checked once)."""
    global _ONEDNN_BF16
    if _ONEDNN_BF16 is None:
        _ONEDNN_BF16 = bool(torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
                            and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return _ONEDNN_BF16


_ONEDNN_BF16: bool | None = None


def _decode_gemv(owner: nn.Module, x: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """One decode step's projection ``x [..., 1, in]`` (no gradients).

    Why oneDNN's packed weight in bf16 on CPU: ``x @ W^T`` in bf16 runs a generic kernel at about half the memory
    bandwidth; oneDNN's GEMV on its own blocked copy of the weight (``_reorder_linear_weight``, made once) reads it
    2-2.5x faster (1 row, 2 threads, this project's AVX-512 bf16 EPYC: the heads 8216 x 384 253 -> 114 us, the GDN
    input 2316 x 384 85 -> 39 us, the MLP down 384 x 1024 52 -> 29 us), with the same bits as ``x @ W^T`` under 1
    and 2 threads (tests/test_model.py). fp32 keeps ``x @ W^T``: MKL's packed fp32 GEMV measured no faster.
    """
    weights = _linear_weights(owner, names)
    dtype = _compute_dtype(weights[0])
    if dtype == torch.bfloat16 and weights[0].device.type == "cpu" and _onednn_bf16():
        packed = _stacked(owner, names, "packed", weights, dtype)
        return torch.ops.mkldnn._linear_pointwise(x.to(dtype), packed, None, "none", [], "")
    return x.to(dtype) @ _stacked(owner, names, "transposed", weights, dtype)


def _linear_weights(owner: nn.Module, names: tuple[str, ...]) -> list[torch.Tensor]:
    """The weights of ``owner``'s Linear submodules ``names``, read from the module dicts (``getattr`` goes through
    nn.Module.__getattr__ twice per weight: ~1 us each, 200 times per decode step)."""
    return [owner._modules[name]._parameters["weight"] for name in names]


def _compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a matmul with ``weight`` computes in: autocast's when it is on, else the weight's."""
    device_type = weight.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype


class _DerivedWeights(dict):
    """The per-module store of :func:`derived`'s copies: derived data, so a copied or pickled module starts with
    none (oneDNN's packed tensors cannot be copied at all, and a stale copy would only be rebuilt)."""

    def __deepcopy__(self, memo: dict) -> _DerivedWeights:
        return _DerivedWeights()

    def __reduce__(self):
        return (_DerivedWeights, ())


def _stacked(owner: nn.Module, names: tuple[str, ...], layout: str, weights: list[torch.Tensor] | None = None,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """The weights of ``owner``'s Linear submodules ``names`` stacked along the output dim, in the compute dtype
    (autocast's when it is on: nothing is cast per call, and a bf16 copy halves the bytes a memory-bound decode
    step reads), in ``layout``: ``"rows"`` (``[out, in]``), ``"transposed"`` (``[in, out]`` contiguous) or
    ``"packed"`` (oneDNN's blocked bf16 copy, see :func:`_decode_gemv`): a decode step re-concatenating every
    layer's weights spent ~30% of its time in the copies."""

    def build(weights: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        stacked = torch.cat(weights).to(dtype)
        if layout == "transposed":
            return stacked.t().contiguous()
        return torch.ops.mkldnn._reorder_linear_weight(stacked, 1) if layout == "packed" else stacked

    return derived(owner, (names, layout), weights or _linear_weights(owner, names), build, dtype)


def derived(owner: nn.Module, key: object, weights: list[torch.Tensor],
            build: Callable[[list[torch.Tensor], torch.dtype], torch.Tensor],
            dtype: torch.dtype | None = None) -> torch.Tensor:
    """``build(weights, compute dtype)``, a copy of ``owner``'s parameters ``weights`` in another form or dtype
    (stacked, transposed, packed, a conv's taps), made once and kept on ``owner`` under ``key`` (no gradients
    flow through it: callers use it only with autograd off). Rebuilt only when a weight changes (new storage, or
    an in-place update such as an optimizer step or load_state_dict, which bumps ``_version``) or the compute
    dtype (autocast's when it is on; ``dtype`` when the caller knows it) does. Under ``torch.compile`` it is
    ``build`` itself, traced into the graph.
    """
    dtype = _compute_dtype(weights[0]) if dtype is None else dtype
    if torch.compiler.is_compiling():  # traced once: the compiler folds the copy into a frozen constant
        return build(weights, dtype)
    version = (dtype, *[(w.data_ptr(), w._version) for w in weights])
    slots = owner.__dict__.get("_stacked_weights")
    if slots is None:
        slots = owner.__dict__["_stacked_weights"] = _DerivedWeights()
    cached = slots.get(key)
    if cached is None or cached[0] != version:
        cached = slots[key] = (version, build(weights, dtype))
    return cached[1]
