"""Rendering one liver MRI case (:func:`_render`: intensities, bias field, noise) and the
cohort (:func:`case_grades`, :func:`generate`)."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medclust.cohort import CaseData, write_cohort
from medclust_phantoms.liver_mri.anatomy import (
    _anatomy,
    _grid,
    _smooth_noise,
)
from medclust_phantoms.liver_mri.design import (
    _BONE,
    _KIDNEY,
    _LIVER,
    _LIVER_NOMINAL,
    _MUSCLE,
    _SPLEEN,
    _TISSUE_MEAN,
    _VESSEL,
    _VISCERA,
    CLASSES,
    NAME,
    _case_meta,
    _Meta,
    _Terms,
    blood_signal_ratio,
    fat_signal_ratio,
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
    pdff: np.ndarray,
    spacing: tuple,
    terms: _Terms,
) -> np.ndarray:
    """T1w int16 image of a tissue map and PDFF map: the liver's spoiled-gradient-echo signal
    (:func:`~.design.fat_signal_ratio`, :func:`~.design.blood_signal_ratio`), the other
    tissues' intensities, the case's gain, a bias field and Rician noise."""
    shape = tissue.shape
    img = np.zeros(shape, np.float32)
    for code, level in _TISSUE_MEAN.items():
        img[tissue == code] = level
    soft = _smooth_noise(rng, shape, (3.0, 3.0, 1.0))
    viscera = tissue == _VISCERA
    img[viscera] += 110.0 * soft[viscera]
    organs = (tissue == _SPLEEN) | (tissue == _KIDNEY) | (tissue == _BONE) | (tissue == _MUSCLE)
    img[organs] *= 1.0 + 0.03 * soft[organs]

    # liver: (1 - f) water + f fat protons (in-phase echo), lumen of unenhanced blood
    liver = tissue >= _LIVER
    vessel = tissue == _LIVER + _VESSEL
    fat = fat_signal_ratio(meta.tr_ms, meta.flip_deg)
    parenchyma = liver & ~vessel
    f = pdff[parenchyma].astype(np.float64) / 100.0
    img[parenchyma] = (_LIVER_NOMINAL * ((1.0 - f) + f * fat)).astype(np.float32)
    img[vessel] = np.float32(_LIVER_NOMINAL * blood_signal_ratio(meta.tr_ms, meta.flip_deg))
    img *= np.float32(meta.gain)

    # smooth multiplicative bias field (random quadratic in normalised coordinates)
    u = [g / max(float(np.abs(g).max()), 1e-6) for g in _grid(shape, spacing)]
    terms_ = [u[0], u[1], 0.5 * u[2], u[0] * u[1], u[0] ** 2, u[1] ** 2]
    coef = rng.normal(0.0, 1.0, len(terms_))
    poly = sum(a * t for a, t in zip(coef, terms_, strict=True))
    poly = poly / max(float(np.abs(poly).max()), 1e-6)
    img *= np.exp(terms.bias * poly).astype(np.float32)

    # Rician noise: magnitude of the signal plus complex Gaussian noise
    sd = terms.noise * meta.noise_scale * _LIVER_NOMINAL * meta.gain
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
        meta = _case_meta(meta_rng, int(grade))
        tissue, pdff = _anatomy(anat_rng, meta, shape, spacing, p["segment_scale_mm"])
        labels = np.where(tissue >= _LIVER, tissue - _LIVER, 0)
        counts = np.bincount(labels.ravel(), minlength=8)[1:8]
        n_liver = int(counts.sum())
        row = {
            "case_id": cid,
            "grade": meta.grade,
            "steatosis": "high" if meta.grade >= 2 else "low",
        }
        row.update({f"frac_{CLASSES[k]}": counts[k - 1] / n_liver for k in CLASSES})
        row["pdff_biopsy"] = round(meta.pdff_biopsy, 2)
        parenchyma = pdff[(labels > 0) & (labels < _VESSEL)].astype(np.float64)
        row["pdff_liver"] = round(float(parenchyma.mean()), 2) if parenchyma.size else 0.0
        row.update({"age": meta.age, "sex": meta.sex})
        rows.append(row)
        maps.append((zlib.compress(tissue.tobytes(), 1), zlib.compress(pdff.tobytes(), 1)))
        metas.append(meta)
        log.debug("designed %s (grade %d, liver %d voxels)", cid, meta.grade, n_liver)
    clinical = pd.DataFrame(rows)
    for col in clinical.columns:
        if col.startswith("frac_"):
            clinical[col] = clinical[col].round(6)

    def cases() -> Iterator[CaseData]:
        for i, cid in enumerate(ids):
            _, _, render_rng = _case_streams(p["seed"], i)
            tissue = np.frombuffer(zlib.decompress(maps[i][0]), np.uint8).reshape(shape)
            pdff = np.frombuffer(zlib.decompress(maps[i][1]), np.float32).reshape(shape)
            maps[i] = (b"", b"")
            image = _render(render_rng, metas[i], tissue, pdff, spacing, terms)
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
        "Phantom T1-weighted abdominal MRI (int16, arbitrary units; 3D spoiled gradient echo "
        "at 1.5 T, in-phase) of steatosis cases: body, organs, a liver with portal and hepatic "
        "vessel trees, per-site sequence and gain, bias field and Rician noise. The liver's fat "
        "(PDFF) follows the biopsy grade with segmental heterogeneity; in steatotic parenchyma "
        "fat is spared in geographic areas and along the vessels."
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
            "labelmap: class of every liver voxel (1 parenchyma, 2 sparing_faint, "
            "3 sparing_marked, 4 perivascular_faint, 5 perivascular_marked, 6 vessel_wall, "
            "7 vessel), 0 outside the liver mask; classes 2-5 are fat-spared areas of steatotic "
            "parenchyma (faint: grade-1 surroundings, marked: grade 2 or more); clinical.csv "
            "frac_<class> are the true class fractions of the liver, pdff_biopsy and pdff_liver "
            "the biopsy-site and mean parenchyma PDFF (%)"
        ),
        generator_params=recorded(p),
    )
