"""Nuclei tracked through time: per-frame labels linked by ``laptrack``, results in the CTC form.

Pure functions on (T, Y, X) label stacks; writing the CTC files is the ``track`` job's
(:mod:`nucleoscope.pipeline.track`).
"""

from .link import TRACK_COLUMNS, TrackResult, nuclei_points, track_nuclei

__all__ = ["TRACK_COLUMNS", "TrackResult", "nuclei_points", "track_nuclei"]
