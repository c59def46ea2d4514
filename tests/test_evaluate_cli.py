"""`nucleoscope evaluate`: pairing, JSON schema, table output, errors naming the files, and numbers
equal to the brute-force reference implementation of test_metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from nucleoscope.cli import main
from test_metrics import ref_iou, ref_match  # the slow reference implementation


def _pair(seed: int, shape=(48, 64)):
    """A truth with random rectangles and a prediction that shifts, drops, merges and adds some."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, np.int32)
    for k in range(1, 9):
        y, x = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
        gt[y:y + rng.integers(4, 9), x:x + rng.integers(4, 9)] = k
    pred = np.roll(gt, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2))) * 3
    pred[pred == 6] = 0                                   # drop one
    pred[pred == 9] = 12                                  # merge two
    pred[0:4, 0:5] = 99                                   # add one
    return gt, pred


def _write(folder, name, labels, suffix=".tif"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{suffix}"
    if suffix == ".png":
        from skimage.io import imsave

        imsave(path, labels.astype(np.uint16), check_contrast=False)
    else:
        tifffile.imwrite(path, labels)
    return path


def test_two_files_json_matches_reference(tmp_path, capsys):
    gt, pred = _pair(0)
    g = _write(tmp_path / "gt", "img", gt)
    p = _write(tmp_path / "pred", "img", pred)
    assert main(["evaluate", str(p), str(g), "--iou", "0.5", "0.7", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # exactly one JSON object
    assert set(out) >= {"pooled", "pixel", "errors", "per_image"}
    assert set(out["pooled"]) == {"0.5", "0.7"}
    gs, ps, iou = ref_iou(gt, pred)
    for key, t in (("0.5", 0.5), ("0.7", 0.7)):
        k, s, _ = ref_match(iou, t)
        row = out["pooled"][key]
        assert (row["tp"], row["fp"], row["fn"]) == (k, len(ps) - k, len(gs) - k)
        assert row["f1"] == pytest.approx(2 * k / (len(gs) + len(ps)))
        assert row["ap"] == pytest.approx(k / (len(gs) + len(ps) - k))
        assert row["precision"] == pytest.approx(k / len(ps)) and row["recall"] == pytest.approx(k / len(gs))
    fg, fp_ = gt > 0, pred > 0
    assert out["pixel"]["accuracy"] == pytest.approx(np.mean(fg == fp_))
    assert out["pixel"]["rmse"] == pytest.approx(np.sqrt(np.mean(fg != fp_)))
    assert set(out["errors"]) >= {"split", "merge", "catastrophe", "touching_separated", "hausdorff_mean"}
    assert out["errors"]["merge"] >= 1  # labels 3 and 4 (x3 = 9, 12) were merged
    assert out["per_image"][0]["name"] == "img"


def test_folders_paired_by_stem_pooled_counts(tmp_path, capsys):
    n_true = n_pred = tp = 0
    for i in range(3):
        gt, pred = _pair(i + 10)
        _write(tmp_path / "gt", f"im{i}", gt, ".png")      # suffixes may differ
        _write(tmp_path / "pred", f"im{i}", pred, ".tif")
        gs, ps, iou = ref_iou(gt, pred)
        n_true, n_pred, tp = n_true + len(gs), n_pred + len(ps), tp + ref_match(iou, 0.5)[0]
    out_csv = tmp_path / "table.csv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--iou", "0.5", "--json",
                 "-o", str(out_csv)]) == 0
    out = json.loads(capsys.readouterr().out)
    p = out["pooled"]["0.5"]
    assert (p["tp"], p["fp"], p["fn"]) == (tp, n_pred - tp, n_true - tp)
    assert [r["name"] for r in out["per_image"]] == ["im0", "im1", "im2"]
    table = pd.read_csv(out_csv)
    assert list(table["name"]) == ["im0", "im1", "im2"]
    assert int(table["tp@0.5"].sum()) == tp


def test_readable_table(tmp_path, capsys):
    gt, _ = _pair(3)
    g = _write(tmp_path / "gt", "a", gt)
    assert main(["evaluate", str(g), str(g), "--iou", "0.5", "0.75"]) == 0
    text = capsys.readouterr().out
    assert " 0.75 " in text and "touching nuclei separated" in text and "Hausdorff" in text
    assert "1.000" in text


def _error(capsys, argv):
    assert main(argv) == 2
    return capsys.readouterr().err


def test_missing_partner_named(tmp_path, capsys):
    gt, pred = _pair(1)
    _write(tmp_path / "gt", "a", gt)
    _write(tmp_path / "gt", "b", gt)
    _write(tmp_path / "pred", "a", pred)
    err = _error(capsys, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt")])
    assert "no prediction for b.tif" in err


def test_shape_mismatch_names_files(tmp_path, capsys):
    g = _write(tmp_path / "gt", "a", np.zeros((10, 10), np.int32))
    p = _write(tmp_path / "pred", "a", np.zeros((10, 12), np.int32))
    err = _error(capsys, ["evaluate", str(p), str(g)])
    assert str(p) in err and str(g) in err and "shape" in err


def test_non_integer_labels_named(tmp_path, capsys):
    g = _write(tmp_path / "gt", "a", np.zeros((10, 10), np.int32))
    p = _write(tmp_path / "pred", "a", np.full((10, 10), 0.5, np.float32))
    err = _error(capsys, ["evaluate", str(p), str(g)])
    assert str(p) in err and "integer" in err


def test_file_versus_folder_refused(tmp_path, capsys):
    g = _write(tmp_path / "gt", "a", np.zeros((10, 10), np.int32))
    err = _error(capsys, ["evaluate", str(tmp_path / "gt"), str(g)])
    assert "both be files or both be folders" in err


# --------------------------------------------------------------------------------------------------
# The benchmark harness (bench/harness.py) rides on the same scoring; an oracle segmenter that returns
# the ground truth must score exactly 1.
# --------------------------------------------------------------------------------------------------


def test_bench_harness_oracle_scores_one(shared_data, monkeypatch):
    import sys
    from pathlib import Path

    import nucleoscope.segment as seg
    from nucleoscope.io import read_labels

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    import harness

    samples = harness.load_split("stardist_pkg_dsb2018_sample", "train", root=shared_data)
    assert [s.name for s in samples] == ["img2d"]
    truth = read_labels(samples[0].mask)
    monkeypatch.setitem(seg.METHODS, "oracle", f"{__name__}:_oracle")
    monkeypatch.setattr(sys.modules[__name__], "_ORACLE", truth, raising=False)
    res = harness.run_benchmark("oracle", "stardist_pkg_dsb2018_sample", "train", root=shared_data,
                                thresholds=(0.5, 0.7), hausdorff=False)
    row = res.row()
    assert (row["n_images"], row["n_failed"]) == (1, 0)
    assert row["f1_0.5"] == row["f1_0.7"] == row["ap_0.5"] == 1.0
    assert (row["splits"], row["merges"]) == (0, 0)
    assert res.megapixels == pytest.approx(512 * 512 / 1e6)
    assert res.s_per_mp > 0 and res.peak_rss_mb > 10
    with pytest.raises(FileNotFoundError, match="no dataset"):
        harness.load_split("nope", "val", root=shared_data)


def _oracle(image, *, spacing=None, diameter=None):
    return _ORACLE.copy(), None


def test_threshold_out_of_range_refused(tmp_path, capsys):
    g = _write(tmp_path / "gt", "a", np.zeros((10, 10), np.int32))
    assert "--iou" in _error(capsys, ["evaluate", str(g), str(g), "--iou", "1.5"])
    assert "--error-iou" in _error(capsys, ["evaluate", str(g), str(g), "--error-iou", "0"])


def test_run_folder_points_to_its_labels(tmp_path, capsys):
    import numpy as np
    import tifffile

    from nucleoscope.cli import main

    run = tmp_path / "results"
    (run / "labels").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    gt = tmp_path / "gt"
    gt.mkdir()
    tifffile.imwrite(gt / "a.tif", np.ones((4, 4), np.uint16))
    tifffile.imwrite(run / "labels" / "a.tif", np.ones((4, 4), np.int32))
    assert main(["evaluate", str(run), str(gt)]) == 2
    assert str(run / "labels") in capsys.readouterr().err


def test_unwritable_output_refused_before_the_work(tmp_path, capsys, monkeypatch):
    # -o was checked only after every image had been read and scored
    import nucleoscope.cli.evaluate as ev

    lab = np.zeros((20, 20), np.int32)
    lab[5:10, 5:10] = 1
    _write(tmp_path / "p", "a", lab)
    _write(tmp_path / "g", "a", lab)
    (tmp_path / "file").write_text("x")

    def never(*a, **k):
        raise AssertionError("scored before checking -o")

    monkeypatch.setattr(ev, "score_files", never)
    assert main(["evaluate", str(tmp_path / "p"), str(tmp_path / "g"), "-o", str(tmp_path / "file" / "s.csv")]) == 2
    assert "file" in capsys.readouterr().err
