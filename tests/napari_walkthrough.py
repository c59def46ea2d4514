"""docs/napari.md's walkthrough, run on a real napari viewer, one screenshot per step.

Run: ``xvfb-run -a python tests/napari_walkthrough.py docs/images/napari`` (napari's canvas needs an
OpenGL context: under Xvfb, Qt's offscreen platform gets one from Mesa's software renderer).
``tests/test_napari_docs.py`` runs it into a temporary folder and checks every step.

Steps: open the bundled sample; Segment (bundled NuSeT model); fix a merge with the brush; re-measure
(Measure widget); fine-tune on the corrected labels (Train widget); segment the next image with the new
model; classify nuclei (Classify widget, on the two-class synthetic sample). Prints one JSON line per
step (what the test checks). ``python tests/napari_walkthrough.py OUT classify`` makes step 7 alone.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

#: the screenshots are stored with a palette of this many colours, at most this wide: small PNGs
COLOURS, MAX_WIDTH = 128, 1000
DATA = resources.files("nucleoscope") / "data"
#: the image segmented with the fine-tuned model
NEXT = "IXMtest_C09_s7"


def _wait(signal_owner, predicate, timeout: float = 600.0) -> None:
    """Run the Qt event loop until ``predicate()`` holds (the widgets' work runs in worker threads)."""
    from qtpy.QtWidgets import QApplication

    t0 = time.time()
    while not predicate():
        QApplication.processEvents()
        time.sleep(0.02)
        if time.time() - t0 > timeout:
            raise TimeoutError(f"{signal_owner}: not done after {timeout} s")


def _save(viewer, out: Path, name: str, reset: bool = True) -> dict:
    from PIL import Image as PILImage
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    if reset:  # fit the image to the canvas as the docks left it
        viewer.reset_view()
        QApplication.processEvents()
    rgba = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
    img = PILImage.fromarray(rgba[..., :3])
    if img.width > MAX_WIDTH:
        img = img.resize((MAX_WIDTH, round(img.height * MAX_WIDTH / img.width)), PILImage.LANCZOS)
    img = img.quantize(COLOURS, method=PILImage.Quantize.MEDIANCUT)
    path = out / f"{name}.png"
    img.save(path, optimize=True)
    return {"png": str(path), "bytes": path.stat().st_size, "std": float(rgba[..., :3].std())}


def _find_merges(labels: np.ndarray, truth: np.ndarray) -> list[tuple[int, int]]:
    """Predicted nuclei covering two annotated ones: ``(predicted id, the truth id of the smaller part)``."""
    found = []
    for k in np.unique(labels[labels > 0]):
        ids, counts = np.unique(truth[labels == k], return_counts=True)
        parts = sorted(((c, int(i)) for i, c in zip(ids, counts) if i > 0 and c >= 0.3 * (truth == i).sum()),
                       reverse=True)
        if len(parts) >= 2:
            found.append((int(k), parts[1][1]))
    return found


def main(out_dir: str, steps: int = 10) -> int:
    import napari
    import tifffile

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=False, title="nucleoscope")
    viewer.window._qt_window.resize(1400, 820)
    report = []

    # 1. open the bundled sample (File > Open Sample > nucleoscope > BBBC039 ...)
    viewer.open_sample("nucleoscope", "bbbc039")
    name = viewer.layers[-1].name
    dock, seg = viewer.window.add_plugin_dock_widget("nucleoscope", "Segment")
    report.append({"step": "01_open_sample", "layers": [la.name for la in viewer.layers], **_save(viewer, out, "01_open_sample")})

    # 2. Segment with the defaults (auto: the bundled NuSeT model)
    seg.run()
    _wait("Segment", lambda: seg.worker is None)
    nuclei = viewer.layers[f"{name} nuclei"]
    report.append({"step": "02_segment", "nuclei": int(nuclei.data.max()), "status": seg.status.text(),
                   **_save(viewer, out, "02_segment")})

    # 3. fix the merges with the brush: the pixels of the second nucleus get a new label (what painting
    #    them with the brush in a new colour does; data_setitem is the brush's own write, with undo). Which
    #    nuclei are merged is read from the field's published annotation, as a user would see it.
    truth = tifffile.imread(DATA / f"{name}_mask.tif").astype(np.int32)
    merges = _find_merges(np.asarray(nuclei.data), truth)
    viewer.layers.selection.active = nuclei
    nuclei.mode = "paint"
    nuclei.brush_size = 6
    for k, t in merges:
        ys, xs = np.nonzero((np.asarray(nuclei.data) == k) & (truth == t))
        new = int(nuclei.data.max()) + 1
        nuclei.selected_label = new
        nuclei.data_setitem((ys, xs), new)
    if merges:
        ys, xs = np.nonzero(np.isin(truth, [merges[0][1]]))
        viewer.camera.center = (float(ys.mean()), float(xs.mean()))
        viewer.camera.zoom = 3.0
    report.append({"step": "03_fix_merge", "merges": merges, "nuclei": int(len(np.unique(nuclei.data)) - 1),
                   **_save(viewer, out, "03_fix_merge", reset=False)})
    viewer.reset_view()
    nuclei.mode = "pan_zoom"

    # 4. measure the corrected labels: the table, sortable, a click selects the nucleus
    mdock, meas = viewer.window.add_plugin_dock_widget("nucleoscope", "Measure")
    meas.labels.choose(nuclei)
    meas.run()
    _wait("Measure", lambda: meas.worker is None)
    meas.table.sortItems(1)
    meas.table.selectRow(0)
    meas.select_row(0)
    report.append({"step": "04_measure", "rows": meas.table.rowCount(), **_save(viewer, out, "04_measure")})
    viewer.window.remove_dock_widget(mdock)

    # 5. fine-tune the bundled model on the corrected labels (Train widget), live loss curve
    tdock, train = viewer.window.add_plugin_dock_widget("nucleoscope", "Train")
    train.image.choose(viewer.layers[name])
    train.labels.choose(nuclei)
    train.steps.setValue(steps)
    train.folder.setText(tempfile.mkdtemp(prefix="nucleoscope-walkthrough-"))
    train.run()
    _wait("Train", lambda: train.worker is None)
    report.append({"step": "05_train", "losses": train.losses, "model": train.model_path,
                   "status": train.status.text(), **_save(viewer, out, "05_train")})
    viewer.window.remove_dock_widget(tdock)

    # 6. open the next image and segment it with the new model (the Segment widget switched to it)
    for la in list(viewer.layers):
        la.visible = False
    viewer.open(str(DATA / f"{NEXT}.tif"), plugin="nucleoscope")
    nxt = viewer.layers[-1]
    seg.image.choose(nxt)
    seg.run()
    _wait("Segment", lambda: seg.worker is None)
    layer = viewer.layers[f"{nxt.name} nuclei"]
    viewer.reset_view()
    next_truth = tifffile.imread(DATA / f"{NEXT}_mask.tif").astype(np.int32)
    from nucleoscope.pipeline import analyze

    bundled = analyze(np.asarray(nxt.data), method="nuset", feature_set="shape",
                      saturation=nxt.metadata.get("saturation")).labels
    report.append({"step": "06_next_image", "nuclei": int(layer.data.max()), "truth": int(next_truth.max()),
                   "merges": len(_find_merges(np.asarray(layer.data), next_truth)),
                   "bundled_nuclei": int(bundled.max()), "bundled_merges": len(_find_merges(bundled, next_truth)), "model": layer.metadata.get("model"),
                   "status": seg.status.text(), **_save(viewer, out, "06_next_image")})
    viewer.window.remove_dock_widget(dock)
    report.append(classify_step(viewer, out))
    for r in report:
        print(json.dumps(r))
    viewer.close()
    return 0


