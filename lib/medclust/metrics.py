"""Clustering metrics shared by every study.

- ``cluster_accuracy``: unsupervised clustering accuracy, the best one-to-one matching of
  clusters to classes (Hungarian algorithm, as in DEC, Xie et al. 2016, Eq. 10). With more
  clusters than classes the unmatched clusters count as errors; with fewer, the unmatched
  classes do. ``purity`` is the many-to-one variant (each cluster takes its majority class).
- ``nmi``: normalised mutual information, I(Y; C) / mean(H(Y), H(C)) with the arithmetic mean
  by default (scikit-learn's ``average_method='arithmetic'``); other normalisations are
  selectable because the papers differ.
- ``ari``, ``silhouette`` and ``davies_bouldin`` wrap scikit-learn.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm


def _as_labels(y, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {y.shape}")
    return y


def contingency(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts table (clusters x classes) with the cluster and class values it is indexed by."""
    y_true, y_pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.size} vs {y_pred.size}")
    classes, t = np.unique(y_true, return_inverse=True)
    clusters, p = np.unique(y_pred, return_inverse=True)
    table = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    return table, clusters, classes


def cluster_mapping(y_true, y_pred) -> dict:
    """The one-to-one cluster -> class matching that maximises agreement (Hungarian)."""
    table, clusters, classes = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {clusters[r].item(): classes[c].item() for r, c in zip(rows, cols, strict=True)}


def cluster_accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose cluster is matched to their class by the best one-to-one map."""
    table, _, _ = contingency(y_true, y_pred)
    if table.sum() == 0:
        raise ValueError("cluster_accuracy needs at least one sample")
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def purity(y_true, y_pred) -> float:
    """Fraction of samples in their cluster's majority class (many-to-one mapping)."""
    table, _, _ = contingency(y_true, y_pred)
    return float(table.max(axis=1).sum() / table.sum())


def nmi(y_true, y_pred, average_method: str = "arithmetic") -> float:
    return float(
        skm.normalized_mutual_info_score(
            _as_labels(y_true, "y_true"),
            _as_labels(y_pred, "y_pred"),
            average_method=average_method,
        )
    )


