"""Guided attention: the penalty's shape, its normalisation, and that in training it reaches the cross-attention's
queries and keys, which the cross-entropy cannot reach at initialisation (the output projection starts at 0)."""

from __future__ import annotations

import math

import pytest
import torch

from hybridlm.delay import DelayPattern
from hybridlm.training.batching import TextRows, pad_sequences, pad_texts
from hybridlm.training.guided_attention import diagonal_penalty, guided_attention_loss
from hybridlm.training.loop import train_step

from test_tts_model import tiny


def test_penalty_is_zero_on_the_diagonal_near_one_off_it_and_zero_outside_a_row():
    penalty = diagonal_penalty(torch.tensor([10.0, 4.0]), torch.tensor([5.0, 2.0]), steps=12, text_len=6, width=0.2)
    assert penalty.shape == (2, 12, 6)
    assert penalty[0, 0, 0] == 0 and penalty[0, 4, 2] == 0  # t/T = n/N: on the diagonal
    assert penalty[0, 0, 4] > 0.9 and penalty[0, 9, 0] > 0.9  # far off it
    assert (penalty[0, 10:] == 0).all() and (penalty[0, :, 5:] == 0).all()  # after the row's steps / characters
    assert (penalty[1, 4:] == 0).all() and (penalty[1, :, 2:] == 0).all()
    assert ((penalty >= 0) & (penalty < 1)).all()


def test_loss_prefers_a_diagonal_reading_and_ignores_rows_without_text():
    frames, lengths = torch.tensor([8, 8]), torch.tensor([4, 4])
    diagonal = torch.zeros(2, 1, 8, 4)
    diagonal[:, 0, torch.arange(8), torch.arange(8) // 2] = 1.0
    backwards = diagonal.flip(-1)
    assert guided_attention_loss([diagonal], frames, lengths, 0.2, 16) < 0.1  # a staircase: off by up to 1/8
    assert guided_attention_loss([backwards], frames, lengths, 0.2, 16) > 0.5
    # A textless row (frames 0) adds nothing, whatever its weights; the normaliser is the caller's global count.
    no_text = guided_attention_loss([torch.stack([diagonal[0], backwards[1]])], torch.tensor([8, 0]), lengths, 0.2, 8)
    assert no_text == pytest.approx(float(guided_attention_loss([diagonal[:1]], frames[:1], lengths[:1], 0.2, 8)))
    with pytest.raises(ValueError, match="no cross-attention weights"):
        guided_attention_loss([], frames, lengths, 0.2, 16)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: CPU autocast, the stand-in for CUDA's
def test_in_training_only_the_penalty_moves_queries_and_keys_at_initialisation(precision):
    pattern = DelayPattern(eos=True)
    gen = torch.Generator().manual_seed(0)
    sequences = [pattern.build(torch.randint(0, 1024, (1, 8, n), generator=gen))[0].numpy() for n in (12, 9)]
    rows = TextRows(pad_sequences(sequences, pattern), pad_texts([[5, 6, 7], [8, 9]]))

    def query_update(weight: float) -> float:
        model = tiny("LA").train()
        before = model.cross_attention["1"].q_proj.weight.detach().clone()
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        loss, norm = train_step(model, optimizer, [rows], 1.0, 1e9, torch.device("cpu"), precision=precision,
                                pattern=pattern, guided=(weight, 0.2))
        assert math.isfinite(loss) and math.isfinite(norm)
        return float((model.cross_attention["1"].q_proj.weight.detach() - before).abs().max())

    assert query_update(0.0) == 0.0  # o_proj = 0: the cross-entropy gives q/k no gradient yet
    assert query_update(10.0) > 0.0
