"""The abdomen of one liver MRI case: grid and mask helpers, the portal and hepatic vessel trees,
the liver's fat map and truth classes, and the organs around it (:func:`_anatomy`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from medclust_phantoms.exact import cross, dot, norm
from medclust_phantoms.liver_mri.design import (
    _AORTA,
    _BONE,
    _CANAL,
    _FAT,
    _GAS,
    _KIDNEY,
    _LIVER,
    _MUSCLE,
    _SPLEEN,
    _VFAT,
    _VISCERA,
    RIM_MM,
    SEGMENT_LOG_SD,
    SPARING_SCALE_MM,
    VOXEL_LOG_SD,
    _Meta,
    pdff_grade,
)

# --------------------------------------------------------------------------- helpers


def _smooth_noise(rng: np.random.Generator, shape: tuple, sigma: Sequence[float]) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation (float32). Large sigmas
    are filtered on a coarser grid and upsampled linearly, which is much faster."""
    shape = tuple(int(s) for s in shape)
    factor = [max(1, int(s // 2.5)) for s in sigma]
    small = tuple(-(-n // f) + 1 for n, f in zip(shape, factor, strict=True))
    white = rng.standard_normal(small, dtype=np.float32)
    field = ndi.gaussian_filter(
        white, [s / f for s, f in zip(sigma, factor, strict=True)], mode="wrap", truncate=3.0
    )
    if any(f > 1 for f in factor):
        field = ndi.zoom(field, factor, order=1, grid_mode=False)
    field = field[tuple(slice(0, n) for n in shape)]
    field -= field.mean()
    sd = float(field.std())
    return field / sd if sd > 0 else field


def _grid(shape: tuple, spacing: tuple) -> tuple[np.ndarray, ...]:
    """Open grids of voxel-centre coordinates in mm, centred on the field of view."""
    return tuple(
        ((np.arange(n, dtype=np.float32) + 0.5) * s - n * s / 2).reshape(
            [-1 if a == ax else 1 for a in range(3)]
        )
        for ax, (n, s) in enumerate(zip(shape, spacing, strict=True))
    )


def _ellipsoid(x, y, z, centre, axes) -> np.ndarray:
    """Normalised ellipsoid radius (< 1 inside)."""
    return (
        ((x - centre[0]) / axes[0]) ** 2
        + ((y - centre[1]) / axes[1]) ** 2
        + ((z - centre[2]) / axes[2]) ** 2
    )


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _bbox(mask: np.ndarray, pad: Sequence[int]) -> tuple[slice, ...]:
    out = []
    for ax in range(mask.ndim):
        any_ = np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax))
        idx = np.flatnonzero(any_)
        lo, hi = (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, mask.shape[ax])
        out.append(slice(max(0, lo - pad[ax]), min(mask.shape[ax], hi + pad[ax])))
    return tuple(out)


# --------------------------------------------------------------------------- anatomy


def _vessel_tree(
    rng: np.random.Generator,
    liver: np.ndarray,
    spacing: np.ndarray,
    starts: list[tuple[np.ndarray, np.ndarray, float]],
    max_branches: int = 160,
) -> list[tuple[np.ndarray, float]]:
    """Grow branching centrelines inside ``liver`` from ``(point_mm, direction, radius_mm)``
    trunks; return ``(voxel_index, radius_mm)`` samples. Branches stop at the liver edge and
    split in two with shrinking radius until they become thinner than ~1.2 mm."""
    shape = np.asarray(liver.shape)
    step = 0.5 * float(spacing.min())
    stack = [(np.asarray(p, float), np.asarray(d, float), r) for p, d, r in starts]
    samples: list[tuple[np.ndarray, float]] = []
    n_branches = 0
    while stack and n_branches < max_branches:
        p, d, r = stack.pop()
        n_branches += 1
        length = rng.uniform(12.0, 28.0) * np.sqrt(r / 5.0)
        inside = True
        for _ in range(int(length / step)):
            d = d + rng.normal(0.0, 0.04, 3) * np.array([1.0, 1.0, 0.5])
            d /= norm(d)
            p = p + step * d
            idx = np.floor(p / spacing).astype(int)
            if np.any(idx < 0) or np.any(idx >= shape) or not liver[tuple(idx)]:
                inside = False
                break
            samples.append((idx, r))
        if not inside or r * 0.72 < 1.2:
            continue
        for sign in (-1.0, 1.0):
            axis = cross(d, rng.normal(size=3) * np.array([1.0, 1.0, 0.4]))
            axis /= max(norm(axis), 1e-9)
            angle = sign * np.deg2rad(rng.uniform(20.0, 45.0))
            # Rodrigues rotation of d about axis
            child = (
                d * np.cos(angle)
                + cross(axis, d) * np.sin(angle)
                + axis * dot(axis, d) * (1 - np.cos(angle))
            )
            stack.append((p.copy(), child / norm(child), r * rng.uniform(0.68, 0.8)))
    return samples


def _rasterise(samples: list[tuple[np.ndarray, float]], liver: np.ndarray, spacing) -> np.ndarray:
    """Lumen mask of centreline samples ``(voxel_index, radius_mm)`` (inside ``liver``)."""
    lumen = np.zeros(liver.shape, bool)
    if not samples:
        return lumen
    sidx = np.array([s[0] for s in samples])
    rad = np.array([s[1] for s in samples])
    box = _bbox(liver, (2, 2, 1))
    sub_shape = tuple(s.stop - s.start for s in box)
    offset = np.array([s.start for s in box])
    for lo_r, hi_r in ((0.0, 2.0), (2.0, 3.0), (3.0, 4.5), (4.5, np.inf)):
        sel = (rad >= lo_r) & (rad < hi_r)
        if not sel.any():
            continue
        centre_line = np.zeros(sub_shape, bool)
        centre_line[tuple((sidx[sel] - offset).T)] = True
        dist = ndi.distance_transform_edt(~centre_line, sampling=spacing)
        lumen[box] |= dist <= float(rad[sel].max())
    return lumen & liver


def _vessels(
    rng: np.random.Generator, liver: np.ndarray, spacing: np.ndarray, fov_mm: np.ndarray
) -> np.ndarray:
    """Vessel lumen mask inside ``liver``: a portal tree from the hilum and a hepatic-vein tree
    from the dome, each grown from three trunks."""
    idx = np.argwhere(liver)
    pts = (idx + 0.5) * spacing
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ext = hi - lo
    centre = pts.mean(axis=0)
    scale = float(np.clip(fov_mm[:2].min() / 190.0, 0.3, 1.5))  # smaller trees in small FOVs

    def snap(p):
        return pts[int(np.argmin(((pts - p) ** 2).sum(axis=1)))]

    hilum = snap(centre + np.array([0.25, 0.1, -0.1]) * ext)
    dome = snap(
        np.array([centre[0] + 0.2 * ext[0], centre[1] + 0.15 * ext[1], lo[2] + 0.8 * ext[2]])
    )
    portal, hepatic = [], []
    for ang in rng.uniform(-0.3, 0.3) + np.array([np.pi, 0.72 * np.pi, 1.3 * np.pi]):
        d = np.array([np.cos(ang), np.sin(ang), rng.uniform(-0.3, 0.3)])
        portal.append((hilum, d / norm(d), rng.uniform(4.0, 5.5) * scale))
    for ang in rng.uniform(-0.3, 0.3) + np.array([0.9 * np.pi, 1.2 * np.pi, 1.5 * np.pi]):
        d = np.array([np.cos(ang), np.sin(ang), -rng.uniform(0.2, 0.5)])
        hepatic.append((dome, d / norm(d), rng.uniform(3.5, 4.5) * scale))
    lumen = np.zeros(liver.shape, bool)
    for starts in (portal, hepatic):
        lumen |= _rasterise(_vessel_tree(rng, liver, spacing, starts, 80), liver, spacing)
    return lumen


def _top_share(field: np.ndarray, where: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` of the voxels in ``where`` with the highest ``field`` (a mask)."""
    values = np.sort(field[where])
    if values.size == 0 or share <= 0:
        return np.zeros(field.shape, bool)
    cut = values[min(int(values.size * (1.0 - share)), values.size - 1)]
    return where & (field >= cut)


def _liver_fat(
    rng: np.random.Generator,
    meta: _Meta,
    liver: np.ndarray,
    vessels: np.ndarray,
    biopsy_region: np.ndarray,
    spacing: np.ndarray,
    segment_scale_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Truth classes (:data:`~.design.CLASSES`; 0 outside the liver) and PDFF map (%, float32,
    0 outside the parenchyma) of the liver.

    The diffuse PDFF is the biopsy-site value of the case's grade times a smooth segmental
    field, ``PDFF_biopsy exp(s_seg (h(x) - h(site)))``: the biopsy needle samples one site of
    the right lobe (the paper: biopsy "limited to a single position", against "heterogeneity in
    the liver"). Where it makes the parenchyma steatotic (grade >= 1), fat is spared in
    geographic areas and along the vessels (:data:`~.design.CLASSES`). Every voxel then varies
    by a voxel-scale log-normal factor."""
    labels = np.zeros(liver.shape, np.uint8)
    pdff = np.zeros(liver.shape, np.float32)
    box = _bbox(liver, (1, 1, 0))
    sub = tuple(s.stop - s.start for s in box)
    liv = liver[box]
    seg = _smooth_noise(rng, sub, [max(segment_scale_mm / s, 0.5) for s in spacing])
    shapes = _smooth_noise(rng, sub, [max(SPARING_SCALE_MM / s, 0.5) for s in spacing])
    vox = _smooth_noise(rng, sub, (0.5, 0.5, 0.2))
    lumen = liv & vessels[box]
    parenchyma = liv & ~lumen
    dist = (
        ndi.distance_transform_edt(~lumen, sampling=spacing) if lumen.any() else np.full(sub, 1e9)
    )
    site = biopsy_region[box] & parenchyma & (dist > RIM_MM[1])
    candidates = np.flatnonzero(site if site.any() else parenchyma)
    biopsy = int(candidates[int(rng.integers(len(candidates)))]) if candidates.size else 0
    log_seg = SEGMENT_LOG_SD * (seg.astype(np.float64) - float(seg.ravel()[biopsy]))
    diffuse = np.rint(meta.pdff_biopsy * np.exp(log_seg) * 1e4) / 1e4
    grade = pdff_grade(diffuse)
    steatotic = parenchyma & (grade >= 1)
    marked = grade >= 2
    rim = parenchyma & (dist <= meta.rim_mm)
    geographic = _top_share(shapes, steatotic, meta.sparing_share) & ~rim
    spared = steatotic & (geographic | rim)
    level = np.where(spared, meta.spared_pdff, diffuse)
    full = level * np.exp(VOXEL_LOG_SD * vox.astype(np.float64))
    full = np.clip(np.rint(full * 1e4) / 1e4, 0.0, 100.0)  # 1e-4 % steps: the same bits anywhere

    sub_labels = np.where(parenchyma, 1, 0).astype(np.uint8)
    sub_labels[geographic & ~marked] = 2
    sub_labels[geographic & marked] = 3
    sub_labels[rim & steatotic & ~marked] = 4
    sub_labels[rim & steatotic & marked] = 5
    sub_labels[rim & ~steatotic] = 6
    sub_labels[lumen] = 7
    labels[box] = np.where(liv, sub_labels, 0)
    pdff[box] = np.where(parenchyma, full, 0.0).astype(np.float32)
    return labels, pdff


def _anatomy(
    rng: np.random.Generator,
    meta: _Meta,
    shape: tuple,
    spacing: tuple,
    segment_scale_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The case's tissue map (uint8: body tissues and organs, liver voxels coded as
    ``_LIVER + truth class``) and its liver PDFF map (%, float32; see :func:`_liver_fat`)."""
    sp = np.asarray(spacing, float)
    fov = np.asarray(shape) * sp
    x, y, z = _grid(shape, spacing)
    hx, hy, hz = fov / 2
    tissue = np.zeros(shape, np.uint8)

    # body outline: irregular ellipse, slowly varying along z
    theta = np.arctan2(y, x)
    wobble = np.ones_like(theta)
    for k in (2, 3, 4):
        a, b = rng.normal(0.0, 0.025 / k * 2, 2)
        wobble = wobble + a * np.cos(k * theta) + b * np.sin(k * theta)
    ax_b, ay_b = hx * rng.uniform(0.82, 0.93), hy * rng.uniform(0.74, 0.88)
    cy_b = hy * rng.uniform(-0.04, 0.04)
    zs = 1.0 + 0.04 * rng.uniform(-1, 1) * z / max(hz, 1e-6)
    rho = np.sqrt((x / (ax_b * zs)) ** 2 + ((y - cy_b) / (ay_b * zs)) ** 2) / wobble
    mean_axis = 0.5 * (ax_b + ay_b)
    fat_mm = rng.uniform(8.0, 20.0) * np.clip(mean_axis / 90.0, 0.3, 1.5)
    muscle_mm = rng.uniform(6.0, 10.0) * np.clip(mean_axis / 90.0, 0.3, 1.5)
    rho = np.broadcast_to(rho, shape)
    body = rho < 1.0
    wall = rho > 1.0 - fat_mm / mean_axis
    tissue[body] = _FAT
    tissue[body & ~wall] = _MUSCLE
    cavity = rho < 1.0 - (fat_mm + muscle_mm) / mean_axis
    tissue[cavity] = _VISCERA
    coarse = (max(12.0 / sp[0], 1.0), max(12.0 / sp[1], 1.0), max(12.0 / sp[2], 0.5))
    vfat = _smooth_noise(rng, shape, coarse)
    gas = _smooth_noise(rng, shape, [c * 0.6 for c in coarse])
    tissue[cavity & (vfat > 1.0)] = _VFAT
    tissue[cavity & (gas > 1.9)] = _GAS

    # spine, canal, aorta (posterior midline), spleen and kidneys
    sy = cy_b + 0.62 * ay_b
    vr = 0.14 * mean_axis
    spine = (x**2 + (y - sy) ** 2 < vr**2) & body
    canal = (x**2 + (y - sy - 1.45 * vr) ** 2 < (0.45 * vr) ** 2) & body
    aorta = ((x - 0.25 * vr) ** 2 + (y - sy + 1.45 * vr) ** 2 < (0.5 * vr) ** 2) & body
    z_n = z / max(hz, 1e-6)
    spleen = _ellipsoid(
        x,
        y,
        z_n * hz,
        (0.55 * ax_b, cy_b + 0.25 * ay_b, 0.35 * hz),
        (0.22 * ax_b, 0.3 * ay_b, 0.5 * hz),
    )
    spleen = spleen + 0.3 * _smooth_noise(rng, shape, coarse) < 1.0
    kidneys = np.zeros(shape, bool)
    for side in (-1.0, 1.0):
        kidneys |= (
            _ellipsoid(
                x,
                y,
                z,
                (side * 0.38 * ax_b, cy_b + 0.45 * ay_b, -0.45 * hz),
                (0.13 * ax_b, 0.2 * ay_b, 0.45 * hz),
            )
            < 1.0
        )
    for mask, code in ((spleen, _SPLEEN), (kidneys, _KIDNEY)):
        tissue[mask & cavity] = code
    tissue[spine] = _BONE
    tissue[canal] = _CANAL
    tissue[aorta] = _AORTA

    # liver: right lobe plus a smaller left lobe, deformed by a smooth field
    cx_l = -ax_b * rng.uniform(0.34, 0.44)
    cy_l = cy_b + ay_b * rng.uniform(-0.1, 0.05)
    cz_l = hz * rng.uniform(0.0, 0.3)
    right = _ellipsoid(
        x,
        y,
        z,
        (cx_l, cy_l, cz_l),
        (
            ax_b * rng.uniform(0.45, 0.55),
            ay_b * rng.uniform(0.62, 0.8),
            hz * rng.uniform(0.85, 1.15),
        ),
    )
    left = _ellipsoid(
        x,
        y,
        z,
        (
            cx_l + ax_b * rng.uniform(0.45, 0.6),
            cy_l - ay_b * rng.uniform(0.25, 0.4),
            cz_l + 0.2 * hz,
        ),
        (
            ax_b * rng.uniform(0.26, 0.34),
            ay_b * rng.uniform(0.22, 0.3),
            hz * rng.uniform(0.55, 0.75),
        ),
    )
    deform = _smooth_noise(rng, shape, (max(14.0 / sp[0], 1.0), max(14.0 / sp[1], 1.0), 1.5))
    liver = (np.minimum(right, left) + 0.3 * deform < 1.0) & cavity & ~(spine | aorta | canal)
    liver = _largest_component(liver)
    if not liver.any():  # degenerate tiny volumes: fall back to the undeformed right lobe
        liver = (right < 1.0) & body
        if not liver.any():
            liver[tuple(n // 2 for n in shape)] = True

    # vessels and fat; the biopsy needle enters the right lobe (segments V-VIII)
    vessels = _vessels(rng, liver, sp, fov)
    labels, pdff = _liver_fat(rng, meta, liver, vessels, right < 1.0, sp, segment_scale_mm)
    tissue[liver] = _LIVER + labels[liver]
    return tissue, pdff