def ari(y_true, y_pred) -> float:
    return float(
        skm.adjusted_rand_score(_as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred"))
    )


def silhouette(X, labels, sample_size: int | None = 5000, seed: int = 0) -> float:
    """Mean silhouette (Euclidean); on more than ``sample_size`` points a seeded subsample,
    since the exact score is quadratic in the number of points. NaN for a single cluster."""
    X, labels = np.asarray(X), _as_labels(labels, "labels")
    if np.unique(labels).size < 2 or np.unique(labels).size >= len(labels):
        return float("nan")
    if sample_size is not None and len(labels) > sample_size:
        return float(skm.silhouette_score(X, labels, sample_size=sample_size, random_state=seed))
    return float(skm.silhouette_score(X, labels))


def davies_bouldin(X, labels) -> float:
    """Davies-Bouldin index (lower is better): the mean over clusters of the largest
    ``(S_k + S_l) / |c_k - c_l|``, ``S_k`` the mean distance of cluster ``k``'s points to its
    centroid ``c_k`` (scikit-learn's ``davies_bouldin_score``, in a few NumPy operations so
    that bootstrap loops stay fast; 0 when every point sits on its centroid or all centroids
    coincide, as there). NaN for a single cluster or one cluster per point (where
    scikit-learn refuses the score)."""
    labels = _as_labels(labels, "labels")
    clusters, codes = np.unique(labels, return_inverse=True)
    if not 2 <= clusters.size < len(labels):
        return float("nan")
    X = np.asarray(X, dtype=np.float64)
    counts = np.bincount(codes)
    centroids = np.stack([np.bincount(codes, weights=col) for col in X.T], axis=1)
    centroids /= counts[:, None]
    spread = np.bincount(codes, weights=np.linalg.norm(X - centroids[codes], axis=1)) / counts
    gaps = np.linalg.norm(centroids[:, None] - centroids[None], axis=2)
    if np.allclose(spread, 0) or np.allclose(gaps, 0):
        return 0.0
    gaps[gaps == 0] = np.inf
    return float(np.mean(np.max((spread[:, None] + spread[None]) / gaps, axis=1)))


def external_scores(y_true, y_pred) -> dict[str, float]:
    """ACC, NMI and ARI of a clustering against known classes."""
    return {
        "acc": cluster_accuracy(y_true, y_pred),
        "nmi": nmi(y_true, y_pred),
        "ari": ari(y_true, y_pred),
    }


def internal_scores(X, labels, seed: int = 0) -> dict[str, float]:
    """Silhouette and Davies-Bouldin of a clustering of the points ``X``."""
    return {
        "silhouette": silhouette(X, labels, seed=seed),
        "davies_bouldin": davies_bouldin(X, labels),
    }


def bootstrap_statistic(
    n: int,
    statistic,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    correct_bias: bool = False,
    strata=None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(idx)``, where each of ``n_boot`` resamples
    ``idx`` draws ``n`` of the indices ``0 .. n-1`` with replacement. Returns the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles.

    ``correct_bias`` shifts both ends by the bootstrap estimate of the bias, the mean over the
    resamples minus ``statistic(arange(n))`` (Efron and Tibshirani, *An introduction to the
    bootstrap*, 1993, Sec. 10.2). Scores that match clusters to classes or count shared
    information rise on resamples -- duplicated samples make the contingency table lumpier --
    so for a clustering near chance the plain percentile interval can lie wholly above the
    score itself (cluster accuracy 0.247, interval [0.252, 0.289] on 400 scans).

    ``strata`` (one label per index) resamples within each stratum: ``idx`` then holds, stratum
    by stratum in order of first appearance, as many indices of that stratum as it has (e.g.
    the annotated slices of each specimen, so that every specimen keeps its share).
    """
    if not 0 < level < 1:
        raise ValueError(f"need 0 < level < 1, got {level}")
    stats = np.array([statistic(idx) for idx in bootstrap_draws(n, n_boot, seed, strata)])
    return percentile_interval(stats, level, statistic(np.arange(n)) if correct_bias else None)


def bootstrap_draws(n: int, n_boot: int = 1000, seed: int = 0, strata=None) -> np.ndarray:
    """The resamples of :func:`bootstrap_statistic`: ``(n_boot, n)`` indices drawn with
    replacement from ``0 .. n-1`` (within each stratum when ``strata`` is given)."""
    if n_boot < 1 or n < 1:
        raise ValueError(f"need n_boot >= 1 and n >= 1, got {n_boot}, {n}")
    rng = np.random.default_rng(seed)
    if strata is None:
        return np.stack([rng.integers(0, n, n) for _ in range(n_boot)])
    groups = _strata(strata, n)
    return np.stack(
        [
            np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
            for _ in range(n_boot)
        ]
    )


def percentile_interval(stats, level: float = 0.95, point: float | None = None):
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of bootstrap ``stats``;
    given the statistic on the full sample, ``point``, both ends move by the bootstrap bias
    ``mean(stats) - point`` (:func:`bootstrap_statistic`)."""
    stats = np.asarray(stats, dtype=np.float64)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    if point is not None:
        bias = stats.mean() - point
        lo, hi = lo - bias, hi - bias
    return float(lo), float(hi)


def _strata(strata, n: int) -> list[np.ndarray]:
    """The indices of each stratum, strata in order of first appearance."""
    strata = np.asarray(strata)
    if strata.shape != (n,):
        raise ValueError(f"strata must hold one label per index ({n}), got shape {strata.shape}")
    _, first, codes = np.unique(strata, return_index=True, return_inverse=True)
    return [np.flatnonzero(codes == c) for c in np.argsort(first)]


def bootstrap_interval(
    y_true, predictions, metric, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean_k metric(y_true, predictions[k])``.

    ``predictions`` is one label array or a list of them (e.g. one per seed) for the same
    samples; each of ``n_boot`` resamples draws the samples with replacement (the same draw for
    every array) and scores the mean over the arrays, so the interval reflects the sampling of
    the evaluation set (:func:`bootstrap_statistic`).
    """
    y = _as_labels(y_true, "y_true")
    preds = [predictions] if np.ndim(predictions[0]) == 0 else list(predictions)
    preds = [_as_labels(p, "y_pred") for p in preds]
    if any(len(p) != len(y) for p in preds):
        raise ValueError("every prediction must have one label per sample of y_true")
    return bootstrap_statistic(
        len(y),
        lambda idx: np.mean([metric(y[idx], p[idx]) for p in preds]),
        n_boot=n_boot,
        level=level,
        seed=seed,
    )


def nmi_from_contingency(table, average_method: str = "arithmetic"):
    """NMI from a contingency table of counts ``(a, b)``, or from a stack of them ``(..., a, b)``
    (one NMI each), in a few NumPy operations: the same value as :func:`nmi` on the labels the
    table counts (to float rounding), for bootstrap loops where scikit-learn's per-call checks
    dominate. ``average_method`` normalises the mutual information by the ``"arithmetic"`` (the
    default of :func:`nmi`) or ``"geometric"`` mean of the two entropies (Strehl and Ghosh
    2002). 1.0 when both labelings have a single value (scikit-learn's convention). Returns a
    float for one table, an array for a stack."""
    if average_method not in ("arithmetic", "geometric"):
        raise ValueError(
            f"average_method must be 'arithmetic' or 'geometric', got {average_method!r}"
        )
    t = np.asarray(table, dtype=np.float64)
    if t.ndim < 2:
        raise ValueError(f"table must be (..., a, b), got shape {t.shape}")
    n = t.sum(axis=(-2, -1))[..., None, None]
    a, b = t.sum(-1), t.sum(-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        outer = a[..., :, None] * b[..., None, :]
        mi = np.where(t > 0, t / n * np.log(n * t / outer), 0.0).sum(axis=(-2, -1))

        def entropy(counts: np.ndarray) -> np.ndarray:
            p = counts / n[..., 0]
            return -np.where(counts > 0, p * np.log(p), 0.0).sum(-1)

        ha, hb = entropy(a), entropy(b)
        h = 0.5 * (ha + hb) if average_method == "arithmetic" else np.sqrt(ha * hb)
        score = np.where(h > 0, np.maximum(mi, 0.0) / h, 0.0)
    single = ((a > 0).sum(-1) == 1) & ((b > 0).sum(-1) == 1)
    score = np.where(single, 1.0, score)
    return float(score) if score.ndim == 0 else score
