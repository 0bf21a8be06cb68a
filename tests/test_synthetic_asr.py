"""The synthetic corpus's recogniser: fit on train sentences, it finds the codec's lag, reads held-out clean codes
with no error (the floor), and scores readings that ignore the text near chance. Fast: the codes come from a stand-in
codec that, like the random EnCodec, lags the audio, gives each class a few codes of its own and flickers."""

from __future__ import annotations

import numpy as np
import pytest

from hybridlm import synthetic_asr as sa
from hybridlm.data.synthetic import LETTER_CLASSES, LETTERS, synthesize, synthesize_classes, text_frames, transcript

LAG = 3
CODEBOOK_SIZE = 64
CHANCE = 1 - 1 / len(LETTER_CLASSES)


def stand_in_codes(text: str, frames: int, rng: np.random.Generator) -> np.ndarray:
    """[4, frames] codes: per frame, one of its class's own 3 codes per codebook (class of the frame LAG earlier),
    and single frames of any code (every 4th frame may flicker, with p 0.3: shorter than a letter's runs)."""
    labels = sa.delayed(sa.frame_labels(text, frames), LAG) % (len(LETTER_CLASSES) + 1)
    own = np.arange(4)[:, None, None] * 7 + np.arange(len(LETTER_CLASSES) + 1)[None, :, None] * 5 + np.arange(3)
    codes = own[np.arange(4)[:, None], labels[None, :], rng.integers(0, 3, (4, frames))] % CODEBOOK_SIZE
    flicker = (rng.random(frames) < 0.3) & (np.arange(frames) % 4 == 0)
    codes[:, flicker] = rng.integers(0, CODEBOOK_SIZE, (4, int(flicker.sum())))
    return codes


def corpus(n: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(seed)
    texts, codes = [], []
    for index in range(n):
        frames = int(rng.integers(60, 120))
        text = transcript(index, frames, rng)[1].lower()
        texts.append(text)
        codes.append(stand_in_codes(text, frames, rng))
    return codes, texts


@pytest.fixture(scope="module")
def fitted():
    codes, texts = corpus(60, seed=0)
    return sa.fit(codes, texts, CODEBOOK_SIZE)


def test_fit_on_train_finds_the_lag_and_reads_held_out_clean_codes_without_error(fitted):
    assert fitted.lag == LAG and fitted.train_agreement > 0.85
    codes, texts = corpus(20, seed=1)  # held-out sentences
    assert fitted.error_rate(codes, texts) == 0.0
    assert fitted.classes(codes[0]) == sa.text_classes(texts[0]) != []


def test_readings_that_ignore_the_text_score_near_chance(fitted):
    codes, texts = corpus(30, seed=2)
    shuffled = [codes[(i + 1) % len(codes)] for i in range(len(codes))]  # real-looking audio of another text
    assert CHANCE - 0.2 < fitted.error_rate(shuffled, texts) < CHANCE + 0.25
    rng = np.random.default_rng(3)
    noise = [rng.integers(0, CODEBOOK_SIZE, c.shape) for c in codes]
    assert fitted.error_rate(noise, texts) > CHANCE - 0.2
    with pytest.raises(ValueError, match="2 readings for 1 texts"):
        fitted.error_rate(codes[:2], texts[:1])


def test_sequences_runs_and_edit_distance():
    assert sa.text_classes("Bat, mad.") == [LETTERS["b"][0], LETTERS["a"][0], LETTERS["t"][0], LETTERS["m"][0],
                                           LETTERS["a"][0], LETTERS["d"][0]]
    assert sa.text_classes("ss sz") == [LETTERS["s"][0]]  # one steady tone
    assert sa.clean_runs(np.array([2, 2, 2, 5, 2, 2, -1, 4, 4, 4])).tolist() == [2, 2, 2, -1, -1, -1, -1, 4, 4, 4]
    assert sa.edit_distance([1, 2, 3], [1, 3]) == 1 and sa.edit_distance([], [1, 2]) == 2
    assert sa.edit_distance([1, 2, 3], [3, 2, 1]) == 2


def test_what_it_heard_renders_as_the_corpus_tones():
    text = "bat ok."  # no same-class neighbours: one syllable per letter, as the corpus has them
    frames = text_frames(text) + 5
    labels = sa.frame_labels(text, frames)
    assert np.array_equal(synthesize_classes(labels, 24_000), synthesize(text, frames, 24_000).samples)
    assert len(synthesize_classes(np.array([-1, 3, 3, 3]))) == 4 * 294
    with pytest.raises(ValueError, match="classes must be -1"):
        synthesize_classes(np.array([0, 8]))


def test_reading_metrics_of_faithful_and_text_ignoring_readings(fitted):
    from hybridlm.results.reading_metrics import pearson, reading_metrics

    codes, texts = corpus(12, seed=4)
    faithful = reading_metrics(codes, [True] * 12, codes, texts, fitted, 0.0)
    assert faithful == {"sentences": 12, "duration_correlation": pytest.approx(1.0), "eos_rate": 1.0,
                        "reading_error_rate": 0.0, "reading_error_floor": 0.0}
    # one fixed-length reading of another sentence for every text: no duration tracking, near-chance reading
    ignoring = reading_metrics([codes[0]] * 12, [False] * 6 + [True] * 6, codes, texts, fitted, 0.0)
    assert ignoring["duration_correlation"] is None and ignoring["eos_rate"] == 0.5
    assert ignoring["reading_error_rate"] > CHANCE - 0.2
    assert "reading_error_rate" not in reading_metrics(codes, [True] * 12, codes, texts, None, None)
    assert pearson([1, 2], [2, 1]) is None and pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9934, abs=1e-4)
    with pytest.raises(ValueError, match="1 readings, 2 EOS flags"):
        reading_metrics(codes[:1], [True, True], codes[:1], texts[:1], None, None)
