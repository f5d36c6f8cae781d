"""Throughput of the study-05 feature pipeline (:mod:`medclust.population`): registration time
per volume and end-to-end volumes per minute, serially and with 1 and 2 Dask workers.

Data: the routine_ct demo cohort (``routine_ct.DEFAULTS``: 200 volumes of 48 x 48 x <= 40 voxels
at 7.5 x 7.5 x 8 mm) and its atlas/template cohort (``routine_ct_atlas.DEFAULTS``, 5 templates),
generated into a temp folder; the first ``--n-volumes`` cases (24 by default) are processed
with the pipeline defaults (:data:`medclust.population.DEFAULTS`).

Measured:

* template set: time of :func:`medclust.population.build_template_set` (once per run);
* per volume, serially with one BLAS thread: ``TemplateSet.normalize`` (registration and NCC
  selection of the template, Eq. (1) of the paper) and the whole
  :func:`medclust.population.extract_volume` (registration + lung mask + dense Haralick + 3D
  SIFT + atlas positions);
* end to end: :func:`medclust.population.extract_cohort` on the subset (loading, extraction and
  writing of the npz files and the index; the prebuilt template set is passed in) in serial mode
  and on a LocalCluster of 1 and 2 single-threaded worker processes (through its scheduler
  address, so that the cluster's start-up is timed apart: volumes/min with and without it), and
  that the three runs wrote identical files.

Run (the machine of the demo has 2 cores)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/population_benchmark.py

Writes ``reports/benchmarks/population_benchmark.csv`` and ``population_benchmark.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import filecmp  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from medclust import population  # noqa: E402
from medclust.cohort import load_cohort  # noqa: E402
from medclust.outputs import atomic_write_text  # noqa: E402
from medclust_phantoms import routine_ct, routine_ct_atlas  # noqa: E402

log = logging.getLogger("population_benchmark")

ROOT = Path(__file__).resolve().parents[1]


def _differing_files(a: Path, b: Path) -> list[str]:
    """Names of the files that are not byte-equal in folders ``a`` and ``b`` (or in one only)."""
    names_a, names_b = {p.name for p in a.iterdir()}, {p.name for p in b.iterdir()}
    common = sorted(names_a & names_b)
    return sorted(names_a ^ names_b) + [
        n for n in common if not filecmp.cmp(a / n, b / n, shallow=False)
    ]


def run(n_volumes: int, n_timed: int, out_dir: Path, tmp: Path) -> pd.DataFrame:
    from medclust import registration

    start = time.perf_counter()
    cohort_root = routine_ct.generate(tmp / "routine_ct", **routine_ct.DEFAULTS)
    atlas_root = routine_ct_atlas.generate(tmp / "routine_ct_atlas", **routine_ct_atlas.DEFAULTS)
    log.info("demo cohorts generated in %.1f s", time.perf_counter() - start)
    cohort = load_cohort(cohort_root)
    case_ids = cohort.case_ids[:n_volumes]
    params = population.validate_params({})

    start = time.perf_counter()
    template_set = population.build_template_set(atlas_root, params)
    build_s = time.perf_counter() - start

    reg_s, extract_s, dice, ncc = [], [], [], []
    with threadpool_limits(limits=1):
        for case_id in case_ids[:n_timed]:
            vol = cohort.load(case_id)
            start = time.perf_counter()
            template_set.normalize(registration.Image3D.from_volume(vol))
            reg_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            rec = population.extract_volume(vol, template_set, params)
            extract_s.append(time.perf_counter() - start)
            dice.append(rec["lung_dice"])
            ncc.append(rec["ncc"])
            log.info(
                "%s: registration %.2f s, extract_volume %.2f s", case_id, reg_s[-1], extract_s[-1]
            )

    rows = [
        {
            "measure": "template set build (s, once)",
            "value": build_s,
            "note": f"atlas + {params['n_templates']} templates",
        },
        {
            "measure": "registration per volume (s, mean)",
            "value": float(np.mean(reg_s)),
            "note": f"TemplateSet.normalize, {len(reg_s)} volumes, max {max(reg_s):.2f} s",
        },
        {
            "measure": "extract_volume per volume (s, mean)",
            "value": float(np.mean(extract_s)),
            "note": f"registration + lung mask + Haralick + SIFT, {len(extract_s)} volumes",
        },
        {
            "measure": "lung Dice vs true labels (mean)",
            "value": float(np.nanmean(dice)),
            "note": f"min {np.nanmin(dice):.3f}; chosen-template NCC mean {np.mean(ncc):.3f}",
        },
    ]
    from distributed import LocalCluster

    written = {}
    for workers in (0, 1, 2):
        label = "serial" if workers == 0 else f"{workers} dask worker{'s' if workers > 1 else ''}"
        target = tmp / f"features_{workers}"
        start = time.perf_counter()
        cluster = None
        if workers:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address="127.0.0.1:0",
            )
        startup = time.perf_counter() - start
        try:
            population.extract_cohort(
                cohort_root,
                atlas_root,
                target,
                params,
                mode=cluster.scheduler_address if cluster else "serial",
                verbose=False,
                template_set=template_set,
                case_ids=case_ids,
            )
        finally:
            if cluster is not None:
                cluster.close()
        seconds = time.perf_counter() - start
        written[label] = target
        rows.append(
            {
                "measure": f"end to end, {label} (volumes/min)",
                "value": 60.0 * len(case_ids) / seconds,
                "note": f"{len(case_ids)} volumes in {seconds:.1f} s"
                + (f", of which cluster start-up {startup:.1f} s" if workers else ""),
            }
        )
        if workers:
            rows.append(
                {
                    "measure": f"without start-up, {label} (volumes/min)",
                    "value": 60.0 * len(case_ids) / (seconds - startup),
                    "note": "scatter of the template set, extraction, files",
                }
            )
        log.info("%s: %.1f s (start-up %.1f s)", label, seconds, startup)
    index = pd.read_csv(written["serial"] / population.INDEX_CSV)
    rows.append(
        {
            "measure": "micro SIFT share (<= 20 mm diameter)",
            "value": index["n_micro_sift"].sum() / index["n_sift"].sum(),
            "note": f"{index['n_sift'].sum()} keypoints, "
            f"{index['n_haralick'].sum()} Haralick windows in {len(index)} volumes",
        }
    )
    differing = {
        label: _differing_files(written["serial"], folder) for label, folder in written.items()
    }
    identical = not any(differing.values())
    rows.append(
        {
            "measure": "identical files in the three runs",
            "value": float(identical),
            "note": "byte-equal npz files and index.csv"
            if identical
            else "differing: "
            + "; ".join(f"{k}: {', '.join(v[:3])}" for k, v in differing.items() if v),
        }
    )
    table = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out_dir / "population_benchmark.csv", table.to_csv(index=False, lineterminator="\n")
    )
    load = os.getloadavg()
    md = [
        "# Study-05 feature pipeline throughput",
        "",
        f"Data: the first {len(case_ids)} volumes of the routine_ct demo cohort (defaults), "
        f"atlas + {params['n_templates']} templates; pipeline defaults "
        "(medclust.population.DEFAULTS). One BLAS/OpenMP thread per task; "
        f"{os.cpu_count()} CPU cores (load average {load[0]:.1f} at the end: the machine is "
        f"shared, so timings are indicative); Python {platform.python_version()}, "
        f"{platform.machine()}.",
        "",
        table.to_markdown(index=False, floatfmt=".3f"),
        "",
    ]
    atomic_write_text(out_dir / "population_benchmark.md", "\n".join(md))
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-volumes", type=int, default=24, help="volumes end to end")
    parser.add_argument("--n-timed", type=int, default=8, help="volumes timed one by one")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports" / "benchmarks")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import distributed  # noqa: F401  (configures its loggers on import; quieten them after)

    logging.getLogger("distributed").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="population_bench_") as tmp:
        table = run(args.n_volumes, args.n_timed, args.out_dir, Path(tmp))
    log.info("\n%s", table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
