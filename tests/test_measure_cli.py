"""``nucleoscope measure``: pairing by name, tables, failures recorded, HDF5 export, processes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from nucleoscope.cli import main
from nucleoscope.features import feature_columns, measure_nuclei
from nucleoscope.io import read_table
from nucleoscope.io.hdf5 import read_crops_h5


def _write_pair(folder, name, n, *, label_name=None, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros((64, 80), np.uint16)
    for k in range(n):
        labels[6 + 18 * (k // 3) : 18 + 18 * (k // 3), 6 + 24 * (k % 3) : 22 + 24 * (k % 3)] = k + 1
    image = (rng.integers(90, 110, labels.shape) + 300 * (labels > 0)).astype(np.uint16)
    (folder / "img").mkdir(exist_ok=True)
    (folder / "lab").mkdir(exist_ok=True)
    tifffile.imwrite(folder / "img" / f"{name}.tif", image)
    tifffile.imwrite(folder / "lab" / f"{label_name or name}.tif", labels)
    return image, labels


def test_measure_folder(tmp_path):
    a_img, a_lab = _write_pair(tmp_path, "a", 3)
    _write_pair(tmp_path, "b", 0, seed=1)  # no nuclei: zero rows, not a failure
    _write_pair(tmp_path, "c", 2, label_name="c_cp_masks", seed=2)  # Cellpose naming
    out = tmp_path / "out"
    rc = main(["measure", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o", str(out),
               "--features", "shape", "--pixel-size", "0.5"])
    assert rc == 0
    t = read_table(out / "nuclei.parquet")
    assert list(t.columns) == ["ImageName", *feature_columns("shape")]
    assert t["ImageName"].tolist() == ["a"] * 3 + ["c"] * 2
    assert t["ObjectNumber"].tolist() == [1, 2, 3, 1, 2]
    ref = measure_nuclei(a_img.astype(np.float32), a_lab.astype(np.int32), spacing=0.5, feature_set="shape",
                         saturation=4095)
    np.testing.assert_allclose(t.iloc[:3, 1:].to_numpy(float), ref.to_numpy(float), equal_nan=True)
    assert t["AreaShape_Area_um2"].iloc[0] == 12 * 16 * 0.25
    csv = read_table(out / "nuclei.csv", dtype={"ImageName": str})
    assert len(csv) == 5
    imgs = pd.read_csv(out / "images.csv")
    assert imgs["Count"].tolist() == [3, 0, 2] and (imgs["Status"] == "ok").all()


def test_failures_are_recorded_and_batch_goes_on(tmp_path):
    _write_pair(tmp_path, "good", 2)
    _write_pair(tmp_path, "orphan", 1)
    (tmp_path / "lab" / "orphan.tif").unlink()  # no labels for this image
    _write_pair(tmp_path, "badshape", 1)
    tifffile.imwrite(tmp_path / "lab" / "badshape.tif", np.zeros((10, 10), np.uint16))
    out = tmp_path / "out"
    rc = main(["measure", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o", str(out),
               "--features", "shape"])
    assert rc == 1
    imgs = pd.read_csv(out / "images.csv").set_index("ImageName")
    assert imgs.loc["good", "Status"] == "ok"
    assert imgs.loc["orphan", "Status"] == "failed" and "no label image" in imgs.loc["orphan", "Error"]
    assert "shape" in imgs.loc["badshape", "Error"] and "badshape.tif" in imgs.loc["badshape", "Error"]
    assert read_table(out / "nuclei.parquet")["ImageName"].unique().tolist() == ["good"]


def test_empty_batch_keeps_schema(tmp_path):
    _write_pair(tmp_path, "none", 0)
    out = tmp_path / "out"
    assert main(["measure", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o", str(out)]) == 0
    t = read_table(out / "nuclei.parquet")
    assert len(t) == 0 and list(t.columns) == ["ImageName", *feature_columns("default")]


def test_crops_patches_and_processes(tmp_path):
    for k, name in enumerate(["p", "q", "r"]):
        _write_pair(tmp_path, name, 3, seed=k)
    serial, parallel = tmp_path / "s", tmp_path / "m"
    common = [str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "--features", "shape", "--crops",
              "--crop-size", "32", "--patches", "--patch-size", "11", "--patch-stride", "5",
              "--class-label", "BJ"]
    assert main(["measure", *common, "-o", str(serial)]) == 0
    assert main(["measure", *common, "-o", str(parallel), "--jobs", "2"]) == 0
    pd.testing.assert_frame_equal(read_table(serial / "nuclei.parquet"), read_table(parallel / "nuclei.parquet"))
    crops = read_crops_h5(serial / "crops.h5")
    assert crops["images"].shape == (9, 32, 32)
    assert crops["image_names"] == ["p", "q", "r"] and crops["class_names"] == ["BJ"]
    assert (crops["labels"] == 0).all()
    patches = read_crops_h5(parallel / "patches.h5")
    assert patches["kind"] == "patches" and patches["images"].shape[1:] == (11, 11)
    # 12 x 16 nuclei, 11-px windows every 5 px from the box corner, kept at >= 85 % inside (brute force).
    fr_r = [min(12 - s, 11) / 11 for s in range(0, 12, 5)]
    fr_c = [min(16 - s, 11) / 11 for s in range(0, 16, 5)]
    per = sum(a * b >= 0.85 for a in fr_r for b in fr_c)
    assert len(patches["images"]) == 9 * per
    np.testing.assert_array_equal(read_crops_h5(serial / "patches.h5")["images"], patches["images"])


def test_pair_by_name_conflict(tmp_path):
    _write_pair(tmp_path, "x", 1)
    tifffile.imwrite(tmp_path / "lab" / "x_masks.tif", np.zeros((64, 80), np.uint16))
    # exact name wins over a suffixed one
    out = tmp_path / "o"
    assert main(["measure", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o", str(out),
                 "--features", "shape"]) == 0
    assert len(read_table(out / "nuclei.parquet")) == 1


def test_usage_errors(tmp_path, capsys):
    _write_pair(tmp_path, "x", 1)
    with pytest.raises(SystemExit) as ei:  # argparse rejects it: one line, exit 2
        main(["measure", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o", str(tmp_path / "o"),
              "--jobs", "0"])
    assert ei.value.code == 2 and "--jobs" in capsys.readouterr().err
    assert main(["measure", str(tmp_path / "nope"), "--labels", str(tmp_path / "lab"), "-o",
                 str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--help"])
def test_help(flag, capsys):
    with pytest.raises(SystemExit):
        main(["measure", flag])
    assert "--labels" in capsys.readouterr().out


def test_unexpected_error_is_recorded(tmp_path, monkeypatch):
    import nucleoscope.features as feats

    _write_pair(tmp_path, "a", 1)

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(feats, "measure_nuclei", boom)
    out = tmp_path / "out"
    assert main(["measure", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o", str(out)]) == 1
    imgs = pd.read_csv(out / "images.csv")
    assert imgs.loc[0, "Status"] == "failed" and "RuntimeError: kaboom" in imgs.loc[0, "Error"]
    assert len(read_table(out / "nuclei.parquet")) == 0
