"""The liver MRI cohort's design: texture classes, tissue intensities, defaults and their checks,
the grade counts, the difficulty terms and each case's draws (:func:`_case_meta`); see
:mod:`medclust_phantoms.liver_mri`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medclust_phantoms.params import fail, integer, merged, number, numbers

NAME = "liver_mri"

DEFAULTS: dict = {
    "seed": 0,
    "n_cases": 70,
    "grade_counts": (1, 20, 32, 17),  # cases of grade 0-3 (the paper); scaled to n_cases
    "shape": (160, 128, 20),  # voxels x, y, z
    "spacing": (1.5, 1.5, 5.0),  # mm
    "difficulty": 0.5,  # 0 easy .. 1 hard: noise and bias field
    "segment_scale_mm": 25.0,  # correlation scale of the segmental fat heterogeneity
}

# Truth classes: what a texture description of the liver could tell apart. The diffuse fat
# (the part of the grade that T1w "does not directly quantify") changes the brightness of the
# whole parenchyma, not its pattern, so all diffuse parenchyma is one class; the patterns fat
# makes visible are the fat-spared areas, geographic or along the vessels (the focal and
# perivascular distributions with geographic margins of Hamer et al., RadioGraphics
# 2006;26:1637-1653), whose contrast grows with the surrounding fat: "faint" where the
# surrounding PDFF is of grade 1 (6.4-17.4 %), "marked" from grade 2 (>= 17.4 %).
CLASSES: dict[int, str] = {
    1: "parenchyma",  # diffuse parenchyma at any fat level
    2: "sparing_faint",  # geographic fat sparing in grade-1-level surroundings
    3: "sparing_marked",  # geographic fat sparing in grade-2-or-more surroundings
    4: "perivascular_faint",  # fat sparing along a vessel, grade-1-level surroundings
    5: "perivascular_marked",  # fat sparing along a vessel, grade-2-or-more surroundings
    6: "vessel_wall",  # within the rim width of a vessel in lean liver (nothing spared)
    7: "vessel",  # lumen (portal or hepatic tree)
}
GRADE_CLASSES = (2, 3, 4, 5)
UNRELATED_CLASSES = (1, 6, 7)
_VESSEL = 7

# PDFF (%) cut-offs between the histological grades 0|1|2|3 (Tang et al., Radiology
# 2013;267:422-431, as tabulated in the paper's ref. [4], Dulai et al. 2016, Table 1). The
# paper's grades are histological (Kleiner et al. 2005, its ref. [5]); each case's
# biopsy-site PDFF is drawn within its grade's interval.
PDFF_CUTS = (6.4, 17.4, 22.1)
PDFF_RANGE = (1.0, 35.0)  # lowest / highest biopsy-site PDFF drawn (%): assumption
SPARED_PDFF = (1.0, 4.0)  # PDFF of spared liver: normal liver, below grade 1 (assumption)

# 1.5 T longitudinal relaxation (ms): liver and subcutaneous fat from de Bazelaire et al.,
# Radiology 2004 (its 1.5 T column, as recalled: liver 586, fat 343; its 3 T column, checked in
# the abstract: 809 and 382); venous blood ~1200 ms at 1.5 T. Proton densities relative to
# water: approximate (liver 0.70, blood 0.87).
T1_MS = {"liver_water": 586.0, "fat": 343.0, "blood": 1200.0}
PD = {"liver": 0.70, "blood": 0.87}
# A multi-centre cohort (the paper) of 3D spoiled gradient-echo T1w scans at 1.5 T with an
# in-phase echo; each site its own TR and flip angle, drawn from typical clinical ranges.
TR_MS = (3.5, 6.0)
FLIP_DEG = (8.0, 15.0)
# Heterogeneity (assumptions, not fitted to any result): segmental log-PDFF sd over
# ``segment_scale_mm`` (the paper: whole-liver fat vs a biopsy "limited to a single position");
# voxel-scale log-PDFF sd (lobules averaged in a 1.5 x 1.5 x 5 mm voxel); the share of the
# steatotic parenchyma in geographic sparing and the smoothing scale of its shapes; the width
# of the spared rim along the vessels.
SEGMENT_LOG_SD = 0.15
VOXEL_LOG_SD = 0.3
SPARING_SHARE = (0.03, 0.15)
SPARING_SCALE_MM = 8.0
RIM_MM = (2.0, 6.0)

# tissue codes of the internal full-volume tissue map; liver voxels are _LIVER + class
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
_LIVER_NOMINAL = 820.0  # intensity of fat-free liver at unit gain, also the noise reference


def spoiled_gre(t1_ms: float, tr_ms: float, flip_deg: float) -> float:
    """Steady-state signal per unit proton density of a spoiled gradient echo,
    ``sin a (1 - E1) / (1 - cos a E1)`` with ``E1 = exp(-TR / T1)`` (T2* decay left out: the
    in-phase echo weighs water and fat alike)."""
    e1 = math.exp(-tr_ms / t1_ms)
    a = math.radians(flip_deg)
    return math.sin(a) * (1.0 - e1) / (1.0 - math.cos(a) * e1)


def fat_signal_ratio(tr_ms: float, flip_deg: float) -> float:
    """Signal of a fat proton over a liver-water proton in the case's sequence: a voxel of
    PDFF ``f`` gives ``(1 - f) + f * ratio`` times the fat-free signal."""
    return spoiled_gre(T1_MS["fat"], tr_ms, flip_deg) / spoiled_gre(
        T1_MS["liver_water"], tr_ms, flip_deg
    )


def blood_signal_ratio(tr_ms: float, flip_deg: float) -> float:
    """Vessel lumen over fat-free liver (unenhanced blood, no inflow)."""
    blood = PD["blood"] * spoiled_gre(T1_MS["blood"], tr_ms, flip_deg)
    return blood / (PD["liver"] * spoiled_gre(T1_MS["liver_water"], tr_ms, flip_deg))


def pdff_grade(pdff: np.ndarray) -> np.ndarray:
    """Histological grade 0-3 whose PDFF interval (:data:`PDFF_CUTS`) holds each value (%)."""
    return np.searchsorted(np.asarray(PDFF_CUTS), pdff, side="right").astype(np.uint8)


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
        "segment_scale_mm": number(NAME, p, "segment_scale_mm", 5.0, 100.0),
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
    """What ``difficulty`` sets: the acquisition's imperfections (the liver's biology does
    not change with it)."""

    noise: float  # noise sigma as a fraction of the fat-free liver intensity (1 / SNR)
    bias: float  # bias-field amplitude (log scale)

    @classmethod
    def of(cls, d: float) -> _Terms:
        # at the default 0.5: SNR ~17 before the per-case factor, bias +-22 %
        return cls(noise=0.02 + 0.08 * d, bias=0.05 + 0.35 * d)


# --------------------------------------------------------------------------- case design


@dataclass
class _Meta:
    """Per-case draws that do not depend on the anatomy."""

    grade: int
    pdff_biopsy: float  # PDFF (%) at the biopsy site
    tr_ms: float  # the site's repetition time
    flip_deg: float  # the site's flip angle
    gain: float  # receiver scaling: arbitrary units, not comparable between cases
    spared_pdff: float  # PDFF (%) of the spared areas
    sparing_share: float  # share of the steatotic parenchyma in geographic sparing
    rim_mm: float  # width of the spared rim along the vessels
    age: int
    sex: str
    noise_scale: float  # per-case (scanner/site) multiplier of the noise level


def _case_meta(rng: np.random.Generator, grade: int) -> _Meta:
    """The biopsy-site PDFF is drawn uniformly within the case's grade interval of
    :data:`PDFF_CUTS` (within :data:`PDFF_RANGE`); the sparing, the sequence, gain and noise
    are drawn independently of the grade."""
    edges = (PDFF_RANGE[0], *PDFF_CUTS, PDFF_RANGE[1])
    pdff = rng.uniform(edges[grade], edges[grade + 1])
    tr = rng.uniform(*TR_MS)
    flip = rng.uniform(*FLIP_DEG)
    gain = rng.uniform(0.7, 1.3)
    spared = rng.uniform(*SPARED_PDFF)
    share = rng.uniform(*SPARING_SHARE)
    rim = rng.uniform(*RIM_MM)
    age = int(np.clip(np.rint(rng.normal(52.0, 12.0)), 18, 90))
    sex = "F" if rng.random() < 0.45 else "M"
    noise_scale = rng.uniform(0.7, 1.3)
    return _Meta(
        grade=grade,
        pdff_biopsy=float(pdff),
        tr_ms=float(tr),
        flip_deg=float(flip),
        gain=float(gain),
        spared_pdff=float(spared),
        sparing_share=float(share),
        rim_mm=float(rim),
        age=age,
        sex=sex,
        noise_scale=float(noise_scale),
    )
