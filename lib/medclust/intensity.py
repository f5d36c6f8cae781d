"""Intensity normalisation shared by the studies.

- :func:`normalize_in_mask`: z-score (or robust z-score) with the statistics of an ROI, for MRI
  in arbitrary units (Perkonigg et al. do not state theirs).
- :func:`rescale_percentiles`: per-image min-max to [0, 1] between two percentiles (the thesis of
  study 04 "normalized in intensity" every image).
- :func:`window`: a fixed intensity window mapped to [0, 1], for CT in HU (study 03's lung
  window).
"""

from __future__ import annotations

import numpy as np

from medclust.validation import Options


def normalize_in_mask(image: np.ndarray, mask: np.ndarray, method: str = "zscore") -> np.ndarray:
    """Rescale an MRI volume with statistics of its ROI voxels only (float32 result).

    MRI intensities are in arbitrary, scanner-dependent units, so each volume is standardised
    before patch extraction. ``"zscore"`` (default): ``(I - mean) / std`` of the ROI voxels.
    ``"robust"``: ``(I - median) / (IQR / 1.349)``, which matches the z-score for Gaussian
    intensities but ignores bright vessels and lesions. The paper does not state its intensity
    normalisation.
    """
    img = np.asarray(image, dtype=np.float32)
    roi = np.asarray(mask) != 0
    if roi.shape != img.shape:
        raise ValueError(f"mask shape {roi.shape} does not match image shape {img.shape}")
    vals = img[roi].astype(np.float64)
    if vals.size == 0:
        raise ValueError("mask is empty: cannot normalise intensities inside it")
    Options("zscore", "robust").check("method", method)
    if method == "zscore":
        centre, scale = vals.mean(), vals.std()
    else:
        q25, q50, q75 = np.percentile(vals, [25, 50, 75])
        centre, scale = q50, (q75 - q25) / 1.349
    if not scale > 0:
        raise ValueError(
            f"ROI intensities have no spread ({method} scale {scale}); cannot normalise"
        )
    return ((img - centre) / scale).astype(np.float32)


def rescale_percentiles(image: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Per-image intensity normalisation to [0, 1] (as the CAE/DEC thesis normalised
    every image, Sec. 3.1.1): min-max between the ``lower`` and ``upper`` percentiles, clipped. float32."""
    image = np.asarray(image, np.float32)
    lo, hi = np.percentile(image, [lower, upper])
    out = (image - lo) / max(float(hi - lo), 1e-6)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def window(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Intensities mapped linearly from ``[low, high]`` to ``[0, 1]`` and clipped (float32): a
    fixed window, the same for every image, as CT's Hounsfield units allow (study 03 shows the
    lung window [-1000, -600] HU, where emphysema is visible)."""
    if not low < high:
        raise ValueError(f"the window needs low < high, got [{low}, {high}]")
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)
