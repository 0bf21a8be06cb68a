"""The MusicGen-style delay pattern: exact layout, roundtrip, target counts and input errors."""

import pytest
import torch

from hybridlm.delay import DelayPattern

P, B = 1024, 1025  # PAD (gap, never a target) and BOS (start step)


def test_small_worked_example():
    pattern = DelayPattern(num_codebooks=3, codebook_size=1024)
    codes = torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23], [30, 31, 32, 33]])
    expected = torch.tensor(
        [
            [B, 10, 11, 12, 13, P, P],
            [B, P, 20, 21, 22, 23, P],
            [B, P, P, 30, 31, 32, 33],
        ]
    )
    delayed = pattern.build(codes)
    assert delayed.dtype == torch.long
    assert torch.equal(delayed, expected)
    assert pattern.num_steps(4) == 7
    assert torch.equal(pattern.target_mask(delayed), expected < 1024)
    assert torch.equal(pattern.revert(delayed), codes)
    # The training pair: targets are steps 1.., the mask drops PAD gaps (never BOS: it only sits at step 0).
    targets = delayed[:, 1:]
    assert torch.equal(targets[pattern.target_mask(targets)], torch.tensor([10, 11, 12, 13, 20, 21, 22, 23,
                                                                            30, 31, 32, 33]))


def test_special_ids():
    pattern = DelayPattern()
    assert (pattern.pad_id, pattern.bos_id, pattern.eos_id, pattern.vocab_size) == (1024, 1025, 1026, 1027)


@pytest.mark.parametrize("shape", [(8, 1), (8, 37), (2, 8, 5), (3, 2, 8, 4)])
def test_roundtrip_and_target_counts(shape):
    pattern = DelayPattern(num_codebooks=8, codebook_size=1024)
    codes = torch.randint(0, 1024, shape, generator=torch.Generator().manual_seed(0))
    delayed = pattern.build(codes)
    frames = shape[-1]
    assert delayed.shape == (*shape[:-1], frames + 8)
    assert torch.equal(pattern.revert(delayed), codes)
    mask = pattern.target_mask(delayed[..., 1:])
    assert torch.equal(mask.sum(-1), torch.full(shape[:-1], frames))  # every codebook: exactly T targets
    assert torch.equal(mask, pattern.code_mask(frames + 8)[:, 1:].expand_as(mask))
    assert bool((delayed[..., 0] == B).all())
    assert int((delayed == 1026).sum()) == 0  # no EOS without eos=True


def test_build_rejects_bad_input():
    pattern = DelayPattern(num_codebooks=4, codebook_size=16)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 4, steps\], got \(3, 5\)"):
        pattern.build(torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        pattern.build(torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"\[0, 16\), got values in \[0, 16\]"):
        pattern.build(torch.tensor([[0, 16]] * 4))
    with pytest.raises(ValueError, match=r"\[0, 16\), got values in \[-1, 0\]"):
        pattern.build(torch.tensor([[0, -1]] * 4))
    with pytest.raises(ValueError, match="no frames"):
        pattern.build(torch.zeros(4, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="num_codebooks must be >= 1"):
        DelayPattern(num_codebooks=0)


def test_revert_rejects_misaligned_sequences():
    pattern = DelayPattern(num_codebooks=3, codebook_size=1024)
    delayed = pattern.build(torch.arange(12).reshape(3, 4))
    with pytest.raises(ValueError, match="at least 4 steps"):
        pattern.revert(delayed[:, :3])
    gap_at_code = delayed.clone()
    gap_at_code[1, 3] = P
    with pytest.raises(ValueError, match=r"position \(1, 3\) .* holds 1024 where the pattern expects a code"):
        pattern.revert(gap_at_code)
    code_in_gap = delayed.clone()
    code_in_gap[2, 1] = 7
    with pytest.raises(ValueError, match=r"position \(2, 1\) .* holds 7 where the pattern expects BOS"):
        pattern.revert(code_in_gap)
    no_bos = delayed.clone()
    no_bos[0, 0] = P
    with pytest.raises(ValueError, match=r"position \(0, 0\)"):
        pattern.revert(no_bos)


E = 1026  # EOS


def test_eos_worked_example_roundtrip_and_targets():
    """With eos=True each codebook gets EOS one (delayed) frame after its last code, and EOS is a target."""
    pattern = DelayPattern(num_codebooks=3, codebook_size=1024, eos=True)
    codes = torch.tensor([[10, 11], [20, 21], [30, 31]])
    expected = torch.tensor(
        [
            [B, 10, 11, E, P, P],
            [B, P, 20, 21, E, P],
            [B, P, P, 30, 31, E],
        ]
    )
    delayed = pattern.build(codes)
    assert torch.equal(delayed, expected)
    assert pattern.num_steps(2) == 6 and pattern.num_frames(6) == 2
    assert torch.equal(pattern.revert(delayed), codes)
    assert torch.equal(pattern.eos_mask(6), expected == E)
    mask = pattern.target_mask(delayed[:, 1:])
    assert torch.equal(mask.sum(-1), torch.full((3,), 3))  # T codes + EOS per codebook
    assert not bool(DelayPattern(3, 1024).eos_mask(6).any())
    missing_eos = delayed.clone()
    missing_eos[1, 4] = P
    with pytest.raises(ValueError, match=r"position \(1, 4\) .* holds 1024 where the pattern expects .*EOS after"):
        pattern.revert(missing_eos)
    with pytest.raises(ValueError, match="at least 5 steps"):
        pattern.revert(delayed[:, :4])


@pytest.mark.parametrize("eos", [False, True])
def test_step_ids_rebuild_the_pattern_one_step_at_a_time(eos):
    pattern = DelayPattern(num_codebooks=3, codebook_size=10, eos=eos)
    codes = torch.randint(0, 10, (2, 3, 4), generator=torch.Generator().manual_seed(0))
    built = pattern.build(codes)
    known = torch.full((2,), 4)
    for step in range(1, built.shape[-1]):
        frame = (step - 1 - torch.arange(3)).clamp(0, 3)  # the code each codebook would write at this step
        drawn = codes.gather(2, frame[None, :, None].expand(2, 3, 1))[..., 0]
        assert torch.equal(pattern.step_ids(step, drawn, known), built[..., step])
    # length not known yet (-1): every codebook past its delay writes its code, none an EOS
    assert torch.equal(pattern.step_ids(2, torch.full((1, 3), 7), torch.tensor([-1])), torch.tensor([[7, 7, 10]]))
