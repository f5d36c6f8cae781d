"""Atomic writing of a study's figures, tables and metrics into ``reports/<notebook>/``.

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written figure, table or ``metrics.json`` behind.

Layout written by :class:`Report`::

    reports/<notebook>/figures/<name>.png
    reports/<notebook>/tables/<name>.csv  and  <name>.md
    reports/<notebook>/metrics.json          headline numbers (dvc metrics show / diff)
    reports/<notebook>/tables/metrics_all.json  every metric
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PAPER_COMPARISON = "paper_comparison"
#: The plain verdict sentence of a study (``tables/verdict.md``, :meth:`Report.verdict`).
VERDICT = "verdict"
PAPER_COLUMNS = ["quantity", "paper", "this_run", "note"]


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open``/``mkdir`` would give under the user's umask (0644/0755 by
    default); temporary files and folders are created private (0600/0700) and get this mode
    before they are renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value, digits: int = 6):
    """Plain JSON types from numpy/pandas values; floats rounded so diffs stay readable,
    NaN/inf become null (JSON has no NaN and ``dvc metrics`` would reject it)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return [to_jsonable(v, digits) for v in list(value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if not math.isfinite(value) else round(value, digits)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot write {type(value).__name__} to metrics.json: {value!r}")


class Report:
    """Writer for one notebook's report folder."""

    def __init__(self, report_dir: str | Path):
        self.dir = Path(report_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._verdicts: list[str] = []

    def figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` and close it."""
        import io

        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        # no timestamp or version in the PNG, so reruns produce identical bytes
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        path = atomic_write_bytes(self.dir / "figures" / f"{name}.png", buf.getvalue())
        log.info("figure %s", path)
        return path

    def table(
        self, df: pd.DataFrame, name: str, index: bool = False, floatfmt: str = ".3f"
    ) -> Path:
        """Save ``tables/<name>.csv`` and a Markdown copy ``tables/<name>.md``."""
        path = atomic_write_text(
            self.dir / "tables" / f"{name}.csv", df.to_csv(index=index, lineterminator="\n")
        )
        md = df.to_markdown(index=index, floatfmt=floatfmt)
        atomic_write_text(self.dir / "tables" / f"{name}.md", md + "\n")
        log.info("table %s", path)
        return path

    def paper_comparison(self, rows: list[dict]) -> pd.DataFrame:
        """The paper's headline numbers beside this run's (``tables/paper_comparison``).

        Each row: ``quantity``, ``paper`` (the published value), ``this_run`` and a ``note``
        saying why the two may differ. ``reports/README.md`` is built from these tables.
        """
        df = pd.DataFrame(rows)
        missing = [c for c in PAPER_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"paper comparison rows lack column(s) {missing}")
        df = df[PAPER_COLUMNS]
        self.table(df, PAPER_COMPARISON)
        return df

    def verdict(self, text: str) -> str:
        """Add a paragraph to the study's plain verdict (``tables/verdict.md``):
        ``reports/README.md`` shows it at the top of the study's section, before the tables.
        Returns ``text``, so a notebook can ``print`` it."""
        self._verdicts.append(text.strip())
        atomic_write_text(self.dir / "tables" / f"{VERDICT}.md", "\n\n".join(self._verdicts) + "\n")
        return text

    def metrics(self, metrics: Mapping, headline: Mapping[str, str] | None = None) -> Path:
        """Write every metric to ``tables/metrics_all.json`` and the ``headline`` ones to
        ``metrics.json``, the file ``dvc metrics show`` / ``diff`` read, so it fits a
        terminal: ``{short name: dotted path into metrics}``, e.g. ``{"f1": "lowhigh.f1"}``;
        a path the run did not produce (a ground truth the cohort lacks) is left out.
        Without ``headline`` both files hold everything."""
        everything = to_jsonable(metrics)
        atomic_write_text(
            self.dir / "tables" / "metrics_all.json", json.dumps(everything, indent=2) + "\n"
        )
        if headline is not None:
            flat = flatten_metrics(everything)
            everything = {short: flat[path] for short, path in headline.items() if path in flat}
        text = json.dumps(everything, indent=2, sort_keys=False) + "\n"
        path = atomic_write_text(self.dir / "metrics.json", text)
        log.info("metrics %s", path)
        return path


def flatten_metrics(tree, prefix: str = "") -> dict[str, object]:
    """``{"acc": {"dec": 0.6}}`` -> ``{"acc.dec": 0.6}`` (lists and values are leaves)."""
    if isinstance(tree, Mapping):
        out: dict[str, object] = {}
        for key, value in tree.items():
            out.update(flatten_metrics(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}
