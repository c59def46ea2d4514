"""Train the NuSeT nucleus segmentation model on labelled data sets plus synthetic images.

Each ``--data`` folder is a data set in the shared layout (``train/images``, ``train/masks`` and,
optionally, ``val/images``, ``val/masks``; masks named like their images). Sets without a ``val``
split give up every ``1/holdout``-th training image (sorted by name) for validation; the names held
out are recorded in the model JSON. Synthetic images (``nucleoscope.synth.nuclei_field``) are added
``--synthetic-ratio`` x as many as the real ones (NuSeT: 1:1).

The model is written to ``MODEL_DIR/nuset.safetensors`` + ``nuset.json`` together with the resumable
``checkpoint.safetensors``, ``log.csv`` and ``curves.png``.

This module only parses, calls the library and prints: the folders are read by
:func:`nucleoscope.io.read_datasets`, the synthetic images and the preparation are in
:mod:`nucleoscope.segment.nuset.trainset`, the ``--pack`` format in :mod:`nucleoscope.segment.nuset.pack`
and the training in :func:`nucleoscope.segment.nuset.train.train_nuset`.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from .. import InputError

log = logging.getLogger(__name__)

__all__ = ["add_arguments", "run"]


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
    parser.add_argument("--holdout", nargs="+", default=["5"], metavar="[SET=]N",
                        help="hold out every N-th training image of sets without val/ (default 5); SET=N for one "
                             "set by folder name, e.g. --holdout 5 dsb2018_stage1_train_fluo=10")
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


def _model_config(args: argparse.Namespace):
    """The architecture to train, and the exported network to fine-tune (``--init``; else ``None``) with
    its metadata."""
    from ..segment.nuset.network import NusetConfig

    if not args.init:
        widths = tuple(int(w) for w in args.widths.split(","))
        return NusetConfig(widths=widths, diameter=args.model_diameter, rpn_level=args.rpn_level,
                           boundary=args.boundary), None, None
    from ..segment.nuset.weights import load_nuset

    init, init_meta = load_nuset(args.init)
    c = init.config
    mcfg = NusetConfig(widths=c.widths, diameter=c.diameter, rpn_level=c.rpn_level, anchor_scales=c.anchor_scales,
                       anchor_ratios=c.anchor_ratios, boundary=args.boundary or c.boundary)
    return mcfg, init, init_meta


def _train_config(args: argparse.Namespace):
    from ..segment.nuset.train import TrainConfig

    return TrainConfig(batch=args.batch, crop=args.crop, lr=args.lr, epochs=args.epochs, steps=args.steps,
                       max_minutes=args.max_minutes, eval_every=args.eval_every, patience=args.patience,
                       fg_norm=not args.no_fg_norm, rpn=not args.no_rpn, seed=args.seed,
                       val_max_images=args.val_max_images, border_w0=args.border_w0,
                       small_weight=args.small_weight, boundary_weight=args.boundary_weight,
                       brightness_spread=args.brightness_spread,
                       brightness_scope=args.brightness_scope, ramp=args.ramp)


def _command(args: argparse.Namespace) -> str:
    """The command line as typed, with the options after the subcommand (global options such as -v may
    come before it and are not recorded)."""
    argv = getattr(args, "_argv", sys.argv[1:])
    opts = argv[argv.index("train-segmenter") + 1:] if "train-segmenter" in argv else argv
    return "nucleoscope train-segmenter " + " ".join(shlex.quote(a) for a in opts)


def _holdout(values: list[str]) -> dict[str, int]:
    """``["5", "dsb=10"]`` -> ``{"*": 5, "dsb": 10}``; a usage error names the bad entry."""
    out: dict[str, int] = {}
    for v in values:
        key, _, n = v.rpartition("=")
        try:
            out[key or "*"] = int(n)
        except ValueError:
            raise InputError(f"--holdout: expected N or SET=N, got {v!r}") from None
    return out


def run(args: argparse.Namespace) -> int:
    from ..io import read_datasets
    from ..report import write_training_curves
    from ..segment.nuset.pack import read_pack, write_pack
    from ..segment.nuset.train import set_threads, train_nuset
    from ..segment.nuset.trainset import prepare_training_set, synthetic_images

    if args.threads:
        set_threads(args.threads)
    t0 = time.time()
    if args.from_pack:
        import os

        train_s, synth_s, val, record = read_pack(args.from_pack, workers=min(16, os.cpu_count() or 1),
                                                  border_w0=None if args.border_w0 == 10.0 else args.border_w0)
        if args.synthetic_ratio == 0:
            synth_s = []
    else:
        if not args.data:
            raise InputError("give --data DIR... or --from-pack NPZ")
        train, val_raw, record = read_datasets(args.data, holdout=_holdout(args.holdout))
        n_synth = int(round(args.synthetic_ratio * len(train)))
        synth = synthetic_images(n_synth, seed=args.seed) if args.synthetic_ratio > 0 else []
        if args.pack:
            write_pack(args.pack, train, synth, val_raw, record, args.model_diameter, border_w0=args.border_w0)
            log.info("packed %d real + %d synthetic + %d val images into %s", len(train), len(synth), len(val_raw), args.pack)
            return 0
        train_s, synth_s, val = prepare_training_set(train, synth, val_raw, model_diameter=args.model_diameter,
                                                     border_w0=args.border_w0)
    if not args.output:
        raise InputError("give -o MODEL_DIR")
    mcfg, init, init_meta = _model_config(args)
    meta = {"data": record, "command": _command(args), "prepare_s": round(time.time() - t0, 1)}
    if init is not None:
        meta["init"] = {"model": args.init, "sha256": init_meta.get("sha256")}
    result = train_nuset(train_s, synthetic=synth_s, val=val, out_dir=args.output, model_config=mcfg,
                         plot_curves=write_training_curves,
                         config=_train_config(args), synthetic_ratio=args.synthetic_ratio, device=args.device,
                         resume=args.resume, tune=not args.no_tune, meta=meta, init=init)
    v = result.get("validation") or {}
    print(f"model written to {Path(args.output) / 'nuset.safetensors'}; validation F1@0.5 {v.get('f1_50', float('nan')):.4f} "
          f"F1@0.7 {v.get('f1_70', float('nan')):.4f}; thresholds {result['thresholds']}")
    return 0
