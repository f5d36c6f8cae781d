"""2D axial patches of fixed physical size from anisotropic volumes.

Perkonigg et al. (Sec. 3) train the cDCN on "50.000 image patches with a size of 14x14mm
(resampled to 32x32 pixels) [...] extracted at random positions within the livers", and compute
each case's signature "by parsing [the ROI] with a sliding window" (Sec. 2). This module does
both for volumes stored as ``(x, y, z)`` arrays with axial slices along the last axis and voxel
spacing ``(sx, sy, sz)`` in mm.

Geometry, shared by every function here:

* A patch of ``size_mm`` covers ``(nx, ny) = patch_shape_voxels(size_mm, spacing)`` voxels of one
  axial slice, ``n = round_half_up(size_mm / s)`` per axis. The window around centre voxel ``c``
  spans ``[c - n // 2, c - n // 2 + n)``: for odd ``n`` it is symmetric; for even ``n`` the
  geometric centre lies half a voxel before ``c``. Patch axis 0 runs along image ``x``, axis 1
  along ``y``.
* Windows that cross the image border are completed by mirroring (``np.pad`` mode
  ``"symmetric"``) rather than zeros, because a constant border would be a texture of its own.
* The ``nx x ny`` crop is resampled to ``out_px x out_px`` by bilinear interpolation with
  ``align_corners=False``: the crop is treated as ``nx`` voxel *footprints* covering
  ``nx * sx`` mm, which the output pixels tile evenly, so every output pixel covers
  ``size_mm / out_px`` mm whatever the input spacing. ``antialias=True`` only matters when a crop
  has more voxels than ``out_px`` (fine spacing) and is a no-op up to float rounding otherwise.
  Interpolation runs in torch on the CPU, which is deterministic.

MRI intensities are in arbitrary units, so normalise each volume with :func:`medclust.intensity.normalize_in_mask`
*before* extracting patches; the extraction functions never rescale intensities.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

from medclust.validation import Options, check_int, check_number

log = logging.getLogger(__name__)

#: Crops resampled per call of ``torch.nn.functional.interpolate`` (bounds peak memory).
RESAMPLE_BATCH = 4096


# --------------------------------------------------------------------------- geometry


def _round_half_up(v: float) -> int:
    # Python's round() rounds half to even, which would make 10.5 and 11.5 mm behave differently.
    return int(math.floor(v + 0.5))


def _inplane_spacing(spacing: Sequence[float]) -> tuple[float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) < 2 or not all(math.isfinite(s) and s > 0 for s in sp[:2]):
        raise ValueError(f"spacing must hold at least two positive finite values, got {spacing!r}")
    return sp[0], sp[1]


def patch_shape_voxels(size_mm: float, spacing: Sequence[float]) -> tuple[int, int]:
    """Voxels ``(nx, ny)`` that an axial patch of ``size_mm`` x ``size_mm`` covers.

    ``n = round_half_up(size_mm / s)`` for the in-plane spacings ``s = spacing[0], spacing[1]``,
    e.g. 14 mm at ``(1.5, 1.0)`` mm gives ``(9, 14)``. Raises ``ValueError`` naming
    ``patch_size_mm`` when the size is not a positive finite number or covers fewer than two
    voxels along an axis (a one-voxel "patch" has no texture to cluster).
    """
    sx, sy = _inplane_spacing(spacing)
    size = check_number("patch_size_mm", size_mm, 0, low_open=True)
    shape = (_round_half_up(size / sx), _round_half_up(size / sy))
    if min(shape) < 2:
        raise ValueError(
            f"patch_size_mm={size:g} covers {shape} voxels at spacing ({sx:g}, {sy:g}) mm; "
            "a patch needs at least 2 voxels per axis"
        )
    return shape


def stride_voxels(stride_mm: float, spacing: Sequence[float]) -> tuple[int, int]:
    """In-plane grid step ``(kx, ky)`` in voxels for ``stride_mm`` (half-up rounding, >= 1)."""
    sx, sy = _inplane_spacing(spacing)
    stride = check_number("stride_mm", stride_mm, 0, low_open=True)
    return max(1, _round_half_up(stride / sx)), max(1, _round_half_up(stride / sy))


def _as_volume(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(image, dtype=np.float32)
    roi = np.asarray(mask) != 0
    if img.ndim == 2:  # a single slice is a volume with one axial slice
        img, roi = img[..., None], roi[..., None] if roi.ndim == 2 else roi
    if img.ndim != 3:
        raise ValueError(f"image must be a 2D or 3D (x, y, z) array, got shape {img.shape}")
    if roi.shape != img.shape:
        raise ValueError(f"mask shape {roi.shape} does not match image shape {img.shape}")
    return img, roi


def _window_view(arr: np.ndarray, shape: tuple[int, int], mode: str, **pad_kw) -> np.ndarray:
    """View ``(X, Y, Z, nx, ny)`` whose ``[i, j, k]`` is the window centred (see module doc) on
    voxel ``(i, j, k)``; no copy beyond the padding."""
    nx, ny = shape
    bx, by = nx // 2, ny // 2
    padded = np.pad(arr, ((bx, nx - 1 - bx), (by, ny - 1 - by), (0, 0)), mode=mode, **pad_kw)
    return sliding_window_view(padded, (nx, ny), axis=(0, 1))


def _inside_fraction(roi: np.ndarray, shape: tuple[int, int], centres: np.ndarray) -> np.ndarray:
    """Fraction of each window that lies in the ROI (outside the image counts as outside)."""
    view = _window_view(roi.astype(np.uint8), shape, mode="constant", constant_values=0)
    out = np.empty(len(centres), dtype=np.float64)
    step = 65536  # bounds the temporary (step, nx, ny) copy of the fancy index
    for a in range(0, len(centres), step):
        c = centres[a : a + step]
        out[a : a + step] = view[c[:, 0], c[:, 1], c[:, 2]].mean(axis=(1, 2))
    return out


def resample_patches(crops: np.ndarray, out_px: int) -> np.ndarray:
    """Bilinear resampling of crops ``(n, nx, ny)`` to ``(n, out_px, out_px)`` float32.

    ``align_corners=False`` (voxel footprints map onto output pixel footprints; module doc).
    """
    out_px = check_int("out_px", out_px)
    crops = np.asarray(crops, dtype=np.float32)
    out = np.empty((len(crops), out_px, out_px), dtype=np.float32)
    with torch.no_grad():
        for a in range(0, len(crops), RESAMPLE_BATCH):
            t = torch.from_numpy(np.ascontiguousarray(crops[a : a + RESAMPLE_BATCH]))[:, None]
            r = F.interpolate(
                t, size=(out_px, out_px), mode="bilinear", align_corners=False, antialias=True
            )
            out[a : a + RESAMPLE_BATCH] = r[:, 0].numpy()
    return out


def extract_patches(
    image: np.ndarray,
    spacing: Sequence[float],
    centres: np.ndarray,
    size_mm: float = 14.0,
    out_px: int = 32,
) -> np.ndarray:
    """Patches ``(n, out_px, out_px)`` float32 around given ``(x, y, z)`` voxel centres."""
    img, _ = _as_volume(image, np.ones(np.shape(image), dtype=bool))
    shape = patch_shape_voxels(size_mm, spacing)
    out_px = check_int("out_px", out_px)
    c = np.asarray(centres, dtype=np.intp).reshape(-1, 3)
    if len(c) and (np.any(c < 0) or np.any(c >= np.array(img.shape))):
        raise ValueError(f"centres must lie inside the image of shape {img.shape}")
    view = _window_view(img, shape, mode="symmetric")
    out = np.empty((len(c), out_px, out_px), dtype=np.float32)
    for a in range(0, len(c), RESAMPLE_BATCH):
        cc = c[a : a + RESAMPLE_BATCH]
        out[a : a + RESAMPLE_BATCH] = resample_patches(view[cc[:, 0], cc[:, 1], cc[:, 2]], out_px)
    return out


# --------------------------------------------------------------------------- sampling


def _eligible_centres(
    roi: np.ndarray, shape: tuple[int, int], min_inside: float, candidates: np.ndarray | None = None
) -> np.ndarray:
    """ROI voxels (or the given ``candidates``) whose window has at least ``min_inside`` of its
    voxels in the full ROI."""
    min_inside = check_number("min_inside", min_inside, 0, 1)
    if min_inside > 0 and largest_cross_section(roi) < min_inside * shape[0] * shape[1]:
        return np.empty((0, 3), np.int64)  # no window can be that full: skip the slow scan
    cand = np.argwhere(roi) if candidates is None else candidates
    if min_inside > 0 and len(cand):
        cand = cand[_inside_fraction(roi, shape, cand) >= min_inside]
    return cand


def largest_cross_section(roi: np.ndarray) -> int:
    """ROI voxels in the fullest axial slice: an upper bound on the ROI voxels of any window."""
    return int(np.asarray(roi).reshape(-1, roi.shape[-1]).sum(axis=0).max()) if roi.size else 0


def sample_patches(
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    n: int,
    size_mm: float = 14.0,
    out_px: int = 32,
    rng: int | np.random.Generator | None = None,
    min_inside: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random axial patches centred in the ROI (Perkonigg et al., Sec. 3).

    Centres are drawn uniformly from the ROI voxels whose window has at least ``min_inside`` of
    its voxels in the ROI (0 = only the centre must be inside, as in the paper), without
    replacement when there are at least ``n`` such voxels and with replacement otherwise.

    Returns ``patches`` ``(n, out_px, out_px)`` float32 and ``centres`` ``(n, 3)`` int voxel
    coordinates ``(x, y, z)``. ``rng`` is a seed or a ``numpy.random.Generator``.
    """
    img, roi = _as_volume(image, mask)
    shape = patch_shape_voxels(size_mm, spacing)
    n = check_int("n", n, 0)
    gen = np.random.default_rng(rng)
    cand = _eligible_centres(roi, shape, min_inside)
    if n == 0:
        return np.empty((0, out_px, out_px), np.float32), np.empty((0, 3), np.int64)
    if len(cand) == 0:
        raise ValueError(
            f"no ROI voxel can centre a patch (ROI voxels: {int(roi.sum())}, "
            f"min_inside={min_inside})"
        )
    pick = gen.choice(len(cand), size=n, replace=n > len(cand))
    centres = cand[pick].astype(np.int64)
    return extract_patches(img, spacing, centres, size_mm, out_px), centres


