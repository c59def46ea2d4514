"""Run the main job on the bundled sample images (three BBBC039 fields, CC0) and print a summary.

The samples ship with their published annotations, so the summary also scores the segmentation
(F1 at IoU 0.5 and 0.7) against them.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from .run import add_run_options, config_from_args

__all__ = ["add_arguments", "run", "sample_images"]


def sample_images() -> list[Path]:
    """Paths of the bundled sample images (not their masks)."""
    root = Path(str(resources.files("nucleoscope") / "data"))
    return sorted(p for p in root.glob("*.tif") if not p.stem.endswith("_mask"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", default="demo_out", metavar="OUT", help="output folder (default: %(default)s)")
    add_run_options(p)


def run(args: argparse.Namespace) -> int:
    from ..io import read_labels
    from ..metrics import match
    from ..pipeline import run_batch

    images = sample_images()
    table = run_batch([str(p) for p in images], args.out, config_from_args(args), jobs=args.jobs,
                      scheduler=args.scheduler,
                      show_progress=not args.quiet, command="nucleoscope demo")
    out = Path(args.out)
    method = table["Method"].iloc[0]
    print(f"nucleoscope demo: method {method}, {len(table)} BBBC039 sample images -> {out}/")
    print(f"{'image':<18}{'status':<8}{'nuclei':>7}{'truth':>7}{'F1@0.5':>8}{'F1@0.7':>8}{'seconds':>9}")
    for path, (_, r) in zip(images, table.iterrows()):
        f5 = f7 = float("nan")
        n_true = 0
        if r["Status"] == "ok":
            gt = read_labels(path.with_name(f"{path.stem}_mask.tif"))
            pred = read_labels(out / "labels" / f"{r['ImageName']}.tif")
            n_true = int(len(set(gt.ravel().tolist())) - 1)
            f5 = match(gt, pred, thresh=0.5).f1
            f7 = match(gt, pred, thresh=0.7).f1
        print(f"{r['ImageName']:<18}{r['Status']:<8}{int(r['Count']):>7}{n_true:>7}{f5:>8.3f}{f7:>8.3f}"
              f"{r['Seconds']:>9.2f}")
    print(f"tables: {out / 'nuclei.csv'}, {out / 'images.csv'}; report: {out / 'report.html'}")
    return 0 if (table["Status"] == "ok").all() else 1
