"""Lung micro-CT phantom: 3D micro-CT volumes of resected lung cancer specimens whose tissue
regions differ in texture rather than in mean intensity (the cohort of Moriya et al.,
unsupervised segmentation of 3D micro-CT with JULE, /work/shared/papers/001_274bb32fd0b17023.txt).

The paper (Sec. 3.1, Table 1) segments three specimens, lung-A/B/C, scanned at 27-30 um
isotropic resolution (~500-970 voxels per side), into invasive carcinoma, noninvasive
carcinoma and normal tissue; it excludes the background by a per-specimen intensity threshold
(Sec. 2.3, Table 1: 4000, 2820 and 4700 scanner units) and scores NMI on seven manually
annotated slices (Sec. 3.3). Its discussion (Sec. 4) states what the phantom reproduces:
carcinoma is of high intensity and normal tissue of low intensity, and invasive carcinoma has a
small variation of intensities whereas noninvasive carcinoma has a large one.

Each specimen is a cubic volume of ``size`` voxels per side (array axes x, y, z; axial slices
along the last axis) at an isotropic spacing drawn from ``spacing_range_mm``, stored as int16
in scanner-like units (air ~2000-3400, dense tumour ~5000 units above air, per-specimen gain
and offset so that the thresholds differ as in Table 1). It holds

* air around the specimen (low, noisy);
* the specimen: a smooth irregular blob (a randomly rotated ellipsoid deformed by a smooth
  random field, kept inside a ball so that the faces of the volume do not cut it flat) that
  fills ~20-25 % of the volume (~50-60 % of a central slice);
* three tissue regions inside it with smooth irregular boundaries: the argmax of three
  smoothed random fields (smoothing ``region_scale * size`` voxels) plus a radial prior that
  puts invasive carcinoma at a core, noninvasive carcinoma around it and normal tissue towards
  the rim (the usual picture of an adenocarcinoma with a lepidic margin), with per-class offsets
  fitted so that the class fractions hit per-specimen targets drawn from a Dirichlet
  distribution (every class at least ~15 % of the specimen; specimens take turns in which
  class the draw favours, so lung_A tends to be mostly invasive, lung_B noninvasive and
  lung_C normal);
* a Gaussian point spread (micro-CT PSF), a slow multiplicative drift of the attenuation
  contrast (a linear gradient plus cupping, as beam hardening gives) and lightly correlated
  Gaussian noise.

Ground truth (the labelmap; the mask is the specimen):

====  ======================  ===========================================================
  0   background              air outside the specimen
  1   invasive_carcinoma      dense and fairly homogeneous: the tumour level with a faint
                              smooth texture (low variation)
  2   noninvasive_carcinoma   dense with irregular small holes (residual air spaces a few
                              voxels across) and mottling; its mean equals the invasive
                              level, so only the local variation separates it from class 1
  3   normal                  alveolar foam: Voronoi cells ``alveolus_mm`` across (~8
                              voxels) with air-filled lumina (a quarter of the tumour
                              contrast: sub-voxel septa and fixative) bounded by thin walls
                              as bright as the tumour, with small gaps (pores, ducts)
====  ======================  ===========================================================

So a pure intensity method (k-means on voxel intensity, multi-Otsu) is clearly imperfect: the
invasive and noninvasive classes share their mean, and the alveolar walls are as bright as the
tumour while the noninvasive holes are as dark as alveoli; local statistics over ~10 voxels
(mean and variance, or what a 3D CNN learns on 27^3 patches) separate all three. At the
defaults (seed 0), multi-Otsu with three classes on the specimen interior (> 5 voxels from the
surface) scores NMI 0.17-0.31 against the labelmap, k-means on the local mean and standard
deviation over 9^3 voxels 0.31-0.55 (on the real specimens the paper, Sec. 3.3, calls even
its best NMI scores "not high").

``difficulty`` (0..1) raises the noise, the PSF width, the drift and the invasive texture and
lowers the depth of the noninvasive holes and its mottling.

``clinical.csv`` holds ``case_id``; ``threshold`` (the Table 1 analog: an integer such that
``image > threshold`` recovers the specimen, halfway between the air level and the darkest
specimen tissue, the alveolar lumen, at the strongest drift); ``annotated_slices`` (the analog
of the seven annotated slices: ``n_annotated_slices`` axial indices, last array axis, spread
through the specimen on slices where all three classes appear where possible, stored as a
string ``"12;25;38"``, parsed by :func:`medclust.segmentation.annotated_slices`); ``spacing_mm``; ``frac_<class>``
(the true fraction of specimen voxels of each class, from the labelmap) and
``dominant_tissue`` (the largest class, the cohort's declared clinical label).

At the demo scale (96 voxels) a specimen is a miniature (~2.8 mm across) whose textures keep
their physical voxel scale, so the tissue regions span tens of voxels rather than hundreds.

Generation is seeded and bit-reproducible: specimen ``i`` draws from its own
``np.random.SeedSequence(seed).spawn(n_specimens)[i]`` stream (split in design, anatomy and
rendering streams) and everything is cast to integers before it is written.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from medclust.cohort import CaseData, write_cohort
from medclust_phantoms.exact import contract, norm, random_rotation
from medclust_phantoms.params import fail, integer, merged, number, numbers, recorded

log = logging.getLogger(__name__)

NAME = "lung_microct"

DEFAULTS: dict = {
    "seed": 0,
    "n_specimens": 3,  # the paper's lung-A, lung-B, lung-C
    "size": 96,  # voxels per side (paper: ~500-970)
    "spacing_range_mm": (0.027, 0.030),  # isotropic spacing drawn per specimen (Table 1)
    "difficulty": 0.5,  # 0 easy .. 1 hard: noise, blur, drift, texture contrast
    "region_scale": 0.1,  # smoothing of the tissue-region fields, fraction of size (>= 3 vx)
    "alveolus_mm": 0.24,  # alveolus diameter of the normal-tissue foam (~8 voxels)
    "n_annotated_slices": 7,  # the paper's seven annotated slices (Sec. 3.3)
}

CLASSES: dict[int, str] = {
    1: "invasive_carcinoma",
    2: "noninvasive_carcinoma",
    3: "normal",
}
LABELS: dict[int, str] = {0: "background", **CLASSES}

# nominal intensities as fractions of the tumour contrast above air
_TUMOUR = 1.0
_LUMEN = 0.25  # alveolar lumen inside the specimen: sub-voxel septa and fixative, above air
_WALL = 1.7  # alveolar wall before the PSF; ~1.0 after it, i.e. as bright as the tumour
_WALL_HALF = 0.45  # half-thickness of the alveolar walls (voxels), before a 1-voxel ramp
_HOLE_QUANTILE = 0.78  # noise level above which a noninvasive voxel is a hole (~22 %)
_PRIOR_WEIGHT = 1.5  # weight of the core-to-rim prior against unit-variance random fields
_MIN_CLASS_FRACTION = 0.15  # smallest target fraction of a tissue class
_MARGIN = 2  # voxels of air kept between the specimen and the faces of the volume


# --------------------------------------------------------------------------- parameters


def validate_params(params: dict) -> dict:
    """Merge ``params`` into :data:`DEFAULTS` and check every value; raise ``ValueError`` (or
    ``TypeError`` for an unknown name) naming the offending parameter."""
    p = merged(NAME, DEFAULTS, params)
    out = {
        "seed": integer(NAME, p, "seed", 0),
        "n_specimens": integer(NAME, p, "n_specimens", 1),
        "size": integer(NAME, p, "size", 24),
        "spacing_range_mm": numbers(NAME, p, "spacing_range_mm", 2, float, 0.0),
        "difficulty": number(NAME, p, "difficulty", 0.0, 1.0),
        "region_scale": number(NAME, p, "region_scale", 0.03, 0.5),
        "alveolus_mm": number(NAME, p, "alveolus_mm", 0.0, math.inf),
        "n_annotated_slices": integer(NAME, p, "n_annotated_slices", 1),
    }
    lo, hi = out["spacing_range_mm"]
    if not 0.0 < lo <= hi:
        raise fail(
            NAME,
            "spacing_range_mm",
            "must be (low, high) with 0 < low <= high",
            p["spacing_range_mm"],
        )
    cells = (out["alveolus_mm"] / hi, out["alveolus_mm"] / lo)
    if cells[0] < 3.0 or cells[1] > out["size"] / 2.5:
        raise fail(
            NAME,
            "alveolus_mm",
            f"must span 3 to size/2.5 = {out['size'] / 2.5:g} voxels at spacings {lo:g}-{hi:g} "
            f"mm (it spans {cells[0]:.2f}-{cells[1]:.2f})",
            p["alveolus_mm"],
        )
    if out["n_annotated_slices"] > out["size"]:
        raise fail(
            NAME, "n_annotated_slices", f"must be <= size ({out['size']})", p["n_annotated_slices"]
        )
    return out


@dataclass(frozen=True)
class _Terms:
    """What ``difficulty`` sets (intensities as fractions of the tumour contrast)."""

    noise: float  # noise sd
    psf: float  # Gaussian PSF sigma (voxels)
    drift: float  # largest relative change of the contrast across the volume
    invasive_var: float  # amplitude of the faint invasive texture
    hole_depth: float  # depth of the noninvasive holes below the tumour level
    mottle: float  # amplitude of the noninvasive mottling

    @classmethod
    def of(cls, d: float) -> _Terms:
        return cls(
            noise=0.02 + 0.04 * d,
            psf=0.6 + 0.4 * d,
            drift=0.03 + 0.07 * d,
            invasive_var=0.02 + 0.02 * d,
            hole_depth=0.8 - 0.2 * d,
            mottle=0.12 - 0.04 * d,
        )


# --------------------------------------------------------------------------- helpers


def specimen_id(i: int) -> str:
    """``lung_A`` .. ``lung_Z``, ``lung_AA``, ... (bijective base 26) for specimen ``i >= 0``."""
    letters, n = "", i + 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("A") + r) + letters
    return f"lung_{letters}"


def _smooth_noise(rng: np.random.Generator, shape: tuple, sigma: float) -> np.ndarray:
    """Isotropic Gaussian-smoothed white noise with zero mean and unit sd over ``shape``
    (float32), periodic at the faces (separable filtering at full resolution is faster here
    than filtering a coarse grid and interpolating)."""
    field = ndi.gaussian_filter(
        rng.standard_normal(tuple(int(n) for n in shape), dtype=np.float32),
        sigma,
        mode="wrap",
        truncate=3.0,
    )
    field -= field.mean()
    sd = float(field.std())
    return field / sd if sd > 0 else field


def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open grids of voxel centres in normalised coordinates (-1..1 across the volume)."""
    u = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    return u.reshape(-1, 1, 1), u.reshape(1, -1, 1), u.reshape(1, 1, -1)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    out = []
    for ax in range(mask.ndim):
        idx = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax)))
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(out)


