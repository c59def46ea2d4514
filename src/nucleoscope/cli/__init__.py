"""The ``nucleoscope`` command.

Each subcommand lives in its own module of this package and is imported only when it runs, so
``nucleoscope --help`` stays fast and never imports torch. A subcommand module provides
``add_arguments(parser)`` and ``run(args) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import InputError, __version__

__all__ = ["main"]

# name -> (module in nucleoscope.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "segment, quality-check and measure every nucleus in images or folders"),
    "demo": ("demo", "run the main job on the bundled sample images"),
    "measure": ("measure", "measure nuclei of existing label images (from any tool)"),
    "cells": ("cells", "segment nuclei and their whole cells from paired nucleus and cell images"),
    "evaluate": ("evaluate", "score predicted label images against ground truth"),
    "track": ("track", "segment every frame of a movie and track the nuclei (CTC result format)"),
    "evaluate-tracks": ("evaluate_tracks", "score a tracking result against CTC ground truth (TRA, DET, divisions)"),
    "classify": ("classify", "train classifiers of nuclei on labelled runs, and predict new runs"),
    "synth": ("synth", "write a synthetic data set with exact ground truth"),
    "train-segmenter": ("train_segmenter", "train the NuSeT nucleus segmentation model"),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nucleoscope",
        description="Single-cell nuclear image analysis: segment, quality-check, measure, classify.",
    )
    parser.add_argument("--version", action="version", version=f"nucleoscope {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module}":
                continue  # subcommand not built yet in this checkout
            raise
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for records such as a model's command
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    from ..pipeline.engine import BatchInterrupted, OutputError  # no torch, no heavy imports

    try:
        return int(args._module.run(args) or 0)
    except InputError as exc:
        print(f"nucleoscope {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OutputError as exc:
        print(f"nucleoscope {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (BatchInterrupted, KeyboardInterrupt) as exc:
        done = f"{exc.done} of {exc.total} images done; " if isinstance(exc, BatchInterrupted) and exc.total else ""
        print(f"nucleoscope {args.command}: stopped ({exc}); {done}run the same command again to resume",
              file=sys.stderr)
        return 128 + (exc.signum if isinstance(exc, BatchInterrupted) else 2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
