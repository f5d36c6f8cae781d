"""Emphysema lesions (:func:`_emphysema`), one rendered case (:func:`make_case`) and the
emphysema chest-CT cohort (:func:`generate`)."""

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
from medclust_phantoms.emphysema_ct.design import (
    _PARASEPTAL_DEPTH_MM,
    DEFAULTS,
    LABELS,
    NAME,
    SUBTYPES,
    _Design,
    _design,
    case_subtypes,
    validate_params,
)
from medclust_phantoms.emphysema_ct.thorax import (
    _HU_BLOOD,
    _bbox,
    _block_mean,
    _grid,
    _thorax,
    _two_lungs,
    _vessel_occupancy,
)
from medclust_phantoms.params import recorded

log = logging.getLogger(__name__)


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
        generator_params=recorded(p),
    )
