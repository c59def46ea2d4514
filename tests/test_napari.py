"""The napari plugin, headless (Qt offscreen, pytest-qt): manifest, reader, writers, samples, Segment.

Skipped where the ``napari`` extra is not installed. The widgets run on a ``ViewerModel`` (the viewer
without its OpenGL canvas), so no display or GL driver is needed; docs/napari.md's screenshots need
the canvas and are made by ``tests/test_napari_docs.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.components import ViewerModel  # noqa: E402

from nucleoscope.napari import _common  # noqa: E402
from nucleoscope.napari._reader import get_reader  # noqa: E402
from nucleoscope.napari._sample import BBBC039_FIELD, bbbc039_field, synthetic_field  # noqa: E402
from nucleoscope.napari._segment import SegmentWidget  # noqa: E402
from nucleoscope.napari._writer import write_labels, write_table  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[1] / "src" / "nucleoscope" / "napari" / "napari.yaml"


@pytest.fixture
def viewer(qtbot):
    return ViewerModel()


@pytest.fixture
def errors(monkeypatch):
    """The messages shown as napari error notifications."""
    shown: list[str] = []
    monkeypatch.setattr(_common, "show_error", shown.append)
    return shown


def _add(viewer, layer_data):
    for data, attrs, kind in layer_data:
        getattr(viewer, f"add_{kind}")(data, **attrs)


def _done(qtbot, widget, timeout=120_000):
    """Wait until the widget's worker has finished (its ``finished`` handler, connected before the
    thread started, clears ``widget.worker``; waiting on the signal itself could miss a fast worker)."""
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def _segment(qtbot, widget, timeout=120_000):
    worker = widget.run()
    assert worker is not None, widget.status.text()
    _done(qtbot, widget, timeout)
    return worker


# ---------------------------------------------------------------------------------------------- manifest


def test_manifest_validates_and_is_the_entry_point():
    from importlib.metadata import entry_points

    npe2 = Path(sys.executable).with_name("npe2")
    out = subprocess.run([str(npe2), "validate", str(MANIFEST)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    eps = [e for e in entry_points(group="napari.manifest") if e.name == "nucleoscope"]
    assert eps and eps[0].value == "nucleoscope.napari:napari.yaml"
    assert (resources.files("nucleoscope.napari") / "napari.yaml").is_file()  # shipped as package data

    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    assert {w.display_name for w in pm.contributions.widgets} == {"Segment", "Measure", "Train", "Classify"}
    for c in pm.contributions.commands:  # every command points at a callable that imports
        module, name = c.python_name.split(":")
        assert callable(getattr(__import__(module, fromlist=[name]), name)), c.python_name


# ---------------------------------------------------------------------------------------------- reader


def test_reader_opens_a_run_folder_as_image_labels_and_table(tmp_path):
    from nucleoscope.pipeline import RunConfig, run_batch

    src = resources.files("nucleoscope") / "data" / f"{BBBC039_FIELD}.tif"
    images = run_batch([str(src)], tmp_path / "out", RunConfig(method="otsu", feature_set="shape"),
                       show_progress=False)
    reader = get_reader(str(tmp_path / "out"))
    assert reader is not None
    layers = reader(str(tmp_path / "out"))
    kinds = [(a["name"], k) for _, a, k in layers]
    assert kinds == [(BBBC039_FIELD, "image"), (f"{BBBC039_FIELD} nuclei", "labels"),
                     (f"{BBBC039_FIELD} QC flagged", "labels")]
    labels, attrs = layers[1][0], layers[1][1]
    n = int(images["Count"].iloc[0])
    assert labels.max() == n and len(attrs["features"]) == n
    assert list(attrs["features"]["ObjectNumber"]) == list(range(1, n + 1))
    flagged = set(np.unique(layers[2][0])) - {0}
    assert flagged == set(attrs["features"].loc[attrs["features"]["QC_Flagged"], "ObjectNumber"])
    assert get_reader(str(tmp_path / "out" / "images.csv")) is None  # not ours: napari's own readers


def test_reader_opens_tiff_and_ome_zarr_with_labels(tmp_path):
    pytest.importorskip("ome_zarr")
    from nucleoscope import io

    (image, _, _), (truth, _, _) = synthetic_field(seed=1, shape=(256, 256))
    io.write_image(tmp_path / "a.tif", image.astype(np.uint16), spacing=0.5)
    layers = get_reader(str(tmp_path / "a.tif"))(str(tmp_path / "a.tif"))
    assert len(layers) == 1 and layers[0][1]["metadata"]["spacing_um"] == pytest.approx(0.5)
    np.testing.assert_array_equal(layers[0][0], image)
    io.write_ome_zarr(tmp_path / "b.ome.zarr", image.astype(np.uint16), truth, spacing=0.5)
    layers = get_reader(str(tmp_path / "b.ome.zarr"))(str(tmp_path / "b.ome.zarr"))
    assert [k for _, _, k in layers] == ["image", "labels"]
    np.testing.assert_array_equal(layers[1][0], truth)


def test_reader_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff")
    reader = get_reader(str(bad))
    with pytest.raises(ValueError, match="broken.tif"):
        reader(str(bad))


# ---------------------------------------------------------------------------------------------- writers


def test_writers_labels_tiff_zarr_and_tables(tmp_path):
    import pandas as pd

    from nucleoscope import io

    labels = np.zeros((64, 64), np.int32)
    labels[5:15, 5:15], labels[30:40, 20:44] = 1, 70000  # an id past uint16 survives
    attrs = {"metadata": {"spacing_um": 0.25}, "features": pd.DataFrame({"ObjectNumber": [1, 70000]})}
    (p,) = write_labels(str(tmp_path / "l.tif"), labels, attrs)
    np.testing.assert_array_equal(io.read_labels(p), labels)
    if pytest.importorskip("ome_zarr"):
        (z,) = write_labels(str(tmp_path / "l.ome.zarr"), labels, attrs)
        np.testing.assert_array_equal(io.read_zarr_labels(z), labels)
    for suffix in (".csv", ".parquet"):
        (t,) = write_table(str(tmp_path / f"t{suffix}"), labels, attrs)
        assert list(io.read_table(t)["ObjectNumber"]) == [1, 70000]
    with pytest.raises(ValueError, match="no table"):
        write_table(str(tmp_path / "x.csv"), labels, {"features": pd.DataFrame()})


def test_samples():
    ((image, attrs, kind),) = bbbc039_field()
    assert kind == "image" and image.shape == (520, 696) and attrs["metadata"]["saturation"] == 4095
    (image, _, _), (truth, tattrs, tkind) = synthetic_field()
    assert tkind == "labels" and truth.shape == image.shape and truth.max() > 20
    from nucleoscope.napari._sample import two_class_field

    (image, _, _), (labels, lattrs, _) = two_class_field(3)
    t = lattrs["features"]
    assert labels.shape == image.shape == (192, 384) and list(t["ObjectNumber"]) == list(range(1, labels.max() + 1))
    for cls, half in (("small", labels[:, :192]), ("large", labels[:, 192:])):  # each class fills its half
        ids = set(t.loc[t["TrueClass"] == cls, "ObjectNumber"])
        assert len(ids) >= 8 and set(np.unique(half)) - {0} == ids


# ---------------------------------------------------------------------------------------------- Segment


def test_segment_widget_matches_run_on_the_bundled_image(viewer, qtbot, tmp_path, errors):
    from nucleoscope.pipeline import RunConfig, run_batch

    _add(viewer, bbbc039_field())
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    assert w.image.currentText() == BBBC039_FIELD
    _segment(qtbot, w)
    assert errors == []
    layer = viewer.layers[f"{BBBC039_FIELD} nuclei"]
    n = int(layer.data.max())
    # the same analysis as `nucleoscope run` with the same (default) options
    src = resources.files("nucleoscope") / "data" / f"{BBBC039_FIELD}.tif"
    images = run_batch([str(src)], tmp_path / "run", RunConfig(method="auto", feature_set="shape"),
                       show_progress=False)
    assert n == int(images["Count"].iloc[0])
    assert 105 <= n <= 125  # truth: 117 annotated nuclei (nuset_v5 finds 116)
    assert len(layer.features) == n and list(layer.features["ObjectNumber"]) == list(range(1, n + 1))
    flagged = viewer.layers[f"{BBBC039_FIELD} QC flagged"]
    ids = set(np.unique(flagged.data)) - {0}
    assert ids == set(layer.features.loc[layer.features["QC_Flagged"], "ObjectNumber"]) and ids
    assert flagged.contour == 2
    assert f"{n} nuclei" in w.status.text()
    # segmenting again replaces the layers' data instead of piling up new layers
    _segment(qtbot, w)
    assert len(viewer.layers) == 3


def _big_image() -> np.ndarray:
    src = bbbc039_field()[0][0]
    return np.tile(src, (4, 3))[:2048, :2048].copy()


def test_segment_2048_keeps_the_event_loop_responsive(viewer, qtbot, errors):
    from qtpy.QtCore import QTimer

    viewer.add_image(_big_image(), name="big", metadata={"saturation": 4095})
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.method.setCurrentText("otsu")
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    worker = w.run()
    assert worker is not None and w.worker is worker and not w.run_button.isEnabled()
    assert time.perf_counter() - t0 < 0.5  # run() returns at once: the work is in the worker thread
    _done(qtbot, w)
    timer.stop()
    busy = time.perf_counter() - t0
    assert errors == []
    gaps = np.diff([t0, *ticks])
    assert busy > 0.5  # it really worked for a while
    assert len(ticks) >= busy / 0.02 * 0.25, (len(ticks), busy)
    assert gaps.max() < 1.0, gaps.max()  # the GUI thread never froze for a second
    assert viewer.layers["big nuclei"].data.max() > 500


def test_segment_cancel_discards_the_result(viewer, qtbot, errors):
    viewer.add_image(_big_image(), name="big")
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.method.setCurrentText("otsu")
    assert w.run() is not None
    w.cancel()
    _done(qtbot, w)
    assert "big nuclei" not in viewer.layers
    assert w.status.text() == "cancelled" and w.run_button.isEnabled() and errors == []


def _tiled_image() -> np.ndarray:
    return np.tile(bbbc039_field()[0][0], (2, 2))[:1024, :1024].copy()


def test_segment_progress_counts_tiles_and_steps(viewer, qtbot, errors):
    viewer.add_image(_tiled_image(), name="tiled")
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.method.setCurrentText("otsu")
    w.tile.setValue(384)
    _segment(qtbot, w)
    assert errors == []
    steps = w.steps
    n = steps[-1][1] - 2  # the tiles, then QC and measuring
    assert n >= 9 and steps[-1] == (n + 2, n + 2, "done")
    tiles = [s for s in steps if s[2].startswith("segmenting: tile")]
    assert [d for d, _, _ in tiles] == list(range(1, n + 1)) and {t for _, t, _ in tiles} == {n + 2}
    assert [s[2] for s in steps[-3:]] == ["quality control", "measuring", "done"]
    assert w.progress.maximum() == 1 and w.progress.value() == 1
    assert viewer.layers["tiled nuclei"].metadata["method"] == "otsu"


def test_segment_cancel_stops_between_tiles(viewer, qtbot, errors):
    viewer.add_image(_tiled_image(), name="tiled")
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.method.setCurrentText("otsu")
    w.tile.setValue(256)
    w._relay.step.connect(lambda done, total, step: w.cancel() if step == "segmenting: tile 2 of " + str(total - 2)
                          else None)
    assert w.run() is not None
    _done(qtbot, w)
    assert w.status.text() == "cancelled" and errors == [] and "tiled nuclei" not in viewer.layers
    done, total, _ = w.steps[-1]
    assert total - 2 >= 25 and done < (total - 2) // 2  # stopped within a few tiles, long before the end
    assert not any(s[2] == "measuring" for s in w.steps) and w.run_button.isEnabled()


def test_layer_boxes_follow_the_viewer(viewer, qtbot):
    from nucleoscope.napari._measure import MeasureWidget

    w, m = SegmentWidget(viewer), MeasureWidget(viewer)
    qtbot.addWidget(w)
    qtbot.addWidget(m)
    a = viewer.add_image(np.zeros((8, 8), np.float32), name="a")
    viewer.add_image(np.zeros((8, 8), np.float32), name="b")
    a.name = "renamed"
    for box in (w.image, m.image):  # both widgets follow the rename and the new layer
        assert [box.itemText(i) for i in range(box.count())] == ["renamed", "b"]
    viewer.layers.remove("b")
    assert w.image.currentText() == "renamed" and w.image.layer() is a


def test_segment_errors_are_notifications(viewer, qtbot, errors):
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    assert w.run() is None and "no image layer" in errors[-1]
    viewer.add_image(np.zeros((3, 32, 32), np.float32), name="stack")
    assert w.run() is None and "'stack' has shape (3, 32, 32)" in errors[-1]
    # an error raised inside the worker thread: a diameter larger than the image
    viewer.add_image(np.random.default_rng(0).random((64, 64)).astype(np.float32), name="small")
    w.image.choose(viewer.layers["small"])
    w.method.setCurrentText("otsu")
    w.diameter.setValue(500)
    _segment(qtbot, w)
    assert "Segment failed" in errors[-1] and "larger than this 64 x 64 px image" in errors[-1]
    assert "small nuclei" not in viewer.layers and w.run_button.isEnabled()


# ---------------------------------------------------------------------------------------------- Measure


def _segmented(viewer, qtbot):
    _add(viewer, bbbc039_field())
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.method.setCurrentText("otsu")
    _segment(qtbot, w)
    return viewer.layers[f"{BBBC039_FIELD} nuclei"]


def test_measure_widget_table_sort_select_export(viewer, qtbot, tmp_path, errors):
    from nucleoscope.io import read_table
    from nucleoscope.napari._measure import MeasureWidget

    layer = _segmented(viewer, qtbot)
    n = int(layer.data.max())
    m = MeasureWidget(viewer)
    qtbot.addWidget(m)
    assert m.labels.currentText() == layer.name and m.image.currentText() == BBBC039_FIELD
    assert m.table.rowCount() == n  # the table Segment stored, shown at once
    # a merge fixed by hand: paint nucleus 1 away, measure again with the default feature set
    layer.data = np.where(layer.data == 1, 0, layer.data)
    assert m.run() is not None
    _done(qtbot, m)
    assert errors == []
    assert m.table.rowCount() == n - 1 == len(layer.features)
    assert 1 not in set(layer.features["ObjectNumber"])
    cols = [m.table.horizontalHeaderItem(j).text() for j in range(m.table.columnCount())]
    assert cols[:4] == ["ObjectNumber", "AreaShape_Area", "Intensity_MeanIntensity", "QC_Flagged"]
    assert any(c.startswith("Texture_") for c in cols)  # the default set, not the shape set of Segment
    # sorting by area (numerically), then a click selects that nucleus and centres the view on it
    m.table.sortItems(1)
    areas = [m.table.item(i, 1).value for i in range(m.table.rowCount())]
    assert areas == sorted(areas)
    m.select_row(0)
    smallest = int(layer.features.loc[layer.features["AreaShape_Area"].idxmin(), "ObjectNumber"])
    assert layer.selected_label == smallest
    ys, xs = np.nonzero(layer.data == smallest)
    assert np.allclose(viewer.camera.center[-2:], (ys.mean(), xs.mean()), atol=1.0)
    for suffix in (".csv", ".parquet"):
        out = m.export(str(tmp_path / f"nuclei{suffix}"))
        df = read_table(out)
        assert len(df) == n - 1 and df["ImageName"].iloc[0] == BBBC039_FIELD
    assert m.export(str(tmp_path / "nuclei.xlsx")) is None and "Export failed" in errors[-1]


def test_measure_errors_are_notifications(viewer, qtbot, errors):
    from nucleoscope.napari._measure import MeasureWidget

    m = MeasureWidget(viewer)
    qtbot.addWidget(m)
    assert m.run() is None and "no Labels layer" in errors[-1]
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    viewer.add_labels(np.zeros((16, 16), np.int32), name="lab")
    assert m.run() is None and "differ in shape" in errors[-1]


# ---------------------------------------------------------------------------------------------- Train


def test_train_finetunes_and_segment_uses_the_new_model(viewer, qtbot, tmp_path, errors):
    import json

    pytest.importorskip("torch")
    from nucleoscope.models import read_metadata
    from nucleoscope.napari._train import TrainWidget

    _add(viewer, bbbc039_field())
    seg = SegmentWidget(viewer)
    qtbot.addWidget(seg)
    seg.method.setCurrentText("nuset")
    _segment(qtbot, seg)
    before = int(viewer.layers[f"{BBBC039_FIELD} nuclei"].data.max())
    t = TrainWidget(viewer)
    qtbot.addWidget(t)
    assert t.labels.currentText() == f"{BBBC039_FIELD} nuclei"  # not the QC overlay
    t.steps.setValue(3)
    t.batch.setValue(2)
    t.crop.setValue(128)
    t.folder.setText(str(tmp_path / "model"))
    assert t.run() is not None
    _done(qtbot, t, 300_000)
    assert errors == []
    assert len(t.losses) == 3 and np.isfinite(t.losses).all() and t.progress.value() == 3
    meta = json.loads((tmp_path / "model" / "nuset.json").read_text())
    assert meta["training"]["steps"] == 3 and meta["training"]["init"]["model"] == "nuset_v5"
    assert meta["thresholds"] == read_metadata("nuset_v5")["thresholds"]  # the model's own, not defaults
    assert (tmp_path / "model" / "curves.png").is_file()
    # the Segment widget switched to the new model: the next segmentation uses it
    assert seg.model.currentData() == str(tmp_path / "model" / "nuset.safetensors")
    _segment(qtbot, seg)
    layer = viewer.layers[f"{BBBC039_FIELD} nuclei"]
    assert layer.metadata["model"] == str(tmp_path / "model" / "nuset.safetensors")
    assert abs(int(layer.data.max()) - before) <= 10  # 3 small steps from nuset_v5 keep it working


def test_train_cancel_saves_nothing(viewer, qtbot, tmp_path, errors):
    pytest.importorskip("torch")
    from nucleoscope.napari._train import TrainWidget

    (image, attrs, _), (truth, _, _) = synthetic_field(shape=(256, 256))
    viewer.add_image(image, **attrs)
    viewer.add_labels(truth, name="truth")
    t = TrainWidget(viewer)
    qtbot.addWidget(t)
    t.steps.setValue(1000)
    t.batch.setValue(1)
    t.crop.setValue(64)
    t.folder.setText(str(tmp_path / "m"))
    t._relay.step.connect(lambda step, loss: t.cancel() if step == 2 else None)
    assert t.run() is not None
    _done(qtbot, t, 300_000)
    assert "cancelled after" in t.status.text() and errors == []
    assert not (tmp_path / "m" / "nuset.safetensors").exists()
    assert t.train_button.isEnabled()


# ---------------------------------------------------------------------------------------------- Classify


def _two_class_field(seed: int):
    """The two-class sample (small nuclei left, large right): (image, labels, {nucleus: class})."""
    from nucleoscope.napari._sample import two_class_field

    (image, _, _), (labels, attrs, _) = two_class_field(seed)
    t = attrs["features"]
    return image, labels, dict(zip(t["ObjectNumber"].astype(int), t["TrueClass"]))


def _labels_file(path, truths: dict[str, dict[int, str]]):
    lines = ["ImageName,ObjectNumber,class"]
    lines += [f"{name},{i},{c}" for name, t in truths.items() for i, c in t.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _colour_matches(layer, colours: dict[str, str], truth: dict[int, str]) -> float:
    """The fraction of nuclei the ``"<image> classes"`` layer draws in their true class's colour."""
    from napari.utils.colormaps.standardize_color import transform_color

    hits = [np.allclose(layer.get_color(i)[:3], transform_color(colours[c])[0][:3], atol=0.01)
            for i, c in truth.items()]
    return float(np.mean(hits))


