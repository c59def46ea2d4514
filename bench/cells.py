"""Whole-cell benchmark (issue 17): cells grown from nuclei on aits_u2os_wholecell/val, against its cell masks.

Run from the repository root: ``python bench/cells.py [--grid] [--limit N]``. Writes the ``cells``
section of docs/benchmarks.md. The masks are only scored against (settings are chosen on val with
``--grid``; nothing is trained on them); test stays hidden.

Per field: nuclei by the default nucleus segmenter (``auto``), then ``segment_cells`` on the cell channel.
Scores pooled over fields:

* **mIoU (matched)**: mean IoU of the one-to-one matched pairs at IoU >= 0.5, and **F1@0.5**;
* **mIoU (per cell)**: each true cell's best IoU with any predicted cell (0 when none), averaged;
* the same for **clump-edge** true cells (touching another cell and the background) and for the others;
* an oracle row seeded by the true nucleus masks (>= 50 px), which separates cell growth from nucleus errors.

Time: the whole field (nuclei + cells), single process, 2 torch threads.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = Path(os.environ.get("NUCLEOSCOPE_DATA", REPO.parent / "shared" / "data")) / "aits_u2os_wholecell"


def load(split: str, limit: int | None):
    import tifffile

    out = []
    for f in sorted((DATA / split / "images").glob("*_cells.tif"))[:limit]:
        field = f.name[: -len("_cells.tif")]
        out.append((field, tifffile.imread(DATA / split / "images" / f"{field}_nuclei.tif").astype(np.float32),
                    tifffile.imread(f).astype(np.float32),
                    tifffile.imread(DATA / split / "masks" / f"{field}_cells.tif").astype(np.int32),
                    tifffile.imread(DATA / split / "masks" / f"{field}_nuclei.tif").astype(np.int32)))
    return out


def clump_edge(gt: np.ndarray) -> set[int]:
    """Ids of true cells touching another cell and the background (8-neighbourhood)."""
    from scipy.ndimage import grey_dilation

    ids = set()
    for i in np.unique(gt[gt > 0]):
        ring = grey_dilation((gt == i).astype(np.uint8), size=(3, 3)).astype(bool) & (gt != i)
        vals = gt[ring]
        if (vals == 0).any() and (vals > 0).any():
            ids.add(int(i))
    return ids


def score(pairs) -> dict:
    """Pooled scores over ``[(gt, pred)]``."""
    from nucleoscope.metrics import match

    tp = fp = fn = 0
    s_iou, best, edge_best, inner_best = 0.0, [], [], []
    for gt, pred in pairs:
        m = match(gt, pred, thresh=0.5)
        tp, fp, fn, s_iou = tp + m.tp, fp + m.fp, fn + m.fn, s_iou + m.sum_matched_iou
        b = {int(i): 0.0 for i in np.unique(gt[gt > 0])}
        _best_iou(gt, pred, b)
        edge = clump_edge(gt)
        best += list(b.values())
        edge_best += [v for k, v in b.items() if k in edge]
        inner_best += [v for k, v in b.items() if k not in edge]
    return {"miou": s_iou / max(tp, 1), "f1": 2 * tp / max(2 * tp + fp + fn, 1), "best": float(np.mean(best)),
            "edge": float(np.mean(edge_best)) if edge_best else float("nan"), "n_edge": len(edge_best),
            "inner": float(np.mean(inner_best)) if inner_best else float("nan"), "n": len(best), "tp": tp,
            "fp": fp, "fn": fn}


def _best_iou(gt: np.ndarray, pred: np.ndarray, best: dict) -> None:
    """Fill ``best[g]`` with true cell g's highest IoU with any predicted cell."""
    g, p = gt.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    ga = np.bincount(g)
    pa = np.bincount(p)
    both = (g > 0) & (p > 0)
    key = g[both] * (p.max() + 1) + p[both]
    u, inter = np.unique(key, return_counts=True)
    gi, pi = u // (p.max() + 1), u % (p.max() + 1)
    iou = inter / (ga[gi] + pa[pi] - inter)
    for a, v in zip(gi, iou):
        if v > best[int(a)]:
            best[int(a)] = float(v)


