"""Picking one 2D (Y, X) plane from an image file's array, following ``channel`` and ``plane``.

Axes carry tifffile's letters. Channels (``C``, or the ``S`` samples of RGB/RGBA) are taken with
``channel``; Z or T planes with ``plane``; an axis of no known kind can serve as either. Anything left over
is refused with a message naming the option that picks it. A grey + opaque-alpha or an RGB image whose
channels are equal is read as grayscale; a colour or 2-sample image needs ``channel``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._errors import InputError

# Axis letters as tifffile names them: C = channel, S = samples (RGB/RGBA) both count as channels;
# Z, T are planes; anything else (I = image sequence, Q = unknown, ...) can serve as either.
_CHANNEL_AXES = "CS"
_PLANE_AXES = "ZT"


def _describe(axes: str, shape: tuple[int, ...]) -> str:
    return f"axes {axes} with shape {tuple(shape)}"


def _fix_yxc(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """tifffile names an unlabelled (Y, X, C) stack with C > 4 'QYX' with a tiny X; read it as (Y, X, C)."""
    if data.ndim == 3 and axes[0] not in _CHANNEL_AXES + _PLANE_AXES and axes.endswith("YX"):
        if data.shape[2] <= 8 and min(data.shape[0], data.shape[1]) >= 16:
            return data, "YXC"
    return data, axes


def _select_plane(
    data: np.ndarray, axes: str, path: Path, channel: int | None, plane: int | None
) -> tuple[np.ndarray, int | None]:
    """Reduce ``data`` to (Y, X) following ``channel`` and ``plane``; returns (data, channel taken)."""
    data, axes = _fix_yxc(data, axes)
    orig = _describe(axes, data.shape)
    ndim0 = data.ndim
    data, extra = _yx_last(data, axes, path, orig)
    taken: int | None = None
    if channel is not None:
        data, extra = _take_channel(data, extra, channel, path, orig)
        taken = int(channel)
    elif "S" in extra:
        data, extra = _grey_from_samples(data, extra, path, orig)
    if plane is not None:
        data, extra = _take_plane(data, extra, plane, path, orig)
    if extra:
        _refuse_leftover_axes(data, extra, ndim0, path, orig)
    return data, taken


def _yx_last(data: np.ndarray, axes: str, path: Path, orig: str) -> tuple[np.ndarray, list[str]]:
    """Move Y, X last and drop singleton axes; returns (data, letters of the leading axes left)."""
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"no Y/X image axes found ({orig})", path=path)
    # Move Y, X last so every other axis is a leading one.
    order = [i for i, a in enumerate(axes) if a not in "YX"] + [axes.index("Y"), axes.index("X")]
    data = np.transpose(data, order)
    axes = "".join(axes[i] for i in order)
    # Singleton axes carry no choice.
    keep = [i for i, a in enumerate(axes[:-2]) if data.shape[i] > 1]
    data = data.reshape([data.shape[i] for i in keep] + list(data.shape[-2:]))
    return data, [axes[i] for i in keep]


def _take_channel(data: np.ndarray, extra: list[str], channel: int, path: Path,
                  orig: str) -> tuple[np.ndarray, list[str]]:
    """Take ``channel`` along the one axis that can be the channel axis (none: only channel 0 exists)."""
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
        raise InputError(f"channel must be an integer, got {channel!r}", path=path)
    cands = [i for i, a in enumerate(extra) if a in _CHANNEL_AXES]
    if not cands:
        cands = [i for i, a in enumerate(extra) if a not in _PLANE_AXES]
    if len(cands) > 1:
        raise InputError(f"several axes could be the channel axis ({orig}); cannot pick --channel", path=path)
    n = data.shape[cands[0]] if cands else 1
    if not 0 <= channel < n:
        raise InputError(
            f"channel {channel} is out of range: the image has {n} channel{'s' * (n != 1)} "
            f"(valid: 0..{n - 1}; {orig})",
            path=path,
        )
    if cands:
        data = np.take(data, int(channel), axis=cands[0])
        del extra[cands[0]]
    return data, extra


def _grey_from_samples(data: np.ndarray, extra: list[str], path: Path, orig: str) -> tuple[np.ndarray, list[str]]:
    """Without ``channel``, read samples (``S``) as grey when they are: grey + opaque alpha, or R = G = B."""
    i = extra.index("S")
    n = data.shape[i]
    colour = np.take(data, range(min(n, 3)), axis=i) if n in (3, 4) else None
    second = np.take(data, 1, axis=i) if n == 2 else None
    if second is not None and second.min() == second.max():  # grey + opaque alpha
        data = np.take(data, 0, axis=i)
    elif second is not None:  # two stains stored as samples (Y, X, 2): never guess which one
        raise InputError(
            f"2-channel image ({orig}) where one channel is expected: pick the nuclear stain's channel "
            f"with --channel C (0..1)",
            path=path,
        )
    elif colour is not None and all(
        np.array_equal(np.take(colour, 0, axis=i), np.take(colour, k, axis=i)) for k in (1, 2)
    ):
        data = np.take(data, 0, axis=i)  # an RGB image that is really grayscale
    else:
        raise InputError(
            f"RGB{'A' if n == 4 else ''} colour image ({orig}) where one channel is expected: "
            f"pick the nuclear stain's channel with --channel C (0 = red, 1 = green, 2 = blue)",
            path=path,
        )
    del extra[i]
    return data, extra


def _take_plane(data: np.ndarray, extra: list[str], plane: int, path: Path,
                orig: str) -> tuple[np.ndarray, list[str]]:
    """Take ``plane`` along the one non-channel axis (none: only plane 0 exists)."""
    if isinstance(plane, bool) or not isinstance(plane, (int, np.integer)):
        raise InputError(f"plane must be an integer, got {plane!r}", path=path)
    cands = [i for i, a in enumerate(extra) if a not in _CHANNEL_AXES]
    if len(cands) > 1:
        found = ", ".join(f"{extra[i]}={data.shape[i]}" for i in cands)
        raise InputError(
            f"several plane axes ({found}; {orig}); --plane picks along one: save one Z or T series",
            path=path,
        )
    n = data.shape[cands[0]] if cands else 1
    if not 0 <= plane < n:
        raise InputError(f"plane {plane} is out of range: the image has {n} plane(s) ({orig})", path=path)
    if cands:
        data = np.take(data, int(plane), axis=cands[0])
        del extra[cands[0]]
    return data, extra


def _refuse_leftover_axes(data: np.ndarray, extra: list[str], ndim0: int, path: Path, orig: str) -> None:
    """Raise for axes still left after ``channel`` / ``plane``, naming the option that picks each."""
    hints = []
    for i, a in enumerate(extra):
        n = data.shape[i]
        if a in _CHANNEL_AXES:
            hints.append(f"--channel C (0..{n - 1})")
        elif a in _PLANE_AXES:
            hints.append(f"--plane {a} (0..{n - 1})")
        else:
            hints.append(f"--channel C or --plane Z (0..{n - 1})")
    raise InputError(
        f"found {ndim0}D data ({orig}) but a 2D image "
        f"is expected: pick one with {' and '.join(dict.fromkeys(hints))}",
        path=path,
    )
