"""`download` stage: put LJ Speech 1.1 (or a local copy, or the synthetic corpus) at ``out`` (data/raw/LJSpeech-1.1).

Reads the `data` section. The output folder appears only once complete (atomic_dir); a URL download goes through
the resumable cache of hybridlm.data.ljspeech, outside DVC's outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from hybridlm.atomic import atomic_dir
from hybridlm.config import section
from hybridlm.data.ljspeech import (copy_lj_folder, download, empty_transcript_warning, extract_lj_archive,
                                    resolve_source, validate_layout, verify_sha256)
from hybridlm.data.synthetic import generate_corpus
from hybridlm.interface import Output

def run(params: dict, *, out: Annotated[Path, Output("Corpus folder to write (LJ layout).")]) -> None:
    """Fetch LJ Speech 1.1 (or a local archive/folder, or the synthetic corpus) into --out."""
    cfg = section(params, "data")
    source = resolve_source(cfg.source)
    with atomic_dir(out) as tmp:
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
    print(f"download: {len(rows)} clips from {source.kind} source -> {out}")
    if warning := empty_transcript_warning(rows):
        print(f"download: warning: {warning}", file=sys.stderr)