# --------------------------------------------------------------------------- design


@dataclass
class _Design:
    """Per-specimen draws that do not depend on the anatomy."""

    case_id: str
    spacing_mm: float
    air: float  # air level (scanner units)
    contrast: float  # tumour level minus air level
    targets: np.ndarray  # target fractions of classes 1, 2, 3
    threshold: int


def _design(
    rng: np.random.Generator, i: int, spacing_range: Sequence[float], terms: _Terms
) -> _Design:
    spacing = round(float(rng.uniform(*spacing_range)), 5)
    air = float(rng.uniform(2000.0, 3400.0))
    contrast = float(rng.uniform(4500.0, 6500.0))
    # specimens take turns in which class tends to dominate, so proportions differ visibly
    alpha = np.full(len(CLASSES), 3.0)
    alpha[i % len(CLASSES)] += 5.0
    shares = np.maximum(rng.dirichlet(alpha), _MIN_CLASS_FRACTION)
    # halfway between air and the darkest specimen tissue (alveolar lumen) at the strongest
    # drift: the Table 1 threshold separating the specimen from the background
    threshold = int(np.rint(air + 0.5 * _LUMEN * contrast * (1.0 - terms.drift)))
    return _Design(specimen_id(i), spacing, air, contrast, shares / shares.sum(), threshold)


