"""The chunked heads cross-entropy against the reference on materialised logits (codebook_cross_entropy).

Tolerances: fp32 loss and per-codebook CE within 1e-5, gradients within 1e-5 relative to their largest entry
(measured ~1e-7: only the summation order differs). Under bf16 autocast both sides round the same matmul inputs;
gradients agree within 2e-2 relative (measured ~4e-3: the reference's logits gradient is rounded to bf16 as a
whole tensor, ours per chunk).
"""

from __future__ import annotations

import pytest
import torch

from hybridlm.delay import DelayPattern
from hybridlm.ops.cross_entropy import codebook_cross_entropy, heads_cross_entropy

N_Q, VOCAB = 8, 1027


def make(batch=2, steps=37, d_model=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, steps, d_model, generator=gen)
    weight = torch.randn(N_Q * VOCAB, d_model, generator=gen) * 0.3
    targets = torch.randint(0, VOCAB, (batch, N_Q, steps), generator=gen)  # includes PAD/BOS/EOS ids
    targets[:, :, :3] = 1024  # some rows with no valid target at all
    return hidden, weight, targets


def codes(targets):
    """The unconditional pattern's target mask (DelayPattern.target_mask): ids below the codebook size."""
    return DelayPattern(N_Q, VOCAB - 3).target_mask(targets)


def reference(hidden, weight, targets):
    batch, steps, _ = hidden.shape
    logits = torch.nn.functional.linear(hidden, weight).view(batch, steps, N_Q, VOCAB).transpose(1, 2)
    return codebook_cross_entropy(logits.float(), targets, codes(targets))


def loss_and_grads(fn, hidden, weight, targets, precision="fp32"):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        mean, per_codebook = fn(h, w, targets)
    d_h, d_w = torch.autograd.grad(mean, [h, w])
    return mean.detach(), per_codebook.detach(), d_h, d_w


def max_rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("chunk_rows", [1, 16, 74, 4096])  # 74 = all rows in one chunk; 16 leaves a tail
def test_matches_the_reference_in_fp32(chunk_rows):
    hidden, weight, targets = make()
    want = loss_and_grads(reference, hidden, weight, targets)
    got = loss_and_grads(lambda h, w, t: heads_cross_entropy(h, w, t, codes(t), chunk_rows=chunk_rows), hidden, weight, targets)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=0)
    assert max_rel(got[2], want[2]) < 1e-5 and max_rel(got[3], want[3]) < 1e-5


def test_matches_the_reference_under_bf16_autocast():
    hidden, weight, targets = make(seed=1)
    want = loss_and_grads(reference, hidden, weight, targets, "bf16")
    got = loss_and_grads(lambda h, w, t: heads_cross_entropy(h, w, t, codes(t), chunk_rows=16), hidden, weight, targets, "bf16")
    assert got[2].dtype == got[3].dtype == torch.float32
    torch.testing.assert_close(got[0], want[0], atol=1e-3, rtol=0)
    assert max_rel(got[2], want[2]) < 2e-2 and max_rel(got[3], want[3]) < 2e-2


def test_without_grad_gives_the_same_values():
    hidden, weight, targets = make(seed=2)
    with torch.no_grad():
        mean, per_codebook = heads_cross_entropy(hidden, weight, targets, codes(targets), chunk_rows=10)
    want_mean, want_per_codebook = reference(hidden, weight, targets)
    torch.testing.assert_close(per_codebook, want_per_codebook, atol=1e-5, rtol=0)
    assert mean.item() == pytest.approx(want_mean.item(), abs=1e-5)


def test_errors():
    hidden, weight, targets = make()
    empty = targets.clone()
    empty[:, 3] = 1025
    with pytest.raises(ValueError, match=r"codebook\(s\) \[3\] have no valid targets"):
        heads_cross_entropy(hidden, weight, empty, codes(empty))
    with pytest.raises(ValueError, match="need hidden"):
        heads_cross_entropy(hidden, weight[:, :5], targets, codes(targets))
    with pytest.raises(ValueError, match="chunk_rows must be >= 1"):
        heads_cross_entropy(hidden, weight, targets, codes(targets), chunk_rows=0)


def test_counts_replace_the_divisors_like_the_reference():
    hidden, weight, targets = make(seed=3)
    counts = torch.arange(100, 108)
    batch, steps, _ = hidden.shape
    logits = torch.nn.functional.linear(hidden, weight).view(batch, steps, N_Q, VOCAB).transpose(1, 2)
    want_mean, want = codebook_cross_entropy(logits, targets, codes(targets), counts=counts)
    mean, got = heads_cross_entropy(hidden, weight, targets, codes(targets), counts=counts, chunk_rows=16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert mean.item() == pytest.approx(want_mean.item(), abs=1e-5)
