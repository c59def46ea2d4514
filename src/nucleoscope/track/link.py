"""Linking segmented nuclei through time with ``laptrack`` (linear assignment with gap closing and
divisions), and the result in the Cell Tracking Challenge (CTC) form.

A CTC track is a run of frames of one nucleus without a division and without a gap: laptrack's track
segments are cut where gap closing bridged a missing frame, the part after the gap getting the part
before as parent (the CTC convention for a nucleus missed in a frame), and each daughter of a division
gets its mother as parent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

__all__ = ["TRACK_COLUMNS", "TrackResult", "nuclei_points", "track_nuclei"]

#: Tracks table columns: napari's Tracks layer reads the first four (track id, t, y, x) and the
#: ``parent`` column as its graph.
TRACK_COLUMNS = ["track_id", "t", "y", "x", "label", "parent"]


@dataclass(frozen=True, eq=False)
class TrackResult:
    """Tracked nuclei of a movie.

    Attributes
    ----------
    masks : (T, Y, X) int32
        Every nucleus labelled with its CTC track id (0 = background, unlinked objects keep an id too).
    lineage : pandas.DataFrame
        One row per CTC track: ``L, B, E, P`` (id, first frame, last frame, parent id or 0).
    tracks : pandas.DataFrame
        One row per nucleus and frame, columns :data:`TRACK_COLUMNS` (centroids in px).
    """

    masks: np.ndarray
    lineage: pd.DataFrame
    tracks: pd.DataFrame


def nuclei_points(labels: np.ndarray) -> pd.DataFrame:
    """Centroid (px) and area of every nucleus of every frame of a (T, Y, X) label stack.

    One pass over each frame's foreground pixels (``bincount`` of their labels, weighted by their
    coordinates), so a 1024² movie costs milliseconds per frame.

    Returns
    -------
    pandas.DataFrame
        Columns ``frame, label, y, x, area``.
    """
    rows = []
    for t, lab in enumerate(np.asarray(labels)):
        flat = lab.ravel()
        fg = np.flatnonzero(flat)
        if fg.size == 0:
            continue
        vals = flat[fg].astype(np.int64)
        ids, inv = np.unique(vals, return_inverse=True)
        area = np.bincount(inv, minlength=ids.size).astype(float)
        yy, xx = np.divmod(fg, lab.shape[1])
        cy = np.bincount(inv, weights=yy, minlength=ids.size) / area
        cx = np.bincount(inv, weights=xx, minlength=ids.size) / area
        rows.append(pd.DataFrame({"frame": t, "label": ids, "y": cy, "x": cx, "area": area}))
    cols = ["frame", "label", "y", "x", "area"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)


def _graph_tracks(tree, n_points: list[int]) -> tuple[np.ndarray, pd.DataFrame]:
    """laptrack's graph (nodes ``(frame, index)``, edges forward in time) -> laptrack-style segments:
    the segment id of every point (frames concatenated) and the splits (``parent_track_id``,
    ``child_track_id``). A segment runs from a node with no single-successor predecessor along
    single-successor edges; each child of a node with two successors starts one."""
    offset = np.concatenate([[0], np.cumsum(n_points)]).astype(np.int64)
    seg = np.full(int(offset[-1]), -1, dtype=np.int64)
    succ = {n: sorted(tree.successors(n)) for n in tree.nodes}
    pred = {n: list(tree.predecessors(n)) for n in tree.nodes}
    splits = []
    next_id = 0
    for start in sorted(tree.nodes):
        p = pred[start]
        if p and len(succ[p[0]]) == 1:  # continues its predecessor's segment
            continue
        node, sid = start, next_id
        next_id += 1
        if p:
            splits.append((int(seg[offset[p[0][0]] + p[0][1]]), sid))
        while True:
            seg[offset[node[0]] + node[1]] = sid
            nxt = succ[node]
            if len(nxt) != 1 or len(pred[nxt[0]]) != 1:
                break
            node = nxt[0]
    lone = np.flatnonzero(seg < 0)  # points laptrack left out of its graph: tracks of their own
    seg[lone] = next_id + np.arange(lone.size)
    # a split's parent is assigned before its children (nodes visited in frame order)
    return seg, pd.DataFrame(splits, columns=["parent_track_id", "child_track_id"], dtype=np.int64)


def _divisions(track_df: pd.DataFrame, split_df: pd.DataFrame, max_area_ratio: float, min_frames: int,
               n_frames: int) -> tuple[dict[int, int], dict[int, int]]:
    """Sort laptrack's splits into divisions and continuations.

    A split is a **division** when both daughters start smaller than ``max_area_ratio`` times the
    mother's last area (a nucleus that divides halves; a fragment of an over-segmented neighbour, or a
    nucleus coming into view, does not) and both last ``min_frames`` frames or reach the end of the
    movie (a fragment split off for a frame or two by the segmenter dies at once; real daughters live
    on). Otherwise the daughter nearer the mother's last centroid continues the mother's track and the
    other starts a track of its own.

    Returns
    -------
    parent_of : dict
        daughter segment -> mother segment, for the divisions.
    same_as : dict
        child segment -> the segment it continues (resolved: chains of continuations point to the first).
    """
    g_sorted = track_df.sort_values("frame")
    by = g_sorted.groupby("track_id")
    first, last = by.first(), by.last()
    length = by.size()
    parent_of: dict[int, int] = {}
    same_as: dict[int, int] = {}
    splits = split_df.assign(t=split_df["parent_track_id"].map(last["frame"])).sort_values("t", kind="stable")
    for mother, g in splits.groupby("parent_track_id", sort=False):
        kids = [int(k) for k in g["child_track_id"]]
        root = same_as.get(int(mother), int(mother))
        m = last.loc[mother]
        lives = [length[k] >= min_frames or last.loc[k, "frame"] >= n_frames - 1 for k in kids]
        if len(kids) == 2 and all(lives) and all(first.loc[k, "area"] < max_area_ratio * m["area"] for k in kids):
            parent_of.update({k: root for k in kids})
            continue
        d = [np.hypot(first.loc[k, "y"] - m["y"], first.loc[k, "x"] - m["x"]) for k in kids]
        same_as[kids[int(np.argmin(d))]] = root
    return parent_of, same_as


def _segments(track_df: pd.DataFrame, parent_of: dict[int, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """laptrack's tracks -> CTC tracks (cut at gaps); returns (points with ``track_id``, lineage)."""
    pieces, lineage = [], []
    last_piece: dict[int, int] = {}  # laptrack track -> its last CTC track (a daughter's parent)
    next_id = 1
    order = track_df.groupby("track_id")["frame"].min().sort_values(kind="stable").index
    for lt in order:
        g = track_df[track_df["track_id"] == lt].sort_values("frame")
        frames = g["frame"].to_numpy()
        cuts = np.flatnonzero(np.diff(frames) > 1) + 1
        parent = last_piece.get(parent_of.get(int(lt), -1), 0)
        for part in np.split(np.arange(len(g)), cuts):
            sub = g.iloc[part].copy()
            sub["track_id"] = next_id
            pieces.append(sub)
            lineage.append((next_id, int(sub["frame"].iloc[0]), int(sub["frame"].iloc[-1]), parent))
            parent = next_id
            next_id += 1
        last_piece[int(lt)] = parent
    points = pd.concat(pieces, ignore_index=True) if pieces else track_df.assign(track_id=pd.Series(dtype=int))
    return points, pd.DataFrame(lineage, columns=["L", "B", "E", "P"])


