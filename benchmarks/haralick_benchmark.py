"""Dense 3D Haralick features: :func:`medclust.features.dense_haralick.dense_haralick` against
``mahotas.features.haralick`` on the same windows (values and throughput).

Both implement Haralick, Shanmugam and Dinstein (1973), "Textural features for image
classification", in 3D with the 13 directions of 26-connectivity at distance 1, symmetric
co-occurrence matrices. mahotas computes one window at a time (13 matrices, features per
matrix, ``return_mean=True`` averages them over the directions), which is IBSI's "3D, averaged"
aggregation; dense_haralick computes all windows of a volume at once, in that aggregation and
in "3D, merged" (the matrices summed, the pipeline's default).

Compared features: Haralick's f1-f13 (:data:`medclust.features.glcm.HARALICK_FEATURES`, IBSI
names), which both define, with mahotas's ``use_x_minus_y_variance=True`` for f10 (the variance
of ``|i - j|``, IBSI's difference variance; mahotas's default is the variance of the vector of
probabilities ``p_{x-y}``, a different quantity). f14 (maximal correlation coefficient) is not
an IBSI feature and not compared. Grey levels are stored as values ``1..L``; mahotas uses the
values as matrix indices (its row 0 stays empty), so both see the same levels.

Data: the routine_ct phantom at its demo defaults (7.5 x 7.5 x 8 mm, written to a temp folder),
HU binned over [-1000, 400] into 56 levels (25 HU), windows of 30 mm (5 x 5 x 3 voxels) centred
on a 15 mm grid inside the true lung labels; every voxel of a window counts (no mask), windows
crossing the image border are cropped, identically for both.

Run (one thread, as the pipeline's workers)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/haralick_benchmark.py

Writes ``reports/benchmarks/haralick_benchmark.csv`` (timings),
``haralick_benchmark_features.csv`` (agreement per feature) and ``haralick_benchmark.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medclust.cohort import load_cohort  # noqa: E402
from medclust.features.dense_haralick import (  # noqa: E402
    dense_haralick,
    grid_centres,
    window_radius_voxels,
)
from medclust.features.glcm import HARALICK_FEATURES  # noqa: E402
from medclust.outputs import atomic_write_text  # noqa: E402
from medclust.population import hu_levels  # noqa: E402
from medclust_phantoms import routine_ct  # noqa: E402

log = logging.getLogger("haralick_benchmark")

ROOT = Path(__file__).resolve().parents[1]
HU_MIN, HU_MAX, N_LEVELS = -1000.0, 400.0, 56
WINDOW_MM, STEP_MM = 30.0, 15.0
#: name -> (IBSI aggregation, implementation, the mahotas run of the same aggregation).
IMPLEMENTATIONS = {
    "dense_haralick": ("3d_averaged", "medclust dense_haralick", "mahotas"),
    "mahotas": ("3d_averaged", "mahotas haralick(return_mean=True)", "mahotas"),
    "dense_haralick_merged": ("3d_merged", "medclust dense_haralick", "mahotas_merged"),
    "mahotas_merged": ("3d_merged", "mahotas cooccurence x13 summed", "mahotas_merged"),
}
#: mahotas.features.texture.haralick_labels, in Haralick's order f1-f13 (= HARALICK_FEATURES).
MAHOTAS_LABELS = (
    "Angular Second Moment",
    "Contrast",
    "Correlation",
    "Sum of Squares: Variance",
    "Inverse Difference Moment",
    "Sum Average",
    "Sum Variance",
    "Sum Entropy",
    "Entropy",
    "Difference Variance",
    "Difference Entropy",
    "Information Measure of Correlation 1",
    "Information Measure of Correlation 2",
)


def _windows(levels: np.ndarray, centres: np.ndarray, radius) -> list[np.ndarray]:
    lo = np.maximum(centres - np.asarray(radius), 0)
    hi = np.minimum(centres + np.asarray(radius) + 1, levels.shape)
    return [
        np.ascontiguousarray(levels[a[0] : b[0], a[1] : b[1], a[2] : b[2]])
        for a, b in zip(lo, hi, strict=True)
    ]


def _mahotas(crops: list[np.ndarray]) -> np.ndarray:
    import mahotas.features

    return np.array(
        [
            mahotas.features.haralick(
                crop, return_mean=True, use_x_minus_y_variance=True, distance=1
            )
            for crop in crops
        ]
    )


def _mahotas_merged(crops: list[np.ndarray]) -> np.ndarray:
    """The same 13 mahotas matrices per window, summed ("3D, merged"), then its features."""
    from mahotas.features import texture

    out = []
    for crop in crops:
        merged = sum(texture.cooccurence(crop, d, symmetric=True, distance=1) for d in range(13))
        out.append(texture.haralick_features([merged], use_x_minus_y_variance=True)[0])
    return np.array(out)


def _best_time(fn, repeats: int):
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run(n_cases: int, repeats: int, out_dir: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    import mahotas

    with tempfile.TemporaryDirectory(prefix="haralick_bench_") as tmp:
        cohort = load_cohort(
            routine_ct.generate(Path(tmp) / "routine_ct", seed=seed, n_cases=n_cases)
        )
        volumes = [cohort.load(c) for c in cohort.case_ids]
    timings = dict.fromkeys(IMPLEMENTATIONS, 0.0)
    values = {name: [] for name in IMPLEMENTATIONS}
    n_windows = 0
    for vol in volumes:
        lung = np.isin(vol.labelmap, routine_ct.LUNG_LABELS)
        levels = hu_levels(vol.image, np.ones(vol.image.shape, bool), HU_MIN, HU_MAX, N_LEVELS)
        centres = grid_centres(lung, vol.spacing, STEP_MM)
        radius = window_radius_voxels(WINDOW_MM, vol.spacing)
        n_windows += len(centres)

        def dense(aggregation, levels=levels, centres=centres, vol=vol):
            return dense_haralick(
                levels,
                None,
                vol.spacing,
                WINDOW_MM,
                STEP_MM,
                N_LEVELS,
                aggregation=aggregation,
                centres=centres,
            )[1]

        crops = _windows(levels, centres, radius)
        runs = {
            "dense_haralick": lambda: dense("3d_averaged"),  # noqa: B023
            "mahotas": lambda: _mahotas(crops),  # noqa: B023
            "dense_haralick_merged": lambda: dense("3d_merged"),  # noqa: B023
            "mahotas_merged": lambda: _mahotas_merged(crops),  # noqa: B023
        }
        for name, fn in runs.items():
            t, out = _best_time(fn, repeats)
            timings[name] += t
            values[name].append(out)
        log.info("%s: %d windows", vol.case_id, len(centres))
    values = {name: np.concatenate(v) for name, v in values.items()}

    parts = []
    for aggregation, ours, theirs in (
        ("3d_averaged", values["dense_haralick"], values["mahotas"]),
        ("3d_merged", values["dense_haralick_merged"], values["mahotas_merged"]),
    ):
        diff = np.abs(ours - theirs)
        rel = diff / np.maximum(np.abs(theirs), 1e-12)
        parts.append(
            pd.DataFrame(
                {
                    "aggregation": aggregation,
                    "feature": [f"f{k + 1}" for k in range(len(HARALICK_FEATURES))],
                    "ibsi_name": list(HARALICK_FEATURES),
                    "mahotas_label": list(MAHOTAS_LABELS),
                    "max_abs_diff": diff.max(axis=0),
                    "max_rel_diff": np.where(diff.max(axis=0) > 0, rel.max(axis=0), 0.0),
                    "equal_rtol_1e-9": np.all(
                        np.isclose(ours, theirs, rtol=1e-9, atol=1e-12), axis=0
                    ),
                }
            )
        )
    features = pd.concat(parts, ignore_index=True)
    rows = []
    for name, (aggregation, implementation, reference) in IMPLEMENTATIONS.items():
        seconds = timings[name]
        rows.append(
            {
                "implementation": implementation,
                "aggregation": aggregation,
                "windows": n_windows,
                "seconds": seconds,
                "windows_per_s": n_windows / seconds,
                "speedup_vs_mahotas": timings[reference] / seconds,
            }
        )
    table = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out_dir / "haralick_benchmark.csv", table.to_csv(index=False, lineterminator="\n")
    )
    atomic_write_text(
        out_dir / "haralick_benchmark_features.csv",
        features.to_csv(index=False, lineterminator="\n"),
    )
    md = [
        "# Dense 3D Haralick: medclust vs mahotas",
        "",
        f"Data: {n_cases} routine_ct phantom volumes (demo defaults, seed {seed}), "
        f"{n_windows} windows of {WINDOW_MM:g} mm (5 x 5 x 3 voxels) on a {STEP_MM:g} mm grid in the "
        f"lungs; HU [{HU_MIN:g}, {HU_MAX:g}] in {N_LEVELS} levels; 13 directions, distance 1. "
        f"Best of {repeats} runs, one thread (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); "
        f"mahotas {mahotas.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}.",
        "",
        "## Throughput",
        "",
        table.to_markdown(index=False, floatfmt=".3f"),
        "",
        "`speedup_vs_mahotas`: mahotas time of the same aggregation / this time. mahotas has "
        "no merged mode: its 13 `cooccurence` matrices of a window are summed and passed to "
        "`haralick_features`.",
        "",
        "## Agreement with mahotas",
        "",
        "Haralick f1-f13 (the features both define); mahotas with `use_x_minus_y_variance=True` "
        "for f10 (IBSI's difference variance; its default is the variance of the vector "
        "p_{x-y}). f14 (maximal correlation coefficient) is not an IBSI feature and is not "
        "compared.",
        "",
        features.to_markdown(index=False, floatfmt=".2e"),
        "",
    ]
    atomic_write_text(out_dir / "haralick_benchmark.md", "\n".join(md))
    return table, features


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-cases", type=int, default=4, help="phantom volumes (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports" / "benchmarks")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    table, features = run(args.n_cases, args.repeats, args.out_dir, args.seed)
    log.info("\n%s", table.to_string(index=False))
    log.info("\n%s", features.to_string(index=False))
    if not features["equal_rtol_1e-9"].all():
        log.error("dense_haralick and mahotas disagree on some features")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
