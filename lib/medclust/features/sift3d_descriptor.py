"""Descriptor geometry of :mod:`medclust.features.sift3d`: the orientation bins (face normals
of the icosahedron or octahedron) and their soft weights, the sample layouts of the orientation
and descriptor windows, trilinear gradient sampling and the dominant rotation frame of a
keypoint (von Mises-Fisher smoothed histograms refined by mean shift)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: Descriptor samples per sub-region and axis.
SAMPLES_PER_SUBREGION = 4
#: Orientation window: Gaussian sigma and truncation radius, and sample step, in keypoint sigmas.
ORIENTATION_WINDOW_SIGMA = 1.5
ORIENTATION_RADIUS = 3.0
ORIENTATION_STEP = 0.5
#: Equal-area orientation histogram on the sphere: bins in cos(polar angle) x azimuth.
ORIENTATION_BINS_Z, ORIENTATION_BINS_PHI = 12, 24
#: Circular histogram of the second axis.
SECOND_AXIS_BINS = 36
#: Concentration of the von Mises-Fisher kernel that smooths the histograms (std ~ 13 degrees).
ORIENTATION_KAPPA = 20.0
MEAN_SHIFT_STEPS = 3


# --------------------------------------------------------------------------- orientation bins


def _icosahedron_face_normals() -> np.ndarray:
    """The 20 unit face normals of the regular icosahedron = the vertices of the dodecahedron."""
    phi = (1.0 + math.sqrt(5.0)) / 2.0
    cube = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], float)
    rest = []
    for a in (-1, 1):
        for b in (-1, 1):
            rest += [[0, a / phi, b * phi], [a / phi, b * phi, 0], [b * phi, 0, a / phi]]
    normals = np.vstack([cube, np.array(rest, float)])
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _octahedron_face_normals() -> np.ndarray:
    """The 8 unit face normals of the regular octahedron: the octant diagonals (+-1,+-1,+-1)/sqrt3."""
    cube = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], float)
    return cube / math.sqrt(3.0)


def orientation_bin_directions(n_bins: int) -> np.ndarray:
    """Unit directions ``(n_bins, 3)`` of the descriptor's orientation bins (8 or 20)."""
    if n_bins == 20:
        return _icosahedron_face_normals()
    if n_bins == 8:
        return _octahedron_face_normals()
    raise ValueError(f"orientation_bins must be 8 or 20, got {n_bins!r}")


def _soft_orientation_weights(unit: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Tent weights ``(..., n_bins)`` of unit vectors over bin normals, summing to 1.

    ``max(0, u.n_b - c)`` with ``c`` the cosine between neighbouring normals: a vector on a
    normal votes only for that bin, one between bins splits its vote. Every direction lies closer
    to some normal than neighbouring normals lie to each other (covering radius 37.4 < 41.8
    degrees for the icosahedron, 54.7 < 70.5 for the octahedron), so the sum is never zero.
    """
    gram = normals @ normals.T
    np.fill_diagonal(gram, -np.inf)
    c = gram.max()
    w = np.maximum(unit @ normals.T - c, 0.0)
    total = w.sum(axis=-1, keepdims=True)
    return w / np.where(total > 0, total, 1.0)


# --------------------------------------------------------------------------- sample layouts


def _orientation_offsets() -> tuple[np.ndarray, np.ndarray]:
    """Offsets ``(M, 3)`` (in keypoint sigmas) inside the orientation sphere and their weights."""
    ax = np.arange(-ORIENTATION_RADIUS, ORIENTATION_RADIUS + 1e-9, ORIENTATION_STEP)
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)
    r2 = (grid**2).sum(axis=1)
    keep = r2 <= ORIENTATION_RADIUS**2 + 1e-9
    return grid[keep], np.exp(-r2[keep] / (2.0 * ORIENTATION_WINDOW_SIGMA**2))


def _descriptor_layout(n_grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample offsets ``(M, 3)`` in units of the window half-width, and the fixed matrix
    ``(M, n_grid^3)`` of trilinear sub-region weights times the Gaussian window weight."""
    n = n_grid * SAMPLES_PER_SUBREGION
    ax = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    u = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)
    b = (u + 1.0) / 2.0 * n_grid - 0.5  # continuous sub-region coordinate, centres at 0..n-1
    lo = np.floor(b).astype(int)
    frac = b - lo
    weights = np.zeros((len(u), n_grid**3))
    rows = np.arange(len(u))
    for corner in np.ndindex(2, 2, 2):
        idx = lo + np.array(corner)
        w = np.prod(np.where(np.array(corner) == 1, frac, 1.0 - frac), axis=1)
        inside = np.all((idx >= 0) & (idx < n_grid), axis=1)
        flat = np.ravel_multi_index(tuple(np.clip(idx, 0, n_grid - 1).T), (n_grid,) * 3)
        np.add.at(weights, (rows[inside], flat[inside]), w[inside])
    gauss = np.exp(-(u**2).sum(axis=1) / 2.0)  # sigma = half the window width (Lowe Sec. 6.1)
    return u, weights * gauss[:, None]


def _sphere_bins() -> np.ndarray:
    """Centres ``(K, 3)`` of the equal-area (Archimedes) bins in ``cos(theta) x phi``."""
    z = -1.0 + (np.arange(ORIENTATION_BINS_Z) + 0.5) * 2.0 / ORIENTATION_BINS_Z
    phi = -np.pi + (np.arange(ORIENTATION_BINS_PHI) + 0.5) * 2.0 * np.pi / ORIENTATION_BINS_PHI
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    rr = np.sqrt(1.0 - zz**2)
    return np.stack([rr * np.cos(pp), rr * np.sin(pp), zz], axis=-1).reshape(-1, 3)


