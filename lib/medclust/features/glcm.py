"""Grey level co-occurrence matrices (GLCM) and Haralick features in 3D, as IBSI defines them.

Standard. Matrices and features follow the Image Biomarker Standardisation Initiative
(Zwanenburg et al., "The Image Biomarker Standardisation Initiative", IBSI reference manual,
arXiv:1612.07003), section "Grey level co-occurrence based features"; discretisation follows
its section "Intensity discretisation". The features go back to Haralick, Shanmugam and
Dinstein (1973), "Textural features for image classification". Their dense sampling in local
windows (study 05) is :mod:`medclust.features.dense_haralick`; the tests hold its fast path to
:func:`glcm_features` here, which computes the features from dense matrices
(:class:`_GLCMStats`).

Conventions, shared by every function here and by the dense sampling:

* Volumes are 3D arrays, axes ``(x, y, z)`` as stored in the NIfTI file. The 13 unique
  directions of 26-connectivity are :data:`DIRECTIONS` (lexicographic order, the order of the
  IBSI digital-phantom matrices); offsets in voxels are ``distance * direction`` (IBSI uses
  Chebyshev distance ``delta``; offsets are in voxels whatever the spacing, as in IBSI).
* Grey levels are integers ``1..n_levels`` (see :func:`discretise`). A voxel pair is counted
  only when both voxels lie inside the image and inside the mask. Every matrix is symmetric:
  the pair ``(x, x + offset)`` adds one to ``M[i, j]`` and one to ``M[j, i]`` (IBSI), so
  ``M[d] = C_d + C_d^T`` where ``C_d`` counts ordered pairs.
* Matrices are indexed from 0: ``M[..., i - 1, j - 1]`` counts grey levels ``(i, j)``.
* Entropies use ``log2`` and ``0 log 0 = 0``.
* Aggregation (IBSI "3D, averaged" and "3D, merged"): ``"3d_averaged"`` computes the features
  of each direction's matrix and averages them over the directions that hold at least one pair;
  ``"3d_merged"`` sums the 13 matrices and computes the features of the sum.
* Degenerate matrices (one grey level only, e.g. a constant window) have an undefined
  correlation (zero marginal variance) and information correlation 1 (zero marginal entropy).
  We set ``correlation = 1`` (pyradiomics' convention for a flat region) and
  ``information_correlation_1 = 0``. A constant window at level ``g`` therefore gives:
  ``joint_maximum = angular_second_moment = 1``; ``joint_average = g``; ``sum_average = 2 g``;
  ``autocorrelation = g**2``; ``inverse_difference``, ``inverse_difference_moment`` and both
  normalised versions ``= 1``; ``correlation = 1``; every other feature ``= 0``.
  A matrix without any pair has no features (an error in :func:`glcm_features`; NaN in
  :func:`~medclust.features.dense_haralick.dense_haralick`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from medclust.validation import check_int, check_number

#: The 13 unique directions of 26-connectivity in array-axis coordinates, lexicographic order.
DIRECTIONS = np.array(
    [
        (0, 0, 1),
        (0, 1, -1),
        (0, 1, 0),
        (0, 1, 1),
        (1, -1, -1),
        (1, -1, 0),
        (1, -1, 1),
        (1, 0, -1),
        (1, 0, 0),
        (1, 0, 1),
        (1, 1, -1),
        (1, 1, 0),
        (1, 1, 1),
    ],
    dtype=np.int64,
)

#: Every IBSI GLCM feature (IBSI codes in brackets in :func:`glcm_features`), in IBSI order.
FEATURE_NAMES: tuple[str, ...] = (
    "joint_maximum",
    "joint_average",
    "joint_variance",
    "joint_entropy",
    "difference_average",
    "difference_variance",
    "difference_entropy",
    "sum_average",
    "sum_variance",
    "sum_entropy",
    "angular_second_moment",
    "contrast",
    "dissimilarity",
    "inverse_difference",
    "normalised_inverse_difference",
    "inverse_difference_moment",
    "normalised_inverse_difference_moment",
    "inverse_variance",
    "correlation",
    "autocorrelation",
    "cluster_tendency",
    "cluster_shade",
    "cluster_prominence",
    "information_correlation_1",
    "information_correlation_2",
)

#: Default features of :func:`medclust.features.dense_haralick.dense_haralick`: Haralick et al.
#: (1973) f1-f13 under their IBSI names (f1 angular second moment, f2 contrast, f3 correlation,
#: f4 sum of squares = joint variance, f5 inverse difference moment, f6 sum average, f7 sum
#: variance, f8 sum entropy, f9 entropy = joint entropy, f10 difference variance, f11 difference
#: entropy, f12/f13 information measures of correlation). f14, the maximal correlation
#: coefficient, is not an IBSI feature and is left out.
HARALICK_FEATURES: tuple[str, ...] = (
    "angular_second_moment",
    "contrast",
    "correlation",
    "joint_variance",
    "inverse_difference_moment",
    "sum_average",
    "sum_variance",
    "sum_entropy",
    "joint_entropy",
    "difference_variance",
    "difference_entropy",
    "information_correlation_1",
    "information_correlation_2",
)

AGGREGATIONS: tuple[str, ...] = ("3d_merged", "3d_averaged")

# --------------------------------------------------------------------------- checks


def _volume_and_mask(image, mask) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be a 3D array, got shape {image.shape}")
    if mask is None:
        return image, np.ones(image.shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    return image, mask.astype(bool)


def _grey_levels(image, mask, n_levels) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer grey levels (0 outside the mask), the mask and ``n_levels``, all checked."""
    n_levels = check_int("n_levels", n_levels)
    image, mask = _volume_and_mask(image, mask)
    inside = image[mask]
    if not np.issubdtype(image.dtype, np.integer):
        if not np.all(np.isfinite(inside)):
            raise ValueError("image holds NaN or infinite voxels inside the mask")
        if np.any(inside != np.round(inside)):
            raise ValueError(
                "image must hold integer grey levels 1..n_levels inside the mask (discretise it "
                "first with medclust.features.glcm.discretise)"
            )
    if inside.size and (inside.min() < 1 or inside.max() > n_levels):
        raise ValueError(
            f"image grey levels inside the mask span [{inside.min()}, {inside.max()}], outside "
            f"1..n_levels={n_levels}"
        )
    levels = np.zeros(image.shape, dtype=np.int64)
    levels[mask] = inside.astype(np.int64)
    return levels, mask, n_levels