# --------------------------------------------------------------------------- anatomy


def _specimen(rng: np.random.Generator, size: int) -> np.ndarray:
    """Specimen mask: a rotated, randomly deformed ellipsoid kept off the volume's faces."""
    u = _unit_grid(size)
    centre = rng.uniform(-0.05, 0.05, 3)
    axes = rng.uniform(0.64, 0.8, 3)
    rot = random_rotation(rng)
    r2 = np.zeros((size,) * 3, np.float32)
    for row, a in zip(rot, axes, strict=True):
        proj = sum(float(row[k]) * (u[k] - float(centre[k])) for k in range(3))
        r2 += (proj / float(a)) ** 2
    # keeps the blob inside a ball (not a box, whose faces would cut it flat)
    rounding = 4.0 * np.clip(np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2) - 0.8, 0.0, None)
    level = np.sqrt(r2) + 0.15 * _smooth_noise(rng, r2.shape, 0.15 * size) + rounding
    inside = level < 1.0
    core = np.zeros_like(inside)
    core[(slice(_MARGIN, size - _MARGIN),) * 3] = True
    specimen = _largest_component(inside & core)
    return ndi.binary_fill_holes(specimen)


def _regions(
    rng: np.random.Generator, specimen: np.ndarray, targets: np.ndarray, region_scale: float
) -> np.ndarray:
    """Tissue labelmap (uint8): argmax of smoothed random fields plus a core-to-rim prior, with
    per-class offsets fitted so that the class fractions match ``targets``."""
    size = specimen.shape[0]
    box = _bbox(specimen)
    inside = specimen[box]
    idx = np.argwhere(inside).astype(np.float32)
    # tumour centre: near the specimen centroid, snapped onto a specimen voxel
    centre = idx.mean(axis=0) + rng.normal(0.0, 0.06 * size, 3)
    centre = idx[int(np.argmin(((idx - centre) ** 2).sum(axis=1)))]
    radial = np.sqrt(((idx - centre) ** 2).sum(axis=1)) / (0.5 * size)
    sigma = max(region_scale * size, 3.0)
    fields = np.stack([_smooth_noise(rng, inside.shape, sigma)[inside] for _ in CLASSES])
    fields += _PRIOR_WEIGHT * np.array([-1.0, 0.0, 1.0], np.float32)[:, None] * radial
    log_target = np.log(targets)[:, None]
    bias = np.zeros_like(log_target)
    sample = fields[:, :: max(1, fields.shape[1] // 20000)]  # enough voxels to fit 3 offsets
    for _ in range(60):  # fixed-point fit of the offsets so the argmax hits the targets
        pick = np.argmax(sample + bias, axis=0)
        frac = np.bincount(pick, minlength=len(CLASSES)) / pick.size
        bias += 0.5 * (log_target - np.log(frac + 1e-3)[:, None])
    pick = np.argmax(fields + bias, axis=0)
    labels = np.zeros(specimen.shape, np.uint8)
    sub = labels[box]
    sub[inside] = (pick + 1).astype(np.uint8)
    return labels


def choose_annotated_slices(labelmap: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` axial slices (last axis) spread evenly through the specimen, taken from the
    slices where all three classes appear (each on >= 2 % of the slice's specimen area and
    >= 4 voxels) and the specimen covers >= 30 % of its largest cross-section; slices with
    two classes are used when too few have three. The analog of the seven annotated
    slices of the paper (Sec. 3.3)."""
    counts = np.stack([(labelmap == k).sum(axis=(0, 1)) for k in CLASSES], axis=1)  # (z, k)
    area = counts.sum(axis=1)
    present = (counts >= np.maximum(4, 0.02 * area)[:, None]).sum(axis=1)
    large = area >= 0.3 * area.max()
    for need, where in ((3, large), (2, large), (2, area > 0), (1, area > 0)):
        candidates = np.flatnonzero(where & (present >= need))
        if candidates.size >= n:
            break
    k = min(n, candidates.size)
    if k == 0:
        return []
    ranks = np.unique(np.floor(np.linspace(0, candidates.size - 1, k) + 0.5).astype(int))
    return [int(z) for z in candidates[ranks]]


# --------------------------------------------------------------------------- rendering


def _foam(rng: np.random.Generator, points: np.ndarray, cell: float) -> np.ndarray:
    """Alveolar wall weight (0..1) at ``points`` (n, 3 voxel coordinates): the walls of a
    Voronoi foam with one seed in each cell of a rotated grid of spacing ``cell``, with an
    antialiased profile in the distance to the bisector plane of the two nearest seeds."""
    lo = points.min(axis=0) - 2.0 * cell
    hi = points.max(axis=0) + 2.0 * cell
    centre = 0.5 * (lo + hi)
    half = 0.5 * float(np.sqrt(3.0)) * float((hi - lo).max())  # covers the box when rotated
    ticks = np.arange(-half, half + cell, cell)
    grid = np.stack(np.meshgrid(ticks, ticks, ticks, indexing="ij"), axis=-1).reshape(-1, 3)
    # one seed uniformly inside each cell of a randomly rotated grid: cells of even size
    # without the grid's alignment
    jittered = grid + rng.uniform(0.0, 1.0, grid.shape) * cell
    seeds = contract(random_rotation(rng), jittered.T).T + centre
    dist, near = cKDTree(seeds).query(points, k=2)
    gap = norm(seeds[near[:, 1]] - seeds[near[:, 0]], axis=1)
    to_wall = (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2.0 * np.maximum(gap, 1e-6))
    return np.clip(_WALL_HALF + 0.5 - to_wall, 0.0, 1.0).astype(np.float32)


def _render(
    rng: np.random.Generator,
    design: _Design,
    labels: np.ndarray,
    terms: _Terms,
    alveolus_mm: float,
) -> np.ndarray:
    """Micro-CT-like int16 image of a labelmap: textures, PSF, drift and noise."""
    shape = labels.shape
    obj = np.zeros(shape, np.float32)  # attenuation contrast above air, tumour = 1
    # 1 invasive: dense, a faint smooth texture
    inv = labels == 1
    obj[inv] = _TUMOUR + terms.invasive_var * _smooth_noise(rng, shape, 2.0)[inv]
    # 2 noninvasive: dense with small irregular holes and mottling, mean matched to class 1
    non = labels == 2
    hole_field = _smooth_noise(rng, shape, 1.4)[non]
    holes = np.clip((hole_field - _HOLE_QUANTILE) / 0.15 + 0.5, 0.0, 1.0)
    value = _TUMOUR - terms.hole_depth * holes + terms.mottle * _smooth_noise(rng, shape, 1.5)[non]
    if value.size:
        value += _TUMOUR - float(value.mean())
    obj[non] = value
    # 3 normal: alveolar foam, bright thin walls around air-filled lumina
    nor = labels == 3
    if nor.any():
        cell = alveolus_mm / design.spacing_mm
        walls = _foam(rng, np.argwhere(nor).astype(np.float64), cell)
        # gaps in the walls (pores of Kohn, alveolar ducts) where a smooth field is high
        pores = np.clip(_smooth_noise(rng, shape, 0.4 * cell)[nor] - 1.0, 0.0, 0.5) * 2.0
        obj[nor] = _LUMEN + (_WALL - _LUMEN) * walls * (1.0 - pores)
    obj = ndi.gaussian_filter(obj, terms.psf, truncate=3.0)

    # slow drift of the contrast: a linear gradient plus cupping, at most +-terms.drift
    u = _unit_grid(shape[0])
    direction = rng.standard_normal(3)
    direction /= norm(direction)
    linear = sum(float(direction[k]) * u[k] for k in range(3))
    cupping = u[0] ** 2 + u[1] ** 2 + u[2] ** 2
    drift = 0.6 * linear + 0.4 * (cupping - float(cupping.mean()))
    drift *= terms.drift / max(float(np.abs(drift).max()), 1e-6)

    noise = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.5, truncate=3.0)
    noise *= terms.noise / float(noise.std())
    image = design.air + design.contrast * (obj * (1.0 + drift) + noise)
    return np.clip(np.rint(image), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- cohort


def _case_streams(seed: int, i: int) -> list[np.random.Generator]:
    """Three independent generators (design, anatomy, rendering) of specimen ``i``; the same
    as spawning ``SeedSequence(seed).spawn(n_specimens)[i]``, whatever ``n_specimens`` is."""
    case_seq = np.random.SeedSequence(seed, spawn_key=(i,))
    return [np.random.default_rng(s) for s in case_seq.spawn(3)]


def generate(root: str | Path, **params) -> Path:
    """Write the lung micro-CT phantom cohort to ``root`` (see the module docstring).

    Specimens are designed in a first pass (labelmaps kept zlib-compressed in memory so that
    ``clinical.csv`` can hold the true class fractions and annotated slices) and rendered
    lazily while :func:`medclust.cohort.write_cohort` writes them.
    """
    p = validate_params(params)
    terms = _Terms.of(p["difficulty"])
    size = p["size"]
    shape = (size, size, size)

    rows, maps, designs = [], [], []
    for i in range(p["n_specimens"]):
        design_rng, anat_rng, _ = _case_streams(p["seed"], i)
        design = _design(design_rng, i, p["spacing_range_mm"], terms)
        specimen = _specimen(anat_rng, size)
        labels = _regions(anat_rng, specimen, design.targets, p["region_scale"])
        counts = np.bincount(labels.ravel(), minlength=len(LABELS))[1:]
        fractions = counts / counts.sum()
        slices = choose_annotated_slices(labels, p["n_annotated_slices"])
        row = {
            "case_id": design.case_id,
            "threshold": design.threshold,
            "annotated_slices": ";".join(str(z) for z in slices),
            "spacing_mm": design.spacing_mm,
        }
        for name, fraction in zip(CLASSES.values(), fractions, strict=True):
            row[f"frac_{name}"] = round(float(fraction), 6)
        row["dominant_tissue"] = CLASSES[int(np.argmax(counts)) + 1]
        rows.append(row)
        maps.append(zlib.compress(labels.tobytes(), 1))
        designs.append(design)
        log.debug(
            "designed %s (specimen %d voxels, fractions %s)",
            design.case_id,
            int(counts.sum()),
            np.round(fractions, 3).tolist(),
        )
    clinical = pd.DataFrame(rows)

    def cases() -> Iterator[CaseData]:
        for i, design in enumerate(designs):
            _, _, render_rng = _case_streams(p["seed"], i)
            labels = np.frombuffer(zlib.decompress(maps[i]), np.uint8).reshape(shape)
            maps[i] = b""
            image = _render(render_rng, design, labels, terms, p["alveolus_mm"])
            yield CaseData(
                id=design.case_id,
                image=image,
                spacing=(design.spacing_mm,) * 3,
                mask=(labels > 0).astype(np.uint8),
                labelmap=labels.copy(),
            )

    description = (
        "Phantom micro-CT (int16, scanner-like units) of resected lung cancer specimens: an "
        "irregular specimen in air holding invasive carcinoma (dense, homogeneous), "
        "noninvasive carcinoma (dense with small holes, same mean) and normal tissue "
        "(alveolar foam with walls as bright as the tumour), with PSF blur, drift and noise."
    )
    return write_cohort(
        root,
        cases(),
        clinical,
        name=NAME,
        modality="micro-CT (phantom)",
        description=description,
        labels=LABELS,
        spacing_note=(
            f"isotropic voxels, spacing per specimen in clinical.csv spacing_mm (drawn from "
            f"{p['spacing_range_mm'][0]}-{p['spacing_range_mm'][1]} mm); axial slices along the "
            "last axis"
        ),
        mask_labels={"0": "background", "1": "specimen"},
        clinical_label="dominant_tissue",
        ground_truth=(
            "labelmap: tissue class of every specimen voxel (1 invasive_carcinoma, "
            "2 noninvasive_carcinoma, 3 normal), 0 outside the specimen; clinical.csv "
            "frac_<class> are the true class fractions of the specimen, threshold separates "
            "specimen from air (image > threshold), annotated_slices are the evaluation slices"
        ),
        generator_params=recorded(p),
    )
