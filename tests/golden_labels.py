"""Write tests/data/golden_labels.json: SHA-256 of the labels every method gives on the bundled images and
on bbbc039/val, made with the code before the architecture refactor (commit f874bbd; the Kromp and 2048² entries with 8e9aa98, which holds the same src). The refactor is
behaviour-preserving; tests/test_golden_labels.py checks the labels stay bit-identical.

Run: python tests/golden_labels.py  (rewrites the file; do so only for an intended change of results)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conftest import SHARED_DATA  # noqa: E402

#: method -> how many of the sorted bbbc039/val images are hashed (50 = all; bundled: all three)
PLAN = {"nuset": 50, "otsu": 12, "classic": 6, "tissue": 6}


def label_hash(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int32).tobytes()).hexdigest()


def bundled_images() -> list[Path]:
    from importlib import resources

    root = Path(str(resources.files("nucleoscope") / "data"))
    return sorted(p for p in root.glob("*.tif") if not p.stem.endswith("_mask"))


def val_images() -> list[Path]:
    return sorted((SHARED_DATA / "bbbc039" / "val" / "images").glob("*.tif"))


def kromp_images() -> list[Path]:
    """Three of kromp2020's held-out train images (every 5th, sorted, as bench/nuset.py): larger fields
    than BBBC039's, where NuSeT's first look goes past its 512 px copy."""
    return sorted((SHARED_DATA / "kromp2020_sbsst265" / "train" / "images").glob("*.tif"))[::5][:3]


def large_field_hash(n: int = 2048) -> str:
    """NuSeT's labels of the first bundled image tiled to ``n`` x ``n`` (the benchmark's field)."""
    import tifffile

    from nucleoscope.segment.nuset import segment_nuset

    src = tifffile.imread(bundled_images()[0]).astype(np.float32)
    img = np.tile(src, (n // src.shape[0] + 1, n // src.shape[1] + 1))[:n, :n]
    return label_hash(segment_nuset(img, device="cpu")[0])


def compute(method: str, paths: list[Path]) -> dict[str, str]:
    from nucleoscope.io import read_image
    from nucleoscope.pipeline import analyze

    out = {}
    for p in paths:
        img = read_image(p)
        res = analyze(img.data, spacing=img.spacing, saturation=img.saturation, method=method)
        out[p.name] = label_hash(res.labels)
    return out


def main() -> None:
    golden = {"made_with": "commit f874bbd (before the architecture refactor), nucleoscope.pipeline.analyze",
              "bundled": {}, "bbbc039_val": {}}
    for m, n in PLAN.items():
        golden["bundled"][m] = compute(m, bundled_images())
        golden["bbbc039_val"][m] = compute(m, val_images()[:n])
        print(m, "done", flush=True)
    golden["kromp_nuset"] = compute("nuset", kromp_images())
    golden["large_field_nuset"] = large_field_hash()
    (HERE / "data" / "golden_labels.json").write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