_ORI_OFFSETS, _ORI_WEIGHTS = _orientation_offsets()
_SPHERE_BINS = _sphere_bins()
_SPHERE_SMOOTH = np.exp(ORIENTATION_KAPPA * (_SPHERE_BINS @ _SPHERE_BINS.T - 1.0))


# --------------------------------------------------------------------------- descriptor helpers


def _sample_gradients(
    grads: tuple[np.ndarray, np.ndarray, np.ndarray], points: np.ndarray
) -> np.ndarray:
    """Trilinear samples ``(..., 3)`` of the gradient fields at grid coordinates ``(..., 3)``;
    zero outside the volume."""
    flat = points.reshape(-1, 3).T
    out = np.stack(
        [
            ndimage.map_coordinates(g, flat, order=1, mode="constant", cval=0.0, output=np.float64)
            for g in grads
        ],
        axis=-1,
    )
    return out.reshape(*points.shape[:-1], 3)


def _mean_shift(unit: np.ndarray, weight: np.ndarray, start: np.ndarray) -> np.ndarray:
    """von Mises-Fisher mean shift on the sphere from ``start`` ``(n, 3)``; ``unit`` is
    ``(n, M, 3)``, ``weight`` ``(n, M)``."""
    d = start
    for _ in range(MEAN_SHIFT_STEPS):
        k = weight * np.exp(ORIENTATION_KAPPA * (np.einsum("nmi,ni->nm", unit, d) - 1.0))
        m = np.einsum("nm,nmi->ni", k, unit)
        norm = np.linalg.norm(m, axis=1, keepdims=True)
        d = np.where(norm > 0, m / np.where(norm > 0, norm, 1.0), d)
    return d


def _orthonormal_complement(d1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic orthonormal basis ``(e1, e2)`` of the plane orthogonal to each ``d1``."""
    axis = np.eye(3)[np.argmin(np.abs(d1), axis=1)]
    e1 = np.cross(d1, axis)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(d1, e1)


def _dominant_frames(grad: np.ndarray) -> np.ndarray:
    """Rotation frames ``(n, 3, 3)`` (columns = axes, in mm space) from gradients ``(n, M, 3)``
    sampled at :data:`_ORI_OFFSETS` (module docstring, descriptor step 2)."""
    n = len(grad)
    mag = np.linalg.norm(grad, axis=2)
    unit = grad / np.where(mag > 0, mag, 1.0)[..., None]
    weight = mag * _ORI_WEIGHTS[None]
    # First axis: peak of the equal-area spherical histogram, smoothed, then mean shift.
    iz = np.clip(
        ((unit[..., 2] + 1.0) / 2.0 * ORIENTATION_BINS_Z).astype(int), 0, ORIENTATION_BINS_Z - 1
    )
    phi = np.arctan2(unit[..., 1], unit[..., 0])
    ip = np.clip(
        ((phi + np.pi) / (2 * np.pi) * ORIENTATION_BINS_PHI).astype(int),
        0,
        ORIENTATION_BINS_PHI - 1,
    )
    n_bins = ORIENTATION_BINS_Z * ORIENTATION_BINS_PHI
    flat = np.arange(n)[:, None] * n_bins + iz * ORIENTATION_BINS_PHI + ip
    hist = np.bincount(flat.ravel(), weight.ravel(), minlength=n * n_bins).reshape(n, n_bins)
    peak = _SPHERE_BINS[np.argmax(hist @ _SPHERE_SMOOTH, axis=1)]
    d1 = _mean_shift(unit, weight, peak)
    # Second axis: dominant direction of the residual in the plane orthogonal to d1.
    e1, e2 = _orthonormal_complement(d1)
    a = np.einsum("nmi,ni->nm", grad, e1)
    b = np.einsum("nmi,ni->nm", grad, e2)
    w2 = np.hypot(a, b) * _ORI_WEIGHTS[None]
    psi = np.arctan2(b, a)
    ib = np.clip(
        ((psi + np.pi) / (2 * np.pi) * SECOND_AXIS_BINS).astype(int), 0, SECOND_AXIS_BINS - 1
    )
    flat2 = np.arange(n)[:, None] * SECOND_AXIS_BINS + ib
    hist2 = np.bincount(flat2.ravel(), w2.ravel(), minlength=n * SECOND_AXIS_BINS)
    centres = -np.pi + (np.arange(SECOND_AXIS_BINS) + 0.5) * 2 * np.pi / SECOND_AXIS_BINS
    smooth2 = np.exp(ORIENTATION_KAPPA * (np.cos(centres[:, None] - centres[None]) - 1.0))
    ang = centres[np.argmax(hist2.reshape(n, SECOND_AXIS_BINS) @ smooth2, axis=1)]
    for _ in range(MEAN_SHIFT_STEPS):
        k = w2 * np.exp(ORIENTATION_KAPPA * (np.cos(psi - ang[:, None]) - 1.0))
        s, c = (k * np.sin(psi)).sum(axis=1), (k * np.cos(psi)).sum(axis=1)
        ang = np.where((s != 0) | (c != 0), np.arctan2(s, c), ang)
    d2 = np.cos(ang)[:, None] * e1 + np.sin(ang)[:, None] * e2
    return np.stack([d1, d2, np.cross(d1, d2)], axis=2)
