"""Train the NuSeT nucleus segmentation model on labelled data sets plus synthetic images.

Each ``--data`` folder is a data set in the shared layout (``train/images``, ``train/masks`` and,
optionally, ``val/images``, ``val/masks``; masks named like their images). Sets without a ``val``
split give up every ``1/holdout``-th training image (sorted by name) for validation; the names held
out are recorded in the model JSON. Synthetic images (``nucleoscope.synth.nuclei_field``) are added
``--synthetic-ratio`` x as many as the real ones (NuSeT: 1:1).

The model is written to ``MODEL_DIR/nuset.safetensors`` + ``nuset.json`` together with the resumable
``checkpoint.safetensors``, ``log.csv`` and ``curves.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from .. import InputError

log = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "load_sets", "pack", "unpack"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", metavar="DIR", default=[], help="data set folders (train/ and val/ splits)")
    parser.add_argument("-o", "--output", metavar="MODEL_DIR", help="output folder for the model, checkpoints and logs")
    parser.add_argument("--synthetic-ratio", type=float, default=1.0, help="synthetic images per real image (default 1.0)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs (one epoch = one crop per training image)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    parser.add_argument("--max-minutes", type=float, default=60.0, help="wall-clock budget; stops cleanly (default 60)")
    parser.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/checkpoint.safetensors")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256, help="crop size (px at the model's scale)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=200, help="steps between validations")
    parser.add_argument("--patience", type=int, default=8, help="validations without improvement before stopping")
    parser.add_argument("--widths", default="8,16,32,48,64", help="channels of the 5 U-Net levels")
    parser.add_argument("--rpn-level", type=int, default=3, help="encoder level of the RPN (3: stride 8 px, 2: stride 4)")
    parser.add_argument("--model-diameter", type=float, default=16.0, help="nucleus diameter (px) the model works at")
    parser.add_argument("--holdout", type=int, default=5, help="hold out every N-th training image of sets without val/")
    parser.add_argument("--no-fg-norm", action="store_true", help="whole-image normalization (ablation)")
    parser.add_argument("--no-rpn", action="store_true", help="train the U-Net only (ablation)")
    parser.add_argument("--no-tune", action="store_true", help="keep default thresholds (skip the validation grid search)")
    parser.add_argument("--val-max-images", type=int, default=None, help="validate on at most N images during training")
    parser.add_argument("--border-w0", type=float, default=10.0,
                        help="U-Net border weight w0 between touching nuclei (default 10, as the U-Net paper)")
    parser.add_argument("--small-weight", type=float, default=1.0,
                        help="loss weight on nuclei under 1/4 of the median area, e.g. micronuclei (default 1: off)")
    parser.add_argument("--brightness-spread", type=float, default=1.0,
                        help="augment: scale each nucleus's brightness by a factor in [1/S, 1] on half the crops "
                             "(cell-to-cell variation of stain or reporter; default 1: off)")
    parser.add_argument("--brightness-scope", choices=["cell", "halo2"], default="cell",
                        help="what a nucleus's brightness factor scales: 'cell' all of its light (out to half a "
                             "diameter, noise level kept; default) or 'halo2' its pixels and a 2 px halo, noise "
                             "included (how nuset_v3 to nuset_v5 were trained)")
    parser.add_argument("--ramp", type=float, default=0.0,
                        help="augment: add a background gradient of up to this fraction of the nuclei's level on "
                             "30%% of the crops (uneven illumination; default 0: off)")
    parser.add_argument("--boundary", action="store_true",
                        help="add the boundary channel (borders between touching nuclei) the watershed cuts along")
    parser.add_argument("--boundary-weight", type=float, default=1.0, help="weight of the boundary loss (default 1)")
    parser.add_argument("--init", metavar="MODEL",
                        help="fine-tune this exported model (name or .safetensors path, e.g. nuset_v5); "
                             "its widths are used, --widths is ignored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pack", metavar="NPZ", help="prepare the training data, write it to NPZ and exit")
    parser.add_argument("--from-pack", metavar="NPZ", help="train from data written by --pack (no --data needed)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _pairs(split_dir: Path) -> list[tuple[Path, Path]]:
    imgs = sorted((split_dir / "images").glob("*.tif*")) + sorted((split_dir / "images").glob("*.png"))
    out = []
    for p in imgs:
        m = split_dir / "masks" / p.name
        if not m.exists():
            raise InputError("no mask with the same name in masks/", path=p)
        out.append((p, m))
    return out


def load_sets(dirs: list[str], *, holdout: int = 5) -> tuple[list, list, dict]:
    """Read ``(image, labels, name, set)`` tuples for training and validation, and the split record."""
    from ..io import read_image, read_labels

    train, val, record = [], [], {}
    for d in dirs:
        root = Path(d)
        if not (root / "train" / "images").is_dir():
            raise InputError("not a data set folder (expected train/images and train/masks)", path=root)
        name = root.name
        tr = _pairs(root / "train")
        if (root / "val" / "images").is_dir():
            va = _pairs(root / "val")
            record[name] = {"train": "train split", "val": "val split", "n_train": len(tr), "n_val": len(va)}
        else:
            va = [p for i, p in enumerate(tr) if i % holdout == 0]
            tr = [p for i, p in enumerate(tr) if i % holdout != 0]
            record[name] = {"train": "train split minus held-out", "val": f"every {holdout}th train image (sorted)",
                            "held_out": [p.name for p, _ in va], "n_train": len(tr), "n_val": len(va)}
        for lst, pairs in ((train, tr), (val, va)):
            for p, m in pairs:
                lst.append((read_image(p).data, read_labels(m), p.name, name))
    return train, val, record


def _synthetic(n: int, seed: int) -> list:
    from ..synth import nuclei_field

    g = np.random.default_rng([seed, 7])
    out = []
    for i in range(n):
        shape = (int(g.integers(256, 641)), int(g.integers(256, 641)))
        s = nuclei_field(shape, rng=g)
        out.append((s.image.astype(np.float32), s.labels, f"synth_{i:04d}", "synthetic"))
    return out


def pack(path: str | Path, train: list, synthetic: list, val: list, record: dict, model_diameter: float,
         border_w0: float = 10.0) -> None:
    """Prepare (storage scale + weight maps) and write everything training needs to one NPZ."""
    from ..segment.nuset.train import prepare_sample

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
            arrays[k + "_img"] = np.round((s.image + 0.2) * 150).clip(0, 255).astype(np.uint8)
            arrays[k + "_lab"] = s.labels
            arrays[k + "_w"] = s.weight.astype(np.float16)
            index[kind].append({"key": k, "name": name, "set": ds, "diameter": s.diameter})
    for img, lab, name, ds in val:
        k = f"val_{len(index['val'])}"
        arrays[k + "_img"] = img.astype(np.uint16) if img.max() < 65536 and np.all(img == np.round(img)) else img
        arrays[k + "_lab"] = lab
        index["val"].append({"key": k, "name": name, "set": ds})
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)


def _weights(args):
    from ..segment.nuset.losses import border_weight_map

    labels, sigma2, w0 = args
    return border_weight_map(labels, w0=w0, sigma2=sigma2)


def unpack(path: str | Path, *, workers: int = 1, border_w0: float | None = None):
    """Inverse of :func:`pack`: ``(train samples, synthetic samples, val images, record)``.

    Weight maps missing from the pack (dropped to keep it small) are recomputed, on ``workers``
    processes; with ``border_w0`` every weight map is recomputed with that border weight."""
    from ..segment.nuset.train import TrainSample, ValImage

    z = np.load(path, allow_pickle=False)
    index = json.loads(bytes(z["index"]).decode())
    md = float(index.get("model_diameter", 16.0))

    def samples(kind):
        entries = index[kind]
        labs = [z[e["key"] + "_lab"].astype(np.int32) for e in entries]
        stored = lambda e: border_w0 is None and e["key"] + "_w" in z
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
            out.append(TrainSample(z[e["key"] + "_img"].astype(np.float32) / 150 - 0.2, lab, w, e["diameter"],
                                   e["name"], e["set"]))
        return out

    val = [ValImage(z[e["key"] + "_img"].astype(np.float32), z[e["key"] + "_lab"].astype(np.int32), e["name"], e["set"])
           for e in index["val"]]
    return samples("train"), samples("synthetic"), val, index["record"]


def run(args: argparse.Namespace) -> int:
    import torch

    from ..segment.nuset.network import NusetConfig
    from ..segment.nuset.train import TrainConfig, ValImage, prepare_sample, train_nuset

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.from_pack:
        import os

        train_s, synth_s, val, record = unpack(args.from_pack, workers=min(16, os.cpu_count() or 1),
                                               border_w0=None if args.border_w0 == 10.0 else args.border_w0)
        if args.synthetic_ratio == 0:
            synth_s = []
    else:
        if not args.data:
            raise InputError("give --data DIR... or --from-pack NPZ")
        train, val_raw, record = load_sets(args.data, holdout=args.holdout)
        synth = _synthetic(int(round(args.synthetic_ratio * len(train))), args.seed) if args.synthetic_ratio > 0 else []
        if args.pack:
            pack(args.pack, train, synth, val_raw, record, args.model_diameter, border_w0=args.border_w0)
            log.info("packed %d real + %d synthetic + %d val images into %s", len(train), len(synth), len(val_raw), args.pack)
            return 0
        prep = lambda items: [s for s in (prepare_sample(i, l, model_diameter=args.model_diameter, name=n, source=d,
                                                         border_w0=args.border_w0)
                                          for i, l, n, d in items) if s is not None]
        train_s, synth_s = prep(train), prep(synth)
        val = [ValImage(i, l, n, d) for i, l, n, d in val_raw]
    if not args.output:
        raise InputError("give -o MODEL_DIR")
    init = None
    if args.init:
        from ..models import load_nuset

        init, init_meta = load_nuset(args.init)
        c = init.config
        mcfg = NusetConfig(widths=c.widths, diameter=c.diameter, rpn_level=c.rpn_level, anchor_scales=c.anchor_scales,
                           anchor_ratios=c.anchor_ratios, boundary=args.boundary or c.boundary)
    else:
        widths = tuple(int(w) for w in args.widths.split(","))
        mcfg = NusetConfig(widths=widths, diameter=args.model_diameter, rpn_level=args.rpn_level,
                           boundary=args.boundary)
    tcfg = TrainConfig(batch=args.batch, crop=args.crop, lr=args.lr, epochs=args.epochs, steps=args.steps,
                       max_minutes=args.max_minutes, eval_every=args.eval_every, patience=args.patience,
                       fg_norm=not args.no_fg_norm, rpn=not args.no_rpn, seed=args.seed,
                       val_max_images=args.val_max_images, border_w0=args.border_w0,
                       small_weight=args.small_weight, boundary_weight=args.boundary_weight,
                       brightness_spread=args.brightness_spread,
                       brightness_scope=args.brightness_scope, ramp=args.ramp)
    # the options as typed, after the subcommand (global options such as -v may come before it)
    argv = getattr(args, "_argv", sys.argv[1:])
    opts = argv[argv.index("train-segmenter") + 1:] if "train-segmenter" in argv else argv
    meta = {"data": record, "command": "nucleoscope train-segmenter " + " ".join(shlex.quote(a) for a in opts),
            "prepare_s": round(time.time() - t0, 1)}
    if init is not None:
        meta["init"] = {"model": args.init, "sha256": init_meta.get("sha256")}
    result = train_nuset(train_s, synthetic=synth_s, val=val, out_dir=args.output, model_config=mcfg, config=tcfg,
                         synthetic_ratio=args.synthetic_ratio, device=args.device, resume=args.resume,
                         tune=not args.no_tune, meta=meta, init=init)
    v = result.get("validation") or {}
    print(f"model written to {Path(args.output) / 'nuset.safetensors'}; validation F1@0.5 {v.get('f1_50', float('nan')):.4f} "
          f"F1@0.7 {v.get('f1_70', float('nan')):.4f}; thresholds {result['thresholds']}")
    return 0