def classify_step(viewer, out: Path) -> dict:
    """7. Classify: train logistic regression on two two-class samples (classes from a labels file),
    predict a third, which the model never saw."""
    from nucleoscope.napari._sample import two_class_field

    for la in list(viewer.layers):
        la.visible = False
    truths = {}
    for seed in range(3):
        layers = two_class_field(seed)
        for data, attrs, kind in layers:
            getattr(viewer, f"add_{kind}")(data, **attrs)
        t = layers[1][1]["features"]
        truths[layers[0][1]["name"]] = dict(zip(t["ObjectNumber"].astype(int), t["TrueClass"]))
    names = list(truths)
    work = Path(tempfile.mkdtemp(prefix="nucleoscope-walkthrough-classify-"))
    lines = ["ImageName,ObjectNumber,class"] + [f"{n},{i},{c}" for n in names[:2] for i, c in truths[n].items()]
    (work / "classes.csv").write_text("\n".join(lines) + "\n")
    _, cls = viewer.window.add_plugin_dock_widget("nucleoscope", "Classify")
    cls.set_layers([f"{n} nuclei" for n in names[:2]])
    cls.class_source.setCurrentText("labels file…")
    cls.labels_file.setText(str(work / "classes.csv"))
    cls.model.setCurrentText("logreg")
    cls.features.setCurrentText("shape")  # the classes differ in size; shape measurements are enough
    cls.out.setText(str(work / "model"))
    t0 = time.perf_counter()
    cls.train()
    _wait("Classify", lambda: cls.worker is None)
    seconds = time.perf_counter() - t0
    last = names[2]
    cls.target.choose(viewer.layers[f"{last} nuclei"])
    cls.predict()
    _wait("Classify", lambda: cls.worker is None)
    for la in viewer.layers:
        la.visible = la.name in (last, f"{last} classes")
    feats = viewer.layers[f"{last} nuclei"].features
    right = float((feats["Predicted"] == feats["ObjectNumber"].map(truths[last])).mean())
    return {"step": "07_classify", "validation": cls.validation_score("logreg"), "score": cls.score.text(),
            "train_seconds": round(seconds, 1), "nuclei": len(feats), "right": right,
            "legend": [cls.legend.item(i).text() for i in range(cls.legend.count())], "status": cls.status.text(),
            **_save(viewer, out, "07_classify")}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "classify":  # step 7 alone, on a fresh viewer
        import napari

        v = napari.Viewer(show=False, title="nucleoscope")
        v.window._qt_window.resize(1400, 820)
        Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
        print(json.dumps(classify_step(v, Path(sys.argv[1]))))
        v.close()
        sys.exit(0)
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/images/napari",
                  int(sys.argv[2]) if len(sys.argv) > 2 else 10))
