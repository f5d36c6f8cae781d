"""Gaussian scale space and keypoint detection of :mod:`medclust.features.sift3d`: octaves of
anisotropic Gaussian layers in mm, strict extrema of the difference of Gaussians, their 4D
quadratic refinement and the 3D edge ("tube") test (Lowe 2004, Sec. 3-4, extended to 3D; the
rules are in :mod:`medclust.features.sift3d`'s docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

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
