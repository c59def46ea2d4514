"""docs/features.md documents every column of the largest feature set (keeps the docs from drifting)."""

from __future__ import annotations

from pathlib import Path

from nucleoscope.features import SCENMED_COLUMNS, feature_columns

DOC = Path(__file__).resolve().parents[1] / "docs" / "features.md"


def test_every_column_is_documented():
    text = DOC.read_text(encoding="utf-8")
    missing = [c for c in feature_columns("all")[1:] if f"| `{c}` |" not in text]
    assert missing == []


def test_documented_counts_match():
    text = DOC.read_text(encoding="utf-8")
    for fs in ("shape", "default", "all"):
        assert f"| `{fs}` |" in text and f"| {len(feature_columns(fs)) - 1} |" in text
    assert len(SCENMED_COLUMNS) == 104 and "= 104" in text
