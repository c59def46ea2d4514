"""The training pack: a training set, prepared for training, in one compressed NPZ.

Preparing the samples (storage scale, border weight maps) takes minutes on a large set; a pack is
written once, on any machine, and carried to the training machine (``nucleoscope train-segmenter
--pack`` / ``--from-pack``). No pickles: arrays plus a JSON index stored as bytes.

Layout: ``index`` (UTF-8 JSON: ``train``, ``synthetic``, ``val`` entries ``{"key", "name", "set"[,
"diameter"]}``, the split ``record`` and ``model_diameter``) and, per entry, ``<key>_img``,
``<key>_lab`` and, for training samples, ``<key>_w`` (the border weight map, float16; recomputed when
missing).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from .losses import border_weight_map
from .train import TrainSample, ValImage, prepare_sample

__all__ = ["read_pack", "write_pack"]

#: training images are stored as uint8 over [-0.2, 1.5] of the percentile-normalized image
_IMG_OFFSET, _IMG_SCALE = 0.2, 150


def write_pack(path: str | os.PathLike, train: Sequence, synthetic: Sequence, val: Sequence, record: dict,
               model_diameter: float, border_w0: float = 10.0) -> None:
    """Prepare (storage scale + weight maps) and write everything training needs to one NPZ.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.npz``.
    train, synthetic, val : sequence of (image, labels, name, set)
        Raw images with their truth (:class:`nucleoscope.io.LabelledImage`); training images
        without nuclei are left out.
    record : dict
        How the sets were split (:func:`nucleoscope.io.read_datasets`), kept in the index.
    model_diameter : float
        Nucleus diameter (px) the model works at: sets the storage scale.
    border_w0 : float
        U-Net border weight of the stored weight maps.
    """
    arrays: dict[str, np.ndarray] = {}
    index = {"train": [], "synthetic": [], "val": [], "record": record, "model_diameter": model_diameter}
    for kind, items in (("train", train), ("synthetic", synthetic)):
        for img, lab, name, ds in items:
            s = prepare_sample(img, lab, model_diameter=model_diameter, name=name, source=ds, border_w0=border_w0)
            if s is None:
                continue
            k = f"{kind}_{len(index[kind])}"
            # 8 bits over [-0.2, 1.5] of the percentile-normalized image (steps of 0.0067, below the noise
            # the augmentation adds) keeps the pack small enough to carry to a GPU machine
            arrays[k + "_img"] = np.round((s.image + _IMG_OFFSET) * _IMG_SCALE).clip(0, 255).astype(np.uint8)
            arrays[k + "_lab"] = s.labels
            arrays[k + "_w"] = s.weight.astype(np.float16)
            index[kind].append({"key": k, "name": name, "set": ds, "diameter": s.diameter})
    for img, lab, name, ds in val:
        k = f"val_{len(index['val'])}"
        # raw values: integer images as uint16, lossless; anything else as it is
        arrays[k + "_img"] = img.astype(np.uint16) if img.max() < 65536 and np.all(img == np.round(img)) else img
        arrays[k + "_lab"] = lab
        index["val"].append({"key": k, "name": name, "set": ds})
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)


def _weights(args: tuple[np.ndarray, float, float]) -> np.ndarray:
    """Border weight map of ``(labels, sigma2, w0)``; one argument, for ``Pool.map``."""
    labels, sigma2, w0 = args
    return border_weight_map(labels, w0=w0, sigma2=sigma2)


def read_pack(path: str | os.PathLike, *, workers: int = 1,
              border_w0: float | None = None) -> tuple[list[TrainSample], list[TrainSample], list[ValImage], dict]:
    """Inverse of :func:`write_pack`.

    Parameters
    ----------
    path : str or os.PathLike
        A pack written by :func:`write_pack`.
    workers : int
        Processes computing the weight maps missing from the pack (dropped to keep it small).
    border_w0 : float, optional
        Recompute every weight map with this border weight (``None``: use the stored ones, made with 10).

    Returns
    -------
    train, synthetic : list of TrainSample
        At their storage scale.
    val : list of ValImage
        At their original resolution, float32.
    record : dict
        How the sets were split.
    """
    z = np.load(path, allow_pickle=False)
    index = json.loads(bytes(z["index"]).decode())
    md = float(index.get("model_diameter", 16.0))

    def samples(kind):
        entries = index[kind]
        labs = [z[e["key"] + "_lab"].astype(np.int32) for e in entries]
        stored = lambda e: border_w0 is None and e["key"] + "_w" in z
        # sigma^2 = 5 px at the model's scale, in storage px (as prepare_sample)
        todo = [(lab, 5.0 * (e["diameter"] / md) ** 2, 10.0 if border_w0 is None else border_w0)
                for e, lab in zip(entries, labs) if not stored(e)]
        if todo and workers > 1:
            from multiprocessing import Pool

            with Pool(workers) as pool:
                computed = iter(pool.map(_weights, todo, chunksize=2))
        else:
            computed = iter(map(_weights, todo))
        out = []
        for e, lab in zip(entries, labs):
            w = z[e["key"] + "_w"].astype(np.float32) if stored(e) else next(computed)
            out.append(TrainSample(z[e["key"] + "_img"].astype(np.float32) / _IMG_SCALE - _IMG_OFFSET, lab, w,
                                   e["diameter"], e["name"], e["set"]))
        return out

    val = [ValImage(z[e["key"] + "_img"].astype(np.float32), z[e["key"] + "_lab"].astype(np.int32), e["name"], e["set"])
           for e in index["val"]]
    return samples("train"), samples("synthetic"), val, index["record"]
