"""LJ Speech 1.1 as the pipeline sees it: metadata parsing, source resolution, resumable download, safe extraction.

Why each piece exists:
- ``metadata.csv`` is pipe-separated with *no quoting* (about 500 lines contain raw ``"``); a CSV reader with default
  quoting silently merges fields, so it is parsed by splitting on ``|``.
- The official archive is 2.6 GB: the transfer streams into a ``.part`` file in a download cache *outside* DVC's
  outputs (DVC deletes a stage's outputs before running it) and resumes with an HTTP Range request.
- The checksum is verified before anything is extracted, and extraction refuses members that would escape the
  target (absolute paths, ``..``, links pointing out, devices): an archive is untrusted input.
- Everything lands in a temporary sibling of the output folder first (``atomic_dir``), so a killed run never
  leaves a folder that looks complete.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import posixpath
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

LJ_ROOT = "LJSpeech-1.1"
ARCHIVE_SUFFIXES = (".tar.bz2", ".tar.gz", ".tgz", ".tar")
BLOCK = 1 << 20  # 1 MiB: read/write granularity of downloads and hashing


@dataclass(frozen=True)
class Utterance:
    """One metadata.csv line: clip id, raw transcription, normalized transcription."""

    id: str
    text: str
    normalized: str


def parse_metadata(path: Path, shown_as: str | None = None) -> list[Utterance]:
    """Parse an LJ Speech ``metadata.csv``: UTF-8, one ``id|text|normalized`` per line, no quoting, LF (or CRLF).

    A leading UTF-8 byte-order mark is dropped: LJ's own file has none, but editors on Windows add one to user
    corpora, and kept it would become an invisible first character of the first clip id. Errors name the file as
    ``shown_as`` (default: ``path``), so a file inside an archive is named by the archive, not a scratch folder.
    """
    path = Path(path)
    where = shown_as or str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: metadata file not found")
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(f"{where}:{line}: not valid UTF-8 ({exc.reason})") from exc
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file ends with a newline
    rows: list[Utterance] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        fields = line.rstrip("\r").split("|")
        if len(fields) != 3:
            raise ValueError(
                f"{where}:{number}: expected 3 '|'-separated fields (id|text|normalized), got {len(fields)}: {line[:80]!r}"
            )
        clip_id, text, normalized = fields
        if not clip_id or clip_id != clip_id.strip() or "/" in clip_id or clip_id in (".", ".."):
            raise ValueError(f"{where}:{number}: invalid clip id {clip_id!r}")
        if clip_id in seen:
            raise ValueError(f"{where}:{number}: duplicate clip id {clip_id!r}")
        seen.add(clip_id)
        rows.append(Utterance(clip_id, text, normalized))
    if not rows:
        raise ValueError(f"{where}: metadata file is empty")
    return rows


def empty_transcript_warning(rows: list[Utterance]) -> str | None:
    """A warning naming the clips whose normalized transcript is blank (an ``id||`` line), or None.

    Why at download: download, resample, tokenize and split do not read the text, so such a clip goes all the way
    to the sentences stage, which refuses it; the unconditional run can use it, so this warns rather than fails."""
    empty = [row.id for row in rows if not row.normalized.strip()]
    if not empty:
        return None
    shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
    return f"{len(empty)} clip(s) have an empty transcript ({shown}); the sentences stage will refuse them"


def validate_layout(root: Path, shown_as: str | None = None) -> list[Utterance]:
    """Check ``root`` is an LJ Speech folder (metadata.csv + wavs/<id>.wav for every line); return the metadata.
    Errors name the folder as ``shown_as`` (default: ``root``)."""
    root = Path(root)
    where = shown_as or str(root)
    if not (root / "metadata.csv").is_file():
        raise FileNotFoundError(f"{where}: not in LJ Speech layout: metadata.csv is missing")
    if not (root / "wavs").is_dir():
        raise FileNotFoundError(f"{where}: not in LJ Speech layout: wavs/ folder is missing")
    rows = parse_metadata(root / "metadata.csv", f"{where}/metadata.csv")
    missing = [r.id for r in rows if not (root / "wavs" / f"{r.id}.wav").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{where}: {len(missing)} clip(s) listed in metadata.csv have no wavs/<id>.wav, e.g. {', '.join(missing[:5])}"
        )
    return rows


# --------------------------------------------------------------------------------------------------- sources
SourceKind = Literal["url", "archive", "folder", "synthetic"]


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    location: str  # URL, or path of the archive / LJ folder (the folder holding metadata.csv); "" for synthetic


def resolve_source(source: str) -> Source:
    """Classify ``data.source``: an http(s) URL, a local archive, a local LJ-layout folder, or ``synthetic``."""
    if source == "synthetic":
        return Source("synthetic", "")
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ("http", "https"):
        return Source("url", source)
    if scheme and len(scheme) > 1:  # a one-letter scheme is a Windows drive letter
        raise ValueError(f"data.source: unsupported URL scheme {scheme!r} in {source!r} (use https, a path or synthetic)")
    path = Path(source).expanduser()
    if path.is_dir():
        for candidate in (path, path / LJ_ROOT):
            if (candidate / "metadata.csv").is_file():
                return Source("folder", str(candidate))
        raise FileNotFoundError(f"data.source: folder {path} holds neither metadata.csv nor {LJ_ROOT}/metadata.csv")
    if path.is_file():
        if path.name.endswith(ARCHIVE_SUFFIXES):
            return Source("archive", str(path))
        raise ValueError(f"data.source: {path} is not a tar archive (expected one of {', '.join(ARCHIVE_SUFFIXES)})")
    raise FileNotFoundError(f"data.source: {source!r} is neither 'synthetic', an http(s) URL, nor an existing path")


def cache_dir() -> Path:
    """Download cache: ``$HYBRIDLM_CACHE/downloads``, else ``~/.cache/hybridlm/downloads``. It lies outside DVC's
    outputs so that a partial transfer survives DVC removing the stage's outputs before a re-run."""
    env = os.environ.get("HYBRIDLM_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "hybridlm"
    return root / "downloads"


# --------------------------------------------------------------------------------------------------- checksum
def sha256_file(path: Path, progress: bool = True) -> str:
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                       desc=f"sha256 {path.name}", disable=not progress, leave=False) as bar:
        while block := fh.read(BLOCK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, delete_on_mismatch: bool) -> None:
    """Raise ValueError naming both digests when ``path`` does not hash to ``expected`` (``""`` skips the check).

    A downloaded file that fails is deleted (``delete_on_mismatch``) so the next run fetches it again instead of
    trusting it; a user's own local archive is never deleted.
    """
    if not expected:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        if delete_on_mismatch:
            Path(path).unlink(missing_ok=True)
        action = "the file was removed; re-run to download it again" if delete_on_mismatch else "file kept"
        raise ValueError(
            f"{path}: SHA-256 mismatch: expected {expected.lower()}, got {actual} ({action}; or fix data.sha256, "
            f"'' skips the check)"
        )