def nuclei_of(fields, method: str):
    from nucleoscope.pipeline.analyze import analyze

    out, times = [], []
    for _, nuc, *_ in fields:
        t = time.perf_counter()
        out.append(analyze(nuc, method=method, feature_set="shape").labels)
        times.append(time.perf_counter() - t)
    return out, times


def true_nuclei(fields, min_size: int = 50):
    from skimage.morphology import remove_small_objects

    return [remove_small_objects(f[4], max_size=min_size - 1) for f in fields]


def run_cells(fields, nuclei, config):
    from nucleoscope.segment.cells import segment_cells

    preds, times = [], []
    for f, nl in zip(fields, nuclei):
        t = time.perf_counter()
        preds.append(segment_cells(f[2], nl, config).cells)
        times.append(time.perf_counter() - t)
    return preds, times


def fmt(name: str, s: dict, sec: float | None) -> str:
    t = f"{sec:.1f}" if sec is not None else "–"
    return (f"| {name} | {s['miou']:.3f} | {s['f1']:.3f} | {s['best']:.3f} | {s['edge']:.3f} ({s['n_edge']}) | "
            f"{s['inner']:.3f} ({s['n'] - s['n_edge']}) | {s['tp']}/{s['fp']}/{s['fn']} | {t} |")


def grid(fields, nuclei) -> None:
    from nucleoscope.segment.cells import CellConfig

    for alpha, kappa, comp in itertools.product([0.6, 0.7, 0.8, 0.85], [0.5, 1.0], [0.0, 0.001, 0.01]):
        c = CellConfig(alpha=alpha, kappa=kappa, compactness=comp)
        s = score(zip([f[3] for f in fields], run_cells(fields, nuclei, c)[0]))
        print(f"alpha={alpha} kappa={kappa} compactness={comp}: mIoU {s['miou']:.3f} F1 {s['f1']:.3f} "
              f"best {s['best']:.3f}", flush=True)


def main(argv=None) -> int:
    import torch

    from _docs import stamp, write_section
    from nucleoscope.segment.cells import CellConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, help="first N val fields only (no docs section written)")
    ap.add_argument("--grid", action="store_true", help="print a settings grid on val instead of the table")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    fields = load("val", args.limit)
    seg, t_nuc = nuclei_of(fields, "auto")
    if args.grid:
        grid(fields, seg)
        return 0
    gts = [f[3] for f in fields]
    rows = []
    preds, t_cell = run_cells(fields, seg, CellConfig())
    rows.append(fmt("propagate (segmented nuclei, `auto`)", score(zip(gts, preds)),
                    float(np.mean(np.add(t_nuc, t_cell)))))
    preds, _ = run_cells(fields, true_nuclei(fields), CellConfig())
    rows.append(fmt("propagate (oracle: true nuclei >= 50 px)", score(zip(gts, preds)), None))
    table = "\n".join(["| method | mIoU matched | F1@0.5 | mIoU per cell | clump edge (n) | others (n) | "
                       "TP/FP/FN | s / field |", "|---|---|---|---|---|---|---|---|", *rows])
    print(table)
    if args.limit:
        return 0
    d = CellConfig()
    md = (f"## Whole cells (`bench/cells.py`)\n\n{stamp()}\n\naits_u2os_wholecell/val, {len(fields)} fields "
          f"1104², {sum(len(np.unique(g)) - 1 for g in gts)} true cells. Settings (chosen on val with `--grid`): "
          f"alpha {d.alpha}, kappa {d.kappa}, compactness {d.compactness}, sigma {d.sigma}. mIoU matched = mean IoU "
          f"of pairs matched at IoU >= 0.5; per cell = each true cell's best IoU (0 if none); clump edge = true "
          f"cells touching another cell and the background. Time: nuclei (NuSeT) + cells per field, 2 threads.\n\n"
          f"{table}\n\nTargets (issue 17): mIoU >= 0.80 and >= propagation + 0.05 for the self-supervised network "
          f"(not built yet: only the propagation baseline is measured here); paper: 0.814 (IF), CellProfiler 0.69.\n")
    print(write_section("cells", md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
