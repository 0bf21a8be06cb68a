"""The compiled decode step (hybridlm.compiled): the same logits as the eager cached step, with and without a text
(classifier-free guidance rows), the same sampled reading, one graph for every step, and never a stale graph
after the weights change. Unconditional sampling through it: tests/test_peer.py (`bench --generate --compile`).

A tiny model in fp32: the compiled kernels sum in other orders, so "the same" is within 1e-5 absolute (the eager
cached step matches the full forward within the same bound, tests/test_model.py); changed weights differ by
orders of magnitude more (the control). Each compile of a tiny model takes ~10-15 s on 2 cores.
"""

import pytest
import torch
from torch._dynamo.utils import counters

from hybridlm.compiled import EAGER_STEPS, compiled_forward, cpp_compiler
from hybridlm.layers.text_encoder import TEXT_PAD_ID
from hybridlm.sampling import speak
from tests.test_tts_model import frames, open_gates, random_tokens, texts, tiny

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(cpp_compiler() is None, reason="inductor on a CPU needs a C++ compiler (g++ or $CXX)")]

TOL = 1e-5


def cached_logits(model, step, tokens, **cache_kwargs) -> torch.Tensor:
    """Logits of ``tokens [B, n_q, S]`` fed one step at a time through ``step(tokens, cache)``."""
    with torch.no_grad():  # as sampling makes the cache: its text values need no gradient
        cache = model.new_cache(tokens.shape[0], **cache_kwargs)
        return torch.cat([step(tokens[..., t : t + 1], cache) for t in range(tokens.shape[-1])], dim=2)


def test_compiled_step_matches_the_eager_step_reads_alike_and_recompiles_for_new_weights():
    model = open_gates(tiny())
    text = texts([5, 6, 7, 8], [9, 10, TEXT_PAD_ID, TEXT_PAD_ID])
    guided = torch.cat([text, torch.full_like(text, TEXT_PAD_ID)])  # speak's conditional + unconditional rows
    memory = dict(text=guided, durations=frames(guided))  # the last two rows: no text, the decoder alone
    tokens = random_tokens(4, 10)
    counters.clear()
    compiled = cached_logits(model, compiled_forward(model), tokens, **memory)
    eager = cached_logits(model, model, tokens, **memory)
    assert (compiled - eager).abs().max() < TOL
    assert tokens.shape[-1] > EAGER_STEPS + 1  # compiled steps were compared, not only the eager ones
    # whole readings with guidance: in fp32 the rounding differences are far below what would move a draw
    a = speak(model, text, 12, generator=torch.Generator().manual_seed(0), cfg_scale=3.0, compile=True)
    b = speak(model, text, 12, generator=torch.Generator().manual_seed(0), cfg_scale=3.0)
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and a[1] == b[1]
    assert max(x.shape[-1] for x in a[0]) > EAGER_STEPS  # frames from compiled steps
    assert counters["stats"]["unique_graphs"] == 1  # one graph for every step of both (symbolic lengths)
    with torch.no_grad():  # an in-place update (as an optimizer step): compiled afresh, not the frozen weights
        model.heads.weight.mul_(2)
    changed = cached_logits(model, model, tokens, **memory)
    assert (cached_logits(model, compiled_forward(model), tokens, **memory) - changed).abs().max() < TOL
    assert (changed - eager).abs().max() > 1000 * TOL
