"""`download` stage: put LJ Speech 1.1 (or a local copy, or the synthetic corpus) at data/raw/LJSpeech-1.1.

Reads the `data` section. The output folder appears only once complete (atomic_dir); a URL download goes through
the resumable cache of hybridlm.data.ljspeech, outside DVC's outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hybridlm.atomic import atomic_dir
from hybridlm.data.ljspeech import (copy_lj_folder, download, extract_lj_archive, resolve_source, validate_layout,
                                    verify_sha256)
from hybridlm.data.synthetic import SyntheticParams, generate_corpus
from hybridlm.params import ParamError, parse_section

OUT = Path("data/raw/LJSpeech-1.1")


@dataclass(frozen=True)
class DataParams:
    """`data`: where the corpus comes from, the archive's SHA-256 ("" = unchecked), the synthetic corpus' shape."""

    source: str = "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"
    sha256: str = "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5"
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)

    def __post_init__(self) -> None:
        if not self.source:
            raise ParamError("params.yaml: 'data.source' must not be empty")
        if self.sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256):
            raise ParamError(f"params.yaml: 'data.sha256' must be 64 hex digits or \"\", got {self.sha256!r}")


def run(params: dict, **options) -> None:
    cfg = parse_section(DataParams, params, "data")
    source = resolve_source(cfg.source)
    with atomic_dir(OUT) as tmp:
        if source.kind == "synthetic":
            generate_corpus(tmp, cfg.synthetic)
        elif source.kind == "folder":
            copy_lj_folder(Path(source.location), tmp)
        else:
            if source.kind == "url":
                archive = download(source.location, cfg.sha256)
            else:
                archive = Path(source.location)
                verify_sha256(archive, cfg.sha256, delete_on_mismatch=False)
            extract_lj_archive(archive, tmp)
        rows = validate_layout(tmp)
    print(f"download: {len(rows)} clips from {source.kind} source -> {OUT}")