def _feature_list(features) -> tuple[str, ...]:
    if features is None:
        return FEATURE_NAMES
    if isinstance(features, str):
        features = (features,)
    features = tuple(features)
    unknown = [f for f in features if f not in FEATURE_NAMES]
    if unknown or not features:
        raise ValueError(
            f"features must be a non-empty selection of {list(FEATURE_NAMES)}, got unknown "
            f"{unknown or features!r}"
        )
    return features


def _aggregation(aggregation) -> str:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    return aggregation


# --------------------------------------------------------------------------- discretisation


def discretise(
    image,
    mask=None,
    n_bins: int | None = None,
    bin_width: float | None = None,
    lower: float | None = None,
    upper: float | None = None,
) -> tuple[np.ndarray, int]:
    """Discretise intensities into grey levels ``1..n_levels`` (IBSI "Intensity discretisation").

    Exactly one of

    * ``n_bins`` -- fixed bin number (FBN): ``X_d = floor(N_g (X - X_min) / (X_max - X_min)) + 1``
      with ``X_d = N_g`` at ``X = X_max``; ``X_min``, ``X_max`` are the extremes inside the mask.
      A constant ROI gets level 1. Returns ``n_levels = n_bins``.
    * ``bin_width`` -- fixed bin size (FBS), the IBSI choice for CT in HU:
      ``X_d = floor((X - X_min) / w_b) + 1`` with ``X_min = lower`` (the lower bound of the
      re-segmentation range, e.g. -1000 HU) or the mask minimum when ``lower`` is None.
      Voxels below ``lower`` go to level 1 and, when ``upper`` is given, voxels above
      ``upper`` go to the level of ``upper`` (clipping; this module does no re-segmentation).
      ``n_levels`` is the level of ``upper`` when given (the same for every volume of a
      cohort), else the highest level inside the mask.

    ``lower``/``upper`` apply to fixed bin size only. Returns ``(levels, n_levels)``: ``levels``
    is an int32 array of the image's shape, 0 outside the mask.
    """
    image, mask = _volume_and_mask(image, mask)
    if not mask.any():
        raise ValueError("mask is empty: nothing to discretise")
    values = image[mask].astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("image holds NaN or infinite voxels inside the mask")
    if (n_bins is None) == (bin_width is None):
        raise ValueError(
            f"give exactly one of n_bins (fixed bin number) and bin_width (fixed bin size), got "
            f"n_bins={n_bins!r}, bin_width={bin_width!r}"
        )
    levels = np.zeros(image.shape, dtype=np.int32)
    if n_bins is not None:
        n_bins = check_int("n_bins", n_bins)
        if lower is not None or upper is not None:
            raise ValueError(
                "lower and upper apply to bin_width (fixed bin size) only; fixed bin number "
                f"uses the mask's range, got lower={lower!r}, upper={upper!r}"
            )
        lo, hi = values.min(), values.max()
        if hi == lo:
            levels[mask] = 1
            return levels, n_bins
        binned = np.floor(n_bins * (values - lo) / (hi - lo)).astype(np.int64) + 1
        levels[mask] = np.clip(binned, 1, n_bins)
        return levels, n_bins

    width = check_number("bin_width", bin_width, 0.0, low_open=True)
    lo = values.min() if lower is None else check_number("lower", lower)
    binned = np.floor((values - lo) / width).astype(np.int64) + 1
    if upper is not None:
        upper = check_number("upper", upper)
        if upper < lo:
            raise ValueError(f"upper must be >= lower ({lo:g}), got {upper!r}")
        n_levels = int(np.floor((upper - lo) / width)) + 1
    else:
        n_levels = int(max(binned.max(), 1))
    levels[mask] = np.clip(binned, 1, n_levels)
    return levels, n_levels


