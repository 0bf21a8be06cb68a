"""Alignment plots and their two numbers: a clean staircase, a repeat, a skip; input checks; deterministic PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridlm.data.synthetic import synthesize
from hybridlm.results.alignment import alignment_stats, write_alignment


def one_hot(positions, length: int) -> np.ndarray:
    matrix = np.full((len(positions), length), 0.01)
    matrix[np.arange(len(positions)), positions] = 1.0
    return matrix / matrix.sum(axis=1, keepdims=True)


def test_stats_tell_clean_repeated_and_skipped_readings():
    text = "abcd"
    assert alignment_stats(one_hot([0, 0, 1, 1, 2, 3, 3], 4), text) == {"monotonic": 1.0, "coverage": 1.0}
    repeat = alignment_stats(one_hot([0, 1, 2, 1, 2, 3], 4), text)
    assert repeat["monotonic"] == 0.8 and repeat["coverage"] == 1.0
    assert alignment_stats(one_hot([0, 0, 3, 3], 4), text) == {"monotonic": 1.0, "coverage": 0.5}


def test_write_alignment_png_from_synthetic_ground_truth(tmp_path):
    clip = synthesize("the type was worn.")
    frames = clip.char_of_frame >= 0  # the true alignment of the synthetic corpus as attention weights
    weights = torch.from_numpy(one_hot(clip.char_of_frame[frames], len(clip.text)))
    write_alignment(weights, clip.text, tmp_path / "a.png", title="step 40, sample 0")
    write_alignment(weights, clip.text, tmp_path / "b.png", title="step 40, sample 0")
    data = (tmp_path / "a.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data == (tmp_path / "b.png").read_bytes()
    assert alignment_stats(weights, clip.text) == {"monotonic": 1.0, "coverage": 1.0}
    long_text = "x" * 300  # many characters: labels thinned, still written
    write_alignment(np.ones((50, 300)), long_text, tmp_path / "long.png")
    assert (tmp_path / "long.png").stat().st_size > 1000


def test_input_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="3 text positions but the text has 4 characters"):
        write_alignment(np.ones((5, 3)), "abcd", tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"must be \[frames, text_len\]"):
        write_alignment(np.ones(5), "abcd", tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN or inf"):
        alignment_stats(np.full((2, 2), np.nan), "ab")
    assert not (tmp_path / "x.png").exists()
