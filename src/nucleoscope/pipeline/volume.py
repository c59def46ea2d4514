"""The ``run --3d`` job: each (Z, Y, X) stack segmented slice by slice with a 2D method, the slices
linked into 3D nuclei (:mod:`nucleoscope.volume`), one table row per 3D nucleus. Driven by the batch
engine like ``run``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .. import InputError
from .engine import BASE_IMAGE_COLUMNS, BatchJob, Item, run_jobs

__all__ = ["VOLUME_IMAGE_COLUMNS", "VolumeConfig", "VolumeJob", "run_volume_batch"]

VOLUME_IMAGE_COLUMNS = BASE_IMAGE_COLUMNS + ["Method", "PixelSize_um", "SpacingZ_um", "Slices", "Objects2D",
                                             "Diameter_px", "Warnings"]


@dataclass(frozen=True)
class VolumeConfig:
    """Parameters of a 3D run (all change the results, so all enter the resume key).

    Attributes
    ----------
    method : str
        2D segmenter applied to every slice (``"auto"`` resolved once per run).
    pixel_size, spacing_z : float or None
        Lateral and z spacing in µm, overriding the files' metadata; without either, the ``_um``
        columns are in lateral px with isotropic voxels assumed for the missing one.
    channel : int or None
    diameter : float or None
        Typical lateral nucleus diameter in px; ``None``: estimated per stack.
    min_iou, neck_ratio, min_slices
        Slice linking (:func:`nucleoscope.volume.link_slices`).
    segment_options : dict
    """

    method: str = "auto"
    pixel_size: float | None = None
    spacing_z: float | None = None
    channel: int | None = None
    diameter: float | None = None
    min_iou: float = 0.2
    neck_ratio: float | None = 0.5
    min_slices: int = 2
    segment_options: dict = field(default_factory=dict)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class VolumeJob(BatchJob):
    """``nucleoscope run --3d`` as a batch job."""

    config: VolumeConfig
    model_info: dict

    kind = "run3d"
    report = False  # report.html draws 2D nuclei; the 3D table is read as is

    def key(self) -> str:
        return hashlib.sha256(json.dumps([self.config.key(), self.model_info], sort_keys=True).encode()).hexdigest()[:16]

    def image_columns(self) -> list[str]:
        return list(VOLUME_IMAGE_COLUMNS)

    def table_columns(self) -> list[str]:
        from ..volume import VOLUME_COLUMNS

        return ["ImageName"] + VOLUME_COLUMNS

    def outputs(self, out: Path, name: str) -> list[Path]:
        return [out / "labels" / f"{name}.tif"]

    def process(self, item: Item, out: Path, rec: dict[str, Any]) -> pd.DataFrame:
        from .. import io
        from ..volume import measure_volumes, segment_by_slices

        c = self.config
        st = io.read_stack(item.path, channel=c.channel, pixel_size=c.pixel_size, spacing_z=c.spacing_z)
        rec["Megapixels"] = st.data.size / 1e6
        try:
            labels, det = segment_by_slices(st.data, method=c.method, spacing=st.spacing, diameter=c.diameter,
                                            min_iou=c.min_iou, neck_ratio=c.neck_ratio, min_slices=c.min_slices,
                                            **c.segment_options)
        except InputError as exc:
            if exc.path is None:
                raise InputError(exc.problem, path=item.path) from exc
            raise
        lateral = st.spacing or 1.0
        dz = st.spacing_z or lateral
        table = measure_volumes(labels, st.data, spacing=(dz, lateral, lateral))
        table.insert(0, "ImageName", item.name)
        io.write_labels(out / "labels" / f"{item.name}.tif", labels, spacing=st.spacing)
        rec.update(Method=c.method, PixelSize_um=st.spacing or float("nan"), SpacingZ_um=st.spacing_z or float("nan"),
                   Slices=int(st.data.shape[0]), Objects2D=det.objects_2d, Diameter_px=det.diameter_px,
                   Warnings="; ".join(det.warnings))
        return table

    def parameters(self) -> dict[str, Any]:
        return asdict(self.config)

    def model(self) -> dict[str, Any]:
        return dict(self.model_info)


def run_volume_batch(inputs: Sequence[str | os.PathLike], out: str | os.PathLike,
                     config: VolumeConfig = VolumeConfig(), *, jobs: int = 1, show_progress: bool = True,
                     recursive: bool = False, command: str | None = None,
                     scheduler: str | None = None) -> pd.DataFrame:
    """Segment (Z, Y, X) stacks into 3D nuclei; returns the images table (one row per stack).

    Writes ``labels/<name>.tif`` ((Z, Y, X) int32), ``nuclei.parquet``/``.csv`` (one row per 3D nucleus,
    columns :data:`nucleoscope.volume.VOLUME_COLUMNS`), ``images.csv`` and ``run.json``; resumes like
    :func:`nucleoscope.pipeline.run_batch`.
    """
    from ..segment import resolve_method
    from .run import input_items, model_identity

    out = Path(out)
    items = input_items(inputs, out, recursive=recursive, what="stack")
    config = replace(config, method=resolve_method(config.method))
    job = VolumeJob(config, model_identity(config.method, config.segment_options))
    return run_jobs(job, items, out, jobs=jobs, show_progress=show_progress, command=command, inputs=inputs,
                    scheduler=scheduler)