@pytest.fixture
def classify_widget(viewer, qtbot):
    from nucleoscope.napari._classify import ClassifyWidget

    w = ClassifyWidget(viewer)
    qtbot.addWidget(w)
    w.features.setCurrentText("shape")
    return w


def test_classify_widget_trains_on_layers_and_colours_nuclei_by_class(viewer, qtbot, tmp_path, errors,
                                                                      classify_widget):
    import json

    from nucleoscope.napari._classify import class_colours

    w = classify_widget
    truths = {}
    for i in range(3):  # labels only: the widget measures them on their images
        image, labels, truths[f"f{i}"] = _two_class_field(i)
        viewer.add_image(image, name=f"f{i}")
        viewer.add_labels(labels, name=f"f{i} nuclei", metadata={"source_image": f"f{i}"})
    w.set_layers(["f0 nuclei", "f1 nuclei"])
    w.class_source.setCurrentText("labels file…")
    w.labels_file.setText(str(_labels_file(tmp_path / "classes.csv", {k: truths[k] for k in ("f0", "f1")})))
    w.model.setCurrentText("logreg")
    w.out.setText(str(tmp_path / "model"))
    assert w.train() is not None
    _done(qtbot, w)
    assert errors == [], errors
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert info["format"] == "nucleoscope-classifier" and info["classes"] == ["large", "small"]
    assert info["training"]["layers"] == ["f0 nuclei", "f1 nuclei"] and info["training"]["group_column"] == "images"
    assert (tmp_path / "model" / "validation" / "oof_logreg.csv").is_file()
    assert (tmp_path / "model" / "report.html").is_file()
    assert w.validation_score("logreg") > 0.9
    assert "logreg: balanced accuracy" in w.score.text() and "grouped by images" in w.score.text()
    assert len(viewer.layers["f0 nuclei"].features) == len(truths["f0"])  # the measured table joined its layer
    assert not w.heatmap_row.isVisibleTo(w)  # no PatchNet in this folder
    # predict the third image, which the model never saw
    w.target.choose(viewer.layers["f2 nuclei"])
    assert w.predict() is not None
    _done(qtbot, w)
    assert errors == [], errors
    out = viewer.layers["f2 classes"]
    assert _colour_matches(out, class_colours(info["classes"]), truths["f2"]) > 0.9
    feats = viewer.layers["f2 nuclei"].features
    assert {"Predicted", "P_large", "P_small"} <= set(feats.columns) and len(feats) == len(truths["f2"])
    assert np.allclose(feats["P_large"] + feats["P_small"], 1.0)
    truth = feats["ObjectNumber"].map(truths["f2"])
    assert (feats["Predicted"] == truth).mean() > 0.9
    legend = [w.legend.item(i).text() for i in range(w.legend.count())]
    n_large = int((feats["Predicted"] == "large").sum())
    assert legend == [f"large: {n_large} nuclei", f"small: {len(feats) - n_large} nuclei"]
    # the result layer is neither offered for training nor picked by default for the next prediction
    from nucleoscope.napari._classify import ClassifyWidget

    again = ClassifyWidget(viewer)
    qtbot.addWidget(again)
    assert again.target.currentText() == "f2 nuclei"
    assert "f2 classes" not in [again.layers.item(i).text() for i in range(again.layers.count())]


