"""OME-Zarr: the writer's store read back by our reader and by ome-zarr-py, stores of other writers
(NGFF 0.4 with channels and nanometres, a bare zarr array), errors that name the store, folders of
stores as inputs, and `run --ome-zarr` end to end with resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import tifffile

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")

from nucleoscope import InputError  # noqa: E402
from nucleoscope.cli import main  # noqa: E402
from nucleoscope.io import find_images, read_image, read_labels, read_zarr_labels, write_ome_zarr  # noqa: E402

from test_run import _field  # noqa: E402


def _labels(shape):
    lab = np.zeros(shape, np.int32)
    lab[10:40, 20:60] = 1
    lab[300:420, 500:650] = 70_000  # beyond uint16: stored as int32, never narrowed
    lab[599, 699] = 3
    return lab


def test_written_store_reads_back_exactly(tmp_path):
    img = (np.arange(600 * 700, dtype=np.uint32).reshape(600, 700) % 4096).astype(np.uint16)
    lab = _labels(img.shape)
    p = write_ome_zarr(tmp_path / "f.ome.zarr", img, lab, spacing=0.65)
    got = read_image(p)
    assert got.data.shape == (600, 700) and got.dtype == "uint16" and got.spacing == pytest.approx(0.65)
    np.testing.assert_array_equal(got.data, img.astype(np.float32))
    np.testing.assert_array_equal(read_labels(p), lab)
    assert read_labels(p).dtype == np.int32
    # the pyramid: 600 -> 300 (>= 256) only; level 1 keeps ids (every 2nd pixel) and doubles the scale
    root = zarr.open_group(str(p), mode="r")
    ms = root["labels/nuclei"].attrs["ome"]["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == ["s0", "s1"]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == pytest.approx([1.3, 1.3])
    np.testing.assert_array_equal(root["labels/nuclei/s1"][...], lab[::2, ::2])
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporaries left


def test_ome_zarr_py_finds_the_image_and_its_labels(tmp_path, caplog):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    img, _ = _field()
    p = write_ome_zarr(tmp_path / "f.ome.zarr", img, (img > 1000).astype(np.int32), spacing=0.5)
    with caplog.at_level("WARNING"):
        nodes = list(Reader(parse_url(str(p)))())
    label_nodes = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert any(isinstance(s, Multiscales) for s in nodes[0].specs)
    assert len(label_nodes) == 1
    # linked to its image (NGFF image-label "source"): without it ome-zarr-py warns "no parent found"
    assert not [r for r in caplog.records if "no parent" in r.getMessage()]
    np.testing.assert_array_equal(np.asarray(label_nodes[0].data[0]), (img > 1000).astype(np.int32))


def test_rewriting_a_store_replaces_it_whole(tmp_path):
    target = tmp_path / "f.ome.zarr"
    write_ome_zarr(target, np.ones((300, 300), np.uint16), np.ones((300, 300), np.int32))
    write_ome_zarr(target, np.full((300, 300), 7, np.uint16), None)
    assert read_image(target).data.max() == 7
    assert not (target / "labels").exists()  # nothing of the old store survives
    assert sorted(os.listdir(tmp_path)) == ["f.ome.zarr"]


def _ngff04(path, data, axes, scale):
    """A store as other NGFF 0.4 writers make it (zarr v2, attributes at the top)."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("0", data=data)
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes,
                                  "datasets": [{"path": "0", "coordinateTransformations": [
                                      {"type": "scale", "scale": scale}]}]}]


def test_ngff_04_store_with_channels_in_nanometres(tmp_path):
    data = np.zeros((2, 64, 80), np.uint16)
    data[0] = 5
    data[1, 10:20, 10:20] = 900
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "nanometer"},
            {"name": "x", "type": "space", "unit": "nanometer"}]
    _ngff04(tmp_path / "two.zarr", data, axes, [1.0, 650.0, 650.0])
    img = read_image(tmp_path / "two.zarr", channel=1)
    assert img.spacing == pytest.approx(0.65) and img.channel == 1
    np.testing.assert_array_equal(img.data, data[1].astype(np.float32))
    with pytest.raises(InputError, match="channel") as exc:
        read_image(tmp_path / "two.zarr")
    assert "two.zarr" in str(exc.value)


def test_bare_zarr_array_is_read_as_yx(tmp_path):
    data = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    zarr.create_array(str(tmp_path / "a.zarr"), data=data)
    img = read_image(tmp_path / "a.zarr")
    assert img.spacing is None
    np.testing.assert_array_equal(img.data, data)


