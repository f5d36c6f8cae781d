"""Liver MRI phantom: T1-weighted-like abdominal volumes whose liver texture mosaic predicts
steatosis grade (the cohort of Perkonigg et al., deep clustering of liver MRI patches).

Each case is a small 3D volume (array axes x, y, z; axial slices along the last axis; x runs
from the patient's right to left as in a radiological display, y from anterior to posterior,
z from inferior to superior) stored as int16 in arbitrary MR units (background ~0, liver
~800, subcutaneous fat ~1450). It holds

* a body outline (irregular ellipse) with a bright subcutaneous fat rim, a muscle wall,
  viscera with visceral-fat and gas patches, spine, aorta, spleen and kidneys;
* a liver: a smooth irregular blob (right lobe plus a smaller left lobe) in the right upper
  abdomen whose size, shape and position vary per case and which is present on most slices;
* two dark branching vessel trees inside the liver (portal veins from the hilum, hepatic
  veins from the dome);
* a smooth multiplicative bias field and Rician noise (magnitude of complex Gaussian noise).

Ground truth. The liver parenchyma is a mosaic of texture classes (the labelmap; 0 outside the
liver, every liver voxel has a class):

====  ===================  ==========================================================
  1   homogeneous          flat parenchyma
  2   fine_fat             voxel-scale bright speckle (fine fat droplets)
  3   coarse_fat           sparse bright blobs 3-6 mm across (coarse fat)
  4   perivascular         darker granular band around the vessels
  5   vessel               vessel lumen (dark)
  6   mottled              smooth bright/dark patches a few mm across (grade-unrelated)
  7   striated             fine wavy parallel striation (grade-unrelated)
====  ===================  ==========================================================

Classes 1, 2, 3, 6 and 7 tile the parenchyma as the argmax of smoothed random fields (region
size ~10-40 mm, set by ``region_scale_mm``) biased to per-case target proportions; class 4 is a
band of spatially varying width around the lumen (class 5). A latent per-case severity
(``grade / 3`` plus Gaussian jitter) raises the proportions of classes 2 and 3 and the band
width of class 4, so a case's signature of class proportions predicts its grade well but not
perfectly; classes 6 and 7 vary per case independently of grade. Fat raises the mean intensity
only slightly (and the perivascular band lowers it), so mean liver intensity alone is a weak
predictor. ``difficulty`` (0..1) jointly lowers texture contrast and grade-signal strength and
raises severity jitter, noise and the bias field.

``clinical.csv`` holds ``case_id``, ``grade`` (0-3), ``steatosis`` (low for 0-1, high for 2-3),
``frac_<class>`` (the true fraction of liver voxels of each class, from the labelmap) and two
nuisance variables (``age``, ``sex``) drawn independently of grade.

Generation is seeded and bit-reproducible: each case draws from its own
``np.random.SeedSequence(seed).spawn(n_cases)[i]`` stream and everything is cast to integers
before it is written.
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

NAME = "liver_mri"

DEFAULTS: dict = {
    "seed": 0,
    "n_cases": 70,
    "grade_counts": (1, 20, 32, 17),  # cases of grade 0-3; scaled to n_cases (grade_counts_for)
    "shape": (160, 128, 20),  # voxels x, y, z
    "spacing": (1.5, 1.5, 5.0),  # mm
    "difficulty": 0.5,  # 0 easy .. 1 hard: contrast, grade signal, noise, bias field
    "region_scale_mm": 8.0,  # smoothing scale of the texture mosaic (regions ~10-40 mm)
}

CLASSES: dict[int, str] = {
    1: "homogeneous",
    2: "fine_fat",
    3: "coarse_fat",
    4: "perivascular",
    5: "vessel",
    6: "mottled",
    7: "striated",
}
GRADE_CLASSES = (2, 3, 4)
UNRELATED_CLASSES = (6, 7)
_MOSAIC_CLASSES = (1, 2, 3, 6, 7)

# tissue codes of the internal full-volume tissue map; liver classes are _LIVER + class
_AIR, _FAT, _MUSCLE, _VISCERA, _VFAT, _GAS, _SPLEEN, _KIDNEY, _BONE, _CANAL, _AORTA = range(11)
_LIVER = 20
_TISSUE_MEAN = {
    _FAT: 1450.0,
    _MUSCLE: 520.0,
    _VISCERA: 600.0,
    _VFAT: 1300.0,
    _GAS: 40.0,
    _SPLEEN: 640.0,
    _KIDNEY: 710.0,
    _BONE: 860.0,
    _CANAL: 300.0,
    _AORTA: 180.0,
}
_LIVER_NOMINAL = 820.0  # nominal parenchyma intensity, also the noise reference
_FAT_SHIFT = 0.03  # mean intensity rise of the fat classes (fraction of parenchyma)


# --------------------------------------------------------------------------- parameters


def validate_params(params: dict) -> dict:
    """Merge ``params`` into :data:`DEFAULTS` and check every value; raise ``ValueError`` (or
    ``TypeError`` for an unknown name) naming the offending parameter."""
    p = merged(NAME, DEFAULTS, params)
    out = {
        "seed": integer(NAME, p, "seed", 0),
        "n_cases": integer(NAME, p, "n_cases", 1),
        "grade_counts": numbers(NAME, p, "grade_counts", 4, int, 0),
        "shape": numbers(NAME, p, "shape", 3, int, 1),
        "spacing": numbers(NAME, p, "spacing", 3, float, 0.0),
        "difficulty": number(NAME, p, "difficulty", 0.0, 1.0),
        "region_scale_mm": number(NAME, p, "region_scale_mm", 2.0, 50.0),
    }
    if sum(out["grade_counts"]) == 0:
        raise fail(NAME, "grade_counts", "must have a positive sum", p["grade_counts"])
    if min(out["shape"][:2]) < 24:
        raise fail(NAME, "shape", "must be at least 24 voxels in-plane (x, y)", p["shape"])
    if min(out["spacing"]) <= 0:
        raise fail(NAME, "spacing", "must be positive", p["spacing"])
    return out


def grade_counts_for(n_cases: int, base: Sequence[int] = (1, 20, 32, 17)) -> tuple[int, ...]:
    """Cases per grade for ``n_cases``: ``base`` itself when the totals agree, otherwise
    ``base`` scaled by largest remainders (ties to the lower grade); with ``n_cases >= 4``
    every grade keeps at least one case (taken from the largest grade)."""
    base = np.asarray(base, dtype=np.int64)
    total = int(base.sum())
    if n_cases == total:
        return tuple(int(b) for b in base)
    raw = base * n_cases / total
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n_cases - int(counts.sum())]] += 1
    if n_cases >= len(base):
        for g in range(len(base)):
            if counts[g] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[g] = 1
    return tuple(int(c) for c in counts)


@dataclass(frozen=True)
class _Terms:
    """What ``difficulty`` sets."""

    contrast: float  # texture contrast multiplier
    strength: float  # grade-signal strength multiplier
    severity_sd: float  # case jitter of the latent severity around grade / 3
    noise: float  # noise sigma as a fraction of the nominal liver intensity
    bias: float  # bias-field amplitude (log scale)

    @classmethod
    def of(cls, d: float) -> _Terms:
        return cls(
            contrast=1.0 - 0.6 * d,
            strength=1.0 - 0.6 * d,
            severity_sd=0.05 + 0.25 * d,
            noise=0.02 + 0.08 * d,
            bias=0.05 + 0.35 * d,
        )


# --------------------------------------------------------------------------- helpers


def _smooth_noise(rng: np.random.Generator, shape: tuple, sigma: Sequence[float]) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation (float32). Large sigmas
    are filtered on a coarser grid and upsampled linearly, which is much faster."""
    shape = tuple(int(s) for s in shape)
    factor = [max(1, int(s // 2.5)) for s in sigma]
    small = tuple(-(-n // f) + 1 for n, f in zip(shape, factor, strict=True))
    white = rng.standard_normal(small, dtype=np.float32)
    field = ndi.gaussian_filter(
        white, [s / f for s, f in zip(sigma, factor, strict=True)], mode="wrap", truncate=3.0
    )
    if any(f > 1 for f in factor):
        field = ndi.zoom(field, factor, order=1, grid_mode=False)
    field = field[tuple(slice(0, n) for n in shape)]
    field -= field.mean()
    sd = float(field.std())
    return field / sd if sd > 0 else field


def _grid(shape: tuple, spacing: tuple) -> tuple[np.ndarray, ...]:
    """Open grids of voxel-centre coordinates in mm, centred on the field of view."""
    return tuple(
        ((np.arange(n, dtype=np.float32) + 0.5) * s - n * s / 2).reshape(
            [-1 if a == ax else 1 for a in range(3)]
        )
        for ax, (n, s) in enumerate(zip(shape, spacing, strict=True))
    )


def _ellipsoid(x, y, z, centre, axes) -> np.ndarray:
    """Normalised ellipsoid radius (< 1 inside)."""
    return (
        ((x - centre[0]) / axes[0]) ** 2
        + ((y - centre[1]) / axes[1]) ** 2
        + ((z - centre[2]) / axes[2]) ** 2
    )


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _bbox(mask: np.ndarray, pad: Sequence[int]) -> tuple[slice, ...]:
    out = []
    for ax in range(mask.ndim):
        any_ = np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax))
        idx = np.flatnonzero(any_)
        lo, hi = (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, mask.shape[ax])
        out.append(slice(max(0, lo - pad[ax]), min(mask.shape[ax], hi + pad[ax])))
    return tuple(out)


# --------------------------------------------------------------------------- case design


@dataclass
class _Meta:
    """Per-case draws that do not depend on the anatomy."""

    grade: int
    severity: float
    targets: dict[int, float]  # class 2, 3, 6, 7 -> target fraction of the whole liver
    band_mm: float  # mean width of the perivascular band
    liver_level: float  # parenchyma intensity of this case
    age: int
    sex: str
    noise_scale: float  # per-case (scanner/site) multiplier of the noise level


def _case_meta(rng: np.random.Generator, grade: int, terms: _Terms) -> _Meta:
    severity = grade / 3.0 + rng.normal(0.0, terms.severity_sd)
    s = terms.strength * float(np.clip(severity, -0.1, 1.15))
    fine = 0.03 + 0.25 * s + rng.normal(0.0, 0.025)
    coarse = 0.02 + 0.18 * s + rng.normal(0.0, 0.02)
    band = 1.0 + 7.0 * s + rng.normal(0.0, 0.7)
    mottled, striated = rng.uniform(0.02, 0.22, size=2)
    shares = np.clip([fine, coarse, mottled, striated], 0.005, None)
    targets = {k: float(v) for k, v in zip((2, 3, 6, 7), shares, strict=True)}
    level = _LIVER_NOMINAL * (1.0 + 0.04 * s) * rng.uniform(0.92, 1.08)
    age = int(np.clip(np.rint(rng.normal(52.0, 12.0)), 18, 90))
    sex = "F" if rng.random() < 0.45 else "M"
    noise_scale = rng.uniform(0.7, 1.3)
    return _Meta(
        grade=grade,
        severity=float(severity),
        targets=targets,
        band_mm=float(max(0.5, band)),
        liver_level=float(level),
        age=age,
        sex=sex,
        noise_scale=float(noise_scale),
    )


# --------------------------------------------------------------------------- anatomy


def _vessel_tree(
    rng: np.random.Generator,
    liver: np.ndarray,
    spacing: np.ndarray,
    starts: list[tuple[np.ndarray, np.ndarray, float]],
    max_branches: int = 160,
) -> list[tuple[np.ndarray, float]]:
    """Grow branching centrelines inside ``liver`` from ``(point_mm, direction, radius_mm)``
    trunks; return ``(voxel_index, radius_mm)`` samples. Branches stop at the liver edge and
    split in two with shrinking radius until they become thinner than ~1.2 mm."""
    shape = np.asarray(liver.shape)
    step = 0.5 * float(spacing.min())
    stack = [(np.asarray(p, float), np.asarray(d, float), r) for p, d, r in starts]
    samples: list[tuple[np.ndarray, float]] = []
    n_branches = 0
    while stack and n_branches < max_branches:
        p, d, r = stack.pop()
        n_branches += 1
        length = rng.uniform(12.0, 28.0) * np.sqrt(r / 5.0)
        inside = True
        for _ in range(int(length / step)):
            d = d + rng.normal(0.0, 0.04, 3) * np.array([1.0, 1.0, 0.5])
            d /= norm(d)
            p = p + step * d
            idx = np.floor(p / spacing).astype(int)
            if np.any(idx < 0) or np.any(idx >= shape) or not liver[tuple(idx)]:
                inside = False
                break
            samples.append((idx, r))
        if not inside or r * 0.72 < 1.2:
            continue
        for sign in (-1.0, 1.0):
            axis = cross(d, rng.normal(size=3) * np.array([1.0, 1.0, 0.4]))
            axis /= max(norm(axis), 1e-9)
            angle = sign * np.deg2rad(rng.uniform(20.0, 45.0))
            # Rodrigues rotation of d about axis
            child = (
                d * np.cos(angle)
                + cross(axis, d) * np.sin(angle)
                + axis * dot(axis, d) * (1 - np.cos(angle))
            )
            stack.append((p.copy(), child / norm(child), r * rng.uniform(0.68, 0.8)))
    return samples


def _vessels(
    rng: np.random.Generator, liver: np.ndarray, spacing: np.ndarray, fov_mm: np.ndarray
) -> np.ndarray:
    """Vessel lumen mask (inside ``liver``) from a portal and a hepatic tree."""
    idx = np.argwhere(liver)
    pts = (idx + 0.5) * spacing
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ext = hi - lo
    centre = pts.mean(axis=0)
    scale = float(np.clip(fov_mm[:2].min() / 190.0, 0.3, 1.5))  # smaller trees in small FOVs

    def snap(p):
        return pts[int(np.argmin(((pts - p) ** 2).sum(axis=1)))]

    hilum = snap(centre + np.array([0.25, 0.1, -0.1]) * ext)
    dome = snap(
        np.array([centre[0] + 0.2 * ext[0], centre[1] + 0.15 * ext[1], lo[2] + 0.8 * ext[2]])
    )
    starts = []
    for ang in rng.uniform(-0.3, 0.3) + np.array([np.pi, 0.72 * np.pi, 1.3 * np.pi]):
        d = np.array([np.cos(ang), np.sin(ang), rng.uniform(-0.3, 0.3)])
        starts.append((hilum, d / norm(d), rng.uniform(4.0, 5.5) * scale))
    for ang in rng.uniform(-0.3, 0.3) + np.array([0.9 * np.pi, 1.2 * np.pi, 1.5 * np.pi]):
        d = np.array([np.cos(ang), np.sin(ang), -rng.uniform(0.2, 0.5)])
        starts.append((dome, d / norm(d), rng.uniform(3.5, 4.5) * scale))
    samples = _vessel_tree(rng, liver, spacing, starts)
    lumen = np.zeros(liver.shape, bool)
    if not samples:
        return lumen
    sidx = np.array([s[0] for s in samples])
    rad = np.array([s[1] for s in samples])
    box = _bbox(liver, (2, 2, 1))
    sub_shape = tuple(s.stop - s.start for s in box)
    offset = np.array([s.start for s in box])
    for lo_r, hi_r in ((0.0, 2.0), (2.0, 3.0), (3.0, 4.5), (4.5, np.inf)):
        sel = (rad >= lo_r) & (rad < hi_r)
        if not sel.any():
            continue
        centre_line = np.zeros(sub_shape, bool)
        centre_line[tuple((sidx[sel] - offset).T)] = True
        dist = ndi.distance_transform_edt(~centre_line, sampling=spacing)
        lumen[box] |= dist <= float(rad[sel].max())
    return lumen & liver


def _mosaic_shares(targets: dict[int, float], available: float) -> np.ndarray:
    """Shares of the mosaic classes within the mosaic parenchyma (the liver less lumen and
    band, ``available`` of it) that give classes 2, 3, 6, 7 their target fractions of the
    whole liver. Where these do not fit with >= 10% of the liver left homogeneous, the fat
    classes shrink first (keeping 6 and 7 independent of grade), then all four."""
    room = max(available - 0.1, 0.0)
    fat = np.array([targets[2], targets[3]])
    unrelated = np.array([targets[6], targets[7]])
    if fat.sum() + unrelated.sum() > room:
        fat *= max(room - unrelated.sum(), 0.0) / fat.sum()
        if unrelated.sum() > room:
            unrelated *= room / unrelated.sum()
    frac = np.clip(np.array([fat[0], fat[1], unrelated[0], unrelated[1]]), 0.002, None)
    frac /= max(available, 1e-6)
    shares = np.array([max(1.0 - frac.sum(), 0.02), *frac])  # order of _MOSAIC_CLASSES
    return shares / shares.sum()


def _anatomy(
    rng: np.random.Generator,
    meta: _Meta,
    shape: tuple,
    spacing: tuple,
    region_scale_mm: float,
) -> np.ndarray:
    """The case's tissue map (uint8): body tissues and organs, and liver voxels coded as
    ``_LIVER + texture class``."""
    sp = np.asarray(spacing, float)
    fov = np.asarray(shape) * sp
    x, y, z = _grid(shape, spacing)
    hx, hy, hz = fov / 2
    tissue = np.zeros(shape, np.uint8)

    # body outline: irregular ellipse, slowly varying along z
    theta = np.arctan2(y, x)
    wobble = np.ones_like(theta)
    for k in (2, 3, 4):
        a, b = rng.normal(0.0, 0.025 / k * 2, 2)
        wobble = wobble + a * np.cos(k * theta) + b * np.sin(k * theta)
    ax_b, ay_b = hx * rng.uniform(0.82, 0.93), hy * rng.uniform(0.74, 0.88)
    cy_b = hy * rng.uniform(-0.04, 0.04)
    zs = 1.0 + 0.04 * rng.uniform(-1, 1) * z / max(hz, 1e-6)
    rho = np.sqrt((x / (ax_b * zs)) ** 2 + ((y - cy_b) / (ay_b * zs)) ** 2) / wobble
    mean_axis = 0.5 * (ax_b + ay_b)
    fat_mm = rng.uniform(8.0, 20.0) * np.clip(mean_axis / 90.0, 0.3, 1.5)
    muscle_mm = rng.uniform(6.0, 10.0) * np.clip(mean_axis / 90.0, 0.3, 1.5)
    rho = np.broadcast_to(rho, shape)
    body = rho < 1.0
    wall = rho > 1.0 - fat_mm / mean_axis
    tissue[body] = _FAT
    tissue[body & ~wall] = _MUSCLE
    cavity = rho < 1.0 - (fat_mm + muscle_mm) / mean_axis
    tissue[cavity] = _VISCERA
    coarse = (max(12.0 / sp[0], 1.0), max(12.0 / sp[1], 1.0), max(12.0 / sp[2], 0.5))
    vfat = _smooth_noise(rng, shape, coarse)
    gas = _smooth_noise(rng, shape, [c * 0.6 for c in coarse])
    tissue[cavity & (vfat > 1.0)] = _VFAT
    tissue[cavity & (gas > 1.9)] = _GAS

    # spine, canal, aorta (posterior midline), spleen and kidneys
    sy = cy_b + 0.62 * ay_b
    vr = 0.14 * mean_axis
    spine = (x**2 + (y - sy) ** 2 < vr**2) & body
    canal = (x**2 + (y - sy - 1.45 * vr) ** 2 < (0.45 * vr) ** 2) & body
    aorta = ((x - 0.25 * vr) ** 2 + (y - sy + 1.45 * vr) ** 2 < (0.5 * vr) ** 2) & body
    z_n = z / max(hz, 1e-6)
    spleen = _ellipsoid(
        x,
        y,
        z_n * hz,
        (0.55 * ax_b, cy_b + 0.25 * ay_b, 0.35 * hz),
        (0.22 * ax_b, 0.3 * ay_b, 0.5 * hz),
    )
    spleen = spleen + 0.3 * _smooth_noise(rng, shape, coarse) < 1.0
    kidneys = np.zeros(shape, bool)
    for side in (-1.0, 1.0):
        kidneys |= (
            _ellipsoid(
                x,
                y,
                z,
                (side * 0.38 * ax_b, cy_b + 0.45 * ay_b, -0.45 * hz),
                (0.13 * ax_b, 0.2 * ay_b, 0.45 * hz),
            )
            < 1.0
        )
    for mask, code in ((spleen, _SPLEEN), (kidneys, _KIDNEY)):
        tissue[mask & cavity] = code
    tissue[spine] = _BONE
    tissue[canal] = _CANAL
    tissue[aorta] = _AORTA

    # liver: right lobe plus a smaller left lobe, deformed by a smooth field
    cx_l = -ax_b * rng.uniform(0.34, 0.44)
    cy_l = cy_b + ay_b * rng.uniform(-0.1, 0.05)
    cz_l = hz * rng.uniform(0.0, 0.3)
    right = _ellipsoid(
        x,
        y,
        z,
        (cx_l, cy_l, cz_l),
        (
            ax_b * rng.uniform(0.45, 0.55),
            ay_b * rng.uniform(0.62, 0.8),
            hz * rng.uniform(0.85, 1.15),
        ),
    )
    left = _ellipsoid(
        x,
        y,
        z,
        (
            cx_l + ax_b * rng.uniform(0.45, 0.6),
            cy_l - ay_b * rng.uniform(0.25, 0.4),
            cz_l + 0.2 * hz,
        ),
        (
            ax_b * rng.uniform(0.26, 0.34),
            ay_b * rng.uniform(0.22, 0.3),
            hz * rng.uniform(0.55, 0.75),
        ),
    )
    deform = _smooth_noise(rng, shape, (max(14.0 / sp[0], 1.0), max(14.0 / sp[1], 1.0), 1.5))
    liver = (np.minimum(right, left) + 0.3 * deform < 1.0) & cavity & ~(spine | aorta | canal)
    liver = _largest_component(liver)
    if not liver.any():  # degenerate tiny volumes: fall back to the undeformed right lobe
        liver = (right < 1.0) & body
        if not liver.any():
            liver[tuple(n // 2 for n in shape)] = True

    # vessels, perivascular band, mosaic
    labels = np.zeros(shape, np.uint8)
    lumen = _vessels(rng, liver, sp, fov)
    labels[lumen] = 5
    box = _bbox(liver, (1, 1, 0))
    sub = tuple(s.stop - s.start for s in box)
    liv, lum = liver[box], lumen[box]
    dist = ndi.distance_transform_edt(~lum, sampling=sp) if lum.any() else np.full(sub, np.inf)
    width = meta.band_mm * np.clip(1.0 + 0.45 * _smooth_noise(rng, sub, (4.0, 4.0, 1.0)), 0, None)
    band = liv & ~lum & (dist <= width)
    labels[box][band] = 4

    rest = liv & ~lum & ~band
    sigma = [max(region_scale_mm / s, 0.5) for s in sp]
    fields = np.stack([_smooth_noise(rng, sub, sigma)[rest] for _ in _MOSAIC_CLASSES])
    target = _mosaic_shares(meta.targets, rest.sum() / max(int(liv.sum()), 1))
    bias = np.log(target) * 0.6
    for _ in range(40):  # fit per-class offsets so the argmax hits the target shares
        pick = np.argmax(fields + bias[:, None], axis=0)
        frac = np.bincount(pick, minlength=len(target)) / max(pick.size, 1)
        bias += 0.5 * (np.log(target) - np.log(frac + 1e-3))
    pick = np.argmax(fields + bias[:, None], axis=0)
    sub_labels = labels[box]
    sub_labels[rest] = np.asarray(_MOSAIC_CLASSES, np.uint8)[pick]
    labels[box] = sub_labels

    tissue[liver] = _LIVER + labels[liver]
    return tissue


# --------------------------------------------------------------------------- rendering


def _render(
    rng: np.random.Generator,
    meta: _Meta,
    tissue: np.ndarray,
    spacing: tuple,
    terms: _Terms,
) -> np.ndarray:
    """T1-like int16 image of a tissue map: tissue intensities, liver textures, bias, noise."""
    shape = tissue.shape
    sp = np.asarray(spacing, float)
    img = np.zeros(shape, np.float32)
    for code, level in _TISSUE_MEAN.items():
        img[tissue == code] = level
    soft = _smooth_noise(rng, shape, (3.0, 3.0, 1.0))
    viscera = tissue == _VISCERA
    img[viscera] += 110.0 * soft[viscera]
    organs = (tissue == _SPLEEN) | (tissue == _KIDNEY) | (tissue == _BONE) | (tissue == _MUSCLE)
    img[organs] *= 1.0 + 0.03 * soft[organs]

    liver = tissue >= _LIVER
    box = _bbox(liver, (0, 0, 0))
    lab = tissue[box].astype(np.int16) - _LIVER
    sub = lab.shape
    c, level = terms.contrast, meta.liver_level
    x, y, _ = _grid(sub, spacing)
    tex = np.ones(sub, np.float32)
    # 1 homogeneous: barely varying
    t = 1.0 + 0.015 * c * _smooth_noise(rng, sub, (2.0, 2.0, 0.5))
    tex = np.where(lab == 1, t, tex)
    # 2 fine fat: sparse voxel-scale bright speckle
    density = 0.22
    speck = (rng.random(sub, dtype=np.float32) < density) * rng.uniform(0.5, 1.0, sub)
    t = 1.0 + _FAT_SHIFT + c * 0.5 * (speck - density * 0.75)
    tex = np.where(lab == 2, t, tex)
    # 3 coarse fat: sparse bright blobs 3-6 mm across
    blobs = np.zeros(sub, np.float32)
    per_voxel = sp[0] * sp[1] / 50.0  # about one blob centre per 50 mm^2 of slice
    for sig_mm in (1.1, 1.7):
        pts = (rng.random(sub, dtype=np.float32) < per_voxel / 2).astype(np.float32)
        sig = (sig_mm / sp[0], sig_mm / sp[1], 0.3)
        g = ndi.gaussian_filter(pts, sig, truncate=3.0)
        blobs += g * (2 * np.pi * sig[0] * sig[1])
    blobs = np.minimum(blobs, 1.5)
    t = 1.0 + _FAT_SHIFT + c * 0.45 * (blobs - float(blobs.mean()))
    tex = np.where(lab == 3, t, tex)
    # 4 perivascular: darker band with granular texture
    gran = _smooth_noise(rng, sub, (0.8, 0.8, 0.3))
    t = 1.0 - 0.12 * c + c * 0.08 * gran
    tex = np.where(lab == 4, t, tex)
    # 5 vessel lumen: dark (not contrast-scaled: anatomy)
    tex = np.where(lab == 5, 0.45 + 0.02 * gran, tex)
    # 6 mottled: smooth bright/dark patches a few mm across
    t = 1.0 + c * 0.13 * _smooth_noise(rng, sub, (1.6, 1.6, 0.5))
    tex = np.where(lab == 6, t, tex)
    # 7 striated: fine wavy parallel lines, orientation per case
    ang = rng.uniform(0.0, np.pi)
    wavelength = 6.0
    phase = 1.5 * _smooth_noise(rng, sub, (4.0, 4.0, 1.0))
    t = 1.0 + c * 0.14 * np.cos(
        2 * np.pi * (x * np.cos(ang) + y * np.sin(ang)) / wavelength + phase
    )
    tex = np.where(lab == 7, t, tex)
    sub_img = img[box]
    sub_img[lab > 0] = level * tex[lab > 0]
    img[box] = sub_img

    # smooth multiplicative bias field (random quadratic in normalised coordinates)
    u = [g / max(float(np.abs(g).max()), 1e-6) for g in _grid(shape, spacing)]
    terms_ = [u[0], u[1], 0.5 * u[2], u[0] * u[1], u[0] ** 2, u[1] ** 2]
    coef = rng.normal(0.0, 1.0, len(terms_))
    poly = sum(a * t for a, t in zip(coef, terms_, strict=True))
    poly = poly / max(float(np.abs(poly).max()), 1e-6)
    img *= np.exp(terms.bias * poly).astype(np.float32)

    # Rician noise: magnitude of the signal plus complex Gaussian noise
    sd = terms.noise * meta.noise_scale * _LIVER_NOMINAL
    real = img + rng.normal(0.0, sd, shape).astype(np.float32)
    imag = rng.normal(0.0, sd, shape).astype(np.float32)
    out = np.sqrt(real * real + imag * imag)
    return np.clip(np.rint(out), 0, 32767).astype(np.int16)


# --------------------------------------------------------------------------- cohort


def _case_streams(seed: int, i: int) -> list[np.random.Generator]:
    """Three independent generators (meta, anatomy, rendering) of case ``i``; the same as
    spawning ``SeedSequence(seed).spawn(n_cases)[i]``, whatever ``n_cases`` is."""
    case_seq = np.random.SeedSequence(seed, spawn_key=(i,))
    return [np.random.default_rng(s) for s in case_seq.spawn(3)]


def case_grades(seed: int, n_cases: int, grade_counts: Sequence[int]) -> np.ndarray:
    """Grade of each case: the counts of :func:`grade_counts_for`, shuffled by ``seed``."""
    counts = grade_counts_for(n_cases, grade_counts)
    grades = np.repeat(np.arange(4), counts)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    return rng.permutation(grades)


def generate(root: str | Path, **params) -> Path:
    """Write the liver MRI phantom cohort to ``root`` (see the module docstring).

    Cases are designed in a first pass (tissue maps kept zlib-compressed in memory, ~tens of
    kB each, so that ``clinical.csv`` can hold the true class fractions) and rendered lazily
    while :func:`medclust.cohort.write_cohort` writes them.
    """
    p = validate_params(params)
    terms = _Terms.of(p["difficulty"])
    shape, spacing = p["shape"], p["spacing"]
    grades = case_grades(p["seed"], p["n_cases"], p["grade_counts"])
    ids = [f"liver_{i:03d}" for i in range(p["n_cases"])]

    rows, maps, metas = [], [], []
    for i, (cid, grade) in enumerate(zip(ids, grades, strict=True)):
        meta_rng, anat_rng, _ = _case_streams(p["seed"], i)
        meta = _case_meta(meta_rng, int(grade), terms)
        tissue = _anatomy(anat_rng, meta, shape, spacing, p["region_scale_mm"])
        labels = np.where(tissue >= _LIVER, tissue - _LIVER, 0)
        counts = np.bincount(labels.ravel(), minlength=8)[1:8]
        n_liver = int(counts.sum())
        row = {
            "case_id": cid,
            "grade": meta.grade,
            "steatosis": "high" if meta.grade >= 2 else "low",
        }
        row.update({f"frac_{CLASSES[k]}": counts[k - 1] / n_liver for k in CLASSES})
        row.update({"age": meta.age, "sex": meta.sex})
        rows.append(row)
        maps.append(zlib.compress(tissue.tobytes(), 1))
        metas.append(meta)
        log.debug("designed %s (grade %d, liver %d voxels)", cid, meta.grade, n_liver)
    clinical = pd.DataFrame(rows)
    for col in clinical.columns:
        if col.startswith("frac_"):
            clinical[col] = clinical[col].round(6)

    def cases() -> Iterator[CaseData]:
        for i, cid in enumerate(ids):
            _, _, render_rng = _case_streams(p["seed"], i)
            tissue = np.frombuffer(zlib.decompress(maps[i]), np.uint8).reshape(shape)
            maps[i] = b""
            image = _render(render_rng, metas[i], tissue, spacing, terms)
            labels = np.where(tissue >= _LIVER, tissue - _LIVER, 0).astype(np.uint8)
            yield CaseData(
                id=cid,
                image=image,
                spacing=spacing,
                mask=(labels > 0).astype(np.uint8),
                labelmap=labels,
            )

    labels = {0: "outside liver", **CLASSES}
    description = (
        "Phantom T1-weighted abdominal MRI (int16, arbitrary units) of steatosis cases: body, "
        "organs, a liver with dark vessel trees, bias field and Rician noise. The liver is a "
        "mosaic of texture classes whose proportions of fine_fat, coarse_fat and perivascular "
        "rise with steatosis grade; mottled and striated are grade-unrelated."
    )
    return write_cohort(
        root,
        cases(),
        clinical,
        name=NAME,
        modality="MR (T1-weighted phantom)",
        description=description,
        labels=labels,
        spacing_note=(
            f"voxel spacing {spacing[0]} x {spacing[1]} x {spacing[2]} mm (anisotropic; axial "
            "slices along the last axis, x right->left, y anterior->posterior, z "
            "inferior->superior)"
        ),
        mask_labels={"0": "background", "1": "liver"},
        clinical_label="grade",
        ground_truth=(
            "labelmap: texture class of every liver voxel (1 homogeneous, 2 fine_fat, "
            "3 coarse_fat, 4 perivascular, 5 vessel, 6 mottled, 7 striated), 0 outside the "
            "liver mask; classes 2-4 increase with grade, 6-7 are grade-unrelated; "
            "clinical.csv frac_<class> are the true class fractions of the liver"
        ),
        generator_params=_describe(p),
    )


def _describe(p: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}
