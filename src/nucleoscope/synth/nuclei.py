"""Wide-field nuclei fields with exact truth: crowding, touching clumps, artifacts, blur and noise."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential
from skimage.transform import resize

from .._errors import InputError
from ._artifacts import render_artifacts
from ._field import add_hc_ec, object_table, render_nuclei, with_spacing
from ._nucleus import Chromatin, Geometry, place, random_geometry
from ._optics import DType, as_rng, camera, full_scale, illumination, psf_blur, uniform
from ._sample import SynthSample

__all__ = ["nuclei_field", "iter_nuclei_fields", "ARTIFACT_KINDS"]

log = logging.getLogger(__name__)

ARTIFACT_KINDS = ("polygons", "fibres", "debris", "blobs")
# mean count per 512x512 field of each artifact kind at artifacts=1.0
_ARTIFACT_RATES = {"polygons": 1.0, "fibres": 1.0, "debris": 5.0, "blobs": 1.5}


def _draw_scale(rng: np.random.Generator, scale_range: tuple[float, float]) -> float:
    """Typical nucleus diameter of one image: mostly the common 18-55 px, sometimes anywhere in range."""
    lo, hi = scale_range
    if rng.random() < 0.7:
        lo, hi = max(lo, 18.0), min(hi, 55.0)
        if lo >= hi:
            lo, hi = scale_range
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _artifact_counts(rng, artifacts, shape) -> dict[str, int]:
    if isinstance(artifacts, Mapping):
        bad = set(artifacts) - set(ARTIFACT_KINDS)
        if bad:
            raise InputError(f"unknown artifact kinds {sorted(bad)}; choose from {ARTIFACT_KINDS}")
        return {k: int(artifacts.get(k, 0)) for k in ARTIFACT_KINDS}
    if artifacts is None:
        level = 0.0 if rng.random() < 0.2 else rng.uniform(0.2, 2.0)
    else:
        level = float(artifacts)
    area = shape[0] * shape[1] / 512**2
    return {k: int(rng.poisson(level * rate * area * rng.uniform(0, 2))) for k, rate in _ARTIFACT_RATES.items()}


def _chromatin(rng: np.random.Generator, n: int, p: dict) -> list[Chromatin]:
    """Per-nucleus brightness and chromatin texture, drawn around the image-level values in ``p``."""
    return [
        Chromatin(
            brightness=float(rng.lognormal(0.0, p["brightness_cv"])),
            ec_texture=p["texture"] * rng.uniform(0.7, 1.3),
            ec_scale=rng.uniform(0.15, 0.4),
            edge_drop=rng.uniform(0.0, 0.3),
            hc_fraction=p["hc_fraction"] * rng.uniform(0.5, 1.5),
            n_foci=int(1 + rng.poisson(p["foci"])),
            hc_contrast=p["hc_contrast"] * rng.uniform(0.7, 1.3),
        )
        for _ in range(n)
    ]


def _condense(rng: np.random.Generator, g: Geometry, chroma: list[Chromatin], fraction: float) -> np.ndarray:
    """Make a few nuclei condensed (mitotic / apoptotic-like), in place: smaller, much brighter, coarse
    texture. They were placed at full size, so shrinking them never creates an overlap.

    Returns
    -------
    ndarray of bool, (n,)
        Which nuclei are condensed.
    """
    condensed = rng.random(len(g)) < fraction
    for i in np.flatnonzero(condensed):
        shrink = rng.uniform(0.55, 0.8)
        g.a[i] *= shrink
        g.b[i] *= shrink
        c = chroma[i]
        c.brightness *= rng.uniform(1.8, 3.0)
        c.ec_texture *= 2.0
        c.hc_contrast *= 1.5
    return condensed


def _add_haze(clean: np.ndarray, haze: float, d_mean: float) -> None:
    """Add, in place, the out-of-focus light of a wide-field microscope: a broad glow around bright
    structures (width ~0.6 ``d_mean`` px) whose mean is ``haze`` x the mean of ``clean`` (Y, X) float32."""
    # blurred at 1/4 resolution: a filter of this width on the full image would cost more than the field
    small = ndi.zoom(clean, 0.25, order=1, grid_mode=True, mode="grid-constant")
    small = ndi.gaussian_filter(small, max(1.0, 0.6 * d_mean / 4), mode="constant")
    glow = resize(small, clean.shape, order=1, mode="edge", anti_aliasing=False).astype(np.float32)
    clean += np.float32(haze) * glow * np.float32(clean.mean() / max(float(glow.mean()), 1e-9))


def _sequential(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rendered ids -> labels 1..N (int32, (Y, X)) and, per label, the index (N,) of its nucleus in the
    geometry (nuclei that no pixel shows get no label)."""
    labels, fw, _ = relabel_sequential(raw)
    labels = labels.astype(np.int32, copy=False)
    index = np.asarray(fw.in_values, dtype=np.int64)
    index = index[index > 0] - 1
    return labels, index


