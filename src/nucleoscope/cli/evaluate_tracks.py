"""Score a tracking result (CTC format) against CTC ground truth: TRA, DET, LNK, SEG, divisions.

RESULT holds maskNNN.tif + res_track.txt (as `nucleoscope track` writes them); GT holds
man_trackNNN.tif + man_track.txt (or a TRA/ sub-folder). Uses traccuracy, the community implementation.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("result", metavar="RESULT", help="CTC result folder")
    p.add_argument("gt", metavar="GT", help="CTC ground-truth folder (TRA)")
    p.add_argument("--seg", metavar="DIR", help="CTC SEG truth (man_segNNN.tif); default: SEG/ or seg/ beside "
                   "the TRA folder, if any")
    p.add_argument("--json", metavar="FILE", help="also write the scores to FILE")


def run(args: argparse.Namespace) -> int:
    from ..io import write_json
    from ..pipeline.evaluate_tracks import evaluate_tracks

    scores = evaluate_tracks(args.result, args.gt, seg=args.seg)
    for k in ("TRA", "DET", "LNK", "SEG", "division_precision", "division_recall", "division_f1"):
        print(f"{k:>20} {scores[k]:.4f}")
    if args.json:
        write_json(scores, args.json)
    else:
        print(json.dumps(scores))
    return 0
