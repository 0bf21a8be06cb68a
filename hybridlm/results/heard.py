"""What the synthetic corpus's sound-class recogniser hears in a reading, for the text-to-speech results page.

Why as tones: the demo's random codec decodes any codes to noise, so a listener cannot tell a reading from babble;
played back as the corpus's own tones, the classes the recogniser heard can be compared with the text by ear and
by the spectrogram (hybridlm.synthetic_asr says how it hears).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybridlm import synthetic_asr
from hybridlm.data.sentence_reader import read_sentences
from hybridlm.data.synthetic import LETTER_CLASSES, synthesize_classes
from hybridlm.model import ModelConfig
from hybridlm.results.gallery import write_spectrogram, write_wav


def class_names(classes: list[int]) -> str:
    """A sound-class sequence in words: each class as its letters ("ae dtnl io")."""
    return " ".join(LETTER_CLASSES[k][0] for k in classes) or "(nothing)"


def fit_recogniser(sentences: Path, config: ModelConfig) -> tuple[synthetic_asr.Recogniser, str]:
    """The synthetic corpus's recogniser, fit on the train sentences, and a line saying what it is."""
    rows = read_sentences(sentences, "train", config)[0]
    recogniser = synthetic_asr.fit([row.codes for row in rows], [row.text for row in rows], config.codebook_size)
    return recogniser, (f"hybridlm.synthetic_asr: codebooks 0-{synthetic_asr.CODEBOOKS - 1} -> letter sound class, "
                        f"fit on {len(rows)} train sentences, codec lag {recogniser.lag} frames (agrees with "
                        f"{recogniser.train_agreement:.1%} of their frames)")


def write_heard(tmp: Path, name: str, recogniser: synthetic_asr.Recogniser, codes: np.ndarray, text: str,
                sample_rate: int, title: str) -> tuple[str, str, str]:
    """What the recogniser heard in ``codes`` as the corpus's tones: ``name``.heard.{wav,png} under ``tmp`` and a
    line comparing the classes heard with the text's."""
    audio = synthesize_classes(recogniser.heard(codes), sample_rate)
    write_wav(tmp / f"{name}.heard.wav", audio, sample_rate)
    write_spectrogram(tmp / f"{name}.heard.png", audio, sample_rate, title)
    heard, expected = recogniser.classes(codes), synthetic_asr.text_classes(text)
    errors = synthetic_asr.edit_distance(heard, expected)
    note = (f"Heard as sound classes ({errors} edits from the text's, of {len(expected)}): {class_names(heard)}; "
            f"the text says: {class_names(expected)}")
    return f"{name}.heard.wav", f"{name}.heard.png", note
