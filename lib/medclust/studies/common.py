"""Pieces every study notebook shares: starting a run and mean +- sd summaries over seeds."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

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


def compare_intervals(a: tuple[float, float], b: tuple[float, float]) -> int:
    """``1`` when the interval ``a = (low, high)`` lies wholly above ``b``, ``-1`` when wholly
    below, ``0`` when they overlap: the "who wins" test of every study's plain sentence."""
    if a[0] > b[1]:
        return 1
    if a[1] < b[0]:
        return -1
    return 0


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