def test_classify_widget_trains_on_the_two_class_sample_as_opened(viewer, qtbot, tmp_path, errors, classify_widget):
    from nucleoscope.napari._sample import two_class_field

    w = classify_widget
    _add(viewer, two_class_field(5))  # File > Open Sample: the classes are the table's TrueClass column
    layer = viewer.layers["two_classes_5 nuclei"]
    truth = dict(zip(layer.features["ObjectNumber"], layer.features["TrueClass"]))
    w.set_layers([layer.name])
    assert w.class_source.currentText() == "TrueClass"  # the table's one non-measurement column
    w.out.setText(str(tmp_path / "model"))
    assert w.train() is not None
    _done(qtbot, w)
    assert errors == [], errors
    # one image: the folds cannot be grouped by image; they are by nucleus, and the widget says so
    assert "grouped by nuclei" in w.score.text()
    assert w.validation_score() > 0.9
    # the layer was measured for the training; its classes stayed with their nuclei
    feats = layer.features
    assert "AreaShape_Area" in feats and dict(zip(feats["ObjectNumber"], feats["TrueClass"])) == truth
    w.target.choose(layer)
    assert w.predict() is not None
    _done(qtbot, w)
    assert (layer.features["Predicted"] == layer.features["TrueClass"]).mean() > 0.9
    # a nucleus erased with the brush: the table no longer fits the labels, so it is measured again
    layer.data = np.where(layer.data == 1, 0, layer.data)
    assert w.predict() is not None
    _done(qtbot, w)
    assert errors == [], errors
    assert list(layer.features["ObjectNumber"]) == sorted(set(truth) - {1})
    assert (layer.features["Predicted"] == layer.features["TrueClass"]).mean() > 0.9