# --------------------------------------------------------------------------- matrices


def _pair_codes(levels: np.ndarray, mask: np.ndarray, n_levels: int, offset) -> np.ndarray:
    """Per anchor voxel ``x``: ``(level(x) - 1) L + level(x + offset) - 1`` when both voxels are
    in the image and the mask, else the sentinel ``L**2``."""
    sentinel = n_levels * n_levels
    codes = np.full(levels.shape, sentinel, dtype=np.int32)
    src, dst = [], []
    for d, n in zip(offset, levels.shape, strict=True):
        d = int(d)
        if abs(d) >= n:
            return codes
        src.append(slice(max(0, -d), n - max(0, d)))
        dst.append(slice(max(0, d), n - max(0, -d)))
    src, dst = tuple(src), tuple(dst)
    both = mask[src] & mask[dst]
    pair = (levels[src] - 1) * n_levels + (levels[dst] - 1)
    codes[src] = np.where(both, pair, sentinel)
    return codes


def glcm_matrices(image, mask, n_levels: int, distance: int = 1) -> np.ndarray:
    """Symmetric 3D co-occurrence matrices of the 13 directions (IBSI, "Grey level co-occurrence
    matrix"), shape ``(13, n_levels, n_levels)``, integer counts.

    ``image`` holds grey levels ``1..n_levels`` inside ``mask`` (None: every voxel); matrix ``k``
    belongs to ``DIRECTIONS[k]`` at Chebyshev distance ``distance`` and counts every voxel pair
    ``(x, x + distance * DIRECTIONS[k])`` with both voxels in the mask, once as ``(i, j)`` and
    once as ``(j, i)``.
    """
    distance = check_int("distance", distance)
    levels, mask, n_levels = _grey_levels(image, mask, n_levels)
    n_codes = n_levels * n_levels
    out = np.empty((len(DIRECTIONS), n_levels, n_levels), dtype=np.int64)
    for k, direction in enumerate(DIRECTIONS):
        codes = _pair_codes(levels, mask, n_levels, distance * direction)
        counts = np.bincount(codes.ravel(), minlength=n_codes + 1)[:n_codes]
        ordered = counts.reshape(n_levels, n_levels)
        out[k] = ordered + ordered.T
    return out


# --------------------------------------------------------------------------- features


def _entropy(p: np.ndarray, axis) -> np.ndarray:
    """Shannon entropy in bits along ``axis`` with ``0 log 0 = 0``."""
    log_p = np.log2(p, out=np.zeros_like(p), where=p > 0)
    return -(p * log_p).sum(axis=axis)


