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
    """Davies-Bouldin index (lower is better). NaN for a single cluster or one cluster per
    point (where scikit-learn refuses the score)."""
    labels = _as_labels(labels, "labels")
    if not 2 <= np.unique(labels).size < len(labels):
        return float("nan")
    return float(skm.davies_bouldin_score(np.asarray(X), labels))


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


def bootstrap_interval(
    y_true, predictions, metric, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean_k metric(y_true, predictions[k])``.

    ``predictions`` is one label array or a list of them (e.g. one per seed) for the same
    samples; each of ``n_boot`` resamples draws the samples with replacement (the same draw for
    every array) and scores the mean over the arrays, so the interval reflects the sampling of
    the evaluation set. Returns the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles.
    """
    y = _as_labels(y_true, "y_true")
    preds = [predictions] if np.ndim(predictions[0]) == 0 else list(predictions)
    preds = [_as_labels(p, "y_pred") for p in preds]
    if any(len(p) != len(y) for p in preds):
        raise ValueError("every prediction must have one label per sample of y_true")
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1, got {level}, {n_boot}")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        stats[b] = np.mean([metric(y[idx], p[idx]) for p in preds])
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