# --------------------------------------------------------------------------------------------------- download
def download(url: str, expected_sha256: str, cache: Path | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` into the cache, resuming a previous partial transfer; return the verified file.

    A complete file is kept as ``<name>``; while transferring it is ``<name>.part``. A verified file already in the
    cache is reused. On a checksum mismatch the file is deleted and ValueError names expected/actual digests.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name = posixpath.basename(urllib.parse.urlsplit(url).path) or "download"
    final = cache / name
    if final.is_file():
        verify_sha256(final, expected_sha256, delete_on_mismatch=True)
        return final
    part = cache / f"{name}.part"
    _fetch_resuming(url, part, timeout)
    verify_sha256(part, expected_sha256, delete_on_mismatch=True)
    os.replace(part, final)
    return final


def _fetch_resuming(url: str, part: Path, timeout: float) -> None:
    """Stream ``url`` into ``part``, continuing after the bytes already there when the server honours Range."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "hybridlm"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range starts at/after the end: the .part may already be complete
            total = _content_range_total(exc.headers.get("Content-Range", ""))
            if total == have:
                return
            part.unlink()
            return _fetch_resuming(url, part, timeout)
        raise ValueError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ValueError(f"{url}: download failed: {exc}") from exc
    with response:
        if have and response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if start != have:
                raise ValueError(f"{url}: server resumed at byte {start}, expected {have}; delete {part} and retry")
            mode = "ab"
        else:  # 200: the server ignored the Range header, start over
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                           desc=f"download {part.name[:-5]}") as bar:
            try:
                while block := response.read(BLOCK):
                    out.write(block)
                    bar.update(len(block))
            except OSError as exc:
                raise ValueError(
                    f"{url}: transfer interrupted after {out.tell()} bytes ({exc}); re-run to resume from {part}"
                ) from exc
    got = part.stat().st_size
    if total is not None and got != total:
        raise ValueError(f"{url}: transfer ended after {got} of {total} bytes; re-run to resume from {part}")


def _content_range_start(header: str) -> int:
    # "bytes 100-199/200"
    try:
        return int(header.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def _content_range_total(header: str) -> int:
    # "bytes */200"
    try:
        return int(header.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return -1


# --------------------------------------------------------------------------------------------------- extraction
def check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Reject a tar member that could write outside the extraction folder or create something but a file/folder."""
    name = member.name
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"{archive}: unsafe archive member {name!r}: absolute path")
    if ".." in parts:
        raise ValueError(f"{archive}: unsafe archive member {name!r}: path contains '..'")
    if member.issym() or member.islnk():
        target = member.linkname
        base = posixpath.dirname("/".join(parts)) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            kind = "symlink" if member.issym() else "hardlink"
            raise ValueError(
                f"{archive}: unsafe archive member {name!r}: {kind} to {target!r} points outside the archive")
    elif not (member.isfile() or member.isdir()):
        raise ValueError(f"{archive}: unsafe archive member {name!r}: device, FIFO or other special file")


def safe_extract(archive: Path, target: Path) -> int:
    """Extract ``archive`` (tar, optionally gz/bz2/xz) into ``target`` one member at a time, checking each member
    first; return the number of members. A truncated or corrupt archive raises ValueError naming the archive.

    Streaming mode reads the (bz2) archive once; a bad member midway aborts, and the caller's atomic_dir discards
    what was extracted so far.
    """
    archive, target = Path(archive), Path(target)
    count = 0
    try:
        with tarfile.open(archive, mode="r|*") as tar, tqdm(unit=" files", desc=f"extract {archive.name}") as bar:
            for member in tar:
                check_member(archive, member)
                try:
                    tar.extract(member, target, filter="data")  # stdlib filter as a second line of defence
                except tarfile.FilterError as exc:
                    # A link that looks safe on its own but escapes through an earlier link (a chain), which only
                    # the filter sees on disk. It is a refusal, not damage: say so, not "corrupt archive".
                    raise ValueError(f"{archive}: unsafe archive member {member.name!r}: {exc}") from exc
                count += 1
                bar.update(1)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ValueError(f"{archive}: corrupt or truncated archive ({type(exc).__name__}: {exc})") from exc
    if count == 0:
        raise ValueError(f"{archive}: archive is empty")
    return count


def extract_lj_archive(archive: Path, out: Path) -> None:
    """Extract an LJ archive into ``out`` (an atomic_dir temp folder): the contents of its ``LJSpeech-1.1/`` (or of
    its top level, when it has no such folder) end up directly in ``out``.

    Members are extracted into a scratch folder inside ``out`` and then renamed into place (same file system).
    """
    out = Path(out)
    staging = out / ".extract"
    safe_extract(archive, staging)
    root = staging / LJ_ROOT if (staging / LJ_ROOT / "metadata.csv").is_file() else staging
    if not (root / "metadata.csv").is_file():
        raise ValueError(f"{archive}: not an LJ Speech archive: no {LJ_ROOT}/metadata.csv inside")
    validate_layout(root, f"{archive}: {LJ_ROOT}" if root != staging else str(archive))
    for child in list(root.iterdir()):
        os.replace(child, out / child.name)
    shutil.rmtree(staging)


def copy_lj_folder(folder: Path, out: Path) -> None:
    """Copy an LJ-layout folder's metadata.csv, wavs/ (and README, if any) into ``out``."""
    folder = Path(folder)
    rows = validate_layout(folder)
    shutil.copy2(folder / "metadata.csv", Path(out) / "metadata.csv")
    if (folder / "README").is_file():
        shutil.copy2(folder / "README", Path(out) / "README")
    (Path(out) / "wavs").mkdir()
    for row in tqdm(rows, desc=f"copy {folder}", unit=" clips"):
        shutil.copy2(folder / "wavs" / f"{row.id}.wav", Path(out) / "wavs" / f"{row.id}.wav")
