"""Expanding command-line inputs (files, folders, globs) into a list of image files."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from .._errors import InputError
from ._read import SUPPORTED_SUFFIXES

__all__ = ["find_images"]

_GLOB_CHARS = set("*?[")


def _is_image(path: Path) -> bool:
    # Dot files are hidden files, macOS "._x.tif" resource forks, or our own atomic temp files.
    name = path.name
    return not name.startswith(".") and name.lower().endswith(SUPPORTED_SUFFIXES) and path.is_file()


def _in_folder(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return [p for p in found if _is_image(p)]


def find_images(inputs: Sequence[str | os.PathLike], *, recursive: bool = False) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of image files.

    Parameters
    ----------
    inputs : sequence of str or os.PathLike
        Each is a file (kept as given, whatever its suffix, so that reading it reports the problem),
        a folder (its files with a supported suffix, see :data:`SUPPORTED_SUFFIXES`; other files such as
        ``.csv`` are skipped silently), or a glob pattern (``*``, ``?``, ``[...]``; ``**`` with
        ``recursive``).
    recursive : bool
        Also search sub-folders of folders, and let ``**`` in patterns match across folders.

    Returns
    -------
    list of pathlib.Path
        Sorted by path; a file reached twice (e.g. by a folder and a glob) is listed once.

    Raises
    ------
    InputError
        An input that is neither a file nor a folder nor a pattern matching any image, or a folder that
        holds no supported image; the message names the input.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: dict[str, Path] = {}
    for item in inputs:
        text = os.path.expanduser(os.fspath(item))
        path = Path(text)
        if path.is_dir():
            hits = _in_folder(path, recursive)
            if not hits:
                raise InputError(
                    f"folder holds no supported image ({', '.join(SUPPORTED_SUFFIXES)})"
                    + ("" if recursive else "; search sub-folders with recursive"),
                    path=text,
                )
        elif path.is_file():
            hits = [path]
        elif _GLOB_CHARS & set(text):
            hits = []
            for match in sorted(glob.glob(text, recursive=recursive)):
                m = Path(match)
                hits.extend(_in_folder(m, recursive) if m.is_dir() else [m] if _is_image(m) else [])
            if not hits:
                raise InputError("pattern matches no supported image", path=text)
        else:
            raise InputError("no such file or folder", path=text)
        for hit in hits:
            found.setdefault(os.path.normcase(os.path.abspath(hit)), hit)
    return sorted(found.values(), key=lambda p: os.fspath(p))
