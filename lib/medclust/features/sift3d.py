"""3D SIFT: scale-space keypoints and rotation-normalised gradient-orientation descriptors.

Study 05 (population clustering of routine lung CT) extracts "3D-SIFT features [15] to encode
[...] gradient changes such as shape" and trains "two separate vocabularies, microSIFT (3DSIFT
features with <= 2cm in diameter) and macroSIFT (diameter > 2cm)" (Sec. 2, "Feature
Extraction"). Reference [15] is Toews and Wells, "Efficient and robust model-to-image alignment
using 3D scale-invariant features" (Med. Image Anal. 2013). This module implements that family
of detectors/descriptors:

Detection -- Lowe, "Distinctive image features from scale-invariant keypoints" (IJCV 2004),
Sec. 3-4, extended to 3D (Scovanner et al. 2007; Cheung and Hamarneh 2009; Allaire et al. 2008):

* Gaussian scale space ``L(x, sigma)`` with ``sigma`` in **mm**. Octave ``o`` spans
  ``sigma_o * 2^(i/S)``, ``i = 0..S+2``, ``sigma_o = sigma0_mm * 2^o``, ``S =
  n_scales_per_octave``; the difference of Gaussians ``D_i = L_{i+1} - L_i`` approximates the
  scale-normalised Laplacian ``(k - 1) sigma^2 lap(G)`` (Lowe Eq. 1-2), so responses compare
  across scales. Bright blobs give negative ``D``, dark blobs positive.
* Anisotropic voxels: each axis is smoothed by its own voxel sigma ``sqrt(sigma^2 - b_a^2) /
  h_a`` (``b_a`` = blur the axis already has, ``h_a`` its grid spacing; the input is assumed to
  carry Lowe's nominal half-voxel blur ``0.5 * spacing``). The next octave starts from layer
  ``S`` (``2 sigma_o``) and halves the voxels along an axis only while its grid spacing stays
  ``<= sigma / 1.6`` (Lowe's ``sigma0 = 1.6`` voxels): isotropic volumes follow Lowe exactly,
  thick-slice volumes are subsampled in-plane first. Octaves stop when an axis would fall below
  :data:`MIN_OCTAVE_VOXELS` voxels (or after ``n_octaves``).
* Extrema of ``D`` over the 26 spatial + 2 x 27 scale neighbours (strict), refined by fitting a
  4D quadratic in ``(x, y, z, scale)`` (Lowe Eq. 3, up to 5 re-centrings), rejected when
  ``|D(x_hat)| < contrast_threshold`` (Lowe Sec. 4: 0.03 for intensities in [0, 1]; here the
  image is first mapped linearly from ``intensity_range`` -- its min/max by default -- to
  [0, 1]).
* Edge/"tube" rejection with the spatial 3x3 Hessian of ``D`` in mm (3D extension of Lowe
  Sec. 4.1 by Allaire et al. 2008, used by Cheung and Hamarneh 2009): keep only points whose
  Hessian eigenvalues all share one sign and ``Tr(H)^3 / Det(H) < (2r + 1)^3 / r^2`` with
  ``r = edge_ratio``.

Keypoint table (:meth:`SIFT3D.detect`), one row per keypoint:

* ``x, y, z`` -- position in voxel coordinates of the input array (axes 0, 1, 2), float,
  refined by the quadratic fit;
* ``sigma_mm`` -- scale of the keypoint in mm, ``sigma_o * 2^((s + 1/2)/S)`` at the refined
  DoG index ``s``: ``D_s`` spans ``sigma_s .. k sigma_s`` and is labelled by their geometric
  mean (Lowe labels it ``sigma_s``, which reads about 11% small for ``S = 3``). By Lindeberg's
  scale selection a 3D Gaussian blob of standard deviation ``sigma_b`` peaks at ``sigma =
  sqrt(2/3) sigma_b`` (``t = 2 t_b / D`` for the gamma = 1 normalised Laplacian); the DoG
  maximum of such a blob, labelled this way, lies within 0.1% of it for ``S = 3``;
* ``diameter_mm = 2 sqrt(3) sigma_mm`` -- the diameter of the sphere on which the Laplacian of a
  3D Gaussian of scale ``sigma`` changes sign (``|x| = sqrt(D) sigma``; the "radius = sqrt(3)
  sigma" convention of scikit-image's ``blob_log``). A blob of ``sigma_b`` thus gets
  ``diameter = 2 sqrt(2) sigma_b``. The paper's split is
  ``keypoints.diameter_mm <= 20`` (:func:`split_micro_macro`);
* ``dog_response`` -- signed interpolated ``D(x_hat)``; ``octave``; ``layer`` -- the refined
  scale index ``s`` within the octave (1..S, +-0.5).

Descriptor (:meth:`SIFT3D.describe`), after Toews and Wells 2013 / Cheung and Hamarneh 2009:

1. Gradients (in intensity per mm) of the Gaussian layer nearest to the keypoint's ``sigma`` are
   sampled by trilinear interpolation at fixed offsets in units of ``sigma`` (physical space, so
   anisotropic grids are handled without resampling the volume); outside the volume the gradient
   is taken as zero.
2. Rotation frame: the dominant gradient direction is the peak of an orientation histogram over
   a sphere of radius ``3 sigma`` (equal-area bins on the unit sphere, weights = gradient
   magnitude x Gaussian of ``1.5 sigma``, Lowe Sec. 5), smoothed and refined by von Mises-Fisher
   mean shift. The second axis is the dominant direction of the gradients' components in the
   plane orthogonal to the first (a circular histogram, refined the same way), the third their
   cross product -- a right-handed frame, so proper rotations of the volume are normalised.
   ``rotation_invariant=False`` uses the image axes instead (useful after registration to an
   atlas, where orientation itself carries information).
3. A cube of half-width ``descriptor_grid * subregion_width * sigma / 2`` (3 sigma by default,
   Lowe's 3 sigma per sub-region), aligned with the frame, is sampled on a regular grid of
   ``4`` points per sub-region per axis; each gradient (expressed in the frame) votes into the
   ``descriptor_grid^3`` sub-regions with trilinear weights, Gaussian weight of half the window
   width (Lowe Sec. 6.1), and into ``orientation_bins`` directions: the face normals of the
   regular icosahedron (20, Cheung and Hamarneh) or octahedron (8 octants), with a linear "tent"
   weight ``max(0, g.n_b - cos theta_nn)`` normalised over the bins (``theta_nn`` = angle
   between neighbouring normals), the 3D analogue of Lowe's interpolation between adjacent
   orientation bins.
4. L2 normalise, clip at ``clip`` (0.2), renormalise (Lowe Sec. 6.1). Length
   ``descriptor_grid^3 * orientation_bins``: 2 x 2 x 2 x 20 = 160 by default (64 with octants).
   A keypoint without any gradient in its window gets an all-zero descriptor.

Deviations from Lowe: no initial image doubling (Sec. 3.3; lower ``sigma0_mm`` instead); one
orientation frame per keypoint (Lowe adds keypoints for secondary peaks above 80%); scale
labelled at the DoG's geometric-mean sigma (above); a fit converges at offsets <= 0.6 instead of
0.5, and of a plateau of equal DoG values the first voxel in raster order counts as the
extremum (both matter for structures centred exactly between voxels).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.base import BaseEstimator

log = logging.getLogger(__name__)

#: Columns of the keypoint table returned by :meth:`SIFT3D.detect`.
KEYPOINT_COLUMNS = ("x", "y", "z", "sigma_mm", "diameter_mm", "dog_response", "octave", "layer")
#: Diameter of a keypoint = this factor x ``sigma_mm`` (module docstring).
DIAMETER_PER_SIGMA = 2.0 * math.sqrt(3.0)
#: An octave is not built when one of its axes would have fewer voxels than this.
MIN_OCTAVE_VOXELS = 6
#: Lowe's base scale in voxels: an axis is subsampled while its spacing stays <= sigma / 1.6.
VOXELS_PER_SIGMA = 1.6
#: Nominal blur of the input image, in voxels (Lowe Sec. 3.3).
INPUT_BLUR_VOXELS = 0.5
#: Quadratic-fit re-centrings before a candidate is dropped (Lowe Sec. 4).
MAX_REFINE_STEPS = 5
#: A fit converges once every offset is <= this (Lowe: 0.5). Slightly above 0.5 so that an
#: extremum midway between two samples does not make the fit oscillate between them.
REFINE_TOLERANCE = 0.6
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
#: Keypoints described per vectorised batch (bounds the (batch, samples, bins) temporaries).
DESCRIBE_BATCH = 256


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


# --------------------------------------------------------------------------- scale space


@dataclass
class _Octave:
    """One octave: Gaussian layers ``(S+3, X, Y, Z)``, DoG ``(S+2, X, Y, Z)`` and its grid."""

    index: int
    sigma0_mm: float  # sigma of layer 0
    factor: np.ndarray  # (3,) subsampling factor per axis w.r.t. the input grid
    spacing: np.ndarray  # (3,) grid spacing in mm
    gauss: np.ndarray
    dog: np.ndarray


@dataclass
class _ScaleSpace:
    octaves: list[_Octave]
    n_scales: int
    sigma0_mm: float

    def layer_for_sigma(self, sigma_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(octave, Gaussian layer) whose scale is nearest to each ``sigma_mm`` (clamped)."""
        log2 = np.log2(np.asarray(sigma_mm, float) / self.sigma0_mm)
        octave = np.clip(np.floor(log2 + 1e-9), 0, len(self.octaves) - 1).astype(int)
        layer = np.clip(np.rint(self.n_scales * (log2 - octave)), 0, self.n_scales + 2)
        return octave, layer.astype(int)


