"""Sample data: a bundled BBBC039 field, a synthetic field with its exact truth, and a synthetic field of
two nucleus classes (small and large) for the Classify widget."""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np

__all__ = ["BBBC039_FIELD", "bbbc039_field", "synthetic_field", "two_class_field"]

#: the bundled field the sample opens (117 annotated nuclei, some touching; ``nucleoscope/data/README.md``)
BBBC039_FIELD = "IXMtest_A16_s3"


def bbbc039_field() -> list[tuple[Any, dict, str]]:
    """The bundled BBBC039 field ``IXMtest_A16_s3`` (U2OS, Hoechst, 12-bit), read by :func:`nucleoscope.io.read_image`."""
    from ..io import read_image

    img = read_image(resources.files("nucleoscope") / "data" / f"{BBBC039_FIELD}.tif")
    meta = {"spacing_um": img.spacing, "saturation": img.saturation, "source": "bundled BBBC039 v1 (CC0)"}
    return [(img.data, {"name": img.name, "metadata": meta}, "image")]


def synthetic_field(seed: int = 0, shape: tuple[int, int] = (512, 512)) -> list[tuple[Any, dict, str]]:
    """A synthetic wide-field nuclei image (:func:`nucleoscope.synth.nuclei_field`) and its truth labels."""
    from ..synth import nuclei_field

    s = nuclei_field(shape, rng=np.random.default_rng(seed), scale_range=(20.0, 40.0))
    image = s.image.astype(np.float32)
    meta = {"saturation": 4095.0, "source": f"nucleoscope.synth.nuclei_field, seed {seed}"}
    return [(image, {"name": f"synthetic_{seed}", "metadata": meta}, "image"),
            (s.labels.astype(np.int32), {"name": f"synthetic_{seed} truth", "visible": False}, "labels")]


def two_class_field(seed: int = 0, side: int = 192) -> list[tuple[Any, dict, str]]:
    """A synthetic image of two nucleus classes with its truth: small nuclei (13-16 px across) in the left
    half, large ones (27-31 px) in the right half (two :func:`nucleoscope.synth.nuclei_field` images side
    by side, ``side`` px each).

    Returns the image ``two_classes_<seed>`` and its truth labels ``two_classes_<seed> nuclei``, whose
    table (``features``) holds each nucleus's class in the column ``TrueClass`` (``small`` / ``large``):
    the Classify widget trains on it as it is (it measures the nuclei first).
    """
    import pandas as pd

    from ..synth import nuclei_field

    a = nuclei_field((side, side), rng=seed, diameter=(13, 16), artifacts=0, coverage=0.3)
    b = nuclei_field((side, side), rng=seed + 100, diameter=(27, 31), artifacts=0, coverage=0.3)
    la, lb = a.labels.astype(np.int32), b.labels.astype(np.int32)
    lb = np.where(lb > 0, lb + la.max(), 0).astype(np.int32)
    labels = np.concatenate([la, lb], axis=1)
    image = np.concatenate([a.image, b.image], axis=1).astype(np.float32)
    ids = np.unique(labels[labels > 0])
    table = pd.DataFrame({"ObjectNumber": ids.astype(np.int64),
                          "TrueClass": np.where(ids <= la.max(), "small", "large")})
    name = f"two_classes_{seed}"
    meta = {"saturation": 4095.0, "source": f"nucleoscope.synth.nuclei_field, seeds {seed} and {seed + 100}"}
    return [(image, {"name": name, "metadata": meta}, "image"),
            (labels, {"name": f"{name} nuclei", "features": table, "metadata": {"source_image": name}}, "labels")]
