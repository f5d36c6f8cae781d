"""The head modalities cohort's design: modalities, splits, labels, defaults and their checks,
the split assignment and the difficulty terms; see :mod:`medclust_phantoms.head_modalities`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medclust_phantoms.params import fail, integer, merged, number, numbers

NAME = "head_modalities"
MODALITIES: tuple[str, ...] = ("CT", "MRI", "PET")
SPLITS: tuple[str, ...] = ("train", "val", "test")

DEFAULTS: dict = {
    "seed": 0,
    "counts": {"CT": 354, "MRI": 354, "PET": 283},  # images per modality (thesis Table 3.1)
    "split": (0.7, 0.1, 0.2),  # train/val/test fractions, stratified by modality (Sec. 3.1)
    "size": 128,  # pixels per side (thesis: 128 x 128)
    "fov_mm": 240.0,  # field of view per side: pixel spacing = fov_mm / size (1.875 mm)
    "difficulty": 0.5,  # 0 easy .. 1 hard: contrast, noise, blur, anatomical variation
    # MNI z range of the axial slices: one atlas level (z = 25 mm, lateral ventricles) with the
    # few-mm residual of an affine registration to it (thesis Sec. 3.1: "coregistered to a
    # common atlas in order to reduce variability")
    "slice_range_mm": (22.0, 28.0),
}

LABELS: dict[int, str] = {
    0: "background",
    1: "scalp",
    2: "skull",
    3: "CSF",
    4: "grey matter",
    5: "white matter",
}
MASK_LABELS = (3, 4, 5)  # intracranial: the mask

_SLICE_LIMITS = (-40.0, 75.0)  # allowed slice_range_mm (brain of the template: z -72..+80)
_MNI_CENTRE_Y = -17.0  # centre of the head in MNI y (mm)

# tissues of the rendering model, in the order of the fraction stack
_TISSUES = ("air", "skin", "fat", "muscle", "table", "diploe", "csf", "gm", "wm")
_T = {name: k for k, name in enumerate(_TISSUES)}
_LABEL_OF_TISSUE = np.array([0, 1, 1, 1, 2, 2, 3, 4, 5], np.uint8)


# --------------------------------------------------------------------------- parameters


def _counts(value) -> dict[str, int]:
    if isinstance(value, Mapping):
        if set(value) != set(MODALITIES):
            raise fail(NAME, "counts", f"must have exactly the keys {list(MODALITIES)}", value)
        items = [value[m] for m in MODALITIES]
    elif isinstance(value, Sequence | np.ndarray) and not isinstance(value, str | bytes):
        items = list(value)
    else:
        raise fail(NAME, "counts", f"must map {list(MODALITIES)} to image counts", value)
    ok = len(items) == len(MODALITIES) and all(
        not isinstance(v, bool) and isinstance(v, int | np.integer) and v >= 1 for v in items
    )
    if not ok:
        raise fail(
            NAME, "counts", f"must give an integer >= 1 for each of {list(MODALITIES)}", value
        )
    return {m: int(v) for m, v in zip(MODALITIES, items, strict=True)}


def validate_params(params: dict) -> dict:
    """Merge ``params`` into :data:`DEFAULTS` and check every value; raise ``ValueError`` (or
    ``TypeError`` for an unknown name) naming the offending parameter."""
    p = merged(NAME, DEFAULTS, params)
    out = {
        "seed": integer(NAME, p, "seed", 0),
        "counts": _counts(p["counts"]),
        "size": integer(NAME, p, "size", 32),
        "fov_mm": number(NAME, p, "fov_mm", 160.0, 320.0),
        "difficulty": number(NAME, p, "difficulty", 0.0, 1.0),
    }
    if out["size"] > 1024:
        raise fail(NAME, "size", "must be at most 1024", p["size"])
    split = numbers(NAME, p, "split", 3)
    if min(split) < 0 or abs(sum(split) - 1.0) > 1e-6:
        raise fail(
            NAME,
            "split",
            "must be 3 non-negative fractions (train, val, test) summing to 1",
            p["split"],
        )
    out["split"] = split
    lo, hi = numbers(NAME, p, "slice_range_mm", 2)
    if not _SLICE_LIMITS[0] <= lo <= hi <= _SLICE_LIMITS[1]:
        raise fail(
            NAME,
            "slice_range_mm",
            f"must be (low, high) with {_SLICE_LIMITS[0]} <= low <= high <= {_SLICE_LIMITS[1]}",
            p["slice_range_mm"],
        )
    out["slice_range_mm"] = (lo, hi)
    return out


# --------------------------------------------------------------------------- splits


def split_counts(n: int, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> tuple[int, int, int]:
    """Images of one modality per split (train, val, test): ``n * fractions`` rounded by
    largest remainders (ties to the earlier split), so the counts always sum to ``n``."""
    raw = np.asarray(fractions, float) * n
    counts = np.floor(raw + 1e-9).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return tuple(int(c) for c in counts)


def assign_splits(
    seed: int, counts: Mapping[str, int], fractions: Sequence[float] = (0.7, 0.1, 0.2)
) -> dict[str, np.ndarray]:
    """Split name of every image of each modality: :func:`split_counts` of that modality,
    shuffled by ``seed`` (stratified by modality, as the thesis's 70:10:20 split)."""
    out = {}
    for m_idx, modality in enumerate(MODALITIES):
        n = int(counts[modality])
        names = np.repeat(np.asarray(SPLITS), split_counts(n, fractions))
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5B1, m_idx]))
        out[modality] = rng.permutation(names)
    return out


# --------------------------------------------------------------------------- difficulty


@dataclass(frozen=True)
class _Terms:
    """What ``difficulty`` sets, and the residual misregistration it does not set.

    The images are as after the thesis' co-registration to a common atlas (Sec. 3.1), so the
    affine terms are the residual of an affine registration -- about 1 degree, 1-2 mm and 1-2 %
    of scale, a few mm at the skull -- whatever the difficulty; the smooth nonlinear
    deformation (anatomy an affine registration cannot remove) grows with it.
    """

    rotation_deg: float  # sd of the in-plane rotation (residual)
    shift_mm: float  # sd of the in-plane shift (residual)
    scale_sd: float  # sd of the log scale (residual)
    tilt_deg: float  # sd of the out-of-plane tilt, pitch and roll (residual)
    warp_mm: float  # sd of the smooth nonlinear displacement
    jitter: float  # relative sd of per-tissue intensity jitter
    contrast: float  # modality-distinguishing contrast multiplier
    noise: float  # noise multiplier
    bias: float  # MRI bias-field amplitude (log scale)
    pet_fwhm_extra: float  # extra PET blur (mm)

    @classmethod
    def of(cls, d: float) -> _Terms:
        return cls(
            rotation_deg=1.0,
            shift_mm=1.5,
            scale_sd=0.015,
            tilt_deg=1.0,
            warp_mm=1.0 + 4.0 * d,
            jitter=0.02 + 0.10 * d,
            contrast=1.0 - 0.6 * d,
            noise=0.5 + 2.0 * d,
            bias=0.05 + 0.35 * d,
            pet_fwhm_extra=4.0 * d,
        )
