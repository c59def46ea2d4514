"""Assembling a NuSeT training set: the synthetic images added to the real ones, and the preparation
of raw images for :func:`~nucleoscope.segment.nuset.train.train_nuset`."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...records import LabelledImage
from .train import TrainSample, ValImage, prepare_sample

__all__ = ["prepare_training_set", "synthetic_images"]

#: side lengths (px) of the synthetic images, drawn per image and side (as NuSeT's synthetic set)
SYNTHETIC_SIZE_RANGE = (256, 640)


def synthetic_images(n: int, *, seed: int) -> list[LabelledImage]:
    """``n`` synthetic nuclei fields (:func:`nucleoscope.synth.iter_nuclei_fields`) of varied sizes.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int
        Training seed; the images come from their own stream ``default_rng([seed, 7])``, so they do not
        depend on any other draw of the run.

    Returns
    -------
    list of LabelledImage
        float32 images, int32 labels, names ``synth_0000``..., data set ``"synthetic"``.
    """
    from ...synth import iter_nuclei_fields

    fields = iter_nuclei_fields(np.random.default_rng([seed, 7]), None, n=n, size_range=SYNTHETIC_SIZE_RANGE)
    return [LabelledImage(s.image.astype(np.float32), s.labels, f"synth_{i:04d}", "synthetic")
            for i, s in enumerate(fields)]


def prepare_training_set(train: Sequence, synthetic: Sequence, val: Sequence, *, model_diameter: float,
                         border_w0: float = 10.0) -> tuple[list[TrainSample], list[TrainSample], list[ValImage]]:
    """Prepare raw labelled images for training: :func:`prepare_sample` on the training images (those
    without nuclei are left out), the validation images kept at their original resolution.

    Parameters
    ----------
    train, synthetic, val : sequence of (image, labels, name, set)
        Raw images with their truth (:class:`nucleoscope.io.LabelledImage`).
    model_diameter : float
        Nucleus diameter (px) the model works at.
    border_w0 : float
        U-Net border weight between touching nuclei.

    Returns
    -------
    train, synthetic : list of TrainSample
    val : list of ValImage
    """
    def prep(items: Sequence) -> list[TrainSample]:
        samples = (prepare_sample(i, l, model_diameter=model_diameter, name=n, source=d, border_w0=border_w0)
                   for i, l, n, d in items)
        return [s for s in samples if s is not None]

    return prep(train), prep(synthetic), [ValImage(i, l, n, d) for i, l, n, d in val]
