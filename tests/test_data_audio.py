"""resample stage: input validation by file name, fail vs skip, 24 kHz FLAC output, manifest, parallel = serial."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from data_helpers import make_lj_folder, stage_paths, tone

from hybridlm.config import ResampleParams
from hybridlm.data.audio import (BadAudioError, ManifestEntry, read_manifest, read_wav_checked, resample_corpus,
                                 write_manifest)
from hybridlm.params import ParamError
from hybridlm.stages import resample as resample_stage

LINES = [f"LJ010-{i:04d}|text {i}|text {i}" for i in range(1, 4)]


def lj_in_cwd(tmp_path: Path, monkeypatch, seconds=(1.0, 0.7, 1.3)) -> Path:
    raw = tmp_path / "data" / "raw"
    lj = make_lj_folder(raw, seconds=list(seconds), lines=LINES)
    monkeypatch.chdir(tmp_path)
    return lj


def params(on_bad_file: str = "fail") -> dict:
    return {"resample": {"sample_rate": 24_000, "source_sample_rate": 22_050, "quality": "VHQ",
                         "on_bad_file": on_bad_file}}


BAD_WAVS = {
    "corrupt": (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk"), "unreadable audio"),
    "garbage": (lambda p: p.write_bytes(b"not audio at all"), "unreadable audio"),
    "empty": (lambda p: sf.write(str(p), np.zeros(0, np.int16), 22_050, subtype="PCM_16"), "empty"),
    "stereo": (lambda p: sf.write(str(p), np.zeros((100, 2), np.int16), 22_050, subtype="PCM_16"),
               "expected mono, got 2 channels"),
    "8-bit": (lambda p: sf.write(str(p), tone(0.1), 22_050, subtype="PCM_U8"), "expected 16-bit PCM WAV, got WAV/PCM_U8"),
    "float": (lambda p: sf.write(str(p), tone(0.1), 22_050, subtype="FLOAT"), "got WAV/FLOAT"),
    "44k": (lambda p: sf.write(str(p), tone(0.1), 44_100, subtype="PCM_16"), "expected 22050 Hz, got 44100 Hz"),
    "flac": (lambda p: sf.write(str(p), tone(0.1), 22_050, format="FLAC", subtype="PCM_16"), "got FLAC/PCM_16"),
    "missing": (lambda p: p.unlink(), "file is missing"),
    # 0.1 s = 2205 samples = 4410 data bytes after a 44-byte header; cut the file to half its size
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:2227]),
                  "truncated: its data chunk declares 4410 bytes, the file holds 2183"),
}


@pytest.mark.parametrize("kind", sorted(BAD_WAVS))
def test_bad_wav_is_reported_by_name(tmp_path, kind):
    path = tmp_path / "LJ010-0002.wav"
    sf.write(str(path), tone(0.1), 22_050, subtype="PCM_16")
    make, message = BAD_WAVS[kind]
    make(path)
    with pytest.raises(BadAudioError, match=f"LJ010-0002.wav: .*{message}"):
        read_wav_checked(path, 22_050)


def test_fail_policy_lists_every_bad_file_and_writes_nothing(tmp_path, monkeypatch):
    lj = lj_in_cwd(tmp_path, monkeypatch)
    BAD_WAVS["stereo"][0](lj / "wavs" / "LJ010-0001.wav")
    BAD_WAVS["8-bit"][0](lj / "wavs" / "LJ010-0003.wav")
    with pytest.raises(BadAudioError, match=r"2 bad input file\(s\).*LJ010-0001.wav: expected mono.*"
                                            r"LJ010-0003.wav: expected 16-bit.*on_bad_file: skip"):
        resample_stage.run(params("fail"), workers=1, **stage_paths("resample"))
    assert not Path("data/resampled").exists() and not Path("metrics/resample.json").exists()


def test_skip_policy_counts_and_names_skips(tmp_path, monkeypatch, capsys):
    lj = lj_in_cwd(tmp_path, monkeypatch)
    BAD_WAVS["empty"][0](lj / "wavs" / "LJ010-0002.wav")
    resample_stage.run(params("skip"), workers=1, **stage_paths("resample"))
    metrics = json.loads(Path("metrics/resample.json").read_text())
    assert metrics["clips_in"] == 3 and metrics["clips_out"] == 2 and metrics["skipped"] == 1
    assert metrics["skipped_files"] == {"LJ010-0002.wav": "LJ010-0002.wav: empty (0 samples)"}
    assert "SKIPPED LJ010-0002.wav" in capsys.readouterr().out
    assert [e.id for e in read_manifest(Path("data/resampled/manifest.tsv"))] == ["LJ010-0001", "LJ010-0003"]
    assert not Path("data/resampled/wavs/LJ010-0002.flac").exists()


def test_all_bad_is_an_error_even_when_skipping(tmp_path, monkeypatch):
    lj = lj_in_cwd(tmp_path, monkeypatch)
    for wav in (lj / "wavs").iterdir():
        BAD_WAVS["garbage"][0](wav)
    with pytest.raises(BadAudioError, match="no usable clips"):
        resample_stage.run(params("skip"), workers=1, **stage_paths("resample"))


def test_resampled_flac_manifest_and_parallel_equals_serial(tmp_path, monkeypatch):
    lj = lj_in_cwd(tmp_path, monkeypatch, seconds=(1.0, 0.7, 1.3))
    resample_stage.run(params(), workers=2, **stage_paths("resample"))
    manifest = read_manifest(Path("data/resampled/manifest.tsv"))
    assert [e.id for e in manifest] == ["LJ010-0001", "LJ010-0002", "LJ010-0003"]
    assert [e.samples for e in manifest] == [24_000, round(0.7 * 24_000), round(1.3 * 24_000)]
    assert manifest[1].seconds == pytest.approx(0.7, abs=1e-6)
    info = sf.info("data/resampled/wavs/LJ010-0001.flac")
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 24_000, 1)
    # the 220 Hz tone survives resampling (amplitude and pitch), no aliasing garbage
    y, _ = sf.read("data/resampled/wavs/LJ010-0001.flac", dtype="float32")
    assert np.max(np.abs(y[2000:-2000])) == pytest.approx(0.3, abs=0.01)
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) * 24_000 / len(y) == pytest.approx(220.0, abs=1.5)
    parallel = {p.name: p.read_bytes() for p in Path("data/resampled/wavs").iterdir()}
    serial = resample_corpus([e.id for e in manifest], lj / "wavs", tmp_path / "serial", ResampleParams(), workers=1)
    assert serial.entries == manifest
    assert {p.name: p.read_bytes() for p in (tmp_path / "serial").iterdir()} == parallel
    assert json.loads(Path("metrics/resample.json").read_text())["skipped"] == 0


def test_manifest_roundtrip_and_errors(tmp_path):
    entries = [ManifestEntry("LJ001-0001", 1.5, 36_000), ManifestEntry("LJ001-0002", 0.25, 6_000)]
    write_manifest(tmp_path / "m.tsv", entries)
    assert read_manifest(tmp_path / "m.tsv") == entries
    (tmp_path / "bad.tsv").write_text("id\tseconds\tsamples\nLJ001-0001\t1.5\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected id<TAB>seconds<TAB>samples"):
        read_manifest(tmp_path / "bad.tsv")
    with pytest.raises(FileNotFoundError, match="run the resample stage first"):
        read_manifest(tmp_path / "none.tsv")


@pytest.mark.parametrize("section, key", [
    ({"on_bad_file": "ignore"}, "resample.on_bad_file"),
    ({"sample_rate": 100}, "resample.sample_rate"),
    ({"sample_rate": 24000.0}, "resample.sample_rate"),
    ({"quality": "LQ"}, "resample.quality"),
    ({"workers": 2}, "resample.workers"),
])
def test_resample_params_errors_name_the_key(tmp_path, monkeypatch, section, key):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamError, match=f"'{key}'"):
        resample_stage.run({"resample": section}, workers=1, **stage_paths("resample"))
