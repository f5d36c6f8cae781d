"""Pieces every study notebook shares: starting a run and mean +- sd summaries over seeds."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medclust.comparison import Chance, Difference
from medclust.outputs import Report
from medclust.validation import check_int


@dataclass
class StudyRun:
    """A running study: its :class:`~medclust.outputs.Report` and its start time."""

    report: Report
    started: float = field(default_factory=time.perf_counter)

    def runtime_s(self) -> float:
        """Seconds since :func:`start` (the ``runtime_s`` metric of every study)."""
        return time.perf_counter() - self.started


def start(report_dir: str, positive_ints: Mapping[str, Any] | None = None) -> StudyRun:
    """Log to the notebook, check the integer params (``{"n_seeds": n_seeds, ...}``; each must be
    >= 1, the error names ``param <name>``) and open the report folder."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    for name, value in (positive_ints or {}).items():
        check_int(f"param {name}", value)
    return StudyRun(Report(report_dir), started)


def seeds_from(seed: int, n_seeds: int) -> list[int]:
    """The seeds of a study: ``seed, seed + 1, ..., seed + n_seeds - 1``."""
    return [int(seed) + i for i in range(int(n_seeds))]


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``"0.576 ± 0.012"`` (sample sd, ddof 1) or just the mean for a single value."""
    values = np.asarray(values, dtype=float)
    text = f"{values.mean():.{digits}f}"
    return text + (f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else "")


#: How a sentence reads a verdict of :func:`medclust.comparison.paired_difference`.
VERDICT_WORDS = {
    "better": "is better than",
    "worse": "is worse than",
    "cannot tell": "cannot be told apart from",
}


def verdict_clause(
    difference: Difference,
    names: Mapping[str, str] | None = None,
    digits: int = 3,
    runs: str = "seeds",
) -> str:
    """``"is better than B (paired difference +0.052 [+0.021, +0.080]; won 3 of 3 seeds)"``:
    the verdict of a paired difference, read from its interval alone (``names`` relabel the
    methods, ``runs`` names what the compared runs are)."""
    rival = (names or {}).get(difference.b, difference.b)
    d = difference
    won = f"; won {d.runs_won} of {d.runs} {runs}" if d.runs > 1 else ""
    return f"{VERDICT_WORDS[d.verdict]} {rival} (paired difference {d.as_text(digits)}{won})"


def sd_or_zero(values: Sequence[float]) -> float:
    """Sample sd over seeds (ddof 1), 0.0 for a single seed (the ``*_sd`` metrics)."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def mean_sd_table(
    results: pd.DataFrame,
    by: str,
    metrics: Sequence[str],
    order: Sequence[str] | None = None,
    names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per ``by`` value, columns ``<metric>_mean`` and ``<metric>_std`` over the rows
    (seeds) of that value; rows in ``order``, relabelled by ``names``."""
    table = results.groupby(by)[list(metrics)].agg(["mean", "std"])
    if order is not None:
        table = table.reindex(list(order))
    table.columns = [f"{a}_{b}" for a, b in table.columns]
    if names is not None:
        table.index = [names.get(m, m) for m in table.index]
    return table


class SplitMasks:
    """``train`` / ``val`` / ``test`` masks of a dataclass's ``split`` array (one split name
    per case or image, e.g. a cohort's official split)."""

    split: np.ndarray

    @property
    def train(self) -> np.ndarray:
        return self.split == "train"

    @property
    def val(self) -> np.ndarray:
        return self.split == "val"

    @property
    def test(self) -> np.ndarray:
        return self.split == "test"


def with_chance_row(table: pd.DataFrame, chances: Sequence[Chance]) -> pd.DataFrame:
    """``table`` (``<score>_mean`` / ``_ci_low`` / ``_ci_high`` columns, one row per method)
    with a first row ``"chance"``: each score's permutation null, its mean and 95 % range."""
    row = {}
    for c in chances:
        row |= {f"{c.score}_mean": c.mean, f"{c.score}_ci_low": c.low, f"{c.score}_ci_high": c.high}
    return pd.concat([pd.DataFrame(row, index=["chance"]), table])
