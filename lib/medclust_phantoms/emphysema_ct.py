"""Emphysema chest-CT phantom: inspiratory chest CT volumes of smokers whose low-attenuation
pattern follows the six Fleischner Society emphysema subtypes (the cohort of Xie, Jacobs and
van Ginneken, "Deep clustering activation maps for emphysema subtyping", study 03,
/work/shared/papers/002_25c1ddc56cc6b442.txt; there 2000 training and 500 test COPDGene scans
visually scored after Lynch et al., Radiology 277:192-205, 2015).

Each case is a 3D volume (array axes x, y, z: x from the patient's right to left, y from
anterior to posterior, z from inferior to superior, so the upper lobes are at high z) stored
as int16 Hounsfield units. At the demo scale it is coarse (48^3 voxels of 7 mm, a ~34 cm
field of view covering the whole lungs). The body scales with the field of view while the
chest-wall layers and the lesions are sized in mm, so a finer ``spacing`` with a larger
``shape`` gives the same chest with finer detail. It holds

* air outside the body (-1000 HU); a body outline (irregular ellipse) with a subcutaneous fat
  rim (~-100 HU, 6-22 mm), a chest wall of muscle (~45 HU, 12-17 mm) with oblique ribs, the
  spine (vertebral body, canal, posterior elements) and upper-abdominal soft tissue below
  the diaphragm (with a gastric air bubble in some cases);
* a mediastinum between the lungs (soft tissue ~40 HU, anterior fat), the heart resting on
  the diaphragm, ascending/descending aorta with the arch, and the air-filled trachea and
  main bronchi (not part of the lungs);
* two lungs: domed apices in a rib cage that narrows upwards, diaphragmatic domes (the right
  higher) with deep costophrenic recesses, the medial borders set by the mediastinum, heart,
  aorta and spine, and a smooth per-case deformation. Parenchyma ~-850 HU with a
  gravity-dependent gradient (posterior denser, supine scan) and slow regional variation;
  vessel trees (soft-tissue tubes, ~40 HU) branch from each hilum and taper towards the
  periphery.

Rendering: the case is built on a grid ``supersample`` times finer than the output, then
averaged down (partial volume of small vessels and lesions), blurred slightly (Gaussian,
sigma 1-2.5 mm) and given spatially correlated Gaussian scanner noise (per-case sigma drawn
from ``noise_hu``). Emphysematous tissue is nearly air (-992..-978 HU), so it falls below the
-950 HU low-attenuation threshold once a voxel is mostly destroyed.

Ground truth. ``clinical.csv`` ``subtype`` is one of :data:`SUBTYPES` (``subtype_id`` 0-5),
with class frequencies roughly like the visual scores of smokers in COPDGene (about a third
without visible emphysema and fewer cases at each higher grade; approximate, set by
``subtype_fractions``); every class is present in each split when it holds at least six
cases. Each case draws a latent severity ``subtype_id + N(0, severity_sd)`` (kept within
0.9 of its class), so neighbouring classes overlap; the severity sets the extent
(:func:`extent_for_severity`), lesion size, upper-zone weighting, panlobular share and
hyperexpansion. Emphysema fraction of the lung (labelmap) at the defaults, median and
range, and what the pattern looks like:

=====================  =================  ==================================================
absent                 0                  no emphysema at all
trace                  0.3% (0.07-0.9%)   a few small centrilobular lucencies, strongly
                                          upper-zone predominant
mild                   1.8% (0.2-7%)      scattered small centrilobular lucencies,
                                          upper-lobe predominant
moderate               10% (3-17%)        many small lucencies, upper-lobe predominant
confluent              24% (12-34%)       larger lucencies coalescing into regions (30% of
                                          the upper half), slight hyperexpansion
advanced_destructive   38% (29-44%)       panlobular destruction of large regions, less
                                          zonal, hyperexpanded lungs (low flat diaphragm,
                                          barrel chest, narrow heart), pruned and distorted
                                          vessels
=====================  =================  ==================================================

Lesions are blobs grown around random seeds (seed density ``exp(g * (h - 1))`` at relative
lung height ``h``, ``g`` ~3.5 for the centrilobular classes, falling to ~1.3 for advanced
destructive) with the threshold set so that the lesions fill the case's target extent: as
the extent rises the blobs merge, which is what makes confluent emphysema confluent.
Independently of the subtype, about 30% of the cases with emphysema also have paraseptal
(subpleural) lesions (0.3-1.2% of the lung, seeded in the outer 7 mm of the lung,
upper-zone weighted; ``paraseptal`` column), the second cluster the paper's activation maps
show. Case ``i`` has the same anatomy and nuisance draws whatever its subtype
(:func:`make_case`), only the disease differs.

Outputs per case: ``image`` (int16 HU), ``mask`` (uint8, 1 = lung: both lungs with their
vessels and emphysema, not the trachea or main bronchi; a coarse voxel is lung when at least
half of it is; the two largest connected components) and ``labelmap`` (uint8 emphysema map,
:data:`LABELS`: 0 no emphysema, 1 centrilobular, 2 panlobular, 3 paraseptal; a voxel is
emphysematous when destroyed lung fills at least half of it and at least 3/4 of it is lung,
so pleural partial-volume voxels whose attenuation cannot show the destruction stay 0;
always inside the mask). ``clinical.csv`` holds ``case_id``, ``subtype``, ``subtype_id``,
``split`` (train/test), ``severity`` (the latent severity), ``laa950`` (percentage of mask
voxels below -950 HU in the written image: the standard densitometric emphysema index,
which counts noise and misses partial-volume lesions; medians at the defaults 0.02, 0.2, 1,
5, 12 and 26% from absent to advanced destructive), ``emphysema_fraction`` (fraction 0-1 of
mask voxels with a non-zero labelmap), ``paraseptal`` (0/1), ``lung_volume_ml`` (from the
mask) and the nuisance variables ``age``, ``sex`` and ``noise_hu`` (the case's scanner noise
sigma), drawn independently of the subtype.

Generation is seeded and bit-reproducible: case ``i`` draws from its own
``np.random.SeedSequence(seed).spawn(n_train + n_test)[i]`` stream (split into design,
anatomy, lesion and rendering sub-streams), the subtype assignment from
``SeedSequence([seed, 0xE3F])``, and everything is cast to integers before it is written.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from medclust.cohort import CaseData, write_cohort
from medclust_phantoms.exact import cross, dot, norm
from medclust_phantoms.params import fail, integer, merged, number, numbers

log = logging.getLogger(__name__)

NAME = "emphysema_ct"

SUBTYPES: tuple[str, ...] = (
    "absent",
    "trace",
    "mild",
    "moderate",
    "confluent",
    "advanced_destructive",
)
SPLITS: tuple[str, ...] = ("train", "test")
LABELS: dict[int, str] = {0: "no emphysema", 1: "centrilobular", 2: "panlobular", 3: "paraseptal"}

DEFAULTS: dict = {
    "seed": 0,
    "n_train": 150,  # paper: 2000 COPDGene scans
    "n_test": 60,  # paper: 500
    "shape": (48, 48, 48),  # voxels x, y, z
    "spacing": (7.0, 7.0, 7.0),  # mm (paper: full-resolution inspiratory CT)
    # share of each subtype, absent .. advanced_destructive (roughly a COPDGene smoker cohort)
    "subtype_fractions": (0.32, 0.18, 0.22, 0.14, 0.08, 0.06),
    "severity_sd": 0.35,  # jitter of the latent severity in class units (class overlap)
    "noise_hu": (20.0, 35.0),  # range of the per-case scanner noise sigma (HU)
    "supersample": 2,  # render on a grid this many times finer, then average down
}

# latent severity -> target emphysema extent (fraction of the lung), log-linear in between
_SEVERITY_ANCHORS = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
_EXTENT_ANCHORS = np.array([0.0008, 0.0025, 0.028, 0.14, 0.25, 0.45, 0.6])
_PARASEPTAL_PROB = 0.3
_PARASEPTAL_DEPTH_MM = 7.0

_HU_AIR = -1000.0
_HU_FAT = -100.0
_HU_MUSCLE = 45.0
_HU_SOFT = 40.0
_HU_ABDOMEN = 50.0
_HU_BLOOD = 40.0
_HU_BONE = 350.0
_HU_RIB = 600.0
_HU_CANAL = 15.0
_HU_MED_FAT = -80.0


# --------------------------------------------------------------------------- parameters


def validate_params(params: dict) -> dict:
    """Merge ``params`` into :data:`DEFAULTS` and check every value; raise ``ValueError`` (or
    ``TypeError`` for an unknown name) naming the offending parameter."""
    p = merged(NAME, DEFAULTS, params)
    out = {
        "seed": integer(NAME, p, "seed", 0),
        "n_train": integer(NAME, p, "n_train", 1),
        "n_test": integer(NAME, p, "n_test", 0),
        "shape": numbers(NAME, p, "shape", 3, int, 1),
        "spacing": numbers(NAME, p, "spacing", 3, float, 0.0),
        "subtype_fractions": numbers(NAME, p, "subtype_fractions", len(SUBTYPES), float, 0.0),
        "severity_sd": number(NAME, p, "severity_sd", 0.0, 1.5),
        "noise_hu": numbers(NAME, p, "noise_hu", 2, float, 0.0),
        "supersample": integer(NAME, p, "supersample", 1),
    }
    if not 24 <= min(out["shape"]) <= max(out["shape"]) <= 512:
        raise fail(NAME, "shape", "must be 3 integers between 24 and 512", p["shape"])
    if not 0.0 < min(out["spacing"]) <= max(out["spacing"]) <= 20.0:
        raise fail(NAME, "spacing", "must be 3 numbers in (0, 20] mm", p["spacing"])
    if sum(out["subtype_fractions"]) <= 0:
        raise fail(NAME, "subtype_fractions", "must have a positive sum", p["subtype_fractions"])
    lo, hi = out["noise_hu"]
    if not lo <= hi <= 200.0:
        raise fail(NAME, "noise_hu", "must be (low, high) with 0 <= low <= high <= 200", (lo, hi))
    if out["supersample"] > 4:
        raise fail(NAME, "supersample", "must be an integer in [1, 4]", p["supersample"])
    return out


# --------------------------------------------------------------------------- subtypes


def subtype_counts(
    n: int, fractions: Sequence[float] = DEFAULTS["subtype_fractions"]
) -> tuple[int, ...]:
    """Cases per subtype among ``n``: ``n * fractions`` (normalised) rounded by largest
    remainders (ties to the milder subtype); when ``n`` is at least the number of subtypes
    with a positive fraction, each of them keeps at least one case (taken from the largest)."""
    frac = np.asarray(fractions, float)
    frac = frac / frac.sum()
    raw = frac * n
    counts = np.floor(raw + 1e-9).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    present = np.flatnonzero(frac > 0)
    if n >= present.size:
        for k in present:
            if counts[k] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[k] = 1
    return tuple(int(c) for c in counts)


def case_subtypes(
    seed: int, n_train: int, n_test: int, fractions: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Subtype id and split of every case: cases ``0 .. n_train-1`` are the training split,
    the rest the test split; within each split the :func:`subtype_counts` are shuffled by
    ``seed`` (a split stratified by subtype)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE3F]))
    ids, splits = [], []
    for name, n in zip(SPLITS, (n_train, n_test), strict=True):
        labels = np.repeat(np.arange(len(SUBTYPES)), subtype_counts(n, fractions))
        ids.append(rng.permutation(labels))
        splits.append(np.full(n, name))
    return np.concatenate(ids).astype(np.int64), np.concatenate(splits)


def extent_for_severity(severity: float) -> float:
    """Target emphysema extent (fraction of the lung) of a latent severity on the class
    scale (1 trace .. 5 advanced destructive): log-linear between the anchors 0.25% (trace),
    2.8% (mild), 14% (moderate), 25% (confluent) and 45% (advanced destructive). The
    labelmap holds somewhat less, as lesions that fill under half a voxel are not labelled."""
    s = float(np.clip(severity, _SEVERITY_ANCHORS[0], _SEVERITY_ANCHORS[-1]))
    return float(np.exp(np.interp(s, _SEVERITY_ANCHORS, np.log(_EXTENT_ANCHORS))))


@dataclass(frozen=True)
class _Design:
    """Per-case draws that do not depend on the anatomy."""

    subtype_id: int
    severity: float
    cle_extent: float  # centrilobular target extent (fraction of the lung)
    pan_extent: float  # panlobular target extent
    cle_radius_mm: float
    pan_radius_mm: float
    upper_bias: float  # exponent of the apical weighting of lesion seeds
    paraseptal: bool
    paraseptal_extent: float
    hyperexpansion: float  # 0 .. 1
    noise_hu: float
    blur_mm: float
    age: int
    sex: str


def _design(
    rng: np.random.Generator, subtype_id: int, severity_sd: float, noise_hu: tuple
) -> _Design:
    """The case's latent severity and what it sets (module docstring). Every draw is made
    whatever the subtype, so case ``i`` has the same nuisance draws (age, sex, noise, blur)
    and the same anatomy for any subtype: only the disease differs."""
    k = subtype_id
    jitter = rng.normal(0.0, severity_sd)
    if k == 0:
        severity = float(np.clip(jitter, -0.9, 0.45))
        extent = 0.0
    else:
        severity = float(np.clip(k + jitter, max(0.5, k - 0.9), min(5.95, k + 0.9)))
        extent = extent_for_severity(severity)
    pan_share = 0.75 * float(np.clip(severity - 4.0, 0.0, 1.0))
    upper_bias = 3.5 - 1.1 * float(np.clip(severity - 3.0, 0.0, 2.0))
    cle_radius = 4.5 + 0.7 * float(np.clip(severity - 1.0, 0.0, 4.0))
    u_radius, u_pan, u_paraseptal, u_bias, u_ps_extent, u_noise, u_blur, u_sex = rng.uniform(size=8)
    paraseptal = bool(u_paraseptal < _PARASEPTAL_PROB) and k > 0
    return _Design(
        subtype_id=k,
        severity=severity,
        cle_extent=extent * (1.0 - pan_share),
        pan_extent=extent * pan_share,
        cle_radius_mm=float(cle_radius * (0.85 + 0.3 * u_radius)),
        pan_radius_mm=float(12.0 + 6.0 * u_pan),
        upper_bias=float(upper_bias * (0.75 + 0.5 * u_bias)),
        paraseptal=paraseptal,
        paraseptal_extent=float(0.003 + 0.009 * u_ps_extent) if paraseptal else 0.0,
        hyperexpansion=float(np.clip((severity - 3.5) / 2.0, 0.0, 1.0)),
        noise_hu=float(noise_hu[0] + (noise_hu[1] - noise_hu[0]) * u_noise),
        blur_mm=float(1.0 + 1.5 * u_blur),
        age=int(np.clip(np.rint(rng.normal(62.0, 9.0)), 40, 85)),
        sex="F" if u_sex < 0.45 else "M",
    )


# --------------------------------------------------------------------------- helpers


def _grid(shape: tuple, spacing: Sequence[float]) -> tuple[np.ndarray, ...]:
    """Open grids of voxel-centre coordinates in mm, centred on the field of view."""
    return tuple(
        ((np.arange(n, dtype=np.float32) + 0.5) * s - n * s / 2).reshape(
            [-1 if a == ax else 1 for a in range(3)]
        )
        for ax, (n, s) in enumerate(zip(shape, spacing, strict=True))
    )


def _smooth2d(rng: np.random.Generator, shape: tuple, sigma: Sequence[float]) -> np.ndarray:
    """Gaussian-smoothed white noise on a 2-D grid, unit standard deviation (float32)."""
    field = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    out = []
    for ax in range(mask.ndim):
        idx = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax)))
        lo, hi = (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, mask.shape[ax])
        out.append(slice(max(0, lo - pad), min(mask.shape[ax], hi + pad)))
    return tuple(out)


def _box_mm(lo_mm, hi_mm, shape: tuple, spacing: np.ndarray) -> tuple[slice, ...]:
    """Index slices of the voxels whose centres may lie between ``lo_mm`` and ``hi_mm``
    (centred coordinates as in :func:`_grid`)."""
    half = np.asarray(shape) * spacing / 2
    lo = np.floor((np.asarray(lo_mm) + half) / spacing).astype(int)
    hi = np.ceil((np.asarray(hi_mm) + half) / spacing).astype(int) + 1
    return tuple(
        slice(int(np.clip(a, 0, n)), int(np.clip(b, 0, n)))
        for a, b, n in zip(lo, hi, shape, strict=True)
    )


def _sub(grids: tuple[np.ndarray, ...], box: tuple[slice, ...]) -> tuple[np.ndarray, ...]:
    return tuple(
        g[tuple(box[a] if a == ax else slice(None) for a in range(3))] for ax, g in enumerate(grids)
    )


def _tube(grids, p0, p1, radius: float, spacing: np.ndarray, shape: tuple):
    """``(box, inside)``: voxels within ``radius`` mm of the segment ``p0``-``p1``."""
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    box = _box_mm(np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius, shape, spacing)
    x, y, z = _sub(grids, box)
    d = p1 - p0
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / max(float(dot(d, d)), 1e-6)
    t = np.clip(t, 0.0, 1.0)
    dist2 = (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2
    return box, dist2 < radius**2


def _two_lungs(lung: np.ndarray) -> np.ndarray:
    """``lung`` without fragments: its two largest connected components (one per side)."""
    box = _bbox(lung, 0)
    labels, n = ndi.label(lung[box])
    if n <= 2:
        return lung
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.zeros(n + 1, bool)
    keep[np.argsort(sizes)[-2:]] = True
    out = np.zeros_like(lung)
    out[box] = keep[labels]
    return out


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over non-overlapping ``f x f x f`` blocks (float32)."""
    if f == 1:
        return a.astype(np.float32)
    out = np.zeros(tuple(n // f for n in a.shape), np.float32)
    for i in range(f):
        for j in range(f):
            for k in range(f):
                out += a[i::f, j::f, k::f]
    return out / np.float32(f**3)


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of ``v`` about the unit vector ``axis``."""
    return (
        v * np.cos(angle)
        + cross(axis, v) * np.sin(angle)
        + axis * float(dot(axis, v)) * (1.0 - np.cos(angle))
    )


def _perpendicular(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    v = cross(d, rng.normal(size=3))
    return v / max(float(norm(v)), 1e-9)


# --------------------------------------------------------------------------- anatomy


@dataclass
class _Thorax:
    """The anatomy of one case on the fine grid."""

    hu: np.ndarray  # float32 HU of everything but the lung parenchyma
    lung: np.ndarray  # bool
    hila: list[np.ndarray]  # mm (centred coordinates), right then left
    targets: list[list[np.ndarray]]  # per lung: trunk target points (mm)
    y_mid: float  # antero-posterior centre and half depth of the lungs (gravity gradient)
    y_half: float
    scale: float  # body size / nominal adult size


def _thorax(
    rng: np.random.Generator, design: _Design, shape: tuple, spacing: np.ndarray
) -> _Thorax:
    """Body, chest wall, mediastinum, heart, great vessels, airways, spine and the two lungs
    (see the module docstring) on the grid ``shape`` x ``spacing``."""
    grids = _grid(shape, spacing)
    x, y, z = grids
    hx, hy, hz = np.asarray(shape) * spacing / 2
    hyper = design.hyperexpansion
    xy = (x[:, :, 0], y[:, :, 0])  # 2-D open grids of an axial slice

    # body outline and chest wall: an irregular ellipse, constant along z
    ax_b = hx * rng.uniform(0.80, 0.90)
    ay_b = hy * rng.uniform(0.55, 0.63) * (1.0 + 0.08 * hyper)  # barrel chest
    cy = hy * rng.uniform(-0.05, 0.05)
    theta = np.arctan2(xy[1] - cy, xy[0])
    wobble = np.ones_like(theta)
    for k in (2, 3, 4):
        a, b = rng.normal(0.0, 0.02, 2)
        wobble = wobble + a * np.cos(k * theta) + b * np.sin(k * theta)
    mean_axis = 0.5 * (ax_b + ay_b)
    scale = float(mean_axis / 120.0)
    # layer thicknesses in mm whatever the body size (a thin wall would let the lung touch air)
    t_fat = rng.uniform(6.0, 22.0)
    t_wall = rng.uniform(12.0, 17.0)

    def radius(inset: float) -> np.ndarray:
        """Normalised radius of the outline moved ``inset`` mm inwards (< 1 inside)."""
        r = np.sqrt((xy[0] / (ax_b - inset)) ** 2 + ((xy[1] - cy) / (ay_b - inset)) ** 2)
        return r / wobble

    rho = radius(0.0)
    rho_cavity = radius(t_fat + t_wall)
    body = rho < 1.0
    cavity = rho_cavity < 1.0
    ax_c, ay_c = ax_b - t_fat - t_wall, ay_b - t_fat - t_wall

    hu = np.full(shape, _HU_AIR, np.float32)
    hu[body] = _HU_FAT + rng.uniform(-15.0, 15.0)
    wall = (radius(t_fat) < 1.0) & ~cavity
    hu[wall] = _HU_MUSCLE
    # ribs: oblique bands in the inner chest wall, higher posteriorly
    rib_band = wall & (radius(t_fat + 0.55 * t_wall) >= 1.0)
    period = rng.uniform(26.0, 32.0) * scale
    phase = 2 * np.pi * (z - 0.45 * (y - cy)) / period + rng.uniform(0, 2 * np.pi)
    hu[rib_band[:, :, None] & (np.cos(phase) > 0.45)] = _HU_RIB
    hu[cavity] = _HU_SOFT

    # spine (midline, posterior) and mediastinum
    x_m = rng.uniform(-5.0, 8.0) * scale
    r_vb = rng.uniform(14.0, 17.0) * scale
    y_s = cy + ay_c * rng.uniform(0.62, 0.70)
    vertebra = (xy[0] - x_m) ** 2 + (xy[1] - y_s) ** 2 < r_vb**2
    canal = (xy[0] - x_m) ** 2 + (xy[1] - y_s - 1.55 * r_vb) ** 2 < (0.5 * r_vb) ** 2
    posterior = (np.abs(xy[0] - x_m) < 0.6 * r_vb) & (xy[1] > y_s + r_vb) & body
    spine_zone = ((xy[0] - x_m) ** 2 + (xy[1] - y_s) ** 2 < (r_vb + 4.0 * scale) ** 2) | (
        (np.abs(xy[0] - x_m) < 1.3 * r_vb) & (xy[1] > y_s)
    )
    hu[posterior & ~canal] = _HU_BONE + 100.0
    hu[vertebra] = _HU_BONE
    hu[canal] = _HU_CANAL
    w_m = rng.uniform(12.0, 18.0) * scale

    # lung heights: apex, diaphragmatic domes (right higher) and costophrenic recesses
    z_apex = hz * rng.uniform(0.80, 0.90)
    z_dome_left = -hz * rng.uniform(0.28, 0.38) - 0.12 * hz * hyper
    z_dome_right = z_dome_left + hz * rng.uniform(0.04, 0.10) * (1.0 - 0.5 * hyper)
    recess = hz * rng.uniform(0.30, 0.38) * (1.0 - 0.5 * hyper)
    z_low = z_dome_left - 1.2 * recess
    z_carina = z_apex - rng.uniform(0.33, 0.40) * (z_apex - z_low)
    sigma2 = (25.0 / spacing[0], 25.0 / spacing[1])
    diaph_noise = 6.0 * scale * _smooth2d(rng, theta.shape, sigma2)
    apex_noise = 6.0 * scale * _smooth2d(rng, theta.shape, sigma2)
    apex_drop = hz * rng.uniform(0.25, 0.35)

    # heart on the diaphragm, left of the midline; aorta; trachea and main bronchi
    heart_axes = (
        np.array(
            [
                rng.uniform(45.0, 58.0) * (1.0 - 0.15 * hyper),
                rng.uniform(38.0, 48.0),
                rng.uniform(45.0, 55.0),
            ]
        )
        * scale
    )
    heart_c = np.array(
        [
            x_m + rng.uniform(12.0, 24.0) * scale,
            cy - ay_c * rng.uniform(0.05, 0.20),
            0.5 * (z_dome_left + z_dome_right) + 0.75 * heart_axes[2],
        ]
    )
    hbox = _box_mm(heart_c - heart_axes, heart_c + heart_axes, shape, spacing)
    hxg, hyg, hzg = _sub(grids, hbox)
    heart = np.zeros(shape, bool)
    heart[hbox] = (
        ((hxg - heart_c[0]) / heart_axes[0]) ** 2
        + ((hyg - heart_c[1]) / heart_axes[1]) ** 2
        + ((hzg - heart_c[2]) / heart_axes[2]) ** 2
    ) < 1.0
    r_ao = rng.uniform(10.0, 13.0) * scale
    y_t = y_s - r_vb - rng.uniform(12.0, 18.0) * scale
    z_arch = z_carina + rng.uniform(12.0, 22.0) * scale
    desc = np.array([x_m + r_vb + r_ao + 3.0 * scale, y_s - 0.4 * r_vb])
    asc = np.array([x_m - rng.uniform(0.0, 8.0) * scale, heart_c[1] - 0.2 * heart_axes[1]])
    aorta = np.zeros(shape, bool)
    for (cx, cyy), z_lo in ((desc, -hz), (asc, heart_c[2])):
        disc = (xy[0] - cx) ** 2 + (xy[1] - cyy) ** 2 < r_ao**2
        aorta |= disc[:, :, None] & (z >= z_lo) & (z <= z_arch)
    # the arch: a tube along a half-ellipse over the ascending and descending aorta
    a_y, a_z = 0.5 * abs(desc[1] - asc[1]), rng.uniform(18.0, 26.0) * scale
    y_c = 0.5 * (desc[1] + asc[1])
    abox = _box_mm(
        (min(asc[0], desc[0]) - r_ao, y_c - a_y - r_ao, z_arch - r_ao),
        (max(asc[0], desc[0]) + r_ao, y_c + a_y + r_ao, z_arch + a_z + r_ao),
        shape,
        spacing,
    )
    ax_, ay_, az_ = _sub(grids, abox)
    u = np.clip((ay_ - y_c) / max(a_y, 1e-3), -1.0, 1.0)
    z_line = z_arch + a_z * np.sqrt(1.0 - u**2)
    x_line = asc[0] + (desc[0] - asc[0]) * (u + 1.0) / 2.0
    aorta[abox] |= ((ax_ - x_line) ** 2 + (az_ - z_line) ** 2 < r_ao**2) & (az_ >= z_arch)

    r_t = rng.uniform(7.0, 9.0) * scale
    airway = np.zeros(shape, bool)
    trachea = (xy[0] - x_m) ** 2 + (xy[1] - y_t) ** 2 < r_t**2
    airway |= trachea[:, :, None] & (z >= z_carina)
    carina = np.array([x_m, y_t, z_carina])
    hila = []
    for side, r_b in ((-1.0, 6.0), (1.0, 5.0)):
        hilum = np.array(
            [x_m + side * (w_m + 6.0 * scale), y_t + 8.0 * scale, z_carina - 18 * scale]
        )
        box, tube = _tube(grids, carina, hilum, r_b * scale, spacing, shape)
        airway[box] |= tube
        hila.append(hilum)

    # upper-abdominal organs below the diaphragm (soft tissue) with a gastric air bubble
    z_dome = np.where(xy[0] < x_m, z_dome_right, z_dome_left)
    xd = x_m + np.where(xy[0] < x_m, -1.0, 1.0) * 0.5 * (w_m + ax_c)
    q2 = ((xy[0] - xd) / (0.55 * (ax_c - w_m))) ** 2 + ((xy[1] - cy + 0.15 * ay_c) / ay_c) ** 2
    # the lung bases stay inside the field of view (a chest CT covers the whole lung)
    z_diaph = np.maximum(z_dome - recess * np.minimum(q2, 1.2) + diaph_noise, -0.9 * hz)
    below = z < z_diaph[:, :, None]
    hu[cavity[:, :, None] & below] = _HU_ABDOMEN
    if rng.random() < 0.6:
        c = np.array([x_m + 0.45 * ax_c, cy - 0.1 * ay_c, z_dome_left - 28.0 * scale])
        half = np.array([28.0, 22.0, 14.0]) * scale
        box = _box_mm(c - half, c + half, shape, spacing)
        gx, gy, gz = _sub(grids, box)
        bubble = (
            ((gx - c[0]) / half[0]) ** 2
            + ((gy - c[1]) / half[1]) ** 2
            + ((gz - c[2]) / half[2]) ** 2
        ) < 1.0
        bubble &= (gz < z_diaph[box[:2]][:, :, None] - 7.0 * scale) & cavity[box[:2]][:, :, None]
        hu[box][bubble] = _HU_AIR

    # lungs: lateral to the mediastinum, under the domed apex, above the diaphragm
    # the rib cage narrows above the carina (up to 15% at the apex)
    taper = 1.0 - 0.15 * np.clip((z - z_carina) / max(z_apex - z_carina, 1e-6), 0.0, 1.0)
    cage = rho_cavity[:, :, None] < taper
    lung = np.zeros(shape, bool)
    targets = []
    y_l = cy + 0.05 * ay_c
    height = z_apex - z_low
    for side in (-1.0, 1.0):
        x_l = x_m + side * 0.5 * (w_m + ax_c)
        r2 = ((xy[0] - x_l) / (0.5 * (ax_c - w_m))) ** 2 + ((xy[1] - y_l) / (0.85 * ay_c)) ** 2
        z_top = np.minimum(z_apex - apex_drop * r2 + apex_noise, 0.93 * hz)
        medial = side * (xy[0] - x_m) > w_m
        column = medial & ~spine_zone
        lung |= column[:, :, None] & cage & (z < z_top[:, :, None]) & ~below
        lateral = x_l + side * 0.3 * (ax_c - w_m)
        targets.append(
            [
                np.array([x_l, y_l - 0.1 * ay_c, z_apex - 0.15 * height]),
                np.array([x_l, y_l + 0.3 * ay_c, z_carina + 0.1 * height]),
                np.array([lateral, y_l - 0.35 * ay_c, z_carina - 0.2 * height]),
                np.array([lateral, y_l, z_low + 0.3 * height]),
                np.array([x_l, y_l + 0.35 * ay_c, z_low + 0.2 * height]),
            ]
        )
    lung &= ~(heart | aorta | airway)
    lung = _two_lungs(lung)

    hu[heart] = _HU_BLOOD
    med_fat = (np.abs(xy[0] - x_m) < w_m) & (xy[1] < y_t - 15.0 * scale) & cavity
    hu[med_fat[:, :, None] & ~below & ~heart & ~aorta] = _HU_MED_FAT
    hu[aorta] = _HU_BLOOD + 5.0
    hu[airway] = _HU_AIR
    return _Thorax(
        hu=hu,
        lung=lung,
        hila=hila,
        targets=targets,
        y_mid=float(y_l),
        y_half=float(0.85 * ay_c),
        scale=scale,
    )


# --------------------------------------------------------------------------- vessels


def _vessel_occupancy(
    rng: np.random.Generator,
    thorax: _Thorax,
    spacing: np.ndarray,
    tortuosity: float,
    max_segments: int = 300,
) -> np.ndarray:
    """Fraction of each fine voxel filled by pulmonary vessels (float32, 0 outside the lung).

    Each lung grows one trunk from (near) its hilum towards each of its targets (apical,
    posterior-upper, anterior, lateral-basal, posterior-basal); a trunk crosses whatever lies
    between hilum and lung, a branch inside the lung runs until it leaves the lung. Branches
    that stay inside split in two (20-40 degrees) with the radius shrinking by 0.7-0.8 until
    it is below ~1.2 mm. The centre lines are splatted as cross-section area x step length
    and blurred (more for thick vessels), so thin vessels fill a voxel only partly."""
    lung = thorax.lung
    shape = np.asarray(lung.shape)
    half = shape * spacing / 2
    step = 0.5 * float(spacing.min())
    r_min = 1.2
    size = max(thorax.scale, 0.4)
    pts_all, vol_all, rad_all = [], [], []
    for hilum, targets in zip(thorax.hila, thorax.targets, strict=True):
        stack = []
        for target in targets:
            start = hilum + rng.normal(0.0, 4.0, 3) * size
            d = target - start
            dist = float(norm(d))
            trunk_len = rng.uniform(0.35, 0.5) * dist
            stack.append((start, d / max(dist, 1e-6), rng.uniform(4.0, 5.5) * size, trunk_len))
        n_seg = 0
        while stack and n_seg < max_segments:
            p, d, r, trunk_len = stack.pop()
            n_seg += 1
            trunk = trunk_len is not None
            length = trunk_len if trunk else rng.uniform(0.8, 1.2) * (10.0 + 5.0 * r) * size
            n = max(2, int(length / step))
            t = np.arange(1, n + 1, dtype=float) * step
            bend = _perpendicular(rng, d) * tortuosity * length
            line = p + t[:, None] * d + ((t / length) ** 2)[:, None] * bend
            idx = np.floor((line + half) / spacing).astype(int)
            in_volume = np.all((idx >= 0) & (idx < shape), axis=1)
            inside = in_volume.copy()
            inside[in_volume] = lung[tuple(idx[in_volume].T)]
            # a trunk may cross the mediastinum; a branch ends where it leaves the lung
            stop = np.flatnonzero(~(in_volume if trunk else inside))
            stop = int(stop[0]) if stop.size else n
            pts_all.append(idx[:stop])
            vol_all.append(np.full(stop, np.pi * r * r * step))
            rad_all.append(np.full(stop, r))
            if stop < n or not inside[-1] or r * 0.75 < r_min:
                continue
            d_end = d + 2.0 * bend / length
            d_end /= max(float(norm(d_end)), 1e-9)
            for sign in (-1.0, 1.0):
                axis = _perpendicular(rng, d_end)
                child = _rotate(d_end, axis, sign * np.deg2rad(rng.uniform(20.0, 40.0)))
                stack.append((line[-1], child / norm(child), r * rng.uniform(0.7, 0.8), None))
    occ = np.zeros(lung.shape, np.float32)
    if not pts_all or not lung.any():
        return occ
    idx, vol, rad = (np.concatenate(a) for a in (pts_all, vol_all, rad_all))
    flat = np.ravel_multi_index(tuple(idx.T), lung.shape)
    box = _bbox(lung, 3)
    for thick, sigma_mm in ((False, 0.6 * float(spacing.min())), (True, 2.2 * size)):
        sel = (rad >= 2.5 * size) == thick
        if not sel.any():
            continue
        density = np.bincount(
            flat[sel], weights=vol[sel] / float(np.prod(spacing)), minlength=lung.size
        ).reshape(lung.shape)
        occ[box] += ndi.gaussian_filter(
            density[box].astype(np.float32), sigma_mm / spacing, truncate=3.0
        )
    return np.clip(occ, 0.0, 1.0) * lung


# --------------------------------------------------------------------------- emphysema


def _blobs(
    rng: np.random.Generator,
    lung: np.ndarray,
    seed_region: np.ndarray,
    weight_z: np.ndarray,
    extent: float,
    radius_mm: float,
    spacing: np.ndarray,
) -> np.ndarray:
    """Lesions filling ``extent`` of ``lung``: seeds drawn in ``seed_region`` with density
    proportional to ``weight_z`` (per z slice), each grown into a blob of ~``radius_mm``;
    the threshold on the summed seed field is set so exactly ``extent`` of the lung voxels
    are taken, so dense seeds merge into confluent regions."""
    n_lung = int(lung.sum())
    n_take = int(round(extent * n_lung))
    if n_take < 1:
        return np.zeros(lung.shape, bool)
    cand = np.flatnonzero(seed_region)
    if cand.size == 0:
        return np.zeros(lung.shape, bool)
    z_of = np.unravel_index(cand, lung.shape)[2]
    p = weight_z[z_of].astype(float)
    p /= p.sum()
    ball = 4.0 / 3.0 * np.pi * radius_mm**3 / float(np.prod(spacing))
    n_seeds = max(1, int(round(n_take / max(ball, 1.0))))
    seeds = rng.choice(cand, size=n_seeds, p=p)
    field = np.bincount(seeds, minlength=lung.size).reshape(lung.shape).astype(np.float32)
    field = ndi.gaussian_filter(field, 0.5 * radius_mm / spacing, truncate=3.0)
    vals = field[lung]
    thr = np.partition(vals, vals.size - n_take)[vals.size - n_take]
    return lung & (field >= thr) & (field > 0)


def _emphysema(
    rng: np.random.Generator, design: _Design, lung: np.ndarray, spacing: np.ndarray
) -> np.ndarray:
    """Emphysema pattern code of every fine voxel (uint8, :data:`LABELS`) inside ``lung``:
    panlobular regions first, then centrilobular lesions, then paraseptal ones."""
    codes = np.zeros(lung.shape, np.uint8)
    if design.cle_extent + design.pan_extent + design.paraseptal_extent <= 0:
        return codes
    box = _bbox(lung, 2)
    sub = lung[box]
    zs = np.flatnonzero(sub.any(axis=(0, 1)))
    zn = np.zeros(sub.shape[2])
    zn[zs[0] : zs[-1] + 1] = np.linspace(0.0, 1.0, zs[-1] - zs[0] + 1)
    out = np.zeros(sub.shape, np.uint8)
    pan = _blobs(
        rng, sub, sub, np.exp(0.3 * (zn - 1.0)), design.pan_extent, design.pan_radius_mm, spacing
    )
    out[pan] = 2
    cle = _blobs(
        rng,
        sub,
        sub,
        np.exp(design.upper_bias * (zn - 1.0)),
        design.cle_extent,
        design.cle_radius_mm,
        spacing,
    )
    out[cle & (out == 0)] = 1
    if design.paraseptal:
        depth = max(1, int(round(_PARASEPTAL_DEPTH_MM / float(spacing.min()))))
        band = sub & ~ndi.binary_erosion(sub, iterations=depth, border_value=0)
        ps = _blobs(
            rng, sub, band, np.exp(3.0 * (zn - 1.0)), design.paraseptal_extent, 5.0, spacing
        )
        out[ps & (out == 0)] = 3
    codes[box] = out
    return codes


# --------------------------------------------------------------------------- one case


@dataclass(frozen=True)
class PhantomCase:
    """One rendered case: ``image`` int16 HU, ``mask`` uint8 lung, ``labelmap`` uint8
    emphysema pattern code, ``row`` its clinical variables (no ``case_id``/``split``)."""

    image: np.ndarray
    mask: np.ndarray
    labelmap: np.ndarray
    row: dict


def _case_streams(seed: int, i: int) -> list[np.random.Generator]:
    """Four independent generators (design, anatomy, lesions, rendering) spawned from case
    ``i``'s stream ``SeedSequence(seed).spawn(n_cases)[i]`` (the same whatever ``n_cases``
    is), so that a case keeps its anatomy and noise whatever its subtype."""
    case_seq = np.random.SeedSequence(seed, spawn_key=(i,))
    return [np.random.default_rng(s) for s in case_seq.spawn(4)]


def make_case(
    seed: int,
    index: int,
    subtype_id: int,
    *,
    shape: Sequence[int] = DEFAULTS["shape"],
    spacing: Sequence[float] = DEFAULTS["spacing"],
    severity_sd: float = DEFAULTS["severity_sd"],
    noise_hu: Sequence[float] = DEFAULTS["noise_hu"],
    supersample: int = DEFAULTS["supersample"],
) -> PhantomCase:
    """Render case ``index`` of a cohort generated with ``seed`` as subtype ``subtype_id``
    (0-5, :data:`SUBTYPES`); the keyword arguments are the generator parameters of the same
    names. The case's anatomy, nuisance draws and noise depend on ``seed`` and ``index``
    only, so rendering one case as two subtypes shows the disease alone."""
    if isinstance(subtype_id, bool) or subtype_id not in range(len(SUBTYPES)):
        raise ValueError(f"{NAME}: subtype_id must be an integer in 0-5, got {subtype_id!r}")
    p = validate_params(
        {
            "seed": seed,
            "shape": shape,
            "spacing": spacing,
            "severity_sd": severity_sd,
            "noise_hu": noise_hu,
            "supersample": supersample,
        }
    )
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
        raise ValueError(f"{NAME}: index must be an integer >= 0, got {index!r}")
    design_rng, anat_rng, lesion_rng, render_rng = _case_streams(p["seed"], int(index))
    design = _design(design_rng, int(subtype_id), p["severity_sd"], p["noise_hu"])
    f = p["supersample"]
    shape = p["shape"]
    coarse_sp = np.asarray(p["spacing"], float)
    fine_sp = coarse_sp / f
    fine_shape = tuple(n * f for n in shape)

    thorax = _thorax(anat_rng, design, fine_shape, fine_sp)
    lung = thorax.lung
    codes = _emphysema(lesion_rng, design, lung, fine_sp)
    vessels = _vessel_occupancy(anat_rng, thorax, fine_sp, 0.05 + 0.3 * design.hyperexpansion)
    inside = np.flatnonzero(lung)
    code_in = codes.ravel()[inside]
    vessel_in = vessels.ravel()[inside]
    vessel_in *= 1.0 - 0.85 * (code_in == 2) - 0.3 * (code_in == 1)  # pruned in destroyed lung

    # lung parenchyma: gravity-dependent gradient (supine), emphysema near air, vessels
    level = render_rng.uniform(-858.0, -838.0) - 20.0 * design.hyperexpansion
    gradient = render_rng.uniform(8.0, 20.0)
    _, y, _ = _grid(fine_shape, fine_sp)
    yn = np.clip((y.ravel() - thorax.y_mid) / thorax.y_half, -1.0, 1.0)
    y_in = np.unravel_index(inside, fine_shape)[1]
    tissue = np.where(
        code_in > 0, np.float32(render_rng.uniform(-992.0, -978.0)), level + gradient * yn[y_in]
    )
    hu = thorax.hu
    hu.ravel()[inside] = vessel_in * _HU_BLOOD + (1.0 - vessel_in) * tissue

    # average down: partial volume; lung and emphysema maps by majority of the voxel
    def coarse(values_in: np.ndarray) -> np.ndarray:
        full = np.zeros(fine_shape, np.float32)
        full.ravel()[inside] = values_in
        return _block_mean(full, f)

    image = _block_mean(hu, f)
    lung_frac = _block_mean(lung, f)
    mask = _two_lungs(lung_frac >= 0.5)
    open_in = 1.0 - vessel_in
    destroyed = coarse(np.where(code_in > 0, open_in, 0.0))
    emph = mask & (destroyed >= 0.5) & (lung_frac >= 0.75)
    present = [c for c in (1, 2, 3) if np.any(code_in == c)]
    if len(present) > 1:
        pattern = np.stack([coarse(np.where(code_in == c, open_in, 0.0)) for c in present])
        code_of = np.asarray(present, np.uint8)[np.argmax(pattern, axis=0)]
    else:
        code_of = np.full(shape, present[0] if present else 0, np.uint8)
    labelmap = np.where(emph, code_of, 0).astype(np.uint8)

    # slow regional density variation of the healthy lung, blur, correlated noise
    regional = ndi.gaussian_filter(render_rng.standard_normal(shape, dtype=np.float32), 2.0)
    regional *= 8.0 / max(float(regional.std()), 1e-6)
    image += regional * (lung_frac - coarse(vessel_in) - destroyed)
    image = ndi.gaussian_filter(image, design.blur_mm / coarse_sp, mode="nearest", truncate=3.0)
    noise = ndi.gaussian_filter(render_rng.standard_normal(shape, dtype=np.float32), 0.4)
    noise *= design.noise_hu / max(float(noise.std()), 1e-6)
    image = np.clip(np.rint(image + noise), -1024, 3071).astype(np.int16)

    n_mask = int(mask.sum())
    row = {
        "subtype": SUBTYPES[design.subtype_id],
        "subtype_id": design.subtype_id,
        "severity": round(design.severity, 4),
        "laa950": round(100.0 * float((image[mask] < -950).sum()) / max(n_mask, 1), 4),
        "emphysema_fraction": round(float((labelmap > 0).sum()) / max(n_mask, 1), 6),
        "paraseptal": int(design.paraseptal),
        "lung_volume_ml": round(n_mask * float(np.prod(coarse_sp)) / 1000.0, 1),
        "age": design.age,
        "sex": design.sex,
        "noise_hu": round(design.noise_hu, 2),
    }
    return PhantomCase(image=image, mask=mask.astype(np.uint8), labelmap=labelmap, row=row)


# --------------------------------------------------------------------------- cohort


def generate(root: str | Path, **params) -> Path:
    """Write the emphysema CT phantom cohort to ``root`` (see the module docstring).

    Every case is rendered first (kept zlib-compressed in memory) so that ``clinical.csv``
    can hold the LAA-950 of the written images; :func:`medclust.cohort.write_cohort` then
    writes them."""
    p = validate_params(params)
    subtypes, splits = case_subtypes(p["seed"], p["n_train"], p["n_test"], p["subtype_fractions"])
    render = {k: p[k] for k in ("shape", "spacing", "severity_sd", "noise_hu", "supersample")}
    shape, spacing = p["shape"], p["spacing"]
    ids = [f"emph_{i:04d}" for i in range(len(subtypes))]
    rows, stored = [], []
    for i, (cid, subtype_id, split) in enumerate(zip(ids, subtypes, splits, strict=True)):
        case = make_case(p["seed"], i, int(subtype_id), **render)
        rows.append({"case_id": cid, **case.row, "split": str(split)})
        stored.append(
            [zlib.compress(a.tobytes(), 1) for a in (case.image, case.mask, case.labelmap)]
        )
        log.debug("rendered %s (%s, LAA-950 %.2f%%)", cid, case.row["subtype"], case.row["laa950"])
    columns = [
        "case_id",
        "subtype",
        "subtype_id",
        "split",
        "severity",
        "laa950",
        "emphysema_fraction",
        "paraseptal",
        "lung_volume_ml",
        "age",
        "sex",
        "noise_hu",
    ]
    clinical = pd.DataFrame(rows)[columns]
    log.info(
        "%s: %d cases rendered (subtypes %s)",
        NAME,
        len(ids),
        dict(zip(SUBTYPES, np.bincount(subtypes, minlength=len(SUBTYPES)).tolist(), strict=True)),
    )

    def cases() -> Iterator[CaseData]:
        for i, cid in enumerate(ids):
            image, mask, labelmap = (
                np.frombuffer(zlib.decompress(blob), dtype).reshape(shape)
                for blob, dtype in zip(stored[i], (np.int16, np.uint8, np.uint8), strict=True)
            )
            stored[i] = []
            yield CaseData(id=cid, image=image, spacing=spacing, mask=mask, labelmap=labelmap)

    description = (
        "Phantom inspiratory chest CT (int16 HU) of smokers: body, chest wall with ribs, "
        "spine, mediastinum with heart, aorta and airways, two lungs with vessel trees, "
        "partial volume, blur and scanner noise. Emphysema (low-attenuation lesions) follows "
        "the six Fleischner subtypes (absent .. advanced destructive) through a latent "
        "severity: extent, lesion size, coalescence, upper-zone predominance, panlobular "
        "destruction and hyperexpansion; some cases add paraseptal lesions."
    )
    return write_cohort(
        root,
        cases(),
        clinical,
        name=NAME,
        modality="CT (chest phantom, HU)",
        description=description,
        labels=dict(LABELS),
        spacing_note=(
            f"voxel spacing {spacing[0]} x {spacing[1]} x {spacing[2]} mm (axial slices along "
            "the last axis, x right->left, y anterior->posterior, z inferior->superior)"
        ),
        mask_labels={"0": "background", "1": "lung"},
        clinical_label="subtype",
        ground_truth=(
            "clinical.csv 'subtype' (Fleischner: absent, trace, mild, moderate, confluent, "
            "advanced_destructive; 'subtype_id' 0-5), 'severity' (latent), 'paraseptal'; "
            "labelmap: emphysema pattern of each lung voxel (0 none, 1 centrilobular, "
            "2 panlobular, 3 paraseptal); 'split' is train/test"
        ),
        generator_params=_describe(p),
    )


def _describe(p: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}
