"""Whole cells from nuclei (issue 17): graph cut, propagation, measurements and the ``cells`` batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from nucleoscope import InputError
from nucleoscope.segment.cells import (CellConfig, cytoplasm_labels, graph_cut_foreground, keep_nucleus_component,
                                       measure_cells, normalize_unit, propagate_cells, segment_cells)


def test_graph_cut_two_regions_exact():
    rng = np.random.default_rng(0)
    x = np.full((40, 60), 0.2)
    x[:, 30:] = 0.8
    noisy = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
    # pixelwise (kappa 0) the noise flips many pixels; the cut penalty restores the two halves exactly
    assert (graph_cut_foreground(noisy, kappa=0) != (x > 0.5)).sum() > 100
    np.testing.assert_array_equal(graph_cut_foreground(noisy, kappa=2.0), x > 0.5)


def test_graph_cut_kappa_zero_is_the_pixelwise_rule():
    x = np.random.default_rng(1).uniform(0.01, 0.99, (30, 30))
    for alpha in (0.3, 0.5, 0.8):
        np.testing.assert_array_equal(graph_cut_foreground(x, alpha=alpha, kappa=0),
                                      alpha * x > (1 - alpha) * (1 - x))


def test_graph_cut_single_pixel_hand_computed():
    # one pixel at 0.9 in a field at 0.1, alpha 0.5: keeping it foreground saves
    # -log(0.05) - (-log(0.45)) = log(9) = 2.197 in unary cost and costs 4 kappa in cut edges
    x = np.full((9, 9), 0.1)
    x[4, 4] = 0.9
    assert graph_cut_foreground(x, alpha=0.5, kappa=0.5)[4, 4]  # 2.0 < 2.197
    assert graph_cut_foreground(x, alpha=0.5, kappa=0.5).sum() == 1
    assert not graph_cut_foreground(x, alpha=0.5, kappa=0.6).any()  # 2.4 > 2.197
    with pytest.raises(ValueError):
        graph_cut_foreground(x, alpha=1.0)


def test_normalize_unit_puts_otsu_at_half():
    img = np.zeros((50, 50), np.float32) + 10
    img[:, 25:] = 100
    u = normalize_unit(img, sigma=0)
    assert u[:, :25].max() < 0.5 < u[:, 25:].min()
    assert not normalize_unit(np.ones((8, 8))).any()


def _two_cells():
    """Two nuclei in one 20 x 40 mask, a dark valley at column 20 between their cells."""
    nuclei = np.zeros((30, 50), np.int32)
    nuclei[13:17, 8:12] = 5
    nuclei[13:17, 30:34] = 9
    mask = np.zeros((30, 50), bool)
    mask[5:25, 0:40] = True
    unit = np.where(mask, 0.8, 0.0).astype(np.float32)
    unit[:, 20] = 0.3
    return unit, nuclei, mask


def test_propagate_ids_follow_nuclei_and_stay_in_mask():
    unit, nuclei, mask = _two_cells()
    cells = propagate_cells(unit, nuclei, mask, sigma=0)
    assert set(np.unique(cells)) == {0, 5, 9}
    assert ((cells > 0) == mask).all()
    assert (cells[nuclei > 0] == nuclei[nuclei > 0]).all()
    # the valley splits them: everything left of column 19 is cell 5, right of 21 cell 9
    assert (cells[5:25, :19] == 5).all() and (cells[5:25, 22:40] == 9).all()
    cyto = cytoplasm_labels(cells, nuclei)
    assert not cyto[nuclei > 0].any() and (cyto[(cells > 0) & (nuclei == 0)] > 0).all()
    assert not propagate_cells(unit, np.zeros_like(nuclei), mask).any()


def test_keep_nucleus_component_drops_detached_piece():
    cells = np.zeros((10, 20), np.int32)
    cells[1:5, 1:5] = 3
    cells[7:9, 15:18] = 3  # detached piece of cell 3
    nuclei = np.zeros_like(cells)
    nuclei[2, 2] = 3
    out = keep_nucleus_component(cells, nuclei)
    assert out.sum() == 3 * 16 and not out[7:9, 15:18].any()


def test_measure_cells_hand_built():
    img = np.zeros((20, 20), np.float32)
    nuclei = np.zeros((20, 20), np.int32)
    cells = np.zeros((20, 20), np.int32)
    cells[2:6, 2:6] = 1  # 16 px cell
    nuclei[3:5, 3:5] = 1  # 4 px nucleus
    img[2:6, 2:6] = 2.0
    img[3:5, 3:5] = 10.0
    nuclei[15:17, 15:17] = 2  # a nucleus with no cell
    t = measure_cells(img, nuclei, cells, cytoplasm_labels(cells, nuclei)).set_index("ObjectNumber")
    assert list(t.index) == [1, 2]
    assert t.loc[1, "Cells_Parent_Nuclei"] == 1 and t.loc[1, "Cytoplasm_Parent_Cells"] == 1
    assert t.loc[1, "Cells_AreaShape_Area"] == 16 and t.loc[1, "Cytoplasm_AreaShape_Area"] == 12
    assert t.loc[1, "Cells_Intensity_MeanIntensity"] == pytest.approx((4 * 10 + 12 * 2) / 16)
    assert t.loc[1, "Cytoplasm_Intensity_IntegratedIntensity"] == pytest.approx(24)
    assert t.loc[1, "Cells_NucleusToCytoplasmRatio"] == pytest.approx(5.0)
    assert t.loc[1, "Cells_NucleusAreaFraction"] == pytest.approx(0.25)
    assert t.loc[2, "Cells_Parent_Nuclei"] == 0 and np.isnan(t.loc[2, "Cells_AreaShape_Area"])
    assert not t.loc[1, "Cells_TouchesBorder"]


def test_segment_cells_bad_input():
    with pytest.raises(InputError, match="same 2-D shape"):
        segment_cells(np.ones((10, 10)), np.zeros((10, 12), np.int32))
    with pytest.raises(InputError, match="empty"):
        segment_cells(np.ones((10, 10)), np.zeros((10, 10), np.int32))


def test_synthetic_fields_against_truth():
    from nucleoscope.metrics import match
    from nucleoscope.synth import cells_field

    f1, iou = [], []
    for seed in range(3):
        s = cells_field((256, 256), rng=seed)
        r = segment_cells(s.cell_image.astype(np.float32), s.labels)
        assert (r.cells[s.labels > 0] == s.labels[s.labels > 0]).all()
        m = match(s.cell_labels, r.cells, thresh=0.5)
        f1.append(m.f1)
        iou.append(m.mean_matched_iou)
    assert np.mean(f1) >= 0.9 and np.mean(iou) >= 0.8, (f1, iou)


def _write_pair_folders(tmp_path, n=2):
    from nucleoscope.synth import cells_field

    (tmp_path / "n").mkdir()
    (tmp_path / "c").mkdir()
    for i in range(n):
        s = cells_field((192, 192), rng=10 + i)
        tifffile.imwrite(tmp_path / "n" / f"f{i}.tif", s.image)
        tifffile.imwrite(tmp_path / "c" / f"f{i}.tif", s.cell_image)
    return tmp_path / "n", tmp_path / "c"


def test_cells_command_end_to_end(tmp_path):
    from nucleoscope.cli import main
    from nucleoscope.io import read_labels

    nd, cd = _write_pair_folders(tmp_path)
    tifffile.imwrite(nd / "lonely.tif", np.ones((64, 64), np.uint16))  # no partner
    tifffile.imwrite(cd / "orphan.tif", np.ones((64, 64), np.uint16))  # no partner either
    tifffile.imwrite(nd / "odd.tif", np.ones((64, 64), np.uint16))
    tifffile.imwrite(cd / "odd.tif", np.ones((64, 80), np.uint16))  # shapes differ
    out = tmp_path / "out"
    assert main(["cells", str(nd), str(cd), "-o", str(out), "--nuclei-method", "otsu", "-q"]) == 1
    images = pd.read_csv(out / "images.csv").set_index("ImageName")
    assert images.loc[["f0", "f1"], "Status"].eq("ok").all()
    assert "no cell image" in images.loc["lonely", "Error"]
    assert "no nucleus image" in images.loc["orphan", "Error"]
    err = images.loc["odd", "Error"]
    assert str(nd / "odd.tif") in err and str(cd / "odd.tif") in err
    table = pd.read_parquet(out / "nuclei.parquet")
    for name in ("f0", "f1"):
        nuc, cel = read_labels(out / "labels" / f"{name}.tif"), read_labels(out / "cells" / f"{name}.tif")
        cyto = read_labels(out / "cytoplasm" / f"{name}.tif")
        assert cel.dtype == np.int32 and set(np.unique(cel)) <= set(np.unique(nuc))
        assert (cel[nuc > 0] == nuc[nuc > 0]).all() and not cyto[nuc > 0].any()
        rows = table[table["ImageName"] == name]
        assert len(rows) == nuc.max()
        has = rows["Cells_Parent_Nuclei"] > 0
        assert (rows.loc[has, "Cells_Parent_Nuclei"] == rows.loc[has, "ObjectNumber"]).all()
        areas = np.bincount(cel.ravel())
        assert (rows.loc[has, "Cells_AreaShape_Area"].to_numpy() == areas[rows.loc[has, "ObjectNumber"]]).all()
        assert (out / "overlays" / f"{name}.png").exists()
    before = (out / "cells" / "f0.tif").stat().st_mtime_ns
    assert main(["cells", str(nd), str(cd), "-o", str(out), "--nuclei-method", "otsu", "-q"]) == 1  # resume
    assert (out / "cells" / "f0.tif").stat().st_mtime_ns == before


def test_run_with_cells_option(tmp_path):
    from nucleoscope.cli import main

    nd, cd = _write_pair_folders(tmp_path, n=1)
    out = tmp_path / "out"
    assert main(["run", str(nd), "--cells", str(cd), "-o", str(out), "--method", "otsu", "-q", "--no-overlays"]) == 0
    assert (out / "cells" / "f0.tif").exists() and (out / "cytoplasm" / "f0.tif").exists()
    t = pd.read_csv(out / "nuclei.csv")
    assert "Cells_AreaShape_Area" in t and "Cytoplasm_Intensity_MeanIntensity" in t
    assert (t["Cells_Parent_Nuclei"] > 0).mean() > 0.8


@pytest.mark.shared_data
def test_real_field_against_cell_masks(shared_data):
    from nucleoscope.metrics import match

    root = shared_data / "aits_u2os_wholecell" / "val"
    if not root.is_dir():
        pytest.skip("aits_u2os_wholecell not found")
    field = "MFGTMPcx7_170702090001_A20f02"
    cell = tifffile.imread(root / "images" / f"{field}_cells.tif").astype(np.float32)
    nuclei = tifffile.imread(root / "masks" / f"{field}_nuclei.tif").astype(np.int32)
    nuclei[np.isin(nuclei, np.flatnonzero(np.bincount(nuclei.ravel()) < 50))] = 0  # fragments
    gt = tifffile.imread(root / "masks" / f"{field}_cells.tif").astype(np.int32)
    m = match(gt, segment_cells(cell, nuclei, CellConfig()).cells, thresh=0.5)
    assert m.f1 >= 0.75 and m.mean_matched_iou >= 0.6, (m.f1, m.mean_matched_iou)


def test_cells_refuses_an_input_inside_its_output_folders(tmp_path):
    from nucleoscope.pipeline import cells_batch

    (tmp_path / "cells").mkdir()
    (tmp_path / "nuclei").mkdir()
    with pytest.raises(InputError, match="output's own folder"):
        cells_batch([tmp_path / "nuclei"], [tmp_path / "cells"], tmp_path, show_progress=False)
