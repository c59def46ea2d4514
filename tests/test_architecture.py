"""The import rules of docs/architecture.md, checked on the source: a new import that breaks the
layering fails here, with the file and the line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "nucleoscope"

#: The pure core: functions on arrays. It never imports a face (files, command line, report, GUI,
#: cluster) nor the batch engine that drives it.
CORE = ("_errors", "records", "preprocess", "rescale", "background", "postprocess", "overlaps", "tiling", "qc", "features",
        "metrics", "synth", "segment", "models", "classify", "volume", "track")
FACES = ("io", "cli", "report", "pipeline", "napari", "distributed")
#: Where torch may be imported (lazily elsewhere would still load it: nowhere else at all).
TORCH_HOMES = ("segment/nuset", "segment/cells", "classify")
#: module -> what it must never import, beyond the rules above
EXTRA = {
    "models": ("segment", "torch", "safetensors.torch"),
    "io": ("cli", "report", "pipeline", "segment", "features", "napari"),
    "report": ("cli", "pipeline", "napari"),
    "pipeline": ("cli", "napari"),
    # the GUI is a face beside the command line: neither imports the other
    "cli": ("napari",),
    "napari": ("cli",),
}


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _top(path: Path) -> str:
    """The first-level package of a source file (``segment`` for segment/nuset/infer.py)."""
    rel = path.relative_to(SRC).with_suffix("")
    return rel.parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(SRC).with_suffix("")
    package = ["nucleoscope", *rel.parts[:-1]] if rel.name != "__init__" else ["nucleoscope", *rel.parts[:-1]]
    found = []
    skip = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` imports are for annotations only, never run
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            # `from . import io` imports a sub-module by name
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return found


def _violations() -> list[str]:
    bad = []
    for path in _modules():
        top = _top(path)
        rel = path.relative_to(SRC).as_posix()
        for line, name in _imports(path):
            where = f"{rel}:{line} imports {name}"
            inner = name[len("nucleoscope."):] if name.startswith("nucleoscope.") else None
            first = inner.split(".")[0] if inner else None
            if top in CORE and first in FACES:
                bad.append(f"{where} (the core never imports {first})")
            for forbidden in EXTRA.get(top, ()):
                if first == forbidden or name == forbidden or name.startswith(forbidden + "."):
                    bad.append(f"{where} ({top} never imports {forbidden})")
            if (name == "torch" or name.startswith("torch.")) and not any(rel.startswith(h) for h in TORCH_HOMES):
                bad.append(f"{where} (torch only inside {', '.join(TORCH_HOMES)})")
    return bad


def test_import_rules_hold():
    assert _violations() == []


def test_the_rules_catch_a_violation(tmp_path, monkeypatch):
    # the checker itself can fail: a core module importing io is reported with its line
    fake = tmp_path / "nucleoscope"
    (fake / "features").mkdir(parents=True)
    (fake / "features" / "bad.py").write_text("import numpy\nfrom ..io import read_image\nimport torch\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    found = _violations()
    assert "features/bad.py:2 imports nucleoscope.io (the core never imports io)" in found
    assert any(v.startswith("features/bad.py:3 imports torch") for v in found)


def test_napari_is_a_face(tmp_path, monkeypatch):
    # the plugin's package is checked like the command line: the core importing it is reported
    fake = tmp_path / "nucleoscope"
    (fake / "qc").mkdir(parents=True)
    (fake / "qc" / "bad.py").write_text("from ..napari import _segment\n")
    (fake / "cli").mkdir()
    (fake / "cli" / "bad.py").write_text("from nucleoscope.napari._reader import get_reader\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    found = _violations()
    assert "qc/bad.py:1 imports nucleoscope.napari (the core never imports napari)" in found
    assert any(v.startswith("cli/bad.py:1 imports nucleoscope.napari._reader (cli never imports napari)") for v in found)


@pytest.mark.parametrize("modules", [
    "nucleoscope", "nucleoscope.models", "nucleoscope.pipeline", "nucleoscope.cli", "nucleoscope.report",
    "nucleoscope.segment", "nucleoscope.segment.classic", "nucleoscope.io", "nucleoscope.napari"])
def test_importing_does_not_import_torch(modules):
    code = f"import sys, {modules}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
