"""Dense sampling of the IBSI GLCM features of :mod:`medclust.features.glcm` in local windows,
for population studies of routine CT.

Study. The population-clustering paper of study 05 (Sec. 2, "Feature Extraction", item 1)
"densely sample[s] Haralick features of orientation independent Gray-Level Co-occurrence
Matrices"; :func:`dense_haralick` does that: centres on a regular grid inside the mask, one
window of fixed physical size around each centre, GLCM features that aggregate all 13 3D
directions (hence independent of orientation up to the voxel lattice).

Grey levels, the 13 directions, pair counting, aggregation and the values of degenerate
(single-level) windows follow the conventions of :mod:`medclust.features.glcm`; a window
without any voxel pair inside the mask has NaN features.

Dense sampling (:func:`dense_haralick`). A window of ``window_mm`` has half-width
``r_a = floor(window_mm / (2 s_a))`` voxels along axis ``a`` of spacing ``s_a``, i.e.
``2 r_a + 1`` voxels (the odd count nearest to ``window_mm / s_a``, rounding up at ties), so the
window is symmetric about its centre and a 90-degree rotation or a flip of the volume maps
windows onto windows. Windows that cross the image border are truncated (only in-image pairs
count), which equals cropping the window out of the image. Grid centres lie at
``step_a // 2 + k step_a`` along each axis, ``step_a = max(1, round_half_up(step_mm / s_a))``,
and are kept where the mask is set; the grid is anchored at the first voxel so that volumes in
a common reference space (after spatial normalisation) share it.

Implementation of :func:`dense_haralick`: the grey levels are padded by the window radius with
an extra level that marks voxels outside the mask or the image; for all centres of a chunk at
once the window voxels are gathered and every voxel pair of a window (a fixed list of index
pairs, 13 directions) is coded as its unordered pair of levels ``{lo, hi}`` (and its direction
for ``"3d_averaged"``). Sorting each window's codes (16-bit integers up to ``L = 255`` merged,
``L = 70`` averaged) makes equal codes adjacent: the runs are the non-zero cells of the
window's matrices with their counts, found without any ``L x L`` array. The features are then
sums over each matrix's cells (segmented reductions), rewritten for symmetric matrices (see
:class:`_PairStats`), with marginal entropies from integer counts; only the requested features
are computed and there is no Python loop over centres. ``glcm_features`` of
:mod:`medclust.features.glcm` computes the same features from dense matrices, the reference the
tests hold it to.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from medclust.features.glcm import (
    DIRECTIONS,
    HARALICK_FEATURES,
    _aggregation,
    _feature_list,
    _grey_levels,
    _mean_over_directions,
)
from medclust.validation import check_int, check_number

log = logging.getLogger(__name__)

#: Bound on the voxel pairs (centres x pairs per window) that dense sampling handles at once:
#: small enough for the per-cell arrays to stay in cache (faster than larger chunks).
_MAX_PAIRS_PER_CHUNK = 65_536


# --------------------------------------------------------------------------- checks


def _round_half_up(v: float) -> int:
    # round() rounds half to even; 2.5 mm steps at 1 mm and 3.5 mm at 1 mm must behave alike.
    return int(math.floor(v + 0.5))


def _spacing(spacing) -> np.ndarray:
    try:
        sp = np.asarray(spacing, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be 3 positive finite numbers, got {spacing!r}") from None
    if sp.shape != (3,) or not (np.all(np.isfinite(sp)) and np.all(sp > 0)):
        raise ValueError(f"spacing must be 3 positive finite numbers, got {spacing!r}")
    return sp


def window_radius_voxels(window_mm: float, spacing) -> tuple[int, int, int]:
    """Half-widths ``r_a = floor(window_mm / (2 s_a))``: the window spans ``2 r_a + 1`` voxels,
    the odd count nearest to ``window_mm / s_a`` (e.g. 10 mm at ``(1, 1, 2.5)`` mm gives
    ``(5, 5, 2)``, i.e. 11 x 11 x 5 voxels). ``ValueError`` naming ``window_mm`` when an axis
    would get a single voxel (no co-occurrence along it)."""
    sp = _spacing(spacing)
    size = check_number("window_mm", window_mm, 0.0, low_open=True)
    # A hair of slack so that e.g. 6 mm at 1.2 mm (5 voxels) survives float rounding.
    radius = tuple(int(math.floor(size / (2 * s) + 1e-9)) for s in sp)
    if min(radius) < 1:
        raise ValueError(
            f"window_mm={size:g} spans a single voxel along some axis at spacing "
            f"{tuple(float(s) for s in sp)} mm; it must cover at least 3 voxels per axis "
            f"(>= {2 * sp.max():g} mm)"
        )
    return radius


def grid_step_voxels(step_mm: float, spacing) -> tuple[int, int, int]:
    """Grid steps ``max(1, round_half_up(step_mm / s_a))`` voxels per axis."""
    sp = _spacing(spacing)
    step = check_number("step_mm", step_mm, 0.0, low_open=True)
    return tuple(max(1, _round_half_up(step / s)) for s in sp)


def grid_centres(mask, spacing, step_mm: float) -> np.ndarray:
    """Centres ``step_a // 2 + k step_a`` (voxel indices) of a regular grid where ``mask`` is set,
    shape ``(N, 3)``, in C order."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3D array, got shape {mask.shape}")
    steps = grid_step_voxels(step_mm, spacing)
    axes = [np.arange(st // 2, n, st) for st, n in zip(steps, mask.shape, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid[mask[grid[:, 0], grid[:, 1], grid[:, 2]]]


class _CellCodes:
    """Lookup tables of the cell codes of :func:`dense_haralick`. The unordered pair of 0-based
    grey levels ``lo <= hi`` of direction ``d`` has the code ``(d S + hi) S + lo``, ``S = L + 1``
    (``d = 0`` in merged matrices); the level ``L`` marks a voxel outside the mask or the image.
    Whatever a feature needs of a cell is read from a table at its code."""

    def __init__(self, n_levels: int, n_directions: int):
        self.n_levels = n_levels
        stride = n_levels + 1
        self.n_codes = n_directions * stride * stride
        self.hi, self.lo = np.divmod(np.arange(self.n_codes) % (stride * stride), stride)
        self.valid = self.hi < n_levels  # and lo <= hi: both voxels inside
        self.k_diff = self.hi - self.lo  # |i - j|: the bin of p_{i-j}
        self.k_sum = self.lo + self.hi  # i + j - 2: the bin of p_{i+j}
        self._tables: dict[str, np.ndarray] = {}

    def table(self, name: str) -> np.ndarray:
        """The float table ``name`` of :data:`_CELL_TABLES`, built once."""
        if name not in self._tables:
            self._tables[name] = np.asarray(_CELL_TABLES[name](self), dtype=np.float64)
        return self._tables[name]

    def of_diff(self, f) -> np.ndarray:
        """``f(|i - j|)`` at every code (the dense path's ``f(k_diff)`` values)."""
        k = np.arange(self.n_levels, dtype=np.float64)
        return f(k)[np.minimum(self.k_diff, self.n_levels - 1)]


def _inverse_square(k: np.ndarray) -> np.ndarray:
    return np.divide(1.0, k**2, out=np.zeros_like(k), where=k > 0)


#: Per-cell quantities of :class:`_CellCodes`, by name: 1-based grey levels ``i = lo + 1``,
#: ``j = hi + 1``, ``N_g = L``.
_CELL_TABLES = {
    "sum": lambda c: c.k_sum + 2.0,  # i + j
    "diff": lambda c: c.k_diff,  # |i - j|
    # A cell's mass w lies in one matrix cell on the diagonal (M[i, i] = 2 n of T = 2 P) and
    # in two halves off it (M[i, j] = M[j, i] = n).
    "share": lambda c: np.where(c.k_diff == 0, 1.0, 0.5),
    "off_diagonal": lambda c: c.k_diff > 0,
    "autocorrelation": lambda c: (c.lo + 1.0) * (c.hi + 1.0),
    "contrast": lambda c: c.of_diff(lambda k: k**2),
    "inverse_difference": lambda c: c.of_diff(lambda k: 1.0 / (1.0 + k)),
    "normalised_inverse_difference": lambda c: c.of_diff(lambda k: 1.0 / (1.0 + k / c.n_levels)),
    "inverse_difference_moment": lambda c: c.of_diff(lambda k: 1.0 / (1.0 + k**2)),
    "normalised_inverse_difference_moment": lambda c: c.of_diff(
        lambda k: 1.0 / (1.0 + (k / c.n_levels) ** 2)
    ),
    "inverse_variance": lambda c: c.of_diff(_inverse_square),
}


class _PairStats:
    """Statistics of symmetric co-occurrence matrices given as lists of unordered grey-level
    pairs (cells) with their pair counts: the fast path of :func:`dense_haralick`
    (``glcm._GLCMStats``, on dense matrices, is the reference).

    A matrix of ``P`` voxel pairs is ``M = C + C^T``, of total ``T = 2 P``; a cell ``{lo, hi}``
    of ``n`` pairs puts ``n`` into ``M[lo, hi]`` and ``M[hi, lo]``, or ``2 n`` into
    ``M[lo, lo]`` when ``lo == hi``. With the cell masses ``w = n / P`` (summing to 1), the sum
    over the matrix of ``f(i, j) p_ij`` for a symmetric ``f`` is ``sum_cells w f(lo, hi)``, so
    the diagonal (``p_{i-j}``) and cross-diagonal (``p_{i+j}``) moments are moments of
    ``|i - j|`` and ``i + j`` under ``w``, with no ``L x L`` array. Symmetry gives more: with
    ``d_i = i - mu``, ``d_i + d_j = i + j - 2 mu`` and ``d_j - d_i = j - i``, so the joint
    variance is ``(sum variance + contrast) / 4`` and the correlation
    ``(sum variance - contrast) / (sum variance + contrast)``. An entropy of a histogram ``c``
    (total ``Z``) is ``sum_bins (c / Z) (log2 Z - log2 c)``, exactly 0 for a single bin as in
    the reference.

    The matrices holding cells are *segments*: ``first`` (each segment's first cell) and
    ``size`` (its number of cells) over the cells ``key`` (codes of :class:`_CellCodes`) and
    ``count``; ``log2_table[c] = log2(c)`` for every count ``c`` (``log2(0) := 0``);
    ``scratch``: zeros, at least ``len(first) * (2 L - 1)``, handed back zeroed.
    """

    def __init__(self, first, size, key, count, codes: _CellCodes, log2_table, scratch):
        self.first, self.size = first, size
        self.key, self.codes = key, codes
        self.count = count
        self.log2_table = log2_table
        self.scratch = scratch
        self.pairs = np.add.reduceat(count, first)  # P
        self.w = count / self._spread(self.pairs.astype(np.float64))
        self._cells: dict[str, np.ndarray] = {}

    def _spread(self, per_segment: np.ndarray) -> np.ndarray:
        """A per-segment value at every cell."""
        return np.repeat(per_segment, self.size)

    def _sum(self, values: np.ndarray) -> np.ndarray:
        """Per segment: ``sum_cells w * values``."""
        return np.add.reduceat(self.w * values, self.first)

    def cell(self, name: str) -> np.ndarray:
        """The table ``name`` of :data:`_CELL_TABLES` at every cell."""
        if name not in self._cells:
            self._cells[name] = self.codes.table(name)[self.key]
        return self._cells[name]

    def mean_of(self, name: str) -> np.ndarray:
        """Per segment: ``sum_ij table(i, j) p_ij`` (the table read once, not kept)."""
        return self._sum(self.codes.table(name)[self.key])

    def _histogram_entropy(self, bins: Sequence[np.ndarray], n_bins: int) -> np.ndarray:
        """Entropy in bits of the per-segment histograms where each cell adds its pair count
        ``n`` to bin ``bins[e][cell]`` for each ``e`` (a cell's two rows for ``p_{i.}``), of
        total ``Z = len(bins) P``: ``sum_bins (c / Z) (log2 Z - log2 c)``."""
        n_segments = len(self.first)
        base = self._spread(np.arange(0, n_segments * n_bins, n_bins))
        flat = [base + b for b in bins]
        # Counted in a zeroed scratch array, zeroed again after use: no large allocation.
        hist = self.scratch[: n_segments * n_bins]
        for entry in flat:
            np.add.at(hist, entry, self.count)
        total = len(bins) * self.pairs
        log_total = self.log2_table[total]
        if hist.size <= len(self.key) * len(bins):
            # Segments with many cells (merged windows): sum over the bins.
            dense = hist.reshape(n_segments, n_bins)
            entropy = ((log_total[:, None] - self.log2_table[dense]) * dense).sum(axis=1) / total
            hist[:] = 0
            return entropy
        # Segments with few cells (one direction's matrix): each bin's term is spread over
        # its cells, w / len(bins) (log2 Z - log2 c) per cell and bin.
        log_total = self._spread(log_total)
        terms = log_total - self.log2_table[hist[flat[0]]]
        for more in flat[1:]:
            terms += log_total - self.log2_table[hist[more]]
        for entry in flat:
            hist[entry] = 0
        return self._sum(terms) / len(bins)

    @cached_property
    def sum_average(self) -> np.ndarray:
        return self._sum(self.cell("sum"))

    @cached_property
    def sum_deviation(self) -> np.ndarray:  # i + j - mu_{x+y} of every cell
        return self.cell("sum") - self._spread(self.sum_average)

    def sum_central_moment(self, order: int) -> np.ndarray:
        # i + j - mu_i. - mu_.j = k - mu_{x+y}: the cluster features are moments of p_{i+j}.
        dev = self.sum_deviation
        weighted = dev
        for _ in range(order - 1):  # repeated products: much faster than a float power
            weighted = weighted * dev
        return self._sum(weighted)

    @cached_property
    def sum_variance(self) -> np.ndarray:
        return self.sum_central_moment(2)

    @cached_property
    def contrast(self) -> np.ndarray:
        return self.mean_of("contrast")

    @cached_property
    def joint_variance(self) -> np.ndarray:
        return (self.sum_variance + self.contrast) / 4

    @cached_property
    def diff_average(self) -> np.ndarray:
        return self._sum(self.cell("diff"))

    @cached_property
    def difference_variance(self) -> np.ndarray:
        dev = self.cell("diff") - self._spread(self.diff_average)
        return self._sum(dev * dev)

    @cached_property
    def joint_maximum(self) -> np.ndarray:
        return np.maximum.reduceat(self.w * self.cell("share"), self.first)

    @cached_property
    def angular_second_moment(self) -> np.ndarray:
        # sum_ij p_ij^2: an off-diagonal cell gives 2 (w / 2)^2, a diagonal one w^2.
        return self._sum(self.w * self.cell("share"))

    @cached_property
    def hxy(self) -> np.ndarray:
        # Joint entropy sum_cells w (log2 T - log2 M_ij): M_ij = 2 n of T = 2 P on the
        # diagonal, n off it, i.e. w (log2 P - log2 n), plus w off the diagonal.
        log_ratio = self._spread(self.log2_table[self.pairs]) - self.log2_table[self.count]
        return self._sum(log_ratio + self.cell("off_diagonal"))

    @cached_property
    def hx(self) -> np.ndarray:  # entropy of p_{i.} (= HY, the matrix is symmetric)
        # Row i of M holds the n of every cell with lo == i and of every cell with hi == i.
        rows = [self.codes.lo[self.key], self.codes.hi[self.key]]
        return self._histogram_entropy(rows, self.codes.n_levels)

    @cached_property
    def difference_entropy(self) -> np.ndarray:
        return self._histogram_entropy([self.codes.k_diff[self.key]], self.codes.n_levels)

    @cached_property
    def sum_entropy(self) -> np.ndarray:
        return self._histogram_entropy([self.codes.k_sum[self.key]], 2 * self.codes.n_levels - 1)


def _pair_correlation(s: _PairStats) -> np.ndarray:
    variance = s.joint_variance  # of p_{i.} = p_{.j}: sd_i sd_j = variance
    flat = variance <= 1e-12  # a single grey level: correlation undefined, 1 by convention
    return np.where(flat, 1.0, (s.sum_variance - s.contrast) / 4 / np.where(flat, 1.0, variance))


def _pair_information_correlation_1(s: _PairStats) -> np.ndarray:
    # (HXY - HXY1) / max(HX, HY) with HX = HY and HXY1 = HX + HY (see glcm._GLCMStats.hxy1).
    flat = s.hx <= 1e-12  # a single grey level: undefined, 0 by convention
    return np.where(flat, 0.0, (s.hxy - 2 * s.hx) / np.where(flat, 1.0, s.hx))


def _pair_information_correlation_2(s: _PairStats) -> np.ndarray:
    return np.sqrt(np.clip(1.0 - np.exp(-2.0 * (2 * s.hx - s.hxy)), 0.0, None))


#: IBSI feature -> its formula on the pair lists of :class:`_PairStats`: the definitions of
#: ``glcm._FEATURES`` (IBSI codes there), rewritten for symmetric matrices.
_PAIR_FEATURES = {
    "joint_maximum": lambda s: s.joint_maximum,
    "joint_average": lambda s: s.sum_average / 2,  # mu_i. = mu_.j
    "joint_variance": lambda s: s.joint_variance,
    "joint_entropy": lambda s: s.hxy,
    "difference_average": lambda s: s.diff_average,
    "difference_variance": lambda s: s.difference_variance,
    "difference_entropy": lambda s: s.difference_entropy,
    "sum_average": lambda s: s.sum_average,
    "sum_variance": lambda s: s.sum_variance,
    "sum_entropy": lambda s: s.sum_entropy,
    "angular_second_moment": lambda s: s.angular_second_moment,
    "contrast": lambda s: s.contrast,
    "dissimilarity": lambda s: s.diff_average,
    "inverse_difference": lambda s: s.mean_of("inverse_difference"),
    "normalised_inverse_difference": lambda s: s.mean_of("normalised_inverse_difference"),
    "inverse_difference_moment": lambda s: s.mean_of("inverse_difference_moment"),
    "normalised_inverse_difference_moment": lambda s: s.mean_of(
        "normalised_inverse_difference_moment"
    ),
    "inverse_variance": lambda s: s.mean_of("inverse_variance"),
    "correlation": _pair_correlation,
    "autocorrelation": lambda s: s.mean_of("autocorrelation"),
    "cluster_tendency": lambda s: s.sum_variance,
    "cluster_shade": lambda s: s.sum_central_moment(3),
    "cluster_prominence": lambda s: s.sum_central_moment(4),
    "information_correlation_1": _pair_information_correlation_1,
    "information_correlation_2": _pair_information_correlation_2,
}


def _key_dtype(n_keys: int) -> type:
    """The smallest unsigned integer type that holds ``0..n_keys - 1`` (uint16 sorts fastest)."""
    for dtype in (np.uint16, np.uint32):
        if n_keys <= np.iinfo(dtype).max + 1:
            return dtype
    return np.uint64


class _WindowPairs:
    """The voxel pairs of a window of ``2 r + 1`` voxels per axis at ``distance``: anchor and
    partner of each as an index into the window's voxels (C order), direction by direction
    (the anchors ``x`` with ``x`` and ``x + distance * DIRECTIONS[k]`` both in the window, a box
    of ``2 r_a + 1 - |offset_a|`` voxels per axis); ``block_starts`` are the first pair of each
    direction."""

    def __init__(self, radius: Sequence[int], distance: int):
        shape = tuple(2 * int(r) + 1 for r in radius)
        index = np.arange(math.prod(shape)).reshape(shape)
        anchors, partners = [], []
        for direction in DIRECTIONS:
            offset = [distance * int(d) for d in direction]
            pairs = zip(offset, shape, strict=True)
            anchors.append(index[tuple(slice(max(0, -o), n - max(0, o)) for o, n in pairs)])
            pairs = zip(offset, shape, strict=True)
            partners.append(index[tuple(slice(max(0, o), n - max(0, -o)) for o, n in pairs)])
        sizes = [a.size for a in anchors]
        self.anchors = np.concatenate([a.ravel() for a in anchors])
        self.partners = np.concatenate([p.ravel() for p in partners])
        self.direction = np.repeat(np.arange(len(DIRECTIONS)), sizes)
        self.block_starts = np.cumsum([0, *sizes[:-1]])

    def __len__(self) -> int:
        return len(self.anchors)


def _window_features(
    voxels: np.ndarray,
    pairs: _WindowPairs,
    codes: _CellCodes,
    merge: bool,
    names: Sequence[str],
    log2_table: np.ndarray,
    scratch: np.ndarray,
) -> np.ndarray:
    """Features ``(N, n_out, F)`` of the windows whose voxels (0-based levels, ``L`` outside)
    are the rows of ``voxels``: ``n_out`` is 1 when ``merge``, else one row per direction; NaN
    where there is no pair."""
    n_windows, n_pairs = len(voxels), len(pairs)
    stride = codes.n_levels + 1
    a, b = voxels[:, pairs.anchors], voxels[:, pairs.partners]
    keys = np.maximum(a, b)
    keys *= stride
    keys += np.minimum(a, b)
    blocks = np.zeros(1, dtype=np.intp)  # each window's matrices: where their pairs start
    if not merge:
        keys += (pairs.direction * stride * stride).astype(keys.dtype)
        blocks = pairs.block_starts
    # Sorting a window's codes puts equal ones together: each run is a cell of a matrix, and
    # direction k keeps its place (its codes lie in [k S^2, (k + 1) S^2)).
    keys.sort(axis=1)
    flat = keys.ravel()
    group_start = (np.arange(0, flat.size, n_pairs)[:, None] + blocks).ravel()
    run_start = np.empty(flat.size, dtype=bool)
    run_start[0] = True
    np.not_equal(flat[1:], flat[:-1], out=run_start[1:])
    run_start[group_start] = True
    first = np.flatnonzero(run_start)
    count = np.diff(first, append=flat.size)
    key = flat[first].astype(np.intp)
    group_first = np.searchsorted(first, group_start)
    valid = codes.valid[key]
    if not valid.all():  # drop the pairs with a voxel outside the mask or the image
        group_first = (np.cumsum(valid) - valid)[group_first]
        key, count = key[valid], count[valid]
    size = np.diff(group_first, append=len(key))
    values = np.full((len(group_start), len(names)), np.nan)
    held = np.flatnonzero(size)  # matrices that hold pairs
    if len(held):
        stats = _PairStats(group_first[held], size[held], key, count, codes, log2_table, scratch)
        for column, name in enumerate(names):
            values[held, column] = _PAIR_FEATURES[name](stats)
    return values.reshape(n_windows, len(blocks), len(names))


def dense_haralick(
    image,
    mask,
    spacing,
    window_mm: float,
    step_mm: float,
    n_levels: int,
    features: Sequence[str] = HARALICK_FEATURES,
    aggregation: str = "3d_merged",
    distance: int = 1,
    centres=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Densely sampled, orientation-independent Haralick features (study 05, Sec. 2, "Feature
    Extraction" 1: "We densely sample Haralick features of orientation independent Gray-Level
    Co-occurrence Matrices").

    Parameters
    ----------
    image : (X, Y, Z) array of grey levels ``1..n_levels`` inside ``mask`` (``glcm.discretise``).
    mask : (X, Y, Z) array or None (every voxel). Pairs count only with both voxels inside.
    spacing : voxel spacing ``(sx, sy, sz)`` in mm.
    window_mm : window edge in mm; ``2 r_a + 1`` voxels per axis (:func:`window_radius_voxels`).
    step_mm : grid step in mm (:func:`grid_step_voxels`); ignored when ``centres`` is given.
    n_levels : number of grey levels ``L``.
    features : names from ``glcm.FEATURE_NAMES``; default ``glcm.HARALICK_FEATURES``
        (Haralick's f1-f13).
    aggregation : ``"3d_merged"`` (default; sum of the 13 window matrices) or ``"3d_averaged"``.
    distance : Chebyshev distance of the voxel pairs (IBSI ``delta``), must be < window size.
    centres : optional ``(N, 3)`` voxel indices to use instead of the grid (inside the image).

    Returns
    -------
    centres : ``(N, 3)`` int64 voxel indices (the grid of :func:`grid_centres` by default).
    values : ``(N, len(features))`` float64, columns in the order of ``features``; a row is NaN
        where the window holds no voxel pair inside the mask.

    Row ``n`` equals ``glcm_features(glcm_matrices(crop), aggregation)`` of the window cropped
    out of the image (and mask) around ``centres[n]``, to rounding (~1e-12 relative); see the
    module docstring for the window and grid geometry, the values of constant windows and the
    implementation. Cost: a sort of each window's pair codes, then work proportional to the
    distinct pairs of levels; on one core the 3539 windows of 5 x 5 x 3 voxels (56 levels) of
    ``benchmarks/haralick_benchmark.py`` take ~0.04 s merged and ~0.12 s averaged, 15-30 times
    less than ``mahotas.features.haralick`` on the same windows.
    """
    names = _feature_list(features)
    aggregation = _aggregation(aggregation)
    distance = check_int("distance", distance)
    radius = window_radius_voxels(window_mm, spacing)
    if 2 * min(radius) + 1 <= distance:
        raise ValueError(
            f"window_mm={window_mm!r} gives windows of {tuple(2 * r + 1 for r in radius)} voxels, "
            f"too small for pairs at distance={distance}"
        )
    levels, mask, n_levels = _grey_levels(image, mask, n_levels)
    if centres is None:
        centres = grid_centres(mask, spacing, step_mm)
    else:
        centres = _centres(centres, levels.shape)
    merge = aggregation == "3d_merged"
    log.debug(
        "dense_haralick: %d centres, window radius %s voxels, L=%d, %s",
        len(centres),
        radius,
        n_levels,
        aggregation,
    )
    values = np.empty((len(centres), len(names)))
    if len(centres) == 0:
        return centres.reshape(0, 3), values
    # 0-based levels, and the level n_levels for voxels outside the mask or (padding by the
    # window radius) outside the image: a pair with such a voxel is dropped after counting.
    codes = _CellCodes(n_levels, 1 if merge else len(DIRECTIONS))
    dtype = _key_dtype(codes.n_codes)
    padded = np.pad(
        np.where(mask, levels - 1, n_levels).astype(dtype),
        [(r, r) for r in radius],
        constant_values=n_levels,
    )
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
    window = np.indices([2 * r + 1 for r in radius]).reshape(3, -1).T @ strides
    pairs = _WindowPairs(radius, distance)
    # log2 of every count a window's histograms can hold (up to T = 2 x its pairs), log2(0) := 0.
    log2_table = np.concatenate([[0.0], np.log2(np.arange(1, 2 * len(pairs) + 1))])
    starts = centres @ strides  # a centre in the image is the first voxel of its padded window
    flat = padded.ravel()
    chunk = max(1, _MAX_PAIRS_PER_CHUNK // len(pairs))
    n_matrices = min(chunk, len(centres)) * (1 if merge else len(DIRECTIONS))
    scratch = np.zeros(n_matrices * (2 * n_levels - 1), dtype=np.intp)  # histograms' bins
    for lo in range(0, len(centres), chunk):
        voxels = flat[starts[lo : lo + chunk, None] + window]
        per_matrix = _window_features(voxels, pairs, codes, merge, names, log2_table, scratch)
        values[lo : lo + chunk] = per_matrix[:, 0] if merge else _mean_over_directions(per_matrix)
    return centres, values


def _centres(centres, shape) -> np.ndarray:
    arr = np.asarray(centres)
    if arr.ndim != 2 or arr.shape[1] != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"centres must be an (N, 3) integer array, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64)
    if np.any(arr < 0) or np.any(arr >= np.asarray(shape)):
        raise ValueError(f"centres must lie inside the image of shape {shape}")
    return arr
