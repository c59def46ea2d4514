"""End-to-end tests of `nucleoscope run` / `demo` on a temp folder of good and bad inputs."""

from __future__ import annotations

import json
import os

import imagecodecs
import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi

from nucleoscope.cli import main
from nucleoscope.pipeline import RunConfig, analyze, run_batch
from nucleoscope.qc import QCConfig


def _field(seed=0, shape=(160, 200)):
    """Bright blurred discs on a dark noisy background; returns (uint16 image, truth labels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.int32)
    centres = [(40, 40), (40, 110), (100, 60), (110, 150), (45, 160)]
    for k, (cy, cx) in enumerate(centres, 1):
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 < 14 ** 2] = k
    img = np.where(truth > 0, 2000.0, 150.0)
    img = ndi.gaussian_filter(img, 1.5) + rng.normal(0, 20, shape)
    return np.clip(img, 0, 4095).astype(np.uint16), truth


@pytest.fixture()
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    img, _ = _field()
    tifffile.imwrite(d / "good.tif", img)
    good = (d / "good.tif").read_bytes()
    (d / "corrupt.tif").write_bytes(good[: len(good) // 3])
    rgb = np.stack([img >> 4, (img >> 5), np.zeros_like(img)], -1).astype(np.uint8)
    (d / "colour.png").write_bytes(imagecodecs.png_encode(rgb))
    tifffile.imwrite(d / "empty.tif", np.full((64, 64), 100, np.uint16))
    (d / "notes.csv").write_text("not an image\n")
    return d


def test_run_mixed_folder(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", str(inputs), "-o", str(out), "--method", "otsu", "-q", "--pixel-size", "0.5", "--rois"])
    assert code == 1  # one or more images failed, after finishing the others
    images = pd.read_csv(out / "images.csv").set_index("ImageName")
    assert set(images.index) == {"good", "corrupt", "colour", "empty"}
    assert images.loc["good", "Status"] == "ok" and images.loc["good", "Count"] == 5
    # the classic pipeline works at a typical nucleus size in µm when the pixel size is known
    from nucleoscope.segment.classic import TYPICAL_NUCLEUS_UM

    assert images.loc["good", "Diameter_px"] == pytest.approx(TYPICAL_NUCLEUS_UM / 0.5)
    assert not images["BackgroundFlattened"].any()
    assert images.loc["empty", "Status"] == "ok" and images.loc["empty", "Count"] == 0
    assert images.loc["corrupt", "Status"] == "failed" and "corrupt.tif" in images.loc["corrupt", "Error"]
    assert images.loc["colour", "Status"] == "failed"
    assert "colour.png" in images.loc["colour", "Error"] and "--channel" in images.loc["colour", "Error"]
    nuclei = pd.read_parquet(out / "nuclei.parquet")
    assert len(nuclei) == 5 and set(nuclei["ImageName"]) == {"good"}
    assert list(nuclei["ObjectNumber"]) == [1, 2, 3, 4, 5]
    # area of a radius-14 disc is ~615 px; in µm² at 0.5 µm/px a quarter of that
    assert nuclei["AreaShape_Area"].between(540, 700).all()
    np.testing.assert_allclose(nuclei["AreaShape_Area_um2"], nuclei["AreaShape_Area"] * 0.25)
    csv = pd.read_csv(out / "nuclei.csv")
    assert list(csv.columns) == list(nuclei.columns) and len(csv) == 5
    labels = tifffile.imread(out / "labels" / "good.tif")
    assert labels.dtype == np.int32 and labels.max() == 5
    assert tifffile.imread(out / "labels" / "empty.tif").max() == 0
    assert (out / "overlays" / "good.png").exists() and (out / "report.html").exists()
    import zipfile
    assert len(zipfile.ZipFile(out / "rois" / "good.zip").namelist()) == 5
    run = json.loads((out / "run.json").read_text())
    assert run["n_failed"] == 2 and run["parameters"]["method"] == "otsu"
    assert {f["ImageName"] for f in run["failures"]} == {"corrupt", "colour"}
    report = (out / "report.html").read_text()
    assert "corrupt.tif" in report and "Failures" in report


def test_resume_skips_done_and_retries_failed(inputs, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(inputs), "-o", str(out), "--method", "otsu", "-q"]) == 1
    stamp = (out / "labels" / "good.tif").stat().st_mtime_ns
    # fix the broken input, run again: the good image is reused, the fixed one is done now
    img, _ = _field(seed=1)
    tifffile.imwrite(inputs / "corrupt.tif", img)
    (inputs / "colour.png").unlink()
    assert main(["run", str(inputs), "-o", str(out), "--method", "otsu", "-q"]) == 0
    assert (out / "labels" / "good.tif").stat().st_mtime_ns == stamp
    run = json.loads((out / "run.json").read_text())
    assert run["n_resumed"] == 2 and run["n_failed"] == 0
    images = pd.read_csv(out / "images.csv").set_index("ImageName")
    assert images.loc["corrupt", "Status"] == "ok" and images.loc["corrupt", "Count"] == 5
    assert len(pd.read_parquet(out / "nuclei.parquet")) == 10
    # other parameters: nothing is reused
    assert main(["run", str(inputs), "-o", str(out), "--method", "otsu", "-q", "--features", "shape"]) == 0
    assert json.loads((out / "run.json").read_text())["n_resumed"] == 0


def test_all_empty_gives_full_schema_table(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "blank.tif", np.zeros((50, 50), np.uint8))
    out = tmp_path / "out"
    assert main(["run", str(d / "blank.tif"), "-o", str(out), "--method", "otsu", "-q"]) == 0
    empty = pd.read_parquet(out / "nuclei.parquet")
    img, _ = _field()
    tifffile.imwrite(d / "good.tif", img)
    assert main(["run", str(d / "good.tif"), "-o", str(tmp_path / "o2"), "--method", "otsu", "-q"]) == 0
    full = pd.read_parquet(tmp_path / "o2" / "nuclei.parquet")
    assert len(empty) == 0 and list(empty.columns) == list(full.columns)


def test_missing_input_is_usage_error(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "o"), "-q"]) == 2
    assert "nope.tif" in capsys.readouterr().err


def test_drop_flagged_removes_edge_nuclei(tmp_path):
    img, truth = _field()
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", img)
    # edge margin 27 px: the disc at x=160 (bbox to x=174, 26 px from the right edge) is flagged, the
    # discs whose bbox starts at 27 px from the top/left are not
    config = RunConfig(method="otsu", drop_flagged=True, qc=QCConfig(edge_margin=27))
    images = run_batch([d], tmp_path / "o", config, show_progress=False)
    assert images.loc[0, "Count"] == 4
    labels = tifffile.imread(tmp_path / "o" / "labels" / "a.tif")
    assert labels[45, 160] == 0 and labels[40, 40] > 0


def test_analyze_matches_truth():
    img, truth = _field()
    res = analyze(img.astype(np.float32), method="otsu", saturation=4095, feature_set="shape")
    assert res.labels.max() == 5
    for k in range(1, 6):
        ids = np.unique(res.labels[truth == k])
        assert len(ids[ids > 0]) == 1


def test_jobs_two_processes_same_result(inputs, tmp_path):
    for f in ["corrupt.tif", "colour.png"]:
        (inputs / f).unlink()
    img, _ = _field(seed=3)
    tifffile.imwrite(inputs / "third.tif", img)
    a = run_batch([inputs], tmp_path / "a", RunConfig(method="otsu", feature_set="shape"), show_progress=False)
    b = run_batch([inputs], tmp_path / "b", RunConfig(method="otsu", feature_set="shape"), jobs=2,
                  show_progress=False)
    assert list(a["Count"]) == list(b["Count"])
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "nuclei.parquet"),
                                  pd.read_parquet(tmp_path / "b" / "nuclei.parquet"))


def test_demo(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--method", "otsu", "-q", "--features", "shape"]) == 0
    text = capsys.readouterr().out
    assert "IXMtest_C09_s7" in text
    images = pd.read_csv(tmp_path / "demo" / "images.csv")
    assert (images["Status"] == "ok").all() and images["Count"].sum() > 250


# ------------------------------------------------------------------ QA: defects found by using the CLI


def test_output_folder_may_be_the_input_folder(tmp_path):
    # `run d -o d` used to exclude the whole input folder: zero images, exit 0, an empty table
    d = tmp_path / "in"
    d.mkdir()
    img, _ = _field()
    tifffile.imwrite(d / "a.tif", img)
    assert main(["run", str(d), "-o", str(d), "--method", "otsu", "-q", "--features", "shape"]) == 0
    assert len(pd.read_parquet(d / "nuclei.parquet")) == 5
    # again, recursively: labels/a.tif and overlays/ must not become inputs
    assert main(["run", str(d), "-o", str(d), "-r", "--method", "otsu", "-q", "--features", "shape"]) == 0
    images = pd.read_csv(d / "images.csv", dtype={"ImageName": str})
    assert list(images["ImageName"]) == ["a"]
    assert json.loads((d / "run.json").read_text())["n_resumed"] == 1


def test_unwritable_output_folder_is_usage_error(tmp_path, capsys):
    img, _ = _field()
    tifffile.imwrite(tmp_path / "a.tif", img)
    (tmp_path / "afile").write_text("x")
    # used to end in a FileExistsError traceback
    assert main(["run", str(tmp_path / "a.tif"), "-o", str(tmp_path / "afile"), "--method", "otsu", "-q"]) == 2
    err = capsys.readouterr().err
    assert "afile" in err and "cannot write to the output folder" in err


def test_resume_writes_overlays_and_rois_asked_for_later(tmp_path):
    img, _ = _field()
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", img)
    out = tmp_path / "out"
    args = ["run", str(d), "-o", str(out), "--method", "otsu", "-q", "--features", "shape"]
    assert main([*args, "--no-overlays"]) == 0
    assert not (out / "overlays" / "a.png").exists()
    assert "overlays/a.png" not in (out / "report.html").read_text()  # no link to a missing file
    # adding --rois (and dropping --no-overlays) on the resumed run used to write neither
    assert main([*args, "--rois"]) == 0
    assert (out / "overlays" / "a.png").exists() and (out / "rois" / "a.zip").exists()
    assert json.loads((out / "run.json").read_text())["n_nuclei"] == 5
    assert main([*args, "--rois"]) == 0
    assert json.loads((out / "run.json").read_text())["n_resumed"] == 1


@pytest.mark.parametrize("bad", [["--pixel-size", "-1"], ["--pixel-size", "nan"], ["--jobs", "0"],
                                 ["--diameter", "0"], ["--edge-margin", "-4"], ["--plane", "-1"]])
def test_bad_option_values_are_usage_errors(tmp_path, capsys, bad):
    # these used to raise ValueError tracebacks from RunConfig/ClassicConfig/QCConfig (or run silently)
    with pytest.raises(SystemExit) as ei:
        main(["run", str(tmp_path), "-o", str(tmp_path / "o"), "-q", *bad])
    assert ei.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_diameter_um_uses_each_files_pixel_size(tmp_path, capsys):
    # µm -> px is settled per image (analyze): from --pixel-size or the file's metadata; an image with
    # neither fails with a message naming it, and the batch goes on
    img, _ = _field()
    tifffile.imwrite(tmp_path / "bare.tif", img)
    tifffile.imwrite(tmp_path / "calibrated.tif", img, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"unit": "um"}, imagej=True)
    out = tmp_path / "o"
    assert main(["run", str(tmp_path), "-o", str(out), "-q", "--method", "otsu", "--features", "shape",
                 "--diameter", "14", "--diameter-um"]) == 1
    images = pd.read_csv(out / "images.csv").set_index("ImageName")
    assert images.loc["calibrated", "Status"] == "ok" and images.loc["calibrated", "Diameter_px"] == 28.0
    assert images.loc["bare", "Status"] == "failed"
    assert "bare.tif" in images.loc["bare", "Error"] and "pixel size" in images.loc["bare", "Error"]
    assert main(["run", str(tmp_path / "bare.tif"), "-o", str(tmp_path / "o2"), "-q", "--method", "otsu",
                 "--features", "shape", "--diameter", "7", "--diameter-um", "--pixel-size", "0.25"]) == 0
    assert pd.read_csv(tmp_path / "o2" / "images.csv")["Diameter_px"].tolist() == [28.0]


def test_diameter_um_without_diameter_is_usage_error(tmp_path, capsys):
    assert main(["run", str(tmp_path), "-o", str(tmp_path / "o"), "-q", "--diameter-um"]) == 2
    assert "--diameter" in capsys.readouterr().err


def test_report_links_are_url_encoded(tmp_path):
    img, _ = _field()
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "well #3 50%.tif", img)
    out = tmp_path / "out"
    assert main(["run", str(d), "-o", str(out), "--method", "otsu", "-q", "--features", "shape"]) == 0
    assert (out / "overlays" / "well #3 50%.png").exists()
    report = (out / "report.html").read_text()
    assert "href='overlays/well%20%233%2050%25.png'" in report
    assert "href='overlays/well #3" not in report


def test_rerun_removes_temporaries_of_a_killed_run(tmp_path):
    # a run killed mid-write (timeout, Ctrl-C) used to leave hidden .~<pid>-<hex>.<name> files for ever
    img, _ = _field()
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", img)
    out = tmp_path / "out"
    (out / "labels").mkdir(parents=True)
    dead = out / "labels" / ".~99999999-0a1b2c3d.a.tif"    # beyond any pid_max: no such process
    alive = out / "labels" / f".~{os.getpid()}-0a1b2c3d.b.tif"  # a concurrent writer: kept
    dead.write_bytes(b"partial")
    alive.write_bytes(b"partial")
    assert main(["run", str(d), "-o", str(out), "--method", "otsu", "-q", "--features", "shape"]) == 0
    assert not dead.exists() and alive.exists()
    assert tifffile.imread(out / "labels" / "a.tif").max() == 5


def test_max_box_option_sets_the_too_large_flag(tmp_path):
    # at high magnification most nuclei exceed SCENMED's 128 px box; the CLI had no way to change it
    img, _ = _field()
    tifffile.imwrite(tmp_path / "a.tif", img)
    common = ["run", str(tmp_path / "a.tif"), "--method", "otsu", "-q", "--features", "shape", "--edge-margin", "0"]
    assert main([*common, "-o", str(tmp_path / "o1")]) == 0
    assert not pd.read_parquet(tmp_path / "o1" / "nuclei.parquet")["QC_TooLarge"].any()
    # radius-14 discs have 27-29 px boxes
    assert main([*common, "-o", str(tmp_path / "o2"), "--max-box", "20"]) == 0
    nuclei = pd.read_parquet(tmp_path / "o2" / "nuclei.parquet")
    assert len(nuclei) == 5 and nuclei["QC_TooLarge"].all()
    assert json.loads((tmp_path / "o2" / "run.json").read_text())["parameters"]["qc"]["max_box"] == 20


def test_analyze_accepts_auto(monkeypatch):
    # the README's default method name used to raise "unknown segmentation method 'auto'" in analyze()
    from nucleoscope import segment

    img, _ = _field()
    # auto may pick the (slow) deep model; what matters here is that analyze resolves the name
    monkeypatch.setattr(segment, "resolve_method", lambda m: "otsu" if m == "auto" else m)
    res = analyze(img.astype(np.float32), method="auto", feature_set="shape")
    ref = analyze(img.astype(np.float32), method="otsu", feature_set="shape")
    np.testing.assert_array_equal(res.labels, ref.labels)
    assert len(res.table) == res.labels.max() == 5


def _die_on_b(job, item, *args):
    from nucleoscope.pipeline import engine

    if item.name == "b":
        os._exit(1)  # as the kernel's OOM killer would end it
    return engine._real_work(job, item, *args)


def test_worker_killed_is_recorded_and_tables_written(tmp_path, monkeypatch):
    # a worker process that dies used to raise BrokenProcessPool out of run_batch: no tables at all
    import multiprocessing

    from nucleoscope.pipeline import engine

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the patched worker function reaches the workers only when they are forked")
    img, _ = _field()
    d = tmp_path / "in"
    d.mkdir()
    for n in ("a", "b"):
        tifffile.imwrite(d / f"{n}.tif", img)
    monkeypatch.setattr(engine, "_real_work", engine._work, raising=False)
    monkeypatch.setattr(engine, "_work", _die_on_b)
    images = run_batch([d], tmp_path / "o", RunConfig(method="otsu", feature_set="shape"), jobs=2,
                       show_progress=False).set_index("ImageName")
    assert images.loc["b", "Status"] == "failed" and "worker process died" in images.loc["b", "Error"]
    assert (tmp_path / "o" / "nuclei.parquet").exists() and (tmp_path / "o" / "run.json").exists()
    monkeypatch.undo()
    again = run_batch([d], tmp_path / "o", RunConfig(method="otsu", feature_set="shape"), jobs=2,
                      show_progress=False)
    assert list(again["Status"]) == ["ok", "ok"] and list(again["Count"]) == [5, 5]


def test_scale_segments_resized_and_maps_back(tmp_path):
    # docs/tiling.md promised `--scale FACTOR`; the run command had no such option
    img, truth = _field()
    res = analyze(img.astype(np.float32), method="otsu", feature_set="shape", scale=0.5)
    assert res.labels.shape == truth.shape and res.labels.dtype == np.int32
    assert res.labels.max() == 5 and list(res.table["ObjectNumber"]) == [1, 2, 3, 4, 5]
    for k in range(1, 6):
        ids, n = np.unique(res.labels[truth == k], return_counts=True)
        best = ids[np.argmax(n)]
        inter = n.max()
        assert best > 0 and inter / ((truth == k).sum() + (res.labels == best).sum() - inter) > 0.85
    # measured on the full image: areas near the truth's (radius-14 disc: 615 px)
    assert res.table["AreaShape_Area"].between(540, 700).all()
    tifffile.imwrite(tmp_path / "a.tif", img)
    out = tmp_path / "o"
    assert main(["run", str(tmp_path / "a.tif"), "-o", str(out), "--method", "otsu", "-q", "--features", "shape",
                 "--scale", "0.5", "--diameter", "28"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["parameters"]["scale"] == 0.5
    assert run["parameters"]["diameter"] == 28.0  # px of the input, as given
    assert pd.read_csv(out / "images.csv")["Diameter_px"].tolist() == [14.0]  # px of the resized image
    assert json.loads((out / "run.json").read_text())["n_nuclei"] == 5


def test_parameters_key_is_stable():
    # finished images are reused only under the same key: a new option at its default must not change
    # the key of earlier runs (value computed before --scale existed)
    assert RunConfig(method="otsu").key() == "2f993344a251e278"
    assert RunConfig(method="otsu", scale=0.5).key() != RunConfig(method="otsu").key()


def test_diameter_option_works(tmp_path):
    # `--diameter D` failed every image: "AttributeError: 'dict' object has no attribute 'smooth_sigma'"
    img, _ = _field()
    tifffile.imwrite(tmp_path / "a.tif", img)
    out = tmp_path / "o"
    assert main(["run", str(tmp_path / "a.tif"), "-o", str(out), "--method", "classic", "-q", "--features",
                 "shape", "--diameter", "28"]) == 0
    assert json.loads((out / "run.json").read_text())["n_nuclei"] == 5


def test_resume_redoes_an_input_replaced_since(tmp_path):
    # a finished image whose file was replaced (re-exported) used to be skipped: stale labels and rows
    d = tmp_path / "in"
    d.mkdir()
    img, _ = _field()
    tifffile.imwrite(d / "a.tif", img)
    out = tmp_path / "out"
    args = ["run", str(d), "-o", str(out), "--method", "otsu", "-q", "--features", "shape"]
    assert main(args) == 0
    assert main(args) == 0 and json.loads((out / "run.json").read_text())["n_resumed"] == 1
    tifffile.imwrite(d / "a.tif", np.ascontiguousarray(img[:, :130]))  # 3 of the 5 discs left
    st = os.stat(d / "a.tif")
    os.utime(d / "a.tif", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["n_resumed"] == 0 and run["n_nuclei"] == 3


def test_report_area_histogram_bins():
    # kromp's 50-80,000 px areas put ~1,200 of 2,200 nuclei into the first of 40 linear bars
    from nucleoscope.report.figures import _hist_bins

    bins, log = _hist_bins(np.array([50.0, 400.0, 5000.0, 80000.0, np.nan]))
    assert log and len(bins) == 41
    np.testing.assert_allclose([bins[0], bins[-1]], [50.0, 80000.0])
    np.testing.assert_allclose(np.diff(np.log(bins)), np.log(1600.0) / 40)
    assert _hist_bins(np.array([300.0, 900.0, 1500.0])) == (40, False)
    assert _hist_bins(np.array([-5.0, 0.0, 200.0])) == (40, False)  # intensities may be <= 0


def test_label_image_given_as_image_is_warned(tmp_path, caplog):
    # a mask folder passed as the images went through silently (71 "nuclei" found in a BBBC039 mask)
    from nucleoscope.pipeline import looks_like_labels

    img, truth = _field()
    assert looks_like_labels(truth, "int32") and looks_like_labels(truth > 0, "bool")
    assert not looks_like_labels(img.astype(np.float32), "uint16")
    assert not looks_like_labels(truth.astype(np.float32), "float32")  # floats are never taken for labels
    tifffile.imwrite(tmp_path / "mask.tif", truth.astype(np.uint16))
    tifffile.imwrite(tmp_path / "img.tif", img)
    with caplog.at_level("WARNING", logger="nucleoscope.pipeline"):
        run_batch([tmp_path], tmp_path / "o", RunConfig(method="otsu", feature_set="shape"), show_progress=False)
    warned = [r.getMessage() for r in caplog.records if "label image" in r.getMessage()]
    assert len(warned) == 1 and "mask.tif" in warned[0]


def test_resume_redoes_tables_of_other_measurement_versions(tmp_path):
    # an image measured by an older version (other columns) used to be reused and mixed into the table
    img, _ = _field()
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", img)
    tifffile.imwrite(d / "b.tif", img)
    out = tmp_path / "out"
    args = ["run", str(d), "-o", str(out), "--method", "otsu", "-q", "--features", "shape"]
    assert main(args) == 0
    old = pd.read_parquet(out / ".state" / "a.parquet").rename(columns={"AreaShape_Area": "AreaShape_AreaOld"})
    old.to_parquet(out / ".state" / "a.parquet", index=False)
    assert main(args) == 0
    assert json.loads((out / "run.json").read_text())["n_resumed"] == 1
    nuclei = pd.read_parquet(out / "nuclei.parquet")
    assert "AreaShape_AreaOld" not in nuclei and nuclei["AreaShape_Area"].notna().all() and len(nuclei) == 10


def test_resume_redoes_images_when_the_model_changes(tmp_path, monkeypatch):
    # the parameters key ignored the model file: retrained weights silently reused the old labels
    from nucleoscope.pipeline import run as run_job

    img, _ = _field()
    tifffile.imwrite(tmp_path / "a.tif", img)
    out = tmp_path / "o"
    config = RunConfig(method="otsu", feature_set="shape")

    def run_with(sha):
        monkeypatch.setattr(run_job, "model_identity",
                            lambda method, options=None: {"method": method, "m_v1.json": {"sha256": sha}})
        run_batch([tmp_path / "a.tif"], out, config, show_progress=False)
        return json.loads((out / "run.json").read_text())["n_resumed"]

    assert run_with("aaa") == 0
    assert run_with("aaa") == 1
    assert run_with("bbb") == 0


def test_crops_and_patches_exported_also_after_resume(tmp_path):
    from nucleoscope.io.hdf5 import read_crops_h5

    d = tmp_path / "in"
    d.mkdir()
    for k in range(2):
        img, _ = _field(seed=k)
        tifffile.imwrite(d / f"f{k}.tif", img)
    out = tmp_path / "out"
    args = ["run", str(d), "-o", str(out), "--method", "otsu", "-q", "--features", "shape", "--crops", "64",
            "--patches", "16"]
    assert main(args) == 0
    crops = read_crops_h5(out / "crops.h5")
    assert crops["images"].shape == (10, 64, 64) and crops["kind"] == "crops"
    # each crop is centred on its nucleus: the mask's centre of mass is the window's centre
    cy, cx = ndi.center_of_mass(crops["masks"][0])
    assert abs(cy - 31.5) <= 1 and abs(cx - 31.5) <= 1
    patches = read_crops_h5(out / "patches.h5")
    # 16 px windows at stride 8 fit inside the radius-14 discs: 85% of one window in a disc
    assert patches["images"].shape[1:] == (16, 16) and len(patches["images"]) >= 10
    assert (patches["inside_fraction"] >= 0.85).all()
    # a resumed run (nothing recomputed) still writes every image's crops
    assert main(args) == 0
    assert json.loads((out / "run.json").read_text())["n_resumed"] == 2
    assert read_crops_h5(out / "crops.h5")["images"].shape[0] == 10


def test_run_with_the_default_nuset_records_diameter_and_flattening(tmp_path):
    """The default method on the bundled image and on the same image under a steep background ramp:
    images.csv says at which nucleus size NuSeT worked and which image it flattened."""
    from importlib import resources

    src = tifffile.imread(resources.files("nucleoscope") / "data" / "IXMtest_F08_s7.tif").astype(np.float32)
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "plain.tif", src.astype(np.uint16))
    ramp = src + np.linspace(0, 3 * (np.percentile(src, 99) - np.median(src)), src.shape[1])[None, :]
    tifffile.imwrite(d / "ramp.tif", np.clip(ramp, 0, 65535).astype(np.uint16))
    assert main(["run", str(d), "-o", str(tmp_path / "out"), "-q", "--features", "shape"]) == 0
    images = pd.read_csv(tmp_path / "out" / "images.csv").set_index("ImageName")
    assert (images["Method"] == "nuset").all()
    assert images["Diameter_px"].between(25, 34).all()  # truth: median equivalent diameter ~28.5 px
    assert not images.loc["plain", "BackgroundFlattened"] and images.loc["ramp", "BackgroundFlattened"]
    assert abs(int(images.loc["ramp", "Count"]) - int(images.loc["plain", "Count"])) <= 3
