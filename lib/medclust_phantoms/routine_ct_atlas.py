"""Atlas and template set of the routine chest CT phantom: the reference space of the
multi-template spatial normalisation of the study-05 paper
(/work/shared/papers/004_8f822e2a6a11f707.txt, Sec. 2 "Spatial Normalization", Fig. 2: every
image is registered to a set of templates E_1..E_E that cover the population's variability,
each template is registered to the atlas A in advance with the help of manually annotated
landmarks, and the best concatenated transformation is chosen by NCC, Eq. (1); the paper uses
17 volumes of the VISCERAL Anatomy 3 data set, with organ masks and landmarks, for the atlas and
the templates).

Cases (anatomy, rendering and transforms are those of :mod:`medclust_phantoms.routine_ct`):

* ``atlas``: the canonical thorax itself (identity transform), full field of view, no findings,
  no scanner noise (slight blur only);
* ``template_00`` .. : ``n_templates`` normal thoraxes generated like the patients (random
  affine and smooth nonlinear deformation, scanner noise and blur, full field of view, no
  findings).

Ground truth. Each case's ``labelmap`` holds the organ labels of
:data:`medclust_phantoms.routine_ct.LABELS`; no mask is written. ``clinical.csv`` holds
``case_id``, ``role`` (atlas/template), the nuisance draws (``scale``, ``rotation_deg``,
``deformation_mm``, ``noise_hu``) and the physical coordinates of :data:`LANDMARKS` (12
anatomical points: carina, lung apices and bases, heart centre, top of the aortic arch, three
vertebral bodies, sternum, liver dome) in each case's image as ``lm_<name>_x``, ``_y``, ``_z``
(mm).

Coordinates. The images are written by :func:`medclust.cohort.write_cohort`, whose affine is
``diag(spacing)`` without offset, so voxel index ``(i, j, k)`` lies at ``(i, j, k) * spacing``
mm and a landmark's nearest voxel is ``round(lm / spacing)``. A case's landmark is its
canonical position mapped forward through the case's transform
(:meth:`medclust_phantoms.routine_ct.Geometry.from_canonical`) and shifted by the grid centre
(:func:`medclust_phantoms.routine_ct.grid_centre`); for the atlas it is the canonical position
plus the grid centre. Landmarks therefore name the same anatomical point in every case, up to
the voxel grid.

Generation is seeded and bit-reproducible: template ``i`` draws from
``np.random.SeedSequence([seed, 0xA71], spawn_key=(i,))`` (a tag of its own, so templates never
share streams with the patients of the same seed); the atlas's lung texture from
``SeedSequence([seed, 0xA72], spawn_key=(0,))`` (its only random draw). Images are int16 HU, labelmaps uint8.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from medclust.cohort import CaseData, write_cohort
from medclust_phantoms import routine_ct as rct
from medclust_phantoms.params import fail, integer, merged, number, numbers

log = logging.getLogger(__name__)

NAME = "routine_ct_atlas"

DEFAULTS: dict = {
    "seed": 0,
    "n_templates": 5,  # paper: 17 VISCERAL volumes for the atlas and the templates
    "shape": rct.DEFAULTS["shape"],
    "spacing": rct.DEFAULTS["spacing"],
    "noise_hu": rct.DEFAULTS["noise_hu"],
    "deformation_mm": rct.DEFAULTS["deformation_mm"],
}

_TAG = 0xA71  # templates
_ATLAS_TAG = 0xA72  # the atlas's lung texture
_ATLAS_BLUR_VOX = 0.6


def _landmarks(a: rct.ThoraxAnatomy) -> dict[str, tuple[tuple[float, float, float], int]]:
    """Canonical position (mm) and organ label of each landmark, derived from the anatomy."""

    def spine(z: float) -> tuple[float, float, float]:
        return (0.0, float(a.spine_y_at(z)), z)

    def above_dome(x: float, y: float, mm: float) -> tuple[float, float, float]:
        return (x, y, float(a.diaphragm_z(np.float64(x), np.float64(y))) + mm)

    (ax_r, ay_r), (ax_l, ay_l) = a.apex_centres
    apex_z = a.apex_z + 0.65 * a.apex_axes[2]
    sternum_y = a.body_y0 - a.body_axes[1] + a.fat_mm + 10.0
    return {
        "carina": (tuple(a.carina), 4),
        "lung_apex_right": ((ax_r, ay_r, apex_z), 2),
        "lung_apex_left": ((ax_l, ay_l, apex_z), 3),
        "lung_base_right": (above_dome(a.dome_right[0], a.dome_right[1], 15.0), 2),
        "lung_base_left": (above_dome(65.0, 35.0, 15.0), 3),
        "heart_centre": (tuple(a.heart_centre), 5),
        "aortic_arch": (tuple(a.aortic_arch), 6),
        "spine_upper": (spine(110.0), 7),
        "spine_mid": (spine(0.0), 7),
        "spine_lower": (spine(-110.0), 7),
        "sternum": ((0.0, sternum_y, 30.0), 9),
        "liver_dome": ((a.dome_right[0], a.dome_right[1], a.dome_right[2] - 20.0), 8),
    }


LANDMARKS: dict[str, tuple[tuple[float, float, float], int]] = _landmarks(rct.ANATOMY)
"""Landmark name -> (canonical position in mm, label of the organ it lies in)."""


def validate_params(params: dict) -> dict:
    """Merge ``params`` into :data:`DEFAULTS` and check every value; raise ``ValueError`` (or
    ``TypeError`` for an unknown name) naming the offending parameter."""
    p = merged(NAME, DEFAULTS, params)
    out = {
        "seed": integer(NAME, p, "seed", 0),
        "n_templates": integer(NAME, p, "n_templates", 1),
        "shape": numbers(NAME, p, "shape", 3, int, 1),
        "spacing": numbers(NAME, p, "spacing", 3, float, 0.0),
        "noise_hu": numbers(NAME, p, "noise_hu", 2, float, 0.0),
        "deformation_mm": number(NAME, p, "deformation_mm", 0.0, 20.0),
    }
    rct.check_grid(NAME, out["shape"], out["spacing"], p)
    lo, hi = out["noise_hu"]
    if not lo <= hi <= 200.0:
        raise fail(
            NAME, "noise_hu", "must be (low, high) with 0 <= low <= high <= 200", p["noise_hu"]
        )
    return out


def landmark_positions(
    geometry: rct.Geometry, shape: Sequence[int], spacing: Sequence[float]
) -> dict[str, np.ndarray]:
    """Physical position (mm, write_cohort's affine) of every landmark in the full-FOV image
    of a case with transform ``geometry``."""
    canonical = np.array([pos for pos, _ in LANDMARKS.values()], float).T
    physical = rct.grid_centre(shape, spacing)[:, None] + geometry.from_canonical(canonical)
    return {name: physical[:, k] for k, name in enumerate(LANDMARKS)}


def _plan(
    seed: int, i: int, noise_hu: Sequence[float], deformation_mm: float, tag: int = _TAG
) -> rct.PatientPlan:
    plan = rct.plan_patient(
        seed, i, "normal", "full", noise_hu=noise_hu, deformation_mm=deformation_mm, stream_tag=tag
    )
    return replace(plan, present=frozenset())


def make_atlas(
    seed: int, shape: Sequence[int], spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Image (int16) and labelmap (uint8) of the atlas: the canonical thorax without noise."""
    plan = replace(
        _plan(seed, 0, (0.0, 0.0), 0.0, _ATLAS_TAG),
        geometry=rct.IDENTITY,
        noise_hu=0.0,
        blur_vox=_ATLAS_BLUR_VOX,
    )
    out = rct.render_patient(plan, shape, spacing)
    return out.image, out.labelmap


def make_template(
    seed: int,
    i: int,
    shape: Sequence[int],
    spacing: Sequence[float],
    noise_hu: Sequence[float] = DEFAULTS["noise_hu"],
    deformation_mm: float = DEFAULTS["deformation_mm"],
) -> tuple[np.ndarray, np.ndarray, rct.PatientPlan]:
    """Image (int16), labelmap (uint8) and plan (transform, noise) of template ``i``."""
    plan = _plan(seed, i, noise_hu, deformation_mm)
    out = rct.render_patient(plan, shape, spacing)
    return out.image, out.labelmap, plan


def _landmark_columns(positions: dict[str, np.ndarray]) -> dict[str, float]:
    return {
        f"lm_{name}_{axis}": round(float(pos[k]), 2)
        for name, pos in positions.items()
        for k, axis in enumerate("xyz")
    }


def template_id(i: int, n_templates: int) -> str:
    return f"template_{i:0{max(2, len(str(n_templates - 1)))}d}"


def generate(root: str | Path, **params) -> Path:
    """Write the atlas and template cohort to ``root`` (see the module docstring)."""
    p = validate_params(params)
    shape, spacing, n = p["shape"], p["spacing"], p["n_templates"]
    rows = [
        {
            "case_id": "atlas",
            "role": "atlas",
            "scale": 1.0,
            "rotation_deg": 0.0,
            "deformation_mm": 0.0,
            "noise_hu": 0.0,
            **_landmark_columns(landmark_positions(rct.IDENTITY, shape, spacing)),
        }
    ]
    plans = [_plan(p["seed"], i, p["noise_hu"], p["deformation_mm"]) for i in range(n)]
    for i, plan in enumerate(plans):
        g = plan.geometry
        rows.append(
            {
                "case_id": template_id(i, n),
                "role": "template",
                "scale": round(g.scale, 4),
                "rotation_deg": round(g.rotation_deg, 2),
                "deformation_mm": round(g.deformation_rms_mm, 2),
                "noise_hu": round(plan.noise_hu, 1),
                **_landmark_columns(landmark_positions(g, shape, spacing)),
            }
        )
    clinical = pd.DataFrame(rows)

    def cases() -> Iterator[CaseData]:
        image, labelmap = make_atlas(p["seed"], shape, spacing)
        yield CaseData(id="atlas", image=image, spacing=spacing, labelmap=labelmap)
        for i, plan in enumerate(plans):
            out = rct.render_patient(plan, shape, spacing)
            yield CaseData(
                id=template_id(i, n), image=out.image, spacing=spacing, labelmap=out.labelmap
            )

    description = (
        "Atlas (canonical thorax, no noise) and templates (normal thoraxes under random affine "
        "and smooth nonlinear deformations, with scanner noise) of the routine_ct phantom, "
        "with organ labelmaps and 12 anatomical landmarks per case (clinical.csv lm_<name>_x/y/z, "
        "physical mm of each image)."
    )
    return write_cohort(
        root,
        cases(),
        clinical,
        name=NAME,
        modality="CT",
        description=description,
        labels=dict(rct.LABELS),
        spacing_note=(
            f"voxel spacing {spacing[0]} x {spacing[1]} x {spacing[2]} mm; axial slices along "
            "the last axis (x right->left, y anterior->posterior, z inferior->superior); "
            "affine diag(spacing), no offset: landmark voxel = round(lm / spacing)"
        ),
        clinical_label="role",
        landmarks={name: {"label": label} for name, (_, label) in LANDMARKS.items()},
        ground_truth=(
            "labelmap: organ labels; clinical.csv lm_<name>_x/y/z: landmark positions (mm) in "
            "each case's image, the same anatomical point in every case"
        ),
        generator_params={k: list(v) if isinstance(v, tuple) else v for k, v in p.items()},
    )
