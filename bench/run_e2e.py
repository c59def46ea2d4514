"""`nucleoscope run` end to end as a user runs it: segment + default features + QC + overlays + tables + report.

Run from the repository root: ``python bench/run_e2e.py [--images N]``. Writes the ``run-e2e`` section of
docs/benchmarks.md.

``bbbc039/val`` (the first N images, default all 50, 520 x 696) copied to a temporary folder, then
``nucleoscope run IN -o OUT -q`` in a fresh process (one process, ``--jobs 1``) for ``--method nuset``
(the default) and ``--method otsu``, in the same session, each twice (the faster kept). Reported: wall
time of the whole command (start-up, reading, report included) per input megapixel, the time inside the
per-image work (``images.csv`` Seconds) and the nuclei found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = Path(os.environ.get("NUCLEOSCOPE_DATA", REPO.parent / "shared" / "data"))


def one_run(inp: Path, out: Path, method: str, extra: list[str]) -> tuple[float, float, int, float]:
    import pandas as pd

    shutil.rmtree(out, ignore_errors=True)
    exe = Path(sys.executable).with_name("nucleoscope")
    t = time.perf_counter()
    subprocess.run([str(exe), "run", str(inp), "-o", str(out), "-q", "--method", method, *extra], check=True,
                   capture_output=True)
    wall = time.perf_counter() - t
    im = pd.read_csv(out / "images.csv")
    return wall, float(im["Seconds"].sum()), int(im["Count"].sum()), float(im["Megapixels"].sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    from _docs import stamp, write_section

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in"
        inp.mkdir()
        for p in sorted((DATA / "bbbc039" / "val" / "images").glob("*.tif"))[: args.images]:
            shutil.copy(p, inp / p.name)
        for label, method, extra in (("NuSeT (default)", "nuset", []), ("Otsu watershed", "otsu", []),
                                     ("NuSeT, --features shape", "nuset", ["--features", "shape"]),
                                     ("NuSeT, --no-overlays", "nuset", ["--no-overlays"])):
            best = min((one_run(inp, Path(tmp) / "out", method, extra) for _ in range(2)), key=lambda r: r[0])
            wall, work, n, mp = best
            rows.append(f"| {label} | {wall:.1f} | {wall / mp:.3f} | {work / mp:.3f} | {n} |")
            print(rows[-1], flush=True)
    text = (f"## `run` end to end (`bench/run_e2e.py`)\n\n{stamp()}\n\n"
            f"bbbc039/val, {args.images} images ({mp:.1f} MP), one process, default options (segment, default "
            "features, QC, overlays, labels, nuclei.csv + parquet, report.html). Wall: the whole command in a "
            "fresh process, start-up and report included; per-image work: the sum of images.csv Seconds.\n\n"
            "| run | wall (s) | wall s/MP | per-image work s/MP | nuclei |\n|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")
    print(text)
    if not args.no_write:
        write_section("run-e2e", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
