"""3D nuclei: per-slice 2D segmentation linked into volumes, and their 3D shape measurements.

Pure functions on (Z, Y, X) arrays; anisotropy enters as the voxel spacing ``(dz, dy, dx)`` in µm.
"""

from .link import iou_table, link_slices, split_necks
from .shape import VOLUME_COLUMNS, measure_volumes
from .slices import VolumeDetails, segment_by_slices

__all__ = ["VOLUME_COLUMNS", "VolumeDetails", "iou_table", "link_slices", "measure_volumes",
           "segment_by_slices", "split_necks"]
