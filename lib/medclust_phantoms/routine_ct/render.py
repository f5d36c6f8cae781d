"""Rendering a planned patient of the routine chest CT phantom: the canonical tissues pulled back
to the patient's grid, painted in HU, the present findings painted in (:func:`_paint_findings`),
the scanner model (blur, noise, int16) and the field-of-view crop (:func:`render_patient`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from medclust_phantoms.routine_ct.anatomy import (
    _LUNG_CODES,
    _TISSUE_HU,
    ANATOMY,
    LOBE_CODES,
    T_EFFUSION,
    T_HEART,
    canonical_tissue,
    tissue_labels,
)
from medclust_phantoms.routine_ct.patient import (
    PatientPlan,
    canonical_coordinates,
    case_streams,
    fov_slab,
)
from medclust_phantoms.routine_ct.population import FINDINGS

# --------------------------------------------------------------------------- rendering


def smooth_noise(
    rng: np.random.Generator, shape: Sequence[int], sigma: Sequence[float]
) -> np.ndarray:
    """Gaussian-smoothed white noise (sigma in voxels) with zero mean and unit sd."""
    white = rng.standard_normal(tuple(int(n) for n in shape))
    smooth = ndi.gaussian_filter(white, [float(s) for s in sigma], mode="wrap", truncate=3.0)
    smooth -= smooth.mean()
    sd = float(smooth.std())
    return smooth / sd if sd > 0 else smooth


def tissue_hu(
    rng: np.random.Generator, tissue: np.ndarray, coords: np.ndarray, spacing: Sequence[float]
) -> np.ndarray:
    """HU of a tissue map (float32) before findings, blur and noise: tissue values, a
    dependent density gradient in the lungs (+0..45 HU anterior to posterior) and sparse
    vessel-like bright spots."""
    hu = _TISSUE_HU[tissue].astype(np.float32)
    lung = np.isin(tissue, _LUNG_CODES)
    gradient = 45.0 * np.clip((coords[1] + 70.0) / 150.0, 0.0, 1.0)
    vessels = smooth_noise(rng, tissue.shape, _mm_sigma(5.0, spacing))
    extra = gradient + 180.0 * np.clip(vessels - 1.1, 0.0, None)
    hu[lung] += extra[lung].astype(np.float32)
    return hu


def finish_image(
    rng: np.random.Generator, hu: np.ndarray, noise_sd: float, blur_vox: float
) -> np.ndarray:
    """Scanner model: Gaussian blur (``blur_vox`` in-plane, 0.6 of it through-plane), white
    Gaussian noise of sd ``noise_sd`` HU, rounding to int16 HU in [-1024, 3071]."""
    img = ndi.gaussian_filter(hu, (blur_vox, blur_vox, 0.6 * blur_vox), mode="nearest")
    if noise_sd > 0:
        img = img + rng.normal(0.0, noise_sd, img.shape)
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16)


@dataclass(frozen=True, eq=False)
class RenderedPatient:
    image: np.ndarray  # int16 HU, the patient's field of view
    labelmap: np.ndarray  # uint8 organ labels, same shape
    visible: dict[str, bool]  # per finding of FINDINGS
    nodule_lobes: tuple[str, ...]  # lobe of each nodule as placed
    slab: slice  # slices of the full-FOV grid
    z_range_mm: tuple[float, float]  # canonical z of the first and last slice centre
    finding_masks: dict[str, np.ndarray]  # rendered findings, field of view only


def _quantile_mask(score: np.ndarray, region: np.ndarray, fraction: float) -> np.ndarray:
    """The ``fraction`` of ``region`` where ``score`` is highest."""
    if not region.any() or fraction <= 0:
        return np.zeros_like(region)
    threshold = np.quantile(score[region], 1.0 - min(fraction, 1.0))
    return region & (score >= threshold)


def _mm_sigma(mm: float, spacing: Sequence[float]) -> list[float]:
    return [mm / s for s in spacing]


def _nodule_fraction(
    centre_mm: np.ndarray, radius: float, shape: Sequence[int], spacing: np.ndarray
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Partial-volume fraction of a sphere (grid mm coordinates ``index * spacing``) in the
    voxels of its bounding box, by 4 x 4 x 4 supersampling."""
    lo = np.maximum(np.floor((centre_mm - radius) / spacing - 0.5).astype(int), 0)
    hi = np.minimum(np.ceil((centre_mm + radius) / spacing + 0.5).astype(int) + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = (np.arange(4) + 0.5) / 4.0 - 0.5
    axes = []
    for ax in range(3):
        idx = np.arange(lo[ax], hi[ax])
        axes.append(((idx[:, None] + sub[None, :]) * spacing[ax] - centre_mm[ax]) ** 2)
    d2 = (
        axes[0][:, None, None, :, None, None]
        + axes[1][None, :, None, None, :, None]
        + axes[2][None, None, :, None, None, :]
    )
    return box, (d2 < radius**2).mean(axis=(3, 4, 5))


def _paint_findings(
    plan: PatientPlan,
    streams: dict[str, np.random.Generator],
    tissue: np.ndarray,
    coords: np.ndarray,
    hu: np.ndarray,
    spacing: Sequence[float],
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Paint the present parenchymal findings into ``hu`` (in place); return each rendered
    finding's mask on the full grid and the lobes of the nodules."""
    sp = np.asarray(spacing, float)
    shape = tissue.shape
    lung = np.isin(tissue, _LUNG_CODES)
    cx, cy, cz = coords
    zd = ANATOMY.diaphragm_z(cx, cy)
    masks: dict[str, np.ndarray] = {}
    lobes: tuple[str, ...] = ()
    present = plan.present
    edt = None
    if {"fibrosis", "nodule"} & present and lung.any():
        edt = ndi.distance_transform_edt(lung, sampling=sp)

    if "emphysema" in present:
        rng, d = streams["texture_emphysema"], plan.details["emphysema"]
        upper = np.clip((cz + 40.0) / 140.0, 0.0, 1.0)
        score = smooth_noise(rng, shape, _mm_sigma(15.0, sp)) + 2.0 * upper
        mask = _quantile_mask(score, lung, d["fraction"])
        hu[mask] = (-990.0 + 5.0 * rng.standard_normal(int(mask.sum()))).astype(np.float32)
        masks["emphysema"] = mask

    if "fibrosis" in present and edt is not None:
        rng, d = streams["texture_fibrosis"], plan.details["fibrosis"]
        basal = np.clip((40.0 - cz) / 140.0, 0.0, 1.0)
        posterior = np.clip((cy + 20.0) / 100.0, 0.0, 1.0)
        score = smooth_noise(rng, shape, _mm_sigma(10.0, sp)) + 2.5 * basal + 0.8 * posterior
        region = lung & (edt <= d["depth_mm"])
        mask = _quantile_mask(score, region, d["fraction"] * lung.sum() / max(region.sum(), 1))
        u = rng.random(int(mask.sum()))
        values = np.where(u < 0.45, -250.0 + 80.0 * rng.standard_normal(u.size), -680.0)
        values = np.where(u > 0.8, -940.0, values)
        hu[mask] = values.astype(np.float32)
        masks["fibrosis"] = mask

    if "ground_glass" in present:
        rng, d = streams["texture_ground_glass"], plan.details["ground_glass"]
        weight = {
            "diffuse": np.zeros(shape),
            "basal": np.clip((20.0 - cz) / 120.0, 0.0, 1.0),
            "perihilar": np.clip(1.0 - np.abs(np.abs(cx) - 40.0) / 60.0, 0.0, 1.0)
            * np.clip(1.0 - np.abs(cz - 20.0) / 90.0, 0.0, 1.0),
            "dependent": np.clip((cy + 20.0) / 90.0, 0.0, 1.0),
        }[d["distribution"]]
        score = smooth_noise(rng, shape, _mm_sigma(15.0, sp)) + 2.0 * weight
        mask = _quantile_mask(score, lung, d["fraction"])
        hu[mask] = np.maximum(hu[mask], -600.0 + 40.0 * rng.standard_normal(int(mask.sum())))
        masks["ground_glass"] = mask

    if "consolidation" in present:
        rng, d = streams["texture_consolidation"], plan.details["consolidation"]
        lobe = tissue == LOBE_CODES[d["lobe"]]
        score = smooth_noise(rng, shape, _mm_sigma(15.0, sp))
        mask = _quantile_mask(score, lobe, d["extent"])
        values = d["hu"] + 15.0 * rng.standard_normal(int(mask.sum()))
        if d["air_bronchogram"]:
            values = np.where(rng.random(values.size) < 0.04, -820.0, values)
        hu[mask] = values.astype(np.float32)
        masks["consolidation"] = mask

    if "atelectasis" in present:
        rng, d = streams["texture_atelectasis"], plan.details["atelectasis"]
        sides = {"right": cx < ANATOMY.midline_x, "left": cx >= ANATOMY.midline_x}
        chosen = ("right", "left") if d["side"] == "bilateral" else (d["side"],)
        side = np.logical_or.reduce([sides[s] for s in chosen])
        band = lung & side & (cz - zd < d["height_mm"]) & (cy > -10.0)
        if not band.any():  # bases filled by fluid: the lowest lung of those sides instead
            candidates = lung & side
            band = _quantile_mask(-(cz - zd), candidates, 0.03)
        score = smooth_noise(rng, shape, _mm_sigma(20.0, sp))
        mask = _quantile_mask(score, band, 0.8)
        hu[mask] = (d["hu"] + 12.0 * rng.standard_normal(int(mask.sum()))).astype(np.float32)
        masks["atelectasis"] = mask

    if "nodule" in present and edt is not None:
        rng, d = streams["texture_nodule"], plan.details["nodule"]
        mask = np.zeros(shape, bool)
        placed = []
        for diameter, lobe_name in zip(d["diameters"], d["lobes"], strict=True):
            radius = diameter / 2.0
            lobe = tissue == LOBE_CODES[lobe_name]
            if not lobe.any():
                lobe = lung
            deep = lobe & (edt >= radius + 3.0)
            candidates = np.flatnonzero(deep if deep.any() else lobe & (edt >= edt[lobe].max()))
            at = np.unravel_index(int(candidates[rng.integers(candidates.size)]), shape)
            placed.append(_LOBE_OF_CODE.get(int(tissue[at]), lobe_name))
            centre = (np.asarray(at) + rng.uniform(-0.5, 0.5, 3)) * sp
            box, frac = _nodule_fraction(centre, radius, shape, sp)
            value = d["hu"] + 8.0 * rng.standard_normal(frac.shape)
            hu[box] = (hu[box] * (1.0 - frac) + value * frac).astype(np.float32)
            mask[box] |= frac > 0  # every voxel the sphere touches
        masks["nodule"] = mask
        lobes = tuple(placed)

    if "pleural_effusion" in present:
        mask = tissue == T_EFFUSION
        rng = streams["texture_pleural_effusion"]
        hu[mask] += (5.0 * rng.standard_normal(int(mask.sum()))).astype(np.float32)
        masks["pleural_effusion"] = mask
    if "cardiomegaly" in present:
        masks["cardiomegaly"] = tissue == T_HEART
    return masks, lobes


_LOBE_OF_CODE = {code: name for name, code in LOBE_CODES.items()}


def structural_findings(plan: PatientPlan) -> dict:
    """Keyword arguments of :func:`canonical_tissue` for the patient's cardiomegaly and
    pleural effusion."""
    kwargs: dict = {}
    if "cardiomegaly" in plan.present:
        kwargs["heart_scale"] = plan.details["cardiomegaly"]["scale"]
    if "pleural_effusion" in plan.present:
        d = plan.details["pleural_effusion"]
        height = d["height_mm"]
        kwargs["effusion_mm"] = (
            height if d["side"] in ("right", "bilateral") else 0.0,
            height if d["side"] in ("left", "bilateral") else 0.0,
        )
    return kwargs


def render_patient(
    plan: PatientPlan, shape: Sequence[int], spacing: Sequence[float]
) -> RenderedPatient:
    """Image, labelmap and finding visibility of a planned patient. ``shape`` is the
    full-FOV grid; a fragment keeps the slices :func:`fov_slab` gives."""
    shape = tuple(int(n) for n in shape)
    streams = case_streams(plan.seed, plan.index, plan.stream_tag)
    coords = canonical_coordinates(plan.geometry, shape, spacing)
    tissue = canonical_tissue(*coords, **structural_findings(plan))
    labels = tissue_labels(tissue)
    hu = tissue_hu(streams["lung"], tissue, coords, spacing)
    masks, lobes = _paint_findings(plan, streams, tissue, coords, hu, spacing)
    image = finish_image(streams["noise"], hu, plan.noise_hu, plan.blur_vox)
    slab = fov_slab(plan, shape[2])
    cut = (slice(None), slice(None), slab)
    in_fov = {name: mask[cut] for name, mask in masks.items()}
    visible = {f: bool(f in plan.present and f in in_fov and in_fov[f].any()) for f in FINDINGS}
    column = np.zeros((3, 2))
    column[2] = (np.array([slab.start, slab.stop - 1]) - (shape[2] - 1) / 2.0) * spacing[2]
    z_canonical = plan.geometry.to_canonical(column)[2]
    return RenderedPatient(
        image=np.ascontiguousarray(image[cut]),
        labelmap=np.ascontiguousarray(labels[cut]),
        visible=visible,
        nodule_lobes=lobes,
        slab=slab,
        z_range_mm=(float(z_canonical[0]), float(z_canonical[1])),
        finding_masks=in_fov,
    )