def test_classify_widget_on_a_run_folder_predicts_as_classify_predict(viewer, qtbot, tmp_path, errors,
                                                                     classify_widget):
    import json

    from nucleoscope.cli import main
    from nucleoscope.io import write_image, write_labels
    from nucleoscope.pipeline.classify import predict_runs

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    truths = {}
    for i in range(3):
        image, labels, truths[f"f{i}"] = _two_class_field(10 + i)
        write_image(tmp_path / "img" / f"f{i}.tif", image)
        write_labels(tmp_path / "lab" / f"f{i}.tif", labels)
    run = tmp_path / "run"
    assert main(["measure", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o", str(run), "-q",
                 "--features", "shape"]) == 0
    _add(viewer, get_reader(str(run))(str(run)))
    w = classify_widget
    assert w.runs.text() == str(run.resolve())  # the run folder the reader opened
    w.source.setCurrentText("run folders")
    w.class_source.setCurrentText("labels file…")
    w.labels_file.setText(str(_labels_file(tmp_path / "classes.csv", truths)))
    w.out.setText(str(tmp_path / "model"))
    assert w.train() is not None
    _done(qtbot, w)
    assert errors == [], errors
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert info["training"]["runs"] == [str(run.resolve())] and info["training"]["images"] == 3
    assert w.validation_score() > 0.9
    # the widget's prediction of f2 = classify predict's on the same run
    w.target.choose(viewer.layers["f2 nuclei"])
    assert w.predict() is not None
    _done(qtbot, w)
    assert errors == [], errors
    pred, _ = predict_runs(tmp_path / "model", [run], tmp_path / "pred", keep_flagged=True)
    ref = pred[pred["ImageName"] == "f2"].set_index("ObjectNumber").sort_index()
    got = viewer.layers["f2 nuclei"].features.set_index("ObjectNumber").sort_index()
    assert list(got.index) == list(ref.index) and len(ref) == len(truths["f2"])
    assert (got["Predicted"] == ref["Predicted"]).all()
    assert np.allclose(got[["P_large", "P_small"]], ref[["P_large", "P_small"]], rtol=0, atol=1e-12)
    assert (ref["Predicted"] == ref.index.map(truths["f2"])).mean() > 0.9


