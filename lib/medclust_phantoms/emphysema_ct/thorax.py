"""The anatomy of one emphysema chest-CT case on the fine grid: grid and geometry helpers, the
thorax (:func:`_thorax`: body, chest wall, mediastinum, heart, great vessels, airways, spine,
the two lungs) and the pulmonary vessel tree (:func:`_vessel_occupancy`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from medclust_phantoms.emphysema_ct.design import _Design
from medclust_phantoms.exact import cross, dot, norm

_HU_AIR = -1000.0
_HU_FAT = -100.0
_HU_MUSCLE = 45.0
_HU_SOFT = 40.0
_HU_ABDOMEN = 50.0
_HU_BLOOD = 40.0
_HU_BONE = 350.0
_HU_RIB = 600.0
_HU_CANAL = 15.0
_HU_MED_FAT = -80.0


# --------------------------------------------------------------------------- helpers


def _grid(shape: tuple, spacing: Sequence[float]) -> tuple[np.ndarray, ...]:
    """Open grids of voxel-centre coordinates in mm, centred on the field of view."""
    return tuple(
        ((np.arange(n, dtype=np.float32) + 0.5) * s - n * s / 2).reshape(
            [-1 if a == ax else 1 for a in range(3)]
        )
        for ax, (n, s) in enumerate(zip(shape, spacing, strict=True))
    )


def _smooth2d(rng: np.random.Generator, shape: tuple, sigma: Sequence[float]) -> np.ndarray:
    """Gaussian-smoothed white noise on a 2-D grid, unit standard deviation (float32)."""
    field = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    out = []
    for ax in range(mask.ndim):
        idx = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax)))
        lo, hi = (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, mask.shape[ax])
        out.append(slice(max(0, lo - pad), min(mask.shape[ax], hi + pad)))
    return tuple(out)


def _box_mm(lo_mm, hi_mm, shape: tuple, spacing: np.ndarray) -> tuple[slice, ...]:
    """Index slices of the voxels whose centres may lie between ``lo_mm`` and ``hi_mm``
    (centred coordinates as in :func:`_grid`)."""
    half = np.asarray(shape) * spacing / 2
    lo = np.floor((np.asarray(lo_mm) + half) / spacing).astype(int)
    hi = np.ceil((np.asarray(hi_mm) + half) / spacing).astype(int) + 1
    return tuple(
        slice(int(np.clip(a, 0, n)), int(np.clip(b, 0, n)))
        for a, b, n in zip(lo, hi, shape, strict=True)
    )


def _sub(grids: tuple[np.ndarray, ...], box: tuple[slice, ...]) -> tuple[np.ndarray, ...]:
    return tuple(
        g[tuple(box[a] if a == ax else slice(None) for a in range(3))] for ax, g in enumerate(grids)
    )


def _tube(grids, p0, p1, radius: float, spacing: np.ndarray, shape: tuple):
    """``(box, inside)``: voxels within ``radius`` mm of the segment ``p0``-``p1``."""
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    box = _box_mm(np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius, shape, spacing)
    x, y, z = _sub(grids, box)
    d = p1 - p0
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / max(float(dot(d, d)), 1e-6)
    t = np.clip(t, 0.0, 1.0)
    dist2 = (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2
    return box, dist2 < radius**2


def _two_lungs(lung: np.ndarray) -> np.ndarray:
    """``lung`` without fragments: its two largest connected components (one per side)."""
    box = _bbox(lung, 0)
    labels, n = ndi.label(lung[box])
    if n <= 2:
        return lung
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.zeros(n + 1, bool)
    keep[np.argsort(sizes)[-2:]] = True
    out = np.zeros_like(lung)
    out[box] = keep[labels]
    return out


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over non-overlapping ``f x f x f`` blocks (float32)."""
    if f == 1:
        return a.astype(np.float32)
    out = np.zeros(tuple(n // f for n in a.shape), np.float32)
    for i in range(f):
        for j in range(f):
            for k in range(f):
                out += a[i::f, j::f, k::f]
    return out / np.float32(f**3)


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of ``v`` about the unit vector ``axis``."""
    return (
        v * np.cos(angle)
        + cross(axis, v) * np.sin(angle)
        + axis * float(dot(axis, v)) * (1.0 - np.cos(angle))
    )


def _perpendicular(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    v = cross(d, rng.normal(size=3))
    return v / max(float(norm(v)), 1e-9)


# --------------------------------------------------------------------------- anatomy


@dataclass
class _Thorax:
    """The anatomy of one case on the fine grid."""

    hu: np.ndarray  # float32 HU of everything but the lung parenchyma
    lung: np.ndarray  # bool
    hila: list[np.ndarray]  # mm (centred coordinates), right then left
    targets: list[list[np.ndarray]]  # per lung: trunk target points (mm)
    y_mid: float  # antero-posterior centre and half depth of the lungs (gravity gradient)
    y_half: float
    scale: float  # body size / nominal adult size


def _thorax(
    rng: np.random.Generator, design: _Design, shape: tuple, spacing: np.ndarray
) -> _Thorax:
    """Body, chest wall, mediastinum, heart, great vessels, airways, spine and the two lungs
    (see the module docstring) on the grid ``shape`` x ``spacing``."""
    grids = _grid(shape, spacing)
    x, y, z = grids
    hx, hy, hz = np.asarray(shape) * spacing / 2
    hyper = design.hyperexpansion
    xy = (x[:, :, 0], y[:, :, 0])  # 2-D open grids of an axial slice

    # body outline and chest wall: an irregular ellipse, constant along z
    ax_b = hx * rng.uniform(0.80, 0.90)
    ay_b = hy * rng.uniform(0.55, 0.63) * (1.0 + 0.08 * hyper)  # barrel chest
    cy = hy * rng.uniform(-0.05, 0.05)
    theta = np.arctan2(xy[1] - cy, xy[0])
    wobble = np.ones_like(theta)
    for k in (2, 3, 4):
        a, b = rng.normal(0.0, 0.02, 2)
        wobble = wobble + a * np.cos(k * theta) + b * np.sin(k * theta)
    mean_axis = 0.5 * (ax_b + ay_b)
    scale = float(mean_axis / 120.0)
    # layer thicknesses in mm whatever the body size (a thin wall would let the lung touch air)
    t_fat = rng.uniform(6.0, 22.0)
    t_wall = rng.uniform(12.0, 17.0)

    def radius(inset: float) -> np.ndarray:
        """Normalised radius of the outline moved ``inset`` mm inwards (< 1 inside)."""
        r = np.sqrt((xy[0] / (ax_b - inset)) ** 2 + ((xy[1] - cy) / (ay_b - inset)) ** 2)
        return r / wobble

    rho = radius(0.0)
    rho_cavity = radius(t_fat + t_wall)
    body = rho < 1.0
    cavity = rho_cavity < 1.0
    ax_c, ay_c = ax_b - t_fat - t_wall, ay_b - t_fat - t_wall

    hu = np.full(shape, _HU_AIR, np.float32)
    hu[body] = _HU_FAT + rng.uniform(-15.0, 15.0)
    wall = (radius(t_fat) < 1.0) & ~cavity
    hu[wall] = _HU_MUSCLE
    # ribs: oblique bands in the inner chest wall, higher posteriorly
    rib_band = wall & (radius(t_fat + 0.55 * t_wall) >= 1.0)
    period = rng.uniform(26.0, 32.0) * scale
    phase = 2 * np.pi * (z - 0.45 * (y - cy)) / period + rng.uniform(0, 2 * np.pi)
    hu[rib_band[:, :, None] & (np.cos(phase) > 0.45)] = _HU_RIB
    hu[cavity] = _HU_SOFT

    # spine (midline, posterior) and mediastinum
    x_m = rng.uniform(-5.0, 8.0) * scale
    r_vb = rng.uniform(14.0, 17.0) * scale
    y_s = cy + ay_c * rng.uniform(0.62, 0.70)
    vertebra = (xy[0] - x_m) ** 2 + (xy[1] - y_s) ** 2 < r_vb**2
    canal = (xy[0] - x_m) ** 2 + (xy[1] - y_s - 1.55 * r_vb) ** 2 < (0.5 * r_vb) ** 2
    posterior = (np.abs(xy[0] - x_m) < 0.6 * r_vb) & (xy[1] > y_s + r_vb) & body
    spine_zone = ((xy[0] - x_m) ** 2 + (xy[1] - y_s) ** 2 < (r_vb + 4.0 * scale) ** 2) | (
        (np.abs(xy[0] - x_m) < 1.3 * r_vb) & (xy[1] > y_s)
    )
    hu[posterior & ~canal] = _HU_BONE + 100.0
    hu[vertebra] = _HU_BONE
    hu[canal] = _HU_CANAL
    w_m = rng.uniform(12.0, 18.0) * scale

    # lung heights: apex, diaphragmatic domes (right higher) and costophrenic recesses
    z_apex = hz * rng.uniform(0.80, 0.90)
    z_dome_left = -hz * rng.uniform(0.28, 0.38) - 0.12 * hz * hyper
    z_dome_right = z_dome_left + hz * rng.uniform(0.04, 0.10) * (1.0 - 0.5 * hyper)
    recess = hz * rng.uniform(0.30, 0.38) * (1.0 - 0.5 * hyper)
    z_low = z_dome_left - 1.2 * recess
    z_carina = z_apex - rng.uniform(0.33, 0.40) * (z_apex - z_low)
    sigma2 = (25.0 / spacing[0], 25.0 / spacing[1])
    diaph_noise = 6.0 * scale * _smooth2d(rng, theta.shape, sigma2)
    apex_noise = 6.0 * scale * _smooth2d(rng, theta.shape, sigma2)
    apex_drop = hz * rng.uniform(0.25, 0.35)

    # heart on the diaphragm, left of the midline; aorta; trachea and main bronchi
    heart_axes = (
        np.array(
            [
                rng.uniform(45.0, 58.0) * (1.0 - 0.15 * hyper),
                rng.uniform(38.0, 48.0),
                rng.uniform(45.0, 55.0),
            ]
        )
        * scale
    )
    heart_c = np.array(
        [
            x_m + rng.uniform(12.0, 24.0) * scale,
            cy - ay_c * rng.uniform(0.05, 0.20),
            0.5 * (z_dome_left + z_dome_right) + 0.75 * heart_axes[2],
        ]
    )
    hbox = _box_mm(heart_c - heart_axes, heart_c + heart_axes, shape, spacing)
    hxg, hyg, hzg = _sub(grids, hbox)
    heart = np.zeros(shape, bool)
    heart[hbox] = (
        ((hxg - heart_c[0]) / heart_axes[0]) ** 2
        + ((hyg - heart_c[1]) / heart_axes[1]) ** 2
        + ((hzg - heart_c[2]) / heart_axes[2]) ** 2
    ) < 1.0
    r_ao = rng.uniform(10.0, 13.0) * scale
    y_t = y_s - r_vb - rng.uniform(12.0, 18.0) * scale
    z_arch = z_carina + rng.uniform(12.0, 22.0) * scale
    desc = np.array([x_m + r_vb + r_ao + 3.0 * scale, y_s - 0.4 * r_vb])
    asc = np.array([x_m - rng.uniform(0.0, 8.0) * scale, heart_c[1] - 0.2 * heart_axes[1]])
    aorta = np.zeros(shape, bool)
    for (cx, cyy), z_lo in ((desc, -hz), (asc, heart_c[2])):
        disc = (xy[0] - cx) ** 2 + (xy[1] - cyy) ** 2 < r_ao**2
        aorta |= disc[:, :, None] & (z >= z_lo) & (z <= z_arch)
    # the arch: a tube along a half-ellipse over the ascending and descending aorta
    a_y, a_z = 0.5 * abs(desc[1] - asc[1]), rng.uniform(18.0, 26.0) * scale
    y_c = 0.5 * (desc[1] + asc[1])
    abox = _box_mm(
        (min(asc[0], desc[0]) - r_ao, y_c - a_y - r_ao, z_arch - r_ao),
        (max(asc[0], desc[0]) + r_ao, y_c + a_y + r_ao, z_arch + a_z + r_ao),
        shape,
        spacing,
    )
    ax_, ay_, az_ = _sub(grids, abox)
    u = np.clip((ay_ - y_c) / max(a_y, 1e-3), -1.0, 1.0)
    z_line = z_arch + a_z * np.sqrt(1.0 - u**2)
    x_line = asc[0] + (desc[0] - asc[0]) * (u + 1.0) / 2.0
    aorta[abox] |= ((ax_ - x_line) ** 2 + (az_ - z_line) ** 2 < r_ao**2) & (az_ >= z_arch)

    r_t = rng.uniform(7.0, 9.0) * scale
    airway = np.zeros(shape, bool)
    trachea = (xy[0] - x_m) ** 2 + (xy[1] - y_t) ** 2 < r_t**2
    airway |= trachea[:, :, None] & (z >= z_carina)
    carina = np.array([x_m, y_t, z_carina])
    hila = []
    for side, r_b in ((-1.0, 6.0), (1.0, 5.0)):
        hilum = np.array(
            [x_m + side * (w_m + 6.0 * scale), y_t + 8.0 * scale, z_carina - 18 * scale]
        )
        box, tube = _tube(grids, carina, hilum, r_b * scale, spacing, shape)
        airway[box] |= tube
        hila.append(hilum)

    # upper-abdominal organs below the diaphragm (soft tissue) with a gastric air bubble
    z_dome = np.where(xy[0] < x_m, z_dome_right, z_dome_left)
    xd = x_m + np.where(xy[0] < x_m, -1.0, 1.0) * 0.5 * (w_m + ax_c)
    q2 = ((xy[0] - xd) / (0.55 * (ax_c - w_m))) ** 2 + ((xy[1] - cy + 0.15 * ay_c) / ay_c) ** 2
    # the lung bases stay inside the field of view (a chest CT covers the whole lung)
    z_diaph = np.maximum(z_dome - recess * np.minimum(q2, 1.2) + diaph_noise, -0.9 * hz)
    below = z < z_diaph[:, :, None]
    hu[cavity[:, :, None] & below] = _HU_ABDOMEN
    if rng.random() < 0.6:
        c = np.array([x_m + 0.45 * ax_c, cy - 0.1 * ay_c, z_dome_left - 28.0 * scale])
        half = np.array([28.0, 22.0, 14.0]) * scale
        box = _box_mm(c - half, c + half, shape, spacing)
        gx, gy, gz = _sub(grids, box)
        bubble = (
            ((gx - c[0]) / half[0]) ** 2
            + ((gy - c[1]) / half[1]) ** 2
            + ((gz - c[2]) / half[2]) ** 2
        ) < 1.0
        bubble &= (gz < z_diaph[box[:2]][:, :, None] - 7.0 * scale) & cavity[box[:2]][:, :, None]
        hu[box][bubble] = _HU_AIR

    # lungs: lateral to the mediastinum, under the domed apex, above the diaphragm
    # the rib cage narrows above the carina (up to 15% at the apex)
    taper = 1.0 - 0.15 * np.clip((z - z_carina) / max(z_apex - z_carina, 1e-6), 0.0, 1.0)
    cage = rho_cavity[:, :, None] < taper
    lung = np.zeros(shape, bool)
    targets = []
    y_l = cy + 0.05 * ay_c
    height = z_apex - z_low
    for side in (-1.0, 1.0):
        x_l = x_m + side * 0.5 * (w_m + ax_c)
        r2 = ((xy[0] - x_l) / (0.5 * (ax_c - w_m))) ** 2 + ((xy[1] - y_l) / (0.85 * ay_c)) ** 2
        z_top = np.minimum(z_apex - apex_drop * r2 + apex_noise, 0.93 * hz)
        medial = side * (xy[0] - x_m) > w_m
        column = medial & ~spine_zone
        lung |= column[:, :, None] & cage & (z < z_top[:, :, None]) & ~below
        lateral = x_l + side * 0.3 * (ax_c - w_m)
        targets.append(
            [
                np.array([x_l, y_l - 0.1 * ay_c, z_apex - 0.15 * height]),
                np.array([x_l, y_l + 0.3 * ay_c, z_carina + 0.1 * height]),
                np.array([lateral, y_l - 0.35 * ay_c, z_carina - 0.2 * height]),
                np.array([lateral, y_l, z_low + 0.3 * height]),
                np.array([x_l, y_l + 0.35 * ay_c, z_low + 0.2 * height]),
            ]
        )
    lung &= ~(heart | aorta | airway)
    lung = _two_lungs(lung)

    hu[heart] = _HU_BLOOD
    med_fat = (np.abs(xy[0] - x_m) < w_m) & (xy[1] < y_t - 15.0 * scale) & cavity
    hu[med_fat[:, :, None] & ~below & ~heart & ~aorta] = _HU_MED_FAT
    hu[aorta] = _HU_BLOOD + 5.0
    hu[airway] = _HU_AIR
    return _Thorax(
        hu=hu,
        lung=lung,
        hila=hila,
        targets=targets,
        y_mid=float(y_l),
        y_half=float(0.85 * ay_c),
        scale=scale,
    )


# --------------------------------------------------------------------------- vessels


def _vessel_occupancy(
    rng: np.random.Generator,
    thorax: _Thorax,
    spacing: np.ndarray,
    tortuosity: float,
    max_segments: int = 300,
) -> np.ndarray:
    """Fraction of each fine voxel filled by pulmonary vessels (float32, 0 outside the lung).

    Each lung grows one trunk from (near) its hilum towards each of its targets (apical,
    posterior-upper, anterior, lateral-basal, posterior-basal); a trunk crosses whatever lies
    between hilum and lung, a branch inside the lung runs until it leaves the lung. Branches
    that stay inside split in two (20-40 degrees) with the radius shrinking by 0.7-0.8 until
    it is below ~1.2 mm. The centre lines are splatted as cross-section area x step length
    and blurred (more for thick vessels), so thin vessels fill a voxel only partly."""
    lung = thorax.lung
    shape = np.asarray(lung.shape)
    half = shape * spacing / 2
    step = 0.5 * float(spacing.min())
    r_min = 1.2
    size = max(thorax.scale, 0.4)
    pts_all, vol_all, rad_all = [], [], []
    for hilum, targets in zip(thorax.hila, thorax.targets, strict=True):
        stack = []
        for target in targets:
            start = hilum + rng.normal(0.0, 4.0, 3) * size
            d = target - start
            dist = float(norm(d))
            trunk_len = rng.uniform(0.35, 0.5) * dist
            stack.append((start, d / max(dist, 1e-6), rng.uniform(4.0, 5.5) * size, trunk_len))
        n_seg = 0
        while stack and n_seg < max_segments:
            p, d, r, trunk_len = stack.pop()
            n_seg += 1
            trunk = trunk_len is not None
            length = trunk_len if trunk else rng.uniform(0.8, 1.2) * (10.0 + 5.0 * r) * size
            n = max(2, int(length / step))
            t = np.arange(1, n + 1, dtype=float) * step
            bend = _perpendicular(rng, d) * tortuosity * length
            line = p + t[:, None] * d + ((t / length) ** 2)[:, None] * bend
            idx = np.floor((line + half) / spacing).astype(int)
            in_volume = np.all((idx >= 0) & (idx < shape), axis=1)
            inside = in_volume.copy()
            inside[in_volume] = lung[tuple(idx[in_volume].T)]
            # a trunk may cross the mediastinum; a branch ends where it leaves the lung
            stop = np.flatnonzero(~(in_volume if trunk else inside))
            stop = int(stop[0]) if stop.size else n
            pts_all.append(idx[:stop])
            vol_all.append(np.full(stop, np.pi * r * r * step))
            rad_all.append(np.full(stop, r))
            if stop < n or not inside[-1] or r * 0.75 < r_min:
                continue
            d_end = d + 2.0 * bend / length
            d_end /= max(float(norm(d_end)), 1e-9)
            for sign in (-1.0, 1.0):
                axis = _perpendicular(rng, d_end)
                child = _rotate(d_end, axis, sign * np.deg2rad(rng.uniform(20.0, 40.0)))
                stack.append((line[-1], child / norm(child), r * rng.uniform(0.7, 0.8), None))
    occ = np.zeros(lung.shape, np.float32)
    if not pts_all or not lung.any():
        return occ
    idx, vol, rad = (np.concatenate(a) for a in (pts_all, vol_all, rad_all))
    flat = np.ravel_multi_index(tuple(idx.T), lung.shape)
    box = _bbox(lung, 3)
    for thick, sigma_mm in ((False, 0.6 * float(spacing.min())), (True, 2.2 * size)):
        sel = (rad >= 2.5 * size) == thick
        if not sel.any():
            continue
        density = np.bincount(
            flat[sel], weights=vol[sel] / float(np.prod(spacing)), minlength=lung.size
        ).reshape(lung.shape)
        occ[box] += ndi.gaussian_filter(
            density[box].astype(np.float32), sigma_mm / spacing, truncate=3.0
        )
    return np.clip(occ, 0.0, 1.0) * lung
