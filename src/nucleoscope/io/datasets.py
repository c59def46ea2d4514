"""Labelled data set folders: the shared layout of images and their instance masks, split for training.

A data set folder holds ``train/images`` and ``train/masks`` and, optionally, ``val/images`` and
``val/masks``; a mask has its image's file name. ``nucleoscope synth`` writes split folders in the same
layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence


from .._errors import InputError
from ..records import LabelledImage
from ._read import read_image, read_labels

__all__ = ["LabelledImage", "dataset_pairs", "read_datasets"]


def dataset_pairs(split_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """The ``(image, mask)`` paths of one split folder, sorted by name.

    Parameters
    ----------
    split_dir : str or os.PathLike
        A folder with ``images/`` (``*.tif``, ``*.tiff``, ``*.png``) and ``masks/`` (same file names).

    Returns
    -------
    list of (pathlib.Path, pathlib.Path)
        The TIFFs first, then the PNGs, each sorted by name.

    Raises
    ------
    InputError
        An image without a mask of the same name.
    """
    split = Path(split_dir)
    imgs = sorted((split / "images").glob("*.tif*")) + sorted((split / "images").glob("*.png"))
    out = []
    for p in imgs:
        m = split / "masks" / p.name
        if not m.exists():
            raise InputError("no mask with the same name in masks/", path=p)
        out.append((p, m))
    return out


def read_datasets(dirs: Sequence[str | os.PathLike], *,
                  holdout: int | Mapping[str, int] = 5) -> tuple[list[LabelledImage], list[LabelledImage], dict]:
    """Read the training and validation images of data set folders, and how each was split.

    Parameters
    ----------
    dirs : sequence of path
        Data set folders (``train/images``, ``train/masks``; optionally ``val/images``, ``val/masks``).
    holdout : int or mapping of str to int
        A set without a ``val`` split gives up every ``holdout``-th training image (sorted by name,
        starting with the first) for validation. A mapping gives N per set (folder) name, with the
        key ``"*"`` (default 5) for the other sets.

    Returns
    -------
    train, val : list of LabelledImage
        In the order of ``dirs``, then of :func:`dataset_pairs`.
    record : dict
        Per set name: where its training and validation images came from, their numbers and the names
        held out (for the model's metadata).

    Raises
    ------
    InputError
        A folder without ``train/images``, an image without its mask, an unreadable file.
    """
    train: list[LabelledImage] = []
    val: list[LabelledImage] = []
    record: dict = {}
    for d in dirs:
        root = Path(d)
        if not (root / "train" / "images").is_dir():
            raise InputError("not a data set folder (expected train/images and train/masks)", path=root)
        name = root.name
        tr = dataset_pairs(root / "train")
        if (root / "val" / "images").is_dir():
            va = dataset_pairs(root / "val")
            record[name] = {"train": "train split", "val": "val split", "n_train": len(tr), "n_val": len(va)}
        else:
            every = int(holdout.get(name, holdout.get("*", 5))) if isinstance(holdout, Mapping) else int(holdout)
            if every < 2:
                raise InputError(f"hold-out every {every}th image leaves nothing to train on", path=root)
            va = [p for i, p in enumerate(tr) if i % every == 0]
            tr = [p for i, p in enumerate(tr) if i % every != 0]
            record[name] = {"train": "train split minus held-out", "val": f"every {every}th train image (sorted)",
                            "held_out": [p.name for p, _ in va], "n_train": len(tr), "n_val": len(va)}
        for lst, pairs in ((train, tr), (val, va)):
            for p, m in pairs:
                lst.append(LabelledImage(read_image(p).data, read_labels(m), p.name, name))
    return train, val, record
