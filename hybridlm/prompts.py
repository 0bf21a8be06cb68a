"""Prompts for a text-to-speech checkpoint to read aloud: the text vocabulary the checkpoint carries, and a prompt's
text ids in it.

Why here: render_tts and `hybridlm say` must refuse a checkpoint without text conditioning and a prompt it cannot
read in exactly the same way; each error names the checkpoint file or the prompt's origin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridlm.text import TextVocab, normalize


def checkpoint_vocab(state: dict[str, Any], path: Path) -> TextVocab:
    """The text vocabulary stored with a text-to-speech checkpoint; a checkpoint without one is refused."""
    if "text_vocab" not in state or not state["model_config"].get("text", {}).get("layers"):
        raise ValueError(f"{path}: a checkpoint without text conditioning (an unconditional run's?); it cannot "
                         f"read text. Use a checkpoint of the train_tts stage")
    return TextVocab.from_dict(state["text_vocab"])


def encode_prompt(vocab: TextVocab, text: str, where: str) -> list[int]:
    """Text ids of a prompt to read aloud; an empty prompt or characters outside the vocabulary are errors naming
    ``where`` and the characters (a model cannot say what it never learned to read)."""
    ids = vocab.encode(text)
    if not ids:
        normalized = normalize(text)  # empty, or (phonemes) only marks that espeak does not voice
        raise ValueError(f"{where}: the text {text!r} has nothing to read: after normalisation it is {normalized!r}"
                         + (f", which has no {vocab.frontend}" if normalized else ""))
    unknown = vocab.unknown(text)
    if unknown:
        chars = ", ".join(f"{ch!r} x{n}" for ch, n in sorted(unknown.items()))
        raise ValueError(f"{where}: characters outside the text vocabulary ({vocab.version}: "
                         f"{''.join(vocab.symbols)!r}): {chars}; spell them out as words")
    return ids
