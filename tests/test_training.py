"""Unit tests of the training library: schedule, EMA, packing, evaluation maths, overfitting, resume, divergence,
checkpoint errors. Tiny models and corpora, CPU only."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridlm.config import TrainParams
from hybridlm.data.shards import Chunk
from hybridlm.delay import DelayPattern
from hybridlm.model import HybridLM, ModelConfig
from hybridlm.params import ParamError, parse_section
from hybridlm.training.batching import PackedRows, delayed_sequences, eval_batches
from hybridlm.training.checkpoint import (FORMAT, check_compatible, list_checkpoints, load_checkpoint, provenance,
                                          save_checkpoint, select_checkpoints, trajectory_params,
                                          validate_checkpoints)
from hybridlm.training.ema import EMA
from hybridlm.training.evaluation import evaluate_sequences
from hybridlm.training.loop import TrainingDiverged, build_model, make_optimizer, train, train_step
from hybridlm.training.schedule import learning_rate
from hybridlm.training.store import ResumeStore

TINY = ModelConfig(schedule="LA", d_model=32, d_ff=64, n_heads=2, n_kv_heads=1, gdn_key_dim=8, gdn_value_dim=16,
                   context=32)
CPU = torch.device("cpu")
PATTERN = DelayPattern()


pytestmark = pytest.mark.usefixtures("one_thread")


def make_chunks(n: int, seed: int, alphabet: int = 64, frames=(10, 30)) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    return [Chunk(f"clip{i}", 0, rng.integers(0, alphabet, (8, int(rng.integers(*frames)))).astype(np.uint16))
            for i in range(n)]


# -- schedule --------------------------------------------------------------------------------------------------
def test_schedule_warmup_cosine_floor():
    kw = dict(lr=1e-3, warmup_steps=10, decay_steps=110, min_lr_ratio=0.1)
    assert learning_rate(0, **kw) == pytest.approx(1e-4)
    assert learning_rate(9, **kw) == pytest.approx(1e-3)
    assert learning_rate(60, **kw) == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half-way: midpoint of the cosine
    assert learning_rate(110, **kw) == pytest.approx(1e-4)
    assert learning_rate(5000, **kw) == pytest.approx(1e-4)  # stays at the floor past the horizon
    rates = [learning_rate(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_schedule_and_trajectory_do_not_depend_on_steps():
    short = parse_section(TrainParams, {"train": {"steps": 1800, "save_steps": [1800]}}, "train")
    long = parse_section(TrainParams, {"train": {"steps": 12000, "save_steps": [1800, 7400, 12000],
                                                 "eval_every": 50}}, "train")
    model = {"d_model": 384}
    assert trajectory_params(model, short, "cpu", "fp32") == trajectory_params(model, long, "cpu", "fp32")
    other_lr = parse_section(TrainParams, {"train": {"lr": 3e-4}}, "train")
    assert trajectory_params(model, other_lr, "cpu", "fp32") != trajectory_params(model, short, "cpu", "fp32")
    assert trajectory_params(model, short, "cuda", "bf16") != trajectory_params(model, short, "cpu", "bf16")
    # learning_rate takes no `steps` at all; checkpoint steps do follow train.steps:
    assert short.checkpoint_steps() == [1800] and long.checkpoint_steps() == [1800, 7400, 12000]
    assert parse_section(TrainParams, {"train": {"steps": 5000}}, "train").checkpoint_steps() == [1800, 5000]


def test_train_params_are_validated():
    with pytest.raises(ParamError, match="train.decay_steps"):
        parse_section(TrainParams, {"train": {"warmup_steps": 500, "decay_steps": 400}}, "train")
    with pytest.raises(ParamError, match="train.save_steps"):
        parse_section(TrainParams, {"train": {"save_steps": [10, 10]}}, "train")
    with pytest.raises(ParamError, match=r"'train\.save_steps\[1\]' must be >= 1, got 0"):
        parse_section(TrainParams, {"train": {"save_steps": [10, 0]}}, "train")


# -- EMA ---------------------------------------------------------------------------------------------------------
def test_ema_update_math():
    model = torch.nn.Linear(3, 2, bias=False)
    w0 = model.weight.detach().clone()
    ema = EMA(model, decay=0.5)
    expected = w0.clone()
    for n, value in enumerate([1.0, -2.0, 4.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
        d = min(0.5, (1 + n) / (10 + n))  # warm-up: 0.1, 0.1818.., 0.25
        expected = d * expected + (1 - d) * value
    assert torch.allclose(ema.shadow["weight"], expected, atol=1e-7)
    averaged = ema.averaged_state_dict(model)
    assert torch.equal(averaged["weight"], ema.shadow["weight"])
    assert torch.equal(model.weight, torch.full_like(model.weight, 4.0))  # the model itself is untouched


# -- packing -----------------------------------------------------------------------------------------------------
def test_packed_rows_cover_each_epoch_once_and_are_deterministic():
    chunks = make_chunks(5, seed=1)
    rows = PackedRows(chunks, PATTERN, context=16, seed=3)
    seqs = delayed_sequences(chunks, PATTERN)
    total = sum(s.shape[1] for s in seqs)
    assert rows.rows_per_epoch == math.ceil((total - 1) / 16)
    assert rows.pad_fraction == pytest.approx((rows.rows_per_epoch * 16 - (total - 1)) / (rows.rows_per_epoch * 16))
    epoch = rows.rows(0, rows.rows_per_epoch)
    assert epoch.shape == (rows.rows_per_epoch, 8, 17)
    assert torch.equal(epoch[:-1, :, -1], epoch[1:, :, 0])  # consecutive rows share their boundary step
    stream = torch.cat([epoch[0]] + [r[:, 1:] for r in epoch[1:]], dim=1)[:, :total]
    order = rows.epoch_order(0)
    assert torch.equal(stream, torch.from_numpy(np.concatenate([seqs[i] for i in order], axis=1)).long())
    assert int((stream[0] == PATTERN.bos_id).sum()) == len(chunks)  # every chunk starts with its BOS step
    again = PackedRows(chunks, PATTERN, context=16, seed=3)
    assert torch.equal(again.rows(7, 9), rows.rows(7, 9))  # rows are a pure function of (seed, index)
    assert not np.array_equal(rows.epoch_order(0), rows.epoch_order(1)) or len(chunks) < 3


def test_eval_batches_keep_whole_chunks_from_bos():
    seqs = delayed_sequences(make_chunks(5, seed=2), PATTERN)
    groups = list(eval_batches(seqs, PATTERN, batch_size=2))
    assert sorted(i for indices, _ in groups for i in indices) == list(range(5))
    assert all(torch.equal(b[k, :, : seqs[i].shape[1]], torch.from_numpy(seqs[i].astype(np.int64)))
               for indices, b in groups for k, i in enumerate(indices))
    batches = [b for _, b in groups]
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    assert all(bool((b[:, :, 0] == PATTERN.bos_id).all()) for b in batches)
    lengths = sorted(s.shape[1] for s in seqs)
    assert sorted(int((row[0] != PATTERN.pad_id).sum()) + 7 for b in batches for row in b) == lengths


# -- evaluation ----------------------------------------------------------------------------------------------------
def test_evaluation_is_exp_of_token_mean_ce_and_batch_independent():
    model = build_model(TINY, seed=0, device=CPU).eval()
    chunks = make_chunks(3, seed=4)
    seqs = delayed_sequences(chunks, PATTERN)
    result = evaluate_sequences(model, seqs, PATTERN, batch_size=2, device=CPU, precision="fp32")
    sums, counts = torch.zeros(8, dtype=torch.float64), torch.zeros(8)
    with torch.no_grad():
        for seq in seqs:  # each chunk alone, from its BOS
            x = torch.from_numpy(seq.astype(np.int64))[None]
            logits = model(x[..., :-1])[0]
            for q in range(8):
                target = x[0, q, 1:]
                keep = target < 1024
                sums[q] += F.cross_entropy(logits[q][keep], target[keep], reduction="sum").double()
                counts[q] += int(keep.sum())
    per_codebook = sums / counts
    assert result.per_codebook == pytest.approx(per_codebook.tolist(), rel=1e-5)
    assert result.loss == pytest.approx(float(per_codebook.mean()), rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(result.loss), rel=1e-12)
    assert result.as_dict()["ppl"] == pytest.approx(math.exp(result.as_dict()["loss"]), rel=1e-12)
    assert result.targets == sum(c.codes.size for c in chunks)
    one = evaluate_sequences(model, seqs, PATTERN, batch_size=1, device=CPU, precision="fp32")
    assert one.loss == pytest.approx(result.loss, rel=1e-5)


# -- optimisation -------------------------------------------------------------------------------------------------
def test_tiny_model_overfits_one_batch():
    config = ModelConfig(**{**TINY.__dict__, "d_model": 64, "d_ff": 128, "gdn_key_dim": 16, "gdn_value_dim": 32})
    rows = PackedRows(make_chunks(4, seed=0, frames=(20, 21)), PATTERN, context=32, seed=0)
    batch = rows.rows(0, 2)
    targets = batch[:, :, 1:][batch[:, :, 1:] < 1024]
    p = torch.bincount(targets, minlength=1024).double()
    p = p[p > 0] / p.sum()
    unigram_entropy = float(-(p * p.log()).sum())  # the best loss without context: ~ln 64
    model = build_model(config, seed=0, device=CPU)
    optimizer = make_optimizer(model, TrainParams(lr=1e-2, weight_decay=0.0), CPU)
    for _ in range(40):
        loss, grad_norm = train_step(model, optimizer, [batch], 1e-2, 1.0, CPU, precision="fp32", pattern=PATTERN)
    assert unigram_entropy > 3.5
    assert loss < 0.1 * unigram_entropy, (loss, unigram_entropy)


def test_weight_decay_skips_norms_gains_and_gdn_decay_params():
    model = build_model(TINY, seed=0, device=CPU)
    optimizer = make_optimizer(model, TrainParams(weight_decay=0.1), CPU)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert {n for n in names.values() if n.endswith(("A_log", "dt_bias")) or "norm" in n} <= no_decay
    assert not any(n.endswith("q_proj.weight") for n in no_decay)


# -- resume ---------------------------------------------------------------------------------------------------------
def _run(tmp_path, steps, store_name="store", save_steps=(3,), lr=3e-3, **extra):
    cfg = parse_section(TrainParams, {"train": {"steps": steps, "save_steps": list(save_steps), "batch_size": 2,
                                                "lr": lr, "warmup_steps": 2, "decay_steps": 50, "eval_every": 2,
                                                "precision": "fp32", **extra}}, "train")
    chunks = make_chunks(6, seed=5)
    prov = provenance(trajectory_params(dataclasses.asdict(TINY), cfg, "cpu", "fp32"), "data-hash", "code")
    store = ResumeStore(tmp_path / store_name, prov)
    records = []
    result = train(cfg, TINY, PackedRows(chunks, PATTERN, TINY.context, cfg.seed),
                   delayed_sequences(make_chunks(2, seed=6), PATTERN), store, prov, {"hybridlm.weights": "random"},
                   CPU, log=records.append)
    return result, store, records


def _same_state(a: dict, b: dict) -> None:
    for key in ("model",):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert all(torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]) for k in a["ema"]["shadow"])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])


def test_resume_is_bit_identical_and_keeps_earlier_checkpoints(tmp_path):
    full, _, full_records = _run(tmp_path, steps=7, store_name="full")
    short, store, _ = _run(tmp_path, steps=4, store_name="split")
    early = store.checkpoint_path(3).read_bytes()
    extended, store, records = _run(tmp_path, steps=7, store_name="split")
    assert extended.start_step == 4
    assert store.checkpoint_path(3).read_bytes() == early
    assert sorted(extended.checkpoints) == [3, 7]
    _same_state(load_checkpoint(full.checkpoints[7]), load_checkpoint(extended.checkpoints[7]))
    # and the same file: DVC hashes bytes, so equal tensors in another file would re-run everything downstream
    assert extended.checkpoints[7].read_bytes() == full.checkpoints[7].read_bytes()
    assert [r["step"] for r in records] == list(range(1, 8))  # the logger got the whole history, replayed first
    assert [r["train/loss"] for r in records] == [r["train/loss"] for r in full_records]
    # Lowering steps gives the shorter run's checkpoints, trained from the latest state <= 5, never step 7.
    lowered, _, _ = _run(tmp_path, steps=5, store_name="split")
    assert sorted(lowered.checkpoints) == [3, 5] and lowered.start_step == 4
    assert load_checkpoint(lowered.checkpoints[5])["step"] == 5
    again, _, _ = _run(tmp_path, steps=7, store_name="split")  # nothing left to train
    assert again.start_step == 7 and again.tokens_per_second is None


def test_non_finite_loss_stops_with_last_good_state(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"non-finite .* at step \d+ .*last good state \(step \d+\)"):
        _run(tmp_path, steps=6, lr=1e30, warmup_steps=0, grad_clip=1e30)
    states = list((tmp_path / "store" / "train").glob("*/resume-*.pt"))
    assert len(states) == 1
    state = load_checkpoint(states[0])
    assert all(torch.isfinite(v).all() for v in state["model"].values())


# -- checkpoint files -------------------------------------------------------------------------------------------------
def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        list_checkpoints(tmp_path / "nope")
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(FileNotFoundError, match="no step-NNNNNN.pt checkpoints"):
        list_checkpoints(tmp_path / "ckpt")
    bad = tmp_path / "ckpt" / "step-000010.pt"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="step-000010.pt: not a readable checkpoint"):
        load_checkpoint(bad)
    save_checkpoint(bad, {"format": "something-else"})
    with pytest.raises(ValueError, match="not a hybridlm checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match=r"'render.steps' asks for step\(s\) \[20\] .* steps 10"):
        select_checkpoints(tmp_path / "ckpt", [20], "render.steps")
    state = {"format": FORMAT, "model_config": dataclasses.asdict(TINY), "provenance": {"data_hash": "aaa"}}
    with pytest.raises(ValueError, match=r"other model\): model.d_model: checkpoint 32, params.yaml 64"):
        check_compatible(state, bad, {**dataclasses.asdict(TINY), "d_model": 64}, "aaa")
    with pytest.raises(ValueError, match="other data"):
        check_compatible(state, bad, dataclasses.asdict(TINY), "bbb")
    check_compatible(state, bad, {**dataclasses.asdict(TINY), "gdn_backend": "torch_recurrent"}, "aaa")  # backend: runtime only


def test_validate_checkpoints_names_a_corrupt_later_one(tmp_path):
    result, _, _ = _run(tmp_path, steps=4, save_steps=(2, 4))
    model = dataclasses.asdict(TINY)
    validate_checkpoints(result.checkpoints, model, "data-hash")
    later = result.checkpoints[4]
    later.write_bytes(later.read_bytes()[: later.stat().st_size // 2])
    with pytest.raises(ValueError, match="step-000004.pt: not a readable checkpoint"):
        validate_checkpoints(result.checkpoints, model, "data-hash")
    renamed = tmp_path / "step-000003.pt"
    renamed.write_bytes(result.checkpoints[2].read_bytes())
    with pytest.raises(ValueError, match="step-000003.pt: holds the state after step 2, but its name says step 3"):
        validate_checkpoints({3: renamed}, model)
    with pytest.raises(ValueError, match="step-000002.pt: incompatible checkpoint \\(other data\\)"):
        validate_checkpoints({2: result.checkpoints[2]}, model, "other-hash")


def test_equal_states_give_equal_bytes_however_their_objects_are_shared(tmp_path):
    """A restored state holds the strings torch.load made, a straight run's the code's literals, shared wherever
    they occur: pickle's memo works by identity, so without a canonical form the two would be written differently."""
    def state(name):  # the optimizer-state shape: the same keys in the top dict and in every parameter's dict
        return {name("step"): 1, "state": {i: {name("step"): torch.zeros(()), name("exp_avg"): torch.ones(2)}
                                         for i in range(3)}}

    def fresh(text: str) -> str:
        copy = "".join(list(text))
        assert copy == text and copy is not text
        return copy

    save_checkpoint(tmp_path / "built.pt", state(lambda text: text))
    save_checkpoint(tmp_path / "restored.pt", state(fresh))
    assert (tmp_path / "built.pt").read_bytes() == (tmp_path / "restored.pt").read_bytes()
    model = HybridLM(TINY).state_dict()  # an OrderedDict with the _metadata load_state_dict reads: kept
    save_checkpoint(tmp_path / "model.pt", {"model": model})
    assert torch.load(tmp_path / "model.pt", weights_only=True)["model"]._metadata == model._metadata


def test_checkpoint_loads_with_weights_only(tmp_path):
    result, _, _ = _run(tmp_path, steps=3)
    state = torch.load(result.checkpoints[3], weights_only=True)
    assert state["format"] == FORMAT and state["step"] == 3
    assert set(state) >= {"model", "ema", "optimizer", "rng", "data", "history", "provenance", "model_config", "codec"}
    assert state["data"]["next_row"] == 3 * 2
    assert set(state["provenance"]) == {"params", "params_hash", "data_hash", "code_version", "key"}
    assert "steps" not in state["provenance"]["params"]["train"]
    model = HybridLM(TINY)
    model.load_state_dict(state["model"])
