"""Cubic 3D patches of a single volume: threshold sampling, grid extraction, label projection.

Moriya et al. (JULE-3D segmentation of micro-CT), Sec. 2.3 and 2.5:

* training patches are ``n_s`` random ``w x w x w`` sub-volumes "whose center voxel intensity is
  within the threshold" that divides the specimen from the background (:func:`sample_cubes`);
* for segmentation, patches are taken on a grid with stride ``s <= w`` inside the thresholded
  specimen (:func:`grid_centres`), and "subpatches of s x s x s voxels centered in each extracted
  patch" take the patch's cluster label (:func:`project_labels`).

Geometry: a cube of odd or even side ``w`` around centre voxel ``c`` spans
``[c - w // 2, c - w // 2 + w)`` on every axis. Windows crossing the border are completed by
repeating the edge voxels (``np.pad`` mode ``"edge"``), which for a specimen in air repeats
background. Grid centres sit at ``s // 2 + k * s`` so the ``s``-cubes around them tile the
volume exactly. Arrays are indexed ``(x, y, z)``; intensities are used as stored (the caller
z-scores patches, as JULE does, with the statistics of the training patches).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from medclust.validation import check_int, check_number

#: Cubes copied per batch by :func:`iter_cubes` (bounds peak memory: 4096 * 27^3 * 4 B = 322 MB
#: at the paper's size, 22 MB at w = 11).
CUBE_BATCH = 1024


def _volume(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3:
        raise ValueError(f"image must be a 3D array, got shape {img.shape}")
    return img


def specimen_region(image: np.ndarray, threshold: float) -> np.ndarray:
    """Voxels whose intensity exceeds ``threshold`` (the paper's Table 1 thresholds)."""
    check_number("threshold", threshold)
    return _volume(image) > threshold


def cube_view(image: np.ndarray, w: int) -> np.ndarray:
    """Read-only view ``(X, Y, Z, w, w, w)`` whose ``[i, j, k]`` is the cube centred on voxel
    ``(i, j, k)``; only the edge padding is copied."""
    w = check_int("w", w)
    img = _volume(image)
    lo = w // 2
    padded = np.pad(img, [(lo, w - 1 - lo)] * 3, mode="edge")
    return sliding_window_view(padded, (w, w, w))


def iter_cubes(
    view: np.ndarray, centres: np.ndarray, batch: int = CUBE_BATCH
) -> Iterator[np.ndarray]:
    """Cubes ``(b, w, w, w)`` float32 at ``centres`` ``(n, 3)``, ``batch`` at a time."""
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 3)
    for a in range(0, len(centres), batch):
        c = centres[a : a + batch]
        yield view[c[:, 0], c[:, 1], c[:, 2]].astype(np.float32)


def extract_cubes(image: np.ndarray, centres: np.ndarray, w: int) -> np.ndarray:
    """All cubes ``(n, w, w, w)`` float32 at ``centres`` (use :func:`iter_cubes` for many)."""
    view = cube_view(image, w)
    parts = list(iter_cubes(view, centres))
    return np.concatenate(parts) if parts else np.empty((0, w, w, w), np.float32)


def sample_cubes(
    image: np.ndarray,
    region: np.ndarray,
    n: int,
    w: int,
    rng: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random cubes whose centre voxel lies in ``region`` (Sec. 2.3), drawn without
    replacement while there are enough region voxels. Returns ``(cubes (n, w, w, w) float32,
    centres (n, 3) int64)``."""
    n = check_int("n", n, 0)
    img = _volume(image)
    region = np.asarray(region, dtype=bool)
    if region.shape != img.shape:
        raise ValueError(f"region shape {region.shape} does not match image shape {img.shape}")
    cand = np.argwhere(region)
    if n and not len(cand):
        raise ValueError("no voxel passes the threshold: no patch centre can be drawn")
    gen = np.random.default_rng(rng)
    pick = gen.choice(len(cand), size=n, replace=n > len(cand)) if n else np.empty(0, int)
    centres = cand[np.sort(pick)].astype(np.int64)
    return extract_cubes(img, centres, w), centres


def grid_centres(region: np.ndarray, stride: int) -> np.ndarray:
    """Centres ``(m, 3)`` of the stride-``s`` grid (at ``s // 2 + k s``) that lie in ``region``,
    in (x, y, z) order (Sec. 2.5)."""
    stride = check_int("stride", stride)
    region = np.asarray(region, dtype=bool)
    if region.ndim != 3:
        raise ValueError(f"region must be a 3D array, got shape {region.shape}")
    on_grid = np.zeros_like(region)
    on_grid[stride // 2 :: stride, stride // 2 :: stride, stride // 2 :: stride] = True
    return np.argwhere(region & on_grid).astype(np.int64)


def project_labels(
    shape: tuple[int, int, int], centres: np.ndarray, labels: np.ndarray, stride: int
) -> np.ndarray:
    """Label map of ``shape`` in which the ``s x s x s`` sub-patch centred on each grid centre
    takes that patch's label (Sec. 2.5, Fig. 3); voxels of no sub-patch stay 0, so labels
    should start at 1. Sub-patches of grid centres tile the volume without overlap."""
    stride = check_int("stride", stride)
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 3)
    labels = np.asarray(labels)
    if len(labels) != len(centres):
        raise ValueError(f"{len(labels)} labels for {len(centres)} centres")
    out = np.zeros(shape, dtype=np.int32)
    lo = stride // 2
    for offset in np.ndindex(stride, stride, stride):
        pos = centres - lo + np.asarray(offset)
        inside = np.all((pos >= 0) & (pos < np.asarray(shape)), axis=1)
        p = pos[inside]
        out[p[:, 0], p[:, 1], p[:, 2]] = labels[inside]
    return out
