"""One volume's local features (steps 1-5 of :mod:`medclust.population`) and the template set
they are normalised through.

Scale of the demo cohort. The routine_ct phantom has 7.5 x 7.5 x 8 mm voxels (the paper's
volumes: <= 3 mm slices, registered at 2 mm). :class:`SIFT3D`'s default first scale (1.6
voxels = 12 mm) gives keypoints of >= ~60 mm diameter, i.e. no microSIFT words at all. The
default ``sift_sigma0_mm = 4.0`` (just above the 3.75 mm blur an input of 7.5 mm voxels already
has) gives keypoints down to ~17 mm diameter: on the demo cohort about three quarters of the
keypoints near the lungs are micro (<= 20 mm) and a quarter macro
(``benchmarks/population_benchmark.py`` reports the share). On a cohort with finer voxels the
same value just starts the scale space finer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medclust.cohort import load_cohort
from medclust.features.dense_haralick import dense_haralick
from medclust.features.glcm import HARALICK_FEATURES
from medclust.features.sift3d import SIFT3D
from medclust.population.params import validate_params

log = logging.getLogger(__name__)


def _registration():
    # Imported on use: the registration module wraps SimpleITK, which only this step needs.
    from medclust import registration

    return registration


def hu_levels(image: np.ndarray, mask: np.ndarray, hu_min: float, hu_max: float, n_levels: int):
    """Grey levels ``1..n_levels`` inside ``mask`` (0 outside): bins of width
    ``(hu_max - hu_min) / n_levels`` from ``hu_min``, intensities outside the range clipped into
    the first or last bin (IBSI "fixed bin size" with one range for the whole cohort)."""
    width = (hu_max - hu_min) / n_levels
    binned = np.floor((np.asarray(image, np.float64) - hu_min) / width).astype(np.int64) + 1
    return np.where(mask, np.clip(binned, 1, n_levels), 0).astype(np.int32)


def _near_mask(mask: np.ndarray, spacing: Sequence[float], margin_mm: float) -> np.ndarray:
    if margin_mm <= 0 or not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask, sampling=tuple(spacing)) <= margin_mm


def extract_volume(volume: Any, template_set: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """Local features of one volume with their atlas positions (module docstring, steps 1-5).

    Parameters
    ----------
    volume : :class:`medclust.cohort.Volume` (or a ``registration.Image3D``): the image in HU,
        its spacing and, optionally, a labelmap (used only to report the lung Dice).
    template_set : a built :class:`medclust.registration.TemplateSet`.
    params : parameters (names of :data:`DEFAULTS`; validated here).

    Returns
    -------
    dict of plain numpy values:

    * ``haralick`` (n, 13) float64 -- Haralick f1-f13 (:data:`HARALICK_FEATURES`) of the windows
      centred at ``haralick_vox`` (n, 3) int voxel indices, whose atlas positions (mm) are
      ``haralick_pos`` (n, 3); windows without a voxel pair in the lung are dropped;
    * ``sift`` (m, 160) float32 descriptors of the keypoints at ``sift_vox`` (m, 3) float voxel
      coordinates, atlas positions ``sift_pos`` (m, 3) mm and ``sift_diameter_mm`` (m,);
    * ``spacing`` (3,), ``template_index`` (int), ``ncc`` (float, of the chosen template),
      ``ncc_all`` (E,), ``lung_voxels`` (int, size of the lung mask) and ``lung_dice`` (float,
      Dice of the lung mask against the labelmap's ``lung_labels``, 1 when both are empty;
      NaN without a labelmap);
    * ``case_id`` (str, "" when the volume has none).
    """
    p = validate_params(params)
    reg = _registration()
    image3d = volume if isinstance(volume, reg.Image3D) else reg.Image3D.from_volume(volume)
    image = np.asarray(image3d.array, dtype=np.float32)
    spacing = tuple(float(s) for s in image3d.spacing)
    labelmap = getattr(image3d, "labelmap", None)
    case_id = str(getattr(volume, "case_id", "") or "")

    norm = template_set.normalize(image3d)
    lung = np.asarray(reg.lung_mask(norm, lung_labels=p["lung_labels"]), dtype=bool)
    if not lung.any():
        log.warning("%s: the atlas lung mask is empty on this volume: no local features", case_id)

    # Dense Haralick inside the lung (study 05, Sec. 2, "Feature Extraction" 1).
    n_feat = len(HARALICK_FEATURES)
    centres, values = np.empty((0, 3), np.int64), np.empty((0, n_feat))
    if lung.any():
        levels = hu_levels(image, lung, p["hu_min"], p["hu_max"], p["haralick_levels"])
        centres, values = dense_haralick(
            levels,
            lung,
            spacing,
            window_mm=p["haralick_window_mm"],
            step_mm=p["haralick_step_mm"],
            n_levels=p["haralick_levels"],
        )
        defined = ~np.isnan(values).any(axis=1)
        centres, values = centres[defined], values[defined]

    # 3D SIFT near the lung (item 2); diameters decide micro/macro in the vocabulary step.
    sift = SIFT3D(
        sigma0_mm=p["sift_sigma0_mm"],
        contrast_threshold=p["sift_contrast_threshold"],
        max_keypoints=p["max_keypoints"],
        intensity_range=(p["hu_min"], p["hu_max"]),
    )
    near = _near_mask(lung, spacing, p["sift_mask_margin_mm"])
    if near.any():
        keypoints, descriptors = sift.detect_and_describe(image, spacing, mask=near)
        sift_vox = keypoints[["x", "y", "z"]].to_numpy(dtype=np.float64)
        diameters = keypoints["diameter_mm"].to_numpy(dtype=np.float64)
    else:
        sift_vox, diameters = np.empty((0, 3)), np.empty(0)
        descriptors = np.zeros((0, sift.descriptor_length), np.float32)

    def atlas_mm(points: np.ndarray) -> np.ndarray:
        if len(points) == 0:
            return np.empty((0, 3))
        return np.asarray(norm.to_atlas_mm(np.asarray(points, np.float64)), dtype=np.float64)

    true_lung = None if labelmap is None else np.isin(np.asarray(labelmap), p["lung_labels"])
    return {
        "case_id": case_id,
        "haralick": values.astype(np.float64),
        "haralick_pos": atlas_mm(centres),
        "haralick_vox": centres.astype(np.int64),
        "sift": np.asarray(descriptors, dtype=np.float32),
        "sift_pos": atlas_mm(sift_vox),
        "sift_vox": sift_vox,
        "sift_diameter_mm": diameters,
        "spacing": np.asarray(spacing, dtype=np.float64),
        "template_index": int(norm.template_index),
        "ncc": float(norm.ncc),
        "ncc_all": np.asarray(norm.ncc_all, dtype=np.float64),
        "lung_voxels": int(lung.sum()),
        "lung_dice": float("nan") if true_lung is None else reg.dice(lung, true_lung),
    }


# --------------------------------------------------------------------------- files

# --------------------------------------------------------------------------- cohort


def build_template_set(atlas_root: str | Path, params: Mapping[str, Any]):
    """The :class:`~medclust.registration.TemplateSet` of an atlas cohort (study 05, Fig. 2):
    the case of role ``atlas`` (clinical.csv) and the first ``n_templates`` cases of role
    ``template`` (all when 0), as :mod:`medclust_phantoms.routine_ct_atlas` writes them. Each
    template is registered to the atlas once, initialised by its landmarks where clinical.csv
    has ``lm_<name>_x/_y/_z`` columns (the paper's "manually annotated landmarks"), affine then
    (``nonlinear``) non-linear."""
    p = validate_params(params)
    reg = _registration()
    cohort = load_cohort(atlas_root, ndim=3)
    clinical = cohort.clinical
    if "role" not in clinical.columns:
        raise ValueError(f"{atlas_root}: clinical.csv has no 'role' column (atlas/template)")
    roles = clinical["role"].astype(str)
    atlas_ids = [c for c in cohort.case_ids if roles[c] == "atlas"]
    template_ids = [c for c in cohort.case_ids if roles[c] == "template"]
    if len(atlas_ids) != 1:
        raise ValueError(f"{atlas_root}: needs exactly one case of role 'atlas', got {atlas_ids}")
    if p["n_templates"]:
        if p["n_templates"] > len(template_ids):
            raise ValueError(
                f"parameter n_templates={p['n_templates']} exceeds the {len(template_ids)} "
                f"templates of {atlas_root}"
            )
        template_ids = template_ids[: p["n_templates"]]
    if not template_ids:
        raise ValueError(f"{atlas_root}: no case of role 'template'")
    landmarks = {}
    if any(str(c).startswith("lm_") for c in clinical.columns):
        table = clinical.reset_index()
        landmarks = {
            "atlas_landmarks": reg.read_landmarks(table, atlas_ids[0]),
            "template_landmarks": [reg.read_landmarks(table, t) for t in template_ids],
        }
    start = time.perf_counter()
    template_set = reg.TemplateSet.build(
        reg.Image3D.from_volume(cohort.load(atlas_ids[0])),
        [reg.Image3D.from_volume(cohort.load(t)) for t in template_ids],
        nonlinear=p["nonlinear"],
        seed=p["registration_seed"],
        **landmarks,
    )
    log.info(
        "template set: atlas + %d templates (%s) built in %.1f s",
        len(template_ids),
        "landmark-initialised" if landmarks else "no landmarks",
        time.perf_counter() - start,
    )
    return template_set
