"""medclust.comparison: paired, seed-aware differences and permutation chance levels, pinned on
synthetic cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from medclust import comparison as cmp
from medclust import metrics as cm


def _noisy(y, flip, rng, k=3):
    """``y`` with a share ``flip`` of the items relabelled at random."""
    out = y.copy()
    hit = rng.random(len(y)) < flip
    out[hit] = rng.integers(0, k, hit.sum())
    return out


def test_scores_from_weights_equal_the_scores_of_the_resampled_labels():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    pred = _noisy(y, 0.5, rng, k=4)
    res = cmp.Resamples(60, n_boot=20, seed=1)
    for score, fn in (("acc", cm.cluster_accuracy), ("nmi", cm.nmi), ("ari", cm.ari)):
        scored = cmp.partition_scores(y, [pred], score, res)
        assert scored.point[0] == pytest.approx(fn(y, pred))
        expected = [fn(y[i], pred[i]) for i in res.idx]
        np.testing.assert_allclose(scored.boot[0], expected, atol=1e-12)
    assert (res.weights.sum(axis=1) == 60).all()


def test_ari_from_tables_matches_scikit_learn_on_edge_cases():
    cases = [([0, 0, 1, 1], [0, 0, 0, 0]), ([0, 0, 0], [0, 0, 0]), ([0, 1, 2], [0, 1, 2])]
    for y, p in cases:
        table = cmp.contingency_tables(y, p, np.ones((1, len(y))))
        assert cmp.ari_from_tables(table)[0] == pytest.approx(adjusted_rand_score(y, p))


def test_a_method_that_wins_on_every_draw_is_better_although_intervals_overlap():
    """Two methods on the same items: B is A with 4 % more items wrong. Alone, their
    intervals overlap; paired, A wins on every draw."""
    rng = np.random.default_rng(0)
    n = 300
    correct_b = (rng.random(n) < 0.6).astype(float)
    correct_a = correct_b.copy()
    correct_a[np.flatnonzero(correct_b == 0)[:12]] = 1.0
    res = cmp.Resamples(n, n_boot=500)
    a, b = cmp.mean_scores([correct_a], res), cmp.mean_scores([correct_b], res)
    lo_a, hi_a = cmp.interval(a, res)
    lo_b, hi_b = cmp.interval(b, res)
    assert lo_a < hi_b  # unpaired: the intervals overlap
    d = cmp.paired_difference(a, b, res, names=("A", "B"), score="acc")
    assert d.verdict == cmp.BETTER and d.low > 0 and d.diff == pytest.approx(12 / n)
    assert cmp.paired_difference(b, a, res).verdict == cmp.WORSE


def test_identical_methods_cannot_be_told_apart():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 100)
    preds = [_noisy(y, 0.4, rng) for _ in range(3)]
    res = cmp.Resamples(100, n_boot=200)
    a = cmp.partition_scores(y, preds, "acc", res)
    d = cmp.paired_difference(a, a, res)
    assert d.diff == 0 and d.low == 0 and d.high == 0 and d.verdict == cmp.CANNOT_TELL
    assert d.runs_won == 0 and d.runs == 3


def test_a_noise_only_gap_is_not_a_verdict():
    """Two methods of the same quality (each run an independent noisy copy of the truth):
    whatever gap one draw of seeds shows, the verdict is "cannot tell" in most repetitions."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 150)
    verdicts = []
    for rep in range(20):
        res = cmp.Resamples(150, n_boot=300, seed=rep)
        a = cmp.partition_scores(y, [_noisy(y, 0.6, rng) for _ in range(3)], "acc", res)
        b = cmp.partition_scores(y, [_noisy(y, 0.6, rng) for _ in range(3)], "acc", res)
        verdicts.append(cmp.paired_difference(a, b, res).verdict)
    assert verdicts.count(cmp.CANNOT_TELL) >= 17


