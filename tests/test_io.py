"""nucleoscope.io: reading with validation, pixel size from metadata, channel/plane selection, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import imagecodecs
import numpy as np
import pandas as pd
import pytest
import tifffile

from nucleoscope import InputError
from nucleoscope.io import (
    SUPPORTED_SUFFIXES,
    Image,
    atomic_path,
    find_images,
    image_name,
    label_outline,
    read_image,
    read_labels,
    read_table,
    unique_names,
    write_image,
    write_imagej_rois,
    write_json,
    write_labels,
    write_png,
    write_table,
)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


def _expect(exc_info: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    """The message names the file and says each key word (case-insensitive)."""
    msg = str(exc_info.value)
    assert path.name in msg, msg
    for word in words:
        assert word.lower() in msg.lower(), f"{word!r} not in {msg!r}"


# ---------------------------------------------------------------------------------------------------------
# Round trips per dtype and the saturation level


@pytest.mark.parametrize(
    ("dtype", "top", "saturation"),
    [
        (np.uint8, 200, 255.0),
        (np.uint16, 4095, 4095.0),  # 12-bit camera
        (np.uint16, 4096, 65535.0),
        (np.uint16, 60000, 65535.0),
    ],
)
def test_tiff_integer_round_trip(tmp_path, rng, dtype, top, saturation):
    arr = rng.integers(0, top, size=(33, 47), dtype=dtype)
    arr[0, 0] = top  # pin the maximum
    f = tmp_path / "a.tif"
    tifffile.imwrite(f, arr)
    img = read_image(f)
    assert isinstance(img, Image)
    assert img.data.dtype == np.float32 and img.data.shape == (33, 47)
    np.testing.assert_array_equal(img.data, arr.astype(np.float32))  # no rescaling
    assert img.dtype == np.dtype(dtype).name
    assert img.saturation == saturation
    assert img.name == "a" and img.source == str(f)
    assert img.spacing is None and img.channel is None
    assert img.megapixels == pytest.approx(33 * 47 / 1e6)


def test_tiff_float_saturation(tmp_path, rng):
    unit = rng.random((20, 30)).astype(np.float32)
    tifffile.imwrite(tmp_path / "u.tif", unit)
    img = read_image(tmp_path / "u.tif")
    np.testing.assert_array_equal(img.data, unit)
    assert img.dtype == "float32" and img.saturation == 1.0
    wide = (unit * 1000 - 5).astype(np.float64)
    tifffile.imwrite(tmp_path / "w.tif", wide)
    img = read_image(tmp_path / "w.tif")
    assert img.dtype == "float64"
    assert img.saturation == pytest.approx(float(wide.max()), rel=1e-6)
    np.testing.assert_allclose(img.data, wide, rtol=1e-6)


def test_constant_and_blank_images_are_not_errors(tmp_path):
    tifffile.imwrite(tmp_path / "blank.tif", np.zeros((16, 16), np.uint16))
    tifffile.imwrite(tmp_path / "flat.tif", np.full((16, 16), 7, np.uint8))
    assert read_image(tmp_path / "blank.tif").data.max() == 0
    assert read_image(tmp_path / "flat.tif").data.min() == 7


def test_png_and_jpeg(tmp_path, rng):
    g16 = rng.integers(0, 65535, (21, 34), dtype=np.uint16)
    (tmp_path / "g.png").write_bytes(imagecodecs.png_encode(g16))
    img = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(img.data, g16)
    assert img.dtype == "uint16" and img.name == "g"

    g8 = rng.integers(0, 255, (24, 32), dtype=np.uint8)
    (tmp_path / "g.jpeg").write_bytes(imagecodecs.jpeg8_encode(g8, level=100))
    img = read_image(tmp_path / "g.jpeg")
    assert img.dtype == "uint8" and img.saturation == 255.0
    assert np.abs(img.data - g8).mean() < 3  # lossy, but close


def test_names_strip_the_image_suffix():
    assert image_name("d/a.ome.tif") == "a"
    assert image_name("d/a.b.OME.TIFF") == "a.b"
    assert image_name("x.PNG") == "x"
    assert image_name("plain.tif") == "plain"


# ---------------------------------------------------------------------------------------------------------
# Pixel size


@pytest.mark.parametrize(("value", "unit", "um"), [(0.215, "µm", 0.215), (200.0, "nm", 0.2), (None, None, None)])
def test_ome_pixel_size(tmp_path, value, unit, um):
    meta = {"axes": "YX"}
    if value is not None:
        meta.update(PhysicalSizeX=value, PhysicalSizeY=value, PhysicalSizeXUnit=unit, PhysicalSizeYUnit=unit)
    f = tmp_path / "o.ome.tif"
    tifffile.imwrite(f, np.ones((8, 9), np.uint16), ome=True, metadata=meta)
    img = read_image(f)
    assert img.name == "o"
    assert img.spacing == (None if um is None else pytest.approx(um, rel=1e-9))


@pytest.mark.parametrize(("unit", "um"), [("um", 0.5), ("micron", 0.5), ("\\u00B5m", 0.5), ("nm", 0.0005)])
def test_imagej_pixel_size(tmp_path, unit, um):
    f = tmp_path / "ij.tif"
    tifffile.imwrite(f, np.ones((8, 9), np.uint16), imagej=True, resolution=(2.0, 2.0), metadata={"unit": unit})
    assert read_image(f).spacing == pytest.approx(um, rel=1e-9)


def test_tiff_resolution_tags(tmp_path):
    f = tmp_path / "cm.tif"
    tifffile.imwrite(f, np.ones((8, 8), np.uint8), resolution=(1e4 / 0.65, 1e4 / 0.65), resolutionunit="CENTIMETER")
    assert read_image(f).spacing == pytest.approx(0.65, rel=1e-6)
    f = tmp_path / "inch.tif"
    tifffile.imwrite(f, np.ones((8, 8), np.uint8), resolution=(25400 / 0.25, 25400 / 0.25), resolutionunit="INCH")
    assert read_image(f).spacing == pytest.approx(0.25, rel=1e-6)
    # 72 dpi (352.8 µm/px) is a display default, not a microscope's pixel size; unit NONE is a ratio.
    tifffile.imwrite(tmp_path / "dpi.tif", np.ones((8, 8), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    assert read_image(tmp_path / "dpi.tif").spacing is None
    tifffile.imwrite(tmp_path / "none.tif", np.ones((8, 8), np.uint8), resolution=(3, 3), resolutionunit="NONE")
    assert read_image(tmp_path / "none.tif").spacing is None


def test_pixel_size_argument_wins(tmp_path):
    f = tmp_path / "o.ome.tif"
    tifffile.imwrite(f, np.ones((8, 9), np.uint16), ome=True, metadata={"axes": "YX", "PhysicalSizeX": 0.3})
    assert read_image(f).spacing == pytest.approx(0.3)
    assert read_image(f, pixel_size=0.1).spacing == pytest.approx(0.1)
    for bad in (0, -1.0, float("nan"), "abc"):
        with pytest.raises(InputError) as ei:
            read_image(f, pixel_size=bad)
        _expect(ei, f, "pixel size")


# ---------------------------------------------------------------------------------------------------------
# Channel and plane selection


def _stack(n: int, shape=(12, 14)) -> np.ndarray:
    """Plane k is filled with 10 * k + 1, so the plane taken is read off its values."""
    return np.stack([np.full(shape, 10 * k + 1, np.uint16) for k in range(n)])


@pytest.mark.parametrize(
    ("layout", "writer"),
    [
        ("CYX ome", lambda f, a: tifffile.imwrite(f, a, ome=True, metadata={"axes": "CYX"})),
        ("CYX imagej", lambda f, a: tifffile.imwrite(f, a, imagej=True, metadata={"axes": "CYX"})),
        ("CYX plain", lambda f, a: tifffile.imwrite(f, a)),
        ("YXC plain", lambda f, a: tifffile.imwrite(f, np.moveaxis(a, 0, -1), photometric="minisblack",
                                                    planarconfig="contig")),
    ],
)
def test_channel_selection_layouts(tmp_path, layout, writer):
    f = tmp_path / "multi.ome.tif" if "ome" in layout else tmp_path / "multi.tif"
    writer(f, _stack(5))
    for c in (0, 3, 4):
        img = read_image(f, channel=c)
        assert img.channel == c and img.data.shape == (12, 14)
        assert np.all(img.data == 10 * c + 1), layout
        assert img.name == "multi"
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "--channel", "(5, 12, 14)" if layout != "YXC plain" else "(12, 14, 5)")
    with pytest.raises(InputError) as ei:
        read_image(f, channel=5)
    _expect(ei, f, "channel 5", "out of range", "5 channels")


def test_rgb_png_needs_a_channel_unless_gray(tmp_path, rng):
    rgb = rng.integers(0, 255, (20, 22, 3), dtype=np.uint8)
    f = tmp_path / "colour.png"
    f.write_bytes(imagecodecs.png_encode(rgb))
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "RGB", "--channel")
    for c in range(3):
        np.testing.assert_array_equal(read_image(f, channel=c).data, rgb[..., c])
    rgba = np.dstack([rgb, np.full((20, 22), 255, np.uint8)])
    f4 = tmp_path / "rgba.png"
    f4.write_bytes(imagecodecs.png_encode(rgba))
    with pytest.raises(InputError) as ei:
        read_image(f4)
    _expect(ei, f4, "RGBA", "--channel")
    # Gray stored as RGB(A): accepted, channel stays None.
    g = rgb[..., 1]
    for name, arr in [("gray.png", np.dstack([g, g, g])), ("graya.png", np.dstack([g, g, g, g * 0 + 255]))]:
        (tmp_path / name).write_bytes(imagecodecs.png_encode(arr))
        img = read_image(tmp_path / name)
        np.testing.assert_array_equal(img.data, g)
        assert img.channel is None


def test_two_sample_image_needs_a_channel_unless_alpha(tmp_path, rng):
    # (Y, X, 2) samples used to be read as grey + alpha: channel 0 taken silently, even when the nuclear
    # stain was channel 1
    a = rng.integers(0, 4000, (20, 22), dtype=np.uint16)
    b = rng.integers(0, 4000, (20, 22), dtype=np.uint16)
    f = tmp_path / "two.tif"
    tifffile.imwrite(f, np.dstack([a, b]), photometric="minisblack", planarconfig="contig")
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "2-channel", "--channel")
    np.testing.assert_array_equal(read_image(f, channel=1).data, b)
    la = tmp_path / "grey_alpha.png"
    la.write_bytes(imagecodecs.png_encode(np.dstack([a.astype(np.uint8), np.full((20, 22), 255, np.uint8)])))
    np.testing.assert_array_equal(read_image(la).data, a.astype(np.uint8))


def test_rgb_tiff(tmp_path, rng):
    rgb = rng.integers(0, 255, (20, 22, 3), dtype=np.uint8)
    f = tmp_path / "rgb.tif"
    tifffile.imwrite(f, rgb, photometric="rgb")
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "RGB", "--channel")
    np.testing.assert_array_equal(read_image(f, channel=2).data, rgb[..., 2])


def test_channel_zero_of_grayscale_is_accepted(tmp_path):
    f = tmp_path / "g.tif"
    tifffile.imwrite(f, np.full((8, 8), 3, np.uint8))
    img = read_image(f, channel=0)
    assert img.channel == 0 and img.data[0, 0] == 3
    with pytest.raises(InputError) as ei:
        read_image(f, channel=1)
    _expect(ei, f, "out of range", "1 channel")
    with pytest.raises(InputError) as ei:
        read_image(f, channel=-1)
    _expect(ei, f, "out of range")


def test_plane_selection_and_3d_errors(tmp_path):
    f = tmp_path / "z.ome.tif"
    tifffile.imwrite(f, _stack(4), ome=True, metadata={"axes": "ZYX"})
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "3D", "ZYX", "(4, 12, 14)", "--plane Z")
    assert np.all(read_image(f, plane=2).data == 21)
    with pytest.raises(InputError) as ei:
        read_image(f, plane=4)
    _expect(ei, f, "plane 4", "out of range")
    # Multi-page TIFF written page by page.
    m = tmp_path / "pages.tif"
    for k in range(3):
        tifffile.imwrite(m, np.full((6, 7), k, np.uint8), append=True)
    with pytest.raises(InputError) as ei:
        read_image(m)
    _expect(ei, m, "3D", "--plane")
    assert np.all(read_image(m, plane=1).data == 1)


def test_4d_needs_channel_and_plane(tmp_path):
    f = tmp_path / "zc.ome.tif"
    data = np.stack([_stack(3) + 100 * z for z in range(2)])  # Z=2, C=3
    tifffile.imwrite(f, data, ome=True, metadata={"axes": "ZCYX", "PhysicalSizeX": 0.1})
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "4D", "ZCYX", "--channel", "--plane")
    with pytest.raises(InputError) as ei:
        read_image(f, channel=1)
    _expect(ei, f, "--plane")
    img = read_image(f, channel=2, plane=1)
    assert np.all(img.data == 100 + 21) and img.spacing == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------------------
# Errors


def test_missing_file(tmp_path):
    f = tmp_path / "nope.tif"
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "not found")
    assert isinstance(ei.value, ValueError) and ei.value.path == str(f)
    with pytest.raises(InputError) as ei:
        read_labels(f)
    _expect(ei, f, "not found")


def test_unsupported_format(tmp_path):
    f = tmp_path / "cells.bmp"
    f.write_bytes(b"BM....")
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "unsupported", ".tif", ".png", ".jpg")


def test_truncated_tiff(tmp_path, rng):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, rng.integers(0, 4095, (128, 160), dtype=np.uint16))
    data = good.read_bytes()
    for compression in (None, "zlib"):
        tifffile.imwrite(good, rng.integers(0, 4095, (128, 160), dtype=np.uint16), compression=compression)
        cut = tmp_path / f"cut_{compression}.tif"
        data = good.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError) as ei:
            read_image(cut)
        _expect(ei, cut, "truncated")
        assert "Traceback" not in str(ei.value)


@pytest.mark.parametrize("content", [b"", b"this is not a tiff at all" * 10, b"II*\x00\xff\xff\xff\xff"])
def test_corrupt_tiff(tmp_path, content):
    f = tmp_path / "broken.tiff"
    f.write_bytes(content)
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "corrupt", "TIFF")


def test_corrupt_tiff_message_is_printable(tmp_path):
    # random bytes over the image description used to put them verbatim into the message (and images.csv)
    f = tmp_path / "garbled.tif"
    tifffile.imwrite(f, np.zeros((20, 22), np.uint16))
    data = f.read_bytes()
    f.write_bytes(data[:200] + bytes(np.random.default_rng(0).integers(0, 256, len(data) - 200, dtype=np.uint8)))
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "corrupt", "TIFF")
    detail = str(ei.value)[len(str(f)):]
    assert all(" " <= c <= "~" for c in detail), detail


def test_corrupt_png(tmp_path, rng):
    f = tmp_path / "broken.png"
    f.write_bytes(imagecodecs.png_encode(rng.integers(0, 255, (40, 40), dtype=np.uint8))[:50])
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "corrupt", "PNG")


@pytest.mark.parametrize(("bad", "nan", "inf"), [(np.nan, 1, 0), (np.inf, 0, 1), (-np.inf, 0, 1)])
def test_non_finite_values(tmp_path, bad, nan, inf):
    arr = np.ones((10, 10), np.float32)
    arr[3, 4] = bad
    f = tmp_path / "nonfinite.tif"
    tifffile.imwrite(f, arr)
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "non-finite", f"{nan} NaN", f"{inf} Inf")


def test_folder_given_as_file(tmp_path):
    d = tmp_path / "dir.tif"
    d.mkdir()
    with pytest.raises(InputError) as ei:
        read_image(d)
    _expect(ei, d, "folder")


# ---------------------------------------------------------------------------------------------------------
# Labels


def test_labels_round_trip_keeps_int32_and_spacing(tmp_path, rng):
    labels = rng.integers(0, 70_000, (30, 40)).astype(np.int32)  # beyond uint16: never narrowed
    f = write_labels(tmp_path / "sub" / "l.tif", labels, spacing=0.215)
    assert f == tmp_path / "sub" / "l.tif"
    back = read_labels(f)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, labels)
    with tifffile.TiffFile(f) as tif:
        assert tif.pages[0].dtype == np.int32
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert read_image(f).spacing == pytest.approx(0.215, rel=1e-6)
    assert not [p for p in f.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_write_labels_rejects_bad_arrays(tmp_path):
    f = tmp_path / "l.tif"
    for bad in (np.zeros((2, 2, 3, 4), np.int32), np.zeros((3, 3), np.float32), np.array([[-1, 0]])):
        with pytest.raises(InputError) as ei:
            write_labels(f, bad)
        _expect(ei, f, "labels")
    assert not f.exists()
    stack = np.arange(24, dtype=np.int32).reshape(2, 3, 4)  # (Z, Y, X) labels of `run --3d` are written
    write_labels(f, stack)
    np.testing.assert_array_equal(tifffile.imread(f), stack)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "int32"])
def test_write_image_round_trip_keeps_values_dtype_and_spacing(tmp_path, rng, dtype):
    image = (rng.random((30, 40)) * (200 if dtype != "float32" else 1)).astype(dtype)
    f = write_image(tmp_path / "sub" / "im.tif", image, spacing=0.325)
    assert f == tmp_path / "sub" / "im.tif"
    back = read_image(f)
    assert back.dtype == np.dtype(dtype) and back.spacing == pytest.approx(0.325, rel=1e-6)
    np.testing.assert_array_equal(back.data, image.astype(np.float32))
    with tifffile.TiffFile(f) as tif:
        assert tif.pages[0].dtype == np.dtype(dtype)
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert not [p for p in f.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_write_image_stack_bool_and_uncompressed(tmp_path):
    stack = np.arange(2 * 8 * 9, dtype=np.uint16).reshape(2, 8, 9)
    f = write_image(tmp_path / "stack.tif", stack, compression="none")
    np.testing.assert_array_equal(tifffile.imread(f), stack)
    with tifffile.TiffFile(f) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.NONE
        assert read_image(f, plane=1).spacing is None  # no spacing given: none stored
    mask = np.eye(6, dtype=bool)
    back = tifffile.imread(write_image(tmp_path / "mask.tif", mask))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask)


def test_write_image_rejects_bad_input(tmp_path):
    f = tmp_path / "im.tif"
    cases = [((np.zeros((2, 2, 3, 4)),), {}, "(Z, Y, X)"), ((np.zeros(5),), {}, "(Y, X)"),
             ((np.zeros((3, 3), complex),), {}, "dtype"), ((np.zeros((3, 3)),), {"spacing": 0.0}, "spacing"),
             ((np.zeros((3, 3)),), {"spacing": float("nan")}, "spacing"),
             ((np.zeros((3, 3)),), {"compression": "lzw"}, "compression")]
    for args, kwargs, word in cases:
        with pytest.raises(InputError) as ei:
            write_image(f, *args, **kwargs)
        _expect(ei, f, word)
    assert not f.exists()


def test_write_labels_as_uint16_and_through_write_image(tmp_path, monkeypatch):
    labels = np.zeros((20, 30), np.int64)
    labels[2:8, 3:9], labels[10:15, 12:20] = 7, 65535
    f = write_labels(tmp_path / "l16.tif", labels, spacing=0.5, dtype="uint16")
    with tifffile.TiffFile(f) as tif:
        assert tif.pages[0].dtype == np.uint16
    back = read_labels(f)
    assert back.dtype == np.int32 and read_image(f).spacing == pytest.approx(0.5)
    np.testing.assert_array_equal(back, labels)
    with pytest.raises(InputError) as ei:  # never wrapped: 65536 would come back as background
        write_labels(tmp_path / "big.tif", labels + (labels > 0), dtype="uint16")
    _expect(ei, tmp_path / "big.tif", "uint16")
    with pytest.raises(InputError):
        write_labels(tmp_path / "x.tif", labels, dtype="uint8")
    # the labels go through the one TIFF writer
    import nucleoscope.io._write as w

    seen = []
    real = w.write_image
    monkeypatch.setattr(w, "write_image", lambda path, image, **kw: seen.append(image.dtype) or real(path, image, **kw))
    write_labels(tmp_path / "l32.tif", labels)
    assert seen == [np.int32]


def test_read_labels_validation(tmp_path):
    cases = {
        "frac.tif": (np.array([[0, 1.5]], np.float32), "integer"),
        "neg.tif": (np.array([[0, -2]], np.int16), "negative"),
        "cube.tif": (np.zeros((2, 4, 4), np.uint16), "2D"),
    }
    for name, (arr, word) in cases.items():
        tifffile.imwrite(tmp_path / name, arr)
        with pytest.raises(InputError) as ei:
            read_labels(tmp_path / name)
        _expect(ei, tmp_path / name, word)
    tifffile.imwrite(tmp_path / "whole.tif", np.array([[0, 2.0]], np.float32))
    np.testing.assert_array_equal(read_labels(tmp_path / "whole.tif"), [[0, 2]])
    tifffile.imwrite(tmp_path / "u16.tif", np.array([[0, 65535]], np.uint16))
    assert read_labels(tmp_path / "u16.tif").dtype == np.int32


# ---------------------------------------------------------------------------------------------------------
# Atomic writers


def test_atomic_path_keeps_old_file_when_writer_raises(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("old\n")

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom):
        with atomic_path(f) as tmp:
            assert tmp.parent == f.parent and tmp.name.endswith("t.csv") and tmp != f
            tmp.write_text("half of the new")
            raise Boom
    assert f.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_write_table_failure_keeps_old_table(tmp_path):
    f = tmp_path / "n.parquet"
    write_table(pd.DataFrame({"a": [1, 2]}), f)
    with pytest.raises(Exception):
        write_table(pd.DataFrame({"a": [object()]}), f)  # pyarrow cannot serialise this
    pd.testing.assert_frame_equal(read_table(f), pd.DataFrame({"a": [1, 2]}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.parquet"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_table_round_trip(tmp_path, suffix):
    df = pd.DataFrame({"ImageName": ["a", "b"], "ObjectNumber": np.array([1, 2], np.int32),
                       "Area": [10.5, 3.25], "Flag": [True, False]})
    f = write_table(df, tmp_path / f"t{suffix}")
    back = read_table(f)
    assert list(back.columns) == list(df.columns)
    np.testing.assert_allclose(back["Area"], df["Area"])
    assert back["ImageName"].tolist() == ["a", "b"] and back["Flag"].tolist() == [True, False]
    assert back.index.tolist() == [0, 1] and "Unnamed: 0" not in back.columns


def test_csv_dtype_keeps_numeric_looking_names(tmp_path):
    f = write_table(pd.DataFrame({"ImageName": ["01", "02"], "Count": [3, 4]}), tmp_path / "t.csv")
    assert read_table(f)["ImageName"].tolist() == [1, 2]  # what CSV alone gives
    back = read_table(f, dtype={"ImageName": str})
    assert back["ImageName"].tolist() == ["01", "02"] and back["Count"].tolist() == [3, 4]


def test_table_errors(tmp_path):
    with pytest.raises(InputError) as ei:
        write_table(pd.DataFrame(), tmp_path / "t.xlsx")
    _expect(ei, tmp_path / "t.xlsx", "unsupported")
    with pytest.raises(InputError) as ei:
        read_table(tmp_path / "missing.csv")
    _expect(ei, tmp_path / "missing.csv", "not found")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(InputError) as ei:
        read_table(bad)
    _expect(ei, bad, "cannot read")


def test_write_json_converts(tmp_path):
    obj = {"n": np.int64(3), "x": np.float32(0.5), "arr": np.arange(3), "p": Path("a/b"),
           "flag": np.bool_(True), "nan": float("nan"), 7: (1, 2)}
    f = write_json(obj, tmp_path / "run.json")
    text = f.read_text(encoding="utf-8")
    assert text.startswith("{\n  \"n\": 3") and text.endswith("\n")
    assert json.loads(text) == {"n": 3, "x": 0.5, "arr": [0, 1, 2], "p": os.fspath(Path("a/b")),
                                "flag": True, "nan": None, "7": [1, 2]}


def test_write_png_round_trip(tmp_path, rng):
    rgb = rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)
    f = write_png(tmp_path / "o.png", rgb)
    np.testing.assert_array_equal(imagecodecs.imread(f), rgb)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(imagecodecs.imread(write_png(tmp_path / "g.png", gray)), gray)
    with pytest.raises(InputError) as ei:
        write_png(tmp_path / "f.png", rgb.astype(np.float32))
    _expect(ei, tmp_path / "f.png", "uint8")


# ---------------------------------------------------------------------------------------------------------
# find_images


def _touch_images(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_find_images_folder_glob_and_dedup(tmp_path):
    _touch_images(tmp_path / "d", ["b.tif", "a.ome.tiff", "c.PNG", "notes.csv", "._junk.tif", "x.jpeg"])
    _touch_images(tmp_path / "d" / "sub", ["deep.tif"])
    names = [p.name for p in find_images([tmp_path / "d"])]
    assert names == ["a.ome.tiff", "b.tif", "c.PNG", "x.jpeg"]
    rec = [p.name for p in find_images([tmp_path / "d"], recursive=True)]
    assert rec == ["a.ome.tiff", "b.tif", "c.PNG", "deep.tif", "x.jpeg"]  # sorted by path: d/sub < d/x
    hits = find_images([str(tmp_path / "d" / "*.tif"), tmp_path / "d", tmp_path / "d" / "b.tif"])
    assert [p.name for p in hits] == ["a.ome.tiff", "b.tif", "c.PNG", "x.jpeg"]
    # An explicit file is kept whatever its suffix: reading it reports the problem per image.
    assert find_images([tmp_path / "d" / "notes.csv"]) == [tmp_path / "d" / "notes.csv"]
    assert all(s.startswith(".") for s in SUPPORTED_SUFFIXES)


def test_find_images_errors(tmp_path):
    with pytest.raises(InputError) as ei:
        find_images([tmp_path / "missing.tif"])
    _expect(ei, tmp_path / "missing.tif", "no such file")
    with pytest.raises(InputError) as ei:
        find_images([str(tmp_path / "*.tif")])
    assert "*.tif" in str(ei.value) and "matches no" in str(ei.value)
    _touch_images(tmp_path / "tables", ["a.csv"])
    with pytest.raises(InputError) as ei:
        find_images([tmp_path / "tables"])
    _expect(ei, tmp_path / "tables", "no supported image")


def test_real_bbbc039_image(shared_data):
    """A real 12-bit BBBC039 image: uint16 storage, 12-bit full scale, no pixel size in the file."""
    f = sorted((shared_data / "bbbc039" / "val" / "images").glob("*.tif"))[0]
    img = read_image(f)
    assert img.data.shape == (520, 696) and img.dtype == "uint16"
    assert img.saturation == 4095.0 and img.spacing is None
    labels = read_labels(shared_data / "bbbc039" / "val" / "masks" / f.name)
    assert labels.shape == (520, 696) and labels.dtype == np.int32 and labels.max() > 10


def test_truncated_multipage_tiff_is_not_read_as_its_first_page(tmp_path):
    """A page-by-page stack cut short: tifffile only logs the broken page chain; we must refuse it."""
    stack = _stack(10, shape=(64, 80))
    f = tmp_path / "stack.tif"
    tifffile.imwrite(f, stack, metadata=None)  # plain multi-page TIFF, no shape description
    assert np.all(read_image(f, plane=7).data == 71)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) * 6 // 10])
    for plane in (None, 0, 7):
        with pytest.raises(InputError) as ei:
            read_image(f, plane=plane)
        _expect(ei, f, "truncated")


def test_several_plane_axes(tmp_path):
    f = tmp_path / "tz.ome.tif"
    tifffile.imwrite(f, np.zeros((3, 2, 8, 9), np.uint8), ome=True, metadata={"axes": "TZYX"})
    with pytest.raises(InputError) as ei:
        read_image(f, plane=1)
    _expect(ei, f, "several plane axes", "T=3", "Z=2")


def test_unique_names():
    assert unique_names(["a/x.tif", "b/x.ome.tif", "b/y.png"]) == ["a_x", "b_x", "y"]
    assert unique_names(["p/a/x.tif", "q/a/x.tif", "r/b/z.tif"]) == ["p_a_x", "q_a_x", "z"]
    # Same folder, same stem: numbered, and a numbered name never collides with a real one.
    assert unique_names(["d/x.tif", "d/x.png", "d/x_2.tif"]) == ["x", "x_3", "x_2"]
    # A folder-prefixed name never takes a name that did not clash.
    assert unique_names(["a/x.tif", "b/x.tif", "a_x.tif"]) == ["a_x_2", "b_x", "a_x"]
    assert unique_names([]) == []


def test_find_images_exclude(tmp_path):
    _touch_images(tmp_path / "in", ["a.tif"])
    _touch_images(tmp_path / "in" / "out" / "labels", ["a.tif"])
    assert len(find_images([tmp_path / "in"], recursive=True)) == 2
    hits = find_images([tmp_path / "in"], recursive=True, exclude=[tmp_path / "in" / "out"])
    assert hits == [tmp_path / "in" / "a.tif"]


def test_find_images_glob_in_folder_with_brackets(tmp_path):
    # "plate [1]/*.tif" used to match nothing: the brackets were read as a character class
    _touch_images(tmp_path / "plate [1]", ["a.tif", "b.png"])
    _touch_images(tmp_path / "plate 1", ["c.tif"])
    hits = find_images([os.path.join(tmp_path, "plate [1]", "*.tif")])
    assert hits == [tmp_path / "plate [1]" / "a.tif"]
    # a pattern whose brackets do match keeps its glob meaning
    assert find_images([os.path.join(tmp_path, "plate [1]", "[ab].*")]) == [
        tmp_path / "plate [1]" / "a.tif", tmp_path / "plate [1]" / "b.png"]
    with pytest.raises(InputError):
        find_images([os.path.join(tmp_path, "plate [1]", "*.jpg")])


def test_truncated_jpeg(tmp_path, rng):
    """libjpeg decodes a cut JPEG silently (grey fill); the missing end-of-image marker gives it away."""
    data = imagecodecs.jpeg8_encode(rng.integers(0, 255, (64, 96), dtype=np.uint8))
    f = tmp_path / "cut.jpg"
    f.write_bytes(data)
    assert read_image(f).data.shape == (64, 96)
    f.write_bytes(data[: len(data) * 9 // 10])
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "truncated", "JPEG")


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_big_uncompressed_stacks_are_memory_mapped(tmp_path, monkeypatch, byteorder):
    """Above the size limit an uncompressed stack is mapped, not read whole; the result is the same."""
    import nucleoscope.io._tiff as reader

    stack = np.arange(4 * 3 * 16 * 20, dtype=np.uint16).reshape(4, 3, 16, 20)
    f = tmp_path / "zc.ome.tif"
    tifffile.imwrite(f, stack, byteorder=byteorder, ome=True, metadata={"axes": "ZCYX"})
    with tifffile.TiffFile(f) as tif:
        assert tif.byteorder == byteorder
    expected = read_image(f, channel=1, plane=2)
    monkeypatch.setattr(reader, "_MEMMAP_BYTES", 0)
    calls = []
    real = np.memmap
    monkeypatch.setattr(np, "memmap", lambda *a, **k: calls.append(a) or real(*a, **k))
    img = read_image(f, channel=1, plane=2)
    assert calls, "the memory-mapped path was not taken"
    np.testing.assert_array_equal(img.data, stack[2, 1])
    np.testing.assert_array_equal(img.data, expected.data)
    assert img.dtype == "uint16" and img.saturation == 4095.0
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as ei:
        read_image(f, channel=1, plane=2)
    _expect(ei, f, "truncated")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(arrays(np.int32, st.tuples(st.integers(1, 12), st.integers(1, 12)),
              elements=st.integers(0, np.iinfo(np.int32).max)))
def test_labels_round_trip_property(tmp_path_factory, labels):
    f = tmp_path_factory.mktemp("labels") / "l.tif"
    np.testing.assert_array_equal(read_labels(write_labels(f, labels)), labels)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "A", "x/a", "y/a", "x/b"]),
                          st.sampled_from(["n", "N", "n_2", "m"]),
                          st.sampled_from([".tif", ".png", ".ome.tif"])), max_size=8))
def test_unique_names_are_unique_property(parts):
    paths = [f"{d}/{n}{s}" for d, n, s in parts]
    names = unique_names(paths)
    assert len(names) == len(paths)
    assert len({n.lower() for n in names}) == len(names)
    # A name that does not clash is left alone.
    for p, n in zip(paths, names):
        if sum(image_name(q).lower() == image_name(p).lower() for q in paths) == 1:
            assert n == image_name(p)


# ---------------------------------------------------------------------------------------------------------
# ImageJ ROI export


def _decode_roi(data: bytes) -> tuple[str, np.ndarray]:
    """Independent minimal reader of an ImageJ polygon ROI (RoiDecoder layout), for the test only."""
    import struct

    assert data[:4] == b"Iout"
    version, kind, top, left, bottom, right, n = struct.unpack(">hBxhhhhH", data[4:18])
    assert version >= 218 and kind == 0  # polygon
    xs = np.frombuffer(data, ">i2", n, 64).astype(int) + left
    ys = np.frombuffer(data, ">i2", n, 64 + 2 * n).astype(int) + top
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (left, top, right, bottom)
    h2 = struct.unpack(">i", data[60:64])[0]
    name_off, name_len = struct.unpack(">ii", data[h2 + 16:h2 + 24])
    name = data[name_off:name_off + 2 * name_len].decode("utf-16-be")
    return name, np.c_[xs, ys]


def _fill_by_centres(poly: np.ndarray, shape) -> np.ndarray:
    """ImageJ's rule: a pixel is inside a polygon when its centre is."""
    from skimage.measure import points_in_poly

    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return points_in_poly(np.c_[cc.ravel() + 0.5, rr.ravel() + 0.5], poly).reshape(shape)


