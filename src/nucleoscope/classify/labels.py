"""Class labels for nuclei: read a labels file and attach classes and validation groups to a nuclei table.

A labels file is a CSV (or TSV/Parquet) with either ``ImageName,class`` (every nucleus of an image has the
image's class) or ``ImageName,ObjectNumber,class`` (per-nucleus labels). The class column is the first
column that is neither ``ImageName`` nor ``ObjectNumber`` unless named. Validation groups default to the
image, so nuclei of one image never sit on both sides of a split; ``group_column`` names another column
of the labels file (a well, a plate, a patient).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputError

__all__ = ["ClassLabels", "read_labels", "attach_labels"]

IMAGE = "ImageName"
OBJECT = "ObjectNumber"
CLASS = "Class"
GROUP = "Group"


@dataclass(frozen=True)
class ClassLabels:
    """Parsed labels file.

    Attributes
    ----------
    table : pandas.DataFrame
        Columns ``ImageName`` (str), optionally ``ObjectNumber`` (int), ``Class`` (str), ``Group`` (str).
    per_nucleus : bool
        Labels are given per nucleus (``ObjectNumber`` present).
    class_column, group_column : str
        The labels file's columns the classes and groups came from (``group_column`` is ``ImageName``
        when groups are the images).
    path : str
        The file read (for error messages and provenance).
    """

    table: pd.DataFrame
    per_nucleus: bool
    class_column: str
    group_column: str
    path: str

    @property
    def classes(self) -> list[str]:
        """Sorted class names."""
        return sorted(self.table[CLASS].unique())


def _read(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        sep = "\t" if suffix in (".tsv", ".tab") else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError("labels file not found", path=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        raise InputError(f"cannot read the labels file: {e}", path=path) from None


def read_labels(
    path: str | os.PathLike, *, class_column: str | None = None, group_column: str | None = None,
) -> ClassLabels:
    """Read a labels file mapping images (or single nuclei) to classes.

    Parameters
    ----------
    path : str or os.PathLike
        CSV/TSV/Parquet with an ``ImageName`` column (file stems, as in the nuclei table), optionally
        ``ObjectNumber``, and a class column.
    class_column : str, optional
        The class column; default: the first column other than ImageName/ObjectNumber (and the group column).
    group_column : str, optional
        Column whose values group images for validation (default: the image itself).

    Returns
    -------
    ClassLabels

    Raises
    ------
    InputError
        Missing columns, empty classes, fewer than two classes, an image or nucleus listed twice with
        different classes. The message names the file.
    """
    path = Path(path)
    df = _read(path)
    df.columns = [str(c).strip() for c in df.columns]
    if IMAGE not in df.columns:
        raise InputError(f"the labels file needs an {IMAGE!r} column (has {list(df.columns)})", path=path)
    per_nucleus = OBJECT in df.columns
    others = [c for c in df.columns if c not in (IMAGE, OBJECT, group_column)]
    if class_column is None:
        if not others:
            raise InputError("the labels file has no class column", path=path)
        class_column = others[0]
    for col in (class_column, group_column):
        if col is not None and col not in df.columns:
            raise InputError(f"column {col!r} not in the labels file (has {list(df.columns)})", path=path)
    out = pd.DataFrame({IMAGE: df[IMAGE].astype(str).str.strip()})
    if per_nucleus:
        num = pd.to_numeric(df[OBJECT], errors="coerce")
        if num.isna().any() or (num % 1 != 0).any() or (num < 1).any():
            bad = df.loc[num.isna() | (num % 1 != 0) | (num < 1), OBJECT].iloc[0]
            raise InputError(f"ObjectNumber must be an integer >= 1, got {bad!r}", path=path)
        out[OBJECT] = num.astype(np.int64)
    out[CLASS] = df[class_column].astype(str).str.strip()
    out[GROUP] = (df[group_column].astype(str).str.strip() if group_column else out[IMAGE])
    for c in df.columns:  # other columns (an image set, a plate) ride along, e.g. for drift QC
        if c not in (IMAGE, OBJECT, class_column, CLASS, GROUP):
            out[c] = df[c].astype(str).str.strip()
    blank = (out[CLASS] == "") | (out[IMAGE] == "")
    if blank.any():
        raise InputError(f"{int(blank.sum())} row(s) with an empty image name or class "
                         f"(first: line {int(np.flatnonzero(blank)[0]) + 2})", path=path)
    key = [IMAGE, OBJECT] if per_nucleus else [IMAGE]
    clash = out.groupby(key)[CLASS].nunique()
    if (clash > 1).any():
        raise InputError(f"{clash.index[clash > 1][0]!r} is listed with different classes", path=path)
    out = out.drop_duplicates(key).reset_index(drop=True)
    if out[CLASS].nunique() < 2:
        raise InputError(f"need at least two classes, found {sorted(out[CLASS].unique())}", path=path)
    if group_column:
        per_image = out.groupby(IMAGE)[GROUP].nunique()
        if (per_image > 1).any():
            raise InputError(f"image {per_image.index[per_image > 1][0]!r} is in two validation groups; "
                             "groups must not split an image", path=path)
    return ClassLabels(out, per_nucleus, class_column, group_column or IMAGE, str(path))


def attach_labels(nuclei: pd.DataFrame, labels: ClassLabels, *, allow_missing: bool = True) -> pd.DataFrame:
    """Add ``Class`` and ``Group`` columns to a nuclei table; nuclei without a label are dropped.

    Parameters
    ----------
    nuclei : pandas.DataFrame
        A nuclei table of ``run``/``measure`` (``ImageName``, ``ObjectNumber``, measurements).
    labels : ClassLabels
    allow_missing : bool
        Images of the table absent from the labels file are dropped (True) or an error (False).

    Returns
    -------
    pandas.DataFrame
        The labelled rows, in the table's order, with ``Class`` and ``Group``.

    Raises
    ------
    InputError
        No nucleus got a label, or labelled images/nuclei are missing from the table (named).
    """
    if IMAGE not in nuclei.columns or OBJECT not in nuclei.columns:
        raise InputError("the nuclei table needs ImageName and ObjectNumber columns", path=labels.path)
    nuclei = nuclei.copy()
    nuclei[IMAGE] = nuclei[IMAGE].astype(str)
    key = [IMAGE, OBJECT] if labels.per_nucleus else [IMAGE]
    extra = [c for c in labels.table.columns if c not in key + [CLASS, GROUP] and c not in nuclei.columns]
    lab = labels.table[key + [CLASS, GROUP] + extra]
    missing = set(lab[IMAGE]) - set(nuclei[IMAGE])
    if missing:
        names = sorted(missing)
        raise InputError(f"{len(names)} labelled image(s) have no nuclei in the runs: "
                         f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}", path=labels.path)
    for c in (CLASS, GROUP):
        if c in nuclei.columns:
            nuclei = nuclei.drop(columns=c)
    merged = nuclei.merge(lab, on=key, how="left", validate="many_to_one")
    unlabelled = merged[CLASS].isna()
    if unlabelled.all():
        raise InputError("no nucleus of the runs has a label (do the ImageName values match?)", path=labels.path)
    if unlabelled.any() and not allow_missing:
        first = merged.loc[unlabelled, IMAGE].iloc[0]
        raise InputError(f"{int(unlabelled.sum())} nuclei have no label (first in image {first!r})",
                         path=labels.path)
    return merged[~unlabelled].reset_index(drop=True)
