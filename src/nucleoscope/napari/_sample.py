"""Sample data: a bundled BBBC039 field, and a synthetic field with its exact truth."""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np

__all__ = ["BBBC039_FIELD", "bbbc039_field", "synthetic_field"]

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
