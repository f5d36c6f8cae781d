"""The canonical thorax of the routine chest CT phantom: organ labels, tissue codes with their HU,
the anatomy's constants (:class:`ThoraxAnatomy`) and :func:`canonical_tissue`, which evaluates
it at any canonical points (mm; x right->left, y anterior->posterior, z inferior->superior)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medclust_phantoms.exact import (
    contract,
    dot,
    rotation_xyz,
)

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