def nuclei_field(
    shape: tuple[int, int] = (512, 512),
    *,
    rng: int | np.random.Generator | None = None,
    diameter: tuple[float, float] | None = None,
    scale_range: tuple[float, float] = (8.0, 150.0),
    coverage: float | None = None,
    clump_fraction: float | None = None,
    overlap: float | None = None,
    aspect: float | None = None,
    irregularity: float | None = None,
    brightness_cv: float | None = None,
    texture: float | None = None,
    hc_fraction: float | None = None,
    hc_contrast: float | None = None,
    foci: float | None = None,
    artifacts: float | Mapping[str, int] | None = None,
    condensed_fraction: float | None = None,
    haze: float | None = None,
    illumination_strength: float | None = None,
    psf_sigma: float | None = None,
    background: float | None = None,
    signal: float | None = None,
    photons: float | None = None,
    read_noise: float | None = None,
    dtype: DType = "uint16",
    bit_depth: int = 12,
    max_nuclei: int = 4000,
    spacing: float | None = None,
) -> SynthSample:
    """A wide-field fluorescence image of nuclei (Hoechst/DAPI-like) with its exact truth.

    Every option left as ``None`` is drawn from ``rng`` per image, so repeated calls give varied training
    images; pass a value to fix it. Sizes are in pixels.

    Parameters
    ----------
    shape : (int, int)
        Image size (Y, X) in px.
    rng : int, numpy.random.Generator or None
        Seed or generator; the same seed gives the same sample.
    diameter : (float, float), optional
        Range of nucleus equivalent diameters (px) in this image. Default: a typical diameter ``D`` is
        drawn log-uniformly (70 % of images in 18-55 px, the rest in all of ``scale_range``) and the
        range is ``(0.75 D, 1.3 D)``.
    scale_range : (float, float)
        Bounds (px) for the per-image typical diameter drawn when ``diameter`` is None (8-150 by default,
        so a segmenter trained on the stream learns scale robustness).
    coverage : float, optional
        Fraction of the image area covered by nuclei (default U(0.08, 0.45)).
    clump_fraction : float, optional
        Probability that a nucleus is placed touching or overlapping another (default U(0, 0.5)).
    overlap : float, optional
        Largest relative overlap of clumped neighbours: centre distance >= (1 - overlap) x the sum of
        their radii along the joining line (default U(0, 0.3)). At 0 clumped outlines still overlap by up
        to 10 % so that they meet on the pixel grid; whether two labels touch is in ``objects``.
    aspect : float, optional
        Smallest minor/major axis ratio (default U(0.35, 0.75)).
    irregularity : float, optional
        Relative amplitude of the outline's low harmonics (default U(0, 0.08)).
    brightness_cv : float, optional
        Log-normal spread of per-nucleus brightness (default U(0.1, 0.45)).
    texture : float, optional
        Relative SD of the smooth euchromatin texture (default U(0.03, 0.2)).
    hc_fraction : float, optional
        Mean heterochromatin area fraction per nucleus (default U(0.02, 0.2)).
    hc_contrast : float, optional
        Heterochromatin focus peak over euchromatin, relative (default U(0.1, 1.0)).
    foci : float, optional
        Mean number of heterochromatin foci per nucleus (default U(2, 20)).
    artifacts : float or dict, optional
        Artifact level (mean counts scale with it; 0 = none) or exact counts per kind
        ``{"polygons": n, "fibres": n, "debris": n, "blobs": n}``. Default: none in 20 % of images,
        else a level U(0.2, 2).
    condensed_fraction : float, optional
        Fraction of condensed (mitotic/apoptotic-like) nuclei: 0.55-0.8 x smaller, 1.8-3 x brighter,
        coarser texture (default U(0, 0.04)); flagged in ``objects["condensed"]``.
    haze : float, optional
        Out-of-focus glow: a broad blur of the nuclei (width ~0.6 D) whose mean is ``haze`` x theirs is
        added (default U(0, 0.4); 0 = none). It raises the background near crowded nuclei.
    illumination_strength : float, optional
        Relative illumination change across the field (default U(0, 0.4)).
    psf_sigma : float, optional
        Gaussian PSF sigma in px (default U(0.6, 1.6) x sqrt(max(1, D / 40))).
    background, signal : float, optional
        Background level and mean nucleus level above it, as fractions of full scale (defaults
        log-U(0.004, 0.12) and U(0.05, 0.3)).
    photons : float, optional
        Photo-electrons at full scale; sets the shot noise (default log-uniform 600-30000).
    read_noise : float, optional
        Gaussian read noise SD as a fraction of full scale (default U(0.0003, 0.004)).
    dtype : {"uint16", "uint8", "float32"}
        Output type. Full scale is 2**bit_depth - 1 for uint16, 255 for uint8 and 1.0 for float32.
    bit_depth : int
        Bits used by uint16 output (12 as on most scientific cameras).
    max_nuclei : int
        Cap on the number of nuclei attempted.
    spacing : float, optional
        Pixel size in µm; when given, ``objects`` also has ``*_um`` lengths and ``*_um2`` areas and
        ``params["spacing"]`` records it (the rendering itself is in px).

    Returns
    -------
    SynthSample
        ``image`` (Y, X) ``dtype``; ``labels`` (Y, X) int32 1..N; ``clean`` (Y, X) float32 noise-free
        image in output units; ``artifact_mask`` (Y, X) bool; ``hc_mask`` (Y, X) bool; ``objects`` with
        columns label, centroid_y/x (of the label), center_y/x (rendered centre), area (label px),
        diameter / major_axis / minor_axis (rendered outline, px), aspect, angle (rad, major axis from +x
        towards +y), brightness (relative), hc_fraction (HC px / label px), n_foci, hc_contrast, touching,
        n_touching (labels sharing an edge), overlapping (rendered outlines overlap), at_border, hc_sum,
        ec_sum, hc_ec_ratio (exact HC/EC truth on ``clean``, see ``synth.hc_ec``), the same with a
        ``_signal`` suffix on ``clean`` minus its background, condensed; and
        ``params``, the image-level values used.

    Examples
    --------
    >>> s = nuclei_field((256, 256), rng=0, diameter=(20, 30), artifacts=0)
    >>> str(s.image.dtype), int(s.labels.max()) == len(s.objects)
    ('uint16', True)
    """
    rng = as_rng(rng)
    if len(shape) != 2 or min(shape) < 8:
        raise InputError(f"shape must be (Y, X) with both >= 8 px, got {shape}")
    shape = (int(shape[0]), int(shape[1]))
    fs = full_scale(dtype, bit_depth)
    if diameter is None:
        d0 = _draw_scale(rng, scale_range)
        diameter = (0.75 * d0, 1.3 * d0)
    if not 0 < diameter[0] <= diameter[1]:
        raise InputError(f"diameter must be (low, high) with 0 < low <= high, got {diameter}")
    d_mean = 0.5 * (diameter[0] + diameter[1])
    p = {
        "diameter": tuple(float(v) for v in diameter),
        "coverage": uniform(rng, coverage, 0.08, 0.45),
        "clump_fraction": uniform(rng, clump_fraction, 0.0, 0.5),
        "overlap": uniform(rng, overlap, 0.0, 0.3),
        "aspect": uniform(rng, aspect, 0.35, 0.75),
        "irregularity": uniform(rng, irregularity, 0.0, 0.08),
        "brightness_cv": uniform(rng, brightness_cv, 0.1, 0.45),
        "texture": uniform(rng, texture, 0.03, 0.2),
        "hc_fraction": uniform(rng, hc_fraction, 0.02, 0.2),
        "hc_contrast": uniform(rng, hc_contrast, 0.1, 1.0),
        "foci": uniform(rng, foci, 2.0, 20.0),
        "illumination_strength": uniform(rng, illumination_strength, 0.0, 0.4),
        # larger nuclei in px mean a higher magnification, where the PSF spans more px
        "psf_sigma": uniform(rng, psf_sigma, 0.6, 1.6) * (
            1.0 if psf_sigma is not None else np.sqrt(max(1.0, d_mean / 40))
        ),
        "background": uniform(rng, background, 0.004, 0.12, log=True),
        "signal": uniform(rng, signal, 0.05, 0.3),
        "photons": uniform(rng, photons, 600.0, 30000.0, log=True),
        "read_noise": uniform(rng, read_noise, 0.0003, 0.004),
        "dtype": dtype,
        "bit_depth": bit_depth if dtype == "uint16" else None,
        "haze": uniform(rng, haze, 0.0, 0.4),
        "condensed_fraction": uniform(rng, condensed_fraction, 0.0, 0.04),
    }
    if not 0 <= p["overlap"] < 0.6:
        raise InputError(f"overlap must be in [0, 0.6), got {p['overlap']}")
    # how many nuclei fill the requested coverage (outline area ~ pi/4 d^2)
    mean_area = np.pi / 4 * (diameter[0] ** 2 + diameter[0] * diameter[1] + diameter[1] ** 2) / 3
    n_try = int(min(max_nuclei, max(1, round(p["coverage"] * shape[0] * shape[1] / mean_area))))
    g = random_geometry(n_try, rng, diameter=diameter, aspect=p["aspect"], irregularity=p["irregularity"])
    g = place(g, shape, rng, clump_fraction=p["clump_fraction"], overlap=p["overlap"])
    chroma = _chromatin(rng, len(g), p)
    condensed = _condense(rng, g, chroma, p["condensed_fraction"])
    # one texture field for the image: a filter per nucleus costs more than the rest of the field
    ec_field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), max(0.7, 0.25 * d_mean / 2))
    ec_field /= max(float(ec_field.std()), 1e-6)
    sharp, raw, hc_mask, covered = render_nuclei(g, chroma, shape, rng, ec_field)
    labels, index = _sequential(raw)
    counts = _artifact_counts(rng, artifacts, shape)
    art, art_mask = render_artifacts(shape, rng, diameter=d_mean, brightness=1.0, counts=counts)
    p["artifact_counts"] = counts
    illum = illumination(shape, rng, p["illumination_strength"])
    clean = sharp + art
    if p["haze"] > 0:
        _add_haze(clean, p["haze"], d_mean)
    clean = clean * np.float32(p["signal"] * fs) + np.float32(p["background"] * fs)
    clean *= illum
    clean = psf_blur(clean, p["psf_sigma"]).astype(np.float32)
    image = camera(clean, rng, dtype=dtype, fs=fs, photons_full_scale=p["photons"], read_noise=p["read_noise"] * fs)
    objects = object_table(labels, g, chroma, index=index, hc_mask=hc_mask, covered=covered)
    background = psf_blur(np.float32(p["background"] * fs) * illum, p["psf_sigma"])
    objects = add_hc_ec(objects, labels, clean, background, hc_mask)
    objects["condensed"] = condensed[index]
    objects = with_spacing(objects, spacing, p)
    log.debug("nuclei_field %s: %d nuclei, artifacts %s", shape, len(objects), counts)
    return SynthSample(
        image=image,
        labels=labels,
        objects=objects,
        clean=clean,
        artifact_mask=art_mask,
        hc_mask=hc_mask,
        params=p,
    )


def iter_nuclei_fields(
    rng: int | np.random.Generator | None = None,
    shape: tuple[int, int] | None = (512, 512),
    *,
    n: int | None = None,
    size_range: tuple[int, int] = (256, 640),
    **options,
) -> Iterator[SynthSample]:
    """Endless (or ``n``-long) stream of varied ``nuclei_field`` samples for on-the-fly training.

    Parameters
    ----------
    rng : int, Generator or None
        One generator drives the whole stream, so a seed reproduces it.
    shape : (int, int) or None
        Size of every image; None draws each side from ``size_range`` (px) per image.
    n : int, optional
        Number of samples (None = endless).
    **options
        Passed to ``nuclei_field`` (fixed values; the rest stay random per image).
    """
    rng = as_rng(rng)
    k = 0
    while n is None or k < n:
        s = shape if shape is not None else tuple(int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
        yield nuclei_field(s, rng=rng, **options)
        k += 1
