"""Leave-one-out evaluation of signature classifiers (Perkonigg et al., Sec. 3).

The paper predicts steatosis grade and low/high steatosis from the signatures with a random
forest and LASSO "using a Leave-One-Out cross validation scheme", reports accuracy,
sensitivity, specificity and F1 for low/high, and ranks clusters by their random-forest feature
importance "across leave-one-out samples" (Fig. 2: "clusters 2, 10, 9 and 8 are consistently the
most important"). These helpers compute exactly those quantities.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import LeaveOneOut
from sklearn.pipeline import Pipeline

from medclust.validation import check_int


class LOOResult(NamedTuple):
    """Out-of-fold predictions ``(n,)`` (or ``(n, k)`` for ``predict_proba``) and, if the final
    estimator exposes ``feature_importances_`` or ``coef_``, the per-fold importances
    ``(n_folds, n_features)`` (else ``None``). Unpacks as ``pred, imp = loo_predict(...)``."""

    predictions: np.ndarray
    importances: np.ndarray | None


def _final_step(est: Any) -> Any:
    return est.steps[-1][1] if isinstance(est, Pipeline) else est


def _importance(est: Any) -> np.ndarray | None:
    final = _final_step(est)
    if hasattr(final, "feature_importances_"):
        return np.asarray(final.feature_importances_, dtype=np.float64).ravel()
    if hasattr(final, "coef_"):
        coef = np.asarray(final.coef_, dtype=np.float64)
        if coef.ndim == 2 and coef.shape[0] > 1:
            # one row per class/output: summarise a feature by the L2 norm of its coefficients
            return np.linalg.norm(coef, axis=0)
        return coef.ravel()  # signed, e.g. LASSO coefficients
    return None


def _with_seed(est: Any, seed: int | None) -> Any:
    """Set every ``random_state`` parameter (also inside pipelines) to ``seed``."""
    if seed is None:
        return est
    seed = check_int("seed", seed, 0)
    keys = [
        k for k in est.get_params(deep=True) if k == "random_state" or k.endswith("__random_state")
    ]
    return est.set_params(**dict.fromkeys(keys, int(seed))) if keys else est


def loo_predict(
    estimator: Any,
    X: np.ndarray,
    y: np.ndarray,
    method: str = "predict",
    seed: int | None = 0,
    n_jobs: int | None = None,
) -> LOOResult:
    """Leave-one-out out-of-fold predictions with a fresh ``clone`` of ``estimator`` per fold.

    ``seed`` sets every ``random_state`` of the estimator (pipelines included) to the same value
    in every fold, so fold-to-fold differences in importances come from the data alone and the
    whole evaluation is reproducible; ``None`` leaves the estimator's own ``random_state``
    untouched (an unseeded random forest then gives different results on every call).
    ``method`` is the prediction method, e.g. ``"predict"`` or ``"predict_proba"``; the
    probabilities of ``"predict_proba"`` are aligned to the classes of the whole ``y`` (sorted),
    a class missing from a training fold getting probability 0. ``n_jobs`` runs the folds in
    that many processes (joblib; ``-1``: every core); each fold is seeded, so the result is the
    same whatever ``n_jobs``.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n, n_features) with n = len(y); got {X.shape}, {y.shape}")
    if len(X) < 2:
        raise ValueError("leave-one-out needs at least two samples")
    classes = np.unique(y) if method == "predict_proba" else None
    folds = Parallel(n_jobs=n_jobs)(
        delayed(_fold)(estimator, X, y, train, test, method, seed, classes)
        for train, test in LeaveOneOut().split(X)
    )
    preds, imps = zip(*folds, strict=True)
    importances = None if any(i is None for i in imps) else np.vstack(imps)
    return LOOResult(np.concatenate(preds), importances)


def _fold(
    estimator, X, y, train, test, method, seed, classes
) -> tuple[np.ndarray, np.ndarray | None]:
    """One fold: the predictions of the ``test`` rows (probabilities aligned to ``classes``,
    those of the whole ``y``, when given) and the importances."""
    est = _with_seed(clone(estimator), seed).fit(X[train], y[train])
    pred = np.asarray(getattr(est, method)(X[test]))
    if classes is not None:
        aligned = np.zeros((len(test), len(classes)))
        aligned[:, np.searchsorted(classes, est.classes_)] = pred
        pred = aligned
    return pred, _importance(est)


