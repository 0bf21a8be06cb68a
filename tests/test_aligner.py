"""The flat-start Viterbi aligner (hybridlm/data/aligner.py): it recovers known paths from codes and text alone,
beats the even diagonal it starts from, and its files and errors are clear."""

from __future__ import annotations

import numpy as np
import pytest

from hybridlm.data.aligner import (Alignment, agreement, align, even_diagonal, frames_per_id, from_units,
                                   read_alignments, viterbi, write_alignments)

VOCAB, CODEBOOK = 12, 64


def toy_corpus(count: int, seed: int) -> tuple[list[np.ndarray], list[list[int]], list[Alignment]]:
    """Sentences whose codes are a noisy function of the id sounding (silence: codes near 0), with random
    durations, leading and trailing silence: the true path is known."""
    rng = np.random.default_rng(seed)
    codes, texts, truth = [], [], []
    for _ in range(count):
        text = rng.integers(2, VOCAB, size=int(rng.integers(3, 8))).tolist()
        path = Alignment(int(rng.integers(0, 6)), rng.integers(2, 9, size=len(text)).tolist(), int(rng.integers(0, 10)))
        ids = np.concatenate([np.zeros(path.lead, int), np.repeat(text, path.durations), np.zeros(path.trail, int)])
        frame_codes = ids[None, :] * 5 + rng.integers(0, 3, size=(3, len(ids)))  # 3 codebooks, a little noise
        flip = rng.random(frame_codes.shape) < 0.1  # and 10% of codes anything at all
        codes.append(np.where(flip, rng.integers(0, CODEBOOK, size=frame_codes.shape), frame_codes))
        texts.append(text)
        truth.append(path)
    return codes, texts, truth


def frame_agreement(paths: list[Alignment], truth: list[Alignment]) -> float:
    frames = sum(p.frames for p in truth)
    return sum(agreement(p.unit_of_frame(), t.unit_of_frame(), 0) * t.frames for p, t in zip(paths, truth)) / frames


def test_viterbi_finds_the_best_monotonic_path_with_optional_silences():
    # 2 ids over 7 frames: scores favour [silence, silence, id0, id0, id0, id1, id1], no trailing silence.
    truth = [0, 0, 1, 1, 1, 2, 2]  # state per frame: 0 = lead silence, 1..2 = ids, 3 = trail silence
    emit = np.full((7, 4), -5.0)
    emit[np.arange(7), truth] = 0.0
    emit[:, 3] = emit[:, 0]  # the two silences score alike
    assert viterbi(emit) == Alignment(2, [3, 2], 0)
    # every id keeps at least one frame even where the scores would skip it
    emit = np.zeros((4, 5))
    emit[:, 2] = -100.0
    path = viterbi(emit)
    assert path.durations[1] == 1 and path.frames == 4


def test_align_recovers_the_true_paths_and_beats_the_diagonal():
    codes, texts, truth = toy_corpus(60, seed=1)
    val_codes, val_texts, val_truth = toy_corpus(15, seed=2)
    result = align(codes, texts, val_codes, val_texts, vocab_size=VOCAB, codebook_size=CODEBOOK, codebooks=3,
                   smoothing=0.1, max_rounds=10)
    assert result.changed[-1] == 0 and result.rounds == len(result.changed) <= 10  # converged
    diagonal = [even_diagonal(c.shape[1], len(t)) for c, t in zip(val_codes, val_texts)]
    assert frame_agreement(result.val, val_truth) > 0.95
    assert frame_agreement(diagonal, val_truth) < 0.75
    assert all(p.frames == c.shape[1] and min(p.durations) >= 1 for p, c in zip(result.val, val_codes))
    # identical inputs, identical paths
    again = align(codes, texts, val_codes, val_texts, vocab_size=VOCAB, codebook_size=CODEBOOK, codebooks=3,
                  smoothing=0.1, max_rounds=10)
    assert again == result


def test_agreement_delays_the_truth_by_the_lag():
    truth = np.array([-1, 0, 0, 1, 1, -1])
    assert agreement(truth, truth, 0) == 1.0
    assert agreement(np.array([-1, -1, -1, 0, 0, 1]), truth, 2) == 1.0  # truth[t - 2]
    assert agreement(np.array([-1, -1, -1, 0, 1, 1]), truth, 2) == pytest.approx(5 / 6)


def test_the_model_reads_the_leading_silence_with_the_first_id():
    assert frames_per_id(Alignment(8, [3, 4, 5], 6)) == [11, 4, 5]
    assert Alignment(2, [1, 2], 1).unit_of_frame().tolist() == [-1, -1, 0, 1, 1, -1]


def test_a_true_alignment_becomes_a_path_with_silent_ids_of_zero_frames():
    path = from_units(np.array([-1, -1, 0, 0, 2, -1]), 3)  # id 1 never sounds (like "'" in the synthetic corpus)
    assert path == Alignment(2, [2, 0, 1], 1)
    assert path.unit_of_frame().tolist() == [-1, -1, 0, 0, 2, -1]
    with pytest.raises(ValueError, match="no frame sounds any text id"):
        from_units(np.array([-1, -1]), 2)


def test_alignment_files_round_trip_and_bad_ones_are_named(tmp_path):
    paths = [Alignment(1, [2, 3], 0), Alignment(0, [1], 4)]
    write_alignments(tmp_path / "val.jsonl", ["LJ001-0001", "LJ001-0002"], paths)
    assert read_alignments(tmp_path / "val.jsonl") == {"LJ001-0001": paths[0], "LJ001-0002": paths[1]}
    (tmp_path / "bad.jsonl").write_text('{"clip_id": "x", "lead": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: not an alignment line"):
        read_alignments(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="run the align stage"):
        read_alignments(tmp_path / "none.jsonl")


def test_inputs_the_aligner_cannot_read_are_errors():
    codes, texts, _ = toy_corpus(3, seed=3)
    with pytest.raises(ValueError, match=r"align: val: sentence 0 has 2 frames for 3 text ids"):
        align(codes, texts, [np.zeros((3, 2), int)], [[2, 3, 4]], vocab_size=VOCAB, codebook_size=CODEBOOK,
              codebooks=3, smoothing=0.1, max_rounds=3)
    with pytest.raises(ValueError, match=r"need \[>= 4, frames\] \(align.codebooks\)"):
        align(codes, texts, codes, texts, vocab_size=VOCAB, codebook_size=CODEBOOK, codebooks=4, smoothing=0.1,
              max_rounds=3)
