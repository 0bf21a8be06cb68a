"""`align` stage: ``sentences``/{train,val} -> ``out``/{train,val}.jsonl (frames per text id of every sentence) and
``metrics``.

Reads the `align` section, `tts_model.frontend` (the text ids to align: the model's) and `data.source`. The
aligner (hybridlm/data/aligner.py) fits on the train sentences and aligns both sides from codes and text alone.
On the synthetic corpus (``data.source: synthetic``, character front end) the metrics also score the result against
the synthesis's own alignment (hybridlm.data.synthetic.synthesize(text).char_of_frame), delayed by the codec's lag,
measured as the best-agreeing shift: a check of the aligner, never an input to it. That true alignment (lagged) of
the val sentences also goes to ``out``/val_oracle.jsonl: evaluate_tts reads the same model with it (the oracle cap).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np

from hybridlm.atomic import atomic_dir, write_json
from hybridlm.config import section
from hybridlm.data.aligner import ORACLE, Alignment, agreement, align, even_diagonal, from_units, write_alignments
from hybridlm.data.shards import read_shards
from hybridlm.interface import Input, Output
from hybridlm.text import TextVocab

SIDES = ("train", "val")
MAX_LAG = 8  # codec lags tried against the synthesis alignment (the random codec's measured 4 lies inside)


def run(params: dict, *,
        sentences: Annotated[Path, Input("Sentence shards folder ({train,val}/) to align.")],
        out: Annotated[Path, Output("Folder to write {train,val}.jsonl (frames per text id of every sentence) to.")],
        metrics: Annotated[Path, Output("JSON metrics to write (rounds, frames per id; on the synthetic corpus its "
                                        "accuracy).")]) -> None:
    """Flat-start Viterbi alignment of every sentence's codes to its text ids (fit on train)."""
    cfg = section(params, "align")
    vocab = TextVocab.for_frontend(section(params, "tts_model").frontend)
    rows, meta = {}, {}
    for side in SIDES:
        rows[side], meta[side] = read_shards(sentences / side)
    n_q, codebook_size = int(meta["train"]["hybridlm.num_codebooks"]), int(meta["train"]["hybridlm.codebook_size"])
    if cfg.codebooks > n_q:
        raise ValueError(f"params.yaml: 'align.codebooks' ({cfg.codebooks}) exceeds the sentences' {n_q} codebooks")
    codes = {side: [row.codes.astype(np.int64) for row in rows[side]] for side in SIDES}
    texts = {side: vocab.encode_many([row.text for row in rows[side]]) for side in SIDES}
    result = align(codes["train"], texts["train"], codes["val"], texts["val"], vocab_size=len(vocab),
                   codebook_size=codebook_size, codebooks=cfg.codebooks, smoothing=cfg.smoothing,
                   max_rounds=cfg.max_rounds)
    paths = {"train": result.train, "val": result.val}
    check = None
    if section(params, "data").source == "synthetic" and vocab.frontend == "chars":
        check = synthetic_check(rows, paths)
    with atomic_dir(out) as tmp:
        for side in SIDES:
            write_alignments(tmp / f"{side}.jsonl", [row.clip_id for row in rows[side]], paths[side])
        if check is not None:
            oracle = [from_units(delayed_truth(row, check["lag"]), len(ids)) for row, ids in
                      zip(rows["val"], texts["val"])]
            write_alignments(tmp / f"{ORACLE}.jsonl", [row.clip_id for row in rows["val"]], oracle)
    summary = {"rounds": result.rounds, "changed_per_round": result.changed,
               "converged": bool(result.changed and result.changed[-1] == 0), "text_frontend": vocab.version}
    for side in SIDES:
        summary[side] = {"sentences": len(paths[side]),
                         "mean_frames_per_id": float(np.mean([d for p in paths[side] for d in p.durations])),
                         "mean_lead_frames": float(np.mean([p.lead for p in paths[side]])),
                         "mean_trail_frames": float(np.mean([p.trail for p in paths[side]]))}
    if check is not None:
        summary["synthetic_check"] = check
    write_json(metrics, summary)
    line = f"align: {result.rounds} rounds (changed paths per round {result.changed})"
    if "synthetic_check" in summary:
        check = summary["synthetic_check"]
        line += (f"; agrees with the synthesis alignment (lag {check['lag']} frames) on {check['val']:.1%} of val "
                 f"frames (even diagonal: {check['val_diagonal']:.1%})")
    print(line)


def true_units(row) -> np.ndarray:
    """The synthesis's own text position per frame of a synthetic sentence (-1 = silence), over its code frames."""
    from hybridlm.data.synthetic import synthesize  # only the synthetic corpus has a true alignment

    owner = synthesize(row.text).char_of_frame
    frames = row.codes.shape[1]
    return np.concatenate([owner, np.full(max(0, frames - len(owner)), -1)])[:frames]


def delayed_truth(row, lag: int) -> np.ndarray:
    """:func:`true_units` as the codes show it: ``lag`` frames later (silence in the first ``lag``)."""
    units = true_units(row)
    return np.concatenate([np.full(lag, -1), units[: len(units) - lag]])


def synthetic_check(rows: dict, paths: dict[str, list[Alignment]]) -> dict:
    """Share of frames on which each side's alignment agrees with the synthesis alignment delayed by the lag that
    agrees best on the train side, and what the even diagonal scores at that lag (the baseline to beat)."""
    truth = true_units

    def score(side: str, lag: int, diagonal: bool = False) -> float:
        frames = [(even_diagonal(r.codes.shape[1], len(p.durations)) if diagonal else p).unit_of_frame()
                  for r, p in zip(rows[side], paths[side])]
        true = [truth(r) for r in rows[side]]
        total = sum(len(f) for f in frames)
        return sum(agreement(f, t, lag) * len(f) for f, t in zip(frames, true)) / total

    lag = max(range(MAX_LAG + 1), key=lambda d: (score("train", d), -d))
    return {"lag": lag, "train": score("train", lag), "val": score("val", lag),
            "val_diagonal": score("val", lag, diagonal=True), "val_no_lag": score("val", 0)}
