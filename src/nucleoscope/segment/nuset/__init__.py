"""NuSeT nucleus segmentation (Yang et al.): U-Net + region proposals + seeded watershed, in PyTorch.

Importing this package imports torch; the rest of nucleoscope imports it only lazily.
"""

from __future__ import annotations

from .infer import NusetDetails, Thresholds, segment_nuset
from .network import NusetConfig, NusetNet, conv_flops_per_pixel
from .predict import predict_maps

__all__ = ["NusetConfig", "NusetDetails", "NusetNet", "Thresholds", "conv_flops_per_pixel", "predict_maps",
           "segment_nuset"]
