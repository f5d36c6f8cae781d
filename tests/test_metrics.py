"""medclust.metrics: Hungarian accuracy, NMI, ARI, internal indices (with property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medclust import metrics

labels = st.lists(st.integers(0, 4), min_size=2, max_size=60)


def test_accuracy_hand_computed():
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [2, 2, 1, 0, 0, 0]  # best map 2->0, 0->1: 5 of 6 right
    assert metrics.cluster_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
    assert metrics.cluster_mapping(y_true, y_pred) == {2: 0, 0: 1}


def test_accuracy_with_more_clusters_than_classes():
    y_true = [0, 0, 0, 0, 1, 1, 1, 1]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 2]  # one-to-one: cluster 1 stays unmatched -> 2 errors
    assert metrics.cluster_accuracy(y_true, y_pred) == pytest.approx(6 / 8)
    assert metrics.purity(y_true, y_pred) == 1.0


def test_accuracy_with_fewer_clusters_than_classes():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 0, 1, 1]
    assert metrics.cluster_accuracy(y_true, y_pred) == pytest.approx(4 / 6)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.cluster_accuracy([0, 1], [0, 1, 1])


@given(labels, st.permutations(range(5)))
def test_scores_invariant_to_renaming_clusters(y, perm):
    y_true = np.array(y)
    rng = np.random.default_rng(len(y))
    y_pred = np.where(rng.random(len(y)) < 0.3, rng.integers(0, 5, len(y)), y_true)
    renamed = np.asarray(perm)[y_pred]
    for score in (metrics.cluster_accuracy, metrics.nmi, metrics.ari, metrics.purity):
        assert score(y_true, renamed) == pytest.approx(score(y_true, y_pred))


@given(labels, st.permutations(range(5)))
def test_perfect_clustering_scores_one(y, perm):
    y_true = np.array(y)
    y_pred = np.asarray(perm)[y_true] + 10  # any bijective renaming is perfect
    assert metrics.cluster_accuracy(y_true, y_pred) == 1.0
    assert metrics.purity(y_true, y_pred) == 1.0
    if np.unique(y_true).size > 1:
        assert metrics.nmi(y_true, y_pred) == pytest.approx(1.0)
        assert metrics.ari(y_true, y_pred) == pytest.approx(1.0)


@settings(max_examples=50)
@given(labels, labels)
def test_accuracy_bounds(a, b):
    n = min(len(a), len(b))
    acc = metrics.cluster_accuracy(a[:n], b[:n])
    assert 1 / n <= acc <= 1.0
    assert acc <= metrics.purity(a[:n], b[:n]) + 1e-12


def test_nmi_normalisation_is_selectable():
    y_true, y_pred = [0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 1, 1]
    arith = metrics.nmi(y_true, y_pred)
    geo = metrics.nmi(y_true, y_pred, average_method="geometric")
    assert arith != pytest.approx(geo)


def test_internal_scores_separated_blobs():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))])
    good = np.repeat([0, 1], 50)
    bad = rng.integers(0, 2, 100)
    scores_good, scores_bad = metrics.internal_scores(X, good), metrics.internal_scores(X, bad)
    assert scores_good["silhouette"] > 0.9 > scores_bad["silhouette"]
    assert scores_good["davies_bouldin"] < scores_bad["davies_bouldin"]


def test_internal_scores_single_cluster_is_nan():
    X = np.zeros((5, 2))
    assert np.isnan(metrics.silhouette(X, [0] * 5))
    assert np.isnan(metrics.davies_bouldin(X, [0] * 5))
    assert np.isnan(metrics.davies_bouldin(X, [0, 1, 2, 3, 4]))  # one point per cluster


def test_silhouette_subsample_is_seeded():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = rng.integers(0, 3, 300)
    a = metrics.silhouette(X, y, sample_size=100, seed=3)
    assert a == metrics.silhouette(X, y, sample_size=100, seed=3)


def test_bootstrap_interval_brackets_the_score_and_pools_seeds():
    from medclust.metrics import bootstrap_interval, cluster_accuracy

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    noisy = np.where(rng.random(200) < 0.8, y, rng.integers(0, 3, 200))
    lo, hi = bootstrap_interval(y, noisy, cluster_accuracy, n_boot=300)
    assert lo < cluster_accuracy(y, noisy) < hi and hi - lo < 0.2
    assert bootstrap_interval(y, [y, y], cluster_accuracy, n_boot=50) == (1.0, 1.0)
    assert bootstrap_interval(y, noisy, cluster_accuracy, n_boot=300) == (lo, hi)  # seeded
    with pytest.raises(ValueError, match="one label per sample"):
        bootstrap_interval(y, [y[:10]], cluster_accuracy)


def test_davies_bouldin_is_scikit_learns_score():
    from sklearn.metrics import davies_bouldin_score

    rng = np.random.default_rng(4)
    for _ in range(50):
        n = int(rng.integers(4, 60))
        X = rng.normal(size=(n, int(rng.integers(1, 6))))
        y = rng.integers(0, int(rng.integers(2, 6)), n)
        if 2 <= np.unique(y).size < n:
            assert metrics.davies_bouldin(X, y) == pytest.approx(davies_bouldin_score(X, y))
    assert metrics.davies_bouldin(np.ones((6, 2)), [0, 0, 0, 1, 1, 1]) == 0.0
    assert np.isnan(metrics.davies_bouldin(X, np.zeros(len(X), int)))


def test_bias_corrected_bootstrap_centres_the_interval_on_the_score():
    from medclust.metrics import bootstrap_statistic, cluster_accuracy

    rng = np.random.default_rng(2)
    y = rng.integers(0, 6, 400)
    chance = rng.integers(0, 6, 400)  # a clustering unrelated to the classes: ACC 0.2
    acc = cluster_accuracy(y, chance)

    def statistic(idx):
        return cluster_accuracy(y[idx], chance[idx])

    lo, hi = bootstrap_statistic(400, statistic, n_boot=300)
    assert acc < lo  # the matching rises on resamples: the plain interval misses the score
    lo_c, hi_c = bootstrap_statistic(400, statistic, n_boot=300, correct_bias=True)
    assert lo_c < acc < hi_c
    assert hi_c - lo_c == pytest.approx(hi - lo)


def test_nmi_from_contingency_matches_sklearn_and_takes_stacks():
    from sklearn.metrics import normalized_mutual_info_score

    from medclust.metrics import nmi_from_contingency

    rng = np.random.default_rng(5)
    tables, expected = [], []
    for _ in range(4):
        a, b = rng.integers(0, 3, 300), rng.integers(0, 5, 300)
        b[:100] = a[:100]  # some shared information
        tables.append(np.histogram2d(a, b, bins=(3, 5), range=((0, 3), (0, 5)))[0])
        expected.append(normalized_mutual_info_score(a, b, average_method="geometric"))
        assert nmi_from_contingency(tables[-1]) == pytest.approx(normalized_mutual_info_score(a, b))
    stacked = nmi_from_contingency(np.stack(tables), average_method="geometric")
    assert stacked.shape == (4,)
    np.testing.assert_allclose(stacked, expected, rtol=1e-12)
    assert nmi_from_contingency([[5, 0], [0, 0]]) == 1.0  # one value on both sides
    with pytest.raises(ValueError, match="average_method must be 'arithmetic' or 'geometric'"):
        nmi_from_contingency(tables[0], average_method="max")


def test_stratified_bootstrap_keeps_each_stratum_and_its_share():
    from medclust.metrics import bootstrap_draws, bootstrap_statistic, percentile_interval

    strata = np.array(["b", "b", "a", "a", "a"])
    draws = bootstrap_draws(5, n_boot=50, seed=1, strata=strata)
    assert draws.shape == (50, 5)
    # stratum by stratum in order of first appearance: 2 draws of b's indices, then 3 of a's
    assert np.isin(draws[:, :2], [0, 1]).all() and np.isin(draws[:, 2:], [2, 3, 4]).all()
    # the statistic sees those draws, and the unstratified default is unchanged
    seen = []
    bootstrap_statistic(5, lambda idx: seen.append(idx) or 0.0, n_boot=50, seed=1, strata=strata)
    np.testing.assert_array_equal(np.stack(seen), draws)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(
        bootstrap_draws(7, n_boot=3), np.stack([rng.integers(0, 7, 7) for _ in range(3)])
    )
    with pytest.raises(ValueError, match=r"strata must hold one label per index \(5\)"):
        bootstrap_draws(5, strata=[0, 1])
    assert percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
    # bias: mean 50 against a point estimate of 40 shifts both ends down by 10
    assert percentile_interval(np.arange(101.0), 0.9, point=40.0) == pytest.approx((-5.0, 85.0))
