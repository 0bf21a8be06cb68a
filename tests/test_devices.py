"""The whole model and its optimizer agree across Gated DeltaNet backends and devices (the CUDA side runs in
`pytest -m cuda`, part 1 of scripts/gpu_check.sh; each CUDA test has a CPU twin that proves its harness can fail).

Each comparison is max |difference| / max(1, max |reference|) over the logits and every parameter gradient (or every
parameter after optimizer steps). Tolerances: 1e-4 between fp32 torch paths (measured ~1e-6), 2e-2 for fla (its dots
use TF32), 1e-2 for the same fp32 model on CUDA against the CPU (other kernels and summation orders, and cuDNN's
convolutions take TF32 by default; a wrong KV-head mapping or mask gives errors of order 1), 1e-5 for parameters
after two AdamW steps from the same gradients (a 10% wrong learning rate gives 2e-4 here).
"""

from __future__ import annotations

import copy

import pytest
import torch

from hybridlm.config import TrainParams
from hybridlm.model import HybridLM, ModelConfig, parameter_groups
from hybridlm.training.loop import make_optimizer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def small(backend: str) -> ModelConfig:
    """LLA with grouped KV heads (2 query heads share 1 KV head): SDPA's GQA path and the GDN backend both run."""
    return ModelConfig(schedule="LLA", d_model=64, d_ff=96, n_heads=2, n_kv_heads=1, gdn_key_dim=16, gdn_value_dim=32,
                       context=128, gdn_backend=backend)


def tokens() -> torch.Tensor:
    return torch.randint(0, 1024, (2, 8, 100), generator=torch.Generator().manual_seed(0))


def relative_difference(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    return max(((a.cpu() - b.cpu()).abs().max() / b.cpu().abs().max().clamp(min=1)).item()
               for a, b in zip(first, second, strict=True))


def forward_backward(backend: str, device: str) -> list[torch.Tensor]:
    """Logits and every parameter gradient of the seed-0 model on ``device`` (loss: mean squared logit)."""
    torch.manual_seed(0)
    model = HybridLM(small(backend)).to(device)
    logits = model(tokens().to(device))
    logits.float().square().mean().backward()
    return [logits.detach()] + [p.grad for p in model.parameters()]


def test_chunk_backend_inside_the_model_matches_the_loop():
    assert relative_difference(forward_backward("torch_chunk", "cpu"), forward_backward("torch_recurrent", "cpu")) < 1e-4


@pytest.mark.cuda
@needs_cuda
def test_fla_inside_the_model_matches_torch_chunk_on_cuda():
    pytest.importorskip("fla", reason="flash-linear-attention not installed (pip install hybridlm[cuda])")
    assert relative_difference(forward_backward("fla_chunk", "cuda"), forward_backward("torch_chunk", "cuda")) < 2e-2


@pytest.mark.cuda
@needs_cuda
def test_model_on_cuda_matches_cpu():
    """SDPA with grouped KV heads, the chunk kernel, norms and heads on CUDA against the CPU, fp32."""
    assert relative_difference(forward_backward("torch_chunk", "cuda"), forward_backward("torch_chunk", "cpu")) < 1e-2


def adamw_steps(device: str, optimizer_for=None) -> tuple[list[torch.Tensor], float]:
    """Parameters after two AdamW steps from the same CPU gradients, on ``device`` with the training optimizer
    (hybridlm.training.loop.make_optimizer: fused) or ``optimizer_for(model)``; and how far the steps moved them."""
    torch.manual_seed(0)
    model = HybridLM(small("torch_chunk"))
    model(tokens()).float().square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    model = copy.deepcopy(model).to(device)
    for param, grad in zip(model.parameters(), grads, strict=True):
        param.grad = grad.to(device)
    optimizer = (optimizer_for or (lambda m: make_optimizer(m, TrainParams(), torch.device(device))))(model)
    for _ in range(2):
        optimizer.step()
    after = [p.detach().cpu() for p in model.parameters()]
    return after, max((a - b).abs().max().item() for a, b in zip(after, before, strict=True))


def test_fused_adamw_matches_the_per_tensor_loop():
    """The CPU twin: the training optimizer (fused) against the same AdamW as a per-tensor loop."""
    train = TrainParams()

    def loop(model):
        return torch.optim.AdamW(parameter_groups(model, train.weight_decay), lr=train.lr,
                                 betas=(train.beta1, train.beta2), foreach=False)

    (fused, moved), (reference, _) = adamw_steps("cpu"), adamw_steps("cpu", loop)
    assert moved > 1e-3  # the steps move weights by ~lr: a skipped or wrong update would fail the comparison
    assert relative_difference(fused, reference) < 1e-5


@pytest.mark.cuda
@needs_cuda
def test_fused_adamw_on_cuda_matches_cpu():
    (gpu, moved), (cpu, _) = adamw_steps("cuda"), adamw_steps("cpu")
    assert moved > 1e-3 and relative_difference(gpu, cpu) < 1e-5
