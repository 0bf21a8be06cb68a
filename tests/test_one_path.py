"""One path for text and no text (issue 16): render, render_tts and `hybridlm say` decode through the one codec
decode, which always runs under the deterministic kernels, so their output bytes do not depend on the thread count
(render_tts and `say` used to decode without them); and the EMA weights are merged in one place, the same numbers
for evaluate/render/say, the text-to-speech warm start and the in-training val loss (the warm start used to cast).

A tiny random EnCodec stands in for the 24 kHz one (which takes about a minute to build on a busy CPU); its
decoder's bytes already differ between 1 and 2 threads outside the deterministic kernels once a decode holds 16+
frames (1 x 20 frames, or a batch of 2 x 8; checked in
:func:`test_the_tiny_codec_is_thread_sensitive_outside_the_deterministic_kernels`), so the drift tests can fail.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridlm.config import RenderParams, TtsRenderParams
from hybridlm.data import codec as codec_module
from hybridlm.data.codec import Codec
from hybridlm.data.shards import Chunk
from hybridlm.model import HybridLM, ModelConfig, TextConfig
from hybridlm.results.page import render_page
from hybridlm.results.readings import Readings
from hybridlm.results.trained import Trained
from hybridlm.say import say
from hybridlm.text import TextVocab
from hybridlm.training.checkpoint import FORMAT, ema_model, load_checkpoint
from hybridlm.training.ema import EMA
from hybridlm.training.warm_start import warm_start

DECODER = ModelConfig(schedule="LA", d_model=32, d_ff=64, n_heads=2, n_kv_heads=1, gdn_key_dim=8, gdn_value_dim=16,
                      context=32, codebook_size=64)
TTS = dataclasses.replace(DECODER, text=TextConfig(layers=1, d_model=16, n_heads=2, d_ff=32, vocab_size=40,
                                                   pointer_early=1))
CPU = torch.device("cpu")
META = {"hybridlm.weights": "random", "hybridlm.codec": "tiny-encodec", "hybridlm.frame_rate": 75}


@pytest.fixture(scope="module")
def tiny_codec() -> Codec:
    from transformers import EncodecConfig, EncodecModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = EncodecModel(EncodecConfig(num_filters=4, hidden_size=16, codebook_size=64)).eval()
        with torch.no_grad():  # transformers leaves the codebooks at zero: every code would decode alike
            for layer in model.quantizer.layers:
                layer.codebook.embed.normal_()
    return Codec(model, "random", META["hybridlm.codec"], CPU)


@pytest.fixture
def codec(tiny_codec, monkeypatch) -> Codec:
    """Every checkpoint's codec (hybridlm.data.codec.shard_codec) is the tiny one."""
    monkeypatch.setattr(codec_module, "load_codec", lambda weights, model_id, device, warn=True: tiny_codec)
    return tiny_codec


def write_checkpoint(path: Path, config: ModelConfig, step: int, seed: int) -> dict:
    """A checkpoint file as the training loop writes one (the keys readers use), EMA weights apart from the raw."""
    torch.manual_seed(seed)
    model = HybridLM(config)
    shadow = {name: p.detach().float() + 0.01 * torch.randn_like(p) for name, p in model.named_parameters()}
    state = {"format": FORMAT, "step": step, "model": model.state_dict(),
             "ema": {"decay": 0.99, "updates": step, "shadow": shadow}, "model_config": dataclasses.asdict(config),
             "codec": META, "history": [{"step": s, "train/loss": 5.0 - s / 10, "train/lr": 1e-3,
                                          "train/grad_norm": 1.0} for s in range(1, step + 1)]}
    if config.text is not None and config.text.layers:
        state["text_vocab"] = TextVocab().to_dict()
    torch.save(state, path)
    return state


def entry(loss: float) -> dict:
    return {"loss": loss, "ppl": float(np.exp(loss)), "targets": 100,
            "per_codebook": {f"cb{q}": loss for q in range(8)}}


