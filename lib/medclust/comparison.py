"""Verdicts that hold: paired, seed-aware bootstrap differences and permutation chance levels.

Every study scores its methods on the same items (test scans, annotated slices, cases, images)
and most train them with several seeds. Whether method A is *better* than method B is then a
question about the **difference** of their scores, not about two intervals side by side: two
methods that share the items share most of their sampling noise, which cancels in the
difference (two overlapping intervals can hide a method that wins on every draw), while
training noise does not cancel and an interval over the items alone cannot see it.

* :class:`Resamples` -- the bootstrap resamples shared by every method of a comparison: ``B``
  draws of the items with replacement (within strata where given), and for each draw a draw
  of the runs (seeds) with replacement. Methods with as many runs share the run draws, so run
  ``r`` of A is compared with run ``r`` of B (the same seed, the same training data where the
  study shares it); a deterministic method has one run.
* :class:`Scored` -- one method's score of each run on all items (``point``) and on every draw
  (``boot``); built by :func:`partition_scores` (ACC / NMI / ARI of clusters against classes),
  :func:`mean_scores` (a per-item value such as "correct" or a per-scan AUC) or directly from
  any statistic of the item weights.
* :func:`interval` -- one method's mean over runs with its two-level (hierarchical) bootstrap
  interval: items and runs resampled (Davison and Hinkley, *Bootstrap methods and their
  application*, 1997, Sec. 3.8), percentile ends shifted by the bootstrap bias (Efron and
  Tibshirani 1993, Sec. 10.2; :func:`medclust.metrics.percentile_interval`).
* :func:`paired_difference` -- A minus B on the same draws, its percentile interval and the
  **verdict** ("better", "worse", "cannot tell") from that interval alone, with the spread of
  the difference over runs and the runs A wins stated beside it. The ends are not shifted by
  the bootstrap bias: on the same draws the two scores' biases largely cancel, and a shift
  of a few 1e-5 could otherwise move an end that sits on 0 (two methods that differ on a
  single test image, the same image in every seed) off it.
* :func:`chance_level` -- the permutation null of a clustering score at the method's own
  cluster sizes and the classes' sizes: shuffling the predictions over the items keeps both
  margins of the contingency table and draws the table from the multivariate hypergeometric
  law, which :func:`scipy.stats.random_table` samples directly (Patefield 1981). For ACC with
  K clusters this is not 1/K nor the one-cluster score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.stats import random_table

from medclust.metrics import bootstrap_draws, nmi_from_contingency, percentile_interval

#: The verdict words, by the sign of the difference interval (above 0, below 0, across 0).
BETTER, WORSE, CANNOT_TELL = "better", "worse", "cannot tell"

#: The clustering scores :func:`partition_scores` and :func:`chance_level` know.
PARTITION_SCORES = ("acc", "nmi", "ari")

#: The range of each score: intervals are clipped to it (a percentile end shifted by the
#: bootstrap bias can pass it, e.g. an AUC interval ending at 1.004).
SCORE_RANGE = {
    "acc": (0.0, 1.0),
    "nmi": (0.0, 1.0),
    "ari": (-1.0, 1.0),
    "auc": (0.0, 1.0),
    "balanced_accuracy": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "silhouette": (-1.0, 1.0),
    "davies_bouldin": (0.0, np.inf),
}


# --------------------------------------------------------------------------- resamples


@dataclass(frozen=True)
class Resamples:
    """``n_boot`` bootstrap draws of ``n`` items (within each stratum of ``strata`` when given,
    :func:`medclust.metrics.bootstrap_draws`) and, per draw, a draw of a method's runs. Every
    method of a comparison is scored on the same draws."""

    n: int
    n_boot: int = 1000
    seed: int = 0
    strata: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def idx(self) -> np.ndarray:
        """``(n_boot, n)`` item indices of every draw."""
        return bootstrap_draws(self.n, self.n_boot, self.seed, self.strata)

    @cached_property
    def weights(self) -> np.ndarray:
        """``(n_boot, n)``: how often each draw took each item."""
        offsets = np.arange(self.n_boot)[:, None] * self.n
        counts = np.bincount((self.idx + offsets).ravel(), minlength=self.n_boot * self.n)
        return counts.reshape(self.n_boot, self.n)

    def runs(self, n_runs: int) -> np.ndarray:
        """``(n_boot, n_runs)`` run indices drawn with replacement; the same for every method
        with ``n_runs`` runs (seeded by ``(seed, n_runs)``), so such methods stay paired."""
        if n_runs == 1:
            return np.zeros((self.n_boot, 1), dtype=np.int64)
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), 1, int(n_runs)]))
        return rng.integers(0, n_runs, size=(self.n_boot, n_runs))


@dataclass(frozen=True)
class Scored:
    """A method's score per run on all items (``point``, ``(n_runs,)``) and on each draw of a
    :class:`Resamples` (``boot``, ``(n_runs, n_boot)``)."""

    point: np.ndarray
    boot: np.ndarray

    def __post_init__(self) -> None:
        point, boot = np.atleast_1d(self.point), np.atleast_2d(self.boot)
        if boot.shape[0] != point.shape[0]:
            raise ValueError(f"point has {point.shape[0]} runs, boot {boot.shape[0]}")
        object.__setattr__(self, "point", point.astype(np.float64))
        object.__setattr__(self, "boot", boot.astype(np.float64))

    @property
    def n_runs(self) -> int:
        return len(self.point)

    @property
    def mean(self) -> float:
        """The score: mean over runs on all items."""
        return float(np.mean(self.point))

    @property
    def sd(self) -> float:
        """Sample sd over runs (0 for one run)."""
        return float(np.std(self.point, ddof=1)) if self.n_runs > 1 else 0.0

    def resampled(self, resamples: Resamples, seeds: bool = True) -> np.ndarray:
        """``(n_boot,)``: each draw's mean over its draw of runs (over all runs when
        ``seeds`` is false: the items alone resampled)."""
        if not seeds or self.n_runs == 1:
            return self.boot.mean(axis=0)
        runs = resamples.runs(self.n_runs)
        return np.take_along_axis(self.boot.T, runs, axis=1).mean(axis=1)


def scored_by(
    statistics: Sequence[Callable[[np.ndarray], np.ndarray]], resamples: Resamples
) -> Scored:
    """A :class:`Scored` from one statistic per run, each mapping item weights ``(m, n)`` to
    ``(m,)`` scores (weights of ones give the score on all items)."""
    ones = np.ones((1, resamples.n))
    point = [float(np.asarray(stat(ones))[0]) for stat in statistics]
    boot = [np.asarray(stat(resamples.weights), dtype=np.float64) for stat in statistics]
    return Scored(np.array(point), np.stack(boot))


def mean_scores(values: Sequence[np.ndarray], resamples: Resamples) -> Scored:
    """A per-item value per run (``values[r]``, ``(n,)``: e.g. 1 for a correct prediction, a
    scan's AUC) scored as its mean over the items of each draw."""
    values = [np.asarray(v, dtype=np.float64) for v in values]
    for v in values:
        if v.shape != (resamples.n,):
            raise ValueError(f"need one value per item ({resamples.n}), got shape {v.shape}")
    return scored_by([lambda w, v=v: (w @ v) / w.sum(axis=1) for v in values], resamples)


# --------------------------------------------------------------------------- clustering scores


def _codes(labels) -> tuple[np.ndarray, int]:
    values, codes = np.unique(np.asarray(labels), return_inverse=True)
    return codes.ravel(), len(values)


def contingency_tables(y_true, y_pred, weights: np.ndarray) -> np.ndarray:
    """``(m, classes, clusters)`` counts of every class and cluster under each row of item
    ``weights`` ``(m, n)`` (a row of ones: the plain contingency table)."""
    t, n_t = _codes(y_true)
    p, n_p = _codes(y_pred)
    if len(t) != len(p) or weights.shape[-1] != len(t):
        raise ValueError(f"y_true, y_pred and weights differ in length: {len(t)}, {len(p)}")
    cells = np.zeros((len(t), n_t * n_p))
    cells[np.arange(len(t)), t * n_p + p] = 1.0
    return (np.atleast_2d(weights) @ cells).reshape(-1, n_t, n_p)


def acc_from_tables(tables: np.ndarray) -> np.ndarray:
    """Hungarian cluster accuracy (DEC, Xie et al. 2016, Eq. 10) of each table ``(m, a, b)``."""
    tables = np.asarray(tables, dtype=np.float64)
    out = np.empty(len(tables))
    for i, table in enumerate(tables):
        rows, cols = linear_sum_assignment(table, maximize=True)
        out[i] = table[rows, cols].sum() / table.sum()
    return out


def ari_from_tables(tables: np.ndarray) -> np.ndarray:
    """Adjusted Rand index (Hubert and Arabie 1985) of each table ``(m, a, b)``, as
    scikit-learn's ``adjusted_rand_score`` on the labels the table counts (1.0 where both
    labelings are a single cluster or one cluster per item)."""
    t = np.asarray(tables, dtype=np.float64)

    def pairs(x: np.ndarray) -> np.ndarray:
        return (x * (x - 1) / 2).sum(axis=-1)

    n = t.sum(axis=(-2, -1))
    index = pairs(t.reshape(len(t), -1))
    rows, cols = pairs(t.sum(-1)), pairs(t.sum(-2))
    expected = rows * cols / np.maximum(n * (n - 1) / 2, 1.0)
    maximum = (rows + cols) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        ari = (index - expected) / (maximum - expected)
    return np.where(maximum == expected, 1.0, ari)


def scores_from_tables(tables: np.ndarray, score: str) -> np.ndarray:
    """``score`` (:data:`PARTITION_SCORES`) of each contingency table ``(m, classes, clusters)``."""
    if score == "acc":
        return acc_from_tables(tables)
    if score == "nmi":
        return np.atleast_1d(nmi_from_contingency(tables))
    if score == "ari":
        return ari_from_tables(tables)
    raise ValueError(f"score must be one of {PARTITION_SCORES}, got {score!r}")


def partition_scores(y_true, predictions: Sequence, score: str, resamples: Resamples) -> Scored:
    """ACC, NMI or ARI (``score``) of each run's clusters (``predictions[r]``) against the
    classes ``y_true``, on all items and on every draw of ``resamples``."""
    return scored_by(
        [
            lambda w, p=p: scores_from_tables(contingency_tables(y_true, p, w), score)
            for p in predictions
        ],
        resamples,
    )


# --------------------------------------------------------------------------- intervals, verdicts


def _clipped(low: float, high: float, bounds: tuple[float, float] | None):
    if bounds is None:
        return low, high
    return float(np.clip(low, *bounds)), float(np.clip(high, *bounds))


def interval(
    scored: Scored,
    resamples: Resamples,
    level: float = 0.95,
    seeds: bool = True,
    bounds: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """The ``level`` interval of ``scored``'s mean over runs: items and (with ``seeds``) runs
    resampled, ends shifted by the bootstrap bias and clipped to the score's ``bounds``."""
    ends = percentile_interval(scored.resampled(resamples, seeds), level, scored.mean)
    return _clipped(*ends, bounds)


@dataclass(frozen=True)
class Difference:
    """Method ``a`` minus method ``b`` on one score: the difference of their means over runs,
    its bootstrap interval and the verdict from it; the spread of the difference over runs
    (``run_sd``) and how many of the compared runs ``a`` won (``runs_won`` of ``runs``)."""

    a: str
    b: str
    score: str
    diff: float
    low: float
    high: float
    verdict: str
    run_sd: float
    runs_won: int
    runs: int
    higher_is_better: bool = True

    def as_text(self, digits: int = 3) -> str:
        """``"+0.052 [+0.021, +0.080]"``."""
        f = f"{{:+.{digits}f}}"
        return f"{f.format(self.diff)} [{f.format(self.low)}, {f.format(self.high)}]"


def verdict(low: float, high: float, higher_is_better: bool = True) -> str:
    """ "better" when the difference interval lies above 0 (below 0 for a score where lower is
    better), "worse" when on the other side, "cannot tell" when it holds 0."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return CANNOT_TELL
    if low > 0:
        return BETTER if higher_is_better else WORSE
    if high < 0:
        return WORSE if higher_is_better else BETTER
    return CANNOT_TELL


def _run_differences(a: Scored, b: Scored) -> np.ndarray:
    """Per-run differences on all items: run by run where both have as many runs, else every
    run of ``a`` against every run of ``b``."""
    if a.n_runs == b.n_runs:
        return a.point - b.point
    return (a.point[:, None] - b.point[None, :]).ravel()


def paired_difference(
    a: Scored,
    b: Scored,
    resamples: Resamples,
    *,
    names: tuple[str, str] = ("a", "b"),
    score: str = "",
    level: float = 0.95,
    higher_is_better: bool = True,
    seeds: bool = True,
    bounds: tuple[float, float] | None = None,
) -> Difference:
    """``a - b`` on the same draws of the items (and of the runs, with ``seeds``): the
    percentile interval of the differences (clipped to the differences a score within
    ``bounds`` allows) and the verdict from it alone."""
    if a.boot.shape[1] != resamples.n_boot or b.boot.shape[1] != resamples.n_boot:
        raise ValueError("a and b must be scored on the given resamples")
    diffs = a.resampled(resamples, seeds) - b.resampled(resamples, seeds)
    point = a.mean - b.mean
    low, high = percentile_interval(diffs, level)
    if bounds is not None:
        low, high = _clipped(low, high, (bounds[0] - bounds[1], bounds[1] - bounds[0]))
    per_run = _run_differences(a, b)
    wins = per_run > 0 if higher_is_better else per_run < 0
    return Difference(
        a=names[0],
        b=names[1],
        score=score,
        diff=point,
        low=low,
        high=high,
        verdict=verdict(low, high, higher_is_better),
        run_sd=float(np.std(per_run, ddof=1)) if len(per_run) > 1 else 0.0,
        runs_won=int(wins.sum()),
        runs=len(per_run),
        higher_is_better=higher_is_better,
    )


def differences_table(differences: Sequence[Difference], digits: int = 3) -> pd.DataFrame:
    """One row per :class:`Difference` (``tables/*_differences``)."""
    return pd.DataFrame(
        [
            {
                "score": d.score,
                "method": d.a,
                "versus": d.b,
                "difference": d.diff,
                "low": d.low,
                "high": d.high,
                "verdict": d.verdict,
                "run_sd": d.run_sd,
                "runs_won": f"{d.runs_won} of {d.runs}",
                "text": d.as_text(digits),
            }
            for d in differences
        ]
    )


# --------------------------------------------------------------------------- chance levels


@dataclass(frozen=True)
class Chance:
    """The permutation null of a clustering score: its mean over ``n_perm`` shuffles, the
    ``level`` interval of the null, the observed score and the permutation p-value
    ``(1 + #{null >= observed}) / (1 + n_perm)`` (Phipson and Smyth 2010)."""

    score: str
    mean: float
    low: float
    high: float
    observed: float
    p_value: float
    n_perm: int


def random_tables(table: np.ndarray, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_perm, a, b)`` contingency tables with the margins of ``table``: the tables of
    the same labels after shuffling one labeling over the items."""
    table = np.asarray(table, dtype=np.int64)
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    keep_r, keep_c = rows > 0, cols > 0
    if keep_r.sum() == 1 or keep_c.sum() == 1:
        # one row or one column: the margins fix the table (and scipy's Patefield sampler
        # returns negative counts for such margins, e.g. [20, 20, -20] for [20, 20, 20] x [60])
        return np.repeat(table[np.ix_(keep_r, keep_c)][None], n_perm, axis=0)
    draws = random_table(rows[keep_r], cols[keep_c]).rvs(size=n_perm, random_state=rng)
    return np.asarray(draws).reshape(n_perm, keep_r.sum(), keep_c.sum())


def chance_level(
    y_true,
    predictions: Sequence,
    score: str,
    *,
    n_perm: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Chance:
    """The null of ``score``'s mean over runs when every run's clusters are shuffled over the
    items (each run keeps its own cluster sizes; the classes keep theirs)."""
    if score not in PARTITION_SCORES:
        raise ValueError(f"score must be one of {PARTITION_SCORES}, got {score!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    null, observed = np.zeros(n_perm), []
    ones = np.ones((1, len(np.asarray(y_true))))
    for pred in predictions:
        table = contingency_tables(y_true, pred, ones)[0]
        observed.append(float(scores_from_tables(table[None], score)[0]))
        null += scores_from_tables(random_tables(table, n_perm, rng), score)
    null /= len(predictions)
    return null_summary(null, float(np.mean(observed)), score, level)


def null_summary(null: np.ndarray, observed: float, score: str, level: float = 0.95) -> Chance:
    """:class:`Chance` from the null scores of the permutations and the observed score."""
    null = np.asarray(null, dtype=np.float64)
    low, high = np.quantile(null, [(1 - level) / 2, (1 + level) / 2])
    p = (1 + np.sum(null >= observed - 1e-12)) / (1 + len(null))
    return Chance(score, float(null.mean()), float(low), float(high), observed, float(p), len(null))


def chance_table(chances: dict[str, Sequence[Chance]]) -> pd.DataFrame:
    """One row per method and score: observed, the null's mean and interval, p-value."""
    return pd.DataFrame(
        [
            {
                "method": method,
                "score": c.score,
                "observed": c.observed,
                "chance": c.mean,
                "chance_low": c.low,
                "chance_high": c.high,
                "p_value": c.p_value,
                "n_perm": c.n_perm,
            }
            for method, cs in chances.items()
            for c in cs
        ]
    )


# --------------------------------------------------------------------------- many methods


def per_draw(statistic: Callable[[np.ndarray], float]) -> Callable[[np.ndarray], np.ndarray]:
    """A statistic of item indices (``statistic(idx)``, e.g. Davies-Bouldin of the resampled
    points) as a statistic of item weights ``(m, n)`` for :func:`scored_by`: each row's
    items, repeated as often as drawn."""

    def of_weights(weights: np.ndarray) -> np.ndarray:
        items = np.arange(weights.shape[1])
        return np.array([statistic(np.repeat(items, row)) for row in weights.astype(np.int64)])

    return of_weights


class MethodScores:
    """Every method's :class:`Scored` per score, on one :class:`Resamples`: the mean ± sd
    over runs with its interval (:meth:`summary`) and paired differences (:meth:`compare`)."""

    def __init__(self, resamples: Resamples, level: float = 0.95) -> None:
        self.resamples, self.level = resamples, level
        self.scored: dict[tuple[str, str], Scored] = {}

    def add(self, method: str, score: str, scored: Scored) -> None:
        if scored.boot.shape[1] != self.resamples.n_boot:
            raise ValueError(f"{method}/{score}: scored on other resamples")
        self.scored[method, score] = scored

    def add_partitions(
        self, method: str, y_true, predictions: Sequence, scores: Sequence[str] = PARTITION_SCORES
    ) -> None:
        """ACC / NMI / ARI of every run's clusters against ``y_true``."""
        for score in scores:
            self.add(method, score, partition_scores(y_true, predictions, score, self.resamples))

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(m for m, _ in self.scored))

    def summary(self) -> pd.DataFrame:
        """One row per method: ``<score>_mean``, ``_std`` (over runs), ``_ci_low``,
        ``_ci_high`` (items and runs resampled)."""
        rows: dict[str, dict[str, float]] = {}
        for (method, score), scored in self.scored.items():
            low, high = interval(scored, self.resamples, self.level, bounds=SCORE_RANGE.get(score))
            rows.setdefault(method, {}).update(
                {
                    f"{score}_mean": scored.mean,
                    f"{score}_std": scored.sd if scored.n_runs > 1 else np.nan,
                    f"{score}_ci_low": low,
                    f"{score}_ci_high": high,
                }
            )
        return pd.DataFrame.from_dict(rows, orient="index")

    def compare(self, a: str, b: str, score: str, *, higher_is_better: bool = True) -> Difference:
        """:func:`paired_difference` of methods ``a`` and ``b`` on ``score``."""
        return paired_difference(
            self.scored[a, score],
            self.scored[b, score],
            self.resamples,
            names=(a, b),
            score=score,
            level=self.level,
            higher_is_better=higher_is_better,
            bounds=SCORE_RANGE.get(score),
        )


# --------------------------------------------------------------------------- binary scores


def binary_statistic(y_true, p_positive, score: str) -> Callable[[np.ndarray], np.ndarray]:
    """``score`` of the probabilities ``p_positive`` of the positive class (``y_true`` 1)
    as a statistic of item weights ``(m, n)``: ``"auc"`` (ROC AUC, ties counted half, as
    scikit-learn's ``roc_auc_score`` with the weights as ``sample_weight``), and, for the
    prediction ``p > 0.5``, ``"balanced_accuracy"`` (mean of sensitivity and specificity) and
    ``"f1"`` of the positive class."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(p_positive, dtype=np.float64)
    if score == "auc":
        pos, neg = p[y], p[~y]
        wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])

        def auc(w: np.ndarray) -> np.ndarray:
            wp, wn = w[:, y], w[:, ~y]
            return np.einsum("bi,ij,bj->b", wp, wins, wn) / (wp.sum(1) * wn.sum(1))

        return auc
    pred = p > 0.5
    if score == "balanced_accuracy":
        hit_pos, hit_neg = (pred & y).astype(float), (~pred & ~y).astype(float)

        def bacc(w: np.ndarray) -> np.ndarray:
            return 0.5 * (w @ hit_pos / (w @ y) + w @ hit_neg / (w @ ~y))

        return bacc
    if score == "f1":
        tp, fp, fn = (pred & y).astype(float), (pred & ~y).astype(float), (~pred & y).astype(float)

        def f1(w: np.ndarray) -> np.ndarray:
            t = w @ tp
            with np.errstate(invalid="ignore"):
                return np.nan_to_num(2 * t / (2 * t + w @ fp + w @ fn))

        return f1
    raise ValueError(f"score must be 'auc', 'balanced_accuracy' or 'f1', got {score!r}")


def binary_scores(y_true, p_positive: Sequence, score: str, resamples: Resamples) -> Scored:
    """:func:`binary_statistic` of every run's probabilities ``p_positive[r]``."""
    return scored_by([binary_statistic(y_true, p, score) for p in p_positive], resamples)
