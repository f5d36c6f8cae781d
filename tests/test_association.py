"""medclust.association: Fisher/Holm cluster-term tables, Q_K and its permutation null."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact
from statsmodels.stats.multitest import multipletests

from medclust import association as assoc


def _hand_data():
    """8 cases in 2 clusters; the term is in 3 of 4 cases of cluster 0 and 1 of 4 of cluster 1."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    terms = pd.DataFrame({"nodule": [1, 1, 1, 0, 1, 0, 0, 0]}, index=[f"c{i}" for i in range(8)])
    return labels, terms


def _planted(seed=0, n=300):
    """3 clusters of 100; term a is frequent in cluster 0, term b in cluster 2, c-f are noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n // 3)
    X = rng.random((n, 6)) < 0.2
    X[:, 0] = rng.random(n) < np.where(labels == 0, 0.6, 0.1)
    X[:, 1] = rng.random(n) < np.where(labels == 2, 0.5, 0.05)
    return labels, pd.DataFrame(X.astype(int), columns=list("abcdef"))


def test_hand_computed_table():
    labels, terms = _hand_data()
    table = assoc.association_table(labels, terms)
    # a ~ hypergeometric(B=8, C=4, R=4): P(a=k) = C(4,k) C(4,4-k) / C(8,4) = (1,16,36,16,1)/70.
    # Observed a=3 (P 16/70); as or less probable: a in {0,1,3,4} -> p = 34/70.
    hand_p = 34 / 70
    assert table["p"].to_numpy() == pytest.approx([hand_p, hand_p], rel=1e-12)
    # Holm over the term's 2 clusters: both p equal -> 2 * 34/70
    assert table["p_holm"].to_numpy() == pytest.approx([68 / 70, 68 / 70], rel=1e-12)
    assert table["odds_ratio"].to_numpy() == pytest.approx([9.0, 1 / 9])  # (3*3)/(1*1)
    assert table["log_odds_ratio"].to_numpy() == pytest.approx([math.log(9), -math.log(9)])
    row = table.iloc[0]
    assert (row.n_cases, row.n_in_cluster, row.n_with_term) == (8, 4, 4)
    cells = (
        row.n_in_cluster_with_term,
        row.n_in_cluster_without_term,
        row.n_outside_with_term,
        row.n_outside_without_term,
    )
    assert cells == (3, 1, 1, 3)
    assert row.freq_in_cluster == 0.75 and row.freq_overall == 0.5
    assert list(table["over_represented"]) == [True, False]
    assert not table["significant"].any()
    # the same numbers from scipy and statsmodels called directly
    ref = fisher_exact([[3, 1], [1, 3]], alternative="two-sided")
    assert row.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert row.odds_ratio == pytest.approx(ref.statistic)
    assert table["p_holm"].to_numpy() == pytest.approx(
        multipletests(table["p"].to_numpy(), method="holm")[1], rel=1e-12
    )


def test_perfect_separation_zero_cells_and_q_k():
    labels = np.repeat([0, 1], 5)
    terms = pd.DataFrame({"effusion": [1] * 5 + [0] * 5})
    table = assoc.association_table(labels, terms)
    # only the two extreme tables (a = 0 or 5) have P = 1/C(10,5): p = 2/252
    assert table["p"].to_numpy() == pytest.approx([2 / 252] * 2, rel=1e-12)
    assert table["p_holm"].to_numpy() == pytest.approx([4 / 252] * 2, rel=1e-12)
    assert list(table["odds_ratio"]) == [np.inf, 0.0]
    assert list(table["haldane_corrected"]) == [True, True]
    # Haldane: log((5.5 * 5.5) / (0.5 * 0.5)) = log(121)
    assert table["log_odds_ratio"].to_numpy() == pytest.approx([math.log(121), -math.log(121)])
    assert table["significant"].all()
    assert assoc.q_k(labels, terms) == 2
    assert assoc.q_k(labels, terms, alpha=0.01) == 0  # 4/252 = 0.0159 > 0.01
    matrix = assoc.significance_matrix(table)
    assert matrix.loc["effusion"].tolist() == [1, -1]


def test_fisher_pvalues_match_scipy_on_random_tables():
    rng = np.random.default_rng(3)
    tables = rng.integers(0, 25, size=(300, 4))
    tables[rng.random(tables.shape) < 0.15] = 0  # zero cells and empty margins included
    tables = np.vstack([tables, rng.integers(200, 2000, size=(20, 4))])  # large counts
    p = assoc.fisher_exact_pvalues(*tables.T)
    ors = assoc.odds_ratios(*tables.T)
    for (a, b, c, d), p_ij, or_ij in zip(tables, p, ors.odds_ratio, strict=True):
        ref = fisher_exact([[a, b], [c, d]])
        assert p_ij == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
        if b * c > 0:
            assert or_ij == pytest.approx(ref.statistic)
    assert assoc.fisher_exact_pvalues([[3, 5]], 1, 1, 3).shape == (1, 2)  # broadcasting
    with pytest.raises(ValueError, match="non-negative integer"):
        assoc.fisher_exact_pvalues(-1, 2, 3, 4)


def test_holm_per_row_matches_statsmodels():
    rng = np.random.default_rng(4)
    p = rng.random((25, 7)) ** 3
    p[0, :3] = 0.01  # ties
    adjusted = assoc.holm_per_row(p)
    for row, adj in zip(p, adjusted, strict=True):
        np.testing.assert_allclose(adj, multipletests(row, method="holm")[1], rtol=1e-12)


def test_table_matches_scipy_and_statsmodels_per_term():
    labels, terms = _planted(seed=1)
    table = assoc.association_table(labels, terms)
    assert len(table) == 6 * 3
    for row in table.itertuples():
        ref = fisher_exact(
            [
                [row.n_in_cluster_with_term, row.n_in_cluster_without_term],
                [row.n_outside_with_term, row.n_outside_without_term],
            ]
        )
        assert row.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
        in_cluster = labels == row.cluster
        assert row.n_in_cluster_with_term == terms.loc[in_cluster, row.term].sum()
    for _, group in table.groupby("term"):
        np.testing.assert_allclose(
            group["p_holm"], multipletests(group["p"], method="holm")[1], rtol=1e-12
        )


def test_holm_is_applied_per_term_not_across_all_pairs():
    # 100 cases in 2 clusters; the planted term is in 14/50 vs 4/50 (Fisher p = 0.0174),
    # 20 noise terms have equal frequency in both clusters (p = 1)
    labels = np.repeat([0, 1], 50)
    planted = np.r_[np.ones(14), np.zeros(36), np.ones(4), np.zeros(46)]
    noise = np.tile(np.r_[np.ones(10), np.zeros(40)], 2)
    terms = pd.DataFrame({"planted": planted, **{f"noise{i}": noise for i in range(20)}})
    table = assoc.association_table(labels, terms.astype(int))
    hit = table[table["term"] == "planted"]
    assert hit["p"].to_numpy() == pytest.approx([0.0173910523] * 2, rel=1e-6)
    assert hit["p_holm"].to_numpy() == pytest.approx(2 * hit["p"].to_numpy())  # K = 2 family
    assert hit["significant"].all()
    assert assoc.q_k(labels, terms.astype(int)) == 2
    # a Holm correction across all 42 (term, cluster) pairs would find nothing
    global_holm = multipletests(table["p"].to_numpy(), method="holm")[1]
    assert (global_holm > 0.05).all()


def test_q_k_counts_and_odds_ratio_direction():
    labels, terms = _planted()
    table = assoc.association_table(labels, terms)
    assert assoc.q_k(labels, terms) == int(table["significant"].sum())
    sig = table.set_index(["term", "cluster"])
    # planted over-representation: significant, OR > 1; the other clusters OR < 1
    assert sig.loc[("a", 0), "significant"] and sig.loc[("a", 0), "odds_ratio"] > 1
    assert sig.loc[("b", 2), "significant"] and sig.loc[("b", 2), "odds_ratio"] > 1
    assert sig.loc[("a", 0), "over_represented"] and not sig.loc[("a", 1), "over_represented"]
    assert sig.loc[("a", 1), "odds_ratio"] < 1 and sig.loc[("a", 2), "odds_ratio"] < 1
    assert (np.sign(table["log_odds_ratio"]) == np.where(table["over_represented"], 1, -1)).all()
    # Q_K grows with alpha
    assert assoc.q_k(labels, terms, alpha=0.001) <= assoc.q_k(labels, terms, alpha=0.2)


def test_permuted_q_k_is_near_zero_while_planted_q_k_is_not():
    labels, terms = _planted()
    observed = assoc.q_k(labels, terms)
    assert observed >= 4  # at least the two planted pairs and their under-represented partners
    null = assoc.permuted_q_k(labels, terms, n_permutations=60, seed=0)
    assert null.shape == (60,) and null.dtype.kind == "i"
    assert null.mean() < 0.6  # Holm keeps the per-term FWE at 0.05 -> E[Q_K] ~ 6 * 0.05
    assert null.max() < observed
    np.testing.assert_array_equal(null, assoc.permuted_q_k(labels, terms, 60, seed=0))


def test_cases_without_report_and_label_alignment():
    labels, terms = _planted()
    ids = [f"p{i:03d}" for i in range(len(labels))]
    terms.index = ids
    series = pd.Series(labels, index=ids)
    reference = assoc.association_table(series, terms)
    # add cases clustered but without a report: NaN rows in terms, extra labels in the Series
    extra = pd.DataFrame(np.nan, index=["x1", "x2"], columns=terms.columns)
    with_missing = pd.concat([terms, extra])
    shuffled = pd.concat([series, pd.Series([0, 5], index=["x1", "x2"])]).sample(
        frac=1, random_state=0
    )
    table = assoc.association_table(shuffled, with_missing)
    pd.testing.assert_frame_equal(table, reference)  # cluster 5 only has unreported cases
    with pytest.raises(ValueError, match="lacks 1 case"):
        assoc.association_table(series.drop("p000"), terms)


def test_errors_name_the_problem():
    labels, terms = _hand_data()
    with pytest.raises(ValueError, match="labels must be 1-D"):
        assoc.association_table(labels[:-1], terms)
    with pytest.raises(ValueError, match="0/1"):
        assoc.association_table(labels, terms * 2)
    with pytest.raises(ValueError, match="alpha"):
        assoc.q_k(labels, terms, alpha=1.5)
    with pytest.raises(ValueError, match="n_permutations"):
        assoc.permuted_q_k(labels, terms, n_permutations=0)
    with pytest.raises(ValueError, match="terms must be"):
        assoc.association_table(labels, terms.to_numpy())


def test_speed_twenty_clusters_thirty_terms():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 20, size=400)
    terms = pd.DataFrame((rng.random((400, 30)) < 0.15).astype(int))
    assoc.association_table(labels, terms)  # warm-up
    start = time.perf_counter()
    table = assoc.association_table(labels, terms)
    q = assoc.q_k(labels, terms)
    elapsed = time.perf_counter() - start
    assert len(table) == 600 and q == int(table["significant"].sum())
    assert elapsed < 1.0
