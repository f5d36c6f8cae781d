"""Associations between image clusters and report terms, and the quality criterion Q_K.

Hofmanninger et al. (population clustering of routine lung CT, Sec. 3 "Evaluating
associations between visual clusters and report terms") test, for every term t and cluster k,
whether the term's frequency in the cluster differs from its frequency in the population with a
2 x 2 contingency table and Fisher's exact test (two-sided). The p-values of one term are
corrected across the K clusters with the Holm (Bonferroni-Holm) step-down method, which strongly
controls the family-wise error per term; they are *not* corrected across terms ("as this is an
exploratory analysis"). The quality of a clustering is the number of significant pairs,
Eq. (2): Q_K = sum_k sum_t [p_tk <= 0.05].

The table of term t and cluster k, over the cases with a report (B of them)::

                      term    no term
    in cluster k        a        b        a + b = R (cluster size)
    not in cluster k    c        d
                      a + c = C (cases with the term)

Odds ratio OR = a d / (b c): OR > 1 means the term is over-represented in the cluster. With a
zero cell the sample OR is 0, inf or undefined, so the table also reports a finite log odds
ratio: log OR when no cell is zero, else the Haldane-Anscombe corrected log((a+.5)(d+.5) /
((b+.5)(c+.5))) (``haldane_corrected`` marks those rows).

Implementation notes. The p-values are those of ``scipy.stats.fisher_exact(table,
alternative="two-sided")`` -- the summed probability of all tables with the same margins whose
hypergeometric probability is at most that of the observed one -- but computed for all (t, k)
pairs at once from a table of log-factorials (scipy's per-table call costs ~0.4 ms here, and
``permuted_q_k`` evaluates thousands of tables). Probabilities within a relative 1e-7 of the
observed one count as ties (R's ``fisher.test`` uses the same tolerance, scipy 1e-14). The Holm
correction equals ``statsmodels.stats.multitest.multipletests(p, method="holm")`` applied to
the K p-values of each term, vectorised over terms (statsmodels' Holm branch runs
``gc.collect()`` on every call, ~15 ms each). Tests check both against scipy/statsmodels.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy.special import gammaln
from tqdm.auto import tqdm

from medclust.validation import Real, check_int

log = logging.getLogger(__name__)

# relative tolerance for "as or less probable than the observed table" (as R's fisher.test)
_TIE_TOLERANCE = 1e-7
# cap on the (tables x support) work array of one chunk of fisher_exact_pvalues
_CHUNK_CELLS = 1 << 21


def _count_array(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must hold non-negative integer counts")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr != np.round(arr)):
        raise ValueError(f"{name} must hold non-negative integer counts")
    return arr.astype(np.int64)


def fisher_exact_pvalues(a: Any, b: Any, c: Any, d: Any) -> np.ndarray:
    """Two-sided Fisher exact p-values of the 2 x 2 tables ``[[a, b], [c, d]]`` (broadcast).

    Same definition as ``scipy.stats.fisher_exact(..., alternative="two-sided")``: under the
    hypergeometric distribution of ``a`` given the margins, the total probability of the tables
    that are at most as probable as the observed one. A table with an empty row or column has
    p = 1.
    """
    arrays = np.broadcast_arrays(
        *(_count_array(x, name) for x, name in ((a, "a"), (b, "b"), (c, "c"), (d, "d")))
    )
    shape = arrays[0].shape
    a, b, c, d = (x.ravel() for x in arrays)
    n = a + b + c + d
    rows, cols = a + b, a + c  # first row (cluster size) and first column (term count) sums
    p = np.ones(a.shape, dtype=np.float64)
    informative = (rows > 0) & (rows < n) & (cols > 0) & (cols < n)
    if not informative.any():
        return p.reshape(shape)
    log_fact = gammaln(np.arange(n.max() + 1, dtype=np.float64) + 1.0)

    def log_pmf(x, n, rows, cols):
        # log P(a = x) = log[C(cols, x) C(n - cols, rows - x) / C(n, rows)]
        return (
            log_fact[cols]
            - log_fact[x]
            - log_fact[cols - x]
            + log_fact[n - cols]
            - log_fact[rows - x]
            - log_fact[n - cols - rows + x]
            - log_fact[n]
            + log_fact[rows]
            + log_fact[n - rows]
        )

    idx = np.flatnonzero(informative)
    lo = np.maximum(0, rows[idx] + cols[idx] - n[idx])
    hi = np.minimum(rows[idx], cols[idx])
    width = hi - lo + 1
    order = np.argsort(width)  # similar supports share a chunk: less padding
    start = 0
    while start < order.size:
        stop = start + 1
        while stop < order.size and (stop - start + 1) * width[order[stop]] <= _CHUNK_CELLS:
            stop += 1
        chunk = order[start:stop]
        i = idx[chunk]
        support = lo[chunk, None] + np.arange(width[chunk].max())[None, :]
        valid = support <= hi[chunk, None]
        support = np.where(valid, support, lo[chunk, None])  # padded cells: any valid index
        grid = log_pmf(support, n[i, None], rows[i, None], cols[i, None])
        observed = log_pmf(a[i], n[i], rows[i], cols[i])
        as_extreme = valid & (grid <= observed[:, None] + np.log1p(_TIE_TOLERANCE))
        p[i] = np.where(as_extreme, np.exp(grid), 0.0).sum(axis=1)
        start = stop
    return np.clip(p, 0.0, 1.0).reshape(shape)


class OddsRatios(NamedTuple):
    """Sample odds ratio a d / (b c) (0, inf or NaN with zero cells), a finite log odds ratio
    (Haldane-Anscombe corrected where a cell is zero) and where that correction was used."""

    odds_ratio: np.ndarray
    log_odds_ratio: np.ndarray
    haldane_corrected: np.ndarray


def odds_ratios(a: Any, b: Any, c: Any, d: Any) -> OddsRatios:
    """Odds ratios of the 2 x 2 tables ``[[a, b], [c, d]]`` (broadcast); see ``OddsRatios``."""
    a, b, c, d = (
        _count_array(x, name).astype(np.float64)
        for x, name in ((a, "a"), (b, "b"), (c, "c"), (d, "d"))
    )
    a, b, c, d = np.broadcast_arrays(a, b, c, d)
    num, den = a * d, b * c
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = np.where(
            den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, np.nan)
        )
    zero_cell = (a == 0) | (b == 0) | (c == 0) | (d == 0)
    haldane = np.log((a + 0.5) * (d + 0.5) / ((b + 0.5) * (c + 0.5)))
    with np.errstate(divide="ignore"):
        log_odds = np.where(zero_cell, haldane, np.log(np.where(zero_cell, 1.0, odds)))
    return OddsRatios(odds, log_odds, zero_cell)


def holm_per_row(p: Any) -> np.ndarray:
    """Holm step-down adjusted p-values within each row of ``p`` (rows = families).

    For one row this is ``multipletests(row, method="holm")[1]``: sort ascending, multiply the
    i-th smallest (0-based) by (m - i), take the running maximum, cap at 1.
    """
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"p must be 2-D (families x tests), got shape {p.shape}")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p must hold p-values in [0, 1]")
    m = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")
    stepped = np.take_along_axis(p, order, axis=1) * (m - np.arange(m))[None, :]
    adjusted = np.minimum(np.maximum.accumulate(stepped, axis=1), 1.0)
    out = np.empty_like(p)
    np.put_along_axis(out, order, adjusted, axis=1)
    return out


class _Design(NamedTuple):
    cases: pd.Index
    clusters: np.ndarray  # (K,) cluster values, sorted
    codes: np.ndarray  # (n,) index into clusters per case
    terms: list  # (T,) term names
    X: np.ndarray  # (n, T) 0/1 int64


def _prepare(labels: Any, terms: pd.DataFrame) -> _Design:
    """Align cluster labels with the term matrix; keep only cases with a report."""
    if not isinstance(terms, pd.DataFrame):
        raise ValueError(f"terms must be a cases x terms DataFrame, got {type(terms).__name__}")
    if terms.shape[1] == 0:
        raise ValueError("terms has no term columns")
    if terms.index.has_duplicates:
        raise ValueError("terms has duplicate case ids in its index")
    nan = terms.isna().to_numpy()
    no_report = nan.all(axis=1)
    if (nan.any(axis=1) & ~no_report).any():
        bad = list(terms.index[nan.any(axis=1) & ~no_report][:5])
        raise ValueError(f"terms has rows with some but not all values missing, e.g. {bad}")
    if isinstance(labels, pd.Series):
        if labels.index.has_duplicates:
            raise ValueError("labels has duplicate case ids in its index")
        cases = terms.index[~no_report]
        unlabelled = cases.difference(labels.index)
        if len(unlabelled):
            raise ValueError(
                f"labels lacks {len(unlabelled)} case(s) of terms, e.g. {list(unlabelled[:5])}"
            )
        values = labels.loc[cases].to_numpy()
    else:
        values = np.asarray(labels)
        if values.ndim != 1 or values.shape[0] != terms.shape[0]:
            raise ValueError(
                f"labels must be 1-D with one label per row of terms ({terms.shape[0]}), "
                f"got shape {values.shape}"
            )
        values = values[~no_report]
        cases = terms.index[~no_report]
    if no_report.any():
        log.info("association: %d case(s) without a report left out", int(no_report.sum()))
    if len(cases) == 0:
        raise ValueError("no case with a report to test")
    if pd.isna(values).any():
        raise ValueError("labels are missing (NaN/None) for some cases with a report")
    X = terms.loc[cases].to_numpy(dtype=np.float64)
    if not np.isin(X, (0.0, 1.0)).all():
        raise ValueError("terms must hold only 0/1 values (NaN rows for missing reports)")
    clusters, codes = np.unique(values, return_inverse=True)
    return _Design(cases, clusters, codes.ravel(), list(terms.columns), X.astype(np.int64))


#: The significance level of every test: a number in (0, 1).
_ALPHA = Real(0.0, 1.0, low_open=True, high_open=True)


def _cells(codes: np.ndarray, n_clusters: int, X: np.ndarray):
    """2 x 2 cells (a, b, c, d), each (K, T), for every cluster and term."""
    onehot = np.zeros((codes.size, n_clusters), dtype=np.int64)
    onehot[np.arange(codes.size), codes] = 1
    a = onehot.T @ X
    in_cluster = onehot.sum(axis=0)[:, None]
    with_term = X.sum(axis=0)[None, :]
    b = in_cluster - a
    c = with_term - a
    d = codes.size - in_cluster - with_term + a
    return a, b, c, d


def _p_holm(codes: np.ndarray, n_clusters: int, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fisher p-values and Holm-per-term adjusted p-values, both (K, T)."""
    p = fisher_exact_pvalues(*_cells(codes, n_clusters, X))
    return p, holm_per_row(p.T).T


