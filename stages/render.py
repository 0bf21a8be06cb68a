"""`hybridlm render`: unconditional samples from every checkpoint's EMA weights, decoded to 24 kHz audio, on one
offline results page.

Output ``out`` (data/samples/, written as a whole, atomically): step-NNNNNN/sample-K.wav and .png for every
checkpoint and sample slot; curves/*.png, the training curves drawn from the last saved checkpoint's history
(hybridlm.results.report); and index.html, the results page: curves, a metrics table per checkpoint (from
``eval_metrics``, metrics/eval.json) and the checkpoints x samples gallery. Every checkpoint uses the same seed, so
sample slot K is comparable across checkpoints. Audio is decoded by the codec the token shards were made with
(recorded in each checkpoint): with `tokenize.weights: random` (demo/tests) that codec is random, so the audio is
noise by construction. The implementation, shared with render_tts: hybridlm/results/page.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from hybridlm.config import section
from hybridlm.interface import Input, Output
from hybridlm.results.page import render_page
from hybridlm.results.report import reference_differences
from hybridlm.results.trained import open_trained


def run(params: dict, *,
        checkpoints: Annotated[Path, Input("Checkpoint folder to read.")],
        eval_metrics: Annotated[Path, Input("The evaluate stage's metrics (val loss per checkpoint, shown in the "
                                            "gallery).")],
        out: Annotated[Path, Output("Folder to write WAVs, spectrograms and index.html to.")]) -> None:
    """Unconditional samples from every checkpoint: WAVs, spectrograms and an HTML gallery."""
    cfg = section(params, "render")
    trained = open_trained(checkpoints, section(params, "model"), cfg, "render")
    render_page(trained, cfg, out, eval_metrics, differences=reference_differences(params))
