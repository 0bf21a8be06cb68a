"""Atomic writes: a failure leaves the old output (or none), never a partial one; a killed run's leftovers go."""

import os
import stat
from pathlib import Path

import pytest

from hybridlm.atomic import atomic_dir, atomic_path, write_json


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_dir_replaces_whole_folder_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "shards"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_leftovers_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    # What SIGKILL leaves behind: the temporary sibling folder/file and a half-swapped old folder.
    (tmp_path / ".shards.abc123.tmp").mkdir()
    (tmp_path / ".shards.abc123.tmp" / "half.parquet").write_bytes(b"x")
    (tmp_path / ".shards.old").mkdir()
    (tmp_path / ".other.abc.tmp").mkdir()  # belongs to another output: untouched
    with atomic_dir(tmp_path / "shards") as tmp:
        (tmp / "a").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.abc.tmp", "shards"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_mode_the_umask_gives(tmp_path: Path, umask: int) -> None:
    # mkstemp/mkdtemp create 0600/0700; what lands must look like a plain open()/mkdir() under this umask.
    old = os.umask(umask)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        with atomic_dir(tmp_path / "shards") as tmp:
            (tmp / "a").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "shards").stat().st_mode) == 0o777 & ~umask
