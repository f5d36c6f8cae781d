"""3D SIFT: scale-space keypoints and rotation-normalised gradient-orientation descriptors.

Study 05 (population clustering of routine lung CT) extracts "3D-SIFT features [15] to encode
[...] gradient changes such as shape" and trains "two separate vocabularies, microSIFT (3DSIFT
features with <= 2cm in diameter) and macroSIFT (diameter > 2cm)" (Sec. 2, "Feature
Extraction"). Reference [15] is Toews and Wells, "Efficient and robust model-to-image alignment
using 3D scale-invariant features" (Med. Image Anal. 2013). This module (the estimator,
:class:`SIFT3D`) and two siblings, the scale space and detection
(:mod:`medclust.features.sift3d_scale_space`) and the descriptor geometry
(:mod:`medclust.features.sift3d_descriptor`), implement that family of detectors/descriptors:

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
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from medclust.features.sift3d_descriptor import (
    _ORI_OFFSETS,
    MEAN_SHIFT_STEPS,
    ORIENTATION_BINS_PHI,
    ORIENTATION_BINS_Z,
    ORIENTATION_KAPPA,
    ORIENTATION_RADIUS,
    ORIENTATION_STEP,
    ORIENTATION_WINDOW_SIGMA,
    SAMPLES_PER_SUBREGION,
    SECOND_AXIS_BINS,
    _descriptor_layout,
    _dominant_frames,
    _sample_gradients,
    _soft_orientation_weights,
    orientation_bin_directions,
)
from medclust.features.sift3d_scale_space import (
    INPUT_BLUR_VOXELS,
    MAX_REFINE_STEPS,
    MIN_OCTAVE_VOXELS,
    REFINE_TOLERANCE,
    VOXELS_PER_SIGMA,
    _build_scale_space,
    _edge_ok,
    _Octave,
    _refine,
    _ScaleSpace,
    _strict_extrema,
)
from medclust.validation import Int, Options, Real, check_number, validate

__all__ = [
    "DESCRIBE_BATCH",
    "DIAMETER_PER_SIGMA",
    "INPUT_BLUR_VOXELS",
    "KEYPOINT_COLUMNS",
    "MAX_REFINE_STEPS",
    "MEAN_SHIFT_STEPS",
    "MIN_OCTAVE_VOXELS",
    "ORIENTATION_BINS_PHI",
    "ORIENTATION_BINS_Z",
    "ORIENTATION_KAPPA",
    "ORIENTATION_RADIUS",
    "ORIENTATION_STEP",
    "ORIENTATION_WINDOW_SIGMA",
    "REFINE_TOLERANCE",
    "SAMPLES_PER_SUBREGION",
    "SECOND_AXIS_BINS",
    "SIFT3D",
    "VOXELS_PER_SIGMA",
    "orientation_bin_directions",
    "split_micro_macro",
]

log = logging.getLogger(__name__)

#: Columns of the keypoint table returned by :meth:`SIFT3D.detect`.
KEYPOINT_COLUMNS = ("x", "y", "z", "sigma_mm", "diameter_mm", "dog_response", "octave", "layer")
#: Diameter of a keypoint = this factor x ``sigma_mm`` (module docstring).
DIAMETER_PER_SIGMA = 2.0 * math.sqrt(3.0)
#: Keypoints described per vectorised batch (bounds the (batch, samples, bins) temporaries).
DESCRIBE_BATCH = 256


# --------------------------------------------------------------------------- checks


def _is_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float | np.number)
        and math.isfinite(float(value))
    )


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

    _constraints = {
        "n_scales_per_octave": Int(1),
        "sigma0_mm": Real(0.0, low_open=True, allow_none=True),
        "n_octaves": Int(1, allow_none=True),
        "contrast_threshold": Real(0.0),
        "edge_ratio": Real(1.0, low_open=True),
        "max_keypoints": Int(1, allow_none=True),
        "descriptor_grid": Int(1),
        "orientation_bins": Options(8, 20),
        "subregion_width": Real(0.0, low_open=True),
        "clip": Real(0.0, 1.0, low_open=True),
        "rotation_invariant": Options(bool, np.bool_),
    }

    def __init__(
        self,
        *,
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
        validate(self, self._constraints)
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
    check_number("threshold_mm", threshold_mm, 0.0, low_open=True)
    if "diameter_mm" not in keypoints:
        raise ValueError("keypoints lack the column 'diameter_mm'")
    small = keypoints["diameter_mm"].to_numpy() <= float(threshold_mm)
    return keypoints[small], keypoints[~small]
