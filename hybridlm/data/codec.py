"""EnCodec 24 kHz through ``transformers.EncodecModel``: encode waveforms to codes and decode codes to waveforms.

Why transformers: the original ``encodec`` package cannot be imported beside current torch (it needs torchaudio
APIs that are gone), while transformers ships a maintained port with the same weights (``facebook/encodec_24khz``).

Why a "random" option: the pretrained weights need internet. For offline tests and the demo the codec can be built
from the default config with random weights. transformers initialises the RVQ codebooks to *zeros* (they are
meant to be loaded), which would map every frame to code 0; so the random codec also fills each codebook level
with residual vectors of a fixed calibration signal (a data-driven init with no iterations, as k-means++ seeds
codebooks), giving diverse codes. Its random decoder is calibrated too (``_calibrate_decoder``): as initialised,
its biases swamp the small code embeddings, so every code sequence decoded to nearly the same audio and a render
bug (one code sequence reused for every sample) could not be heard or measured. Everything is seeded, so tokenize
and render build the same random codec. It is not a real codec: audio decoded from it is noise-like. A loud
warning is printed and shards record it.

Shapes checked against transformers 5.23: ``encode(x [B, 1, S], bandwidth=6.0).audio_codes`` is
``[1, B, 8, ceil(S / 320)]`` for the 24 kHz model (no chunking: ``chunk_length_s`` is None), and
``decode(audio_codes, audio_scales)`` returns ``[B, 1, frames * 320]``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch

from hybridlm.config import resolve_device

RANDOM_SEED = 20_240_624  # fixed: the random codec must be identical in tokenize and render
CALIBRATION_SECONDS = 3.0

WARNING = """
************************************************************************************************
* WARNING: EnCodec with RANDOM weights (tokenize.weights: random).                              *
* Tokens are NOT real EnCodec codes and decoded audio is not speech. Use only for offline      *
* tests and the demo; shards record hybridlm.weights = "random".                                *
************************************************************************************************
"""


class Codec:
    """A loaded EnCodec model on a device, with the contract's tensor shapes."""

    def __init__(self, model, weights: str, model_id: str, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.weights = weights
        self.model_id = model_id
        self.device = device
        config = model.config
        self.sample_rate: int = int(config.sampling_rate)
        self.hop_length: int = int(config.hop_length)
        self.frame_rate: int = int(config.frame_rate)
        self.codebook_size: int = int(config.codebook_size)
        self.bandwidths: tuple[float, ...] = tuple(float(b) for b in config.target_bandwidths)

    def describe(self) -> str:
        """The codec in words, for a results page's caption."""
        return f"codec {self.model_id} with {self.weights} weights at {self.sample_rate} Hz"

    def num_codebooks(self, bandwidth: float) -> int:
        self._check_bandwidth(bandwidth)
        return int(self.model.quantizer.get_num_quantizers_for_bandwidth(bandwidth))

    def _check_bandwidth(self, bandwidth: float) -> None:
        if bandwidth not in self.bandwidths:
            raise ValueError(f"bandwidth {bandwidth} kbps is not one of this codec's {list(self.bandwidths)}")

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, bandwidth: float) -> torch.Tensor:
        """``wav`` float32 [B, 1, samples] at ``sample_rate`` -> codes LongTensor [B, n_q, ceil(samples / hop)]."""
        self._check_bandwidth(bandwidth)
        if wav.ndim != 3 or wav.shape[1] != 1:
            raise ValueError(f"expected a waveform batch [B, 1, samples], got {tuple(wav.shape)}")
        out = self.model.encode(wav.to(self.device, torch.float32), bandwidth=bandwidth, return_dict=True)
        codes = out.audio_codes
        if codes.shape[0] != 1:
            raise ValueError(f"expected one encoded frame (unchunked 24 kHz model), got {codes.shape[0]}")
        return codes[0].long()

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, n_q, frames] -> float32 waveform [B, frames * hop], always under :func:`deterministic_kernels`:
        the one decode of render, render_tts and `hybridlm say`, so their audio bytes do not depend on the thread
        count (a caller that forgot the context once made render_tts and `say` differ in the last bit)."""
        if codes.ndim != 3:
            raise ValueError(f"expected codes [B, n_q, frames], got {tuple(codes.shape)}")
        with deterministic_kernels():
            out = self.model.decode(codes.to(self.device).long()[None], [None], return_dict=True)
        return out.audio_values[:, 0, : codes.shape[-1] * self.hop_length].float()


def load_codec(weights: Literal["pretrained", "random"], model_id: str, device: str | torch.device = "auto",
               warn: bool = True) -> Codec:
    """Load the pretrained model (``from_pretrained(model_id)``: needs internet or the HF cache) or build the seeded
    random one (prints a loud warning unless ``warn`` is False: tokenize workers leave it to their parent)."""
    from transformers import EncodecConfig, EncodecModel

    dev = device if isinstance(device, torch.device) else resolve_device(device, "--device")
    if weights == "pretrained":
        try:
            model = EncodecModel.from_pretrained(model_id)
        except Exception as exc:  # network, missing cache, bad id: all mean "cannot get the weights"
            raise ValueError(
                f"tokenize.model_id: could not load pretrained EnCodec weights {model_id!r} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). This needs internet "
                f"access or a Hugging Face cache holding the model; offline, set tokenize.weights: random "
                f"(tests/demo only)"
            ) from exc
        return Codec(model, "pretrained", model_id, dev)
    if weights != "random":
        raise ValueError(f"tokenize.weights must be 'pretrained' or 'random', got {weights!r}")
    if warn:
        print(WARNING, file=sys.stderr, flush=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = EncodecModel(EncodecConfig()).eval()
        _seed_codebooks(model)
        _calibrate_decoder(model)
    return Codec(model, "random", model_id, dev)



def shard_codec(meta: dict, device: torch.device) -> Codec:
    """The codec a set of token shards was made with, from their metadata (``hybridlm.codec``, ``hybridlm.weights``;
    every checkpoint keeps its shards' metadata): what decodes a model's codes (render, render_tts, `say`)."""
    return load_codec(meta["hybridlm.weights"], meta["hybridlm.codec"], device)

@torch.inference_mode()
def _seed_codebooks(model) -> None:
    """Fill the (zero-initialised) RVQ codebooks level by level with residuals of a calibration signal plus a little
    noise, so that random-weight codes are spread over the codebook instead of all 0. Uses the global RNG that the
    caller has seeded."""
    config = model.config
    samples = int(CALIBRATION_SECONDS * config.sampling_rate)
    t = torch.arange(samples) / config.sampling_rate
    pitch = 110.0 + 40.0 * torch.sin(2 * torch.pi * 0.7 * t)
    phase = 2 * torch.pi * torch.cumsum(pitch, 0) / config.sampling_rate
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 30))
    envelope = torch.sin(torch.pi * 3.0 * t).abs()
    signal = 0.3 * envelope * voiced + 0.02 * torch.randn(samples)
    residual = model.encoder(signal.view(1, 1, -1))[0].T  # [frames, dim]
    for layer in model.quantizer.layers:
        codebook = layer.codebook
        rows = torch.randint(0, residual.shape[0], (codebook.embed.shape[0],))
        spread = residual.std(dim=0, keepdim=True)
        embed = residual[rows] + 0.1 * spread * torch.randn(codebook.embed.shape)
        codebook.embed.copy_(embed)
        codebook.embed_avg.copy_(embed)
        residual = residual - codebook.decode(codebook.encode(residual[None]))[0]


DECODED_RMS = 0.1  # level of the random codec's decoded audio: clearly audible, rarely clipped


@torch.inference_mode()
def _calibrate_decoder(model) -> None:
    """Rescale the random decoder's convolutions, in forward order, so each one's output is centred per channel and
    has unit spread (the last: ``DECODED_RMS``) on a batch of random code sequences; an LSUV-style init.

    Why: all codebook vectors are residuals of one calibration signal, so they share a large common part and differ
    by a small one; with PyTorch's random biases on top, the decoded audio hardly depended on the codes (the decodes
    of all-zero and of random codes differed by under 1e-5 RMS). Centring removes what every code sequence shares
    and the scaling amplifies what differs, so different codes decode to clearly different audio. Only the decoder
    changes: the encoder and codebooks, hence the tokens, are untouched. A generator of its own keeps it
    deterministic and leaves the global RNG alone. Conv layers are linear, so each layer's new output is computed
    from its old one inside the hook, and one forward pass calibrates them all.
    """
    from transformers.models.encodec.modeling_encodec import EncodecConv1d, EncodecConvTranspose1d

    generator = torch.Generator().manual_seed(RANDOM_SEED)
    codes = torch.randint(0, model.config.codebook_size, (len(model.quantizer.layers), 2, 25), generator=generator)
    convs = [m for m in model.decoder.modules() if isinstance(m, (EncodecConv1d, EncodecConvTranspose1d))]

    def rescale(module, inputs, out):
        conv = module.conv
        out = out - conv.bias.view(1, -1, 1)  # the weight's part only
        mean = out.mean(dim=(0, 2), keepdim=True)
        gain = (DECODED_RMS if module is convs[-1] else 1.0) / (out - mean).std()
        conv.parametrizations.weight.original0.mul_(gain)  # weight norm: the magnitude g scales the weight
        conv.bias.copy_(-mean.flatten() * gain)
        return (out - mean) * gain

    hooks = [conv.register_forward_hook(rescale) for conv in convs]
    try:
        with deterministic_kernels():  # the gains must not depend on the machine's thread count
            model.decoder(model.quantizer.decode(codes))
    finally:
        for hook in hooks:
            hook.remove()


@contextmanager
def deterministic_kernels() -> Iterator[None]:
    """One intra-op thread and deterministic cuDNN while inside: what makes a chunk's codes reproducible.

    Why: a conv or LSTM sums in an order that depends on how the work is split: across threads on a CPU, across
    algorithms on cuDNN. Measured on the random codec (docs/_drafts/ddp.md), encoding the same chunks with 1 vs 2
    threads changed 141 of 24,432 codes; repeating with the same setting changed none. The thread count is
    restored on exit so a caller's own work is not slowed.
    """
    threads = torch.get_num_threads()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.set_num_threads(1)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def encode_pieces(codec: Codec, pieces: Iterable[tuple[str, int, np.ndarray]],
                  bandwidth: float) -> Iterator[tuple[str, int, np.ndarray]]:
    """Encode ``(clip_id, chunk_index, wav float32 [samples])`` one piece at a time under
    :func:`deterministic_kernels`; yield ``(clip_id, chunk_index, codes uint16 numpy [n_q, ceil(samples / hop)])``
    in input order.

    Why one at a time: a piece's codes must not depend on what it is encoded with. Batched, they do: 86 of 24,432
    codes differed between batch 1 and batch 4 on 7 clips. Not because padding leaks (zero-padding a piece alone to
    the batch width left the encoder output bit-identical: the 24 kHz encoder is causal), but because the batched
    conv/LSTM kernels sum in another order (encoder outputs differ by ~7e-8), and the residual quantizer turns a
    near-tie into another code, which changes the residual of every later codebook. Parallelism comes from
    processes instead (hybridlm.data.encoding). Each piece is zero-padded to whole hops; the codes keep every frame.
    """
    with deterministic_kernels():
        for clip_id, index, samples in pieces:
            frames = -(-len(samples) // codec.hop_length)
            wav = torch.zeros(1, 1, frames * codec.hop_length)
            wav[0, 0, : len(samples)] = torch.from_numpy(np.asarray(samples, dtype=np.float32))
            codes = codec.encode(wav, bandwidth)[0].cpu()
            if codes.shape[-1] != frames:
                raise ValueError(f"codec returned {codes.shape[-1]} frames for {frames} hops of {clip_id}#{index}")
            if int(codes.max()) >= codec.codebook_size or int(codes.min()) < 0:
                raise ValueError(f"codec produced codes outside [0, {codec.codebook_size})")
            yield clip_id, index, codes.numpy().astype(np.uint16)