def test_classify_widget_cancel_writes_no_model(viewer, qtbot, tmp_path, errors, classify_widget):
    w = classify_widget
    image, labels, truth = _two_class_field(7)
    viewer.add_image(image, name="c")
    viewer.add_labels(labels, name="c nuclei", metadata={"source_image": "c"})
    w.set_layers(["c nuclei"])
    w.class_source.setCurrentText("labels file…")
    w.labels_file.setText(str(_labels_file(tmp_path / "classes.csv", {"c": truth})))
    w.out.setText(str(tmp_path / "model"))
    assert w.train() is not None
    w.cancel()  # honoured at the next step: before training, and long before saving
    _done(qtbot, w)
    assert w.status.text() == "cancelled" and errors == []
    assert not (tmp_path / "model" / "model.json").exists() and w.train_button.isEnabled()


def test_classify_widget_errors_are_notifications(viewer, qtbot, tmp_path, errors, classify_widget):
    w = classify_widget
    assert w.train() is None and "no Labels layer ticked" in errors[-1]
    assert w.predict() is None and "no model loaded" in errors[-1]
    assert w.load_model(tmp_path) is None and "no model.json" in errors[-1]
    viewer.add_labels(np.zeros((16, 16), np.int32), name="x nuclei")  # no image, no table
    w.set_layers(["x nuclei"])
    w.class_source.setCurrentText("labels file…")
    assert w.train() is None and "choose a labels file" in errors[-1]
    w.labels_file.setText(str(_labels_file(tmp_path / "c.csv", {"x": {1: "a", 2: "b"}})))
    (tmp_path / "afile").write_text("")
    w.out.setText(str(tmp_path / "afile"))
    assert w.train() is not None
    _done(qtbot, w)
    assert "is a file" in errors[-1]  # the model folder is checked before any work
    w.out.setText(str(tmp_path / "m"))
    assert w.train() is not None
    _done(qtbot, w)
    assert "no measurements and no image layer" in errors[-1]
    w.source.setCurrentText("run folders")
    assert w.train() is None and "no run folder" in errors[-1]


