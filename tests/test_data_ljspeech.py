"""download stage: metadata parsing, sources, checksum, resumable HTTP download, safe extraction, synthetic corpus."""

from __future__ import annotations

import hashlib
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from data_helpers import TRICKY_LINES, make_archive, make_lj_folder, stage_paths

from hybridlm.config import SyntheticParams
from hybridlm.data import ljspeech
from hybridlm.data.ljspeech import (Source, download, parse_metadata, resolve_source, safe_extract,
                                    validate_layout)
from hybridlm.data.synthetic import generate_corpus
from hybridlm.params import ParamError
from hybridlm.stages import download as download_stage

OUT = Path("data/raw/LJSpeech-1.1")


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def params_for(source: str, sha256: str = "", **synthetic) -> dict:
    return {"data": {"source": source, "sha256": sha256, "synthetic": {"clips": 3, **synthetic}}}


# ----------------------------------------------------------------------------------------------------- metadata
def test_parser_keeps_quotes_pound_and_accents(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_text("\n".join(TRICKY_LINES) + "\n", encoding="utf-8")
    rows = parse_metadata(path)
    assert [r.id for r in rows] == ["LJ001-0001", "LJ001-0002", "LJ001-0003"]
    assert rows[0].text == 'He said, "the type was worn," and left.'
    assert "£5" in rows[1].text and "café" in rows[1].text and "Besançon" in rows[1].normalized
    assert rows[2].text == '"Quote. Zürich, naïve, coöperate'


@pytest.mark.parametrize("bad, reason", [
    ("LJ001-0002|only two fields", "expected 3 '|'-separated fields"),
    ("LJ001-0002|a|b|c", "got 4"),
    ("|a|b", "invalid clip id"),
    ("LJ001-0001|dup|dup", "duplicate clip id"),
])
def test_parser_names_file_and_line(tmp_path, bad, reason):
    path = tmp_path / "metadata.csv"
    path.write_text(TRICKY_LINES[0] + "\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"metadata.csv:2: .*{reason}"):
        parse_metadata(path)


def test_parser_rejects_non_utf8(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_bytes(TRICKY_LINES[0].encode() + b"\nLJ001-0002|\xa35|x\n")
    with pytest.raises(ValueError, match="metadata.csv:2: not valid UTF-8"):
        parse_metadata(path)


def test_parser_drops_a_utf8_byte_order_mark(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(TRICKY_LINES).encode() + b"\n")
    assert [r.id for r in parse_metadata(path)] == ["LJ001-0001", "LJ001-0002", "LJ001-0003"]
    lj = make_lj_folder(tmp_path / "src")
    (lj / "metadata.csv").write_bytes(b"\xef\xbb\xbf" + (lj / "metadata.csv").read_bytes())
    assert len(validate_layout(lj)) == 3  # the first wav is found under its real id


def test_parser_on_the_real_metadata(shared):
    metadata = shared("ljspeech-meta/metadata.csv")
    rows = parse_metadata(metadata)
    assert len(rows) == 13_100
    assert rows[0].id == "LJ001-0001" and rows[-1].id == "LJ050-0278"
    with_quotes = [r for r in rows if '"' in r.text or '"' in r.normalized]
    assert len(with_quotes) == 523  # every line with a raw quote kept its own three fields
    assert any("£" in r.text for r in rows)
    assert any(any(ord(ch) > 127 and ch != "£" for ch in r.text) for r in rows)
    # round trip: rebuilding the lines gives back the file byte for byte
    rebuilt = "".join(f"{r.id}|{r.text}|{r.normalized}\n" for r in rows).encode("utf-8")
    assert rebuilt == metadata.read_bytes()


# ----------------------------------------------------------------------------------------------------- sources
def test_resolve_source_kinds(tmp_path):
    lj = make_lj_folder(tmp_path)
    archive = make_archive(tmp_path / "lj.tar.bz2", lj)
    assert resolve_source("synthetic") == Source("synthetic", "")
    assert resolve_source("https://example.org/LJSpeech-1.1.tar.bz2").kind == "url"
    assert resolve_source(str(archive)) == Source("archive", str(archive))
    assert resolve_source(str(tmp_path)) == Source("folder", str(lj))  # the folder holding LJSpeech-1.1/
    assert resolve_source(str(lj)) == Source("folder", str(lj))
    with pytest.raises(FileNotFoundError, match="data.source"):
        resolve_source(str(tmp_path / "missing.tar.bz2"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a tar archive"):
        resolve_source(str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        resolve_source("ftp://example.org/lj.tar.bz2")


def test_download_stage_from_local_tar_bz2(tmp_path, monkeypatch):
    lj = make_lj_folder(tmp_path / "src", seconds=[1.0, 1.5, 0.5])
    archive = make_archive(tmp_path / "LJSpeech-1.1.tar.bz2", lj)
    monkeypatch.chdir(tmp_path)
    download_stage.run(params_for(str(archive), sha(archive)), **stage_paths("download"))
    assert sorted(p.name for p in OUT.iterdir()) == ["metadata.csv", "wavs"]
    assert (OUT / "metadata.csv").read_bytes() == (lj / "metadata.csv").read_bytes()
    for wav in (lj / "wavs").iterdir():
        assert (OUT / "wavs" / wav.name).read_bytes() == wav.read_bytes()
    assert [r.text for r in validate_layout(OUT)] == [line.split("|")[1] for line in TRICKY_LINES]
    assert [p.name for p in Path("data/raw").iterdir()] == ["LJSpeech-1.1"]  # no temp leftovers
    assert archive.is_file()


def test_download_warns_of_empty_transcripts_that_the_sentences_stage_will_refuse(tmp_path, monkeypatch, capsys):
    """An `id||` line passes download, resample, tokenize and split (the unconditional path needs no text): say so
    at download, with the count and the first ids, rather than only when the sentences stage stops."""
    empty = [f"LJ900-{i:04d}||" for i in range(1, 8)]
    make_lj_folder(tmp_path / "src", lines=[TRICKY_LINES[0], *empty, "LJ900-0009| | "])
    monkeypatch.chdir(tmp_path)
    download_stage.run(params_for(str(tmp_path / "src")), **stage_paths("download"))
    assert len(validate_layout(OUT)) == 9  # downloaded all the same
    err = capsys.readouterr().err
    assert ("download: warning: 8 clip(s) have an empty transcript (LJ900-0001, LJ900-0002, LJ900-0003, LJ900-0004, "
            "LJ900-0005, ...); the sentences stage will refuse them") in err, err
    make_lj_folder(tmp_path / "clean")
    download_stage.run(params_for(str(tmp_path / "clean")), **stage_paths("download"))
    assert "empty transcript" not in capsys.readouterr().err


def test_download_stage_from_folder_and_tar_gz(tmp_path, monkeypatch):
    lj = make_lj_folder(tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    download_stage.run(params_for(str(tmp_path / "src")), **stage_paths("download"))
    assert sorted(p.name for p in (OUT / "wavs").iterdir()) == sorted(p.name for p in (lj / "wavs").iterdir())
    archive = make_archive(tmp_path / "lj.tar.gz", lj, mode="w:gz")
    download_stage.run(params_for(str(archive)), **stage_paths("download"))  # replaces the previous output as a whole
    assert (OUT / "metadata.csv").read_bytes() == (lj / "metadata.csv").read_bytes()


def test_local_archive_checksum_mismatch_names_both_digests(tmp_path, monkeypatch):
    archive = make_archive(tmp_path / "lj.tar.bz2", make_lj_folder(tmp_path / "src"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=rf"SHA-256 mismatch: expected {'0' * 64}, got {sha(archive)}"):
        download_stage.run(params_for(str(archive), "0" * 64), **stage_paths("download"))
    assert archive.is_file()  # a user's own archive is never deleted
    assert not OUT.exists()  # nothing extracted before the check


def test_truncated_archive_is_a_clear_error(tmp_path, monkeypatch):
    archive = make_archive(tmp_path / "lj.tar.bz2", make_lj_folder(tmp_path / "src", seconds=[2.0] * 3))
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"lj.tar.bz2: corrupt or truncated archive"):
        download_stage.run(params_for(str(archive)), **stage_paths("download"))
    assert not OUT.exists()
    assert list(Path("data/raw").iterdir()) == []  # the partial extraction was discarded


def test_archive_without_lj_layout(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "a.txt").write_text("a")
    archive = make_archive(tmp_path / "x.tar", tmp_path / "stuff", mode="w")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="not an LJ Speech archive"):
        ljspeech.extract_lj_archive(archive, out)


def test_missing_wav_fails_layout(tmp_path):
    lj = make_lj_folder(tmp_path)
    (lj / "wavs" / "LJ001-0002.wav").unlink()
    with pytest.raises(FileNotFoundError, match="1 clip.*LJ001-0002"):
        validate_layout(lj)


def test_missing_wav_in_an_archive_names_the_archive(tmp_path, monkeypatch):
    lj = make_lj_folder(tmp_path / "src")
    (lj / "wavs" / "LJ001-0002.wav").unlink()
    archive = make_archive(tmp_path / "lj.tar.bz2", lj)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as caught:
        download_stage.run(params_for(str(archive)), **stage_paths("download"))
    message = str(caught.value)
    assert message.startswith(f"{archive}: LJSpeech-1.1: 1 clip(s) listed in metadata.csv have no wavs/<id>.wav")
    assert "LJ001-0002" in message and ".tmp" not in message and ".extract" not in message


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("member, reason", [
    (_member("LJSpeech-1.1/../../evil.txt"), "contains '..'"),
    (_member("/tmp/evil.txt"), "absolute path"),
    (_member("LJSpeech-1.1/wavs/link", tarfile.SYMTYPE, "../../../etc/passwd"), "symlink to '../../../etc/passwd'"),
    (_member("LJSpeech-1.1/abs", tarfile.SYMTYPE, "/etc/passwd"), "points outside"),
    (_member("LJSpeech-1.1/hard", tarfile.LNKTYPE, "../outside"), "hardlink"),
    (_member("LJSpeech-1.1/dev", tarfile.CHRTYPE), "device"),
])
def test_unsafe_members_are_rejected(tmp_path, monkeypatch, member, reason):
    lj = make_lj_folder(tmp_path / "src")
    archive = make_archive(tmp_path / "evil.tar.bz2", lj, extra=[member])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"evil.tar.bz2: unsafe archive member .*{reason}"):
        download_stage.run(params_for(str(archive)), **stage_paths("download"))
    assert not OUT.exists() and not (tmp_path / "evil.txt").exists()


def test_symlink_chain_out_of_the_archive_is_refused_as_unsafe(tmp_path, monkeypatch):
    # Each link looks safe on its own ("up" -> the archive root, "up/esc" -> a sibling of "up" on paper), but on
    # disk "up/esc" sits at the root, so its "../outside" leaves the destination: only the stdlib filter sees it.
    lj = make_lj_folder(tmp_path / "src")
    archive = make_archive(tmp_path / "evil.tar.bz2", lj, extra=[
        _member("LJSpeech-1.1/up", tarfile.SYMTYPE, ".."),
        _member("LJSpeech-1.1/up/esc", tarfile.SYMTYPE, "../outside"),
    ])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"evil.tar.bz2: unsafe archive member 'LJSpeech-1.1/up/esc': .*outside") as caught:
        download_stage.run(params_for(str(archive)), **stage_paths("download"))
    assert "corrupt" not in str(caught.value)
    assert not OUT.exists()


def test_inside_symlink_is_allowed(tmp_path):
    lj = make_lj_folder(tmp_path / "src")
    archive = make_archive(tmp_path / "ok.tar", lj, mode="w",
                           extra=[_member("LJSpeech-1.1/alias.csv", tarfile.SYMTYPE, "metadata.csv")])
    assert safe_extract(archive, tmp_path / "out") == 7  # LJSpeech-1.1/, metadata, wavs/, 3 wavs, the link
    assert (tmp_path / "out" / "LJSpeech-1.1" / "alias.csv").is_symlink()


# ----------------------------------------------------------------------------------------------------- HTTP
class _Server:
    """Serves one byte string with Range support; can cut the first response short or ignore Range."""

    def __init__(self, payload: bytes, cut_after: int | None = None, honour_range: bool = True):
        self.payload, self.cut_after, self.honour_range = payload, cut_after, honour_range
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng[len("bytes="):].rstrip("-")) if rng and server.honour_range else 0
                if start >= len(server.payload) and rng:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(server.payload)}")
                    self.end_headers()
                    return
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None  # only the first response is cut
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/LJSpeech-1.1.tar.bz2"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive_bytes(tmp_path):
    lj = make_lj_folder(tmp_path / "src", seconds=[1.0, 1.0, 1.0])
    return make_archive(tmp_path / "served.tar.bz2", lj).read_bytes()


def test_http_download_resumes_with_range(tmp_path, archive_bytes):
    server = _Server(archive_bytes, cut_after=len(archive_bytes) // 3)
    cache = tmp_path / "cache"
    digest = hashlib.sha256(archive_bytes).hexdigest()
    try:
        with pytest.raises(ValueError, match=r"transfer ended after \d+ of \d+ bytes; re-run to resume"):
            download(server.url, digest, cache)
        part = cache / "LJSpeech-1.1.tar.bz2.part"
        assert part.stat().st_size == len(archive_bytes) // 3
        path = download(server.url, digest, cache)
    finally:
        server.close()
    assert server.ranges == [None, f"bytes={len(archive_bytes) // 3}-"]
    assert path == cache / "LJSpeech-1.1.tar.bz2" and path.read_bytes() == archive_bytes
    assert not part.exists()


def test_http_download_restarts_when_range_is_ignored(tmp_path, archive_bytes):
    server = _Server(archive_bytes, cut_after=100, honour_range=False)
    cache = tmp_path / "cache"
    try:
        with pytest.raises(ValueError, match="re-run to resume"):
            download(server.url, "", cache)
        path = download(server.url, "", cache)
    finally:
        server.close()
    assert path.read_bytes() == archive_bytes


def test_http_download_complete_part_and_cached_file(tmp_path, archive_bytes):
    server = _Server(archive_bytes)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "LJSpeech-1.1.tar.bz2.part").write_bytes(archive_bytes)  # killed just before the rename
    digest = hashlib.sha256(archive_bytes).hexdigest()
    try:
        assert download(server.url, digest, cache).read_bytes() == archive_bytes  # 416 -> already complete
        assert download(server.url, digest, cache).read_bytes() == archive_bytes  # verified cache hit
    finally:
        server.close()
    assert len(server.ranges) == 1


def test_http_checksum_mismatch_removes_the_download(tmp_path, archive_bytes):
    server = _Server(archive_bytes)
    cache = tmp_path / "cache"
    try:
        with pytest.raises(ValueError, match=f"expected {'a' * 64}, got {hashlib.sha256(archive_bytes).hexdigest()}"
                                             r" \(the file was removed"):
            download(server.url, "a" * 64, cache)
    finally:
        server.close()
    assert list(cache.iterdir()) == []


def test_http_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"127.0.0.1:9/x.tar.bz2: download failed"):
        download("http://127.0.0.1:9/x.tar.bz2", "", tmp_path)


def test_download_stage_over_http_uses_cache_env(tmp_path, monkeypatch, archive_bytes):
    server = _Server(archive_bytes)
    monkeypatch.setenv("HYBRIDLM_CACHE", str(tmp_path / "hcache"))
    monkeypatch.chdir(tmp_path)
    try:
        download_stage.run(params_for(server.url, hashlib.sha256(archive_bytes).hexdigest()), **stage_paths("download"))
    finally:
        server.close()
    assert (tmp_path / "hcache" / "downloads" / "LJSpeech-1.1.tar.bz2").is_file()
    assert len(validate_layout(OUT)) == 3


# ----------------------------------------------------------------------------------------------------- synthetic
def test_synthetic_corpus_is_deterministic_and_lj_shaped(tmp_path, monkeypatch):
    params = SyntheticParams(clips=5, seed=7, min_seconds=1.2, max_seconds=10.1)
    generate_corpus(tmp_path / "a", params)
    generate_corpus(tmp_path / "b", params)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 6
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    generate_corpus(tmp_path / "c", SyntheticParams(clips=5, seed=8))
    assert (tmp_path / "c" / "wavs" / "LJ900-0002.wav").read_bytes() != (tmp_path / "a" / "wavs" / "LJ900-0002.wav").read_bytes()

    import soundfile as sf

    rows = validate_layout(tmp_path / "a")
    durations = [sf.info(str(tmp_path / "a" / "wavs" / f"{r.id}.wav")).duration for r in rows]
    assert all(1.2 <= d <= 10.1 for d in durations)
    assert sum(d > 8.0 for d in durations) >= 2  # clips 0 and 3
    info = sf.info(str(tmp_path / "a" / "wavs" / "LJ900-0001.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (22_050, 1, "PCM_16")
    text = (tmp_path / "a" / "metadata.csv").read_text(encoding="utf-8")
    assert '"' in text and "£" in text and "ç" in text
    # data.synthetic.long_every: many short clips (the text-to-speech demo) with a long one every n, or none.
    for every, longs in ((2, [True, False, True, False]), (0, [False] * 4)):
        root = tmp_path / f"every{every}"
        generate_corpus(root, SyntheticParams(clips=4, seed=7, min_seconds=0.8, max_seconds=1.6, long_every=every))
        lengths = [sf.info(str(root / "wavs" / f"{r.id}.wav")).duration for r in validate_layout(root)]
        assert [d > 8.0 for d in lengths] == longs and all(d <= 1.6 or 8.1 <= d <= 9.5 for d in lengths), lengths


def test_synthetic_via_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    download_stage.run(params_for("synthetic", min_seconds=1.0, max_seconds=2.0), **stage_paths("download"))
    assert len(validate_layout(OUT)) == 3


@pytest.mark.parametrize("data, key", [
    ({"source": "synthetic", "sha256": "", "synthetic": {"clips": 0}}, "data.synthetic.clips"),
    ({"source": "synthetic", "sha256": "", "synthetic": {"clips": "3"}}, "data.synthetic.clips"),
    ({"source": "synthetic", "sha256": "", "synthetic": {"cips": 3}}, "data.synthetic.cips"),
    ({"source": "synthetic", "sha256": "", "synthetic": {"min_seconds": 5.0, "max_seconds": 2.0}},
     "data.synthetic.max_seconds"),
    ({"source": "synthetic", "sha256": "abc"}, "data.sha256"),
    ({"source": 3, "sha256": ""}, "data.source"),
    ({"source": "synthetic", "sha": ""}, "data.sha"),
])
def test_data_params_errors_name_the_key(tmp_path, monkeypatch, data, key):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamError, match=f"'{key}'"):
        download_stage.run({"data": data}, **stage_paths("download"))
    assert not Path("data").exists()