def test_bad_stores_are_named(tmp_path):
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").attrs["foo"] = 1
    with pytest.raises(InputError, match="multiscales") as exc:
        read_image(tmp_path / "plain.zarr")
    assert "plain.zarr" in str(exc.value)
    (tmp_path / "file.zarr").write_text("not a store")
    with pytest.raises(InputError, match="is a folder, found a file"):
        read_image(tmp_path / "file.zarr")
    _ngff04(tmp_path / "nolabels.zarr", np.zeros((8, 8), np.uint8), [{"name": "y"}, {"name": "x"}], [1, 1])
    with pytest.raises(InputError, match="no 'labels' group"):
        read_zarr_labels(tmp_path / "nolabels.zarr")
    with pytest.raises(InputError, match="differs"):
        write_ome_zarr(tmp_path / "x.ome.zarr", np.zeros((8, 8)), np.zeros((8, 9), np.int32))


def test_a_store_is_one_input_and_its_insides_are_never_inputs(tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    write_ome_zarr(d / "a.ome.zarr", np.zeros((300, 300), np.uint16), np.zeros((300, 300), np.int32))
    tifffile.imwrite(d / "b.tif", np.zeros((8, 8), np.uint16))
    write_ome_zarr(d / "sub" / "c.ome.zarr", np.zeros((8, 8), np.uint16))
    assert [p.name for p in find_images([d])] == ["a.ome.zarr", "b.tif"]
    assert [p.name for p in find_images([d], recursive=True)] == ["a.ome.zarr", "b.tif", "c.ome.zarr"]
    assert [p.name for p in find_images([d / "a.ome.zarr"])] == ["a.ome.zarr"]


def test_run_writes_ome_zarr_equal_to_the_tiff_labels_and_resumes(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    img, _ = _field()
    write_ome_zarr(d / "field.ome.zarr", img, spacing=0.5)  # an OME-Zarr input, too
    out = tmp_path / "out"
    assert main(["run", str(d), "-o", str(out), "--method", "otsu", "-q", "--ome-zarr"]) == 0
    images = pd.read_csv(out / "images.csv")
    assert images["ImageName"].tolist() == ["field"] and images["Count"].tolist() == [5]
    assert images["PixelSize_um"].tolist() == [pytest.approx(0.5)]
    store = out / "ome-zarr" / "field.ome.zarr"
    np.testing.assert_array_equal(read_labels(store), read_labels(out / "labels" / "field.tif"))
    got = read_image(store)
    assert got.dtype == "uint16" and got.spacing == pytest.approx(0.5)
    np.testing.assert_array_equal(got.data, img.astype(np.float32))
    stamp = json.loads((out / "run.json").read_text())
    assert stamp["parameters"]["ome_zarr"] is True
    # resume: nothing redone while the store is there; a deleted store is written again
    before = os.stat(store / "zarr.json").st_mtime_ns
    assert main(["run", str(d), "-o", str(out), "--method", "otsu", "-q", "--ome-zarr"]) == 0
    assert os.stat(store / "zarr.json").st_mtime_ns == before
    import shutil

    shutil.rmtree(store)
    assert main(["run", str(d), "-o", str(out), "--method", "otsu", "-q", "--ome-zarr"]) == 0
    np.testing.assert_array_equal(read_labels(store), read_labels(out / "labels" / "field.tif"))


def test_stores_written_into_the_input_folder_are_not_inputs_next_time(tmp_path):
    img, _ = _field()
    tifffile.imwrite(tmp_path / "a.tif", img)
    args = ["run", str(tmp_path), "-o", str(tmp_path), "--method", "otsu", "-q", "--ome-zarr", "-r"]
    assert main(args) == 0
    assert (tmp_path / "ome-zarr" / "a.ome.zarr").is_dir()
    assert main(args) == 0  # the store written by the first run is output, not a second input
    assert pd.read_csv(tmp_path / "images.csv")["ImageName"].tolist() == ["a"]


def test_ome_zarr_with_3d_is_refused_not_ignored(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 32, 32), np.uint16))
    assert main(["run", str(tmp_path / "s.tif"), "-o", str(tmp_path / "out"), "--3d", "--ome-zarr", "-q"]) == 2
    assert "--ome-zarr is not written for --3d" in capsys.readouterr().err
