"""Benchmark: one batch as one process, as ``--jobs 2`` and on a Dask LocalCluster of 2 single-threaded
workers (``--scheduler local:2``), all in the same session.

The batch: N synthetic 1024² fields (``nucleoscope.synth.nuclei_field``, uint16 TIFFs), ``nucleoscope run
FOLDER -o OUT --method M --features default -q`` in a fresh process per row, wall time of the whole
command (cluster start-up included). The baseline is one process restricted to one thread per library
(OMP/torch), as the issue asks ("one thread per worker"); the plain one-process row (all cores) is shown
too. Run: ``python bench/scale.py [--n 16] [--method otsu]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from _docs import stamp, write_section


def make_batch(folder: Path, n: int) -> None:
    from nucleoscope.synth import nuclei_field

    folder.mkdir(parents=True)
    for i in range(n):
        s = nuclei_field((1024, 1024), rng=100 + i)
        tifffile.imwrite(folder / f"field_{i:03d}.tif", np.clip(s.image, 0, 65535).astype(np.uint16))


def run_one(folder: Path, out: Path, method: str, extra: list[str], env: dict[str, str]) -> float:
    cmd = [sys.executable, "-m", "nucleoscope", "run", str(folder), "-o", str(out), "--method", method,
           "--features", "default", "-q", *extra]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **env})
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--method", default="otsu")
    args = ap.parse_args()
    one_thread = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    plan = [("1 process, 1 thread (baseline)", [], one_thread),
            ("1 process, all cores", [], {}),
            ("--jobs 2", ["--jobs", "2"], {}),
            ("--scheduler local:2 (Dask, 2 workers x 1 thread)", ["--scheduler", "local:2"], {})]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        make_batch(folder, args.n)
        base = None
        for k, (label, extra, env) in enumerate(plan):
            secs = run_one(folder, Path(tmp) / f"out{k}", args.method, extra, env)
            base = base or secs
            rows.append(f"| {label} | {secs:.1f} | {secs / args.n:.2f} | {base / secs:.2f} |")
            print(rows[-1], flush=True)
    md = (f"## Scale-out: one process, a process pool and a Dask cluster\n\n{stamp()}\n\n"
          f"`python bench/scale.py --n {args.n} --method {args.method}`: {args.n} synthetic 1024² fields, "
          f"`nucleoscope run --method {args.method} --features default`, wall time of the whole command in a "
          "fresh process (start-up of the pool or cluster included). Speed-up against one process with one "
          "thread per library, in the same run.\n\n"
          "| run | seconds | s / image | speed-up |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    write_section("scale", md)


if __name__ == "__main__":
    main()
