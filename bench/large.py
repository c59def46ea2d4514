"""Benchmark: ``nucleoscope run --method otsu`` on images up to 16k x 16k, tiled and untiled.

A synthetic 2048 x 2048 field (``nucleoscope.synth.nuclei_field``, ~1,600 nuclei) is repeated to the
image size and written as a uint16 TIFF; each row runs ``nucleoscope run IMAGE -o OUT --method otsu
--features shape -q --tile-size T`` in a fresh process and reports its wall time and peak resident
memory (``getrusage`` of the child). The untiled row at 8192² is the baseline of the same run; 16k x 16k
untiled is not attempted on a 24 GiB machine. Run: ``python bench/large.py [--sizes 8192 16384]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from _docs import stamp, write_section


def make_image(path: Path, size: int) -> int:
    """Write a size x size uint16 TIFF of a repeated synthetic field; returns the nuclei it holds."""
    from nucleoscope.synth import nuclei_field

    s = nuclei_field((2048, 2048), rng=11)
    base = np.clip(s.image, 0, 65535).astype(np.uint16)
    reps = -(-size // 2048)
    tifffile.imwrite(path, np.tile(base, (reps, reps))[:size, :size])
    return int(s.labels.max()) * reps * reps


def run_one(image: Path, out: Path, tile: int) -> tuple[float, float, int]:
    """(seconds, peak RSS GiB, nuclei) of one ``nucleoscope run`` in a fresh process."""
    cmd = [sys.executable, "-m", "nucleoscope", "run", str(image), "-o", str(out), "--method", "otsu",
           "--features", "shape", "-q", "--tile-size", str(tile)]
    # a fresh intermediate process, so RUSAGE_CHILDREN's maximum is this run's alone
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True); "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True)
    secs_s, kib = res.stdout.split()[-2:]
    secs, peak = float(secs_s), int(kib)
    import pandas as pd

    n = int(pd.read_csv(out / "images.csv")["Count"].sum())
    return secs, peak / 2**20, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plan = []
        for size in sorted(args.sizes):
            plan.append((size, 4096))
        if 8192 in args.sizes:
            plan.append((8192, 0))
        for size, tile in plan:
            img = tmp / f"field_{size}.tif"
            if not img.exists():
                make_image(img, size)
            secs, peak, n = run_one(img, tmp / f"out_{size}_{tile}", tile)
            rows.append((size, tile, secs, peak, n))
            print(f"{size}² tile {tile or 'none'}: {secs:.1f} s, peak {peak:.2f} GiB, {n} nuclei", flush=True)
            os.remove(tmp / f"out_{size}_{tile}" / "labels" / f"field_{size}.tif")
    base = {r[0]: r[2] for r in rows if r[1] == 0}
    lines = ["## Large images: `run --method otsu` tiled and untiled", "", stamp(), "",
             "`python bench/large.py`: a synthetic 2048² field repeated to the size, uint16 TIFF; "
             "`nucleoscope run IMAGE --method otsu --features shape --tile-size T` in a fresh process "
             "(read, segment, QC, measure, write labels, overlay, tables). Peak = the process's maximum "
             "resident memory.", "",
             "| image | --tile-size | seconds | s/MP | vs untiled 8192² (s/MP) | peak RSS (GiB) | nuclei |",
             "|---|---|---|---|---|---|---|"]
    b = base.get(8192)
    for size, tile, secs, peak, n in rows:
        mp = size * size / 1e6
        rel = f"{(secs / mp) / (b / (8192 ** 2 / 1e6)):.2f}" if b else ""
        lines.append(f"| {size}² | {tile or 'none (0)'} | {secs:.1f} | {secs / mp:.3f} | {rel} | {peak:.2f} | {n} |")
    md = "\n".join(lines)
    print(md)
    write_section("large", md)


if __name__ == "__main__":
    main()
