"""The feature stage over a cohort: :func:`extract_volume` for every case, serially or through
Dask, writing the files of :mod:`medclust.population.store`.

:func:`extract_cohort` runs :func:`extract_volume` over a cohort: serially, on a local Dask
cluster (:class:`distributed.LocalCluster`, processes with ``threads_per_worker`` threads each)
or on a running scheduler (``Client(address)``; the workers must see the same file system).
The :class:`~medclust.registration.TemplateSet` is built once, in the calling process, and
scattered to every worker once (``Client.scatter(..., broadcast=True)``). Each case is loaded,
processed and written by its task: one compressed ``<case_id>.npz`` per case (zip entries
without time stamps, so equal features give equal bytes, and written under a temporary name
then renamed) and, once every case is done, ``index.csv``. Every task runs with BLAS/OpenMP
limited to one thread, as Dask's workers are, so all three modes give identical files. A case
that fails stops the run with :class:`CaseExtractionError` naming the case.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medclust.cohort import Cohort, Volume, load_cohort
from medclust.outputs import atomic_write_bytes, atomic_write_text
from medclust.population.extract import build_template_set, extract_volume
from medclust.population.params import validate_params
from medclust.population.store import (
    ARRAY_KEYS,
    INDEX_COLUMNS,
    INDEX_CSV,
    SCALAR_KEYS,
    case_file,
    index_row,
    npz_bytes,
)
from medclust.validation import check_int

log = logging.getLogger(__name__)


class CaseExtractionError(RuntimeError):
    """Feature extraction of one case failed; the message starts with the case id."""


def _load_case(cohort: Cohort, case_id: str) -> Volume:
    return cohort.load(case_id)


def _extract_case(
    cohort: Cohort, case_id: str, template_set: Any, params: Mapping[str, Any], out_dir: str
) -> dict[str, Any]:
    """One task: load, extract (one BLAS/OpenMP thread), write the npz; returns its index row."""
    from threadpoolctl import threadpool_limits

    try:
        start = time.perf_counter()
        with threadpool_limits(limits=1):
            rec = extract_volume(_load_case(cohort, case_id), template_set, params)
        rec["case_id"] = case_id
        atomic_write_bytes(
            Path(out_dir) / case_file(case_id),
            npz_bytes({k: rec[k] for k in (*SCALAR_KEYS, *ARRAY_KEYS)}),
        )
        row = index_row(rec)
        log.debug("%s: %.2f s", case_id, time.perf_counter() - start)
        return row
    except CaseExtractionError:
        raise
    except Exception as exc:
        raise CaseExtractionError(f"case {case_id!r}: {type(exc).__name__}: {exc}") from exc


def _progress(iterable, total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, unit="volume")


def _run_serial(cohort, case_ids, template_set, params, out_dir, progress) -> dict[str, dict]:
    rows = {}
    for case_id in _progress(case_ids, len(case_ids), progress, "features (serial)"):
        rows[case_id] = _extract_case(cohort, case_id, template_set, params, str(out_dir))
    return rows


def _run_dask(client, cohort, case_ids, template_set, params, out_dir, progress) -> dict:
    from distributed import as_completed

    # Once per worker: the template set and the cohort table travel to every worker once.
    shared_ts = client.scatter(template_set, broadcast=True, hash=False)
    shared_cohort = client.scatter(cohort, broadcast=True, hash=False)
    run = uuid.uuid4().hex[:8]
    futures = {
        client.submit(
            _extract_case,
            shared_cohort,
            case_id,
            shared_ts,
            params,
            str(out_dir),
            key=f"medclust-features-{run}-{case_id}",
            pure=False,
        ): case_id
        for case_id in case_ids
    }
    rows = {}
    try:
        done = as_completed(list(futures))
        for future in _progress(done, len(futures), progress, "features (dask)"):
            case_id = futures[future]
            try:
                rows[case_id] = future.result()
            except CaseExtractionError:
                raise
            except Exception as exc:  # e.g. a worker that died on this case
                raise CaseExtractionError(f"case {case_id!r}: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        client.cancel(list(futures))
        raise
    return rows


def extract_cohort(
    cohort_root: str | Path,
    atlas_root: str | Path,
    out_dir: str | Path,
    params: Mapping[str, Any] | None = None,
    mode: str = "local",
    n_workers: int = 2,
    threads_per_worker: int = 1,
    verbose: bool = True,
    template_set: Any = None,
    case_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """:func:`extract_volume` for every case of a cohort; writes ``out_dir/<case_id>.npz`` and
    ``out_dir/index.csv`` (:data:`INDEX_COLUMNS`) and returns the index.

    ``mode``: ``"serial"`` (a plain loop in this process), ``"local"`` (a
    :class:`distributed.LocalCluster` of ``n_workers`` processes with ``threads_per_worker``
    threads, closed afterwards) or a scheduler address such as ``"tcp://10.0.0.5:8786"``
    (``distributed.Client(address)``; its workers must read the cohort and write ``out_dir``
    at the same paths). All three give identical files. ``template_set``: a prebuilt
    :class:`~medclust.registration.TemplateSet` (default: built from ``atlas_root`` with
    :func:`build_template_set`). ``case_ids``: a subset of the cohort's cases (default: all, in
    cohort order). Raises :class:`CaseExtractionError` naming the first case that fails (the
    index is then not written).
    """
    p = validate_params(params)
    if not isinstance(mode, str) or not mode:
        raise ValueError(f"mode must be 'serial', 'local' or a scheduler address, got {mode!r}")
    check_int("n_workers", n_workers)
    check_int("threads_per_worker", threads_per_worker)
    # Absolute paths: the tasks may run in worker processes with another working directory.
    cohort = load_cohort(Path(cohort_root).resolve(), ndim=3)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if template_set is None:
        template_set = build_template_set(atlas_root, p)
    if case_ids is None:
        case_ids = cohort.case_ids
    else:
        case_ids = [str(c) for c in case_ids]
        missing = sorted(set(case_ids) - set(cohort.case_ids))
        if missing or not case_ids:
            raise ValueError(f"case_ids must be cases of {cohort_root}, unknown: {missing[:5]}")
    start = time.perf_counter()
    if mode == "serial":
        rows = _run_serial(cohort, case_ids, template_set, p, out_dir, verbose)
    else:
        from distributed import Client, LocalCluster

        if mode == "local":
            with (
                LocalCluster(
                    n_workers=int(n_workers),
                    threads_per_worker=int(threads_per_worker),
                    processes=True,
                    dashboard_address="127.0.0.1:0",  # a free port: no clash with other clusters
                    silence_logs=logging.WARNING,
                ) as cluster,
                Client(cluster) as client,
            ):
                rows = _run_dask(client, cohort, case_ids, template_set, p, out_dir, verbose)
        else:
            with Client(mode) as client:
                rows = _run_dask(client, cohort, case_ids, template_set, p, out_dir, verbose)
    index = pd.DataFrame([rows[c] for c in case_ids], columns=list(INDEX_COLUMNS))
    atomic_write_text(out_dir / INDEX_CSV, index.to_csv(index=False, lineterminator="\n"))
    elapsed = time.perf_counter() - start
    log.info(
        "features of %d volumes in %.1f s (%.1f volumes/min, mode %s) -> %s",
        len(case_ids),
        elapsed,
        60.0 * len(case_ids) / max(elapsed, 1e-9),
        mode,
        out_dir,
    )
    return index