def _gaussian_layers(
    base: np.ndarray, blur: np.ndarray, spacing: np.ndarray, sigmas: np.ndarray
) -> np.ndarray:
    """``base`` (per-axis blur ``blur`` mm) smoothed to each isotropic ``sigma`` in mm."""
    out = np.empty((len(sigmas), *base.shape), dtype=np.float32)
    for i, sigma in enumerate(sigmas):
        extra_vox = np.sqrt(np.maximum(sigma**2 - blur**2, 0.0)) / spacing
        out[i] = ndimage.gaussian_filter(base, sigma=tuple(extra_vox), mode="nearest")
    return out


def _build_scale_space(
    image: np.ndarray, spacing: np.ndarray, sigma0_mm: float, n_scales: int, n_octaves: int | None
) -> _ScaleSpace:
    k = 2.0 ** (1.0 / n_scales)
    factor = np.ones(3, dtype=int)
    grid_spacing = spacing.astype(float)
    blur = INPUT_BLUR_VOXELS * grid_spacing
    base = image
    octaves: list[_Octave] = []
    while n_octaves is None or len(octaves) < n_octaves:
        o = len(octaves)
        sigma_o = sigma0_mm * 2.0**o
        if o > 0:
            prev = octaves[-1]
            base = prev.gauss[n_scales]  # sigma = 2 sigma_{o-1} = sigma_o
            blur = np.maximum(blur, sigma_o)
            halve = grid_spacing * 2.0 <= sigma_o / VOXELS_PER_SIGMA * (1.0 + 1e-6)
            new_shape = np.where(halve, (np.array(base.shape) + 1) // 2, base.shape)
            if np.any(new_shape < MIN_OCTAVE_VOXELS):
                break
            slices = tuple(slice(None, None, 2) if h else slice(None) for h in halve)
            base = np.ascontiguousarray(base[slices])
            factor = factor * np.where(halve, 2, 1)
            grid_spacing = grid_spacing * np.where(halve, 2.0, 1.0)
        sigmas = sigma_o * k ** np.arange(n_scales + 3)
        gauss = _gaussian_layers(base, blur, grid_spacing, sigmas)
        octaves.append(
            _Octave(o, sigma_o, factor.copy(), grid_spacing.copy(), gauss, np.diff(gauss, axis=0))
        )
    return _ScaleSpace(octaves, n_scales, sigma0_mm)


# --------------------------------------------------------------------------- detection


def _strict_extrema(dog: np.ndarray, n_scales: int, threshold: float) -> np.ndarray:
    """Indices ``(n, 4)`` = (layer, x, y, z) of extrema of ``dog`` over the 80 neighbours in
    scale and space (strict, up to the tie rule below), with ``|D| > threshold``, away from every
    border."""
    maxf = ndimage.maximum_filter(dog, size=3, mode="nearest")
    minf = ndimage.minimum_filter(dog, size=3, mode="nearest")
    interior = np.zeros(dog.shape, dtype=bool)
    interior[1 : n_scales + 1, 1:-1, 1:-1, 1:-1] = True
    cand = interior & (((dog == maxf) & (dog > threshold)) | ((dog == minf) & (dog < -threshold)))
    idx = np.argwhere(cand)
    if len(idx) == 0:
        return idx
    # D == max of the 3^4 block admits ties (a symmetric blob centred between voxels gives a
    # 2x2x2 plateau): a point may tie only with neighbours that come later in raster order, so
    # only the first point of such a plateau survives.
    offsets = np.array([d for d in np.ndindex(3, 3, 3, 3) if d != (1, 1, 1, 1)]) - 1
    earlier = np.array([next(v for v in d if v != 0) < 0 for d in offsets])
    neigh = dog[tuple((idx[:, None, :] + offsets[None]).transpose(2, 0, 1))]
    ties = neigh == dog[tuple(idx.T)][:, None]
    return idx[~np.any(ties[:, earlier], axis=1)]


def _derivatives(dog: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value, gradient ``(n, 4)`` and Hessian ``(n, 4, 4)`` of ``dog`` at integer ``pos`` by
    central differences in index units (Lowe Sec. 4)."""
    eye = np.eye(4, dtype=int)

    def at(delta: np.ndarray) -> np.ndarray:
        return dog[tuple((pos + delta).T)].astype(np.float64)

    centre = at(np.zeros(4, dtype=int))
    grad = np.empty((len(pos), 4))
    hess = np.empty((len(pos), 4, 4))
    for i in range(4):
        plus, minus = at(eye[i]), at(-eye[i])
        grad[:, i] = (plus - minus) / 2.0
        hess[:, i, i] = plus + minus - 2.0 * centre
        for j in range(i + 1, 4):
            h = (
                at(eye[i] + eye[j])
                - at(eye[i] - eye[j])
                - at(eye[j] - eye[i])
                + at(-eye[i] - eye[j])
            ) / 4.0
            hess[:, i, j] = hess[:, j, i] = h
    return centre, grad, hess


def _refine(dog: np.ndarray, cand: np.ndarray, n_scales: int) -> dict[str, np.ndarray]:
    """Quadratic sub-voxel/sub-scale refinement of all candidates at once (Lowe Eq. 3).

    A candidate whose offset exceeds :data:`REFINE_TOLERANCE` in some coordinate moves to the
    nearest sample point and is refitted, up to :data:`MAX_REFINE_STEPS` times; candidates that
    leave the interior, have a (numerically) singular Hessian or do not converge are dropped.
    """
    lo = np.array([1, 1, 1, 1])
    hi = np.array([n_scales, *(np.array(dog.shape[1:]) - 2)])
    pos = cand.copy()
    active = np.arange(len(pos))
    done_idx, done_off, done_val, done_hess = [], [], [], []
    for _ in range(MAX_REFINE_STEPS):
        if len(active) == 0:
            break
        value, grad, hess = _derivatives(dog, pos[active])
        scale = np.abs(hess).max(axis=(1, 2))
        ok = np.abs(np.linalg.det(hess)) > 1e-10 * scale**4
        offset = np.zeros_like(grad)
        if ok.any():
            offset[ok] = -np.linalg.solve(hess[ok], grad[ok][..., None])[..., 0]
        c = converged = ok & np.all(np.abs(offset) <= REFINE_TOLERANCE, axis=1)
        done_idx.append(active[c])
        done_off.append(offset[c])
        done_val.append(value[c] + 0.5 * np.einsum("ni,ni->n", grad[c], offset[c]))
        done_hess.append(hess[c])
        moving = ok & ~converged
        new_pos = pos[active[moving]] + np.rint(offset[moving]).astype(int)
        inside = np.all((new_pos >= lo) & (new_pos <= hi), axis=1)
        pos[active[moving][inside]] = new_pos[inside]
        active = active[moving][inside]
    idx = np.concatenate(done_idx) if done_idx else np.empty(0, int)
    return {
        "pos": pos[idx],
        "offset": np.concatenate(done_off) if done_off else np.empty((0, 4)),
        "value": np.concatenate(done_val) if done_val else np.empty(0),
        "hess": np.concatenate(done_hess) if done_hess else np.empty((0, 4, 4)),
    }


def _edge_ok(spatial_hess: np.ndarray, edge_ratio: float) -> np.ndarray:
    """3D Hessian test of Allaire et al. 2008: definite and Tr^3/Det < (2r+1)^3/r^2."""
    eig = np.linalg.eigvalsh(spatial_hess)
    definite = np.all(eig > 0, axis=1) | np.all(eig < 0, axis=1)
    tr = np.trace(spatial_hess, axis1=1, axis2=2)
    det = np.prod(eig, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = tr**3 / det
    return definite & (ratio < (2.0 * edge_ratio + 1.0) ** 3 / edge_ratio**2)


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


# --------------------------------------------------------------------------- checks


def _is_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float | np.number)
        and math.isfinite(float(value))
    )


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{extra}, got {value!r}")


def _check_positive(
    name: str, value: Any, allow_none: bool = False, allow_zero: bool = False
) -> None:
    if allow_none and value is None:
        return
    if not _is_number(value) or float(value) < 0 or (float(value) == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a finite number {bound}{extra}, got {value!r}")


def _as_spacing(spacing: Any) -> np.ndarray:
    if isinstance(spacing, str | bytes) or not isinstance(spacing, Sequence | np.ndarray):
        raise ValueError(f"spacing must be a sequence of 3 positive numbers (mm), got {spacing!r}")
    items = list(spacing)
    if len(items) != 3 or not all(_is_number(s) and float(s) > 0 for s in items):
        raise ValueError(f"spacing must be 3 positive finite numbers (mm), got {spacing!r}")
    return np.array(items, dtype=float)


def _as_image(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"image must be a 3D array, got shape {arr.shape}")
    if min(arr.shape) < 3:
        raise ValueError(f"image must have at least 3 voxels per axis, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"image must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or infinite values")
    return arr


# --------------------------------------------------------------------------- estimator


class SIFT3D(BaseEstimator):
    """3D SIFT keypoint detector and descriptor (module docstring; Toews and Wells 2013).

    Parameters
    ----------
    n_scales_per_octave : int
        ``S``, DoG layers searched per octave (Lowe: 3).
    sigma0_mm : float or None
        Scale of the first Gaussian layer in mm; None = ``1.6 x`` the finest voxel spacing
        (Lowe's ``sigma0 = 1.6`` voxels). Must exceed half the finest spacing (the input's
        nominal blur). The smallest keypoint is ``~1.2 sigma0`` (diameter ``~4.3 sigma0``), so
        microSIFT (<= 20 mm) needs ``sigma0_mm <~ 4.7`` mm, i.e. voxels of ~3 mm or finer.
    n_octaves : int or None
        Number of octaves; None = until an axis would have fewer than
        :data:`MIN_OCTAVE_VOXELS` voxels.
    contrast_threshold : float
        Minimum ``|D(x_hat)|`` for the image mapped to [0, 1]. Lowe's 0.03 (``S = 3``) was set
        for photographs; OpenCV's effective value is 0.04 / S ~ 0.013. The default 0.02 lies
        between them: with ``intensity_range=(-1000, 400)`` a solid nodule in lung (~900 HU
        contrast) gives ``|D| ~ 0.08``, soft-tissue contrasts of ~50 HU stay below it.
    edge_ratio : float
        ``r`` of the 3D Hessian test (> 1; Lowe's 10).
    max_keypoints : int or None
        Keep at most this many keypoints, strongest ``|dog_response|`` first.
    intensity_range : (float, float) or None
        Intensities mapped to 0 and 1 before thresholding (e.g. ``(-1000, 400)`` HU so that one
        threshold means the same for every CT of a cohort); None = the image's min and max.
    descriptor_grid : int
        Sub-regions per axis of the descriptor window (2 -> 2 x 2 x 2).
    orientation_bins : int
        8 (octahedron face normals = octants) or 20 (icosahedron face normals).
    subregion_width : float
        Width of one sub-region in keypoint sigmas (Lowe: 3).
    clip : float
        Clipping value of the unit descriptor before renormalisation, in (0, 1] (Lowe: 0.2).
    rotation_invariant : bool
        Express the descriptor in the keypoint's dominant-orientation frame (True) or in the
        image axes (False).
    """

    def __init__(
        self,
        n_scales_per_octave: int = 3,
        sigma0_mm: float | None = None,
        n_octaves: int | None = None,
        contrast_threshold: float = 0.02,
        edge_ratio: float = 10.0,
        max_keypoints: int | None = 300,
        intensity_range: tuple[float, float] | None = None,
        descriptor_grid: int = 2,
        orientation_bins: int = 20,
        subregion_width: float = 3.0,
        clip: float = 0.2,
        rotation_invariant: bool = True,
    ) -> None:
        self.n_scales_per_octave = n_scales_per_octave
        self.sigma0_mm = sigma0_mm
        self.n_octaves = n_octaves
        self.contrast_threshold = contrast_threshold
        self.edge_ratio = edge_ratio
        self.max_keypoints = max_keypoints
        self.intensity_range = intensity_range
        self.descriptor_grid = descriptor_grid
        self.orientation_bins = orientation_bins
        self.subregion_width = subregion_width
        self.clip = clip
        self.rotation_invariant = rotation_invariant

    # ----------------------------------------------------------------------- params

    @property
    def descriptor_length(self) -> int:
        """``descriptor_grid^3 * orientation_bins`` (160 with the defaults)."""
        return int(self.descriptor_grid) ** 3 * int(self.orientation_bins)

    def _check_params(self) -> None:
        _check_int("n_scales_per_octave", self.n_scales_per_octave, 1)
        _check_positive("sigma0_mm", self.sigma0_mm, allow_none=True)
        _check_int("n_octaves", self.n_octaves, 1, allow_none=True)
        _check_positive("contrast_threshold", self.contrast_threshold, allow_zero=True)
        if not _is_number(self.edge_ratio) or float(self.edge_ratio) <= 1.0:
            raise ValueError(f"edge_ratio must be a finite number > 1, got {self.edge_ratio!r}")
        _check_int("max_keypoints", self.max_keypoints, 1, allow_none=True)
        if self.intensity_range is not None:
            r = self.intensity_range
            if (
                isinstance(r, str | bytes)
                or not isinstance(r, Sequence | np.ndarray)
                or len(r) != 2
                or not all(_is_number(v) for v in r)
                or not float(r[1]) > float(r[0])
            ):
                raise ValueError(
                    f"intensity_range must be None or (low, high) with high > low, got {r!r}"
                )
        _check_int("descriptor_grid", self.descriptor_grid, 1)
        if isinstance(self.orientation_bins, bool) or self.orientation_bins not in (8, 20):
            raise ValueError(f"orientation_bins must be 8 or 20, got {self.orientation_bins!r}")
        _check_positive("subregion_width", self.subregion_width)
        if not _is_number(self.clip) or not 0.0 < float(self.clip) <= 1.0:
            raise ValueError(f"clip must be a number in (0, 1], got {self.clip!r}")
        if not isinstance(self.rotation_invariant, bool | np.bool_):
            raise ValueError(f"rotation_invariant must be a bool, got {self.rotation_invariant!r}")

    # ----------------------------------------------------------------------- pipeline

    def _scale_space(self, image: np.ndarray, spacing: np.ndarray) -> _ScaleSpace:
        sigma0 = (
            VOXELS_PER_SIGMA * float(spacing.min())
            if self.sigma0_mm is None
            else float(self.sigma0_mm)
        )
        blur = INPUT_BLUR_VOXELS * float(spacing.min())
        if sigma0 <= blur * (1.0 + 1e-6):
            # Layers below the input's own blur would all equal the input, and the DoG between
            # them (zero) and the first smoothed layer would give spurious scale extrema.
            raise ValueError(
                f"sigma0_mm must exceed the input's nominal blur {INPUT_BLUR_VOXELS:g} x the finest "
                f"spacing = {blur:g} mm, got {sigma0:g}"
            )
        if self.intensity_range is None:
            lo, hi = float(image.min()), float(image.max())
        else:
            lo, hi = (float(v) for v in self.intensity_range)
        scale = 1.0 / (hi - lo) if hi > lo else 1.0
        normalised = ((image - lo) * scale).astype(np.float32)
        return _build_scale_space(
            normalised, spacing, sigma0, int(self.n_scales_per_octave), self.n_octaves
        )

    def _detect(self, space: _ScaleSpace, mask: np.ndarray | None) -> pd.DataFrame:
        S = space.n_scales
        thr = float(self.contrast_threshold)
        parts = []
        for octave in space.octaves:
            if min(octave.dog.shape[1:]) < 3:
                continue
            cand = _strict_extrema(octave.dog, S, 0.5 * thr)
            if len(cand) == 0:
                continue
            fit = _refine(octave.dog, cand, S)
            pos, offset, value, hess = fit["pos"], fit["offset"], fit["value"], fit["hess"]
            h = octave.spacing
            spatial = hess[:, 1:, 1:] / (h[:, None] * h[None, :])[None]
            keep = (np.abs(value) >= thr) & _edge_ok(spatial, float(self.edge_ratio))
            pos, offset, value = pos[keep], offset[keep], value[keep]
            # Candidates that converged onto the same sample point are one keypoint.
            _, first = np.unique(pos, axis=0, return_index=True)
            first = np.sort(first)
            pos, offset, value = pos[first], offset[first], value[first]
            layer = pos[:, 0] + offset[:, 0]
            xyz = (pos[:, 1:] + offset[:, 1:]) * octave.factor[None]
            sigma = octave.sigma0_mm * 2.0 ** ((layer + 0.5) / S)
            parts.append(
                pd.DataFrame(
                    {
                        "x": xyz[:, 0],
                        "y": xyz[:, 1],
                        "z": xyz[:, 2],
                        "sigma_mm": sigma,
                        "diameter_mm": DIAMETER_PER_SIGMA * sigma,
                        "dog_response": value,
                        "octave": np.full(len(value), octave.index, dtype=np.int64),
                        "layer": layer,
                    }
                )
            )
        kps = pd.concat(parts, ignore_index=True) if parts else _empty_keypoints()
        if mask is not None and len(kps):
            shape = np.array(mask.shape)
            vox = np.clip(np.rint(kps[["x", "y", "z"]].to_numpy()).astype(int), 0, shape - 1)
            kps = kps[mask[tuple(vox.T)]]
        # Strongest first; ties broken by position so the order is deterministic.
        order = np.lexsort(
            (
                kps["z"].to_numpy(),
                kps["y"].to_numpy(),
                kps["x"].to_numpy(),
                -kps["dog_response"].abs().to_numpy(),
            )
        )
        kps = kps.iloc[order]
        if self.max_keypoints is not None:
            kps = kps.iloc[: int(self.max_keypoints)]
        log.debug("SIFT3D: %d keypoints in %d octaves", len(kps), len(space.octaves))
        return kps.reset_index(drop=True)

    def _describe(self, space: _ScaleSpace, keypoints: pd.DataFrame) -> np.ndarray:
        n_grid = int(self.descriptor_grid)
        normals = orientation_bin_directions(int(self.orientation_bins))
        offsets, spatial_weights = _descriptor_layout(n_grid)
        xyz = keypoints[["x", "y", "z"]].to_numpy(dtype=float)
        sigma = keypoints["sigma_mm"].to_numpy(dtype=float)
        out = np.zeros((len(keypoints), self.descriptor_length), dtype=np.float32)
        if len(keypoints) == 0:
            return out
        octave_idx, layer_idx = space.layer_for_sigma(sigma)
        for o, layer in sorted(set(zip(octave_idx.tolist(), layer_idx.tolist(), strict=True))):
            group = np.flatnonzero((octave_idx == o) & (layer_idx == layer))
            octave = space.octaves[o]
            grads = tuple(
                g.astype(np.float32, copy=False)
                for g in np.gradient(octave.gauss[layer], *octave.spacing)
            )
            for start in range(0, len(group), DESCRIBE_BATCH):
                sel = group[start : start + DESCRIBE_BATCH]
                out[sel] = self._describe_batch(
                    octave, grads, xyz[sel], sigma[sel], normals, offsets, spatial_weights
                )
        return out

    def _describe_batch(
        self,
        octave: _Octave,
        grads: tuple[np.ndarray, np.ndarray, np.ndarray],
        xyz: np.ndarray,
        sigma: np.ndarray,
        normals: np.ndarray,
        offsets: np.ndarray,
        spatial_weights: np.ndarray,
    ) -> np.ndarray:
        """Descriptors of keypoints at input-voxel positions ``xyz`` described on one layer."""
        h = octave.spacing
        half_width = int(self.descriptor_grid) * float(self.subregion_width) / 2.0  # sigmas
        centre = xyz / octave.factor[None]  # keypoints in this octave's grid
        s = sigma[:, None, None]
        if self.rotation_invariant:
            pts = centre[:, None] + s * _ORI_OFFSETS[None] / h
            frames = _dominant_frames(_sample_gradients(grads, pts))
        else:
            frames = np.broadcast_to(np.eye(3), (len(xyz), 3, 3))
        # Sample points: offsets along the frame axes in mm, then in this grid's voxels.
        local = s * half_width * offsets[None]  # (n, M, 3)
        pts = centre[:, None] + np.matmul(local, np.swapaxes(frames, 1, 2)) / h
        g_local = np.matmul(_sample_gradients(grads, pts), frames)  # components along the axes
        mag = np.linalg.norm(g_local, axis=2)
        unit = g_local / np.where(mag > 0, mag, 1.0)[..., None]
        votes = _soft_orientation_weights(unit, normals) * mag[..., None]  # (n, M, K)
        hist = np.matmul(spatial_weights.T[None], votes)  # (n, sub-regions, K)
        return _normalise_descriptor(hist.reshape(len(xyz), -1), float(self.clip))

    # ----------------------------------------------------------------------- public API

    def detect(self, image: Any, spacing: Sequence[float], mask: Any = None) -> pd.DataFrame:
        """Keypoints of a 3D ``image`` with voxel ``spacing`` (mm, per array axis).

        Returns a DataFrame with columns :data:`KEYPOINT_COLUMNS` (module docstring), strongest
        ``|dog_response|`` first, at most ``max_keypoints`` rows. With a ``mask`` (same shape),
        only keypoints whose nearest voxel lies in the mask are kept.
        """
        self._check_params()
        img, sp, roi = self._inputs(image, spacing, mask)
        return self._detect(self._scale_space(img, sp), roi)

    def describe(self, image: Any, spacing: Sequence[float], keypoints: pd.DataFrame) -> np.ndarray:
        """Descriptors ``(n, descriptor_length)`` float32 of ``keypoints`` (needs columns
        ``x, y, z`` in voxels and ``sigma_mm``; e.g. the output of :meth:`detect`)."""
        self._check_params()
        img, sp, _ = self._inputs(image, spacing, None)
        missing = [c for c in ("x", "y", "z", "sigma_mm") if c not in keypoints]
        if missing:
            raise ValueError(f"keypoints lack column(s) {missing}")
        sig = np.asarray(keypoints["sigma_mm"], float)
        if len(sig) and not (np.all(np.isfinite(sig)) and np.all(sig > 0)):
            raise ValueError("keypoints: sigma_mm must be positive and finite")
        return self._describe(self._scale_space(img, sp), keypoints)

    def detect_and_describe(
        self, image: Any, spacing: Sequence[float], mask: Any = None
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """:meth:`detect` then :meth:`describe` on one shared scale space."""
        self._check_params()
        img, sp, roi = self._inputs(image, spacing, mask)
        space = self._scale_space(img, sp)
        kps = self._detect(space, roi)
        return kps, self._describe(space, kps)

    @staticmethod
    def _inputs(image: Any, spacing: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, Any]:
        img = _as_image(image)
        sp = _as_spacing(spacing)
        roi = None
        if mask is not None:
            roi = np.asarray(mask) != 0
            if roi.shape != img.shape:
                raise ValueError(f"mask shape {roi.shape} does not match image shape {img.shape}")
        return img, sp, roi


def _normalise_descriptor(desc: np.ndarray, clip: float) -> np.ndarray:
    """L2 normalise, clip at ``clip``, renormalise (Lowe Sec. 6.1); zero rows stay zero."""
    norm = np.linalg.norm(desc, axis=1, keepdims=True)
    desc = np.minimum(desc / np.where(norm > 0, norm, 1.0), clip)
    norm = np.linalg.norm(desc, axis=1, keepdims=True)
    return desc / np.where(norm > 0, norm, 1.0)


def _empty_keypoints() -> pd.DataFrame:
    cols = {c: np.empty(0, dtype=float) for c in KEYPOINT_COLUMNS}
    cols["octave"] = np.empty(0, dtype=np.int64)
    return pd.DataFrame(cols)


def split_micro_macro(
    keypoints: pd.DataFrame, threshold_mm: float = 20.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(micro, macro)``: keypoints with ``diameter_mm <= threshold_mm`` and the rest.

    The paper's two vocabularies (Sec. 2, "Bag of Words": microSIFT <= 2 cm diameter, macroSIFT
    > 2 cm). Rows keep their index labels, so with the RangeIndex of :meth:`SIFT3D.detect`,
    ``descriptors[micro.index]`` selects the micro descriptors.
    """
    _check_positive("threshold_mm", threshold_mm)
    if "diameter_mm" not in keypoints:
        raise ValueError("keypoints lack the column 'diameter_mm'")
    small = keypoints["diameter_mm"].to_numpy() <= float(threshold_mm)
    return keypoints[small], keypoints[~small]