def sliding_window_centres(
    mask: np.ndarray,
    spacing: Sequence[float],
    size_mm: float = 14.0,
    stride_mm: float = 7.0,
    min_inside: float = 0.0,
) -> np.ndarray:
    """Centres ``(m, 3)`` of the sliding-window grid inside the ROI, in (x, y, z) order.

    The in-plane grid is anchored at voxel 0 and steps ``stride_voxels(stride_mm, spacing)``;
    every axial slice is visited (the patches are 2D, so the through-plane step is one slice).
    """
    _, roi = _as_volume(np.zeros(np.shape(mask), np.float32), mask)
    shape = patch_shape_voxels(size_mm, spacing)
    kx, ky = stride_voxels(stride_mm, spacing)
    on_grid = np.zeros_like(roi)
    on_grid[::kx, ::ky, :] = True
    # the inside fraction is measured against the full ROI, not the grid-thinned one
    return _eligible_centres(roi, shape, min_inside, np.argwhere(roi & on_grid))


def sliding_window_patches(
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    size_mm: float = 14.0,
    stride_mm: float = 7.0,
    out_px: int = 32,
    min_inside: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """All grid windows whose centre lies in the ROI: the "sliding window" parse of Sec. 2.

    The paper gives no stride; the default 7 mm is half the patch size. Returns ``patches``
    ``(m, out_px, out_px)`` float32 and ``centres`` ``(m, 3)`` int64, ordered by (x, y, z).
    Windows are gathered from a strided view and resampled in batches, so a 160x128x20 volume
    takes well under a second.
    """
    img, roi = _as_volume(image, mask)
    centres = sliding_window_centres(roi, spacing, size_mm, stride_mm, min_inside)
    centres = centres.astype(np.int64)
    return extract_patches(img, spacing, centres, size_mm, out_px), centres


# --------------------------------------------------------------------------- cohorts


def _unpack(vol: Any, i: int) -> tuple[np.ndarray, np.ndarray, Sequence[float]]:
    if all(hasattr(vol, a) for a in ("image", "mask", "spacing")):
        image, mask, spacing = vol.image, vol.mask, vol.spacing
    else:
        try:
            image, mask, spacing = vol
        except (TypeError, ValueError):
            raise TypeError(
                f"volume {i}: expected an object with image/mask/spacing or a tuple "
                "(image, mask, spacing)"
            ) from None
    if mask is None:
        raise ValueError(f"volume {getattr(vol, 'case_id', i)!r}: no ROI mask")
    return image, mask, spacing


def allocate(weights: Sequence[float], n_total: int) -> np.ndarray:
    """Split ``n_total`` into integers proportional to ``weights`` (largest remainder; ties go
    to the earlier entry, so the split is deterministic)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be a non-empty vector of non-negative numbers, not all 0")
    exact = w / w.sum() * int(n_total)
    out = np.floor(exact).astype(np.int64)
    rest = int(n_total) - int(out.sum())
    order = np.argsort(-(exact - out), kind="stable")
    out[order[:rest]] += 1
    return out


def sample_cohort_patches(
    volumes: Iterable[Any],
    n_total: int,
    size_mm: float = 14.0,
    out_px: int = 32,
    seed: int = 0,
    allocation: str = "proportional",
    min_inside: float = 0.0,
    case_ids: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random training patches over a cohort (the 50,000 patches of Perkonigg et al., Sec. 3).

    ``volumes`` holds objects with ``image``, ``mask`` and ``spacing`` (e.g.
    :class:`medclust.cohort.Volume`) or ``(image, mask, spacing)`` tuples, already intensity
    normalised (:func:`medclust.intensity.normalize_in_mask`).

    ``allocation="proportional"`` (default) gives each case a share proportional to its number of
    eligible ROI voxels, i.e. centres are uniform over all ROI voxels of the cohort, which is how
    we read "extracted at random positions within the livers of the dataset". ``"equal"`` gives
    every case the same number (up to one), so large livers do not dominate. Shares are rounded
    by the largest-remainder rule.

    Case ``i`` draws from ``numpy.random.default_rng(SeedSequence(seed).spawn(n)[i])``, so a
    case's patches do not depend on the other cases. Returns ``patches`` ``(n_total, out_px,
    out_px)`` float32, ``case_index`` ``(n_total,)`` int64 (position in ``volumes``) and
    ``centres`` ``(n_total, 3)`` int64. A case whose ROI cannot centre a patch of this size
    is an error naming the case (``case_ids``, else its ``case_id`` or position), before any
    patch is drawn.
    """
    volumes = list(volumes)
    if case_ids is None:
        case_ids = [str(getattr(v, "case_id", i)) for i, v in enumerate(volumes)]
    vols = [_unpack(v, i) for i, v in enumerate(volumes)]
    if not vols:
        raise ValueError("volumes is empty")
    Options("proportional", "equal").check("allocation", allocation)
    n_total = check_int("n_total", n_total, 0)
    sizes = []
    for i, (image, mask, spacing) in enumerate(vols):
        _, roi = _as_volume(image, mask)
        shape = patch_shape_voxels(size_mm, spacing)
        sizes.append(len(_eligible_centres(roi, shape, min_inside)))
        if sizes[-1] == 0:
            raise ValueError(
                f"case {case_ids[i]!r}: no ROI voxel can centre a patch of patch_size_mm="
                f"{size_mm:g} ({shape[0]} x {shape[1]} voxels) with at least min_inside="
                f"{min_inside:g} of it in the ROI (largest ROI cross-section: "
                f"{largest_cross_section(roi)} voxels); use a smaller patch_size_mm or min_inside"
            )
    weights = sizes if allocation == "proportional" else [1.0] * len(vols)
    counts = allocate(weights, n_total)
    seeds = np.random.SeedSequence(seed).spawn(len(vols))
    patches, case_index, centres = [], [], []
    for i, ((image, mask, spacing), k) in enumerate(zip(vols, counts, strict=True)):
        p, c = sample_patches(
            image,
            mask,
            spacing,
            int(k),
            size_mm,
            out_px,
            np.random.default_rng(seeds[i]),
            min_inside,
        )
        patches.append(p)
        centres.append(c)
        case_index.append(np.full(len(p), i, dtype=np.int64))
    log.info("sampled %d patches from %d volumes (%s)", int(counts.sum()), len(vols), allocation)
    return np.concatenate(patches), np.concatenate(case_index), np.concatenate(centres)
