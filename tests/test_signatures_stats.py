"""Signatures (cluster proportions), the leave-one-out statistics of Perkonigg et al. and the
repeated cross-validation beside them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import Lasso, LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medclust.patches import sliding_window_centres
from medclust.signatures import case_signatures, signature
from medclust.stats import binary_scores, loo_predict, repeated_cv_proba, top_k_frequency

# --------------------------------------------------------------------------- signatures


def test_signature_sums_to_one():
    sig = signature(np.array([0, 2, 2, 3, 3, 3]), 5)
    np.testing.assert_allclose(sig, [1 / 6, 0, 2 / 6, 3 / 6, 0])
    assert sig.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        signature(np.array([], dtype=int), 3)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        signature(np.array([0, 3]), 3)


def test_signature_counts_the_stride_windows():
    # 20 x 20 x 2 voxels of 1 mm, stride 5 mm: a 4 x 4 grid on each of 2 slices = 32 windows
    mask = np.ones((20, 20, 2), bool)
    centres = sliding_window_centres(mask, (1.0, 1.0, 3.0), size_mm=6.0, stride_mm=5.0)
    assert len(centres) == 32
    labels = (centres[:, 0] < 5).astype(int) + 2 * (centres[:, 2] == 1)  # 4 + 12 | 4 + 12
    sig = signature(labels, 4)
    np.testing.assert_allclose(sig, np.array([12, 4, 12, 4]) / 32)


def test_case_signatures():
    labels = np.array([0, 1, 1, 2, 2, 2, 0])
    case_index = np.array([0, 0, 0, 1, 1, 1, 2])
    sig = case_signatures(labels, case_index, 3, 3)
    np.testing.assert_allclose(sig, [[1 / 3, 2 / 3, 0], [0, 0, 1], [1, 0, 0]])
    np.testing.assert_allclose(sig.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="'liver-007'"):
        case_signatures(labels, case_index, 4, 3, case_ids=["a", "b", "c", "liver-007"])
    with pytest.raises(ValueError, match="case 3"):
        case_signatures(labels, case_index, 4, 3)


# --------------------------------------------------------------------------- leave-one-out


@pytest.fixture(scope="module")
def separable():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 12)
    X = np.column_stack([y * 4.0 + rng.normal(0, 0.5, 24), rng.normal(0, 1, 24)])
    return X, y


def test_loo_predict_on_a_separable_problem(separable):
    X, y = separable
    pred, imp = loo_predict(LogisticRegression(), X, y)
    np.testing.assert_array_equal(pred, y)
    assert imp.shape == (24, 2) and np.all(np.abs(imp[:, 0]) > np.abs(imp[:, 1]))
    proba, _ = loo_predict(LogisticRegression(), X, y, method="predict_proba")
    assert proba.shape == (24, 2)
    np.testing.assert_array_equal(proba.argmax(axis=1), y)
    # folds in two processes: the same predictions
    parallel, _ = loo_predict(LogisticRegression(), X, y, method="predict_proba", n_jobs=2)
    np.testing.assert_array_equal(parallel, proba)


def test_loo_probabilities_are_aligned_to_the_classes_of_y():
    from sklearn.dummy import DummyClassifier

    X = np.zeros((4, 1))
    y = np.array([0, 1, 1, 1])  # leaving case 0 out leaves a training fold of class 1 only
    proba, _ = loo_predict(DummyClassifier(strategy="prior"), X, y, method="predict_proba")
    assert proba.shape == (4, 2)
    np.testing.assert_allclose(proba[0], [0.0, 1.0])
    np.testing.assert_allclose(proba[1], [1 / 3, 2 / 3])


def test_loo_random_forest_importances_are_seeded(separable):
    X, y = separable
    rf = RandomForestClassifier(n_estimators=15)
    pred, imp = loo_predict(rf, X, y, seed=3)
    assert imp.shape == (24, 2) and np.all(imp[:, 0] > imp[:, 1])
    np.testing.assert_allclose(imp.sum(axis=1), 1.0)
    pred2, imp2 = loo_predict(rf, X, y, seed=3)
    np.testing.assert_array_equal(pred, pred2)
    np.testing.assert_array_equal(imp, imp2)
    assert rf.get_params()["random_state"] is None  # the caller's estimator is not touched


def test_loo_lasso_in_a_pipeline_gives_signed_coefficients(separable):
    X, y = separable
    res = loo_predict(make_pipeline(StandardScaler(), Lasso(alpha=0.05)), X, y.astype(float))
    assert res.predictions.shape == (24,)
    assert np.all(res.importances[:, 0] > 0)
    assert np.corrcoef(res.predictions, y)[0, 1] > 0.9


def test_loo_without_importances(separable):
    from sklearn.neighbors import KNeighborsClassifier

    X, y = separable
    pred, imp = loo_predict(KNeighborsClassifier(3), X, y)
    assert imp is None and pred.shape == (24,)


def test_binary_scores_by_hand():
    y_true = np.array([1, 1, 1, 0, 0, 1, 0, 1])
    y_pred = np.array([1, 0, 1, 0, 1, 1, 0, 1])
    # tp = 4, fn = 1, tn = 2, fp = 1
    s = binary_scores(y_true, y_pred)
    assert s == pytest.approx(
        {
            "accuracy": 6 / 8,
            "sensitivity": 4 / 5,
            "specificity": 2 / 3,
            "f1": 8 / 10,
            "balanced_accuracy": (4 / 5 + 2 / 3) / 2,
        }
    )
    assert s["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert s["sensitivity"] == pytest.approx(recall_score(y_true, y_pred))
    assert s["specificity"] == pytest.approx(recall_score(y_true, y_pred, pos_label=0))
    assert s["f1"] == pytest.approx(f1_score(y_true, y_pred))
    s2 = binary_scores(np.array(["high", "high"]), np.array(["high", "low"]), positive="high")
    assert s2["sensitivity"] == 0.5 and np.isnan(s2["specificity"])


def test_top_k_frequency():
    imp = np.array([[3.0, 2.0, 1.0], [3.0, 1.0, 2.0], [1.0, 3.0, 2.0], [5.0, 4.0, -6.0]])
    np.testing.assert_allclose(top_k_frequency(imp, 1), [2 / 4, 1 / 4, 1 / 4])
    np.testing.assert_allclose(top_k_frequency(imp, 1, absolute=False), [3 / 4, 1 / 4, 0])
    # k = 2 by magnitude: rows pick {0,1}, {0,2}, {1,2}, {2,0}
    np.testing.assert_allclose(top_k_frequency(imp, 2), [3 / 4, 2 / 4, 3 / 4])
    np.testing.assert_allclose(top_k_frequency(imp, 3), 1.0)
    np.testing.assert_allclose(top_k_frequency(np.array([[1.0, 1.0, 0.0]]), 1), [1, 0, 0])
    with pytest.raises(ValueError, match="k must"):
        top_k_frequency(imp, 4)


# --------------------------------------------------------------------------- repeated CV


def test_repeated_cv_proba_shape_folds_and_seeds(separable):
    X, y = separable
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, (24, 2))
    features = {"a": X, "copy": X.copy(), "noise": noise, "other_seed": X}
    seeds = {"a": 0, "copy": 0, "noise": 0, "other_seed": 5}
    rf = RandomForestClassifier(n_estimators=5)
    out = repeated_cv_proba(rf, features, y, seeds=seeds, n_folds=4, n_repeats=3, seed=2)
    assert list(out) == list(features)
    for proba in out.values():
        assert proba.shape == (3, 24, 2)  # (n_repeats, n, n_classes)
        np.testing.assert_allclose(proba.sum(axis=2), 1.0)
    # the same folds for every key: a copy of the features with the same seed, the same fits
    np.testing.assert_array_equal(out["a"], out["copy"])
    # a separable problem: (nearly) every out-of-fold call right, in every repeat
    assert (out["a"].argmax(axis=2) == y).mean(axis=1).min() > 0.9
    # each repeat is a new fit (its own folds and forest seed), and so is another key's seed
    assert not np.array_equal(out["noise"][0], out["noise"][1])
    assert not np.array_equal(out["a"], out["other_seed"])
    # folds in two processes: the same probabilities
    parallel = repeated_cv_proba(
        rf, features, y, seeds=seeds, n_folds=4, n_repeats=3, seed=2, n_jobs=2
    )
    for key in features:
        np.testing.assert_array_equal(parallel[key], out[key])
    # the split seed picks the folds: another seed, other out-of-fold probabilities
    moved = repeated_cv_proba(rf, {"noise": noise}, y, seeds={"noise": 0}, n_folds=4, n_repeats=3)
    assert not np.array_equal(moved["noise"], out["noise"])
    assert rf.get_params()["random_state"] is None  # the caller's estimator is not touched


def test_repeated_cv_proba_folds_are_stratified_and_cover_every_case():
    from sklearn.dummy import DummyClassifier

    y = np.repeat([0, 1, 2], [8, 8, 4])
    X = np.zeros((20, 1))
    out = repeated_cv_proba(
        DummyClassifier(strategy="prior"), {"x": X}, y, seeds={"x": 0}, n_folds=4, n_repeats=2
    )["x"]
    assert out.shape == (2, 20, 3)
    # each training fold holds 3/4 of every class (stratified): the prior is the class shares
    np.testing.assert_allclose(out, np.tile([0.4, 0.4, 0.2], (2, 20, 1)))


def test_loo_predict_matches_leave_one_out_by_hand(separable):
    """loo_predict's folds now return all their test rows: still one prediction per case, in
    order, the same as fitting each fold by hand."""
    from sklearn.neighbors import KNeighborsClassifier

    X, y = separable
    knn = KNeighborsClassifier(4)  # probabilities in quarters: ties and all
    proba, _ = loo_predict(knn, X, y, method="predict_proba")
    pred, _ = loo_predict(knn, X, y)
    assert proba.shape == (24, 2) and pred.shape == (24,)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        est = KNeighborsClassifier(4).fit(X[keep], y[keep])
        np.testing.assert_array_equal(proba[i], est.predict_proba(X[i : i + 1])[0])
        assert pred[i] == est.predict(X[i : i + 1])[0]
