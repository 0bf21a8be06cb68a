"""An offline recogniser for the synthetic corpus: codes back to the sequence of letter sound classes.

Why: the demo's codec has random weights, so its audio is noise to pocketsphinx (WER about 1 whatever the model
does) and its spectrograms show nothing. But in the synthetic corpus every letter is a steady tone of its sound
class (hybridlm.data.synthetic.LETTER_CLASSES), and each class settles on its own codes, so a sampled reading can be
read back at the class level, offline, and scored against the text: the reading error rate tells a model that
reads from one that only counts letters (which scores near chance, about 0.875 for 8 classes).

How (the recipe measured in shared/REFERENCE.md, "Measured on the demo"):

- **Frames to classes**: a naive-Bayes lookup from codebooks 0-2 of one frame (a categorical per class and
  codebook, add-0.1 smoothing) to its class or silence, FIT ON THE TRAIN SPLIT, frames labelled by the synthesis
  alignment of their transcript (``Synthesis.char_of_frame``) delayed by the codec's lag.
- **The lag** is measured, not assumed: the shift of the labels (0..``MAX_LAG`` frames later) whose fitted lookup
  agrees best with its own training labels (the random codec's codes change about 4 frames after a tone starts).
- **Frames to a sequence**: runs shorter than ``MIN_RUN`` frames dropped (the codes flicker inside a letter),
  silences dropped, same-class neighbours merged. The text's class sequence is made the same way (its letters'
  classes, same-class neighbours merged: two such letters in a row are one steady tone).
- **Error**: class edit distance / reference length, summed over sentences (as a corpus WER is).

Beside a model's error stands the recogniser's own error on the reference codes of the same sentences (its floor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hybridlm.data.synthetic import LETTER_CLASSES, LETTERS, synthesize

SILENCE = -1
CODEBOOKS = 3  # codebooks 0-2: enough to tell the classes apart, few enough to fit on ~100 sentences
MIN_RUN = 3  # frames: shorter runs are flicker, not a letter (letters last 8-12 frames)
MAX_LAG = 8  # frames: the largest codec lag tried
SMOOTHING = 0.1


def frame_labels(text: str, num_frames: int) -> np.ndarray:
    """Per frame of a clip of ``text``: the sound class sounding in it (SILENCE for pauses and the leading and
    trailing silence). ``num_frames`` is the clip's length in codec frames; the synthesis is cut or padded to it."""
    synthesis = synthesize(text)
    owner = np.full(num_frames, SILENCE, dtype=np.int64)
    n = min(len(synthesis.char_of_frame), num_frames)
    owner[:n] = synthesis.char_of_frame[:n]
    chars = synthesis.text
    return np.array([LETTERS[chars[i]][0] if i >= 0 and chars[i] in LETTERS else SILENCE for i in owner],
                    dtype=np.int64)


def delayed(labels: np.ndarray, lag: int) -> np.ndarray:
    """``labels`` ``lag`` frames later (SILENCE shifted in), same length: what codes that lag the audio show."""
    return np.concatenate([np.full(lag, SILENCE, dtype=np.int64), labels])[: len(labels)]


def text_classes(text: str) -> list[int]:
    """The class sequence a reading of ``text`` should be heard as: its letters' classes, neighbours merged."""
    return _merged([LETTERS[c][0] for c in synthesize(text).text if c in LETTERS])


def _merged(classes: Sequence[int]) -> list[int]:
    return [c for i, c in enumerate(classes) if i == 0 or c != classes[i - 1]]


def clean_runs(frame_classes: np.ndarray) -> np.ndarray:
    """``frame_classes`` with every run shorter than MIN_RUN frames set to SILENCE."""
    classes = np.asarray(frame_classes, dtype=np.int64).copy()
    if not classes.size:
        return classes
    starts = np.flatnonzero(np.diff(classes, prepend=classes[0] - 1))
    for start, end in zip(starts, np.append(starts[1:], classes.size)):
        if end - start < MIN_RUN:
            classes[start:end] = SILENCE
    return classes


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (substitution, insertion, deletion: 1 each)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