class _GLCMStats:
    """Probabilities, marginals and moments of ``n_groups`` co-occurrence matrices given by their
    non-zero cells; each feature reads the quantities it needs (computed once, lazily).

    A window's matrix has at most as many non-zero cells as the window has voxel pairs, far fewer
    than ``L**2`` at CT bin numbers, so only the four sums over cells (joint maximum, joint
    entropy, angular second moment, ``sum i j p``) run over the cells; every other feature is a
    function of the ``(n_groups, L)`` marginals ``p_{i.}``, ``p_{.j}`` and of the diagonal and
    cross-diagonal distributions ``p_{i-j}``, ``p_{i+j}`` (notation of the IBSI manual).

    ``group``, ``row``, ``col`` (0-based grey levels) and ``count`` describe the cells, sorted by
    ``group``; a group without cells has ``total == 0`` and gets NaN features.
    """

    def __init__(self, group, row, col, count, n_groups: int, n_levels: int):
        self.group = np.asarray(group, dtype=np.int64)
        self.row = np.asarray(row, dtype=np.int64)
        self.col = np.asarray(col, dtype=np.int64)
        self.n_groups, self.n_levels = int(n_groups), int(n_levels)
        count = np.asarray(count, dtype=np.float64)
        self.total = self._sum_over_cells(count)
        self.p = count / self.total[self.group]
        self.levels = np.arange(1, self.n_levels + 1, dtype=np.float64)
        self.k_diff = np.arange(self.n_levels, dtype=np.float64)
        self.k_sum = np.arange(2, 2 * self.n_levels + 1, dtype=np.float64)

    @classmethod
    def from_dense(cls, counts: np.ndarray) -> _GLCMStats:
        """From matrices ``(n_groups, L, L)``."""
        group, row, col = np.nonzero(counts)
        return cls(group, row, col, counts[group, row, col], counts.shape[0], counts.shape[-1])

    def _histogram(self, bin_of_cell: np.ndarray, n_bins: int) -> np.ndarray:
        flat = np.bincount(self.group * n_bins + bin_of_cell, self.p, self.n_groups * n_bins)
        return flat.astype(np.float64, copy=False).reshape(self.n_groups, n_bins)

    def _sum_over_cells(self, values: np.ndarray) -> np.ndarray:
        # astype: bincount of no cells at all returns integers
        sums = np.bincount(self.group, values, minlength=self.n_groups)
        return sums.astype(np.float64, copy=False)

    @cached_property
    def p_row(self) -> np.ndarray:  # p_{i.}
        return self._histogram(self.row, self.n_levels)

    @cached_property
    def p_col(self) -> np.ndarray:  # p_{.j}
        return self._histogram(self.col, self.n_levels)

    @cached_property
    def p_diff(self) -> np.ndarray:  # p_{i-j}(k), k = |i - j| = 0..L-1
        return self._histogram(np.abs(self.row - self.col), self.n_levels)

    @cached_property
    def p_sum(self) -> np.ndarray:  # p_{i+j}(k), k = i + j = 2..2L (stored from index 0)
        return self._histogram(self.row + self.col, 2 * self.n_levels - 1)

    @cached_property
    def joint_maximum(self) -> np.ndarray:
        out = np.zeros(self.n_groups)
        if self.p.size:
            first = np.flatnonzero(np.diff(self.group, prepend=-1))  # cells sorted by group
            out[self.group[first]] = np.maximum.reduceat(self.p, first)
        return out

    @cached_property
    def sum_ij_p(self) -> np.ndarray:  # sum_ij i j p_ij
        return self._sum_over_cells((self.row + 1.0) * (self.col + 1.0) * self.p)

    @cached_property
    def mu_row(self) -> np.ndarray:
        return self.p_row @ self.levels

    @cached_property
    def mu_col(self) -> np.ndarray:
        return self.p_col @ self.levels

    @cached_property
    def sd_row(self) -> np.ndarray:
        dev = self.levels - self.mu_row[:, None]
        return np.sqrt(np.maximum((dev**2 * self.p_row).sum(-1), 0.0))

    @cached_property
    def sd_col(self) -> np.ndarray:
        dev = self.levels - self.mu_col[:, None]
        return np.sqrt(np.maximum((dev**2 * self.p_col).sum(-1), 0.0))

    @cached_property
    def diff_average(self) -> np.ndarray:
        return self.p_diff @ self.k_diff

    @cached_property
    def sum_average(self) -> np.ndarray:
        return self.p_sum @ self.k_sum

    def sum_central_moment(self, order: int) -> np.ndarray:
        # i + j - mu_i. - mu_.j = k - mu_{x+y}: the cluster features are moments of p_{i+j}.
        dev = self.k_sum - self.sum_average[:, None]
        weighted = self.p_sum
        for _ in range(order):  # repeated products: much faster than a float power
            weighted = weighted * dev
        return weighted.sum(-1)

    @cached_property
    def hxy(self) -> np.ndarray:  # joint entropy
        return -self._sum_over_cells(self.p * np.log2(self.p))  # cells hold p > 0 only

    @cached_property
    def hx(self) -> np.ndarray:
        return _entropy(self.p_row, axis=-1)

    @cached_property
    def hy(self) -> np.ndarray:
        return _entropy(self.p_col, axis=-1)

    @cached_property
    def hxy1(self) -> np.ndarray:
        # IBSI: HXY1 = -sum_ij p_ij log2(p_i. p_.j). Summing over j first (sum_j p_ij = p_i.)
        # gives exactly HX + HY.
        return self.hx + self.hy

    @cached_property
    def hxy2(self) -> np.ndarray:
        # IBSI: HXY2 = -sum_ij p_i. p_.j log2(p_i. p_.j) = HX + HY as well (sum_j p_.j = 1).
        return self.hx + self.hy


