"""Tracking: linking on hand-built movies (diagonal motion, a division, a one-frame gap), the CTC result
format written by ``nucleoscope track`` and scored by ``nucleoscope evaluate-tracks``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from nucleoscope.cli import main
from nucleoscope.track import track_nuclei


def _movie():
    """8 frames, 80x80: A moves diagonally 3 px/frame and is missing in frame 4; B divides at frame 4."""
    m = np.zeros((8, 80, 80), np.int32)
    for t in range(8):
        if t != 4:
            m[t, 4 + 3 * t:10 + 3 * t, 4 + 3 * t:10 + 3 * t] = 5 + t % 3  # per-frame ids change on purpose
        if t < 4:
            m[t, 55:65, 50:60] = 1
        else:
            m[t, 48:54, 52:58] = 2
            m[t, 66:72, 52:58] = 3
    return m


def test_diagonal_gap_and_division_have_the_known_lineage():
    res = track_nuclei(_movie(), max_distance=12, max_gap=1, division_distance=15)
    lin = {tuple(r) for r in res.lineage.to_numpy().tolist()}
    # A: frames 0-3, then (after the gap) 5-7 with A's first part as parent; B: 0-3, daughters 4-7
    assert len(lin) == 5
    a1 = res.masks[0, 6, 6]
    a2 = res.masks[5, 4 + 15 + 2, 4 + 15 + 2]
    b = res.masks[0, 60, 55]
    d1, d2 = res.masks[4, 50, 55], res.masks[4, 68, 55]
    assert (a1, 0, 3, 0) in lin and (a2, 5, 7, a1) in lin
    assert (b, 0, 3, 0) in lin and (d1, 4, 7, b) in lin and (d2, 4, 7, b) in lin
    assert len({a1, a2, b, d1, d2}) == 5
    # the masks carry the track id in every frame of the track
    assert all(res.masks[t, 6 + 3 * t, 6 + 3 * t] == a1 for t in range(4))
    t_rows = res.tracks[res.tracks.track_id == a1]
    assert t_rows["t"].tolist() == [0, 1, 2, 3] and t_rows["x"].tolist() == pytest.approx([6.5, 9.5, 12.5, 15.5])


def test_a_fragment_split_off_for_one_frame_is_not_a_division():
    """A nucleus the segmenter cuts into a large and a small piece in frame 3 only: the large piece
    continues the nucleus's track (no division, no broken lineage), the fragment is a one-frame track."""
    m = np.zeros((8, 60, 60), np.int32)
    m[:, 20:36, 20:36] = 1
    m[3, 20:36, 31:36] = 2  # frame 3: the right 5 columns segmented as a separate object
    res = track_nuclei(m, max_distance=12, division_distance=15)
    assert sorted(map(tuple, res.lineage[["B", "E", "P"]].to_numpy().tolist())) == [(0, 7, 0), (3, 3, 0)]
    assert len(np.unique(res.masks[:, 25, 25])) == 1
    # with daughters allowed to live a single frame the split is taken for a division
    res1 = track_nuclei(m, max_distance=12, division_distance=15, division_min_frames=1)
    assert (res1.lineage["P"] > 0).sum() == 2


def test_without_gap_closing_or_divisions():
    res = track_nuclei(_movie(), max_distance=12, max_gap=0, division_distance=None)
    assert (res.lineage["P"] == 0).all()
    # A's two parts; B continued by its nearer (here: first-found) daughter; the other daughter a new track
    assert len(res.lineage) == 4 and sorted(res.lineage["E"] - res.lineage["B"]) == [2, 3, 3, 7]


def _shape(rows):
    """The lineage without its numbering: (first, last frame, parent's (first, last) or None) per track."""
    span = {L: (B, E) for L, B, E, _ in rows}
    return sorted((B, E, span.get(P)) for _, B, E, P in rows)


def _write_ctc_truth(folder, masks, lineage):
    folder.mkdir(parents=True)
    for t, m in enumerate(masks):
        tifffile.imwrite(folder / f"man_track{t:03d}.tif", m.astype(np.uint16))
    (folder / "man_track.txt").write_text("".join(f"{L} {B} {E} {P}\n" for L, B, E, P in lineage))


