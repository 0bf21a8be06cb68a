"""The synthetic corpus says its text: audio is a function of the transcript, and letters survive the random codec.

Why the codec test: the demo tokenizes with the random-weight EnCodec; a corpus whose letters were audible but not
visible in the *codes* would give a text-conditioned model nothing to use (it happened with an earlier corpus).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridlm.config import SyntheticParams
from hybridlm.data.ljspeech import validate_layout
from hybridlm.data.synthetic import (FRAME_RATE, LEAD_FRAMES, LETTER_CLASSES, LETTERS, SAMPLE_RATE, char_frames,
                                     generate_corpus, synthesize, text_frames, transcript)
from hybridlm.text import TextVocab, normalize

SILENCE = len(LETTER_CLASSES)  # class label of frames with no letter sounding


def test_audio_is_a_function_of_the_normalised_text():
    a = synthesize("Tab, cafe.")
    assert np.array_equal(a.samples, synthesize("tab, café.").samples)  # same normalised text, same audio
    assert not np.array_equal(a.samples[: len(a.samples) // 2], synthesize("Bat, cafe.").samples[: len(a.samples) // 2])
    assert a.text == "tab, cafe." and len(a.char_of_frame) == text_frames("tab, cafe.")
    assert len(a.samples) == len(a.char_of_frame) * SAMPLE_RATE // FRAME_RATE
    assert (a.char_of_frame[:LEAD_FRAMES] == -1).all()
    # every character holds its own frames, in text order
    owners = [int(i) for i in a.char_of_frame[LEAD_FRAMES:]]
    assert owners == sorted(owners)
    assert [owners.count(i) for i in range(len(a.text))] == [char_frames(c) for c in a.text]
    assert synthesize("ab", num_frames=100).samples[text_frames("ab") * 294:].max() == 0.0  # padding is silence
    with pytest.raises(ValueError, match="needs 28 frames, only 20"):
        synthesize("ab", num_frames=20)
    assert synthesize("route 1").text == "route one"  # spelled out like every transcript (hybridlm.spelling)
    with pytest.raises(ValueError, match="no sound for character '#'"):
        synthesize("route #1")


def test_corpus_wavs_are_the_synthesis_of_field_3(tmp_path: Path):
    import soundfile as sf

    generate_corpus(tmp_path, SyntheticParams(clips=6, seed=3, min_seconds=1.0, max_seconds=9.0))
    rows = validate_layout(tmp_path)
    vocab = TextVocab()
    assert all(not vocab.unknown(r.normalized) for r in rows)
    assert len({normalize(r.normalized) for r in rows}) == 6  # varied transcripts
    for row in rows:
        wav, rate = sf.read(tmp_path / "wavs" / f"{row.id}.wav", dtype="float64")
        expected = synthesize(row.normalized, len(wav) * FRAME_RATE // rate).samples
        assert rate == SAMPLE_RATE and np.abs(wav - expected).max() < 1.0 / 32767


def class_labels(char_of_frame: np.ndarray, text: str) -> np.ndarray:
    return np.array([LETTERS[text[i]][0] if i >= 0 and text[i] in LETTERS else SILENCE for i in char_of_frame])


def count_model_ce(train, test, codebook: int, with_text: bool) -> float:
    """Held-out cross-entropy (nats) of a count model of code[t] given code[t-1] (and the letter class of frame t),
    interpolated with a smoothed unigram: the "tiny model" that shows how much the text can tell."""
    table: dict[tuple, Counter] = defaultdict(Counter)
    unigram: Counter = Counter()
    key = (lambda c, lab, t: (c[codebook, t - 1], lab[t])) if with_text else (lambda c, lab, t: (c[codebook, t - 1],))
    for codes, labels in train:
        for t in range(1, codes.shape[1]):
            table[key(codes, labels, t)][codes[codebook, t]] += 1
            unigram[codes[codebook, t]] += 1
    total, count = 0.0, 0
    n_unigram = sum(unigram.values())
    for codes, labels in test:
        for t in range(1, codes.shape[1]):
            code = codes[codebook, t]
            p = (unigram[code] + 1) / (n_unigram + 1024)
            seen = table.get(key(codes, labels, t))
            if seen:
                n = sum(seen.values())
                p = n / (n + 5) * seen[code] / n + 5 / (n + 5) * p
            total -= np.log(p)
            count += 1
    return total / count


@pytest.mark.slow  # about a minute on 2 loaded cores (40 s of audio through the codec)
def test_letter_classes_give_distinct_codes_through_the_random_codec():
    from hybridlm.data.codec import load_codec

    codec = load_codec("random", "facebook/encodec_24khz", "cpu")
    frames = 4 * FRAME_RATE
    clips = []
    for index in range(10):
        _, text = transcript(index, frames, np.random.default_rng([99, index]))
        clip = synthesize(text, frames, 24_000)
        clips.append((clip.samples, class_labels(clip.char_of_frame, clip.text)))
    wav = torch.tensor(np.stack([s for s, _ in clips]), dtype=torch.float32)[:, None]
    codes = codec.encode(wav, 6.0).numpy()
    data = [(codes[i].astype(np.int64), labels) for i, (_, labels) in enumerate(clips)]

    # Steady state (from the 4th frame of a segment on): each letter class and silence has its own codebook-0 code.
    modes, purity = [], []
    for cls in range(SILENCE + 1):
        steady = [c[0, t] for c, lab in data for t in range(3, c.shape[1]) if (lab[t - 3:t + 1] == cls).all()]
        assert len(steady) > 20, cls
        code, hits = Counter(steady).most_common(1)[0]
        modes.append(int(code))
        purity.append(hits / len(steady))
    print(f"modal codebook-0 codes {modes}, share of steady frames {np.round(purity, 2).tolist()}")
    assert len(set(modes)) == SILENCE + 1 and min(purity) > 0.2, (modes, purity)

    # Knowing the letter makes held-out codes clearly more predictable than the previous code alone does.
    train, test = data[:7], data[7:]
    gains = [count_model_ce(train, test, q, False) - count_model_ce(train, test, q, True) for q in range(8)]
    print(f"held-out CE gain from the letter class, nats per codebook: {np.round(gains, 3).tolist()}")
    assert min(gains) > 0.15 and np.mean(gains) > 0.25, gains