def test_seed_spread_widens_the_interval():
    """Runs that disagree (training noise) widen the hierarchical interval beyond the items'."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    preds = [_noisy(y, f, rng) for f in (0.1, 0.5, 0.9)]
    res = cmp.Resamples(200, n_boot=400)
    scored = cmp.partition_scores(y, preds, "acc", res)
    lo_s, hi_s = cmp.interval(scored, res, seeds=True)
    lo_i, hi_i = cmp.interval(scored, res, seeds=False)
    assert hi_s - lo_s > 2 * (hi_i - lo_i)
    assert scored.sd > 0.2


def test_lower_is_better_scores_flip_the_verdict():
    assert cmp.verdict(0.1, 0.3, higher_is_better=False) == cmp.WORSE
    assert cmp.verdict(-0.3, -0.1, higher_is_better=False) == cmp.BETTER
    assert cmp.verdict(-0.1, 0.1) == cmp.CANNOT_TELL
    assert cmp.verdict(float("nan"), 0.1) == cmp.CANNOT_TELL


def test_chance_level_of_acc_is_a_permutation_null_at_the_methods_cluster_sizes():
    """Six balanced classes, a clustering with six clusters: chance ACC lies well above 1/6
    (the Hungarian matching picks the best of many pairings); a single cluster has no
    spread at all, and a perfect clustering is far above its null."""
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(6), 50)
    random_pred = rng.integers(0, 6, 300)
    chance = cmp.chance_level(y, [random_pred], "acc", n_perm=400)
    brute = [cm.cluster_accuracy(y, rng.permutation(random_pred)) for _ in range(400)]
    assert chance.mean == pytest.approx(np.mean(brute), abs=0.005)
    assert 1 / 6 + 0.02 < chance.mean < 0.26
    assert chance.p_value > 0.05
    perfect = cmp.chance_level(y, [y], "acc", n_perm=200)
    assert perfect.observed == 1.0 and perfect.p_value == pytest.approx(1 / 201)
    one = cmp.chance_level(y, [np.zeros(300)], "nmi", n_perm=50)
    assert one.mean == 0 and one.low == one.high == 0
    ari = cmp.chance_level(y, [random_pred], "ari", n_perm=300)
    assert abs(ari.mean) < 0.005


def test_chance_level_keeps_each_runs_margins():
    y = np.repeat([0, 1], 20)
    table = cmp.contingency_tables(y, np.r_[np.zeros(30), np.ones(10)], np.ones((1, 40)))[0]
    draws = cmp.random_tables(table, 50, np.random.default_rng(0))
    assert (draws.sum(axis=2) == table.sum(axis=1)).all()
    assert (draws.sum(axis=1) == table.sum(axis=0)).all()


def test_a_single_cluster_or_class_has_one_table_and_its_own_chance():
    """One column (or row): the margins fix the table, so every shuffle gives it back (scipy's
    Patefield sampler returned negative counts there, and one cluster a chance ACC of 1)."""
    y = np.repeat([1, 2, 3], 20)
    table = cmp.contingency_tables(y, np.zeros(60), np.ones((1, 60)))[0]
    for t in (table, table.T):
        draws = cmp.random_tables(t, 5, np.random.default_rng(0))
        assert draws.shape == (5, *t.shape) and (draws == t).all()
    one = cmp.chance_level(y, [np.zeros(60)], "acc", n_perm=50)
    for value in (one.mean, one.low, one.high, one.observed):
        assert value == pytest.approx(1 / 3)
    assert one.p_value == 1.0
    # an empty class or cluster is dropped before sampling, not counted as a second one
    padded = np.zeros((3, 2))
    padded[:, 0] = 20
    assert cmp.random_tables(padded, 2, np.random.default_rng(0)).shape == (2, 3, 1)


def test_runs_are_paired_between_methods_with_as_many_seeds():
    res = cmp.Resamples(10, n_boot=5, seed=3)
    assert (res.runs(3) == res.runs(3)).all()
    assert (res.runs(1) == 0).all()
    table = cmp.differences_table(
        [cmp.Difference("A", "B", "acc", 0.1, 0.05, 0.15, cmp.BETTER, 0.01, 3, 3)]
    )
    assert (
        table.loc[0, "runs_won"] == "3 of 3" and table.loc[0, "text"] == "+0.100 [+0.050, +0.150]"
    )


def test_weighted_binary_scores_match_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(5)
    y = (rng.random(40) < 0.6).astype(int)
    p = np.round(rng.random(40), 1)  # ties included
    res = cmp.Resamples(40, n_boot=30, seed=2, strata=y)
    for score, fn in (
        ("auc", lambda yy, pp, w: roc_auc_score(yy, pp, sample_weight=w)),
        (
            "balanced_accuracy",
            lambda yy, pp, w: balanced_accuracy_score(yy, pp > 0.5, sample_weight=w),
        ),
        ("f1", lambda yy, pp, w: f1_score(yy, pp > 0.5, sample_weight=w)),
    ):
        scored = cmp.binary_scores(y, [p], score, res)
        assert scored.point[0] == pytest.approx(fn(y, p, None))
        expected = [fn(y, p, w) for w in res.weights]
        np.testing.assert_allclose(scored.boot[0], expected, atol=1e-12)


def test_a_difference_of_one_item_in_every_seed_cannot_be_told():
    """Two methods that disagree on one test item only, the same item in every seed: about a
    third of the draws miss it, so the differences' interval ends on 0 (no bias shift moves
    it off) and the verdict is "cannot tell"."""
    y = np.repeat([0, 1], 150)
    a = y.copy()
    b = y.copy()
    b[0] = 1
    res = cmp.Resamples(300, n_boot=1000)
    d = cmp.paired_difference(
        cmp.partition_scores(y, [a] * 3, "acc", res),
        cmp.partition_scores(y, [b] * 3, "acc", res),
        res,
    )
    assert d.diff == pytest.approx(1 / 300) and d.low == 0.0
    assert d.verdict == cmp.CANNOT_TELL and d.runs_won == 3
