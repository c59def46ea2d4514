"""The napari plugin (``pip install 'nucleoscope[napari]'``; the manifest is ``napari.yaml``).

Widgets: **Segment** (:class:`~._segment.SegmentWidget`, ``nucleoscope run``'s analysis of one image
layer in a worker thread), **Measure** (:class:`~._measure.MeasureWidget`, the table of a Labels layer,
sortable, linked to the nuclei, exported as CSV or Parquet), **Train** (:class:`~._train.TrainWidget`,
fine-tune the bundled NuSeT model on corrected labels) and **Classify** (:class:`~._classify.ClassifyWidget`,
``nucleoscope classify train`` / ``predict`` on the layers: nuclei coloured by predicted class, PatchNet
heat-maps). A reader opens ``nucleoscope run`` and ``measure`` output folders (image + labels + table),
TIFF, OME-TIFF and OME-Zarr; writers save Labels layers as TIFF or OME-Zarr and their tables as CSV or
Parquet; three samples (a bundled BBBC039 field, a synthetic field with truth, a synthetic field of two
nucleus classes).

This package is a face, like :mod:`nucleoscope.cli`: it calls the core and the pipeline, and nothing in
the core imports it. Importing it does not import napari; its modules do.
"""

from __future__ import annotations

__all__: list[str] = []