def test_imagej_rois_cover_each_label_exactly(tmp_path):
    import zipfile

    from skimage.draw import disk, polygon

    labels = np.zeros((60, 80), np.int32)
    labels[disk((20, 20), 12)] = 1
    labels[5:15, 40:70] = 2
    rr, cc = polygon([40, 58, 58], [30, 30, 75])
    labels[rr, cc] = 7  # label numbers need not be consecutive
    labels[0, 79] = 3  # one pixel in the corner
    f = write_imagej_rois(tmp_path / "rois.zip", labels)
    with zipfile.ZipFile(f) as zf:
        names = zf.namelist()
        assert names == ["0001.roi", "0002.roi", "0003.roi", "0007.roi"]
        for entry in names:
            name, poly = _decode_roi(zf.read(entry))
            k = int(name)
            assert entry == f"{k:04d}.roi"
            np.testing.assert_array_equal(_fill_by_centres(poly, labels.shape), labels == k)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rois.zip"]


def test_label_outline_square_and_pieces():
    m = np.zeros((5, 6), bool)
    m[1:3, 2:5] = True  # 2 rows x 3 columns
    np.testing.assert_array_equal(label_outline(m), [[2, 1], [5, 1], [5, 3], [2, 3]])
    # Two pixels touching at a corner: the larger piece wins.
    m = np.zeros((6, 6), bool)
    m[1, 1] = True
    m[2, 2:4] = True
    np.testing.assert_array_equal(label_outline(m), [[2, 2], [4, 2], [4, 3], [2, 3]])
    # A hole is filled: the outline is the outer square.
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    m[3, 3] = False
    assert _fill_by_centres(label_outline(m), m.shape).sum() == 25
    assert label_outline(np.zeros((3, 3), bool)).shape == (0, 2)


