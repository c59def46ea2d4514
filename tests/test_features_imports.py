"""The features core stays a numpy core: importing it pulls in neither io, cli nor torch."""

from __future__ import annotations

import subprocess
import sys


def test_features_import_is_light():
    code = (
        "import sys, nucleoscope.features\n"
        "bad = [m for m in sys.modules if m.startswith(('nucleoscope.io', 'nucleoscope.cli', 'torch'))]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