def test_classify_widget_patchnet_heatmap_and_prediction(viewer, qtbot, tmp_path, errors, classify_widget):
    pytest.importorskip("nucleoscope.classify.patchnet")
    from nucleoscope.classify.patchnet import PatchNetClassifier
    from nucleoscope.cli import main
    from nucleoscope.io import write_image, write_labels
    from nucleoscope.pipeline.classify import predict_runs

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    truths = {}
    for i in range(2):  # two images: the fewest grouped folds can use
        image, labels, truths[f"f{i}"] = _two_class_field(20 + i)
        write_image(tmp_path / "img" / f"f{i}.tif", image)
        write_labels(tmp_path / "lab" / f"f{i}.tif", labels)
    run, model = tmp_path / "run", tmp_path / "model"
    assert main(["measure", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o", str(run), "-q",
                 "--features", "shape"]) == 0
    # one epoch: this test checks what the widget shows against PatchNet itself, not how well it learns
    assert main(["classify", "train", str(run), "--labels", str(_labels_file(tmp_path / "c.csv", truths)),
                 "-o", str(model), "--model", "logreg,patchnet", "--epochs", "1", "--crop-size", "48",
                 "--ablation", "none", "--no-embedding", "--network-folds", "1", "-q"]) == 0
    _add(viewer, get_reader(str(run))(str(run)))
    w = classify_widget
    assert w.load_model(model) is not None
    assert w.heatmap_row.isVisibleTo(w) and w.heatmap.isChecked()
    assert "patchnet" in [w.predict_model.itemText(i) for i in range(w.predict_model.count())]
    w.target.choose(viewer.layers["f1 nuclei"])
    w.predict_model.setCurrentText("patchnet")
    w.heatmap_class.setCurrentText("large")
    assert w.predict() is not None
    _done(qtbot, w, 300_000)
    assert errors == [], errors
    labels = np.asarray(viewer.layers["f1 nuclei"].data)
    maps = w.maps
    assert maps.shape == (2, *labels.shape) and maps.dtype == np.float32
    assert np.isnan(maps[:, labels == 0]).all()
    inside = np.isfinite(maps[0]) & (labels > 0)
    assert inside.mean() > 0.5 * (labels > 0).mean() and np.allclose(maps[:, inside].sum(axis=0), 1.0, atol=1e-4)
    image = np.asarray(viewer.layers["f1"].data, np.float32)
    direct = PatchNetClassifier.load(model / "patchnet").image_heatmap(image, labels)
    assert np.allclose(maps, direct, equal_nan=True)  # what PatchNet computes, shown as it is
    layer = viewer.layers["f1 heat-map"]
    assert np.array_equal(layer.data, maps[0], equal_nan=True) and layer.metadata["class"] == "large"
    w.heatmap_class.setCurrentText("small")
    assert np.array_equal(layer.data, maps[1], equal_nan=True) and layer.metadata["class"] == "small"
    # the PatchNet's per-nucleus prediction in the widget = classify predict --model patchnet
    pred, _ = predict_runs(model, [run], tmp_path / "pred", model="patchnet", keep_flagged=True)
    ref = pred[pred["ImageName"] == "f1"].set_index("ObjectNumber").sort_index()
    got = viewer.layers["f1 nuclei"].features.dropna(subset=["Predicted"]).set_index("ObjectNumber").sort_index()
    assert list(got.index) == list(ref.index) and len(ref) > 0.9 * len(truths["f1"])
    assert (got["Predicted"] == ref["Predicted"]).all()
    assert np.allclose(got[["P_large", "P_small"]], ref[["P_large", "P_small"]], rtol=0, atol=1e-6)
