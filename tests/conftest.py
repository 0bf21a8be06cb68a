"""Fixtures shared by the test modules, and the one way a test reaches the shared data.

The shared data (the real LJ Speech metadata, the durations of all 13,100 clips, four real clips) lies in
``../shared`` beside the checkout on the project's machines and in CI, and is absent from a user's clone. A test that
reads it any other way than through the ``shared`` fixture below would fail in that clone (it happened: a ``skipif``
on the wrong test), so tests/test_shared_data.py fails on any other way, and .ci/run runs every test that takes the
fixture once more with ``HYBRIDLM_SHARED`` pointing at a missing folder.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

SHARED_ENV = "HYBRIDLM_SHARED"
DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_MARK = "shared_data"


def shared_root() -> Path:
    """``$HYBRIDLM_SHARED`` when set (and not empty), else ``../shared`` beside the checkout."""
    return Path(os.environ.get(SHARED_ENV) or DEFAULT_SHARED)


def shared_path(relative: str) -> Path:
    """``shared_root() / relative``; the calling test is skipped (with the path in the reason) when it is absent."""
    path = shared_root() / relative
    if not path.exists():
        pytest.skip(f"{path}: shared data absent (a user's clone has no ../shared; {SHARED_ENV} may point elsewhere)")
    return path


@pytest.fixture
def shared() -> Callable[[str], Path]:
    """``shared("ljspeech-meta/durations.tsv")``: the path in the shared data, or a clean skip without it."""
    return shared_path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{SHARED_MARK}: takes the `shared` fixture (set automatically; "
                                       f".ci/run runs these again with {SHARED_ENV} at a missing folder)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that takes ``shared``, directly or through another fixture, so `-m shared_data` finds them."""
    for item in items:
        if "shared" in getattr(item, "fixturenames", ()):
            item.add_marker(SHARED_MARK)


@pytest.fixture
def one_thread():
    """Tiny models spend their time in op overhead: one thread is faster, and immune to a busy machine.

    Modules of small-model tests opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
