"""Rendering a slice as CT, T1 MRI or FDG PET (:func:`make_case`) and the head modalities
cohort (:func:`generate`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from medclust.cohort import CaseData, write_cohort
from medclust_phantoms.exact import contract
from medclust_phantoms.head_modalities.anatomy import (
    _draw_geometry,
    _Geometry,
    _tissue_fractions,
    head_model,
)
from medclust_phantoms.head_modalities.design import (
    _LABEL_OF_TISSUE,
    _T,
    _TISSUES,
    DEFAULTS,
    LABELS,
    MASK_LABELS,
    MODALITIES,
    NAME,
    _Terms,
    assign_splits,
    validate_params,
)
from medclust_phantoms.params import recorded


def _correlated_noise(rng: np.random.Generator, shape: tuple, sigma_px: float) -> np.ndarray:
    """Gaussian noise with unit sd, smoothed over ``sigma_px`` pixels (reconstruction kernel)."""
    n = ndi.gaussian_filter(rng.standard_normal(shape), sigma_px)
    return n / max(float(n.std()), 1e-9)


def _jittered(rng: np.random.Generator, values: dict[str, float], jitter: float) -> np.ndarray:
    return np.array([values[t] * (1.0 + rng.normal(0.0, jitter)) for t in _TISSUES], np.float32)


def _render_ct(rng, f: np.ndarray, spacing: float, terms: _Terms) -> np.ndarray:
    """CT in HU: partial-volume mix of tissue HU, sharp PSF, correlated Gaussian noise."""
    c = terms.contrast
    bone = rng.uniform(1300.0, 1900.0) * (0.55 + 0.45 * c)
    gm = rng.normal(40.0, 2.0)
    wm = gm - rng.uniform(6.0, 11.0)  # low GM/WM contrast
    hu = {
        "air": -1000.0,
        "skin": 50.0,
        "fat": -90.0,
        "muscle": 45.0,
        "table": bone,
        "diploe": bone * rng.uniform(0.35, 0.5),
        "csf": 5.0,
        "gm": gm,
        "wm": wm,
    }
    values = _jittered(rng, {k: 1.0 for k in hu}, terms.jitter * 0.3)
    values = np.array([hu[t] for t in _TISSUES], np.float32) * values
    values[_T["air"]] = -1000.0
    img = contract(values, f)
    img = ndi.gaussian_filter(img, 0.6 / spacing)
    img += rng.normal(0.0, 30.0 * terms.jitter)  # calibration offset (HU)
    sd = rng.uniform(3.0, 6.0) * terms.noise
    img += sd * _correlated_noise(rng, img.shape, 0.7)
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16)


def _render_mri(rng, f: np.ndarray, spacing: float, terms: _Terms) -> np.ndarray:
    """T1-weighted MRI: tissue intensities (WM ~1000 x gain), bias field, Rician noise."""
    c = terms.contrast
    wm = 1000.0
    gm = wm * (1.0 - rng.uniform(0.28, 0.38) * c)
    t1 = {
        "air": 0.0,
        "skin": wm * 0.65,
        "fat": wm * (1.0 + rng.uniform(0.2, 0.5) * c),
        "muscle": wm * 0.5,
        "table": wm * (0.25 - 0.17 * c),
        "diploe": wm * (0.6 + 0.35 * c),
        "csf": wm * (0.55 - 0.35 * c),
        "gm": gm,
        "wm": wm,
    }
    values = _jittered(rng, t1, terms.jitter)
    img = contract(values, f)
    img = ndi.gaussian_filter(img, 0.7 / spacing)
    n = img.shape[0]
    g = (np.arange(n) + 0.5) / n * 2 - 1
    gx, gy = np.meshgrid(g, g, indexing="ij")
    basis = [gx, gy, gx * gy, gx**2, gy**2]
    poly = sum(a * b for a, b in zip(rng.normal(0.0, 1.0, len(basis)), basis, strict=True))
    poly = poly / max(float(np.abs(poly).max()), 1e-6)
    img *= np.exp(terms.bias * poly)
    img *= rng.uniform(0.6, 1.6)  # receiver gain
    sd = rng.uniform(0.01, 0.02) * terms.noise * float(np.percentile(img, 99))
    real = img + rng.normal(0.0, sd, img.shape)
    imag = rng.normal(0.0, sd, img.shape)
    return np.clip(np.rint(np.hypot(real, imag)), 0, 32767).astype(np.int16)


def _render_pet(rng, f: np.ndarray, spacing: float, terms: _Terms) -> np.ndarray:
    """FDG PET (SUV x 1000): GM >> WM uptake, Gaussian PSF, Poisson counting noise."""
    c = terms.contrast
    gm = rng.uniform(7000.0, 11000.0)
    ratio = 1.0 + rng.uniform(1.8, 2.6) * c  # GM / WM
    wm = gm / ratio
    extra = rng.uniform(0.06, 0.12) + 0.25 * (1.0 - c)  # scalp/muscle uptake (x GM)
    suv = {
        "air": 0.0,
        "skin": gm * extra * 0.7,
        "fat": gm * extra * 0.3,
        "muscle": gm * extra,
        "table": gm * 0.03,
        "diploe": gm * 0.06,
        "csf": wm * 0.15,
        "gm": gm,
        "wm": wm,
    }
    values = _jittered(rng, suv, terms.jitter)
    img = contract(values, f)
    fwhm = rng.uniform(6.0, 8.0) + terms.pet_fwhm_extra
    img = ndi.gaussian_filter(img, fwhm / 2.3548 / spacing)
    counts_gm = rng.uniform(60.0, 150.0) / terms.noise  # expected counts in GM per pixel
    lam = np.clip(img, 0, None) * (counts_gm / gm)
    img = rng.poisson(lam).astype(np.float64) * (gm / counts_gm)
    img = ndi.gaussian_filter(img, 0.6)  # reconstruction post-filter
    return np.clip(np.rint(img), 0, 32767).astype(np.int16)


_RENDER = {"CT": _render_ct, "MRI": _render_mri, "PET": _render_pet}


def _case_rngs(seed: int, m_idx: int, i: int) -> list[np.random.Generator]:
    """Two independent generators (anatomy, rendering) of image ``i`` of modality ``m_idx``;
    independent of the counts."""
    seq = np.random.SeedSequence(seed, spawn_key=(m_idx, i))
    return [np.random.default_rng(s) for s in seq.spawn(2)]


def make_case(
    seed: int,
    modality: str,
    i: int,
    *,
    size: int = 128,
    fov_mm: float = 240.0,
    difficulty: float = 0.5,
    slice_range_mm: tuple[float, float] = DEFAULTS["slice_range_mm"],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Geometry]:
    """Image (int16), mask (uint8) and labelmap (uint8) of image ``i`` of ``modality``, and
    its geometry; what :func:`generate` writes (parameters as in :data:`DEFAULTS`)."""
    m_idx = MODALITIES.index(modality)
    terms = _Terms.of(difficulty)
    anat_rng, render_rng = _case_rngs(seed, m_idx, i)
    geom = _draw_geometry(anat_rng, terms, slice_range_mm)
    f = _tissue_fractions(anat_rng, geom, size, fov_mm, terms)
    image = _RENDER[modality](render_rng, f, fov_mm / size, terms)
    groups = np.stack([f[_LABEL_OF_TISSUE == k].sum(axis=0) for k in sorted(LABELS)])
    labelmap = np.argmax(groups, axis=0).astype(np.uint8)
    mask = ndi.binary_fill_holes(np.isin(labelmap, MASK_LABELS)).astype(np.uint8)
    return image, mask, labelmap, geom


# --------------------------------------------------------------------------- cohort


def generate(root: str | Path, **params) -> Path:
    """Write the head modalities phantom cohort to ``root`` (see the module docstring).

    A first pass draws every case's geometry (cheap) for ``clinical.csv``; the images are
    rendered lazily while :func:`medclust.cohort.write_cohort` writes them.
    """
    p = validate_params(params)
    counts, size, fov = p["counts"], p["size"], p["fov_mm"]
    terms = _Terms.of(p["difficulty"])
    spacing = (fov / size, fov / size)
    splits = assign_splits(p["seed"], counts, p["split"])
    head_model()  # load the template once up front (fails early without nilearn)

    order = [(m, i) for m in MODALITIES for i in range(counts[m])]
    rows = []
    for modality, i in order:
        anat_rng, _ = _case_rngs(p["seed"], MODALITIES.index(modality), i)
        geom = _draw_geometry(anat_rng, terms, p["slice_range_mm"])
        rows.append(
            {
                "case_id": _case_id(modality, i),
                "modality": modality,
                "split": str(splits[modality][i]),
                "subject": f"sub-{modality.lower()}{i:03d}",
                **geom.row,
            }
        )
    clinical = pd.DataFrame(rows)

    def cases() -> Iterator[CaseData]:
        for modality, i in order:
            image, mask, labelmap, _ = make_case(
                p["seed"],
                modality,
                i,
                size=size,
                fov_mm=fov,
                difficulty=p["difficulty"],
                slice_range_mm=p["slice_range_mm"],
            )
            cid = _case_id(modality, i)
            yield CaseData(id=cid, image=image, spacing=spacing, mask=mask, labelmap=labelmap)

    description = (
        "Phantom 2D axial head images of three modalities (CT in HU, T1-weighted MRI in "
        "arbitrary units, FDG PET in SUV x 1000) built from the MNI152 template and its "
        "grey/white-matter maps (nilearn), with a synthetic skull and scalp, per-subject "
        "deformation, the residual misalignment of an affine registration to the atlas, and "
        "modality physics (CT bone, MRI bias field and Rician noise, PET blur and Poisson "
        "noise). Ground truth: clinical.csv 'modality'. Stored raw; normalise each image to "
        "[0, 1] (medclust.intensity.rescale_percentiles) before clustering, as the thesis did."
    )
    return write_cohort(
        root,
        cases(),
        clinical,
        name=NAME,
        modality="CT / MR (T1) / PET (FDG) phantom",
        description=description,
        labels=dict(LABELS),
        spacing_note=(
            f"2D axial slices, {size} x {size} pixels of {fov / size:g} x {fov / size:g} mm "
            "(x left->right, y posterior->anterior, MNI orientation)"
        ),
        mask_labels={"0": "background", "1": "intracranial (brain + CSF)"},
        clinical_label="modality",
        ground_truth="clinical.csv 'modality' (CT, MRI, PET); 'split' is train/val/test",
        intensity_note=(
            "raw physical units per modality (CT: HU; MRI: a.u.; PET: SUV x 1000); "
            "apply medclust.intensity.rescale_percentiles (per-image 0.5-99.5 "
            "percentile min-max) before clustering"
        ),
        generator_params=recorded(p),
    )


def _case_id(modality: str, i: int) -> str:
    return f"{modality.lower()}_{i:03d}"
