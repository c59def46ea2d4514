"""Segment nuclei and their whole cells from two images per field.

``nucleoscope cells NUCLEI CELLS -o OUT [--method propagate]``: NUCLEI and CELLS are two folders (or
two files, or globs) whose images pair by identical file name: a nuclear stain and a whole-cell stain of
the same field. Writes ``labels/`` (nuclei), ``cells/`` (int32, each cell's id = its nucleus's id),
``cytoplasm/``, ``overlays/`` (both outlines), ``nuclei.parquet/.csv`` (the nuclei table joined with
``Cells_*`` / ``Cytoplasm_*`` columns and parent links), ``images.csv``, ``run.json`` and the report.
Resumes like ``run``; a bad pair is recorded with both files named and the batch goes on; exits 1 if any
field failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ..segment.cells import CELL_METHODS, CellConfig
from .run import _int_at_least, _positive_float, add_run_options, config_from_args, print_summary

__all__ = ["add_arguments", "add_cell_options", "cell_config_from_args", "run"]


def add_cell_options(p: argparse.ArgumentParser, method: bool = True) -> None:
    """Whole-cell options shared by ``cells`` and ``run --cells`` (``method``: add ``--cell-method``)."""
    d = CellConfig()
    if method:
        p.add_argument("--cell-method", dest="cell_method", default=d.method, choices=list(CELL_METHODS),
                       help="whole-cell method with --cells (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=d.alpha, metavar="A",
                   help="graph-cut foreground prior in (0, 1); larger = larger cells (default: %(default)s)")
    p.add_argument("--kappa", type=_positive_float, default=d.kappa, metavar="K",
                   help="graph-cut penalty per cut neighbour pair; larger = smoother mask (default: %(default)s)")


def cell_config_from_args(args: argparse.Namespace) -> CellConfig:
    return CellConfig(method=args.cell_method, alpha=args.alpha, kappa=args.kappa)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("nuclei", metavar="NUCLEI", help="nuclear-stain images: a folder, a file or a glob")
    p.add_argument("cells", metavar="CELLS", help="whole-cell-stain images of the same fields, same file names")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--channel", type=_int_at_least(0), metavar="C", help="channel of multichannel images (0-based)")
    p.add_argument("--plane", type=_int_at_least(0), metavar="Z", help="plane of z-stacks (0-based)")
    p.add_argument("-r", "--recursive", action="store_true", help="also search sub-folders")
    p.add_argument("--method", dest="cell_method", default=CellConfig().method, choices=list(CELL_METHODS),
                   help="whole-cell method: propagate = seeded watershed from the nuclei within the graph-cut "
                        "mask (CellProfiler's propagation) (default: %(default)s)")
    add_cell_options(p, method=False)
    add_run_options(p, method_flag="--nuclei-method")


def run(args: argparse.Namespace) -> int:
    return run_cells(args, [args.nuclei], [args.cells])


def run_cells(args: argparse.Namespace, nuclei: list, cells: list) -> int:
    """The cells batch of parsed options (``cells`` and ``run --cells``); prints the summary."""
    from ..pipeline import cells_batch

    images = cells_batch(nuclei, cells, args.out, config_from_args(args), cell_config_from_args(args),
                         jobs=args.jobs, scheduler=args.scheduler, show_progress=not args.quiet,
                         recursive=args.recursive,
                         command=shlex.join(["nucleoscope", *sys.argv[1:]]))
    print_summary(images, args.out, args.method)
    print(f"{int(images['Cells'].fillna(0).sum())} cells", file=sys.stderr)
    return 1 if (images["Status"] != "ok").any() else 0
