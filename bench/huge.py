"""Benchmark: segmenting a huge image lazily, labels written tile by tile to OME-Zarr, vs in memory.

A synthetic 2048 x 2048 field (``nucleoscope.synth.nuclei_field``, rng 11, as ``bench/large.py``) is
repeated to the image size and stored as a uint16 OME-Zarr image (chunks 1024²). Each row runs in a
fresh process and reports its wall time and peak resident memory (``getrusage`` of the child):

- **lazy**: ``io.open_image_lazy`` -> ``segment_large(..., sink=io.ZarrLabelSink(...))``: the image read
  tile by tile, the labels' final rows written to the store's image-label as the tiles go, both
  pyramids computed block by block;
- **in memory**: ``io.read_image`` (the whole image as float32) -> ``segment_large`` (whole int32
  labels) -> ``io.write_ome_zarr`` (what ``run --ome-zarr`` does for an image today).

Both use ``--method otsu`` with the default 4096 px tiles and the diameter planned on crops; the two
label stores are compared block by block. Measuring is not included (``run`` still measures on the
whole image). Sizes in ``--lazy-only`` run the lazy route alone (the in-memory one would take as long
again). Run: ``nice python bench/huge.py [--sizes 8192 16384] [--lazy-only 20480]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _docs import stamp, write_section

CHILD = r"""
import sys, time
import numpy as np
from nucleoscope import io
from nucleoscope.segment.tiled import segment_large
mode, src, out = sys.argv[1:4]
t = time.perf_counter()
if mode == "lazy":
    lazy = io.open_image_lazy(src)
    with io.ZarrLabelSink(out, lazy.data, spacing=lazy.spacing) as sink:
        _, det = segment_large(lazy.data, method="otsu", spacing=lazy.spacing, sink=sink)
else:
    img = io.read_image(src)
    labels, det = segment_large(img.data, method="otsu", spacing=img.spacing)
    io.write_ome_zarr(out, img.data.astype(np.uint16), labels, spacing=img.spacing)
print(time.perf_counter() - t, det.n_tiles)
"""


def make_store(path: Path, size: int) -> None:
    """A size x size uint16 OME-Zarr image of a repeated synthetic field."""
    from nucleoscope import io
    from nucleoscope.synth import nuclei_field

    s = nuclei_field((2048, 2048), rng=11)
    base = np.clip(s.image, 0, 65535).astype(np.uint16)
    reps = -(-size // 2048)
    io.write_ome_zarr(path, np.tile(base, (reps, reps))[:size, :size], spacing=0.5)


def run_one(mode: str, src: Path, out: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS GiB, tiles) of one segmentation in a fresh process."""
    probe = ("import resource, subprocess, sys; "
             "r = subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True); "
             "print(r.stdout.strip(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", probe, sys.executable, "-c", CHILD, mode, str(src), str(out)],
                         check=True, capture_output=True, text=True)
    secs, tiles, kib = res.stdout.split()[-3:]
    return float(secs), int(kib) / 2**20, int(tiles)


def same_labels(a: Path, b: Path) -> tuple[bool, int]:
    """Whether two stores' level-0 labels are equal (compared in row blocks), and the nuclei count."""
    import zarr

    la, lb = (zarr.open_group(str(p), mode="r")["labels/nuclei/s0"] for p in (a, b))
    same, n = la.shape == lb.shape, 0
    for r in range(0, la.shape[0], 1024):
        x, y = np.asarray(la[r:r + 1024]), np.asarray(lb[r:r + 1024])
        same &= bool(np.array_equal(x, y))
        n = max(n, int(x.max(initial=0)))
    return same, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    ap.add_argument("--lazy-only", type=int, nargs="*", default=[], metavar="SIZE",
                    help="sizes to run the lazy route alone")
    ap.add_argument("--no-docs", action="store_true", help="print only, do not write docs/benchmarks.md")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in sorted(set(args.sizes) | set(args.lazy_only)):
            src = tmp / f"field_{size}.ome.zarr"
            make_store(src, size)
            outs = {}
            modes = ("lazy",) if size in args.lazy_only else ("lazy", "memory")
            for mode in modes:
                outs[mode] = tmp / f"{mode}_{size}.ome.zarr"
                secs, peak, tiles = run_one(mode, src, outs[mode])
                rows.append([size, mode, secs, peak, tiles])
                print(f"{size}² {mode}: {secs:.1f} s, peak {peak:.2f} GiB, {tiles} tiles", flush=True)
            same, n = same_labels(outs["lazy"], outs.get("memory", outs["lazy"]))
            for r in rows[-len(modes):]:
                r += [n, same if len(modes) == 2 else None]
            for p in (src, *outs.values()):
                subprocess.run(["rm", "-rf", str(p)], check=True)
    lines = ["## Huge images: lazy tiles to OME-Zarr vs in memory (`bench/huge.py`)", "", stamp(), "",
             "A synthetic 2048² field repeated to the size, a uint16 OME-Zarr image; `--method otsu`, 4096 px "
             "tiles, each row in a fresh process. **lazy**: `io.open_image_lazy` -> `segment_large(sink="
             "io.ZarrLabelSink(...))`, the labels written tile by tile to the store, pyramids block by block; "
             "**in memory**: `io.read_image` -> `segment_large` -> `io.write_ome_zarr` (today's `run "
             "--ome-zarr` minus measuring). Peak = the process's maximum resident memory. Labels compared "
             "between the two stores, block by block.", "",
             "| image | route | seconds | s/MP | peak RSS (GiB) | tiles | nuclei | labels |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for size, mode, secs, peak, tiles, n, same in rows:
        mp = size * size / 1e6
        lines.append(f"| {size}² | {mode} | {secs:.1f} | {secs / mp:.3f} | {peak:.2f} | {tiles} | {n} | "
                     f"{'not compared' if same is None else 'identical' if same else 'DIFFER'} |")
    text = "\n".join(lines)
    print(text)
    if not args.no_docs:
        write_section("huge", text)


if __name__ == "__main__":
    main()