def repeated_cv_proba(
    estimator: Any,
    features: dict[Any, np.ndarray],
    y: np.ndarray,
    *,
    seeds: dict[Any, int],
    n_folds: int = 5,
    n_repeats: int = 10,
    seed: int = 0,
    n_jobs: int | None = None,
) -> dict[Any, np.ndarray]:
    """Out-of-fold class probabilities under ``n_repeats`` repetitions of stratified
    ``n_folds``-fold cross-validation with a fresh fit per fold, for every feature set of
    ``features`` (``{key: X}``): ``{key: (n_repeats, n, n_classes)}``, classes sorted.

    Every feature set gets the same folds (``RepeatedStratifiedKFold`` seeded by ``seed``), so
    feature sets compare on the same splits; the estimator of key ``k`` in repeat ``r`` is
    seeded with :func:`medclust.runtime.sub_seed` ``(seeds[k], r + 1)``, so each repeat is
    also a new fit. Unlike one leave-one-out pass, the repeats show how much a score moves
    when the folds and the fit change (Nadeau and Bengio 2003; Bouckaert and Frank 2004).
    All folds of all keys run in one pool of ``n_jobs`` processes; each is seeded, so the
    result is the same whatever ``n_jobs``."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    from medclust.runtime import sub_seed

    y = np.asarray(y)
    classes = np.unique(y)
    splitter = RepeatedStratifiedKFold(
        n_splits=n_folds, n_repeats=n_repeats, random_state=int(seed)
    )
    splits = list(splitter.split(np.zeros((len(y), 1)), y))
    tasks = [
        (key, i // n_folds, test, sub_seed(seeds[key], i // n_folds + 1), train)
        for key in features
        for i, (train, test) in enumerate(splits)
    ]
    done = Parallel(n_jobs=n_jobs)(
        delayed(_fold)(estimator, features[key], y, train, test, "predict_proba", s, classes)
        for key, _, test, s, train in tasks
    )
    out = {key: np.zeros((n_repeats, len(y), len(classes))) for key in features}
    for (key, repeat, test, _, _), (pred, _) in zip(tasks, done, strict=True):
        out[key][repeat, test] = pred
    return out


def binary_scores(y_true: np.ndarray, y_pred: np.ndarray, positive: Any = 1) -> dict[str, float]:
    """Accuracy, sensitivity (recall of ``positive``), specificity (recall of the rest) and F1
    of the positive class, as reported in Perkonigg et al., Sec. 3, and the balanced accuracy,
    their mean of sensitivity and specificity (0.5 for any constant prediction, whatever the
    class balance: the score a majority-class floor cannot pass).

    Ratios with a zero denominator (e.g. specificity without negatives) are ``nan`` rather than
    0, so an undefined score cannot pass for a bad one.
    """
    t = np.asarray(y_true) == positive
    p = np.asarray(y_pred) == positive
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {t.shape}, {p.shape}")
    if t.size == 0:
        raise ValueError("no samples to score")
    tp = int(np.sum(t & p))
    tn = int(np.sum(~t & ~p))
    fp = int(np.sum(~t & p))
    fn = int(np.sum(t & ~p))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    sensitivity, specificity = ratio(tp, tp + fn), ratio(tn, tn + fp)
    return {
        "accuracy": (tp + tn) / t.size,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": (sensitivity + specificity) / 2,
    }


def top_k_frequency(importances: np.ndarray, k: int, absolute: bool = True) -> np.ndarray:
    """Fraction of folds (rows) in which each feature ranks among the ``k`` most important.

    ``absolute=True`` ranks by magnitude, so large negative LASSO coefficients count as
    important (a no-op for random-forest importances, which are non-negative). Ties are broken
    towards the lower feature index (stable sort), so the result is deterministic.
    """
    imp = np.asarray(importances, dtype=np.float64)
    if imp.ndim != 2 or imp.shape[0] == 0:
        raise ValueError(f"importances must be (n_folds, n_features), got {imp.shape}")
    k = check_int("k", k, 1, imp.shape[1])
    score = np.abs(imp) if absolute else imp
    top = np.argsort(-score, axis=1, kind="stable")[:, :k]
    hits = np.zeros_like(score, dtype=bool)
    np.put_along_axis(hits, top, True, axis=1)
    return hits.mean(axis=0)
