"""Realism check of the synthetic data: statistics of synthetic vs real images, plus generator timings.

Compares ``nucleoscope.synth`` defaults with the real train splits in ../shared/data (bbbc039,
kromp2020_sbsst265 for wide-field nuclei; storm_nuclei_mela_liu2021 for STORM renderings): intensity of
nuclei and background (fraction of the detector's full scale), nucleus size, nearest-neighbour distance,
a texture measure and the signal-to-noise ratio. Overlap = histogram intersection of the two normalised
distributions (1 = identical, 0 = disjoint). Writes docs/figures/synth_realism.png,
docs/figures/synth_examples.png, docs/figures/synth_gallery.png, the table into docs/synth.md (between the realism markers) and into the
"synth-realism" section of docs/benchmarks.md.

Run: ``.venv/bin/python bench/synth_realism.py [--n-synth 40]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import stamp, write_section  # noqa: E402

from nucleoscope.synth import nuclei_field, storm_field  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FIG = ROOT / "docs" / "figures"
DOC = ROOT / "docs" / "synth.md"


def nuclei_stats(image: np.ndarray, labels: np.ndarray, fs: float) -> dict[str, np.ndarray]:
    """Per-nucleus and per-image statistics of one wide-field image (intensities as fraction of ``fs``)."""
    img = image.astype(np.float64) / fs
    n = int(labels.max())
    idx = np.arange(1, n + 1)
    area = ndi.sum_labels(np.ones_like(img), labels, idx)
    ok = area >= 10
    mean = ndi.mean(img, labels, idx)
    sd = ndi.standard_deviation(img, labels, idx)
    bg = img[labels == 0]
    bg_med = np.median(bg)
    noise = 1.4826 * np.median(np.abs(bg - bg_med)) + 1e-9
    cy, cx = np.asarray(ndi.center_of_mass(np.ones_like(img), labels, idx)).reshape(-1, 2).T
    diam = 2 * np.sqrt(area / np.pi)
    if n >= 2:
        d, j = cKDTree(np.c_[cy, cx]).query(np.c_[cy, cx], k=2)
        nn = d[:, 1] / (0.5 * (diam + diam[j[:, 1]]))
    else:
        nn = np.full(n, np.nan)
    return {
        "nucleus intensity": mean[ok],
        "background": np.array([bg_med]),
        "diameter (px)": diam[ok],
        "median diameter per image (px)": np.array([np.median(diam[ok])]) if ok.any() else np.zeros(0),
        "NN distance / diameter": nn[ok],
        "texture CV": (sd / np.maximum(mean, 1e-9))[ok],
        "SNR": np.array([(np.median(img[labels > 0]) - bg_med) / noise]),
    }


def storm_stats(image: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    img = image.astype(np.float64) / 255.0
    n = int(labels.max())
    idx = np.arange(1, n + 1)
    area = ndi.sum_labels(np.ones_like(img), labels, idx)
    zero = ndi.mean((img == 0).astype(float), labels, idx)
    return {
        "nucleus intensity": ndi.mean(img, labels, idx),
        "empty px in nuclei": zero,
        "diameter (px)": 2 * np.sqrt(area / np.pi),
        "texture CV": ndi.standard_deviation(img, labels, idx) / np.maximum(ndi.mean(img, labels, idx), 1e-9),
        "non-empty background": np.array([(img[labels == 0] > 0).mean()]),
    }


def collect(pairs, fn) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    for args in pairs:
        for k, v in fn(*args).items():
            out.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def real_pairs(name: str, split: str = "train"):
    folder = DATA / name / split
    for p in sorted((folder / "images").glob("*.tif")):
        image = tifffile.imread(p)
        if image.ndim == 3:
            image = image[..., 0] if image.shape[-1] in (3, 4) else image[0]
        labels = tifffile.imread(folder / "masks" / p.name).astype(np.int32)
        # bbbc039 is 12-bit in uint16, kromp uint8: compare as fractions of the detector full scale
        fs = 4095.0 if image.dtype == np.uint16 else 255.0
        yield image, labels, fs


def overlap(a: np.ndarray, b: np.ndarray, log: bool = False) -> float:
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if log:
        a, b = np.log(a[a > 0]), np.log(b[b > 0])
    lo, hi = np.percentile(np.r_[a, b], [0.5, 99.5])
    bins = np.linspace(lo, hi, 31)
    pa, _ = np.histogram(np.clip(a, lo, hi), bins)
    pb, _ = np.histogram(np.clip(b, lo, hi), bins)
    return float(np.minimum(pa / max(pa.sum(), 1), pb / max(pb.sum(), 1)).sum())


def summary(v: np.ndarray) -> str:
    v = v[np.isfinite(v)]
    q = np.percentile(v, [5, 50, 95])
    fmt = (lambda x: f"{x:.3g}")
    return f"{fmt(q[1])} [{fmt(q[0])}-{fmt(q[2])}]"


LOG = {"diameter (px)", "median diameter per image (px)", "SNR", "nucleus intensity", "background"}


def gallery(plt) -> None:
    """docs/figures/synth_gallery.png: every kind with its truth outlined."""
    from skimage.segmentation import find_boundaries

    from nucleoscope.synth import cells_field, chromatin_crops

    def show(ax, im, title, *outlines):
        im = im.astype(float)
        lo, hi = np.percentile(im, [0.5, 99.8])
        rgb = np.repeat(np.clip((im - lo) / max(hi - lo, 1e-9), 0, 1)[..., None], 3, axis=2)
        for mask, color in outlines:
            rgb[mask] = color
        ax.imshow(rgb)
        ax.set_title(title, fontsize=9)
        ax.axis("off")

    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4))
    s = nuclei_field((256, 256), rng=3, diameter=(22, 34), coverage=0.4, clump_fraction=0.6, overlap=0.25,
                     artifacts={"polygons": 1, "fibres": 1, "debris": 6, "blobs": 1})
    show(axes[0, 0], s.image, "nuclei_field: image")
    show(axes[0, 1], s.image, "truth (red), artifacts (cyan, unlabelled)",
         (find_boundaries(s.labels), (1, 0, 0)), (find_boundaries(s.artifact_mask) & (s.labels == 0), (0, 1, 1)))
    c = chromatin_crops(1, rng=2, parameter="compaction", values=(1.0, 2.0), paired=True, spread=0.0)
    both = np.concatenate([c.image[0], c.image[1]], axis=1)
    hcb = np.concatenate([find_boundaries(c.hc_mask[0]), find_boundaries(c.hc_mask[1])], axis=1)
    show(axes[0, 2], both, "chromatin_crops, paired: compaction 1 vs 2")
    show(axes[0, 3], both, "heterochromatin truth (yellow)", (hcb, (1, 1, 0)))
    st = storm_field((256, 256), rng=5, diameter=(70, 90), noise_regions=0.6, coverage=0.35)
    show(axes[1, 0], st.image, "storm_field: image")
    show(axes[1, 1], st.image, "nuclei (red), noise regions (cyan)",
         (find_boundaries(st.labels), (1, 0, 0)), (find_boundaries(st.noise_mask), (0, 1, 1)))
    ce = cells_field((256, 256), rng=4, cell_diameter=(50, 70), coverage=0.5, clump_fraction=0.9)
    show(axes[1, 2], ce.cell_image, "cells_field: cell channel, cells (yellow)",
         (find_boundaries(ce.cell_labels), (1, 1, 0)))
    show(axes[1, 3], ce.image, "nucleus channel, nuclei (red)", (find_boundaries(ce.labels), (1, 0, 0)))
    fig.tight_layout()
    fig.savefig(FIG / "synth_gallery.png", dpi=70)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-synth", type=int, default=40)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(2026)
    synth = [nuclei_field((512, 512), rng=rng) for _ in range(args.n_synth)]
    syn = collect(((s.image, s.labels, 4095.0) for s in synth), nuclei_stats)
    sets = {
        "bbbc039": collect(real_pairs("bbbc039"), nuclei_stats),
        "kromp2020_sbsst265": collect(real_pairs("kromp2020_sbsst265"), nuclei_stats),
    }
    storm_syn = [storm_field((512, 512), rng=rng) for _ in range(12)]
    st_syn = collect(((s.image, s.labels) for s in storm_syn), storm_stats)
    st_real = collect(((im, lab) for im, lab, _ in real_pairs("storm_nuclei_mela_liu2021")), storm_stats)

    rows = ["| statistic | synthetic: median [5-95 %] | real set | real: median [5-95 %] | overlap |",
            "|---|---|---|---|---|"]
    for key in syn:
        for name, real in sets.items():
            rows.append(f"| {key} | {summary(syn[key])} | {name} | {summary(real[key])} | "
                        f"{overlap(syn[key], real[key], key in LOG):.2f} |")
    for key in st_syn:
        rows.append(f"| STORM {key} | {summary(st_syn[key])} | storm_nuclei_mela_liu2021 | "
                    f"{summary(st_real[key])} | {overlap(st_syn[key], st_real[key], key == 'diameter (px)'):.2f} |")
    table = "\n".join(rows)
    n_nuc = {k: len(v["diameter (px)"]) for k, v in sets.items()}
    counts = (f"Synthetic: {args.n_synth} `nuclei_field` 512x512 images at default settings "
              f"({len(syn['diameter (px)'])} nuclei) and 12 `storm_field` frames; real: train splits "
              f"(bbbc039 {n_nuc['bbbc039']} nuclei, kromp {n_nuc['kromp2020_sbsst265']} nuclei, STORM 3 images).")

    # timings
    t = []
    for k in range(20):
        t0 = time.perf_counter()
        nuclei_field((512, 512), rng=k)
        t.append(time.perf_counter() - t0)
    t_dense = []
    for k in range(5):
        t0 = time.perf_counter()
        nuclei_field((512, 512), rng=k, diameter=(8, 12), coverage=0.45)
        t_dense.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    big = storm_field((5120, 5120), rng=0, tile=512)
    t_storm = time.perf_counter() - t0
    timing = "\n".join([
        "| generator | time |", "|---|---|",
        f"| `nuclei_field` 512x512, defaults (20 seeds) | median {np.median(t):.3f} s, max {np.max(t):.3f} s |",
        f"| `nuclei_field` 512x512, 8-12 px nuclei at 45 % coverage (5 seeds) | median {np.median(t_dense):.3f} s |",
        f"| `storm_field` 5120x5120, 512 px tiles ({len(big.objects)} nuclei) | {t_storm:.1f} s |",
    ])
    del big

    # figure 1: histograms
    keys = list(syn)
    fig, axes = plt.subplots(2, 5, figsize=(20, 7))
    for k, (ax, key) in enumerate(zip(axes.ravel(), keys + list(st_syn)[:3])):
        storm = k >= len(keys)
        src = [("synthetic", st_syn[key] if storm else syn[key])]
        src += [("STORM real", st_real[key])] if storm else list((n, v[key]) for n, v in sets.items())
        allv = np.concatenate([v[np.isfinite(v)] for _, v in src])
        log = key in LOG and (allv > 0).all()
        lo, hi = np.percentile(allv, [0.5, 99.5])
        bins = np.geomspace(max(lo, 1e-4), hi, 40) if log else np.linspace(lo, hi, 40)
        for name, v in src:
            ax.hist(np.clip(v[np.isfinite(v)], bins[0], bins[-1]), bins, density=True, histtype="step", lw=1.5,
                    label=name)
        if log:
            ax.set_xscale("log")
        ax.set_title(("STORM: " if storm else "") + key, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("Synthetic (defaults) vs real train data")
    fig.tight_layout()
    FIG.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIG / "synth_realism.png", dpi=80)
    plt.close(fig)

    # figure 2: examples side by side (256 px crops, each scaled to its own 0.5-99.8 percentiles)
    def crop(im):
        return im[:256, :256].astype(float)

    reals = [next(iter(real_pairs(n)))[0] for n in ("bbbc039", "kromp2020_sbsst265", "storm_nuclei_mela_liu2021")]
    fakes = [synth[0].image, nuclei_field((512, 512), rng=7, dtype="uint8").image, storm_syn[0].image]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    for ax, im, title in zip(axes.ravel(), reals + fakes,
                             ["real bbbc039", "real kromp", "real STORM", "synthetic nuclei",
                              "synthetic nuclei (uint8)", "synthetic STORM"]):
        c = crop(im)
        lo, hi = np.percentile(c, [0.5, 99.8])
        ax.imshow(c, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(FIG / "synth_examples.png", dpi=70)
    plt.close(fig)

    gallery(plt)

    section = f"## Synthetic data realism\n\n{stamp()}\n\n{counts}\n\n{table}\n\n### Generator timings\n\n{timing}\n"
    print(section)
    write_section("synth-realism", section)
    if DOC.exists():
        text = DOC.read_text()
        begin, end = "<!-- begin realism -->", "<!-- end realism -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            DOC.write_text(head + begin + "\n" + section.replace("## Synthetic data realism", "").strip() + "\n"
                           + end + rest.split(end, 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
