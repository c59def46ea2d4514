"""The ``track`` job: segment every frame of a movie (one engine item per frame, so a killed run
resumes frame by frame), then link the nuclei through time (:func:`nucleoscope.track.track_nuclei`) and
write the Cell Tracking Challenge result format, a tracks table and a napari-ready CSV.

Output folder::

    maskNNN.tif        uint16 nuclei labelled with their track id (CTC result format)
    res_track.txt      one line ``L B E P`` per track (id, first frame, last frame, parent or 0)
    tracks.csv         track_id, t, y, x, label, parent: napari's Tracks layer (data = first four
                       columns, graph = parent); also tracks.parquet
    labels/<frame>.tif per-frame labels as segmented; images.csv, nuclei.csv (centroids), run.json,
    tracking.json      linking parameters, counts and seconds
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import InputError
from .engine import BASE_IMAGE_COLUMNS, OUTPUT_SUBFOLDERS, BatchJob, Item, run_jobs

__all__ = ["FrameItem", "TrackConfig", "TrackJob", "track_movie"]


@dataclass(frozen=True)
class FrameItem(Item):
    """One frame: a file of its own, or plane ``plane`` of a (T, Y, X) file."""

    plane: int | None = None


@dataclass(frozen=True)
class TrackConfig:
    """Parameters of a tracking run.

    Attributes
    ----------
    method : str
        Segmenter of every frame (``"auto"`` resolved once).
    pixel_size : float or None
    diameter : float or None
        Typical nucleus diameter in px; ``None``: estimated per frame.
    max_distance, max_gap, division_distance, division_min_frames
        Linking (:func:`nucleoscope.track.track_nuclei`), distances in px.
    min_area : int
        Drop segmented objects smaller than this (px) before linking.
    segment_options : dict
    """

    method: str = "auto"
    pixel_size: float | None = None
    diameter: float | None = None
    max_distance: float = 30.0
    max_gap: int = 1
    division_distance: float | None = 40.0
    division_min_frames: int = 3
    min_area: int = 0
    segment_options: dict = field(default_factory=dict)

    def segment_key(self) -> str:
        """Hash of what changes a frame's segmentation (linking options re-link without re-segmenting)."""
        d = {k: v for k, v in asdict(self).items() if k in ("method", "pixel_size", "diameter", "segment_options")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrackJob(BatchJob):
    """``nucleoscope track`` as a batch job over frames."""

    config: TrackConfig
    model_info: dict

    kind = "track"
    report = False

    def key(self) -> str:
        return hashlib.sha256(json.dumps([self.config.segment_key(), self.model_info],
                                         sort_keys=True).encode()).hexdigest()[:16]

    def image_columns(self) -> list[str]:
        return BASE_IMAGE_COLUMNS + ["Method", "Plane"]

    def table_columns(self) -> list[str]:
        return ["ImageName", "ObjectNumber", "Centroid_Y", "Centroid_X", "Area"]

    def outputs(self, out: Path, name: str) -> list[Path]:
        return [out / "labels" / f"{name}.tif"]

    def process(self, item: Item, out: Path, rec: dict[str, Any]) -> pd.DataFrame:
        from .. import io
        from ..segment import segment
        from ..track import nuclei_points

        c = self.config
        plane = getattr(item, "plane", None)
        img = io.read_image(item.path, plane=plane, pixel_size=c.pixel_size)
        rec["Megapixels"] = img.megapixels
        labels, _ = segment(img.data, method=c.method, spacing=img.spacing, diameter=c.diameter, **c.segment_options)
        io.write_labels(out / "labels" / f"{item.name}.tif", labels, spacing=img.spacing)
        rec.update(Method=c.method, Plane=-1 if plane is None else plane)
        pts = nuclei_points(labels[None])
        return pd.DataFrame({"ImageName": item.name, "ObjectNumber": pts["label"].astype(np.int64),
                             "Centroid_Y": pts["y"], "Centroid_X": pts["x"], "Area": pts["area"]})

    def parameters(self) -> dict[str, Any]:
        return asdict(self.config)

    def model(self) -> dict[str, Any]:
        return dict(self.model_info)

    def finish(self, out: Path, images: pd.DataFrame) -> None:
        import laptrack  # noqa: F401  (imported before the clock: a one-off cost of the process, ~1.5 s)

        from .. import io
        from ..track import track_nuclei

        c = self.config
        t0 = time.perf_counter()
        frames = []
        shape = None
        for _, r in images.iterrows():  # a failed frame is an empty one: its nuclei become a gap
            lab = io.read_labels(out / "labels" / f"{r['ImageName']}.tif") if r["Status"] == "ok" else None
            shape = shape or (lab.shape if lab is not None else None)
            frames.append(lab)
        if shape is None:
            return
        stack = np.stack([f if f is not None else np.zeros(shape, np.int32) for f in frames])
        t1 = time.perf_counter()
        if c.min_area > 0:
            for t in range(stack.shape[0]):
                areas = np.bincount(stack[t].ravel())
                small = np.flatnonzero(areas < c.min_area)
                stack[t][np.isin(stack[t], small[small > 0])] = 0
        res = track_nuclei(stack, max_distance=c.max_distance, max_gap=c.max_gap,
                           division_distance=c.division_distance, division_min_frames=c.division_min_frames)
        t2 = time.perf_counter()
        digits = max(3, len(str(stack.shape[0] - 1)))
        for t in range(stack.shape[0]):
            io.write_labels(out / f"mask{t:0{digits}d}.tif", res.masks[t], dtype="uint16")
        with io.atomic_path(out / "res_track.txt") as tmp:
            Path(tmp).write_text("".join(f"{L} {B} {E} {P}\n" for L, B, E, P in res.lineage.itertuples(index=False)))
        io.write_table(res.tracks, out / "tracks.csv")
        io.write_table(res.tracks, out / "tracks.parquet")
        io.write_json({"frames": int(stack.shape[0]), "tracks": int(len(res.lineage)),
                       "divisions": int((res.lineage["P"] > 0).sum()), "read_seconds": t1 - t0,
                       "link_seconds": t2 - t1, "write_seconds": time.perf_counter() - t2,
                       "parameters": asdict(c)}, out / "tracking.json")


def _frame_items(inputs: Sequence[str | os.PathLike], out: Path) -> list[FrameItem]:
    from .. import io

    paths = [p for p in io.find_images(inputs, exclude=[out / d for d in OUTPUT_SUBFOLDERS])
             if not (p.parent.resolve() == out.resolve() and p.name.startswith("mask"))]
    if not paths:
        raise InputError("no frame to track: give a folder of frames or a (T, Y, X) file")
    if len(paths) == 1:  # a movie in one file: one item per plane
        st = io.read_stack(paths[0])
        if st.data.shape[0] < 2:
            raise InputError("a single 2D image is not a movie: give a folder of frames or a (T, Y, X) file",
                             path=paths[0])
        return [FrameItem(f"t{t:03d}", os.fspath(paths[0]), plane=t) for t in range(st.data.shape[0])]
    return [FrameItem(n, os.fspath(p)) for p, n in zip(paths, io.unique_names(paths))]


def track_movie(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, config: TrackConfig = TrackConfig(), *,
                jobs: int = 1, show_progress: bool = True, command: str | None = None) -> pd.DataFrame:
    """Segment and track the frames of a movie (files in name order, or one (T, Y, X) file).

    Returns the images table (one row per frame); the tracking outputs are listed in the module
    docstring. Running again resumes: frames segmented with the same settings are not redone, and the
    linking (fast) is always redone.
    """
    from ..segment import resolve_method
    from .run import model_identity

    out = Path(out)
    items = _frame_items(inputs, out)
    config = replace(config, method=resolve_method(config.method))
    job = TrackJob(config, model_identity(config.method, config.segment_options))
    return run_jobs(job, items, out, jobs=jobs, show_progress=show_progress, command=command, inputs=inputs)
