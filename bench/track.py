"""Tracking: CTC TRA / DET / LNK and divisions on the CTC sequences here (train split, sequence 01),
and what linking adds to the per-frame segmentation time.

Run: ``.venv/bin/python bench/track.py [--methods nuset,otsu]``. Runs :func:`nucleoscope.pipeline.track_movie`
into ``/tmp/nucleoscope-bench-track/<set>-<method>`` (resumable: a rerun re-links without re-segmenting;
the segmentation seconds are those recorded per frame in images.csv), scores with
:func:`nucleoscope.pipeline.evaluate_tracks.evaluate_tracks` (traccuracy) and writes the ``track`` section
of docs/benchmarks.md. Targets (issue 20): TRA >= 0.95, DET >= 0.95, linking <= 10% of segmentation time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _docs import stamp, write_section  # noqa: E402

from nucleoscope.pipeline import TrackConfig, track_movie  # noqa: E402
from nucleoscope.pipeline.evaluate_tracks import evaluate_tracks  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"ctc_simplus_tracking": "train/01", "ctc_gowt1_tracking": "train/01"}
OUT = Path("/tmp/nucleoscope-bench-track")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="nuset,otsu")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    rows = ["| sequence | method | TRA | DET | LNK | SEG (objects) | div. true / found | div. P | div. R | div. F1 | "
            "seg s/frame | link s | link / seg | read+link+write / seg |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for ds, seq in SETS.items():
        folder = DATA / ds / seq
        for method in args.methods.split(","):
            out = OUT / f"{ds}-{method}"
            images = track_movie([folder / "images"], out, TrackConfig(method=method), show_progress=False)
            s = evaluate_tracks(out, folder / "tra")
            info = json.loads((out / "tracking.json").read_text())
            seg = float(pd.to_numeric(images["Seconds"]).sum())
            total = info["read_seconds"] + info["link_seconds"] + info["write_seconds"]
            row = (f"| {ds} {seq} | {method} | {s['TRA']:.4f} | {s['DET']:.4f} | {s['LNK']:.4f} | "
                   f"{s['SEG']:.4f} ({s['seg_objects']}) | "
                   f"{s['divisions_true']} / {s['divisions_predicted']} | {s['division_precision']:.3f} | "
                   f"{s['division_recall']:.3f} | {s['division_f1']:.3f} | {seg / len(images):.2f} | "
                   f"{info['link_seconds']:.1f} | {info['link_seconds'] / seg:.1%} | {total / seg:.1%} |")
            print(row, flush=True)
            rows.append(row)
    note = ("`nucleoscope track` defaults (max distance 30 px, gap 1 frame, division distance 40 px, division "
            "area ratio 0.85, daughters living >= 3 frames); TRA/DET/LNK by traccuracy's CTC matcher, divisions "
            "on a one-to-one IoU >= 0.5 matching with a 1-frame buffer (F1 nan: no division matched), SEG (CTC "
            "measure) on the truth's SEG frames (GOWT1: 30 sparse frames). These are the dev sequences (01); the "
            "hidden sequences (02) are not here. Segmentation seconds are those recorded per frame in images.csv "
            "(a rerun resumes the segmentation and re-links). link = linking the label stack "
            "(centroids + laptrack + CTC renumbering); read+link+write adds reading the per-frame labels back "
            "and writing the CTC masks and tables. Times on the shared 2-core machine (other jobs running), "
            "NuSeT on 2 torch threads; the one-off import of laptrack (~1.5 s) is not counted.")
    write_section("track", f"## Tracking (`bench/track.py`)\n\n{stamp()}\n\n{note}\n\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
