"""Feature extraction speed: CPU ms per nucleus for each group on bbbc039/val (ground-truth masks).

Run: ``.venv/bin/python bench/features.py [--limit N] [--no-compare]``. Prints a table and writes the
``features`` section of docs/benchmarks.md. Times are CPU time of this process (``time.process_time``),
which is what a core spends per nucleus and is less disturbed than wall time on a shared machine; the
end-to-end rows are wall time of ``measure_nuclei`` (object finding and table building included).
Each group is also timed on the per-nucleus path (``_measure(batched=False)``, what measure_nuclei did
before the batched groups of features._batched) on the same nuclei in the same run. A second table times alternative implementations on the same nuclei (why Haralick uses mahotas on 32
gray levels).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _docs import stamp, write_section  # noqa: E402

from nucleoscope.features import GROUPS, FeatureConfig, feature_columns  # noqa: E402
from nucleoscope.features._table import _SETS, _measure, measure_nuclei  # noqa: E402
from nucleoscope.io import find_images, read_image, read_labels  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc039" / "val"

IMPLEMENTATION = {
    "_pixels": "batched groups' shared nucleus-pixel lists (features._batched.nucleus_pixels)",
    "shape": "numpy moments, scipy ConvexHull (Feret, convex area), skimage perimeter_crofton",
    "intensity": "batched: numpy, one sort of all pixels by (nucleus, value)",
    "lbp": "batched: skimage local_binary_pattern 'uniform' arithmetic at nucleus pixels, r = 1, 2, 3",
    "pftas": "batched: numpy, mahotas.pftas definition over nucleus pixels, skimage Otsu replicated",
    "zernike": "batched: mahotas zernike_moments (degree 6) written out in numpy",
    "haralick": "batched: one bincount per direction, mahotas haralick formulas, 32 gray levels",
    "chromatin": "batched: numpy, skimage threshold_otsu replicated",
    "runlength": "numpy (vectorised runs), 32 gray levels",
    "gabor": "skimage gabor_kernel, FFT (scipy.fft), 12 kernels",
}


def load(limit: int | None):
    paths = find_images([DATA / "images"])[:limit]
    for p in paths:
        img = read_image(p)
        yield p.stem, img.data, read_labels(DATA / "masks" / p.name), img.saturation


def compare(pairs, n_max: int = 300) -> str:
    """Alternative implementations of Haralick and LBP on the first ``n_max`` nuclei."""
    import mahotas
    from mahotas.features.lbp import lbp_transform
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    from nucleoscope.features import quantize
    from nucleoscope.features._objects import object_slices

    crops = []
    for _, image, labels, _ in pairs:
        ids, seq, slices = object_slices(labels)
        for k, sl in enumerate(slices):
            sl = (slice(max(sl[0].start - 4, 0), sl[0].stop + 4), slice(max(sl[1].start - 4, 0), sl[1].stop + 4))
            crops.append((image[sl].astype(np.float64), seq[sl] == k + 1))
            if len(crops) >= n_max:
                break
        if len(crops) >= n_max:
            break

    def glcm_sk(levels):
        def f(c, m):
            q = quantize(c, m, levels)  # 0 = outside; skimage cannot ignore it, so it is a level here
            g = graycomatrix(q.astype(np.uint16), [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                             levels=levels + 1, symmetric=True, normed=True)
            return [graycoprops(g, p).mean() for p in ("contrast", "ASM", "correlation", "homogeneity")]
        return f

    def har_mh(levels):
        return lambda c, m: mahotas.features.haralick(quantize(c, m, levels), ignore_zeros=True, return_mean=True)

    cands = {
        "Haralick, mahotas, 32 levels (used)": har_mh(32),
        "Haralick, mahotas, 256 levels": har_mh(256),
        "GLCM, skimage graycomatrix+graycoprops (4 props), 32 levels": glcm_sk(32),
        "GLCM, skimage graycomatrix+graycoprops (4 props), 256 levels": glcm_sk(256),
        "LBP r1-3, skimage 'uniform' (used)": lambda c, m: [local_binary_pattern(c, 8, r, "uniform") for r in (1, 2, 3)],
        "LBP r1-3, mahotas lbp_transform": lambda c, m: [lbp_transform(c, r, 8) for r in (1, 2, 3)],
    }
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, f in cands.items():
            t0 = time.process_time()
            for c, m in crops:
                f(c, m)
            rows.append((name, (time.process_time() - t0) / len(crops) * 1e3))
    lines = ["| implementation | CPU ms/nucleus |", "|---|---:|"]
    lines += [f"| {n} | {ms:.2f} |" for n, ms in rows]
    return f"Alternatives on the first {len(crops)} nuclei:\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--no-compare", action="store_true", help="skip the alternatives table")
    ap.add_argument("--no-write", action="store_true", help="print only, do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"data not found: {DATA}", file=sys.stderr)
        return 1
    pairs = list(load(args.limit))
    n_nuclei = sum(int(np.unique(lab).size - 1) for _, _, lab, _ in pairs)
    cfg = FeatureConfig()
    timings: dict[str, float] = {}
    before: dict[str, float] = {}  # the per-nucleus path (batched=False) on the same nuclei, same run
    for _, image, labels, sat in pairs:  # every group once, timed per group
        image = image.astype(np.float64)
        _measure(image, labels, feature_columns("all"), _SETS["all"], None, sat, cfg, before, batched=False)
        _measure(image, labels, feature_columns("all"), _SETS["all"], None, sat, cfg, timings)
    wall = {}
    for fs in ("shape", "default", "all"):
        t0 = time.perf_counter()
        for _, image, labels, sat in pairs:
            measure_nuclei(image, labels, feature_set=fs, saturation=sat)
        wall[fs] = (time.perf_counter() - t0) / n_nuclei * 1e3

    def ms(t: dict[str, float], g: str) -> float:
        return t.get(g, 0.0) / n_nuclei * 1e3

    lines = [
        "| group | columns | CPU ms/nucleus | per-nucleus path, same run | implementation |",
        "|---|---:|---:|---:|---|",
    ]
    for g in ["_pixels", *_SETS["all"]]:
        cols = len(GROUPS[g]) if g in GROUPS else ""
        lines.append(f"| {g} | {cols} | {ms(timings, g):.3f} | {ms(before, g):.3f} | {IMPLEMENTATION[g]} |")
    default_cpu = sum(ms(timings, g) for g in ["_pixels", *_SETS["default"]])
    default_before = sum(ms(before, g) for g in _SETS["default"])
    all_cpu, all_before = sum(timings.values()) / n_nuclei * 1e3, sum(before.values()) / n_nuclei * 1e3
    lines.append(
        f"| **default, all groups** | {len(feature_columns('default')) - 1} | **{default_cpu:.3f}** | "
        f"{default_before:.3f} | {default_before / default_cpu:.2f}x faster; target <= 1.0 ms |"
    )
    lines.append(f"| all, all groups | {len(feature_columns('all')) - 1} | {all_cpu:.3f} | {all_before:.3f} | |")
    e2e = ["| feature set | wall ms/nucleus, measure_nuclei end to end |", "|---|---:|"]
    e2e += [f"| {fs} | {ms:.3f} |" for fs, ms in wall.items()]
    table = "\n".join(lines) + "\n\n" + "\n".join(e2e)
    head = (f"bbbc039/val, {len(pairs)} images, {n_nuclei} ground-truth nuclei (median area "
            f"{np.median(np.concatenate([np.bincount(lab.ravel())[1:] for _, _, lab, _ in pairs])):.0f} px), "
            "one process.")
    body = f"{head}\n\n{table}"
    if not args.no_compare:
        body += "\n\n" + compare(pairs)
    print(body)
    if not args.no_write:
        write_section("features", f"## Feature extraction speed\n\n{stamp()}\n\n{body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
