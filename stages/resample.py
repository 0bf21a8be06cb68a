"""`resample` stage: ``raw`` (LJ layout) -> ``out``/{wavs/<id>.flac, manifest.tsv}, ``metrics`` and ``timing``.

Reads the `resample` section. Clip order = metadata.csv order. Bad inputs fail the stage or, with
`on_bad_file: skip`, are left out and listed by name in the metrics.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from hybridlm.atomic import atomic_dir, write_json
from hybridlm.config import section
from hybridlm.data.audio import resample_corpus, write_manifest
from hybridlm.data.ljspeech import parse_metadata
from hybridlm.interface import Input, Option, Output

def run(params: dict, *,
        raw: Annotated[Path, Input("Corpus folder (LJ layout) to read.")],
        out: Annotated[Path, Output("Folder to write: wavs/<id>.flac and manifest.tsv.")],
        metrics: Annotated[Path, Output("JSON metrics to write (clip counts, hours, skipped files).")],
        timing: Annotated[Path, Output("JSON timing to write (wall-clock; kept apart from the reproducible "
                                       "results).")],
        workers: Annotated[int, Option("Parallel processes (0 = all cores). Does not change the output.")] = 0,
        ) -> None:
    """Resample every clip to 24 kHz mono FLAC and write the clip manifest."""
    cfg = section(params, "resample")
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    ids = [row.id for row in parse_metadata(raw / "metadata.csv")]
    start = time.perf_counter()
    with atomic_dir(out) as tmp:
        result = resample_corpus(ids, raw / "wavs", tmp / "wavs", cfg, workers=workers)
        write_manifest(tmp / "manifest.tsv", result.entries)
    seconds = sum(e.seconds for e in result.entries)
    write_json(metrics, {
        "clips_in": len(ids),
        "clips_out": len(result.entries),
        "skipped": len(result.skipped),
        "skipped_files": result.skipped,
        "hours": round(seconds / 3600, 6),
        "sample_rate": cfg.sample_rate,
    })
    write_json(timing, {"wall_seconds": round(time.perf_counter() - start, 3), "workers": workers})
    for name, reason in result.skipped.items():
        print(f"resample: SKIPPED {reason}")
    print(f"resample: {len(result.entries)} clips ({seconds / 3600:.3f} h) at {cfg.sample_rate} Hz -> {out}"
          + (f"; {len(result.skipped)} skipped (see {metrics})" if result.skipped else ""))
