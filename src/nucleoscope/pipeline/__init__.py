"""The main job and the batch engine.

:func:`analyze` is the pure core (array in, labels + table out). The batch engine
(:mod:`~nucleoscope.pipeline.engine`) runs a job over many files: every item's results are written
atomically as soon as it is done, a failing item is recorded and the batch goes on, and running the same
batch again skips the items already finished with the same parameters from unchanged files (and retries
the failed ones). Jobs: :func:`run_batch` (segment + QC + measure), :func:`measure_batch` (measure
existing label images) and :func:`cells_batch` (nuclei + whole cells from paired images).

Layout of an output folder::

    labels/<name>.tif      int32 instance labels, 0 = background (run)
    overlays/<name>.png    outlines on the contrast-stretched image, QC-flagged nuclei in orange (run)
    cells/<name>.tif       int32 cell labels, cell i holds nucleus i (cells, run --cells)
    cytoplasm/<name>.tif   int32 cytoplasm labels (cell minus nucleus, same ids)
    rois/<name>.zip        ImageJ ROIs of the nuclei (run with ``rois=True``)
    nuclei.parquet/.csv    one row per nucleus (ImageName, ObjectNumber, measurements, QC flags)
    images.csv             one row per input (status, error, count, megapixels, seconds, ...)
    crops.h5, patches.h5   nucleus crops / patches on request
    report.html            a self-contained summary page
    run.json               version, command, parameters, model identity, times, failures
    .state/<name>.json     per-item record used to resume; .state/<name>.parquet its table rows
"""

from __future__ import annotations

from .analyze import AnalysisResult, analyze, diameter_px, measure_labels
from .cells import CellsJob, cells_batch
from .engine import BatchJob, Item, run_jobs
from .measure import MeasureJob, MeasureOptions, measure_batch, pair_labels
from .track import TrackConfig, TrackJob, track_movie
from .volume import VolumeConfig, VolumeJob, run_volume_batch
from .run import DEFAULT_TILE_SIZE, IMAGE_COLUMNS, RunConfig, RunJob, looks_like_labels, run_batch

__all__ = ["AnalysisResult", "BatchJob", "CellsJob", "cells_batch", "DEFAULT_TILE_SIZE", "IMAGE_COLUMNS", "Item", "MeasureJob",
           "MeasureOptions", "RunConfig", "RunJob", "analyze", "diameter_px", "looks_like_labels",
           "measure_batch", "measure_labels", "pair_labels", "run_batch", "run_jobs", "VolumeConfig", "VolumeJob",
           "run_volume_batch", "TrackConfig", "TrackJob", "track_movie"]
