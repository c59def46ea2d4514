"""Huge images: lazy reading, tile-by-tile segmentation with the labels written straight to OME-Zarr
(tiling.LabelSink, io.ZarrLabelSink, io.open_image_lazy), memory bounded by the tile size."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.measure import label as connected

from nucleoscope import InputError, io
from nucleoscope.segment.tiled import LazyImage, segment_large
from nucleoscope.tiling import LabelSink, TilingConfig, segment_tiled

pytest.importorskip("ome_zarr")


@pytest.fixture(scope="module")
def field():
    """A 2048 x 3072 uint16 field: one synthetic 1024² field and its mirror images, side by side."""
    from nucleoscope.synth import nuclei_field

    s = nuclei_field((1024, 1024), rng=7, diameter=(12, 22), coverage=0.25)
    a = s.image
    return np.block([[a, a[:, ::-1], a], [a[::-1], a[::-1, ::-1], a[::-1]]])


@pytest.fixture(scope="module")
def in_memory(field):
    labels, det = segment_large(field.astype(np.float32), method="otsu", tile_size=512, diameter=18)
    return labels, det


def _check_ids(labels):
    n = int(labels.max())
    assert n > 1000
    np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))  # 1..N, none missing
    # every id is one connected piece: no nucleus was split into two parts under one id
    assert connected(labels, background=0, connectivity=2).max() == n


def test_lazy_zarr_path_equals_in_memory_segment_tiled(field, in_memory, tmp_path):
    ref, det = in_memory
    src = io.write_ome_zarr(tmp_path / "in.ome.zarr", field, spacing=0.25, chunks=256)
    lazy = io.open_image_lazy(src)
    assert not isinstance(lazy.data, np.ndarray) and lazy.shape == field.shape and lazy.spacing == 0.25
    with io.ZarrLabelSink(tmp_path / "out.ome.zarr", lazy.data, spacing=lazy.spacing, chunks=256) as sink:
        out, ldet = segment_large(lazy.data, method="otsu", tile_size=512, diameter=18, sink=sink)
    assert ldet.n_tiles == det.n_tiles > 4 and ldet.threshold == det.threshold
    labels = io.read_zarr_labels(out)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, ref)  # relative-area filter and raster numbering included
    _check_ids(labels)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary store was moved into place

    # ome-zarr-py reads it: the image, its image-label linked to it, both pyramids of every 2nd pixel
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    nodes = list(Reader(parse_url(str(out)))())
    image = next(n for n in nodes if any(isinstance(s, Multiscales) for s in n.specs) and
                 not any(isinstance(s, Label) for s in n.specs))
    lab = next(n for n in nodes if any(isinstance(s, Label) for s in n.specs))
    assert len(lab.data) == len(image.data) == 4  # 2048, 1024, 512, 256 rows
    np.testing.assert_array_equal(np.asarray(image.data[0]), field)
    np.testing.assert_array_equal(np.asarray(lab.data[0]), ref)
    np.testing.assert_array_equal(np.asarray(lab.data[2]), ref[::4, ::4])
    import zarr

    attrs = dict(zarr.open_group(str(out / "labels" / "nuclei"), mode="r").attrs)
    assert attrs["ome"]["image-label"]["source"]["image"] == "../../"
    assert io.read_image(out).spacing == 0.25


def test_lazy_tiff_is_memory_mapped_or_read_by_tiles(field, tmp_path):
    # (segmenting a tiled TIFF lazily: test_run_takes_the_lazy_path_for_a_huge_image_with_ome_zarr)
    tifffile.imwrite(tmp_path / "plain.tif", field)
    tifffile.imwrite(tmp_path / "tiled.tif", field, compression="zlib", tile=(256, 256))
    plain, tiled = io.open_image_lazy(tmp_path / "plain.tif"), io.open_image_lazy(tmp_path / "tiled.tif")
    assert isinstance(plain.data, np.memmap) and not isinstance(tiled.data, np.ndarray)
    np.testing.assert_array_equal(tiled.data[100:300, 2000:2100], field[100:300, 2000:2100])
    np.testing.assert_array_equal(plain.data[1900:2048, 3000:], field[1900:2048, 3000:])


def test_lazy_reader_chooses_one_plane(tmp_path):
    stack = np.arange(3 * 40 * 50, dtype=np.uint16).reshape(3, 40, 50)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    with pytest.raises(InputError, match="--plane"):
        io.open_image_lazy(tmp_path / "stack.tif")
    with pytest.raises(InputError, match="out of range"):
        io.open_image_lazy(tmp_path / "stack.tif", plane=3)
    one = io.open_image_lazy(tmp_path / "stack.tif", plane=2)
    assert one.shape == (40, 50)
    np.testing.assert_array_equal(one.data[5:9, 10:20], stack[2, 5:9, 10:20])
    (tmp_path / "flat.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="lazily"):
        io.open_image_lazy(tmp_path / "flat.png")


class _BandSink(LabelSink):
    """The zarr sink's buffering in memory, recording the most rows ever held."""

    def __init__(self, shape):
        super().__init__(shape)
        self.held = self.lo = 0

    def rows(self, start, stop):
        assert start >= self.lo  # final rows are never asked for again
        self.lo = start
        self.held = max(self.held, stop - start)
        return super().rows(start, stop)


