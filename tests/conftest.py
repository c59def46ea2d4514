"""Shared fixtures: paths to the real data beside the repo (tests using it skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the napari widget tests (tests/test_napari*.py) run headless: Qt draws into memory, no display needed
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NUCLEOSCOPE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips the test when it is not there (a clone elsewhere)."""
    if not (SHARED_DATA / "bbbc039").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
