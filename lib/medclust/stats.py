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
) -> LOOResult:
    """Leave-one-out out-of-fold predictions with a fresh ``clone`` of ``estimator`` per fold.

    ``seed`` sets every ``random_state`` of the estimator (pipelines included) to the same value
    in every fold, so fold-to-fold differences in importances come from the data alone and the
    whole evaluation is reproducible; ``None`` leaves the estimator's own ``random_state``
    untouched (an unseeded random forest then gives different results on every call).
    ``method`` is the prediction method, e.g. ``"predict"`` or ``"predict_proba"``.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n, n_features) with n = len(y); got {X.shape}, {y.shape}")
    if len(X) < 2:
        raise ValueError("leave-one-out needs at least two samples")
    preds, imps = [], []
    for train, test in LeaveOneOut().split(X):
        est = _with_seed(clone(estimator), seed).fit(X[train], y[train])
        preds.append(np.asarray(getattr(est, method)(X[test]))[0])
        imps.append(_importance(est))
    importances = None if any(i is None for i in imps) else np.vstack(imps)
    return LOOResult(np.asarray(preds), importances)


def binary_scores(y_true: np.ndarray, y_pred: np.ndarray, positive: Any = 1) -> dict[str, float]:
    """Accuracy, sensitivity (recall of ``positive``), specificity (recall of the rest) and F1
    of the positive class, as reported in Perkonigg et al., Sec. 3.

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

    return {
        "accuracy": (tp + tn) / t.size,
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
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
