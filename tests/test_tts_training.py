"""Text-to-speech training: sentence batches (EOS, durations, text and input dropout as pure functions of the row),
the loop with a warm start, text in the val loss, the duration loss logged, bit-identical resume, and dvc.yaml's
train_tts deps covering its code version."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hybridlm.config import TtsTrainParams
from hybridlm.data.shards import Chunk
from hybridlm.delay import DelayPattern
from hybridlm.layers.text_encoder import TEXT_PAD_ID
from hybridlm.model import HybridLM, ModelConfig, TextConfig
from hybridlm.params import parse_section
from hybridlm.training.batching import SentenceRows, TextRows, delayed_sequences
from hybridlm.training.checkpoint import load_checkpoint, provenance, trajectory_params
from hybridlm.training.loop import train
from hybridlm.training.store import ResumeStore

ROOT = Path(__file__).resolve().parents[1]
DECODER = ModelConfig(schedule="LA", d_model=32, d_ff=64, n_heads=2, n_kv_heads=1, gdn_key_dim=8, gdn_value_dim=16,
                      context=32)
TTS = dataclasses.replace(DECODER, text=TextConfig(layers=1, d_model=16, n_heads=2, d_ff=32, vocab_size=40,
                                                   pointer_early=1))
EOS = DelayPattern(eos=True)
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def sentences(n: int, seed: int) -> tuple[list[Chunk], list[list[int]], list[list[int]]]:
    """Rows, their text ids and frames per id (1 or 2 each)."""
    rng = np.random.default_rng(seed)
    rows = [Chunk(f"clip{i}", 0, rng.integers(0, 64, (8, int(rng.integers(5, 12)))).astype(np.uint16))
            for i in range(n)]
    texts = [list(rng.integers(2, 39, int(rng.integers(3, 9)))) for _ in range(n)]
    return rows, texts, [list(rng.integers(1, 3, len(t))) for t in texts]


def test_sentence_rows_are_whole_sentences_with_eos_and_deterministic_dropout():
    rows, texts, durations = sentences(5, seed=0)
    batches = SentenceRows(rows, texts, durations, EOS, seed=3, text_dropout=0.5, input_dropout=0.3)
    first = batches.rows(0, 5)
    assert isinstance(first, TextRows) and first.tokens.shape[0] == first.text.shape[0] == 5
    assert first.durations.shape == first.text.shape and first.hidden.shape == first.tokens.shape
    assert bool((first.tokens[:, :, 0] == EOS.bos_id).all())
    assert int((first.tokens == EOS.eos_id).sum()) == 5 * 8  # one EOS per codebook per sentence
    order = batches.epoch_order(0)
    for k, index in enumerate(order):  # each row is its sentence; the text is its own or dropped (all pad)
        seq = delayed_sequences([rows[index]], EOS)[0]
        assert torch.equal(first.tokens[k, :, : seq.shape[1]], torch.from_numpy(seq.astype(np.int64)))
        ids = first.text[k][first.text[k] != TEXT_PAD_ID].tolist()
        assert ids in ([], texts[index])
        assert first.durations[k][: len(ids)].tolist() == (durations[index] if ids else [])  # travel together
        # whole frames hidden (every codebook's position of the frame: step 1 + q + f), never BOS or EOS
        hidden = first.hidden[k]
        num_frames = seq.shape[1] - 9  # steps = frames + 8 (BOS, delay) + 1 (EOS)
        for q in range(8):
            assert torch.equal(hidden[q, 1 + q : 1 + q + num_frames], hidden[0, 1 : 1 + num_frames])
        assert not bool(hidden[:, 0].any()) and not bool((hidden & (first.tokens[k] == EOS.eos_id)).any())
    again = SentenceRows(rows, texts, durations, EOS, 3, 0.5, 0.3).rows(2, 3)  # a pure function of the row
    assert torch.equal(again.tokens, first.tokens[2:, :, : again.tokens.shape[-1]])
    assert torch.equal(again.hidden, first.hidden[2:, :, : again.hidden.shape[-1]])
    dropped = [not bool((batches.rows(r, 1).text != TEXT_PAD_ID).any()) for r in range(400)]
    assert 0.4 < np.mean(dropped) < 0.6
    shown = [batches.rows(r, 1) for r in range(100)]
    hidden_share = [float(b.hidden[0, 0].sum() / (b.tokens[0, 0] < EOS.codebook_size).sum()) for b in shown]
    assert 0.25 < np.mean(hidden_share) < 0.35
    assert not any(not bool((b.text != TEXT_PAD_ID).any()) or bool(b.hidden.any())
                   for b in (SentenceRows(rows, texts, durations, EOS, 3, 0.0).rows(r, 1) for r in range(20)))
    with pytest.raises(ValueError, match="need a delay pattern with EOS"):
        SentenceRows(rows, texts, durations, DelayPattern(), 3, 0.1)
    with pytest.raises(ValueError, match="every text needs one duration per id"):
        SentenceRows(rows, texts, [d[1:] for d in durations], EOS, 3, 0.1)


def _run(tmp_path, steps: int, store_name: str, init):
    cfg = parse_section(TtsTrainParams, {"tts_train": {
        "steps": steps, "save_steps": [3], "batch_size": 2, "lr": 3e-3, "warmup_steps": 2, "decay_steps": 50,
        "eval_every": 2, "precision": "fp32", "text_dropout": 0.3, "input_dropout": 0.3,
        "init_from": "uncond"}}, "tts_train")
    rows, texts, durations = sentences(6, seed=5)
    val_rows, val_texts, val_durations = sentences(2, seed=6)
    prov = provenance(trajectory_params(dataclasses.asdict(TTS), cfg, "cpu", "fp32"), "data-hash", "code")
    store = ResumeStore(tmp_path / store_name, prov)
    records = []
    result = train(cfg, TTS, SentenceRows(rows, texts, durations, EOS, cfg.seed, cfg.text_dropout, cfg.input_dropout),
                   delayed_sequences(val_rows, EOS), store, prov, {"hybridlm.weights": "random"}, CPU,
                   log=records.append, val_texts=val_texts, val_durations=val_durations, init=init,
                   extra_state={"text_vocab": {"version": "test"}})
    return result, records


def test_tts_training_warm_starts_logs_both_val_losses_and_resumes_bit_identically(tmp_path):
    torch.manual_seed(1)
    plain = HybridLM(DECODER)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.05 * torch.randn_like(p))
    init = (plain.state_dict(), "plain.pt")
    full, records = _run(tmp_path, 5, "full", init)
    _run(tmp_path, 3, "split", init)
    extended, _ = _run(tmp_path, 5, "split", init)
    assert extended.start_step == 3
    a, b = load_checkpoint(full.checkpoints[5]), load_checkpoint(extended.checkpoints[5])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["text_vocab"] == {"version": "test"} and a["model_config"]["text"]["layers"] == 1
    evals = [r for r in records if "val/ema_loss" in r]
    assert evals and all("val/ema_loss_no_text" in r for r in evals)
    assert all(r["train/duration_loss"] > 0 for r in records)  # the duration predictor's own loss, logged
    # The decoder started from the unconditional weights (it moved by at most a few lr-sized steps since).
    start = load_checkpoint(full.checkpoints[3])["model"]
    assert (start["embed.weight"] - plain.state_dict()["embed.weight"]).abs().max() < 0.05


def test_dvc_yaml_tts_stages_take_init_from_from_params():
    """init_from is a param (`dvc exp run -S tts_train.init_from=...`) that dvc.yaml templates into the cmd and deps
    of the stages that read the warm-start checkpoint; code deps are checked for every stage by test_contract."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("train_tts", "evaluate_tts"):
        assert "--init-from ${tts_train.init_from}" in stages[name]["cmd"]
        assert "${tts_train.init_from}" in stages[name]["deps"]
    assert {"model", "tts_model", "tts_train"} <= set(stages["train_tts"]["params"])