def test_imagej_rois_on_real_masks(shared_data, tmp_path):
    """Every simple ground-truth nucleus of a BBBC039 image (4-connected, no hole) comes back pixel for pixel."""
    import zipfile

    from scipy import ndimage as ndi

    labels = read_labels(sorted((shared_data / "bbbc039" / "val" / "masks").glob("*.tif"))[0])
    boxes = ndi.find_objects(labels)
    with zipfile.ZipFile(write_imagej_rois(tmp_path / "gt.zip", labels)) as zf:
        entries = zf.namelist()
        assert len(entries) == len(np.unique(labels)) - 1
        checked = 0
        for entry in entries:
            name, poly = _decode_roi(zf.read(entry))
            k = int(name)
            box = boxes[k - 1]
            region = labels[box] == k
            if ndi.label(region)[1] == 1 and ndi.binary_fill_holes(region).sum() == region.sum():
                local = poly - [box[1].start, box[0].start]
                np.testing.assert_array_equal(_fill_by_centres(local, region.shape), region)
                checked += 1
        assert checked >= 0.9 * len(entries)


def test_permission_denied_is_an_input_error(tmp_path, monkeypatch):
    f = tmp_path / "locked.tif"
    tifffile.imwrite(f, np.zeros((4, 4), np.uint8))

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tifffile, "TiffFile", deny)  # chmod does not stop root, which CI may be
    with pytest.raises(InputError) as ei:
        read_image(f)
    _expect(ei, f, "permission denied")


