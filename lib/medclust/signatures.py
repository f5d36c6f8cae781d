"""Per-case signatures: relative cluster proportions (Perkonigg et al., Sec. 2).

"After training the convolutional DCN (cDCN), we apply it to a whole region of interest [...] by
parsing it with a sliding window, and assigning each position to one of the learned clusters.
For each ROI the vector of the relative proportion of each cluster forms the *signature* of the
ROI" -- a bag-of-visual-words histogram normalised to sum to one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medclust.validation import check_int


def _check_labels(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {lab.shape}")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        if not np.all(lab == np.round(lab)):
            raise ValueError("labels must be integer cluster indices")
        lab = lab.astype(np.int64)
    n_clusters = check_int("n_clusters", n_clusters)
    if lab.size and (lab.min() < 0 or lab.max() >= n_clusters):
        raise ValueError(
            f"labels must lie in [0, {n_clusters - 1}], got range [{lab.min()}, {lab.max()}]"
        )
    return lab.astype(np.int64, copy=False)


def signature(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Relative proportion of each cluster among ``labels`` (float64, length ``n_clusters``,
    sums to 1). Raises ``ValueError`` for an empty label vector."""
    lab = _check_labels(labels, n_clusters)
    if lab.size == 0:
        raise ValueError("no labels: the signature of an empty region is undefined")
    return np.bincount(lab, minlength=int(n_clusters)) / lab.size


def case_signatures(
    labels: np.ndarray,
    case_index: np.ndarray,
    n_cases: int,
    n_clusters: int,
    case_ids: Sequence[str] | None = None,
) -> np.ndarray:
    """Signatures of all cases, shape ``(n_cases, n_clusters)``; row ``c`` uses the windows with
    ``case_index == c``.

    Raises ``ValueError`` naming the case (its id from ``case_ids`` when given, else its index)
    for a case without any window, e.g. an empty or tiny ROI, rather than returning a row of
    NaNs that would silently poison a classifier.
    """
    lab = _check_labels(labels, n_clusters)
    idx = np.asarray(case_index)
    if idx.shape != lab.shape:
        raise ValueError(f"case_index shape {idx.shape} does not match labels shape {lab.shape}")
    if case_ids is not None and len(case_ids) != n_cases:
        raise ValueError(f"case_ids has {len(case_ids)} entries for n_cases={n_cases}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_cases):
        raise ValueError(f"case_index must lie in [0, {n_cases - 1}]")
    counts = np.zeros((int(n_cases), int(n_clusters)), dtype=np.int64)
    np.add.at(counts, (idx.astype(np.int64), lab), 1)
    totals = counts.sum(axis=1)
    empty = np.flatnonzero(totals == 0)
    if empty.size:
        names = [repr(case_ids[i]) if case_ids is not None else str(i) for i in empty[:5]]
        more = f" (and {empty.size - 5} more)" if empty.size > 5 else ""
        raise ValueError(f"case {', '.join(names)}{more}: no window, so no signature")
    return counts / totals[:, None]