def _discs(shape, rng):
    """Touching and separate discs (diameter 8-20 px) on a jittered grid, float32 0/1."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    cy, cx = np.meshgrid(np.arange(12, shape[0], 22), np.arange(12, shape[1], 22), indexing="ij")
    cy, cx = cy + rng.integers(-3, 4, cy.shape), cx + rng.integers(-3, 4, cx.shape)
    r = rng.uniform(4, 10, cy.shape)
    img = np.zeros(shape, np.float32)
    for y, x, rr in zip(cy.ravel(), cx.ravel(), r.ravel()):
        sl = (slice(max(y - 11, 0), y + 12), slice(max(x - 11, 0), x + 12))
        img[sl] = np.maximum(img[sl], ((yy[sl] - y) ** 2 + (xx[sl] - x) ** 2 <= rr * rr))
    return img


def _label(tile):
    return ndi.label(tile > 0.5)[0]


def test_band_stays_one_tile_row_high():
    image = _discs((1500, 400), np.random.default_rng(2))
    cfg = TilingConfig(tile=128, overlap=48)
    sink = _BandSink(image.shape)
    out = segment_tiled(image, _label, cfg, sink=sink)
    np.testing.assert_array_equal(out, segment_tiled(image, _label, cfg))
    untiled = _label(image)
    np.testing.assert_array_equal(out, untiled)  # small nuclei: equal to untiled
    tallest = max(sl[0].stop - sl[0].start for sl in ndi.find_objects(untiled))
    assert untiled.max() > 500 and tallest < 60
    # a tile row plus the objects that straddle its top: never the image (1500 rows)
    assert sink.held <= cfg.tile + tallest


def test_zarr_sink_peak_memory_is_bounded_by_the_band(tmp_path):
    # 6144 x 1024: a full int32 label image is 24 MiB; the band of 256 + 256 rows is 2 MiB, one tile's
    # temporaries (labels, intp copies, sorting) ~3 MiB, zarr's chunk buffers a few more
    rng = np.random.default_rng(3)
    image = np.tile(_discs((1024, 1024), rng), (6, 1))
    src = io.write_ome_zarr(tmp_path / "in.ome.zarr", (image * 1000).astype(np.uint16), chunks=256)
    lazy = io.open_image_lazy(src)
    cfg = TilingConfig(tile=256, overlap=64)
    full = image.shape[0] * image.shape[1] * 4
    src_image = LazyImage(lazy.data, 1000.0)

    tracemalloc.start()
    try:
        with io.ZarrLabelSink(tmp_path / "out.ome.zarr", lazy.data, chunks=256) as sink:
            out = segment_tiled(src_image, _label, cfg, sink=sink)
        _, lazy_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        ref = segment_tiled(src_image, _label, cfg)
        _, memory_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert memory_peak > full  # the in-memory result alone; shows the measure sees the label image
    assert lazy_peak < 0.4 * full, f"peak {lazy_peak / 2**20:.1f} MiB for a {full / 2**20:.0f} MiB label image"
    labels = io.read_zarr_labels(out)
    np.testing.assert_array_equal(labels, ref)
    _check_ids(labels)


def test_zarr_sink_leaves_nothing_on_failure(tmp_path):
    image = _discs((600, 300), np.random.default_rng(4))

    def failing(tile):
        raise RuntimeError("segmenter died")

    target = tmp_path / "out.ome.zarr"
    with pytest.raises(RuntimeError, match="died"):
        with io.ZarrLabelSink(target, image, chunks=128) as sink:
            segment_tiled(image, failing, TilingConfig(tile=128, overlap=32), sink=sink)
    assert not target.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="shape"):
        segment_tiled(image, _label, TilingConfig(tile=128, overlap=32), sink=LabelSink((10, 10)))


def test_run_takes_the_lazy_path_for_a_huge_image_with_ome_zarr(field, in_memory, tmp_path, caplog):
    import logging

    import pandas as pd

    from nucleoscope.cli import main

    ref, _ = in_memory
    tifffile.imwrite(tmp_path / "field.tif", field, compression="zlib", tile=(256, 256))
    with caplog.at_level(logging.INFO, logger="nucleoscope.pipeline.run"):
        rc = main(["run", str(tmp_path / "field.tif"), "-o", str(tmp_path / "out"), "--method", "otsu",
                   "--tile-size", "512", "--diameter", "18", "--ome-zarr", "--lazy-above", "5", "-q",
                   "--features", "shape", "--no-overlays"])
    assert rc == 0
    assert "segmented lazily" in caplog.text  # 6.3 MP > 5 MP and tiled
    np.testing.assert_array_equal(io.read_zarr_labels(tmp_path / "out" / "ome-zarr" / "field.ome.zarr"), ref)
    np.testing.assert_array_equal(io.read_labels(tmp_path / "out" / "labels" / "field.tif"), ref)
    table = pd.read_csv(tmp_path / "out" / "nuclei.csv")
    assert len(table) == ref.max() and table["ObjectNumber"].tolist() == list(range(1, ref.max() + 1))