def test_write_labels_crash_mid_write_keeps_old_file(tmp_path, monkeypatch):
    f = write_labels(tmp_path / "l.tif", np.ones((5, 5), np.int32))
    real = tifffile.imwrite

    def crash(path, *args, **kwargs):
        real(path, np.zeros((5, 5), np.int32))  # a complete-looking file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", crash)
    with pytest.raises(KeyboardInterrupt):
        write_labels(f, np.full((5, 5), 9, np.int32))
    monkeypatch.undo()
    np.testing.assert_array_equal(read_labels(f), np.ones((5, 5)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.tif"]


# ---------------------------------------------------------------------------------------------------------
# Data set folders


def _dataset(root: Path, names: list[str], split: str = "train") -> None:
    for sub in ("images", "masks"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(names):
        lab = np.zeros((12, 14), np.uint16)
        lab[2:6, 3:8] = k + 1
        write_image(root / split / "images" / n, (lab * 10 + 5).astype(np.uint16))
        write_labels(root / split / "masks" / n, lab, dtype="uint16")


def test_read_datasets_holds_out_every_nth_image_or_uses_val(tmp_path):
    from nucleoscope.io import LabelledImage, dataset_pairs, read_datasets

    _dataset(tmp_path / "a", [f"im{k}.tif" for k in range(5)])
    _dataset(tmp_path / "b", ["x.tif", "y.tif"])
    _dataset(tmp_path / "b", ["v.tif"], split="val")
    assert [p.name for p, _ in dataset_pairs(tmp_path / "a" / "train")] == [f"im{k}.tif" for k in range(5)]
    train, val, record = read_datasets([tmp_path / "a", str(tmp_path / "b")], holdout=3)
    assert [(t.name, t.dataset) for t in train] == [("im1.tif", "a"), ("im2.tif", "a"), ("im4.tif", "a"),
                                                      ("x.tif", "b"), ("y.tif", "b")]
    assert [(v.name, v.dataset) for v in val] == [("im0.tif", "a"), ("im3.tif", "a"), ("v.tif", "b")]
    assert record["a"]["held_out"] == ["im0.tif", "im3.tif"] and record["a"]["n_train"] == 3
    assert record["b"] == {"train": "train split", "val": "val split", "n_train": 2, "n_val": 1}
    first = train[0]
    assert isinstance(first, LabelledImage) and first.labels.dtype == np.int32 and first.image.dtype == np.float32
    image, labels, name, dataset = first  # unpacks as the 4-tuples training takes
    assert image[3, 4] == 25 and labels.max() == 2 and name == "im1.tif"


def test_read_datasets_hold_out_per_set(tmp_path):
    from nucleoscope.cli.train_segmenter import _holdout
    from nucleoscope.io import read_datasets

    _dataset(tmp_path / "a", [f"im{k}.tif" for k in range(5)])
    _dataset(tmp_path / "c", [f"c{k}.tif" for k in range(6)])
    holdout = _holdout(["2", "c=4"])
    assert holdout == {"*": 2, "c": 4}
    train, val, record = read_datasets([tmp_path / "a", tmp_path / "c"], holdout=holdout)
    assert record["a"]["held_out"] == ["im0.tif", "im2.tif", "im4.tif"] and record["a"]["val"] == "every 2th train image (sorted)"
    assert record["c"]["held_out"] == ["c0.tif", "c4.tif"] and record["c"]["n_train"] == 4
    assert len(train) == 2 + 4 and len(val) == 3 + 2
    with pytest.raises(InputError, match="nothing to train on"):
        read_datasets([tmp_path / "a"], holdout={"a": 1})
    with pytest.raises(InputError, match="SET=N"):
        _holdout(["c=x"])


def test_read_datasets_errors_name_the_file(tmp_path):
    from nucleoscope.io import read_datasets

    with pytest.raises(InputError) as ei:
        read_datasets([tmp_path])
    _expect(ei, tmp_path, "train/images")
    _dataset(tmp_path / "c", ["a.tif", "b.tif"])
    (tmp_path / "c" / "train" / "masks" / "b.tif").unlink()
    with pytest.raises(InputError) as ei:
        read_datasets([tmp_path / "c"])
    _expect(ei, tmp_path / "c" / "train" / "images" / "b.tif", "mask")
