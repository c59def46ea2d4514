"""Benchmark harness: run a registered segmenter over a named dataset split and score it.

Library for the scripts in ``bench/`` (``bench/segment.py`` is the command line). A dataset is a folder
of ``../shared/data`` (or ``$NUCLEOSCOPE_DATA``) laid out as ``<dataset>/<split>/images/<name>.tif`` and
``<dataset>/<split>/masks/<name>.tif``. Images are read with :func:`nucleoscope.io.read_image`, segmented
with :func:`nucleoscope.segment.segment`, scored with :mod:`nucleoscope.metrics`, and timed: only the
segmentation call is timed (seconds per megapixel); peak RSS is the process's maximum resident set
(``resource.getrusage``), so run one benchmark per process for a clean number (``bench/segment.py``
does).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NUCLEOSCOPE_DATA", REPO.parent / "shared" / "data"))

logger = logging.getLogger("bench.harness")

__all__ = ["DATA", "Sample", "BenchResult", "list_datasets", "parse_spec", "load_split", "run_benchmark",
           "peak_rss_mb"]


@dataclass(frozen=True)
class Sample:
    """One image of a dataset split with its ground-truth label image."""

    name: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class BenchResult:
    """What one (method, dataset, split) run measured.

    Attributes
    ----------
    seconds : float
        Total wall time inside ``segment`` (excludes reading and scoring).
    megapixels : float
        Total image area segmented.
    s_per_mp : float
        ``seconds / megapixels``.
    peak_rss_mb : float
        Peak resident memory of this process so far (MiB).
    scores : nucleoscope.metrics.DatasetScores or None
        None when every image failed.
    failures : list of (name, message)
    """

    method: str
    dataset: str
    split: str
    n_images: int
    seconds: float
    megapixels: float
    s_per_mp: float
    peak_rss_mb: float
    min_size: int
    scores: Any = field(repr=False)
    failures: list = field(default_factory=list)

    def row(self) -> dict:
        """The numbers of the benchmark table."""
        s = self.scores
        def pooled(t, k):
            return getattr(s.pooled[t], k) if s is not None and t in s.pooled else float("nan")
        return {
            "method": self.method, "dataset": self.dataset, "split": self.split, "n_images": self.n_images,
            "n_failed": len(self.failures),
            "f1_0.5": pooled(0.5, "f1"), "f1_0.7": pooled(0.7, "f1"), "ap_0.5": pooled(0.5, "ap"),
            "splits": s.errors.split if s else 0, "merges": s.errors.merge if s else 0,
            "s_per_mp": self.s_per_mp, "peak_rss_mb": self.peak_rss_mb, "min_size": self.min_size,
        }


def list_datasets(root: Path = DATA) -> list[str]:
    """Dataset folders under ``root`` (those with at least one split holding images/ and masks/)."""
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and any((s / "images").is_dir() and (s / "masks").is_dir() for s in d.iterdir()
                                        if s.is_dir()))


def parse_spec(spec: str) -> tuple[str, str]:
    """``"bbbc039:val"`` -> ``("bbbc039", "val")``; a bare name means its ``val`` split, else ``train``."""
    if ":" in spec:
        name, split = spec.split(":", 1)
        return name, split
    root = DATA / spec
    return spec, "val" if (root / "val").is_dir() else "train"


def load_split(dataset: str, split: str, *, limit: int | None = None, root: Path = DATA) -> list[Sample]:
    """The samples of ``root/dataset/split``, sorted by name, the first ``limit`` of them.

    Raises
    ------
    FileNotFoundError
        Unknown dataset or split (the message lists what exists), or an image without its mask.
    """
    folder = root / dataset / split
    if not (folder / "images").is_dir():
        known = list_datasets(root)
        if dataset in known:
            splits = sorted(p.name for p in (root / dataset).iterdir() if (p / "images").is_dir())
            raise FileNotFoundError(f"{dataset} has no split {split!r}; splits: {', '.join(splits)}")
        raise FileNotFoundError(f"no dataset {dataset!r} under {root}; datasets: {', '.join(known) or 'none'}")
    samples = []
    for img in sorted((folder / "images").iterdir()):
        if img.name.startswith(".") or not img.is_file():
            continue
        stem = img.name.split(".")[0]
        masks = sorted((folder / "masks").glob(stem + ".*"))
        if not masks:
            raise FileNotFoundError(f"no mask for {img} in {folder / 'masks'}")
        samples.append(Sample(stem, img, masks[0]))
    return samples[:limit] if limit else samples


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def run_benchmark(method: str, dataset: str, split: str, *, limit: int | None = None, min_size: int = 10,
                  thresholds: tuple[float, ...] | None = None, hausdorff: bool = True, root: Path = DATA,
                  **options: Any) -> BenchResult:
    """Segment every image of a split with ``method``, score against the masks, and time it.

    Parameters
    ----------
    method : str
        A name from :func:`nucleoscope.segment.available_methods`.
    dataset, split : str
        Folder names under ``root``.
    limit : int, optional
        Only the first ``limit`` images (sorted by name).
    min_size : int
        Truth and predicted objects smaller than this (px) are ignored when scoring (BBBC039 annotates
        59 specks < 10 px).
    thresholds : tuple of float, optional
        IoU thresholds (default :data:`nucleoscope.metrics.DEFAULT_THRESHOLDS`).
    hausdorff : bool
        Score the Hausdorff distance of matched pairs.
    **options
        Passed to the segmenter.

    Timing excludes one warm-up call on the first image (imports and model loading).

    Returns
    -------
    BenchResult
        Images whose reading or segmentation raised are listed in ``failures`` and left out of the scores.
    """
    from nucleoscope import metrics as M
    from nucleoscope.io import read_image, read_labels
    from nucleoscope.segment import segment

    thresholds = tuple(thresholds or M.DEFAULT_THRESHOLDS)
    samples = load_split(dataset, split, limit=limit, root=root)
    scores, failures = [], []
    seconds = megapixels = 0.0
    if samples:
        # one untimed warm-up call: the first call pays imports (torch) and model loading once per
        # process, which is not the per-image cost a batch sees
        try:
            segment(read_image(samples[0].image).data, method=method, **options)
        except Exception:  # noqa: BLE001 - the timed loop records the failure
            pass
    for k, s in enumerate(samples):
        try:
            img = read_image(s.image)
            gt = read_labels(s.mask)
            t0 = time.perf_counter()
            labels, _ = segment(img.data, method=method, spacing=img.spacing, **options)
            dt = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - a benchmark records a failure and goes on
            logger.warning("%s on %s/%s/%s failed: %s: %s", method, dataset, split, s.name, type(exc).__name__, exc)
            failures.append((s.name, f"{type(exc).__name__}: {exc}"))
            continue
        seconds += dt
        megapixels += img.megapixels
        scores.append(M.evaluate_image(gt, labels, thresholds=thresholds, min_size=min_size,
                                       hausdorff=hausdorff, name=s.name))
        logger.info("%s %s/%s %d/%d %s: %.2f s, F1@0.5 %.3f", method, dataset, split, k + 1, len(samples), s.name,
                    dt, scores[-1].objects[thresholds[0]].f1)
    summary = M.summarize(scores) if scores else None
    return BenchResult(method=method, dataset=dataset, split=split, n_images=len(samples), seconds=seconds,
                       megapixels=megapixels, s_per_mp=seconds / megapixels if megapixels else float("nan"),
                       peak_rss_mb=peak_rss_mb(), min_size=min_size, scores=summary, failures=failures)