def test_prompts_and_checkpoints_refuse_what_cannot_be_read(tmp_path):
    from hybridlm.text import TextVocab
    from hybridlm.prompts import checkpoint_vocab, encode_prompt

    vocab = TextVocab()
    assert vocab.decode(encode_prompt(vocab, "Hello, World.", "say")) == "hello, world."
    assert vocab.decode(encode_prompt(vocab, "Room 11 & more", "say")) == "room eleven and more"
    with pytest.raises(ValueError, match=r"say: the text '\(\)  ' has nothing to read: after normalisation it is ''$"):
        encode_prompt(vocab, "()  ", "say")
    phonemes = TextVocab.for_frontend("phonemes")  # normalised text that espeak does not voice: shown as it is
    with pytest.raises(ValueError, match=r"say: the text '\(-\)' has nothing to read: after normalisation it is "
                                         r"'-', which has no phonemes"):
        encode_prompt(phonemes, "(-)", "say")
    with pytest.raises(ValueError, match=r"tts_render.texts\[1\]: characters outside the text vocabulary .*'#' x1, "
                                         r"'€' x2; spell them out as words"):
        encode_prompt(vocab, "Room #11 €€", "tts_render.texts[1]")
    plain = {"model_config": dataclasses.asdict(DECODER)}
    with pytest.raises(ValueError, match="uncond.pt: a checkpoint without text conditioning"):
        checkpoint_vocab(plain, Path("uncond.pt"))
    assert checkpoint_vocab({"model_config": dataclasses.asdict(TTS), "text_vocab": vocab.to_dict()},
                            Path("tts.pt")) == vocab


def test_say_command_errors_are_clear(tmp_path):
    import subprocess
    import sys

    hybridlm = str(Path(sys.executable).parent / "hybridlm")
    missing = subprocess.run([hybridlm, "say", "Hi.", "--checkpoint", str(tmp_path / "none.pt")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "none.pt: checkpoint not found" in missing.stderr
    bad = subprocess.run([hybridlm, "say", "Hi.", "--checkpoint", str(tmp_path / "none.pt"), "--temperature", "0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--temperature must be >= 0.001, got 0.0" in bad.stderr


def test_init_from_names_what_is_wrong_and_only_values_params_yaml_holds(tmp_path):
    """A text-to-speech checkpoint as tts_train.init_from is refused as such (issue 14: the message used to show a
    default text section "params.yaml {'layers': 0, ...}" that params.yaml does not hold); a decoder of another
    shape is refused naming only the decoder keys that differ."""
    from hybridlm.training.checkpoint import FORMAT
    from hybridlm.training.warm_start import warm_start

    tts = tmp_path / "tts.pt"
    torch.save({"format": FORMAT, "model_config": dataclasses.asdict(TTS), "step": 10}, tts)
    with pytest.raises(ValueError, match=r"tts.pt: 'tts_train.init_from' must be an unconditional checkpoint .*"
                                         r"text-conditioned \(text encoder of 1 layers") as caught:
        warm_start(tts, TTS)
    assert "params.yaml" not in str(caught.value)
    wide = tmp_path / "wide.pt"
    torch.save({"format": FORMAT, "model_config": dataclasses.asdict(dataclasses.replace(DECODER, d_model=64)),
                "step": 10}, wide)
    with pytest.raises(ValueError, match=r"wide.pt: incompatible checkpoint \(other model\): model.d_model: "
                                         r"checkpoint 64, params.yaml 32$"):
        warm_start(wide, TTS)
