"""The C allocator (glibc malloc) set for large tensors: freed memory stays in the process for the next step.

Why: by default glibc serves every block above a dynamic threshold (at most 32 MB) with a fresh ``mmap`` and
unmaps it on free, and trims the heap's free top back to the kernel. A training step frees and re-allocates the
same large activations every step, so each step pays the kernel to zero fresh pages again (page faults, system
time). :func:`keep_freed_memory` raises both thresholds once at start-up, so blocks come from the heap and freed
ones are reused: the same effect as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment,
without asking users to set them. What it costs: the process keeps its high-water mark of memory until it exits.
Numbers (step time, peak memory) are in docs/performance.md.

:func:`release_freed_memory` hands the free memory back (``malloc_trim``): the whole-model benchmark calls it
before each measurement, so that an implementation measured later does not reuse pages an earlier one left behind
(which made the later one's peak look small).

Both are no-ops where the C library is not glibc (macOS, musl): there the allocator is left as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap (the largest tensor of a default step: ~70 MB)
TRIM_THRESHOLD = 2**31 - 1  # trim the heap's free top only above 2 GiB (mallopt takes an int)


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The process's glibc, or None when the C library is another one."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError, TypeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (module docstring); True when glibc took both settings."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def release_freed_memory() -> None:
    """Give the memory freed so far back to the kernel (glibc ``malloc_trim(0)``)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