def _correlation(s: _GLCMStats) -> np.ndarray:
    cross = s.sum_ij_p - s.mu_row * s.mu_col
    denom = s.sd_row * s.sd_col
    flat = denom <= 1e-12  # a single grey level: correlation undefined, 1 by convention
    return np.where(flat, 1.0, cross / np.where(flat, 1.0, denom))


def _information_correlation_1(s: _GLCMStats) -> np.ndarray:
    denom = np.maximum(s.hx, s.hy)
    flat = denom <= 1e-12  # a single grey level: undefined, 0 by convention
    return np.where(flat, 0.0, (s.hxy - s.hxy1) / np.where(flat, 1.0, denom))


def _information_correlation_2(s: _GLCMStats) -> np.ndarray:
    return np.sqrt(np.clip(1.0 - np.exp(-2.0 * (s.hxy2 - s.hxy)), 0.0, None))


#: IBSI feature -> its formula on the statistics of a batch of matrices. IBSI codes in comments.
_FEATURES = {
    "joint_maximum": lambda s: s.joint_maximum,  # GYBY
    "joint_average": lambda s: s.mu_row,  # 60VM
    "joint_variance": lambda s: ((s.levels - s.mu_row[:, None]) ** 2 * s.p_row).sum(-1),  # UR99
    "joint_entropy": lambda s: s.hxy,  # TU9B
    "difference_average": lambda s: s.diff_average,  # TF7R
    "difference_variance": lambda s: (  # D3YU
        (s.k_diff - s.diff_average[:, None]) ** 2 * s.p_diff
    ).sum(-1),
    "difference_entropy": lambda s: _entropy(s.p_diff, axis=-1),  # NTRS
    "sum_average": lambda s: s.sum_average,  # ZGXS
    "sum_variance": lambda s: s.sum_central_moment(2),  # OEEB
    "sum_entropy": lambda s: _entropy(s.p_sum, axis=-1),  # P6QZ
    "angular_second_moment": lambda s: s._sum_over_cells(s.p * s.p),  # 8ZQL
    "contrast": lambda s: s.p_diff @ s.k_diff**2,  # ACUI
    "dissimilarity": lambda s: s.p_diff @ s.k_diff,  # 8S9J
    "inverse_difference": lambda s: s.p_diff @ (1.0 / (1.0 + s.k_diff)),  # IB1Z
    "normalised_inverse_difference": lambda s: (  # NDRX
        s.p_diff @ (1.0 / (1.0 + s.k_diff / s.n_levels))
    ),
    "inverse_difference_moment": lambda s: s.p_diff @ (1.0 / (1.0 + s.k_diff**2)),  # WF0Z
    "normalised_inverse_difference_moment": lambda s: (  # 1QCO
        s.p_diff @ (1.0 / (1.0 + (s.k_diff / s.n_levels) ** 2))
    ),
    "inverse_variance": lambda s: s.p_diff[:, 1:] @ (1.0 / s.k_diff[1:] ** 2),  # E8JP
    "correlation": _correlation,  # NI2N
    "autocorrelation": lambda s: s.sum_ij_p,  # QWB0
    "cluster_tendency": lambda s: s.sum_central_moment(2),  # DG8W
    "cluster_shade": lambda s: s.sum_central_moment(3),  # 7NFM
    "cluster_prominence": lambda s: s.sum_central_moment(4),  # AE86
    "information_correlation_1": _information_correlation_1,  # R8DG
    "information_correlation_2": _information_correlation_2,  # JN9H
}


