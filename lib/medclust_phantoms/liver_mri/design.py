"""The liver MRI cohort's design: texture classes, tissue intensities, defaults and their checks,
the grade counts, the difficulty terms and each case's draws (:func:`_case_meta`); see
:mod:`medclust_phantoms.liver_mri`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medclust_phantoms.params import fail, integer, merged, number, numbers

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
