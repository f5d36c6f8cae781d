"""The emphysema chest-CT cohort's design: subtypes, labels, defaults and their checks, the
subtype assignment in exact proportions and each case's latent severity, target extent and
lesion design (:func:`_design`); see :mod:`medclust_phantoms.emphysema_ct`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medclust_phantoms.params import fail, integer, merged, number, numbers

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
    "n_test": 400,  # paper: 500; 400 puts the 95 % interval of an accuracy near 0.4 at +-0.05
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
