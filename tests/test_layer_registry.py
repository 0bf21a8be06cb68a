"""The layer-kind registry (hybridlm/layers/registry.py): a new kind is its block plus one register() call.

A toy kind ("T": a causal two-tap depthwise conv over time, then the MLP) is registered here and nothing else in the
project is touched: the config accepts it only while it is registered, HybridLM builds it, trains a step with it and
decodes it with its own cache, and `hybridlm info` names it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from hybridlm.bench.peer import TransformersPeer
from hybridlm.delay import DelayPattern
from hybridlm.layers import registry
from hybridlm.layers.mlp import SwiGLU
from hybridlm.layers.norms import RMSNorm
from hybridlm.model import HybridLM, ModelConfig, parameter_groups
from hybridlm.ops.cross_entropy import codebook_cross_entropy
from hybridlm.params import ParamError
from hybridlm.stages import info
from hybridlm.training.loop import train_step

TINY = dict(d_model=32, d_ff=48, n_heads=4, n_kv_heads=2, gdn_key_dim=8, gdn_value_dim=12, context=64,
            gdn_backend="torch_chunk")


@dataclass
class ToyCache:
    previous: torch.Tensor  # [B, 1, d]: the last input seen (zeros before step 0)


class ToyConvBlock(nn.Module):
    """h = x + conv(norm(x)) with out[s] = w0 * x[s] + w1 * x[s - 1] per channel; h + mlp(norm(h))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(config.d_model)
        self.taps = nn.Parameter(torch.randn(2, config.d_model) * 0.5)
        self.mlp_norm = RMSNorm(config.d_model)
        self.mlp = SwiGLU(config.d_model, config.d_ff)

    def forward(self, x: torch.Tensor, offset: int, cache: ToyCache | None) -> torch.Tensor:
        y = self.norm(x)
        previous = torch.zeros_like(y[:, :1]) if cache is None else cache.previous
        shifted = torch.cat([previous, y[:, :-1]], dim=1)
        if cache is not None:
            cache.previous = y[:, -1:]
        h = x + self.taps[0] * y + self.taps[1] * shifted
        return h + self.mlp(self.mlp_norm(h))

    def new_cache(self, batch_size: int, device, dtype) -> ToyCache:
        return ToyCache(torch.zeros(batch_size, 1, self.taps.shape[1], device=device, dtype=dtype))


TOY = registry.LayerKind(letter="T", name="toy_conv", display="toy conv", block=ToyConvBlock,
                         mixing_flops=lambda config: 6.0 * config.d_model)


@pytest.fixture
def toy_kind():
    registry.register(TOY)
    try:
        yield TOY
    finally:
        registry.unregister("T")


def test_the_config_accepts_a_kind_only_while_it_is_registered():
    with pytest.raises(ParamError, match=r"'model\.schedule' must be a non-empty string of L \(Gated DeltaNet\) "
                                         r"and A \(attention\) letters, one per layer, got 'LTA'"):
        ModelConfig(schedule="LTA", **TINY)
    registry.register(TOY)
    try:
        assert ModelConfig(schedule="LTA", **TINY).layer_types == ("gdn", "toy_conv", "attention")
        with pytest.raises(ParamError, match=r"L \(Gated DeltaNet\), A \(attention\) and T \(toy conv\) letters"):
            ModelConfig(schedule="LTX", **TINY)
        with pytest.raises(ValueError, match="letter 'T' must be one upper-case letter not already registered"):
            registry.register(TOY)
    finally:
        registry.unregister("T")
    with pytest.raises(ParamError, match="got 'LTA'"):
        ModelConfig(schedule="LTA", **TINY)


def test_a_toy_kind_trains_a_step_and_decodes_with_its_own_cache(toy_kind):
    torch.manual_seed(0)
    model = HybridLM(ModelConfig(schedule="TLA", **TINY))
    assert isinstance(model.layers[0], ToyConvBlock)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.1), lr=1e-2)
    pattern = DelayPattern()
    rows = pattern.build(torch.randint(0, 1024, (2, 8, 12), generator=torch.Generator().manual_seed(0)))
    loss, _ = codebook_cross_entropy(model(rows[..., :-1]), rows[..., 1:], pattern.target_mask(rows[..., 1:]))
    loss.backward()
    for name, p in model.named_parameters():  # gradients reach every parameter, the toy's taps included
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    optimizer.zero_grad()
    loss, grad_norm = train_step(model, optimizer, [rows], 1e-2, 1.0, torch.device("cpu"), precision="fp32",
                                 pattern=pattern)
    assert torch.isfinite(torch.tensor([loss, grad_norm])).all() and grad_norm > 0
    assert [name for name, p in model.named_parameters() if torch.equal(p, before[name])] == []

    model.eval()
    tokens = rows[..., :-1]
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(2)
        assert isinstance(cache.layers[0], ToyCache)
        steps = torch.cat([model(tokens[..., s : s + 1], cache) for s in range(tokens.shape[-1])], dim=2)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_info_and_the_peer_read_the_registry(toy_kind, capsys):
    info.run({"model": {"schedule": "TLAT", **TINY}})
    out = capsys.readouterr().out
    assert ("(4 layers: 1 Gated DeltaNet, 1 attention, 2 toy conv; L = Gated DeltaNet, A = attention, "
            "T = toy conv)") in out
    assert "layer 0 (T, toy conv)" in out
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="OlmoHybridModel has no layer of kind T"):
        TransformersPeer(ModelConfig(schedule="TLAT", **TINY))
