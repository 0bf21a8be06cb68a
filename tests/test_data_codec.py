"""EnCodec wrapper: shapes, seeded random weights with spread codes, batching by padding, offline pretrained error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import corpus_speech

from hybridlm.data.codec import encode_pieces, load_codec


@pytest.fixture(scope="module")
def codec():
    return load_codec("random", "facebook/encodec_24khz", "cpu")


def test_random_codec_is_seeded_and_loud(codec, capsys):
    state = torch.get_rng_state()
    again = load_codec("random", "facebook/encodec_24khz", "cpu")
    assert "RANDOM weights" in capsys.readouterr().err
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    for (name, a), b in zip(codec.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert (codec.sample_rate, codec.frame_rate, codec.hop_length, codec.codebook_size) == (24_000, 75, 320, 1024)
    assert codec.num_codebooks(6.0) == 8 and codec.num_codebooks(1.5) == 2


def test_encode_decode_shapes_and_code_spread(codec):
    wav = torch.from_numpy(np.stack([corpus_speech(1.0, 1), corpus_speech(1.0, 2)]))[:, None, :24_000 - 5]
    codes = codec.encode(wav, 6.0)
    assert codes.dtype == torch.long and codes.shape == (2, 8, 75)  # ceil(23,995 / 320)
    assert 0 <= int(codes.min()) and int(codes.max()) < 1024
    for q in range(8):  # seeded codebooks: codes are spread, not all 0 as with transformers' zero init
        assert len(torch.unique(codes[:, q])) > 10
    audio = codec.decode(codes)
    assert audio.shape == (2, 75 * 320) and audio.dtype == torch.float32 and torch.isfinite(audio).all()
    with pytest.raises(ValueError, match="bandwidth 5.0 kbps is not one of"):
        codec.encode(wav, 5.0)
    with pytest.raises(ValueError, match=r"expected a waveform batch \[B, 1, samples\]"):
        codec.encode(wav[:, 0], 6.0)


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def test_random_codec_decodes_different_codes_to_different_audio(codec):
    # Before calibration, decodes of any two code sequences differed by under 1e-5 RMS at about 0.07 RMS: a render
    # reusing one code sequence for every sample would have gone unnoticed. Now two different sequences decode to
    # audio about as different as two unrelated signals (difference RMS ~ sqrt(2) x signal RMS); we require more
    # than half the signal RMS.
    wav = torch.from_numpy(np.stack([corpus_speech(1.0, 1), corpus_speech(1.0, 2)]))[:, None]
    encoded = codec.encode(wav, 6.0)
    random_codes = torch.randint(0, 1024, (1, 8, 75), generator=torch.Generator().manual_seed(3))
    audio = codec.decode(torch.cat([encoded, random_codes, torch.zeros_like(random_codes)]))
    for i in range(4):
        assert 0.03 < rms(audio[i]) < 0.3
        for j in range(i):
            assert rms(audio[i] - audio[j]) > 0.5 * max(rms(audio[i]), rms(audio[j])), (i, j)
    assert torch.allclose(codec.decode(encoded[:1]), audio[:1], atol=1e-4)  # batching does not mix samples


def test_encode_pieces_trim_and_do_not_depend_on_neighbours(codec):
    pieces = [("a", 0, corpus_speech(0.5, 3)), ("a", 1, corpus_speech(0.21, 4)), ("b", 0, corpus_speech(0.7, 5))]
    out = list(encode_pieces(codec, pieces, 6.0))
    assert [(c, i, x.shape) for c, i, x in out] == [("a", 0, (8, 38)), ("a", 1, (8, 16)), ("b", 0, (8, 53))]
    assert all(x.dtype == np.uint16 for _, _, x in out)
    alone = list(encode_pieces(codec, pieces[2:], 6.0))  # each piece is encoded alone: its codes are its own
    assert np.array_equal(alone[0][2], out[2][2])


def test_encode_pieces_pin_one_thread_and_restore_it(codec, monkeypatch):
    # 1 vs 2 intra-op threads changed 141 of 24,432 codes (docs/_drafts/ddp.md): every encode runs on one thread
    seen, encode = [], codec.encode
    monkeypatch.setattr(codec, "encode", lambda wav, bw: seen.append(torch.get_num_threads()) or encode(wav, bw))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        list(encode_pieces(codec, [("a", 0, corpus_speech(0.3, 1)), ("a", 1, corpus_speech(0.2, 2))], 6.0))
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_pretrained_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"tokenize.model_id: could not load pretrained EnCodec weights "
                                         r"'hybridlm-test/no-such-model'.*tokenize.weights: random"):
        load_codec("pretrained", "hybridlm-test/no-such-model", "cpu")


def test_device_errors():
    with pytest.raises(ValueError, match=r"'--device' must be auto, cpu, cuda or cuda:K .*got 'tpu'"):
        load_codec("random", "x", "tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no such CUDA device"):
            load_codec("random", "x", "cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_codes_match_cpu(codec):
    gpu = load_codec("random", "facebook/encodec_24khz", "cuda")
    wav = torch.from_numpy(corpus_speech(1.0, 6))[None, None]
    assert np.mean((gpu.encode(wav, 6.0).cpu() == codec.encode(wav, 6.0)).numpy()) > 0.9


@pytest.mark.parametrize("section, key", [
    ({"weights": "trained"}, "tokenize.weights"),
    ({"bandwidth": 5.0}, "tokenize.bandwidth"),
    ({"bandwidth": "6"}, "tokenize.bandwidth"),
    ({"chunk_seconds": 8.001}, "tokenize.chunk_seconds"),
    ({"chunk_seconds": 0}, "tokenize.chunk_seconds"),
    ({"min_tail_seconds": 9.0}, "tokenize.min_tail_seconds"),
    ({"batch_size": 16}, "tokenize.batch_size"),  # removed: chunks are encoded one at a time
    ({"shard_size": 10}, "tokenize.shard_size"),
])
def test_tokenize_params_fail_before_any_work(tmp_path, monkeypatch, capsys, section, key):
    from data_helpers import stage_paths

    from hybridlm.params import ParamError
    from hybridlm.stages import tokenize as tokenize_stage

    monkeypatch.chdir(tmp_path)  # no manifest here: a params error must come first
    with pytest.raises(ParamError, match=f"'{key}'"):
        tokenize_stage.run({"tokenize": {"weights": "random", **section}}, device="cpu", **stage_paths("tokenize"))
    assert "RANDOM" not in capsys.readouterr().err  # the codec was never built
