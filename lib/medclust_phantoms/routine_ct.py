"""Routine chest CT phantom: a population of low-resolution thorax CT volumes with latent
disease phenotypes, rendered findings and free-text radiology reports (the cohort of the
study-05 paper, /work/shared/papers/004_8f822e2a6a11f707.txt: 7,812 routine lung CT volumes of
one hospital, clustered on visual features after spatial normalisation, with the clusters
linked to terms that an NLP pipeline with negation detection extracts from the radiology
reports; 5,886 of the 7,812 cases had a report).

Canonical thorax. One chest-CT anatomy in canonical physical coordinates (mm, origin at the
centre of the thorax; x from the patient's right to left, y anterior to posterior, z inferior
to superior; :data:`ANATOMY` holds its constants and :func:`canonical_tissue` evaluates it at
any points): body outline (superellipse, wider at the shoulders) with a subcutaneous fat rim,
chest-wall and paraspinal muscle, ribs and sternum, two lungs with lobes (right upper, middle,
lower; left upper, lower; oblique and horizontal fissures as planes), trachea, main and lobar
bronchi, heart (rotated ellipsoid in pericardial fat), aorta (ascending, arch, descending),
pulmonary arteries, oesophagus, thoracic spine (vertebral bodies with discs, canal, posterior
elements, slight kyphosis), diaphragm domes (right higher) and below them the liver dome,
stomach (with a gas bubble) and spleen.

Patients. Each patient is the canonical thorax under a per-patient random affine (scale
+-10 % with slight anisotropy, rotation of a few degrees, translation ~1 cm) and a smooth
nonlinear deformation (a sum of six random plane waves, wavelength 160-360 mm, RMS displacement
``U(0.4, 1) * deformation_mm``, peaks up to ~1.5 cm at the default, Lipschitz-bounded so the
map stays invertible). Image voxels are pulled back to canonical coordinates
(:meth:`Geometry.to_canonical`) where the anatomy is evaluated, then painted in HU (with a
dependent density gradient and vessel-like texture in the lungs), blurred slightly (Gaussian,
0.45-0.75 voxel) and given white Gaussian scanner noise (sd ``U(*noise_hu)`` HU, 15-40 HU at the
default). The field of view along z is the whole thorax for most cases; a share
``fragment_fraction`` (25 % at the default) are fragments: 35-65 % of the slices, covering the
upper or the lower part of the thorax (so the number of slices differs between cases).

Latent phenotypes and findings. Phenotypes (:data:`PHENOTYPES`) are assigned in exact
proportions ``phenotype_weights`` (largest remainders, shuffled); each finding of
:data:`FINDINGS` is then present with probability :data:`FINDING_PROBABILITY` [phenotype]
(findings also occur at low rates outside their phenotype; ``normal`` cases mostly have none:
~70 %). Rendered findings, each visible where it lies:

=================  =========================================================================
emphysema          low-attenuation regions (-990 HU before noise, i.e. < -950 HU) in 8-35 %
                   of the lung, upper-lobe predominant
nodule             1-3 solid spheres (~30 HU, partial volume by 4^3 supersampling) of 5-12 mm,
                   or for lung cancer one of 14-25 mm plus small ones, in a chosen lobe
pleural_effusion   fluid (~15 HU, labelmap label 10) filling the dependent (posterior, basal)
                   pleural space of one or both sides, replacing (compressing) the lung
consolidation      dense (-60..35 HU) patchy to lobar region of one lobe, optional air
                   bronchograms
fibrosis           subpleural, basal reticular pattern (voxel-scale mix of ~-250 HU lines,
                   ~-940 HU honeycomb cysts and -680 HU parenchyma)
ground_glass       hazy patches (~-600 HU): diffuse, basal, perihilar or dependent
cardiomegaly       heart enlarged by 15-40 % (grows up and sideways from the diaphragm; the
                   lungs lose the volume)
atelectasis        small dense (-20..40 HU) band in the dependent lung within 15-30 mm above
                   the diaphragm, at one or both bases
=================  =========================================================================

``lymphadenopathy``, ``hiatal_hernia`` and ``atherosclerosis`` are true findings that the
report may mention but the image does not show.

Reports. About ``report_fraction`` of the cases (5,886 / 7,812 at the default, exact count,
shuffled) have a free-text report (``CaseData.report``), written from the true findings with
the phrase tables of this module: sections EXAMINATION / CLINICAL HISTORY / COMPARISON /
FINDINGS / IMPRESSION, structured or prose style, synonyms and modifiers (mild, small,
bilateral, right-sided, sizes in mm, lobes), negations of absent findings ("No pleural
effusion.", "There is no evidence of pneumothorax or consolidation.", "... without
lymphadenopathy"), distractor terms (pneumothorax, pericardial effusion), normal statements,
findings the image does not show, present findings outside a fragment's field of view
(mentioned half of the time) and missed findings (present, visible, not mentioned, rate
``miss_rate``). A finding is never negated when present and never mentioned positively when
absent.

Ground truth. ``labelmap`` (uint8, :data:`LABELS`): the true organ labels in the patient's
space (after the deformation, cropped to its field of view), the reference for judging
registration (Dice of warped atlas lung masks); no mask is written (a routine cohort has none).
``clinical.csv`` holds ``case_id``, ``phenotype``, ``phenotype_id``, ``finding_<name>`` (true
presence), ``visible_<name>`` (present and at least one voxel of it inside the field of view;
for a nodule every voxel the sphere touches counts, so a 5-mm nodule at 7.5-mm voxels is
"visible" with little contrast; always 0 for the findings that are not rendered),
``mentioned_<name>`` (the report mentions it
positively), ``has_report``, ``fov`` (full/upper/lower), ``z_start_mm`` / ``z_end_mm`` (canonical
z of the centre of the first and last slice, i.e. the field of view in canonical space),
``n_slices``, ``age``, ``sex`` and the nuisance draws ``scale``, ``rotation_deg``,
``deformation_mm`` (RMS displacement) and ``noise_hu``.

Coordinates. Images are written by :func:`medclust.cohort.write_cohort`, whose affine is
``diag(spacing)`` without offset: voxel index ``(i, j, k)`` lies at physical ``(i, j, k) *
spacing`` mm. A full-FOV grid of shape ``n`` is centred on the canonical origin before the
patient transform: patient coordinates relative to the grid centre are ``q = index * spacing -
(n - 1) / 2 * spacing`` and :meth:`Geometry.to_canonical` maps ``q`` to canonical mm. A
fragment is a slab of slices ``k0 .. k0 + m`` of that full grid, re-indexed from 0.

Generation is seeded and bit-reproducible: case ``i`` draws from its own
``np.random.SeedSequence([seed, 0x0C7], spawn_key=(i,))`` (one child stream per purpose:
metadata, geometry, lung texture, noise, report, and per finding its details and its texture,
so switching one finding on or off changes the image only within the blur kernel of that
finding and of the organs it displaces, see :meth:`PatientPlan.with_findings`); cohort-level
assignments (phenotypes, fields of view, which cases have a report) come from
``SeedSequence([seed, 0x0C7, k])``; images are stored as int16 HU and labelmaps as uint8.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from medclust.cohort import CaseData, write_cohort
from medclust_phantoms.exact import (
    contract,
    det3,
    dot,
    inv3,
    norm,
    polar_rotation,
    rotation_xyz,
    unit,
)
from medclust_phantoms.params import fail, integer, merged, number, numbers

log = logging.getLogger(__name__)

NAME = "routine_ct"

PHENOTYPES: tuple[str, ...] = (
    "normal",
    "copd",
    "heart_failure",
    "pneumonia",
    "fibrotic_ild",
    "lung_cancer",
)
RENDERED_FINDINGS: tuple[str, ...] = (
    "emphysema",
    "nodule",
    "pleural_effusion",
    "consolidation",
    "fibrosis",
    "ground_glass",
    "cardiomegaly",
    "atelectasis",
)
UNRENDERED_FINDINGS: tuple[str, ...] = ("lymphadenopathy", "hiatal_hernia", "atherosclerosis")
FINDINGS: tuple[str, ...] = RENDERED_FINDINGS + UNRENDERED_FINDINGS

DEFAULTS: dict = {
    "seed": 0,
    "n_cases": 200,
    "shape": (48, 48, 40),  # voxels x, y, z of a full field of view
    "spacing": (7.5, 7.5, 8.0),  # mm (field of view 360 x 360 x 320 mm)
    "phenotype_weights": (0.30, 0.18, 0.14, 0.14, 0.10, 0.14),  # order of PHENOTYPES
    "fragment_fraction": 0.25,  # share of cases covering only the upper or lower thorax
    "report_fraction": 0.7535,  # share with a report (paper: 5,886 of 7,812)
    "miss_rate": 0.1,  # present, visible findings that the report does not mention
    "noise_hu": (15.0, 40.0),  # range of the per-case scanner noise sd (HU)
    "deformation_mm": 6.0,  # largest per-case RMS of the nonlinear displacement (mm)
}

LABELS: dict[int, str] = {
    0: "background",
    1: "body",
    2: "right lung",
    3: "left lung",
    4: "airways",
    5: "heart",
    6: "aorta",
    7: "spine",
    8: "liver",
    9: "ribs and sternum",
    10: "pleural effusion",
}
LUNG_LABELS = (2, 3)

# probability of each finding (order of FINDINGS) given the phenotype
# fmt: off
FINDING_PROBABILITY: dict[str, tuple[float, ...]] = {
    #                 emph  nodule effus cons  fibro ggo   cardio atel  lymph hiatal ather
    "normal":        (0.02, 0.05, 0.01, 0.01, 0.01, 0.02, 0.02, 0.04, 0.02, 0.04, 0.08),
    "copd":          (0.90, 0.15, 0.05, 0.08, 0.03, 0.06, 0.10, 0.12, 0.10, 0.08, 0.45),
    "heart_failure": (0.10, 0.06, 0.80, 0.06, 0.03, 0.45, 0.85, 0.35, 0.12, 0.10, 0.55),
    "pneumonia":     (0.06, 0.06, 0.35, 0.92, 0.02, 0.45, 0.08, 0.35, 0.25, 0.05, 0.20),
    "fibrotic_ild":  (0.12, 0.10, 0.05, 0.05, 0.95, 0.55, 0.08, 0.10, 0.35, 0.10, 0.30),
    "lung_cancer":   (0.35, 0.95, 0.25, 0.12, 0.03, 0.06, 0.06, 0.30, 0.55, 0.06, 0.35),
}
# fmt: on
# age (mean, sd) and probability of male sex per phenotype
_DEMOGRAPHY: dict[str, tuple[float, float, float]] = {
    "normal": (48.0, 16.0, 0.48),
    "copd": (66.0, 9.0, 0.60),
    "heart_failure": (72.0, 10.0, 0.52),
    "pneumonia": (58.0, 18.0, 0.52),
    "fibrotic_ild": (67.0, 9.0, 0.65),
    "lung_cancer": (66.0, 9.0, 0.60),
}

LOBES: dict[str, str] = {
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "LLL": "left lower lobe",
}

# --------------------------------------------------------------------------- tissues

# tissue codes of the internal map; painted in HU by _TISSUE_HU, labelled by _TISSUE_LABEL
T_AIR, T_FAT, T_MUSCLE, T_MEDIASTINUM, T_SOFT, T_GAS, T_CANAL = 0, 1, 2, 3, 4, 5, 6
T_AIRWAY, T_HEART, T_AORTA, T_VERTEBRA, T_DISC, T_RIB, T_LIVER = 7, 8, 9, 10, 11, 12, 13
T_EFFUSION, T_ARTERY, T_STOMACH, T_SPLEEN = 14, 15, 16, 17
T_RUL, T_RML, T_RLL, T_LUL, T_LLL = 20, 21, 22, 23, 24
LOBE_CODES: dict[str, int] = {"RUL": T_RUL, "RML": T_RML, "RLL": T_RLL, "LUL": T_LUL, "LLL": T_LLL}
_LUNG_CODES = tuple(LOBE_CODES.values())
_N_CODES = 32

_TISSUE_HU = np.zeros(_N_CODES, np.float32)
_TISSUE_LABEL = np.zeros(_N_CODES, np.uint8)
for _code, _hu, _label in (
    (T_AIR, -1000.0, 0),
    (T_FAT, -100.0, 1),
    (T_MUSCLE, 45.0, 1),
    (T_MEDIASTINUM, -80.0, 1),
    (T_SOFT, 35.0, 1),
    (T_GAS, -950.0, 1),
    (T_CANAL, 15.0, 1),
    (T_AIRWAY, -1000.0, 4),
    (T_HEART, 40.0, 5),
    (T_AORTA, 45.0, 6),
    (T_VERTEBRA, 260.0, 7),
    (T_DISC, 85.0, 7),
    (T_RIB, 380.0, 9),
    (T_LIVER, 58.0, 8),
    (T_EFFUSION, 15.0, 10),
    (T_ARTERY, 40.0, 1),
    (T_STOMACH, 30.0, 1),
    (T_SPLEEN, 48.0, 1),
    *((code, -860.0, 2) for code in (T_RUL, T_RML, T_RLL)),
    *((code, -860.0, 3) for code in (T_LUL, T_LLL)),
):
    _TISSUE_HU[_code] = _hu
    _TISSUE_LABEL[_code] = _label


def tissue_labels(tissue: np.ndarray) -> np.ndarray:
    """Organ labels (:data:`LABELS`, uint8) of a tissue-code map."""
    return _TISSUE_LABEL[tissue]


# --------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class ThoraxAnatomy:
    """Constants of the canonical thorax (mm; x right->left, y anterior->posterior,
    z inferior->superior, origin at the centre of the thorax)."""

    body_axes: tuple[float, float] = (150.0, 115.0)  # superellipse half-axes (x, y)
    body_y0: float = 5.0  # centre of the outline in y
    body_exponent: float = 2.5
    shoulder_mm: float = 12.0  # extra half-width above z = 80 (shoulder girdle)
    fat_mm: float = 14.0  # subcutaneous fat
    muscle_mm: float = 12.0  # chest-wall muscle
    paraspinal_mm: float = 30.0  # extra wall thickness at the posterior midline
    rib_shell_mm: float = 10.0  # ribs and intercostal muscle inside the wall
    rib_period_mm: float = 29.0  # rib spacing along z
    rib_width_mm: float = 10.0
    rib_slope: float = 0.33  # ribs run down anteriorly (dz/dy)
    dome_right: tuple[float, float, float] = (-55.0, 5.0, -58.0)  # top of each diaphragm dome
    dome_left: tuple[float, float, float] = (55.0, 5.0, -72.0)
    dome_falloff: tuple[float, float, float] = (90.0, 105.0, 70.0)  # x, y radius; depth
    cage_taper_mm: float = 30.0  # the rib cage narrows by this much towards the apex
    apex_z: float = 75.0  # above this the lungs are confined to the apical domes
    apex_centres: tuple[tuple[float, float], ...] = ((-58.0, 18.0), (58.0, 18.0))
    apex_axes: tuple[float, float, float] = (50.0, 58.0, 62.0)
    midline_x: float = 3.0
    mediastinum_half_width: float = 18.0
    trachea: tuple[tuple[float, float, float], ...] = ((0.0, -22.0, 175.0), (0.0, 0.0, 55.0))
    trachea_radius: float = 9.0
    carina: tuple[float, float, float] = (0.0, 0.0, 55.0)
    # (start, end, radius) of the main and lobar bronchi
    main_bronchi: tuple = (
        ((0.0, 0.0, 55.0), (-36.0, 8.0, 30.0), 7.0),
        ((0.0, 0.0, 55.0), (40.0, 12.0, 22.0), 6.5),
    )
    lobar_bronchi: tuple = (
        ((-36.0, 8.0, 30.0), (-52.0, 15.0, -15.0), 5.0),
        ((-36.0, 8.0, 30.0), (-70.0, 5.0, 62.0), 4.5),
        ((40.0, 12.0, 22.0), (60.0, 22.0, -30.0), 4.5),
        ((40.0, 12.0, 22.0), (68.0, 0.0, 55.0), 4.5),
    )
    aorta: tuple[tuple[float, float, float], ...] = (
        (6.0, -30.0, 0.0),
        (8.0, -35.0, 65.0),
        (28.0, -5.0, 88.0),
        (30.0, 28.0, 78.0),
        (28.0, 40.0, 40.0),
        (24.0, 42.0, -60.0),
        (14.0, 35.0, -170.0),
    )
    aorta_radii: tuple[float, ...] = (15.0, 14.0, 13.0, 12.5, 12.0, 11.5)
    aortic_arch: tuple[float, float, float] = (28.0, -5.0, 88.0)
    pulmonary_arteries: tuple = (
        ((30.0, -48.0, 5.0), (24.0, -14.0, 38.0), 12.0),
        ((24.0, -14.0, 38.0), (-45.0, 2.0, 28.0), 9.5),
        ((24.0, -14.0, 38.0), (50.0, 10.0, 40.0), 9.0),
    )
    oesophagus: tuple = ((4.0, 25.0, 175.0), (12.0, 32.0, -85.0), 8.0)
    heart_centre: tuple[float, float, float] = (20.0, -30.0, -32.0)
    heart_axes: tuple[float, float, float] = (60.0, 46.0, 50.0)
    heart_rotation_deg: tuple[float, float] = (30.0, -20.0)  # about z, then about y
    heart_anchor_z: float = -82.0  # cardiomegaly grows away from this level (diaphragm)
    spine_y: float = 55.0  # vertebral body centre at z = 0 (minus kyphosis)
    kyphosis_mm: float = 6.0
    vertebra_radius: float = 19.0
    vertebra_period_mm: float = 27.0
    disc_mm: float = 5.0
    liver_edge: tuple[float, float] = (-15.0, 45.0)  # left edge x at z = -165 and z = -60
    stomach: tuple = ((55.0, -25.0, -108.0), (42.0, 38.0, 36.0))
    spleen: tuple = ((72.0, 40.0, -110.0), (28.0, 34.0, 42.0))
    lung_base_mm: float = 3.0  # lungs start this far above the diaphragm surface

    def spine_y_at(self, z: np.ndarray) -> np.ndarray:
        """y of the vertebral-body axis at height ``z`` (thoracic kyphosis)."""
        return self.spine_y + self.kyphosis_mm * (1.0 - (np.asarray(z) / 170.0) ** 2)

    def diaphragm_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height of the diaphragm surface: the higher of two paraboloid domes (right
        higher), deepening in the posterior costophrenic recesses."""
        rx, ry, depth = self.dome_falloff
        posterior = 30.0 * np.clip((y - 20.0) / 60.0, 0.0, 1.0) ** 2
        domes = [
            top - depth * (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - posterior
            for cx, cy, top in (self.dome_right, self.dome_left)
        ]
        return np.maximum(*domes)

    def heart_frame(self, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre, rotation (columns: heart axes in canonical space) and half-axes of the
        heart ellipsoid enlarged by ``scale`` away from the diaphragm."""
        centre = np.asarray(self.heart_centre, float)
        anchor = np.array([centre[0], centre[1], self.heart_anchor_z])
        centre = anchor + scale * (centre - anchor)
        az, ay = np.deg2rad(self.heart_rotation_deg)
        return centre, rotation_xyz((0.0, ay, az)), np.asarray(self.heart_axes, float) * scale


ANATOMY = ThoraxAnatomy()


def _segment_sdf(x, y, z, a, b, r_a: float, r_b: float | None = None) -> np.ndarray:
    """Signed distance (mm) to a tube of radius ``r_a`` (tapering to ``r_b``) around the
    segment ``a``-``b``: negative inside."""
    a = np.asarray(a, float)
    ab = np.asarray(b, float) - a
    t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / float(dot(ab, ab))
    t = np.clip(t, 0.0, 1.0)
    d = np.sqrt(
        (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
    )
    radius = r_a if r_b is None else r_a + t * (r_b - r_a)
    return d - radius


def _tubes_sdf(x, y, z, segments) -> np.ndarray:
    """Signed distance to the union of ``(start, end, radius)`` tubes."""
    return np.minimum.reduce([_segment_sdf(x, y, z, a, b, r) for a, b, r in segments])


def _polyline_segments(points, radii) -> list:
    return [(points[k], points[k + 1], radii[k]) for k in range(len(points) - 1)]


def body_depth(x, y, z, anatomy: ThoraxAnatomy = ANATOMY) -> np.ndarray:
    """Depth (mm) below the skin, measured along the ray from the body axis (positive inside
    the body outline, negative outside)."""
    a = anatomy
    ax = a.body_axes[0] + a.shoulder_mm * np.clip((z - 80.0) / 60.0, 0.0, 1.0)
    ay = a.body_axes[1]
    yy = y - a.body_y0
    n = a.body_exponent
    r = (np.abs(x / ax) ** n + np.abs(yy / ay) ** n) ** (1.0 / n)
    rho = np.hypot(x, yy)
    safe = np.maximum(r, 1e-9)
    return np.where(r > 1e-9, rho / safe - rho, ay)


def canonical_tissue(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    *,
    heart_scale: float = 1.0,
    effusion_mm: tuple[float, float] = (0.0, 0.0),
    anatomy: ThoraxAnatomy = ANATOMY,
) -> np.ndarray:
    """Tissue code (uint8) of the canonical thorax at canonical points ``x, y, z`` (mm,
    arrays of one shape). ``heart_scale > 1`` enlarges the heart (cardiomegaly);
    ``effusion_mm`` (right, left) is the height of dependent pleural fluid above the
    diaphragm at the posterior chest wall (0 = none); fluid replaces the lung it fills."""
    a = anatomy
    x, y, z = (np.asarray(v, float) for v in (x, y, z))
    tissue = np.zeros(x.shape, np.uint8)
    depth = body_depth(x, y, z, a)
    yy = y - a.body_y0
    paraspinal = a.paraspinal_mm * np.exp(-((x / 45.0) ** 2)) * np.clip((yy - 30.0) / 40.0, 0, 1)
    taper = a.cage_taper_mm * np.clip(z / 140.0, 0.0, 1.0) ** 1.5  # shoulder girdle
    wall = a.fat_mm + a.muscle_mm + paraspinal + taper
    body = depth > 0
    tissue[body] = T_FAT
    tissue[depth > a.fat_mm] = T_MUSCLE
    shell = (depth > wall) & (depth <= wall + a.rib_shell_mm)
    interior = depth > wall + a.rib_shell_mm

    zd = a.diaphragm_z(x, y)
    thorax = interior & (z > zd + a.lung_base_mm)
    abdomen = interior & (z <= zd - 4.0)
    tissue[thorax] = T_MEDIASTINUM
    tissue[interior & ~thorax & ~abdomen] = T_MUSCLE  # diaphragm
    tissue[abdomen] = T_SOFT

    # lungs: the thoracic cavity less the mediastinum; confined to two domes at the apex
    ex, ey, ez = a.apex_axes
    dome = np.zeros(x.shape, bool)
    for cx, cy in a.apex_centres:
        dome |= ((x - cx) / ex) ** 2 + ((y - cy) / ey) ** 2 + ((z - a.apex_z) / ez) ** 2 < 1.0
    upper = z > a.apex_z
    tissue[thorax & upper & ~dome & (np.abs(x - a.midline_x) > 30.0)] = T_MUSCLE
    spine_axis_y = a.spine_y_at(z)
    spine_r = np.hypot(x, y - spine_axis_y)
    centre, rot, axes = a.heart_frame(heart_scale)
    local = contract(rot.T, np.stack([x - centre[0], y - centre[1], z - centre[2]]))
    heart_r = np.sqrt(sum((local[k] / axes[k]) ** 2 for k in range(3)))
    aorta_sdf = _tubes_sdf(x, y, z, _polyline_segments(a.aorta, a.aorta_radii))
    artery_sdf = _tubes_sdf(x, y, z, a.pulmonary_arteries)
    trachea_sdf = _segment_sdf(x, y, z, *a.trachea, a.trachea_radius)
    main_sdf = _tubes_sdf(x, y, z, a.main_bronchi)
    lobar_sdf = _tubes_sdf(x, y, z, a.lobar_bronchi)
    oesophagus_sdf = _segment_sdf(x, y, z, *a.oesophagus)
    mediastinum = (
        (
            (np.abs(x - a.midline_x) < a.mediastinum_half_width)
            & (y < spine_axis_y - a.vertebra_radius)
        )
        | (heart_r < 1.12)
        | (aorta_sdf < 6.0)
        | (artery_sdf < 4.0)
        | (trachea_sdf < 4.0)
        | (main_sdf < 3.0)
        | (oesophagus_sdf < 4.0)
        | (spine_r < a.vertebra_radius + 12.0)
    )
    lung = thorax & (~upper | dome) & ~mediastinum
    right = x < a.midline_x
    oblique_right = -25.0 + 0.85 * (y + 20.0)
    oblique_left = -30.0 + 0.85 * (y + 20.0)
    lower_right = z < oblique_right
    tissue[lung & right] = T_RUL
    tissue[lung & right & ~lower_right & (z < 8.0)] = T_RML
    tissue[lung & right & lower_right] = T_RLL
    tissue[lung & ~right] = T_LUL
    tissue[lung & ~right & (z < oblique_left)] = T_LLL
    # dependent pleural fluid: up to the full height posteriorly, ~10 % of it anteriorly
    height_share = np.clip((y + 60.0) / 130.0, 0.08, 1.0)
    for side, height in zip((right, ~right), effusion_mm, strict=True):
        if height > 0:
            tissue[lung & side & (z - zd < height * height_share)] = T_EFFUSION

    heart = (heart_r < 1.0) & (z > zd - 6.0) & (depth > wall + 2.0)
    tissue[heart] = T_HEART

    # below the diaphragm: liver (right, reaching across the midline at the top), stomach
    # with a gas bubble, spleen
    lo_x, hi_x = a.liver_edge
    edge = lo_x + (hi_x - lo_x) * np.clip((z + 165.0) / 105.0, 0.0, 1.0)
    liver = abdomen & (x < edge) & (y < spine_axis_y) & (spine_r > a.vertebra_radius + 4.0)
    tissue[liver] = T_LIVER
    for (centre_o, axes_o), code in ((a.stomach, T_STOMACH), (a.spleen, T_SPLEEN)):
        inside = sum(
            ((v - c) / s) ** 2 for v, c, s in zip((x, y, z), centre_o, axes_o, strict=True)
        )
        organ = abdomen & (inside < 1.0) & ~liver
        tissue[organ] = code
        if code == T_STOMACH:
            tissue[organ & (z > centre_o[2] + 13.0)] = T_GAS

    tissue[body & (artery_sdf < 0)] = T_ARTERY
    tissue[body & (oesophagus_sdf < 0)] = T_SOFT
    tissue[body & (aorta_sdf < 0)] = T_AORTA
    airway = body & ((trachea_sdf < 0) | (main_sdf < 0) | ((lobar_sdf < 0) & lung))
    tissue[airway] = T_AIRWAY

    # spine: vertebral bodies with discs, canal, arch and spinous process
    sy = spine_axis_y
    vertebra = body & (spine_r < a.vertebra_radius)
    disc = np.mod(z + 13.0, a.vertebra_period_mm) < a.disc_mm
    tissue[vertebra] = T_VERTEBRA
    tissue[vertebra & disc] = T_DISC
    canal_r = np.hypot(x, y - (sy + 28.0))
    arch = (canal_r >= 8.0) & (canal_r < 15.0) & (y > sy + 17.0)
    process = (np.abs(x) < 5.0) & (y >= sy + 40.0) & (y < sy + 60.0)
    tissue[body & (arch | process)] = T_VERTEBRA
    tissue[body & (canal_r < 8.0)] = T_CANAL

    # ribs in the chest-wall shell (sloping down anteriorly) and the sternum
    phase = np.mod(z - a.rib_slope * y, a.rib_period_mm)
    ribs = (
        shell
        & (phase < a.rib_width_mm)
        & (y > -55.0)
        & ~((np.abs(x) < 28.0) & (y > 30.0))
        & (z > -125.0)
        & (z < 140.0)
    )
    sternum = (
        (np.abs(x) < 17.0)
        & (depth > a.fat_mm + 2.0)
        & (depth <= a.fat_mm + 18.0)
        & (y < -60.0)
        & (z > -55.0)
        & (z < 105.0)
    )
    tissue[ribs | sternum] = T_RIB
    return tissue


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True, eq=False)
class Geometry:
    """A patient's transform. Patient coordinates ``q`` (mm, relative to the centre of the
    full-FOV grid) map to canonical coordinates ``c = linear^-1 (q - shift) - u(q)`` with the
    smooth displacement ``u(q) = sum_j amp_j cos(k_j . q + phase_j)`` (plane waves)."""

    linear: np.ndarray  # 3x3, canonical -> patient (rotation times scale)
    shift: np.ndarray  # (3,) mm
    wave_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (J, 3) rad/mm
    wave_phases: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (J,)
    wave_amplitudes: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (J, 3) mm

    def displacement(self, q: np.ndarray) -> np.ndarray:
        """``u(q)`` for points ``q`` of shape (3, N)."""
        if len(self.wave_phases) == 0:
            return np.zeros_like(q)
        phase = contract(self.wave_vectors, q) + self.wave_phases[:, None]
        return contract(self.wave_amplitudes.T, np.cos(phase))

    def to_canonical(self, q: np.ndarray) -> np.ndarray:
        """Canonical coordinates of patient points ``q`` (3, N)."""
        q = np.asarray(q, float)
        return contract(inv3(self.linear), q - self.shift[:, None]) - self.displacement(q)

    def from_canonical(self, c: np.ndarray, tol: float = 1e-9) -> np.ndarray:
        """Patient points ``q`` (3, N) with ``to_canonical(q) == c``, by the fixed-point
        iteration ``q = shift + linear (c + u(q))`` (a contraction: the displacement is
        Lipschitz-bounded by 0.45 and the scale by 1.12)."""
        c = np.asarray(c, float)
        q = self.shift[:, None] + contract(self.linear, c)
        for _ in range(200):
            new = self.shift[:, None] + contract(self.linear, c + self.displacement(q))
            done = float(np.abs(new - q).max()) < tol
            q = new
            if done:
                break
        return q

    @property
    def scale(self) -> float:
        return float(abs(det3(self.linear)) ** (1.0 / 3.0))

    @property
    def rotation_deg(self) -> float:
        """Angle of the rotation part of ``linear`` (polar decomposition)."""
        rot = polar_rotation(self.linear)
        return float(np.rad2deg(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0))))

    @property
    def deformation_rms_mm(self) -> float:
        """RMS magnitude of the displacement (averaged over phases)."""
        return float(np.sqrt((self.wave_amplitudes**2).sum() / 2.0))


IDENTITY = Geometry(linear=np.eye(3), shift=np.zeros(3))

_MAX_LIPSCHITZ = 0.45  # bound on |grad u|: keeps the map invertible and the iteration fast


def draw_geometry(rng: np.random.Generator, deformation_mm: float) -> Geometry:
    """A random patient transform: scale ``U(0.9, 1.1)`` times a per-axis ``U(0.96, 1.04)``
    (clipped to 0.88..1.12), rotation ``U(-3, 3)`` degrees about x and y and ``U(-5, 5)``
    about z, shift ``U(-12, 12)`` mm in x, y and ``U(-8, 8)`` mm in z, and six plane waves
    (wavelength 160-360 mm) with RMS displacement ``U(0.4, 1) * deformation_mm``."""
    scale = np.clip(rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, 3), 0.88, 1.12)
    angles = [rng.uniform(-3.0, 3.0), rng.uniform(-3.0, 3.0), rng.uniform(-5.0, 5.0)]
    shift = np.array([rng.uniform(-12.0, 12.0), rng.uniform(-12.0, 12.0), rng.uniform(-8.0, 8.0)])
    n_waves = 6
    directions = rng.normal(size=(n_waves, 3))
    directions = unit(directions, axis=1)
    wavelengths = rng.uniform(160.0, 360.0, n_waves)
    vectors = directions * (2.0 * np.pi / wavelengths)[:, None]
    phases = rng.uniform(0.0, 2.0 * np.pi, n_waves)
    amplitudes = rng.normal(size=(n_waves, 3))
    rms = rng.uniform(0.4, 1.0) * deformation_mm
    current = float(np.sqrt((amplitudes**2).sum() / 2.0))
    amplitudes *= rms / current if current > 0 else 0.0
    lipschitz = float((norm(amplitudes, axis=1) * norm(vectors, axis=1)).sum())
    if lipschitz > _MAX_LIPSCHITZ:
        amplitudes *= _MAX_LIPSCHITZ / lipschitz
    return Geometry(
        linear=rotation_xyz(np.deg2rad(angles)) * scale[None, :],  # R diag(scale)
        shift=shift,
        wave_vectors=vectors,
        wave_phases=phases,
        wave_amplitudes=amplitudes,
    )


def grid_centre(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Physical position (mm, write_cohort's affine) of the centre of a full-FOV grid."""
    return (np.asarray(shape, float) - 1.0) / 2.0 * np.asarray(spacing, float)


def grid_points(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Patient coordinates ``q`` (3, N; C order of ``shape``) of the voxel centres of a
    full-FOV grid, relative to its centre."""
    axes = [
        (np.arange(n, dtype=float) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing, strict=True)
    ]
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])


def canonical_coordinates(
    geometry: Geometry, shape: Sequence[int], spacing: Sequence[float]
) -> np.ndarray:
    """Canonical coordinates (3, *shape) of every voxel centre of a full-FOV grid."""
    return geometry.to_canonical(grid_points(shape, spacing)).reshape(3, *shape)


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


# --------------------------------------------------------------------------- cases


_TAG = 0x0C7  # entropy tag of this generator's streams (the atlas uses its own)
_STREAMS = (
    "meta",
    "geometry",
    "lung",
    "noise",
    "report",
    *(f"detail_{f}" for f in FINDINGS),
    *(f"texture_{f}" for f in RENDERED_FINDINGS),
)


def case_streams(seed: int, i: int, tag: int = _TAG) -> dict[str, np.random.Generator]:
    """Fresh independent generators of case ``i``, one per purpose (:data:`_STREAMS`),
    children of ``SeedSequence([seed, tag], spawn_key=(i,))``; independent of the cohort
    size."""
    seq = np.random.SeedSequence([seed, tag], spawn_key=(i,))
    return {
        name: np.random.default_rng(child)
        for name, child in zip(_STREAMS, seq.spawn(len(_STREAMS)), strict=True)
    }


def _pick(rng: np.random.Generator, options: Sequence, p: Sequence[float] | None = None):
    """One of ``options`` (weights ``p``, normalised)."""
    if p is None:
        return options[int(rng.integers(len(options)))]
    w = np.asarray(p, float)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def _finding_details(rng: np.random.Generator, name: str, phenotype: str) -> dict:
    """Per-finding draws (severity, side, lobe, sizes...), made whether or not the finding is
    present so that switching it on for a test uses the same draws."""
    s = float(rng.uniform(0.15, 1.0))
    d: dict = {"severity": s}
    if name == "emphysema":
        d["fraction"] = 0.08 + 0.27 * s
    elif name == "nodule":
        if phenotype == "lung_cancer":
            sizes = [rng.uniform(14.0, 25.0)] + list(rng.uniform(5.0, 9.0, rng.integers(0, 3)))
            p_lobe = (0.35, 0.08, 0.15, 0.30, 0.12)
        else:
            sizes = list(rng.uniform(5.0, 12.0, rng.integers(1, 3)))
            p_lobe = (0.25, 0.10, 0.20, 0.25, 0.20)
        d["diameters"] = tuple(round(float(v), 1) for v in sizes)
        d["lobes"] = tuple(_pick(rng, tuple(LOBES), p_lobe) for _ in sizes)
        d["hu"] = float(rng.uniform(15.0, 45.0))
    elif name == "pleural_effusion":
        p_side = (0.25, 0.15, 0.60) if phenotype == "heart_failure" else (0.45, 0.35, 0.20)
        d["side"] = _pick(rng, ("right", "left", "bilateral"), p_side)
        d["height_mm"] = 35.0 + 75.0 * s
    elif name == "consolidation":
        d["lobe"] = _pick(rng, tuple(LOBES), (0.15, 0.12, 0.30, 0.15, 0.28))
        d["extent"] = 0.35 + 0.6 * s  # share of the lobe
        d["hu"] = float(rng.uniform(-60.0, 35.0))
        d["air_bronchogram"] = bool(rng.random() < 0.5)
    elif name == "fibrosis":
        d["depth_mm"] = 12.0 + 13.0 * s
        d["fraction"] = 0.05 + 0.15 * s
    elif name == "ground_glass":
        by_phenotype = {
            "heart_failure": (0.2, 0.1, 0.45, 0.25),
            "fibrotic_ild": (0.2, 0.6, 0.05, 0.15),
        }
        p_where = by_phenotype.get(phenotype, (0.5, 0.2, 0.15, 0.15))
        d["distribution"] = _pick(rng, ("diffuse", "basal", "perihilar", "dependent"), p_where)
        d["fraction"] = 0.06 + 0.2 * s
    elif name == "cardiomegaly":
        d["scale"] = 1.15 + 0.25 * s
    elif name == "atelectasis":
        d["side"] = _pick(rng, ("right", "left", "bilateral"), (0.3, 0.25, 0.45))
        d["height_mm"] = float(rng.uniform(15.0, 30.0))
        d["hu"] = float(rng.uniform(-20.0, 40.0))
    elif name == "lymphadenopathy":
        d["size_mm"] = int(rng.integers(11, 26))
    return d


@dataclass(frozen=True, eq=False)
class PatientPlan:
    """Everything drawn for one patient before rendering."""

    case_id: str
    index: int
    seed: int
    phenotype: str
    present: frozenset[str]
    details: Mapping[str, dict]
    fov: str  # full, upper, lower
    fov_share: float  # share of the slices a fragment keeps
    fov_offset: float  # 0..1: how far a fragment stops short of the top/bottom
    age: int
    sex: str
    geometry: Geometry
    noise_hu: float
    blur_vox: float
    stream_tag: int = _TAG  # entropy tag of the case streams (another generator's own)

    def with_findings(self, **flags: bool) -> PatientPlan:
        """The same patient with findings switched on (True) or off (False)."""
        unknown = sorted(set(flags) - set(FINDINGS))
        if unknown:
            raise ValueError(f"{NAME}: unknown finding(s) {unknown}; known: {list(FINDINGS)}")
        present = set(self.present)
        for name, on in flags.items():
            present.discard(name)
            if on:
                present.add(name)
        return replace(self, present=frozenset(present))


def plan_patient(
    seed: int,
    i: int,
    phenotype: str,
    fov: str = "full",
    *,
    noise_hu: Sequence[float] = DEFAULTS["noise_hu"],
    deformation_mm: float = DEFAULTS["deformation_mm"],
    stream_tag: int = _TAG,
) -> PatientPlan:
    """Draw patient ``i``'s findings, demography, transform and scanner settings (from the
    streams of :func:`case_streams` with ``stream_tag``)."""
    if phenotype not in PHENOTYPES:
        raise ValueError(f"{NAME}: phenotype must be one of {list(PHENOTYPES)}, got {phenotype!r}")
    if fov not in ("full", "upper", "lower"):
        raise ValueError(f"{NAME}: fov must be 'full', 'upper' or 'lower', got {fov!r}")
    streams = case_streams(seed, i, stream_tag)
    meta = streams["meta"]
    draws = meta.random(len(FINDINGS))
    present = frozenset(
        f for f, u, p in zip(FINDINGS, draws, FINDING_PROBABILITY[phenotype], strict=True) if u < p
    )
    mean_age, sd_age, p_male = _DEMOGRAPHY[phenotype]
    age = int(np.clip(np.rint(meta.normal(mean_age, sd_age)), 18, 95))
    sex = "M" if meta.random() < p_male else "F"
    fov_share = float(meta.uniform(0.35, 0.65))
    fov_offset = float(meta.random())
    noise = float(meta.uniform(*noise_hu))
    blur = float(meta.uniform(0.45, 0.75))
    details = {f: _finding_details(streams[f"detail_{f}"], f, phenotype) for f in FINDINGS}
    return PatientPlan(
        case_id=case_id(i),
        index=i,
        seed=seed,
        phenotype=phenotype,
        present=present,
        details=details,
        fov=fov,
        fov_share=fov_share,
        fov_offset=fov_offset,
        age=age,
        sex=sex,
        geometry=draw_geometry(streams["geometry"], deformation_mm),
        noise_hu=noise,
        blur_vox=blur,
        stream_tag=stream_tag,
    )


def case_id(i: int) -> str:
    return f"rct_{i:04d}"


def fov_slab(plan: PatientPlan, n_slices: int) -> slice:
    """Slices of the full-FOV grid that the patient's image keeps: all of them, or for a
    fragment ``fov_share`` of them at the top (upper) or bottom (lower), stopping short of
    the end by up to 10 % of the slices."""
    if plan.fov == "full":
        return slice(0, n_slices)
    m = int(np.clip(round(plan.fov_share * n_slices), 3, n_slices))
    gap = int(round(plan.fov_offset * 0.1 * n_slices))
    start = min(gap, n_slices - m) if plan.fov == "lower" else max(n_slices - m - gap, 0)
    return slice(start, start + m)


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


# --------------------------------------------------------------------------- reports

# Phrase tables. Positive phrases are sentence bodies (capitalised when used); fields:
# {sev} severity word, {side} laterality, {lobe} lobe name, {d} size (mm), {where}
# distribution, {n} number.
_SEVERITY = {
    "default": ("mild", "moderate", "severe"),
    "pleural_effusion": ("small", "moderate", "large"),
    "ground_glass": ("faint", "patchy", "extensive"),
    "cardiomegaly": ("mild", "moderate", "marked"),
    "hiatal_hernia": ("small", "moderate", "large"),
}
_POSITIVE: dict[str, tuple[str, ...]] = {
    "emphysema": (
        "{sev} centrilobular emphysema with upper lobe predominance",
        "{sev} upper-lobe predominant emphysema",
        "emphysematous changes in both upper lobes",
        "{sev} paraseptal and centrilobular emphysema",
        "there is {sev} emphysema, most pronounced in the upper lobes",
    ),
    "pleural_effusion": (
        "{sev} {side} pleural effusion",
        "{sev} {side_adj} pleural effusion",
        "{sev} amount of {side} pleural fluid",
        "there is a {sev} {side} effusion",
        "{sev} {side} pleural effusion with adjacent compressive changes",
    ),
    "consolidation": (
        "consolidation in the {lobe}{bronchogram}",
        "airspace consolidation in the {lobe}{bronchogram}",
        "patchy consolidation of the {lobe}",
        "dense consolidation involving the {lobe}{bronchogram}",
        "focal airspace consolidation in the {lobe}",
    ),
    "fibrosis": (
        "subpleural reticulation with basal predominance",
        "{sev} fibrotic changes in both lower lobes",
        "basal subpleural honeycombing",
        "peripheral reticular opacities and traction bronchiectasis at the lung bases",
        "honeycombing and reticulation in the subpleural lower lobes",
    ),
    "ground_glass": (
        "{sev} ground-glass opacities {where}",
        "{sev} GGO {where}",
        "areas of ground-glass attenuation {where}",
        "{sev} ground glass opacification {where}",
    ),
    "cardiomegaly": (
        "cardiomegaly",
        "{sev} cardiomegaly",
        "the heart is enlarged",
        "enlarged cardiac silhouette",
        "the cardiac silhouette is enlarged",
    ),
    "atelectasis": (
        "{basal} subsegmental atelectasis",
        "linear atelectasis at the {base}",
        "plate-like atelectasis {at_base}",
        "dependent atelectasis {at_base}",
    ),
    "lymphadenopathy": (
        "enlarged mediastinal lymph nodes up to {n} mm in short axis",
        "mediastinal and hilar lymphadenopathy",
        "subcarinal adenopathy measuring {n} mm",
        "{sev} mediastinal lymphadenopathy",
    ),
    "hiatal_hernia": (
        "{sev} hiatal hernia",
        "a hiatus hernia is noted",
        "{sev} sliding hiatal hernia",
        "hiatal hernia",
    ),
    "atherosclerosis": (
        "atherosclerotic calcifications of the thoracic aorta",
        "aortic atherosclerosis",
        "coronary artery calcifications",
        "calcified atherosclerotic plaque in the aortic arch",
        "{sev} atherosclerosis of the aorta and coronary arteries",
    ),
}
_NODULE_ONE = (
    "a {d} mm solid nodule in the {lobe}",
    "{lobe} pulmonary nodule measuring {d} mm",
    "there is a {d} mm nodule in the {lobe}",
    "a {d} mm nodular opacity in the {lobe}",
)
_NODULE_LARGE = (
    "a spiculated {d} mm nodule in the {lobe}, suspicious for malignancy",
    "irregular {d} mm nodule in the {lobe}",
)
_NODULE_MANY = (
    "multiple pulmonary nodules, the largest measuring {d} mm in the {lobe}",
    "{n} pulmonary nodules, the largest {d} mm in the {lobe}",
)
_WHERE = {
    "diffuse": ("in both lungs", "scattered bilaterally", "throughout both lungs"),
    "basal": ("in the lower lobes", "at the lung bases", "with basal predominance"),
    "perihilar": ("in a perihilar distribution", "in the central lung zones"),
    "dependent": ("in the dependent lung", "in the posterior lung zones"),
}
# noun phrases for negation; the first is the plain term
_NEGATABLE: dict[str, tuple[str, ...]] = {
    "emphysema": ("emphysema",),
    "nodule": ("suspicious pulmonary nodules", "pulmonary nodules", "nodules"),
    "pleural_effusion": ("pleural effusion", "pleural fluid", "effusion"),
    "consolidation": ("consolidation", "focal consolidation", "airspace consolidation"),
    "fibrosis": ("fibrotic changes", "honeycombing", "reticulation"),
    "ground_glass": ("ground-glass opacities", "GGO"),
    "cardiomegaly": ("cardiomegaly",),
    "atelectasis": ("atelectasis",),
    "lymphadenopathy": (
        "lymphadenopathy",
        "enlarged lymph nodes",
        "mediastinal lymphadenopathy",
    ),
    "hiatal_hernia": ("hiatal hernia",),
    "atherosclerosis": ("coronary artery calcification", "significant atherosclerosis"),
}
# how often an absent finding is explicitly negated (pertinent negatives)
_NEGATE_PROBABILITY = {
    "emphysema": 0.2,
    "nodule": 0.4,
    "pleural_effusion": 0.6,
    "consolidation": 0.5,
    "fibrosis": 0.12,
    "ground_glass": 0.15,
    "cardiomegaly": 0.3,
    "atelectasis": 0.1,
    "lymphadenopathy": 0.5,
    "hiatal_hernia": 0.05,
    "atherosclerosis": 0.05,
}
_DISTRACTORS = {"lungs": "pneumothorax", "pleura": "pneumothorax", "heart": "pericardial effusion"}
_NEGATION_FORMS = (
    "No {x}.",
    "There is no evidence of {x}.",
    "No evidence of {x}.",
    "Negative for {x}.",
    "There is no {x}.",  # singular nouns only (see compose_report)
)
_SECTION_OF = {
    "emphysema": "lungs",
    "nodule": "lungs",
    "consolidation": "lungs",
    "fibrosis": "lungs",
    "ground_glass": "lungs",
    "atelectasis": "lungs",
    "pleural_effusion": "pleura",
    "cardiomegaly": "heart",
    "lymphadenopathy": "heart",
    "atherosclerosis": "heart",
    "hiatal_hernia": "abdomen",
}
_SECTIONS = (
    ("lungs", "Lungs and airways"),
    ("pleura", "Pleura"),
    ("heart", "Heart and mediastinum"),
    ("abdomen", "Upper abdomen"),
    ("bones", "Bones and soft tissues"),
)
_NORMAL = {
    "lungs": ("The lungs are clear.", "No acute pulmonary abnormality."),
    "airways": ("The central airways are patent.", "The trachea and main bronchi are patent."),
    "pleura": ("The pleural spaces are clear.", "Unremarkable pleura."),
    "heart": ("Heart size is normal.", "The heart and great vessels are normal in caliber."),
    "abdomen": (
        "The visualized upper abdomen is unremarkable.",
        "Limited views of the upper abdomen are unremarkable.",
    ),
    "bones": (
        "No acute osseous abnormality.",
        "Mild degenerative changes of the thoracic spine.",
        "No suspicious osseous lesions.",
    ),
}
_IMPRESSION_ORDER = (
    "nodule",
    "consolidation",
    "pleural_effusion",
    "cardiomegaly",
    "fibrosis",
    "emphysema",
    "ground_glass",
    "lymphadenopathy",
    "atelectasis",
    "hiatal_hernia",
    "atherosclerosis",
)
_IMPRESSION_SHORT: dict[str, tuple[str, ...]] = {
    "emphysema": ("Emphysema", "{sev} emphysema"),
    "nodule": ("{lobe} nodule ({d} mm); follow-up recommended", "Pulmonary nodule, {d} mm"),
    "pleural_effusion": ("{sev} {side} pleural effusion", "Pleural effusion"),
    "consolidation": ("{lobe} consolidation", "Airspace consolidation in the {lobe}"),
    "fibrosis": ("Basal subpleural fibrosis", "Pulmonary fibrosis"),
    "ground_glass": ("Ground-glass opacities", "GGO"),
    "cardiomegaly": ("Cardiomegaly", "Enlarged heart"),
    "atelectasis": ("{basal} atelectasis", "Atelectasis at the {base}"),
    "lymphadenopathy": ("Mediastinal lymphadenopathy", "Enlarged mediastinal lymph nodes"),
    "hiatal_hernia": ("Hiatal hernia",),
    "atherosclerosis": ("Aortic and coronary atherosclerosis", "Atherosclerosis"),
}
# interpretation an impression may add for the phenotype's key finding (no vocabulary terms)
_INTERPRETATION = {
    ("pneumonia", "consolidation"): ", compatible with pneumonia",
    ("heart_failure", "pleural_effusion"): ", suggestive of congestive heart failure",
    ("heart_failure", "cardiomegaly"): ", in keeping with known heart disease",
    ("fibrotic_ild", "fibrosis"): ", in keeping with fibrotic interstitial lung disease",
    ("lung_cancer", "nodule"): ", suspicious for primary lung malignancy",
    ("copd", "emphysema"): ", consistent with COPD",
}
_HISTORY = {
    "generic": (
        "Chest pain.",
        "Routine follow-up.",
        "Preoperative evaluation.",
        "Cough.",
        "Shortness of breath.",
    ),
    "normal": ("Chest pain, no prior history.", "Trauma.", "Abnormal laboratory values."),
    "copd": ("Chronic cough, smoker.", "Dyspnea on exertion.", "Smoker, 40 pack-years."),
    "heart_failure": ("Worsening dyspnea and peripheral edema.", "Orthopnea."),
    "pneumonia": ("Fever and productive cough.", "Elevated inflammatory markers, cough."),
    "fibrotic_ild": ("Progressive dyspnea, dry cough.", "Velcro crackles on auscultation."),
    "lung_cancer": ("Weight loss and hemoptysis.", "Staging.", "Abnormal chest radiograph."),
}
_EXAMINATION = (
    "CT of the chest without intravenous contrast.",
    "Contrast-enhanced CT of the chest.",
    "Low-dose CT of the thorax.",
    "CT thorax with multiplanar reconstructions.",
)
_LIMITED = {
    "upper": (
        "Limited examination covering the upper chest.",
        "Images through the upper thorax only.",
    ),
    "lower": (
        "Limited examination through the lung bases and upper abdomen.",
        "Images through the lower chest only.",
    ),
}
_OUTSIDE_FOV = (
    "known {phrase} from prior imaging, outside the field of view of this limited study",
    "{phrase} as previously reported, outside the current field of view",
)


def _severity_word(name: str, severity: float) -> str:
    words = _SEVERITY.get(name, _SEVERITY["default"])
    return words[0 if severity < 0.4 else 1 if severity < 0.75 else 2]


def _join(items: Sequence[str], rng: np.random.Generator) -> str:
    if len(items) == 1:
        return items[0]
    comma = "," if rng.random() < 0.5 and len(items) > 2 else ""
    return ", ".join(items[:-1]) + f"{comma} or {items[-1]}"


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fields(rng: np.random.Generator, name: str, plan: PatientPlan, lobes: Sequence[str]) -> dict:
    """Values of the phrase-table fields for a present finding."""
    d = plan.details[name]
    side = d.get("side", "right")
    fields = {
        "sev": _severity_word(name, d["severity"]),
        "side": side,
        "side_adj": "bilateral" if side == "bilateral" else f"{side}-sided",
        "lobe": LOBES.get(d.get("lobe", "RLL"), "right lower lobe"),
        "bronchogram": " with air bronchograms" if d.get("air_bronchogram") else "",
        "where": _pick(rng, _WHERE[d.get("distribution", "diffuse")]),
        "n": d.get("size_mm", 12),
        "basal": "bibasilar" if side == "bilateral" else f"{side} basilar",
        "base": "lung bases" if side == "bilateral" else f"{side} lung base",
        "at_base": "in both lower lobes" if side == "bilateral" else f"in the {side} lower lobe",
    }
    if name == "nodule":
        k = int(np.argmax(d["diameters"]))
        fields["lobe"] = LOBES[(lobes or d["lobes"])[k]]
        fields["d"] = int(round(d["diameters"][k]))
        fields["n"] = len(d["diameters"])
    return fields


def _plural_effusion(name: str, side: str, phrase: str) -> str:
    if name == "pleural_effusion" and side == "bilateral":
        return phrase.replace("pleural effusion", "pleural effusions")
    return phrase


def _positive_phrase(
    rng: np.random.Generator, name: str, plan: PatientPlan, lobes: Sequence[str]
) -> str:
    """One positive description of a present finding (no trailing period)."""
    fields = _fields(rng, name, plan, lobes)
    if name == "nodule":
        if fields["n"] > 1 and rng.random() < 0.6:
            return _pick(rng, _NODULE_MANY).format(**fields)
        table = _NODULE_LARGE + _NODULE_ONE if fields["d"] >= 15 else _NODULE_ONE
        return _pick(rng, table).format(**fields)
    phrase = _pick(rng, _POSITIVE[name]).format(**fields)
    return _plural_effusion(name, fields["side"], phrase)


def _impression_item(rng: np.random.Generator, name: str, plan: PatientPlan, lobes) -> str:
    fields = _fields(rng, name, plan, lobes)
    text = _pick(rng, _IMPRESSION_SHORT[name]).format(**fields)
    text = _capitalise(_plural_effusion(name, fields["side"], text))
    key = (plan.phenotype, name)
    if key in _INTERPRETATION and rng.random() < 0.4:
        text = text.split(";")[0] + _INTERPRETATION[key]
    return text


def compose_report(
    plan: PatientPlan,
    visible: Mapping[str, bool],
    nodule_lobes: Sequence[str] = (),
    miss_rate: float = DEFAULTS["miss_rate"],
) -> tuple[str, frozenset[str]]:
    """Free-text radiology report of a patient and the findings it mentions positively.

    Present findings are mentioned with probability ``1 - miss_rate`` when visible or not
    rendered, and with probability 0.5 when rendered but outside the field of view (then half
    the time as a known finding outside it). Absent findings are negated with the
    per-finding rates of ``_NEGATE_PROBABILITY``; nothing present is ever negated.
    """
    rng = case_streams(plan.seed, plan.index, plan.stream_tag)["report"]
    mentioned: set[str] = set()
    by_section: dict[str, list[str]] = {key: [] for key, _ in _SECTIONS}
    negated: dict[str, list[str]] = {key: [] for key, _ in _SECTIONS}
    for name in FINDINGS:
        section = _SECTION_OF[name]
        if name in plan.present:
            rendered = name in RENDERED_FINDINGS
            outside = rendered and not visible.get(name, False)
            p_mention = 0.5 if outside else 1.0 - miss_rate
            if rng.random() >= p_mention:
                continue  # missed (or not reported)
            phrase = _positive_phrase(rng, name, plan, nodule_lobes)
            if outside and rng.random() < 0.5:
                phrase = _pick(rng, _OUTSIDE_FOV).format(phrase=phrase)
            if rng.random() < 0.08 and name in ("consolidation", "atelectasis"):
                phrase = _pick(rng, ("probable ", "likely ")) + phrase
            by_section[section].append(_capitalise(phrase) + ".")
            mentioned.add(name)
        elif rng.random() < _NEGATE_PROBABILITY[name]:
            negated[section].append(_pick(rng, _NEGATABLE[name]))

    paragraphs = []
    for key, title in _SECTIONS:
        sentences = list(by_section[key])
        nouns = list(negated[key])
        if key in _DISTRACTORS and rng.random() < 0.35:
            nouns.append(_DISTRACTORS[key])
        if nouns:
            attach = sentences and " with" not in sentences[-1] and rng.random() < 0.3
            if attach:  # the negation follows a positive finding: "... without X."
                sentences[-1] = sentences[-1][:-1] + f" without {_join(nouns, rng)}."
            else:
                forms = _NEGATION_FORMS if not nouns[0].endswith("s") else _NEGATION_FORMS[:-1]
                sentences.append(_pick(rng, forms).format(x=_join(nouns, rng)))
        # normal statements only where they are true (no finding of the section present)
        section_clear = not any(_SECTION_OF[f] == key for f in plan.present)
        in_view = not (key == "abdomen" and plan.fov == "upper")
        if section_clear and in_view and (key == "lungs" or rng.random() < 0.6):
            sentences.insert(0, _pick(rng, _NORMAL[key]))
        if key == "lungs" and rng.random() < 0.5:
            sentences.append(_pick(rng, _NORMAL["airways"]))
        if sentences:
            paragraphs.append((title, " ".join(sentences)))

    structured = rng.random() < 0.6
    history_pool = _HISTORY[plan.phenotype] if rng.random() < 0.6 else _HISTORY["generic"]
    exam = _pick(rng, _EXAMINATION)
    if plan.fov != "full":
        exam += " " + _pick(rng, _LIMITED[plan.fov])
    lines = [f"EXAMINATION: {exam}", f"CLINICAL HISTORY: {_pick(rng, history_pool)}"]
    if rng.random() < 0.7:
        months = int(rng.integers(2, 25))
        comparison = "None." if rng.random() < 0.5 else f"CT from {months} months prior."
        lines.append(f"COMPARISON: {comparison}")
    lines += ["", "FINDINGS:"]
    if structured:
        lines += [f"{title}: {text}" for title, text in paragraphs]
    else:
        lines.append(" ".join(text for _, text in paragraphs))
    lines += ["", "IMPRESSION:"]
    key_findings = [f for f in _IMPRESSION_ORDER if f in mentioned][:4]
    if key_findings:
        items = [_impression_item(rng, f, plan, nodule_lobes) + "." for f in key_findings]
        lines += [f"{k + 1}. {item}" for k, item in enumerate(items)]
    else:
        lines.append(
            _pick(
                rng,
                (
                    "No acute cardiopulmonary abnormality.",
                    "Normal CT of the chest.",
                    "No significant abnormality.",
                ),
            )
        )
    return "\n".join(lines) + "\n", frozenset(mentioned)


# --------------------------------------------------------------------------- parameters


def validate_params(params: dict) -> dict:
    """Merge ``params`` into :data:`DEFAULTS` and check every value; raise ``ValueError`` (or
    ``TypeError`` for an unknown name) naming the offending parameter."""
    p = merged(NAME, DEFAULTS, params)
    out = {
        "seed": integer(NAME, p, "seed", 0),
        "n_cases": integer(NAME, p, "n_cases", 1),
        "shape": numbers(NAME, p, "shape", 3, int, 1),
        "spacing": numbers(NAME, p, "spacing", 3, float, 0.0),
        "phenotype_weights": numbers(NAME, p, "phenotype_weights", len(PHENOTYPES), float, 0.0),
        "fragment_fraction": number(NAME, p, "fragment_fraction", 0.0, 1.0),
        "report_fraction": number(NAME, p, "report_fraction", 0.0, 1.0),
        "miss_rate": number(NAME, p, "miss_rate", 0.0, 1.0),
        "noise_hu": numbers(NAME, p, "noise_hu", 2, float, 0.0),
        "deformation_mm": number(NAME, p, "deformation_mm", 0.0, 20.0),
    }
    check_grid(NAME, out["shape"], out["spacing"], p)
    if sum(out["phenotype_weights"]) <= 0:
        raise fail(NAME, "phenotype_weights", "must have a positive sum", p["phenotype_weights"])
    lo, hi = out["noise_hu"]
    if not lo <= hi <= 200.0:
        raise fail(
            NAME, "noise_hu", "must be (low, high) with 0 <= low <= high <= 200", p["noise_hu"]
        )
    return out


def check_grid(generator: str, shape: tuple, spacing: tuple, raw: dict) -> None:
    """A full-FOV grid must have at least 16 x 16 x 12 voxels (at most 512 per side) and
    cover 280-600 mm in x and y and 240-600 mm in z (the thorax is ~300 x 230 x 290 mm)."""
    if min(shape[:2]) < 16 or shape[2] < 12 or max(shape) > 512:
        raise fail(
            generator, "shape", "must be 16..512 voxels in x, y and 12..512 in z", raw["shape"]
        )
    if min(spacing) <= 0:
        raise fail(generator, "spacing", "must be positive", raw["spacing"])
    fov = [n * s for n, s in zip(shape, spacing, strict=True)]
    if not (280.0 <= min(fov[:2]) and max(fov[:2]) <= 600.0 and 240.0 <= fov[2] <= 600.0):
        raise fail(
            generator,
            "spacing",
            "times shape (the field of view) must cover 280-600 mm in x, y and 240-600 mm in z",
            (raw["shape"], raw["spacing"]),
        )


def exact_counts(n: int, weights: Sequence[float]) -> np.ndarray:
    """``n`` split in proportion to ``weights`` by largest remainders (ties to the first)."""
    w = np.asarray(weights, float)
    raw = w / w.sum() * n
    counts = np.floor(raw + 1e-9).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return counts


def cohort_assignments(
    seed: int,
    n_cases: int,
    phenotype_weights: Sequence[float],
    fragment_fraction: float,
    report_fraction: float,
) -> tuple[list[str], list[str], np.ndarray]:
    """Phenotype, field of view and report presence of every case: exact proportions
    (largest remainders), each shuffled by its own stream of ``seed``."""

    def shuffled(k: int, values: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG, k]))
        return rng.permutation(values)

    phenos = np.repeat(np.arange(len(PHENOTYPES)), exact_counts(n_cases, phenotype_weights))
    f = fragment_fraction
    fov_counts = exact_counts(n_cases, (1.0 - f, f / 2.0, f / 2.0))
    fovs = np.repeat(np.array(["full", "upper", "lower"]), fov_counts)
    r = report_fraction
    reports = np.repeat(np.array([True, False]), exact_counts(n_cases, (r, 1.0 - r)))
    return (
        [PHENOTYPES[int(k)] for k in shuffled(1, phenos)],
        [str(v) for v in shuffled(2, fovs)],
        shuffled(3, reports),
    )


# --------------------------------------------------------------------------- cohort


def generate(root: str | Path, **params) -> Path:
    """Write the routine chest CT phantom cohort to ``root`` (see the module docstring).

    Every case is rendered in a first pass (visibility of the findings decides the report,
    and both go into ``clinical.csv``), kept zlib-compressed in memory, and written by
    :func:`medclust.cohort.write_cohort`.
    """
    p = validate_params(params)
    shape, spacing = p["shape"], p["spacing"]
    phenotypes, fovs, has_report = cohort_assignments(
        p["seed"],
        p["n_cases"],
        p["phenotype_weights"],
        p["fragment_fraction"],
        p["report_fraction"],
    )
    rows, stored = [], []
    for i in range(p["n_cases"]):
        plan = plan_patient(
            p["seed"],
            i,
            phenotypes[i],
            fovs[i],
            noise_hu=p["noise_hu"],
            deformation_mm=p["deformation_mm"],
        )
        out = render_patient(plan, shape, spacing)
        report, mentioned = None, frozenset()
        if has_report[i]:
            report, mentioned = compose_report(plan, out.visible, out.nodule_lobes, p["miss_rate"])
        row = {
            "case_id": plan.case_id,
            "phenotype": plan.phenotype,
            "phenotype_id": PHENOTYPES.index(plan.phenotype),
        }
        row.update({f"finding_{f}": int(f in plan.present) for f in FINDINGS})
        row.update({f"visible_{f}": int(out.visible[f]) for f in FINDINGS})
        row.update({f"mentioned_{f}": int(f in mentioned) for f in FINDINGS})
        row.update(
            {
                "has_report": int(report is not None),
                "fov": plan.fov,
                "z_start_mm": round(out.z_range_mm[0], 1),
                "z_end_mm": round(out.z_range_mm[1], 1),
                "n_slices": int(out.image.shape[2]),
                "age": plan.age,
                "sex": plan.sex,
                "scale": round(plan.geometry.scale, 4),
                "rotation_deg": round(plan.geometry.rotation_deg, 2),
                "deformation_mm": round(plan.geometry.deformation_rms_mm, 2),
                "noise_hu": round(plan.noise_hu, 1),
            }
        )
        rows.append(row)
        stored.append(
            (
                out.image.shape,
                zlib.compress(out.image.tobytes(), 1),
                zlib.compress(out.labelmap.tobytes(), 1),
                report,
            )
        )
        log.debug("rendered %s (%s, %s FOV)", plan.case_id, plan.phenotype, plan.fov)
    clinical = pd.DataFrame(rows)

    def cases() -> Iterator[CaseData]:
        for k, row in enumerate(rows):
            vol_shape, image, labelmap, report = stored[k]
            stored[k] = None
            yield CaseData(
                id=row["case_id"],
                image=np.frombuffer(zlib.decompress(image), np.int16).reshape(vol_shape),
                spacing=spacing,
                labelmap=np.frombuffer(zlib.decompress(labelmap), np.uint8).reshape(vol_shape),
                report=report,
            )

    description = (
        "Phantom routine chest CT (int16 HU) of a population with latent phenotypes "
        f"({', '.join(PHENOTYPES)}): a canonical thorax under per-patient affine and smooth "
        "nonlinear deformations, full or fragmentary fields of view in z, scanner noise and "
        "blur; rendered findings (emphysema, nodules, pleural effusion, consolidation, "
        "fibrosis, ground-glass opacities, cardiomegaly, atelectasis) and free-text radiology "
        "reports with synonyms, modifiers and negations for ~75 % of the cases."
    )
    return write_cohort(
        root,
        cases(),
        clinical,
        name=NAME,
        modality="CT",
        description=description,
        labels=dict(LABELS),
        spacing_note=(
            f"voxel spacing {spacing[0]} x {spacing[1]} x {spacing[2]} mm; axial slices along "
            "the last axis (x right->left, y anterior->posterior, z inferior->superior); "
            "fragments have fewer slices; affine diag(spacing), no offset"
        ),
        clinical_label="phenotype",
        findings=list(FINDINGS),
        rendered_findings=list(RENDERED_FINDINGS),
        phenotypes=list(PHENOTYPES),
        ground_truth=(
            "clinical.csv: phenotype (latent), finding_<name> (true presence), "
            "visible_<name> (present and inside the field of view), mentioned_<name> "
            "(reported positively); labelmap: true organ labels after the patient's "
            "deformation, cropped to its field of view (reference for registration)"
        ),
        generator_params=_describe(p),
    )


def _describe(p: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}
