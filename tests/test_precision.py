"""bf16 autocast end to end on CPU (the closest stand-in for CUDA autocast that runs here), for every CPU backend.

CPU bf16 autocast runs the same op lists' bf16 paths as CUDA autocast (matmuls, SDPA, conv in bf16; norms, decay,
state and loss in fp32 by our code), so a dtype mismatch that would crash a GPU run crashes here too.

Tolerances, bf16 vs the same model in fp32 (bf16 keeps 8 significant bits, ~4e-3 relative per rounding):
- logits: relative error ||bf16 - fp32|| / ||fp32|| <= 0.1 (measured 0.043 on the default 8-layer model at init:
  each layer's post-/gated norm passes its bf16 rounding on at full size; a recurrence or norm run in bf16, or a
  dtype mix-up, gives errors of order 1);
- losses (train step, evaluation): within 1% relative (measured ~1e-3);
- grad norm: within 5% relative (measured ~1e-2).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridlm.config import TrainParams
from hybridlm.data.shards import Chunk
from hybridlm.delay import DelayPattern
from hybridlm.model import HybridLM, ModelConfig
from hybridlm.sampling import generate
from hybridlm.ops.gated_delta import check_backend_parity
from hybridlm.training.batching import PackedRows, delayed_sequences
from hybridlm.training.checkpoint import trajectory_params
from hybridlm.training.evaluation import evaluate_sequences
from hybridlm.training.loop import build_model, make_optimizer, train_step
from hybridlm.training.precision import autocast, cpu_has_native_bf16, resolve_precision

CPU = torch.device("cpu")
CPU_BACKENDS = ["torch_chunk", "torch_recurrent"]
PATTERN = DelayPattern()


pytestmark = pytest.mark.usefixtures("one_thread")


def small(backend: str) -> ModelConfig:
    return ModelConfig(schedule="LLA", d_model=64, d_ff=96, n_heads=2, n_kv_heads=1, gdn_key_dim=16,
                       gdn_value_dim=32, context=48, gdn_backend=backend)


def relative_error(low: torch.Tensor, full: torch.Tensor) -> float:
    return float((low.float() - full).norm() / full.norm())


def rows(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    chunks = [Chunk(f"c{i}", 0, rng.integers(0, 1024, (8, 30)).astype(np.uint16)) for i in range(n)]
    return PackedRows(chunks, PATTERN, context=48, seed=0).rows(0, 2)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_issue_repro_bf16_forward_runs_and_matches_fp32(backend):
    torch.manual_seed(0)
    model = HybridLM(ModelConfig(gdn_backend=backend, context=64)).eval()
    tokens = torch.randint(0, 1024, (2, 8, 16), generator=torch.Generator().manual_seed(0))  # the default model
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(tokens)
        full = model(tokens)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert relative_error(low, full) < 0.1


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bf16_train_step_is_finite_and_close_to_fp32(backend):
    batch = rows(4, seed=0)
    results = {}
    for precision in ("fp32", "bf16"):
        model = build_model(small(backend), seed=0, device=CPU)
        optimizer = make_optimizer(model, TrainParams(), CPU)
        first = train_step(model, optimizer, [batch], 1e-3, 1.0, CPU, precision=precision, pattern=PATTERN)
        second = train_step(model, optimizer, [batch], 1e-3, 1.0, CPU, precision=precision, pattern=PATTERN)
        results[precision] = (first, second, model.state_dict())
    (loss32, norm32), (after32, _), weights32 = results["fp32"]
    (loss16, norm16), (after16, _), weights16 = results["bf16"]
    assert np.isfinite([loss16, norm16, after16]).all()
    assert loss16 == pytest.approx(loss32, rel=1e-2)
    assert norm16 == pytest.approx(norm32, rel=5e-2)
    assert after16 == pytest.approx(after32, rel=1e-2)
    assert all(v.dtype == torch.float32 for v in weights16.values())  # autocast: the weights stay fp32
    assert after16 < loss16  # the bf16 update is a real descent step


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bf16_evaluation_is_close_to_fp32(backend):
    model = build_model(small(backend), seed=0, device=CPU)
    rng = np.random.default_rng(1)
    seqs = delayed_sequences([Chunk(f"v{i}", 0, rng.integers(0, 1024, (8, 20)).astype(np.uint16))
                              for i in range(3)], PATTERN)
    fp32 = evaluate_sequences(model, seqs, PATTERN, 2, CPU, precision="fp32")
    bf16 = evaluate_sequences(model, seqs, PATTERN, 2, CPU, precision="bf16")
    assert np.isfinite(bf16.loss) and bf16.loss == pytest.approx(fp32.loss, rel=1e-2)
    assert bf16.per_codebook == pytest.approx(fp32.per_codebook, rel=1e-2)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bf16_cached_generation_matches_the_fp32_forward(backend):
    torch.manual_seed(0)
    model = HybridLM(small(backend)).eval()
    tokens = torch.randint(0, 1027, (2, 8, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(2)
        with autocast("bf16", CPU):
            prefill = model(tokens[..., :7], cache)
            steps = [model(tokens[..., t : t + 1], cache) for t in range(7, 20)]
    cached = torch.cat([prefill, *steps], dim=2).float()
    assert torch.isfinite(cached).all() and relative_error(cached, full) < 0.1
    with autocast("bf16", CPU):
        codes = generate(model, 6, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (2, 8, 6) and int(codes.min()) >= 0 and int(codes.max()) < 1024


@pytest.mark.parametrize("backend", ["auto", *CPU_BACKENDS])
def test_start_up_parity_check_in_bf16(backend):
    assert check_backend_parity(backend, "cpu", bf16=True) < 2e-2


def test_auto_precision_follows_the_device_and_cpu_flags(tmp_path, monkeypatch):
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("fp32", "cuda") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    native = tmp_path / "native"
    native.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16 amx_tile\n")
    plain = tmp_path / "plain"
    plain.write_text("processor : 0\nflags : fpu avx2 fma\n")
    assert cpu_has_native_bf16(native) and not cpu_has_native_bf16(plain)
    assert not cpu_has_native_bf16(tmp_path / "missing")
    with pytest.raises(ValueError, match="'evaluate.precision' must be one of auto, bf16, fp32, got 'fp16'"):
        resolve_precision("fp16", "cpu", "evaluate.precision")
    with pytest.raises(ValueError, match="resolved"):
        autocast("auto", "cpu")


def test_precision_is_part_of_the_run_identity():
    model = {"d_model": 384}
    auto = TrainParams(precision="auto")
    explicit = TrainParams(precision="bf16")
    # what it resolved to counts, not how it was spelled
    assert trajectory_params(model, auto, "cuda", "bf16") == trajectory_params(model, explicit, "cuda", "bf16")
    assert trajectory_params(model, auto, "cuda", "bf16") != trajectory_params(model, auto, "cuda", "fp32")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_train_step_on_cuda_with_every_backend():
    cuda = torch.device("cuda")
    batch = rows(4, seed=0)
    losses = {}
    for backend in ("auto", "torch_chunk"):
        for precision in ("fp32", "bf16"):
            model = build_model(small(backend), seed=0, device=cuda)
            optimizer = make_optimizer(model, TrainParams(), cuda)
            losses[backend, precision] = train_step(model, optimizer, [batch], 1e-3, 1.0, cuda,
                                                    precision=precision, pattern=PATTERN)[0]
    assert np.isfinite(list(losses.values())).all()
    for backend in ("auto", "torch_chunk"):
        assert losses[backend, "bf16"] == pytest.approx(losses[backend, "fp32"], rel=2e-2)
