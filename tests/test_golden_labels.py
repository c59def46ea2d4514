"""The architecture refactor is behaviour-preserving: every method gives bit-identical labels to the code
before it (hashes in tests/data/golden_labels.json, written by tests/golden_labels.py at f874bbd)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden_labels import PLAN, bundled_images, compute, val_images

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_labels.json").read_text())


@pytest.mark.parametrize("method", sorted(PLAN))
def test_bundled_images_bit_identical(method):
    assert compute(method, bundled_images()) == GOLDEN["bundled"][method]


@pytest.mark.parametrize("method", sorted(PLAN))
def test_bbbc039_val_bit_identical(method, shared_data):
    paths = val_images()[:PLAN[method]]
    assert len(paths) == PLAN[method]
    assert compute(method, paths) == GOLDEN["bbbc039_val"][method]