def test_track_cli_writes_ctc_format_and_scores_perfect_against_its_truth(tmp_path):
    truth = track_nuclei(_movie(), max_distance=12, division_distance=15)
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for t, m in enumerate(_movie()):
        img = 20 + rng.normal(0, 2, m.shape) + 200 * (m > 0)
        tifffile.imwrite(frames / f"t{t:03d}.tif", img.astype(np.uint16))
    out = tmp_path / "out"
    assert main(["track", str(frames), "-o", str(out), "--method", "otsu", "--max-distance", "12",
                 "--division-distance", "15", "-q"]) == 0
    assert sorted(p.name for p in out.glob("mask*.tif")) == [f"mask{t:03d}.tif" for t in range(8)]
    assert tifffile.imread(out / "mask000.tif").dtype == np.uint16
    rows = [tuple(map(int, line.split())) for line in (out / "res_track.txt").read_text().splitlines()]
    assert _shape(rows) == _shape(truth.lineage.to_numpy().tolist())
    tracks = pd.read_csv(out / "tracks.csv")
    assert list(tracks.columns[:4]) == ["track_id", "t", "y", "x"] and len(tracks) == 7 + 4 + 8
    _write_ctc_truth(tmp_path / "gt" / "TRA", truth.masks, truth.lineage.to_numpy().tolist())
    assert main(["evaluate-tracks", str(out), str(tmp_path / "gt"), "--json", str(tmp_path / "s.json")]) == 0
    import json

    s = json.loads((tmp_path / "s.json").read_text())
    assert s["TRA"] == pytest.approx(1.0) and s["DET"] == pytest.approx(1.0)
    assert s["division_recall"] == 1.0 and s["divisions_true"] == 1
    # a truth where A is not linked across its gap costs TRA: the measure sees the difference
    broken = truth.lineage.copy()
    broken.loc[broken["P"] == broken.loc[broken["B"] == 0, "L"].min(), "P"] = 0
    broken.loc[broken["B"] == 5, "P"] = 0
    _write_ctc_truth(tmp_path / "gt2" / "TRA", truth.masks, broken.to_numpy().tolist())
    from nucleoscope.pipeline.evaluate_tracks import evaluate_tracks

    assert evaluate_tracks(out, tmp_path / "gt2")["TRA"] < 1.0
    # resume: a second run re-links without re-segmenting and writes the same lineage
    assert main(["track", str(frames), "-o", str(out), "--method", "otsu", "--max-distance", "12",
                 "--division-distance", "15", "-q"]) == 0
    assert (out / "res_track.txt").read_text().splitlines() == [" ".join(map(str, r)) for r in rows]


def test_single_image_is_not_a_movie(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((32, 32), np.uint16))
    assert main(["track", str(tmp_path / "one.tif"), "-o", str(tmp_path / "o"), "-q"]) == 2


@pytest.mark.shared_data
def test_linking_the_true_masks_of_simplus_recovers_the_truth(shared_data, tmp_path):
    """Linking the CTC truth's own masks (first 12 frames of SIM+ 01, which hold divisions): the CTC
    files written and scored end to end must score near 1."""
    tra = shared_data / "ctc_simplus_tracking" / "train" / "01" / "tra"
    if not tra.is_dir():
        pytest.skip("ctc_simplus_tracking not present")
    n = 12
    masks = np.stack([tifffile.imread(tra / f"man_track{t:03d}.tif").astype(np.int32) for t in range(n)])
    rows = [tuple(map(int, line.split())) for line in (tra / "man_track.txt").read_text().splitlines()]
    gt = tmp_path / "gt"
    present = {int(v) for v in np.unique(masks) if v}
    lineage = [(L, B, min(E, n - 1), P if P in present else 0) for L, B, E, P in rows if L in present]
    _write_ctc_truth(gt, masks, lineage)
    res = track_nuclei(masks)
    out = tmp_path / "res"
    out.mkdir()
    for t in range(n):
        tifffile.imwrite(out / f"mask{t:03d}.tif", res.masks[t].astype(np.uint16))
    (out / "res_track.txt").write_text("".join(f"{L} {B} {E} {P}\n" for L, B, E, P in res.lineage.to_numpy()))
    from nucleoscope.pipeline.evaluate_tracks import evaluate_tracks

    s = evaluate_tracks(out, gt)
    assert s["DET"] == pytest.approx(1.0)
    assert s["TRA"] >= 0.97


def test_ctc_seg_measure_on_hand_built_frames(tmp_path):
    """CTC SEG: Jaccard with the prediction covering > half of each annotated object, else 0; unannotated
    predictions cost nothing; only the annotated frames count."""
    from nucleoscope.metrics import ctc_seg_jaccard
    from nucleoscope.pipeline.evaluate_tracks import seg_score

    gt = np.zeros((20, 20), np.int32)
    gt[0:4, 0:4] = 3          # 16 px, predicted exactly: J = 1
    gt[10:14, 0:4] = 4        # 16 px, prediction covers 8 (half, not more): 0
    gt[10:14, 10:14] = 9      # 16 px, prediction 4x5 covering 12: J = 12 / (16 + 20 - 12) = 0.5
    pred = np.zeros_like(gt)
    pred[0:4, 0:4] = 1
    pred[10:14, 2:6] = 2
    pred[10:14, 11:16] = 5
    pred[17:20, 17:20] = 6    # not annotated: no cost
    assert ctc_seg_jaccard(gt, pred).tolist() == pytest.approx([1.0, 0.0, 0.5])
    res, seg = tmp_path / "res", tmp_path / "SEG"
    res.mkdir(), seg.mkdir()
    for t in range(3):
        tifffile.imwrite(res / f"mask{t:03d}.tif", pred.astype(np.uint16))
    tifffile.imwrite(seg / "man_seg001.tif", gt.astype(np.uint16))
    assert seg_score(res, seg) == (pytest.approx(0.5), 3, 1)
