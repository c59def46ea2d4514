"""Write a synthetic data set with exact ground truth (nuclei, chromatin, storm or cells).

Layout, the same as a split folder of the shared real data: ``DIR/images/<name>.tif`` (intensity),
``DIR/masks/<name>.tif`` (instance labels, uint16, int32 when a label exceeds 65535), ``DIR/truth.csv``
(one row per object with its image name), ``DIR/splits.csv`` (image, split) and ``DIR/params.csv`` (one
row per image: the parameters drawn). Extra truth goes to sibling folders: ``artifact_masks/`` (nuclei),
``hc_masks/`` and ``labels.csv`` (image, class) for chromatin, ``noise_masks/`` (storm),
``cell_images/`` and ``cell_masks/`` (cells).
Sample ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so any one can be regenerated alone.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from .. import InputError

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)

KINDS = ("nuclei", "chromatin", "storm", "cells")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="what to generate")
    parser.add_argument("-n", type=int, default=10, help="number of images (chromatin: crops per class)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size in px (default 512 512)")
    parser.add_argument("--size-range", type=int, nargs=2, metavar=("LO", "HI"),
                        help="draw each image's height and width from LO..HI px instead (NuSeT: 256 640)")
    parser.add_argument("--dtype", choices=("uint8", "uint16", "float32"), help="image type (default per kind)")
    parser.add_argument("--diameter", type=float, nargs=2, metavar=("LO", "HI"), help="nucleus diameter range, px")
    parser.add_argument("--artifacts", type=float, help="artifact level for nuclei/cells (0 = none)")
    parser.add_argument("--spacing", type=float, metavar="UM",
                        help="pixel size in µm: stored in the TIFFs and adds *_um / *_um2 truth columns")
    parser.add_argument("--split", default="train", help="split name written to splits.csv (default train)")
    parser.add_argument(
        "--val-fraction", type=float, default=0.0, help="fraction of images marked 'val' in splits.csv instead"
    )
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier data set in the output folder (its .tif files are removed)")
    parser.add_argument(
        "--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
        help="any other generator option (value parsed as JSON, e.g. --set coverage=0.3 --set "
        "'values=[0.1,0.14]'); repeatable",
    )


def _options(args: argparse.Namespace) -> dict:
    opts: dict = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            opts[key] = json.loads(value)
        except json.JSONDecodeError:
            opts[key] = value  # a bare word such as a parameter name
    for key in ("dtype", "diameter", "artifacts", "spacing"):
        value = getattr(args, key)
        if value is not None:
            opts[key] = tuple(value) if isinstance(value, list) else value
    return opts


_FUNCTIONS = {"nuclei": "nuclei_field", "chromatin": "chromatin_crops", "storm": "storm_field", "cells": "cells_field"}


def _check_options(kind: str, opts: dict) -> None:
    """Unknown keys fail here, naming the options the generator has, not deep inside it."""
    import inspect

    from .. import synth

    fn = getattr(synth, _FUNCTIONS[kind], None)
    if fn is None:
        raise InputError(f"kind {kind!r} is not available in this version")
    params = inspect.signature(fn).parameters.items()
    known = {n for n, p in params if p.kind is p.KEYWORD_ONLY and n != "rng"}
    bad = sorted(set(opts) - known)
    if bad:
        raise InputError(f"unknown option(s) {bad} for {kind!r}; known: {sorted(known)}")


def _samples(kind: str, args: argparse.Namespace, opts: dict):
    """Yield ``(name, SynthSample-like dict of 2D arrays, objects, params)`` per image."""
    from .. import synth

    size = tuple(args.size) if args.size else None
    if kind == "chromatin":
        kw = dict(opts)
        if size:
            kw["size"] = size[0]
        s = synth.chromatin_crops(args.n, rng=args.seed, **kw)
        for k in range(s.image.shape[0]):
            row = s.objects.iloc[k]
            name = f"chromatin_{row['class_name']}_{k:05d}"
            obj = s.objects.iloc[[k]].assign(label=1)
            yield name, {"images": s.image[k], "masks": s.labels[k], "hc_masks": s.hc_mask[k]}, obj, {
                "class": row["class_name"], "value": row["value"],
                **{key: v for key, v in s.params.items() if np.isscalar(v)},
            }
        return
    fn = getattr(synth, _FUNCTIONS[kind])
    for i in range(args.n):
        shape = size or (512, 512)
        if args.size_range:  # its own stream, so image i is the same with or without it otherwise
            lo, hi = args.size_range
            shape = tuple(int(v) for v in np.random.default_rng([args.seed, i, 1]).integers(lo, hi + 1, 2))
        s = fn(shape, rng=np.random.default_rng([args.seed, i]), **opts)
        arrays = {"images": s.image, "masks": s.labels}
        if kind == "nuclei":
            arrays["artifact_masks"] = s.artifact_mask
        elif kind == "storm":
            arrays["noise_masks"] = s.noise_mask
        elif kind == "cells":
            arrays["cell_images"], arrays["cell_masks"] = s.cell_image, s.cell_labels
        yield f"{kind}_{i:05d}", arrays, s.objects, s.params


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..io import write_image, write_labels, write_table

    if args.n < 1:
        raise InputError(f"-n must be >= 1, got {args.n}")
    if args.size_range and not 8 <= args.size_range[0] <= args.size_range[1]:
        raise InputError(f"--size-range needs 8 <= LO <= HI, got {args.size_range}")
    if not 0 <= args.val_fraction <= 1:
        raise InputError(f"--val-fraction must be in [0, 1], got {args.val_fraction}")
    opts = _options(args)
    _check_options(args.kind, opts)
    out: Path = args.output
    # A smaller set written over a larger one would leave images whose truth is gone from truth.csv.
    old = sorted(out.glob("*/*.tif")) if out.is_dir() else []
    if old and not args.overwrite:
        raise InputError(f"already holds a data set ({len(old)} .tif files); choose another folder or "
                         "pass --overwrite", path=out)
    for f in old:
        f.unlink()
    out.mkdir(parents=True, exist_ok=True)
    truth, params, names = [], [], []
    for name, arrays, objects, p in _samples(args.kind, args, opts):
        for folder, data in arrays.items():
            if data is None:
                continue
            path = out / folder / f"{name}.tif"
            if folder.endswith("masks") and data.dtype != bool:
                # uint16 as in the shared data when it fits; never wrap ids above 65535
                write_labels(path, data, spacing=args.spacing,
                             dtype="uint16" if data.max(initial=0) <= 65535 else "int32")
            else:
                write_image(path, data, spacing=args.spacing)  # boolean masks as uint8 0/1
        truth.append(objects.assign(image=name))
        flat = {k: json.dumps(v) if isinstance(v, (dict, tuple, list)) else v for k, v in p.items()}
        params.append({"image": name, **flat})
        names.append(name)
        log.info("wrote %s (%d objects)", name, len(objects))
    table = pd.concat(truth, ignore_index=True)
    table = table[["image"] + [c for c in table.columns if c != "image"]]
    write_table(table, out / "truth.csv")
    write_table(pd.DataFrame(params), out / "params.csv")
    if args.kind == "chromatin":  # per-image class, like labels.csv of the shared data
        write_table(pd.DataFrame(params)[["image", "class", "value", "parameter"]], out / "labels.csv")
    n_val = int(round(args.val_fraction * len(names)))
    split = [args.split] * (len(names) - n_val) + ["val"] * n_val
    write_table(pd.DataFrame({"image": names, "split": split}), out / "splits.csv")
    print(f"nucleoscope synth: {len(names)} {args.kind} images, {len(table)} objects -> {out}")
    return 0
