"""Segmentation benchmark: every registered segmenter on the real datasets, scored and timed.

    python bench/segment.py --methods classic otsu --datasets bbbc039:val kromp2020_sbsst265:train [--limit N]

Each (method, dataset) pair runs in its own Python process (clean peak-RSS numbers; a crash in one
segmenter does not stop the table). Prints the table and writes it into the ``segment`` section of
docs/benchmarks.md: rows of this run replace rows with the same method, dataset and split; other rows
are kept with their own date and commit.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import DOC, commit, machine, stamp, write_section  # noqa: E402
from harness import parse_spec, run_benchmark  # noqa: E402

SECTION = "segment"
DEFAULT_DATASETS = ["bbbc039:val", "kromp2020_sbsst265:train", "koyuncu_hepg2_huh7_hoechst:train",
                    "storm_nuclei_mela_liu2021:train", "stardist_pkg_dsb2018_sample:train"]
COLUMNS = ["method", "dataset", "split", "n", "F1@0.5", "F1@0.7", "AP@0.5", "splits", "merges", "s/MP",
           "peak RSS MB", "date", "commit"]


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_row(r: dict) -> list[str]:
    n = str(r["n_images"]) + (f" ({r['n_failed']} failed)" if r.get("n_failed") else "")
    return [r["method"], r["dataset"], r["split"], n, _f(r["f1_0.5"]), _f(r["f1_0.7"]), _f(r["ap_0.5"]),
            str(r["splits"]), str(r["merges"]), _f(r["s_per_mp"], 2), f"{r['peak_rss_mb']:.0f}", r["date"],
            r["commit"]]


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def existing_rows() -> list[list[str]]:
    """Table rows already in the section (to keep those this run does not redo)."""
    if not DOC.exists():
        return []
    text = DOC.read_text()
    begin, end = f"<!-- begin {SECTION} -->", f"<!-- end {SECTION} -->"
    if begin not in text or end not in text:
        return []
    body = text.split(begin, 1)[1].split(end, 1)[0]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        is_row = line.startswith("|") and len(cells) == len(COLUMNS)
        if is_row and cells[0] != "method" and not cells[0].startswith("-"):
            rows.append(cells)
    return rows


def run_one(method: str, spec: str, limit: int | None, min_size: int, hausdorff: bool) -> dict:
    """Run one benchmark in this process; returns the table row as a dict (with date and commit)."""
    import datetime as dt

    dataset, split = parse_spec(spec)
    res = run_benchmark(method, dataset, split, limit=limit, min_size=min_size, hausdorff=hausdorff)
    row = res.row()
    row.update(date=dt.date.today().isoformat(), commit=commit() + ("+dirty" if _src_dirty() else ""),
               failures=res.failures)
    return row


def _src_dirty() -> bool:
    """Whether the segmentation sources differ from the commit (the row then names commit+dirty)."""
    paths = ["src/nucleoscope/segment", "src/nucleoscope/postprocess.py", "src/nucleoscope/preprocess.py",
             "src/nucleoscope/rescale.py", "src/nucleoscope/tiling.py", "src/nucleoscope/models"]
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", *paths], capture_output=True,
                             text=True, cwd=DOC.parents[1], check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return bool(out.strip())


def main(argv: list[str] | None = None) -> int:
    from nucleoscope.segment import available_methods

    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--methods", nargs="+", help="segmenters (default: all that import)")
    ap.add_argument("--datasets", nargs="+", default=DEFAULT_DATASETS, metavar="NAME:SPLIT")
    ap.add_argument("--limit", type=int, help="only the first N images of each split")
    ap.add_argument("--min-size", type=int, default=10, help="ignore objects < PX when scoring (default 10)")
    ap.add_argument("--no-hausdorff", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--in-process", action="store_true", help="run everything in this process")
    ap.add_argument("--json", metavar="PATH", help="also write the rows of this run as JSON")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "SPEC"), help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    if args.one:
        row = run_one(args.one[0], args.one[1], args.limit, args.min_size, not args.no_hausdorff)
        print(json.dumps(row))
        return 0

    methods = args.methods or available_methods()
    rows = []
    for method in methods:
        for spec in args.datasets:
            if args.in_process:
                row = run_one(method, spec, args.limit, args.min_size, not args.no_hausdorff)
            else:
                cmd = [sys.executable, __file__, "--one", method, spec, "--min-size", str(args.min_size)]
                cmd += ["--limit", str(args.limit)] if args.limit else []
                cmd += ["--no-hausdorff"] if args.no_hausdorff else []
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
                if proc.returncode != 0:
                    print(f"{method} on {spec}: failed (exit {proc.returncode}); see the log above", file=sys.stderr)
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            if row["n_failed"] == row["n_images"]:
                first = row["failures"][0][1] if row["failures"] else "no images"
                print(f"{method} on {spec}: every image failed ({first}); no row", file=sys.stderr)
                continue
            rows.append(row)
            print(" | ".join(format_row(row)), flush=True)

    new = [format_row(r) for r in rows]
    keys = {tuple(r[:3]) for r in new}
    table_rows = [r for r in existing_rows() if tuple(r[:3]) not in keys] + new
    table_rows.sort(key=lambda r: (r[1], r[2], r[0]))
    table = markdown_table(table_rows)
    print()
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if not args.no_write and rows:
        limit_note = f" Only the first {args.limit} images of each split." if args.limit else ""
        notes = (
            "Each row: one segmenter on one dataset split from `../shared/data` (`bench/segment.py`). "
            "F1 and AP = TP / (TP + FP + FN) are pooled over the split's images at the given IoU threshold; "
            "splits / merges are error events at IoU 0.5 (definitions: docs/metrics.md). Objects smaller than "
            f"{args.min_size} px, in truth or prediction, are ignored. s/MP = seconds inside the segmenter "
            "per megapixel (reading and scoring excluded); peak RSS = maximum resident memory of the process "
            "that segmented and scored the split. Only `val` splits are held out, and only from training: "
            "rows on a `train` split are in-sample for trained methods (`nuset` trained on the train splits and "
            "chose its checkpoint on half of `bbbc039:val`; see `src/nucleoscope/models/nuset_v5.json`), and "
            "the classic methods' defaults were tuned on these sets. Rows name the commit they ran on, "
            "`+dirty` when the segmentation sources differed from it." + limit_note
        )
        write_section(SECTION, f"## Segmentation\n\n{stamp()}\n\n{notes}\n\n{table}\n")
        print(f"\nwrote section '{SECTION}' of {DOC} ({machine()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
