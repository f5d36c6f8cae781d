"""Rendering one liver MRI case (:func:`_render`: intensities, bias field, noise) and the
cohort (:func:`case_grades`, :func:`generate`)."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from medclust.cohort import CaseData, write_cohort
from medclust_phantoms.liver_mri.anatomy import (
    _anatomy,
    _bbox,
    _grid,
    _smooth_noise,
)
from medclust_phantoms.liver_mri.design import (
    _BONE,
    _FAT_SHIFT,
    _KIDNEY,
    _LIVER,
    _LIVER_NOMINAL,
    _MUSCLE,
    _SPLEEN,
    _TISSUE_MEAN,
    _VISCERA,
    CLASSES,
    NAME,
    _case_meta,
    _Meta,
    _Terms,
    grade_counts_for,
    validate_params,
)
from medclust_phantoms.params import recorded

log = logging.getLogger(__name__)


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
        generator_params=recorded(p),
    )