def _group_features(stats: _GLCMStats, names: Sequence[str]) -> np.ndarray:
    """Features ``(n_groups, len(names))`` of every matrix, NaN for matrices without pairs."""
    values = np.empty((stats.n_groups, len(names)))
    for column, name in enumerate(names):
        values[:, column] = _FEATURES[name](stats)
    values[stats.total <= 0] = np.nan
    return values


def _mean_over_directions(per_direction: np.ndarray) -> np.ndarray:
    """``(..., D, F)`` -> ``(..., F)``: mean over the directions that hold pairs (not NaN)."""
    present = ~np.isnan(per_direction)
    n_present = present.sum(axis=-2)
    total = np.where(present, per_direction, 0.0).sum(axis=-2)
    return np.where(n_present > 0, total / np.maximum(n_present, 1), np.nan)


def glcm_features(
    matrices, aggregation: str = "3d_merged", features: Sequence[str] | None = None
) -> dict[str, float]:
    """IBSI GLCM features of the direction matrices from :func:`glcm_matrices`.

    ``matrices``: ``(n_directions, L, L)`` non-negative counts (normally the 13 of
    :func:`glcm_matrices`; the grey levels are ``1..L`` and ``L`` is the ``N_g`` of the
    normalised inverse differences). ``aggregation``: ``"3d_merged"`` (sum the matrices, then
    features) or ``"3d_averaged"`` (features per direction, mean over the directions that hold
    pairs), IBSI "3D, merged" / "3D, averaged". ``features``: names from
    :data:`FEATURE_NAMES` (default: all), returned in that order as ``{name: value}``.

    Definitions (``p_ij`` the normalised matrix, ``p_{i-j}``/``p_{i+j}`` the diagonal and
    cross-diagonal probabilities, ``mu``/``sigma`` of the marginals, ``H`` entropies in bits):
    joint maximum ``max p``; joint average ``sum i p``; joint variance ``sum (i - mu)^2 p``;
    joint entropy ``H(p)``; difference average/variance/entropy and sum average/variance/entropy
    are mean, variance and entropy of ``p_{i-j}`` and ``p_{i+j}``; angular second moment
    ``sum p^2``; contrast ``sum (i-j)^2 p``; dissimilarity ``sum |i-j| p``; inverse difference
    ``sum p / (1 + |i-j|)`` (normalised: ``|i-j| / N_g``); inverse difference moment
    ``sum p / (1 + (i-j)^2)`` (normalised: ``(i-j)^2 / N_g^2``); inverse variance
    ``sum_{i != j} p / (i-j)^2``; correlation ``(sum i j p - mu_i mu_j) / (sigma_i sigma_j)``;
    autocorrelation ``sum i j p``; cluster tendency/shade/prominence
    ``sum (i + j - mu_i - mu_j)^{2,3,4} p``; information correlation 1
    ``(HXY - HXY1) / max(HX, HY)`` and 2 ``sqrt(1 - exp(-2 (HXY2 - HXY)))``. See the module
    docstring for the values of degenerate (single grey level) matrices.
    """
    aggregation = _aggregation(aggregation)
    names = _feature_list(features)
    counts = np.asarray(matrices, dtype=np.float64)
    if counts.ndim != 3 or counts.shape[1] != counts.shape[2] or counts.shape[0] < 1:
        raise ValueError(f"matrices must have shape (n_directions, L, L), got {np.shape(matrices)}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("matrices must hold non-negative finite counts")
    if counts.sum() <= 0:
        raise ValueError("matrices hold no voxel pairs (is the mask empty or one voxel thick?)")
    if aggregation == "3d_merged":
        values = _group_features(_GLCMStats.from_dense(counts.sum(axis=0, keepdims=True)), names)
    else:
        values = _mean_over_directions(_group_features(_GLCMStats.from_dense(counts), names))
    return {name: float(v) for name, v in zip(names, values.reshape(-1), strict=True)}
