"""The batch engine shared by run and measure, the segmenter contract, and tiling of any method."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import tifffile

from nucleoscope.cli import main
from nucleoscope.metrics import match
from nucleoscope.pipeline import analyze
from nucleoscope.segment import METHODS, SegmentDetails, resolve_method, segment
from nucleoscope.segment.tiled import TiledDetails, plan_overlap, segment_large
from nucleoscope.synth import nuclei_field


def _raster(labels: np.ndarray) -> np.ndarray:
    """Renumber in raster order of each object's first pixel (compare partitions, not ids)."""
    ids, first = np.unique(labels.ravel(), return_index=True)
    order = ids[np.argsort(first)]
    order = order[order > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.int32)
    return lut[labels]


@pytest.fixture(scope="module")
def field():
    # touching clumps but no ring of nuclei around background (hole filling of the whole mask would
    # make that one giant object untiled; see nucleoscope.segment.tiled)
    s = nuclei_field((1100, 900), rng=3, clump_fraction=0.2, coverage=0.2)
    return s.image.astype(np.float32), s.labels


@pytest.mark.parametrize("method", ["otsu", "tissue"])
def test_tiled_equals_untiled_for_threshold_methods(field, method):
    # the whole image's threshold and the relative-area filter are decided once: the tiles cut the same
    img, _ = field
    ref, det = segment(img, method=method)
    tiled, tdet = segment_large(img, method=method, diameter=det.diameter_px, tile_size=400)
    assert isinstance(tdet, TiledDetails) and tdet.n_tiles >= 9 and ref.max() > 300
    assert tdet.threshold == pytest.approx(det.threshold, rel=1e-6)
    np.testing.assert_array_equal(_raster(tiled), _raster(ref))


def test_tiled_classic_close_to_untiled(field):
    # morphological reconstruction propagates across the image: close, not exact
    img, _ = field
    ref, det = segment(img, method="classic")
    tiled, _ = segment_large(img, method="classic", diameter=det.diameter_px, tile_size=400)
    assert match(ref, tiled, thresh=0.5).f1 > 0.99


def test_tiled_plans_the_diameter_on_crops(field):
    img, truth = field
    _, det = segment(img, method="otsu")
    _, tdet = segment_large(img, method="otsu", tile_size=400)
    assert tdet.diameter_source.startswith("estimated on") and tdet.diameter_px == pytest.approx(det.diameter_px, rel=0.1)
    assert tdet.overlap == plan_overlap(tdet.diameter_px, 400) >= 4 * tdet.diameter_px - 1


def test_analyze_tiles_over_the_tile_size(field):
    img, truth = field
    whole = analyze(img, method="otsu", feature_set="shape")
    tiled = analyze(img, method="otsu", feature_set="shape", tile_size=400)
    assert isinstance(tiled.details, TiledDetails) and not isinstance(whole.details, TiledDetails)
    np.testing.assert_array_equal(_raster(tiled.labels), _raster(whole.labels))
    assert len(tiled.table) == len(whole.table) == tiled.labels.max()
    assert match(truth, tiled.labels, thresh=0.5).f1 > 0.8


def test_run_tile_size_option(tmp_path, field):
    img, _ = field
    tifffile.imwrite(tmp_path / "a.tif", np.clip(img, 0, 65535).astype(np.uint16))
    common = ["run", str(tmp_path / "a.tif"), "--method", "otsu", "-q", "--features", "shape", "--no-overlays"]
    assert main([*common, "-o", str(tmp_path / "t"), "--tile-size", "400"]) == 0
    assert main([*common, "-o", str(tmp_path / "u"), "--tile-size", "0"]) == 0
    t = tifffile.imread(tmp_path / "t" / "labels" / "a.tif")
    u = tifffile.imread(tmp_path / "u" / "labels" / "a.tif")
    np.testing.assert_array_equal(_raster(t), _raster(u))
    assert json.loads((tmp_path / "t" / "run.json").read_text())["parameters"]["tile_size"] == 400
    with pytest.raises(SystemExit):
        main([*common, "-o", str(tmp_path / "x"), "--tile-size", "100"])


def test_every_segmenter_reports_the_shared_details(field):
    img, _ = field
    crop = img[:300, :300]
    for method in METHODS:
        labels, det = segment(crop, method=method)
        assert isinstance(det, SegmentDetails), method
        assert labels.dtype == np.int32 and labels.max() > 10
        assert 10 < det.diameter_px < 60 and isinstance(det.flattened, bool) and isinstance(det.timings, dict)


def test_diameter_units_are_settled_once_in_analyze(field):
    img, _ = field
    crop = img[:300, :300]
    px = analyze(crop, method="otsu", feature_set="shape", diameter=20.0)
    um = analyze(crop, method="otsu", feature_set="shape", diameter_um=5.0, spacing=0.25)
    np.testing.assert_array_equal(px.labels, um.labels)
    assert px.details.diameter_px == um.details.diameter_px == 20.0
    half = analyze(crop, method="otsu", feature_set="shape", diameter=20.0, scale=0.5)
    assert half.details.diameter_px == 10.0  # px of the resized image the segmenter saw
    from nucleoscope import InputError

    with pytest.raises(InputError, match="pixel size"):
        analyze(crop, method="otsu", diameter_um=5.0)


def test_resolve_method():
    assert resolve_method("otsu") == "otsu"
    assert resolve_method("auto") in METHODS
    with pytest.raises(ValueError, match="unknown segmentation method"):
        resolve_method("cellpose")


def _pair(root, name, seed):
    s = nuclei_field((160, 200), rng=seed)
    (root / "img").mkdir(exist_ok=True)
    (root / "lab").mkdir(exist_ok=True)
    tifffile.imwrite(root / "img" / f"{name}.tif", np.clip(s.image, 0, 65535).astype(np.uint16))
    tifffile.imwrite(root / "lab" / f"{name}_masks.tif", s.labels.astype(np.uint16))
    return s


def test_measure_resumes_like_run(tmp_path):
    for k, n in enumerate("abc"):
        _pair(tmp_path, n, k)
    out = tmp_path / "o"
    args = ["measure", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o", str(out), "-q",
            "--features", "shape"]
    assert main(args) == 0
    first = pd.read_parquet(out / "nuclei.parquet")
    run = json.loads((out / "run.json").read_text())
    assert run["job"] == "measure" and run["n_resumed"] == 0 and run["n_ok"] == 3
    assert (out / "report.html").exists()
    images = pd.read_csv(out / "images.csv")
    assert list(images.columns[:3]) == ["ImageName", "Path", "LabelsPath"] and images["Megapixels"].gt(0).all()
    assert main(args) == 0
    assert json.loads((out / "run.json").read_text())["n_resumed"] == 3
    pd.testing.assert_frame_equal(pd.read_parquet(out / "nuclei.parquet"), first)
    # a changed label image redoes its image only
    lab = tmp_path / "lab" / "b_masks.tif"
    labels = tifffile.imread(lab)
    labels[labels == labels.max()] = 0
    tifffile.imwrite(lab, labels)
    st = os.stat(lab)
    os.utime(lab, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert main(args) == 0
    assert json.loads((out / "run.json").read_text())["n_resumed"] == 2
    again = pd.read_parquet(out / "nuclei.parquet")
    assert len(again) == len(first) - 1
    # other features: every image redone
    assert main([*args[:-1], "default"]) == 0
    assert json.loads((out / "run.json").read_text())["n_resumed"] == 0