def association_table(labels: Any, terms: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Fisher/Holm association of every (term, cluster) pair (Hofmanninger et al., Sec. 3).

    Parameters
    ----------
    labels
        Cluster of each case: a Series indexed by case id (cases without a report are ignored;
        every case of ``terms`` with a report needs a label) or an array aligned with the rows
        of ``terms``.
    terms
        Cases x terms 0/1 table (``report_terms.term_matrix``); rows that are all NaN are cases
        without a report and are left out. The population B is the cases with a report.
    alpha
        Significance level of the Holm-adjusted p-values.

    Returns
    -------
    One row per (term, cluster), terms in column order and clusters sorted: ``term``,
    ``cluster``, ``n_cases`` (B), ``n_in_cluster`` (R), ``n_with_term`` (C), the cells
    ``n_in_cluster_with_term`` (a), ``n_in_cluster_without_term`` (b), ``n_outside_with_term``
    (c), ``n_outside_without_term`` (d), ``freq_in_cluster`` (a/R), ``freq_overall`` (C/B),
    ``odds_ratio``, ``log_odds_ratio``, ``haldane_corrected``, ``over_represented`` (OR > 1),
    ``p`` (Fisher, two-sided), ``p_holm`` (Holm across the clusters of the term) and
    ``significant`` (p_holm <= alpha). Clusters present only among cases without a report are
    not tested.
    """
    alpha = _ALPHA.check("alpha", alpha)
    design = _prepare(labels, terms)
    K, T = design.clusters.size, len(design.terms)
    a, b, c, d = _cells(design.codes, K, design.X)
    p = fisher_exact_pvalues(a, b, c, d)
    p_holm = holm_per_row(p.T).T
    ors = odds_ratios(a, b, c, d)
    R, C, B = a + b, a + c, design.codes.size

    def flat(x):  # (K, T) -> term-major order
        return np.asarray(x).T.ravel()

    table = pd.DataFrame(
        {
            "term": np.repeat(np.asarray(design.terms, dtype=object), K),
            "cluster": np.tile(design.clusters, T),
            "n_cases": B,
            "n_in_cluster": flat(R),
            "n_with_term": flat(C),
            "n_in_cluster_with_term": flat(a),
            "n_in_cluster_without_term": flat(b),
            "n_outside_with_term": flat(c),
            "n_outside_without_term": flat(d),
            "freq_in_cluster": flat(a / R),
            "freq_overall": flat(C / B),
            "odds_ratio": flat(ors.odds_ratio),
            "log_odds_ratio": flat(ors.log_odds_ratio),
            "haldane_corrected": flat(ors.haldane_corrected),
            "over_represented": flat(a * d > b * c),
            "p": flat(p),
            "p_holm": flat(p_holm),
            "significant": flat(p_holm <= alpha),
        }
    )
    log.info(
        "association: %d cases, %d clusters, %d terms, Q_K = %d at alpha %g",
        B,
        K,
        T,
        int(table["significant"].sum()),
        alpha,
    )
    return table


def q_k(labels: Any, terms: pd.DataFrame, alpha: float = 0.05) -> int:
    """Quality criterion Q_K (Eq. 2): number of (term, cluster) pairs with Holm-adjusted
    p <= ``alpha``. Equals ``association_table(labels, terms, alpha)["significant"].sum()``."""
    alpha = _ALPHA.check("alpha", alpha)
    design = _prepare(labels, terms)
    _, p_holm = _p_holm(design.codes, design.clusters.size, design.X)
    return int((p_holm <= alpha).sum())


def permuted_q_k(
    labels: Any,
    terms: pd.DataFrame,
    n_permutations: int = 100,
    seed: int | np.random.Generator = 0,
    alpha: float = 0.05,
    verbose: bool = False,
) -> np.ndarray:
    """Q_K after randomly reassigning the reports (rows of ``terms``) to the patients.

    The null check of the association analysis: permuting reports across patients breaks every
    link between image clusters and report terms while keeping the cluster sizes and term
    frequencies, so Q_K should drop to about 0 (at most ~alpha per term on average, since Holm
    controls the family-wise error of each term). Returns the ``n_permutations`` Q_K values
    (int array), reproducible for a given ``seed``.
    """
    alpha = _ALPHA.check("alpha", alpha)
    check_int("n_permutations", n_permutations)
    if not isinstance(seed, int | np.integer | np.random.Generator) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer or a numpy Generator, got {seed!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(int(seed))
    design = _prepare(labels, terms)
    K = design.clusters.size
    out = np.empty(int(n_permutations), dtype=np.int64)
    for i in tqdm(range(out.size), desc="permuted Q_K", disable=not verbose):
        X = design.X[rng.permutation(design.X.shape[0])]
        _, p_holm = _p_holm(design.codes, K, X)
        out[i] = int((p_holm <= alpha).sum())
    log.info(
        "permuted Q_K over %d permutations: mean %.3f, max %d", out.size, out.mean(), out.max()
    )
    return out


def significance_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Terms x clusters matrix of +1 (significantly over-represented), -1 (significantly
    under-represented) and 0, from ``association_table`` output (the layout of Fig. 6a)."""
    required = {"term", "cluster", "significant", "over_represented"}
    if not isinstance(table, pd.DataFrame) or not required <= set(table.columns):
        raise ValueError(f"table must be an association_table with columns {sorted(required)}")
    sign = np.where(table["significant"], np.where(table["over_represented"], 1, -1), 0)
    matrix = (
        table.assign(sign=sign)
        .pivot(index="term", columns="cluster", values="sign")
        .reindex(pd.unique(table["term"]))
    )
    return matrix.astype(np.int64)
