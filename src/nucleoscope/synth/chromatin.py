"""Chromatin conditions: nuclei whose heterochromatin differs by a known amount between classes.

One chromatin parameter shifts between classes while every nuisance parameter (size, shape, brightness,
euchromatin texture, blur, noise) is drawn from the same distribution in every class (or, with
``paired=True``, is identical for crop ``k`` of every class). The exact HC/EC ratio of each nucleus is part
of the truth.

HC/EC definition (shared with ``nucleoscope.features``): the heterochromatin pixels are those where the
rendered foci field (each focus a Gaussian of peak 1) is >= 0.5 inside the nucleus; HC = summed intensity
of those pixels, EC = total nucleus intensity - HC, both on the noise-free image ``clean`` (after PSF,
background included) over the nucleus label; the ``*_signal`` columns repeat it on ``clean`` minus the
background level (what a background-subtracted measurement should recover).
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd

from .._errors import InputError
from ._field import hc_ec, render_nuclei, with_spacing
from ._nucleus import Chromatin, random_geometry
from ._optics import DType, as_rng, camera, full_scale, psf_blur
from ._sample import SynthSample
from .nuclei import nuclei_field

__all__ = ["chromatin_crops", "chromatin_field", "PARAMETERS"]

Parameter = Literal["hc_fraction", "foci_density", "compaction"]
PARAMETERS = ("hc_fraction", "foci_density", "compaction")


def _chromatin(parameter: str, value: float, *, area: float, hc_fraction: float, foci_density: float,
               hc_contrast: float, **nuisance) -> Chromatin:
    """Per-nucleus chromatin with ``parameter`` set to ``value`` and the others at their base values.

    ``compaction`` c packs the same heterochromatin into 1/c of the area at c times the contrast, so the
    integrated focus signal is unchanged; ``foci_density`` is foci per 1000 px^2 of nucleus area at a
    fixed HC area fraction (more, smaller foci).
    """
    frac, dens, contrast = hc_fraction, foci_density, hc_contrast
    if parameter == "hc_fraction":
        frac = value
    elif parameter == "foci_density":
        dens = value
    elif parameter == "compaction":
        frac, contrast = hc_fraction / value, hc_contrast * value
    n_foci = max(1, int(round(dens * area / 1000.0)))
    return Chromatin(hc_fraction=frac, n_foci=n_foci, hc_contrast=contrast, **nuisance)


def chromatin_crops(
    n_per_class: int = 50,
    *,
    rng: int | np.random.Generator | None = None,
    parameter: Parameter = "hc_fraction",
    values: Sequence[float] = (0.08, 0.12),
    class_names: Sequence[str] | None = None,
    spread: float = 0.15,
    paired: bool = False,
    size: int = 96,
    diameter: tuple[float, float] = (34.0, 46.0),
    aspect: float = 0.65,
    irregularity: float = 0.05,
    hc_fraction: float = 0.1,
    foci_density: float = 8.0,
    hc_contrast: float = 0.6,
    texture: float = 0.1,
    brightness_cv: float = 0.25,
    psf_sigma: tuple[float, float] = (0.7, 1.3),
    background: tuple[float, float] = (0.01, 0.05),
    signal: tuple[float, float] = (0.1, 0.3),
    photons: tuple[float, float] = (1000.0, 10000.0),
    read_noise: float = 0.001,
    dtype: DType = "uint16",
    bit_depth: int = 12,
    spacing: float | None = None,
) -> SynthSample:
    """Single-nucleus crops in classes that differ in one chromatin parameter.

    Parameters
    ----------
    n_per_class : int
        Crops per class.
    rng : int, Generator or None
        Seed or generator.
    parameter : {"hc_fraction", "foci_density", "compaction"}
        What shifts between classes: heterochromatin area fraction; foci per 1000 px^2 of nucleus (same HC
        fraction); compaction factor (HC area / c, contrast x c, same integrated HC signal).
    values : sequence of float
        The parameter's value in each class (class ``i`` gets ``values[i]``).
    class_names : sequence of str, optional
        Names of the classes (default ``"c0"``, ``"c1"``, ...).
    spread : float
        Per-nucleus relative spread of the class parameter: value x U(1 - spread, 1 + spread).
    paired : bool
        Use the same nuisance draws (and texture noise) for crop ``k`` of every class.
    size : int
        Crop side (px); the nucleus is centred, whole and clear of the border.
    diameter, aspect, irregularity
        Outline: equivalent diameter range (px), smallest minor/major ratio, boundary harmonic amplitude.
    hc_fraction, foci_density, hc_contrast, texture, brightness_cv
        Base chromatin values (the shifted ``parameter`` overrides its own).
    psf_sigma, background, signal, photons : (low, high)
        Per-crop uniform ranges (photons log-uniform), as in ``nuclei_field``.
    read_noise : float
        Read noise SD as a fraction of full scale.
    dtype, bit_depth
        Output type, as in ``nuclei_field``.
    spacing : float, optional
        Pixel size in µm; when given, ``objects`` also has ``*_um`` lengths and ``*_um2`` areas and
        ``params["spacing"]`` records it (the rendering itself is in px).

    Returns
    -------
    SynthSample
        ``image``, ``clean``, ``hc_mask`` of shape (N, size, size) with N = n_per_class x len(values), class
        after class; ``labels`` (N, size, size) int32 with the nucleus = 1 in each crop; ``objects`` one row
        per crop: crop, class, class_name, value (class value), value_nucleus (after spread), label, area,
        diameter, hc_fraction (actual HC px / nucleus px), n_foci, hc_contrast, brightness, hc_sum, ec_sum,
        hc_ec_ratio, and hc_sum_signal, ec_sum_signal, hc_ec_ratio_signal (the same on ``clean`` minus the
        crop's constant background).
    """
    rng = as_rng(rng)
    if parameter not in PARAMETERS:
        raise InputError(f"parameter must be one of {PARAMETERS}, got {parameter!r}")
    values = [float(v) for v in values]
    if len(values) < 1 or min(values) <= 0:
        raise InputError(f"values must be positive, one per class, got {values}")
    if class_names is None:
        class_names = [f"c{i}" for i in range(len(values))]
    if len(class_names) != len(values):
        raise InputError(f"{len(class_names)} class_names for {len(values)} values")
    if diameter[1] * (1 + 2.6 * irregularity) / np.sqrt(aspect) > 0.95 * size:  # largest outline extent
        raise InputError(f"nuclei up to {diameter[1]} px (aspect {aspect}) do not fit a {size} px crop")
    fs = full_scale(dtype, bit_depth)
    base = int(rng.integers(2**63))
    n = n_per_class * len(values)
    image = np.zeros((n, size, size), dtype)
    clean = np.zeros((n, size, size), np.float32)
    labels = np.zeros((n, size, size), np.int32)
    hc_mask = np.zeros((n, size, size), bool)
    rows = []
    for c, value in enumerate(values):
        for k in range(n_per_class):
            i = c * n_per_class + k
            # nuisance and texture from a per-crop stream: shared by crop k of every class when paired
            r = np.random.default_rng([base, k] if paired else [base, c, k])
            g = random_geometry(1, r, diameter=diameter, aspect=aspect, irregularity=irregularity)
            g.cy[:] = size / 2 - 0.5 + r.uniform(-1, 1)
            g.cx[:] = size / 2 - 0.5 + r.uniform(-1, 1)
            nuisance = dict(
                brightness=float(r.lognormal(0.0, brightness_cv)),
                ec_texture=texture * r.uniform(0.7, 1.3),
                ec_scale=r.uniform(0.15, 0.4),
                edge_drop=r.uniform(0.0, 0.3),
            )
            optics = dict(
                psf=r.uniform(*psf_sigma), bg=r.uniform(*background), sig=r.uniform(*signal),
                photons=float(np.exp(r.uniform(*np.log(photons)))),
            )
            v = value * r.uniform(1 - spread, 1 + spread)
            area = float(np.pi * g.a[0] * g.b[0])
            chroma = _chromatin(parameter, v, area=area, hc_fraction=hc_fraction, foci_density=foci_density,
                                hc_contrast=hc_contrast, **nuisance)
            # the class-dependent draws (foci positions) come last, from their own stream, so that the
            # nuisance above is the same whatever the class value is
            fr = np.random.default_rng([base, k, 1 + c] if paired else [base, c, k, 1])
            sharp, lab, hc, _ = render_nuclei(g, [chroma], (size, size), fr)
            cl = psf_blur((sharp * optics["sig"] + optics["bg"]) * np.float32(fs), optics["psf"]).astype(np.float32)
            image[i] = camera(cl, fr, dtype=dtype, fs=fs, photons_full_scale=optics["photons"],
                              read_noise=read_noise * fs)
            clean[i], labels[i], hc_mask[i] = cl, lab, hc
            hs, es, ratio = hc_ec(lab, cl, hc, 1)
            hs_s, es_s, ratio_s = hc_ec(lab, cl - np.float32(optics["bg"] * fs), hc, 1)
            a = int((lab == 1).sum())
            rows.append(dict(
                crop=i, **{"class": c}, class_name=class_names[c], value=value, value_nucleus=v, label=1,
                area=a, diameter=2 * np.sqrt(g.a[0] * g.b[0]), hc_fraction=float(hc.sum()) / a,
                n_foci=chroma.n_foci, hc_contrast=chroma.hc_contrast, brightness=chroma.brightness,
                hc_sum=hs[0], ec_sum=es[0], hc_ec_ratio=ratio[0],
                hc_sum_signal=hs_s[0], ec_sum_signal=es_s[0], hc_ec_ratio_signal=ratio_s[0],
            ))
    params = dict(parameter=parameter, values=values, class_names=list(class_names), spread=spread,
                  paired=paired, size=size, dtype=dtype)
    objects = with_spacing(pd.DataFrame(rows), spacing, params)
    return SynthSample(image=image, labels=labels, objects=objects, clean=clean, hc_mask=hc_mask,
                       params=params)


def chromatin_field(
    shape: tuple[int, int] = (512, 512),
    *,
    rng: int | np.random.Generator | None = None,
    parameter: Parameter = "hc_fraction",
    value: float = 0.1,
    hc_fraction: float = 0.1,
    foci_density: float = 8.0,
    hc_contrast: float = 0.6,
    **options,
) -> SynthSample:
    """A ``nuclei_field`` whose nuclei share one chromatin condition (``parameter`` = ``value``).

    ``parameter`` and the base values mean the same as in ``chromatin_crops``; ``foci_density`` becomes the
    mean foci count per nucleus from the field's mean nucleus area. Other ``options`` go to
    ``nuclei_field`` (artifacts default to none here). The truth table has hc_sum, ec_sum and hc_ec_ratio.
    """
    rng = as_rng(rng)
    if parameter not in PARAMETERS:
        raise InputError(f"parameter must be one of {PARAMETERS}, got {parameter!r}")
    frac, dens, contrast = hc_fraction, foci_density, hc_contrast
    if parameter == "hc_fraction":
        frac = value
    elif parameter == "foci_density":
        dens = value
    else:
        frac, contrast = hc_fraction / value, hc_contrast * value
    diameter = options.pop("diameter", None) or (24.0, 36.0)
    area = np.pi / 4 * (0.5 * (diameter[0] + diameter[1])) ** 2
    options.setdefault("artifacts", 0)
    s = nuclei_field(shape, rng=rng, diameter=diameter, hc_fraction=frac, hc_contrast=contrast,
                     foci=max(0.0, dens * area / 1000.0 - 1), **options)
    s.params.update(parameter=parameter, value=value)
    return s
