"""docs/napari.md's walkthrough on a real viewer, with its screenshots (tests/napari_walkthrough.py).

napari's canvas needs OpenGL, which Qt's platforms get only from an X server here: the test starts the
walkthrough under ``xvfb-run`` and is skipped where the napari extra or Xvfb is not installed
(``apt-get install xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0``). The widget tests
(tests/test_napari.py) need neither.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

HERE = Path(__file__).resolve().parent
STEPS = ["01_open_sample", "02_segment", "03_fix_merge", "04_measure", "05_train", "06_next_image", "07_classify"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs Xvfb (xvfb-run) for napari's OpenGL canvas")
def test_walkthrough_screenshots(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable,
                          str(HERE / "napari_walkthrough.py"), str(tmp_path), "3"],
                         capture_output=True, text=True, env=env, timeout=600)
    if "could not connect to display" in run.stderr or "no Qt platform plugin" in run.stderr:
        pytest.skip("Xvfb or Qt's xcb libraries are not usable here: " + run.stderr[-300:])
    assert run.returncode == 0, run.stderr[-3000:]
    steps = {r["step"]: r for r in map(json.loads, [ln for ln in run.stdout.splitlines() if ln.startswith("{")])}
    assert list(steps) == STEPS
    for s in steps.values():
        png = Path(s["png"])
        assert png.is_file() and 10_000 < s["bytes"] < 200_000, s  # a real picture, and a small file
        assert s["std"] > 10, s  # not a blank canvas
    assert 105 <= steps["02_segment"]["nuclei"] <= 125  # IXMtest_A16_s3: 117 annotated nuclei
    fixed = steps["03_fix_merge"]
    assert len(fixed["merges"]) >= 1 and fixed["nuclei"] == steps["02_segment"]["nuclei"] + len(fixed["merges"])
    assert steps["04_measure"]["rows"] == fixed["nuclei"]  # the table follows the corrected labels
    losses = steps["05_train"]["losses"]
    assert len(losses) == 3 and np.isfinite(losses).all()
    nxt = steps["06_next_image"]
    assert nxt["model"] == steps["05_train"]["model"]  # segmented with the fine-tuned model
    assert abs(nxt["nuclei"] - nxt["truth"]) <= 15  # IXMtest_C09_s7: 164 annotated nuclei
    cls = steps["07_classify"]
    assert cls["validation"] > 0.9 and cls["right"] > 0.9  # logreg on the two-class sample, an unseen image
    assert [x.split(":")[0] for x in cls["legend"]] == ["large", "small"]
