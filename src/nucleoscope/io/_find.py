"""Expanding command-line inputs (files, folders, globs) into a list of image files."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from .._errors import InputError
from ._read import SUPPORTED_SUFFIXES, image_name
from ._zarr import ZARR_SUFFIXES

__all__ = ["find_images", "unique_names"]

_GLOB_CHARS = set("*?[")


def _is_image(path: Path) -> bool:
    # Dot files are hidden files, macOS "._x.tif" resource forks, or our own atomic temp files.
    name = path.name
    if name.startswith(".") or not name.lower().endswith(SUPPORTED_SUFFIXES):
        return False
    return path.is_dir() if name.lower().endswith(ZARR_SUFFIXES) else path.is_file()


def _glob(pattern: str, recursive: bool) -> list[str]:
    """``glob.glob``, but a leading folder that exists as spelled is taken literally.

    Brackets are glob syntax, so ``"plate [1]/*.tif"`` would look in a folder named ``plate 1``;
    microscopes and users name folders like ``plate [1]``. When the longest existing leading folder
    holds glob characters, it is matched literally first; glob semantics apply if that finds nothing.
    """
    parts = Path(pattern).parts
    for k in range(len(parts) - 1, 0, -1):
        prefix = os.path.join(*parts[:k])
        if os.path.isdir(prefix):
            if glob.escape(prefix) != prefix:
                hits = glob.glob(os.path.join(glob.escape(prefix), *parts[k:]), recursive=recursive)
                if hits:
                    return hits
            break
    return glob.glob(pattern, recursive=recursive)


def _in_folder(folder: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return [p for p in folder.iterdir() if _is_image(p)]
    found = []
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        hits = [base / d for d in dirs if _is_image(base / d)]
        found += hits + [base / f for f in files if _is_image(base / f)]
        skip = {h.name for h in hits}
        dirs[:] = [d for d in dirs if d not in skip]  # an OME-Zarr store's own folders are not inputs
    return found


def find_images(
    inputs: Sequence[str | os.PathLike],
    *,
    recursive: bool = False,
    exclude: Sequence[str | os.PathLike] = (),
) -> list[Path]:
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
    exclude : sequence of str or os.PathLike
        Folders whose contents are never listed, e.g. the output folder of a run that lies inside the
        input folder (its ``labels/*.tif`` must not become inputs on the next run).

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
    # real paths on both sides: an output folder reached through a symlink (or an input folder that is
    # one) must still exclude what lies in it
    skip = [os.path.join(os.path.realpath(os.fspath(e)), "") for e in exclude]
    found: dict[str, Path] = {}
    for item in inputs:
        text = os.path.expanduser(os.fspath(item))
        path = Path(text)
        if path.is_dir() and _is_image(path):  # an OME-Zarr store is one image
            hits = [path]
        elif path.is_dir():
            hits = _in_folder(path, recursive)
            if not hits:
                raise InputError(
                    f"folder holds no supported image ({', '.join(SUPPORTED_SUFFIXES)})"
                    + ("" if recursive else "; sub-folders are searched with --recursive"),
                    path=text,
                )
        elif path.is_file():
            hits = [path]
        elif _GLOB_CHARS & set(text):
            hits = []
            for match in sorted(_glob(text, recursive)):
                m = Path(match)
                hits.extend(_in_folder(m, recursive) if m.is_dir() else [m] if _is_image(m) else [])
            if not hits:
                raise InputError("pattern matches no supported image", path=text)
        else:
            raise InputError("no such file or folder", path=text)
        for hit in hits:
            key = os.path.abspath(hit)
            real = os.path.realpath(hit)
            if not any(key.startswith(s) or real.startswith(s) for s in skip):
                found.setdefault(os.path.normcase(key), hit)
    return sorted(found.values(), key=lambda p: os.fspath(p))


def unique_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Output names for ``paths``: the image name, prefixed by parent folders only where names clash.

    ``["a/x.tif", "b/x.tif", "b/y.png"]`` -> ``["a_x", "b_x", "y"]``, so that ``labels/<name>.tif`` of
    two inputs never overwrite each other. Deterministic for a given list (a re-run resumes).

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        Image files, e.g. from :func:`find_images`.

    Returns
    -------
    list of str
        One name per path, in order, all different (case-insensitively, for case-insensitive file systems).
    """
    parents = [[q for q in Path(os.path.abspath(p)).parent.parts if q.strip("/\\")] for p in paths]
    base = [image_name(p) for p in paths]
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(base):
        groups.setdefault(n.lower(), []).append(i)
    wanted = list(base)
    for members in groups.values():
        folders = {tuple(parents[i]) for i in members}
        if len(folders) < 2:
            continue
        # The fewest trailing folder names that tell the distinct folders apart.
        depths = range(1, max(map(len, folders)) + 1)
        k = next(k for k in depths if len({f[-k:] for f in folders}) == len(folders))
        for i in members:
            wanted[i] = "_".join([*parents[i][-k:], base[i]])
    # Names that never clashed are kept as they are; the others avoid them, numbered where still equal
    # (same folder and name with another suffix, or a path listed twice).
    used = {n.lower() for n, members in groups.items() if len(members) == 1}
    out = []
    for i, n in enumerate(wanted):
        if len(groups[base[i].lower()]) == 1:
            out.append(n)
            continue
        cand, k = n, 1
        while cand.lower() in used:
            k += 1
            cand = f"{n}_{k}"
        used.add(cand.lower())
        out.append(cand)
    return out