def track_nuclei(labels: np.ndarray, *, max_distance: float = 30.0, max_gap: int = 1,
                 division_distance: float | None = 40.0, division_area_ratio: float = 0.85,
                 division_min_frames: int = 3) -> TrackResult:
    """Track the nuclei of a (T, Y, X) label stack by their centroids.

    Parameters
    ----------
    labels : (T, Y, X) int
        Per-frame instance labels (each frame numbered on its own).
    max_distance : float
        Largest centroid displacement (px) between consecutive frames that links two nuclei.
    max_gap : int
        Frames a nucleus may be missing and still be linked (0: no gap closing).
    division_distance : float or None
        Largest distance (px) from a mother to a daughter's first centroid; ``None``: no divisions.
    division_area_ratio : float
        A split is kept as a division only when both daughters start smaller than this times the
        mother's last area ...
    division_min_frames : int
        ... and both daughters last at least this many frames (or reach the movie's last frame).
        Otherwise the daughter nearer the mother continues the mother's track and the other starts a
        track of its own.

    Returns
    -------
    TrackResult

    Examples
    --------
    >>> movie = np.zeros((3, 20, 20), np.int32)
    >>> for t in range(3):
    ...     movie[t, 2 + 3 * t:6 + 3 * t, 2 + 3 * t:6 + 3 * t] = 1
    >>> track_nuclei(movie).lineage.values.tolist()
    [[1, 0, 2, 0]]
    """
    from laptrack import LapTrack

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected (T, Y, X) labels, got shape {labels.shape}")
    pts = nuclei_points(labels)
    masks = np.zeros(labels.shape, dtype=np.int32)
    if pts.empty:
        return TrackResult(masks, pd.DataFrame(columns=["L", "B", "E", "P"]), pd.DataFrame(columns=TRACK_COLUMNS))
    lt = LapTrack(cutoff=float(max_distance) ** 2,
                  gap_closing_cutoff=float(max_distance) ** 2 if max_gap > 0 else False,
                  gap_closing_max_frame_count=max(int(max_gap) + 1, 1),
                  splitting_cutoff=float(division_distance) ** 2 if division_distance else False,
                  # starting a segment costs as much as the longest division or gap allowed, so that a
                  # daughter or a re-found nucleus within reach is joined rather than started afresh
                  segment_start_cost=float(max(max_distance, division_distance or 0)) ** 2,
                  segment_end_cost=float(max(max_distance, division_distance or 0)) ** 2)
    n_frames = labels.shape[0]
    per_frame = [pts[pts["frame"] == t] for t in range(n_frames)]
    coords = [g[["y", "x"]].to_numpy(dtype=float) if len(g) else np.zeros((0, 2)) for g in per_frame]
    tree = lt.predict(coords)
    seg, split_df = _graph_tracks(tree, [len(c) for c in coords])
    track_df = pd.concat(per_frame, ignore_index=True).assign(track_id=seg)
    parents: dict[int, int] = {}
    if len(split_df):
        parents, same_as = _divisions(track_df, split_df, division_area_ratio, division_min_frames, n_frames)
        track_df["track_id"] = track_df["track_id"].map(lambda k: same_as.get(k, k))
    points, lineage = _segments(track_df, parents)
    parent = dict(zip(lineage["L"], lineage["P"]))
    for t, g in points.groupby("frame"):
        lut = np.zeros(int(labels[t].max()) + 1, dtype=np.int32)
        lut[g["label"].to_numpy(dtype=np.int64)] = g["track_id"].to_numpy(dtype=np.int32)
        masks[t] = lut[labels[t]]
    tracks = pd.DataFrame({"track_id": points["track_id"].astype(np.int64), "t": points["frame"].astype(np.int64),
                           "y": points["y"], "x": points["x"], "label": points["label"].astype(np.int64)})
    tracks["parent"] = tracks["track_id"].map(parent).astype(np.int64)
    tracks = tracks.sort_values(["track_id", "t"], ignore_index=True)[TRACK_COLUMNS]
    return TrackResult(masks, lineage.sort_values("L", ignore_index=True), tracks)