def files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def under_threads(threads: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def test_the_tiny_codec_is_thread_sensitive_outside_the_deterministic_kernels(tiny_codec):
    """The control: without the deterministic kernels the decoder's bytes follow the thread count, so a decode
    that skipped them would fail the tests below."""
    codes = torch.randint(0, 64, (1, 8, 20), generator=torch.Generator().manual_seed(0))

    def raw() -> bytes:
        with torch.inference_mode():
            return tiny_codec.model.decode(codes[None], [None], return_dict=True).audio_values.numpy().tobytes()

    assert under_threads(1, raw) != under_threads(2, raw)
    assert under_threads(1, lambda: tiny_codec.decode(codes).numpy().tobytes()) == \
        under_threads(2, lambda: tiny_codec.decode(codes).numpy().tobytes())


def test_render_and_render_tts_write_the_same_bytes_under_1_and_2_threads(tmp_path, codec):
    plain, tts = tmp_path / "plain", tmp_path / "tts"
    plain.mkdir(), tts.mkdir()
    for step in (1, 2):
        write_checkpoint(plain / f"step-{step:06d}.pt", DECODER, step, seed=step)
        write_checkpoint(tts / f"step-{step:06d}.pt", TTS, step, seed=10 + step)
    (tmp_path / "eval.json").write_text(json.dumps({f"step_{s}": {"step": s, **entry(4.0 - s)} for s in (1, 2)}))
    (tmp_path / "eval_tts.json").write_text(json.dumps({f"step_{s}": {
        "step": s, "with_text": entry(3.0 - s), "without_text": entry(3.5 - s), "conditioning_gap": 0.5}
        for s in (1, 2)}))
    rng = np.random.default_rng(0)
    val = [Chunk(f"clip{i}", 0, rng.integers(0, 64, (8, 20)).astype(np.uint16), text) for i, text in
           enumerate(["a cat.", "the dog ran."])]
    render_cfg = RenderParams(samples=2, seconds=0.1, device="cpu", precision="fp32")
    tts_cfg = TtsRenderParams(val_sentences=2, page_val_sentences=1, texts=["hello."], max_seconds=0.3,
                              device="cpu", precision="fp32")

    def pages(threads: int) -> tuple[dict, dict, dict]:
        out = tmp_path / f"threads-{threads}"
        under_threads(threads, lambda: render_page(
            Trained(DECODER, plain, {1: plain / "step-000001.pt", 2: plain / "step-000002.pt"}, CPU, "fp32"),
            render_cfg, out / "samples", tmp_path / "eval.json", differences=["a test run"]))
        reader = Readings(tts_cfg, val, 1, None, "none", None)
        scores = under_threads(threads, lambda: render_page(
            Trained(TTS, tts, {1: tts / "step-000001.pt", 2: tts / "step-000002.pt"}, CPU, "fp32"),
            tts_cfg, out / "tts_samples", tmp_path / "eval_tts.json", reader=reader))
        return files(out / "samples"), files(out / "tts_samples"), scores

    one, two = pages(1), pages(2)
    assert len(one[0]) == 2 * 2 * 2 + 1 + len([p for p in one[0] if p.startswith("curves/")])  # wav+png, page
    assert any(p.endswith(".align.png") for p in one[1]) and "codec-resynthesis/val-1.wav" in one[1]
    assert one[0] == two[0]  # render
    assert one[1] == two[1] and one[2] == two[2]  # render_tts: the page and the ASR metrics of its WAVs


def test_say_writes_the_same_bytes_under_1_and_2_threads(tmp_path, codec):
    write_checkpoint(tmp_path / "tts.pt", TTS, 3, seed=5)

    def spoken(threads: int) -> bytes:
        out = tmp_path / f"say-{threads}.wav"
        under_threads(threads, lambda: say("The cat sat.", tmp_path / "tts.pt", out, max_seconds=1.0, device="cpu"))
        return out.read_bytes()

    assert spoken(1) == spoken(2)


def test_ema_weights_are_merged_once_the_same_numbers_on_every_path(tmp_path):
    """ema_model (evaluate, render, say), the warm start and the in-training EMA model hold exactly the shadow."""
    state = write_checkpoint(tmp_path / "step-000004.pt", DECODER, 4, seed=3)
    shadow = state["ema"]["shadow"]
    loaded = ema_model(load_checkpoint(tmp_path / "step-000004.pt"), DECODER, CPU).state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in shadow.items())
    assert not torch.equal(loaded["embed.weight"], state["model"]["embed.weight"])  # the shadow, not the raw weights
    warm, _ = warm_start(tmp_path / "step-000004.pt", TTS)
    assert warm.keys() == loaded.keys() and all(torch.equal(warm[k], loaded[k]) for k in loaded)
    model = HybridLM(DECODER)
    model.load_state_dict(state["model"])
    ema = EMA(model, decay=0.99)
    ema.load_state_dict(state["ema"])
    in_training = HybridLM(DECODER)
    in_training.load_state_dict(ema.averaged_state_dict(model))
    assert all(torch.equal(in_training.state_dict()[k], loaded[k]) for k in loaded)
