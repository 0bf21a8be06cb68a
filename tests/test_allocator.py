"""hybridlm.allocator: with glibc, freed tensor memory is reused without page faults, and handed back on request.

Each check runs in a fresh interpreter (the setting is process-wide and must not leak into the test session), with
and without keep_freed_memory(), so a setting that did nothing would fail the comparison.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hybridlm.allocator import _glibc

pytestmark = pytest.mark.skipif(_glibc() is None, reason="the allocator settings apply to glibc only")

# Allocate, touch and free a 96 MB block, then a 64 MB one (smaller: small objects allocated in between may take the
# start of the freed block); report the page faults of the second, and how much release_freed_memory() hands back.
PROBE = """
import json, resource, sys
import torch
from hybridlm.allocator import keep_freed_memory, release_freed_memory
from hybridlm.bench.whole_model import _proc_status
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
block = torch.ones(24 * 2**20)
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = torch.ones(16 * 2**20)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
del block
resident = _proc_status("VmRSS")
release_freed_memory()
print(json.dumps({"kept": kept, "faults": faults, "released": resident - _proc_status("VmRSS")}))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_freed_memory_is_reused_then_released():
    default, kept = _probe("default"), _probe("keep")
    pages = 64 * 2**20 // 4096
    # glibc's default maps a fresh 64 MB block (every page faults); kept, the freed block is reused
    assert default["faults"] > pages // 2
    assert kept["kept"] is True
    assert kept["faults"] < pages // 20
    # kept memory stays resident until release_freed_memory() hands it back
    assert kept["released"] > 48 * 2**20