@dataclass(frozen=True)
class Recogniser:
    """The fitted lookup: ``log_probs[q, k, code]`` = log P(code of codebook q | class k) (k = class index, the last
    row silence), ``log_prior[k]``, the codec lag in frames and how many training frames it labels right."""

    log_probs: np.ndarray
    log_prior: np.ndarray
    lag: int
    train_agreement: float

    def frame_classes(self, codes: np.ndarray) -> np.ndarray:
        """Most likely class per frame of ``codes [n_q, T]`` (SILENCE for silence), before any run filtering."""
        codes = np.asarray(codes, dtype=np.int64)[:CODEBOOKS]
        scores = self.log_prior[:, None] + sum(self.log_probs[q][:, codes[q]] for q in range(CODEBOOKS))
        best = scores.argmax(axis=0)
        return np.where(best == len(LETTER_CLASSES), SILENCE, best)

    def heard(self, codes: np.ndarray) -> np.ndarray:
        """Per frame, what the recogniser hears: its frame classes with flicker (runs < MIN_RUN) silenced. What
        :func:`hybridlm.data.synthetic.synthesize_classes` renders as tones."""
        return clean_runs(self.frame_classes(codes))

    def classes(self, codes: np.ndarray) -> list[int]:
        """The class sequence heard in ``codes``: flicker and silences dropped, same-class neighbours merged."""
        return _merged([int(c) for c in self.heard(codes) if c != SILENCE])

    def error_rate(self, readings: Sequence[np.ndarray], texts: Sequence[str]) -> float:
        """Class edit distance / reference length, summed over ``readings`` (codes) of ``texts``."""
        if len(readings) != len(texts) or not texts:
            raise ValueError(f"reading error: {len(readings)} readings for {len(texts)} texts (need as many, >= 1)")
        references = [text_classes(text) for text in texts]
        total = sum(len(r) for r in references)
        if not total:
            raise ValueError("reading error: the texts have no letters to read")
        return sum(edit_distance(self.classes(c), r) for c, r in zip(readings, references)) / total


def _fit(codes: list[np.ndarray], labels: list[np.ndarray], codebook_size: int) -> tuple[np.ndarray, np.ndarray]:
    classes = len(LETTER_CLASSES) + 1  # the last row: silence
    y = np.concatenate(labels) % classes  # SILENCE (-1) -> the last row
    counts = np.full((CODEBOOKS, classes, codebook_size), SMOOTHING)
    for q in range(CODEBOOKS):
        np.add.at(counts[q], (y, np.concatenate([c[q] for c in codes])), 1.0)
    prior = np.bincount(y, minlength=classes) + SMOOTHING
    return np.log(counts / counts.sum(axis=2, keepdims=True)), np.log(prior / prior.sum())


def fit(codes: Sequence[np.ndarray], texts: Sequence[str], codebook_size: int) -> Recogniser:
    """The recogniser of clips ``codes [n_q, T]`` (the train split's sentences) of ``texts``, at the lag (0..MAX_LAG)
    whose lookup agrees best with its labels."""
    if not texts or len(codes) != len(texts):
        raise ValueError(f"synthetic ASR: {len(codes)} clips for {len(texts)} texts (need as many, >= 1)")
    codes = [np.asarray(c, dtype=np.int64) for c in codes]
    if any(c.ndim != 2 or c.shape[0] < CODEBOOKS for c in codes):
        raise ValueError(f"synthetic ASR: codes must be [codebooks >= {CODEBOOKS}, frames]")
    aligned = [frame_labels(text, c.shape[1]) for c, text in zip(codes, texts)]
    best = None
    for lag in range(MAX_LAG + 1):
        labels = [delayed(a, lag) for a in aligned]
        log_probs, log_prior = _fit(codes, labels, codebook_size)
        candidate = Recogniser(log_probs, log_prior, lag, 0.0)
        agreement = float(np.mean(np.concatenate([candidate.frame_classes(c) for c in codes])
                                  == np.concatenate(labels)))
        if best is None or agreement > best.train_agreement:
            best = Recogniser(log_probs, log_prior, lag, agreement)
    return best
