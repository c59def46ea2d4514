"""Train classifiers of nuclei on finished runs, and predict the classes of new runs.

``nucleoscope classify train RUN_DIR... --labels LABELS.csv -o MODEL_DIR [--model logreg|svm|forest|cnn|patchnet|all]``
validates every model by image-grouped folds (nuclei of one image never on both sides), fits it on all
labelled nuclei and writes MODEL_DIR (model.json, networks as safetensors + JSON, validation/ CSVs,
report.html). ``nucleoscope classify predict MODEL_DIR RUN_DIR... -o OUT`` writes OUT/predictions.csv
(ImageName, ObjectNumber, Predicted, P_<class>...) and OUT/image_predictions.csv (mean over each image's
nuclei). RUN_DIR is an output folder of ``nucleoscope run`` or ``measure``. The labels file has
``ImageName,class`` (per image) or ``ImageName,ObjectNumber,class`` (per nucleus). Exits 2 on a usage error.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .run import _int_at_least, _window_size

__all__ = ["add_arguments", "run"]

_MODELS = ("logreg", "svm", "forest", "cnn", "patchnet")


def _models(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(_MODELS)
    if names == ["linear"]:
        return ["logreg", "svm", "forest"]
    bad = [n for n in names if n not in _MODELS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown model(s) {', '.join(bad) or text!r}; "
                                         f"choose from {', '.join(_MODELS)}, linear or all (comma-separated)")
    return names


def _input_size(text: str) -> int:
    v = _int_at_least(16)(text)
    if v % 16:
        raise argparse.ArgumentTypeError(f"must be a multiple of 16 (the CNN pools 4 times), got {v}")
    return v


def _C(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number or auto, got {text!r}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="validate and fit classifiers on labelled runs",
                       description="Validate (image-grouped folds) and fit classifiers of nuclei on labelled runs.")
    t.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output folders of nucleoscope run or measure")
    t.add_argument("--labels", required=True, metavar="LABELS",
                   help="CSV: ImageName,class (per image) or ImageName,ObjectNumber,class (per nucleus)")
    t.add_argument("-o", "--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    t.add_argument("--model", type=_models, default=["logreg", "svm", "forest"], metavar="NAMES",
                   help="comma-separated: logreg, svm, forest, cnn, patchnet; 'linear' = the three feature "
                        "models, 'all' = every model (default: linear)")
    t.add_argument("--class-column", metavar="COL", help="class column of the labels file (default: its first "
                   "column other than ImageName/ObjectNumber)")
    t.add_argument("--group-column", metavar="COL",
                   help="labels-file column grouping images for validation, e.g. a well or patient "
                        "(default: each image is a group)")
    t.add_argument("--set-column", metavar="COL",
                   help="labels-file column naming image sets (plate, day): flag sets of a class a classifier "
                        "tells apart from the class's other sets (drift/blur QC, SCENMED)")
    t.add_argument("--folds", type=_int_at_least(2), metavar="K",
                   help="grouped folds (default: min(7, images of the rarest class))")
    t.add_argument("--network-folds", type=_int_at_least(1), metavar="K",
                   help="validate the networks on the first K folds only (each fold is one training; "
                        "default: all folds)")
    t.add_argument("--ablation", choices=["groups", "features", "none"], default="groups",
                   help="feature ablation: per feature group, or per group and per single feature "
                        "(default: %(default)s)")
    t.add_argument("--C", dest="C", type=_C, default=1.0, metavar="C",
                   help="inverse L2 strength of logreg and svm, or 'auto': chosen per training on grouped "
                        "folds inside its training data (default: 1)")
    t.add_argument("--keep-flagged", action="store_true", help="also train on QC-flagged nuclei")
    t.add_argument("--crop-size", type=_window_size, default=128, metavar="PX", help="CNN crop side (default: 128)")
    t.add_argument("--patch-size", type=_window_size, default=17, metavar="PX",
                   help="PatchNet patch side (SCENMED: 11 or 17; default: 17)")
    t.add_argument("--epochs", type=_int_at_least(1), metavar="N", help="networks: at most N epochs (default: CNN 100, PatchNet 60)")
    t.add_argument("--time-limit", type=float, metavar="S", help="networks: stop each training after S seconds")
    t.add_argument("--width", type=_int_at_least(1), metavar="W",
                   help="CNN: filters of the first block (SCENMED: 32; default: 8)")
    t.add_argument("--input-size", type=_input_size, metavar="PX",
                   help="CNN: side the crops are resized to, a multiple of 16 (default: 64)")
    t.add_argument("--normalize", choices=["image", "nucleus"], default="image",
                   help="networks: intensities relative to the image's median nucleus (keeps each nucleus's "
                        "brightness, e.g. DNA content) or to the nucleus itself (default: %(default)s)")
    t.add_argument("--no-embedding", action="store_true", help="skip the t-SNE embeddings")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    pr = sub.add_parser("predict", help="predict the class of every nucleus of runs",
                        description="Predict the class of every nucleus (and image) of runs with a trained model.")
    pr.add_argument("model_dir", metavar="MODEL_DIR", help="a folder written by nucleoscope classify train")
    pr.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output folders of nucleoscope run or measure")
    pr.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    pr.add_argument("--model", choices=_MODELS, help="which of the folder's models (default: the chosen one)")
    pr.add_argument("--keep-flagged", action="store_true",
                    help="also predict QC-flagged nuclei (marked; left out of the image means)")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..classify.train import TrainConfig
    from ..pipeline.classify import predict_runs, train_classifier

    command = shlex.join(["nucleoscope", *getattr(args, "_argv", sys.argv[1:])])
    if args.action == "predict":
        pred, im = predict_runs(args.model_dir, args.runs, args.out, model=args.model, keep_flagged=args.keep_flagged)
        print(f"predicted {len(pred)} nuclei in {len(im)} images -> {args.out}", file=sys.stderr)
        return 0
    net = {k: v for k, v in (("max_epochs", args.epochs), ("time_limit_s", args.time_limit)) if v is not None}
    net["normalize"] = args.normalize
    cnn = dict(net, show_progress=not args.quiet, **{k: v for k, v in (("width", args.width),
                                                                       ("input_size", args.input_size)) if v})
    config = TrainConfig(models=tuple(args.model), n_folds=args.folds, ablation=args.ablation,
                         set_column=args.set_column, embed=not args.no_embedding, network_folds=args.network_folds,
                         cnn=cnn, patchnet=dict(net, show_progress=not args.quiet), C=args.C,
                         random_state=args.seed)
    res = train_classifier(args.runs, args.labels, args.out, config, class_column=args.class_column,
                           group_column=args.group_column, drop_flagged=not args.keep_flagged,
                           crop_size=args.crop_size, patch_size=args.patch_size, command=command,
                           show_progress=not args.quiet)
    table = res.scores_table()
    for _, r in table.iterrows():
        im = f", image {r['ImageBalancedAccuracy']:.3f}" if pd.notna(r.get("ImageBalancedAccuracy")) else ""
        print(f"{r['Model']:>10}: balanced accuracy nucleus {r['NucleusBalancedAccuracy']:.3f}{im}", file=sys.stderr)
    print(f"chosen: {res.best} -> {args.out}", file=sys.stderr)
    return 0
