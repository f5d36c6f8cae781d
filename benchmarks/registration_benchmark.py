"""Benchmark of the multi-template spatial normalisation (medclust.registration; study-05 paper,
/work/shared/papers/004_8f822e2a6a11f707.txt, Sec. 2 "Spatial Normalization", Eq. (1)) on the
routine_ct phantoms.

For every patient volume the atlas lung labels (2 right, 3 left) are warped onto the patient's
grid and compared with the patient's true labelmap (Dice of both lungs and of each lung), and
the patient's true landmarks (from the generator's plan) are carried to the atlas and compared
with the atlas landmarks. Four configurations:

* ``nonlinear/all``: affine + Demons, every template, choice by NCC (the method);
* ``nonlinear/1``:   affine + Demons, template 0 only (no multi-template choice);
* ``affine/all`` and ``affine/1``: the same without the non-linear stage (template -> atlas
  registrations are then affine too).

Seconds per volume are CPU seconds of the process (``time.process_time``; one thread for ITK,
run with ``OMP_NUM_THREADS=1``) and wall seconds, for ``normalize`` and for the warped labels.
Results go to ``reports/benchmarks/registration.csv`` (one row per case and configuration) and
``registration.md`` (summary).

The full default cohort (200 volumes x 4 configurations) takes longer than the ~3 minutes this
benchmark should take on the shared 2-core machine, so by default it runs on the first
``--n-cases`` (40) cases of the cohort; phenotypes and fields of view are shuffled over the
cases, so the first cases are a random subset. Usage::

    OMP_NUM_THREADS=1 python benchmarks/registration_benchmark.py [--data data] [--n-cases 60]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from medclust import registration as reg
from medclust.cohort import load_cohort
from medclust.outputs import atomic_write_text
from medclust_phantoms import routine_ct as rct
from medclust_phantoms import routine_ct_atlas as rca

log = logging.getLogger("registration_benchmark")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = (
    ("nonlinear/all", True, None),
    ("nonlinear/1", True, [0]),
    ("affine/all", False, None),
    ("affine/1", False, [0]),
)


def cohorts(data: Path | None, n_cases: int, workdir: Path):
    """The default routine_ct and routine_ct_atlas cohorts from ``data`` if both are there,
    else freshly generated (``n_cases`` patients) into ``workdir``."""
    if data is not None and (data / rct.NAME).is_dir() and (data / rca.NAME).is_dir():
        return load_cohort(data / rct.NAME), load_cohort(data / rca.NAME)
    log.info("generating %d routine_ct cases and the atlas cohort in %s", n_cases, workdir)
    return (
        load_cohort(rct.generate(workdir / rct.NAME, n_cases=n_cases)),
        load_cohort(rca.generate(workdir / rca.NAME)),
    )


def true_landmarks(cohort, case_id: str) -> dict[str, np.ndarray] | None:
    """Landmark positions (mm of the patient image) from the generator's plan of the case."""
    params = json.loads((cohort.root / "dataset.json").read_text()).get("generator_params")
    if params is None or cohort.name != rct.NAME:
        return None
    row = cohort.clinical.loc[case_id]
    plan = rct.plan_patient(
        params["seed"],
        int(case_id.split("_")[1]),
        row["phenotype"],
        row["fov"],
        noise_hu=params["noise_hu"],
        deformation_mm=params["deformation_mm"],
    )
    positions = rca.landmark_positions(plan.geometry, params["shape"], params["spacing"])
    start = rct.fov_slab(plan, params["shape"][2]).start * params["spacing"][2]
    return {name: pos - np.array([0.0, 0.0, start]) for name, pos in positions.items()}


def landmark_error(norm, volume, positions, atlas_landmarks) -> float:
    names = sorted(set(positions) & set(atlas_landmarks))
    vox = volume.mm_to_voxel(np.array([positions[n] for n in names]))
    inside = np.all((vox >= 0) & (vox <= np.array(volume.shape) - 1), axis=1)
    if not inside.any():
        return float("nan")
    ref = np.array([atlas_landmarks[n] for n in names])[inside]
    return float(np.linalg.norm(norm.to_atlas_mm(vox[inside]) - ref, axis=1).mean())


def run(data: Path | None, n_cases: int, out_dir: Path) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        patients, atlas_cohort = cohorts(data, n_cases, Path(tmp))
        case_ids = patients.case_ids[:n_cases]
        atlas_landmarks = reg.read_landmarks(atlas_cohort.clinical, "atlas")
        builds, build_seconds = {}, {}
        for nonlinear in (True, False):
            start = time.process_time()
            builds[nonlinear] = reg.TemplateSet.from_cohort(atlas_cohort, nonlinear=nonlinear)
            build_seconds[nonlinear] = time.process_time() - start
        rows = []
        for case_id in tqdm(case_ids, desc="normalising", unit="volume"):
            volume = reg.Image3D.from_volume(patients.load(case_id))
            clinical = patients.clinical.loc[case_id]
            positions = true_landmarks(patients, case_id)
            for name, nonlinear, indices in CONFIGS:
                cpu, wall = time.process_time(), time.perf_counter()
                norm = builds[nonlinear].normalize(volume, template_indices=indices)
                cpu_norm, wall_norm = time.process_time() - cpu, time.perf_counter() - wall
                cpu = time.process_time()
                labels = norm.atlas_labels()
                cpu_labels = time.process_time() - cpu
                rows.append(
                    {
                        "case_id": case_id,
                        "fov": clinical["fov"],
                        "phenotype": clinical["phenotype"],
                        "effusion_visible": int(clinical.get("visible_pleural_effusion", 0)),
                        "config": name,
                        "nonlinear": nonlinear,
                        "n_templates": len(norm.ncc_all),
                        "template_index": norm.template_index,
                        "ncc": norm.ncc,
                        "dice_lungs": reg.dice(
                            np.isin(labels, (2, 3)), np.isin(volume.labelmap, (2, 3))
                        ),
                        "dice_right": reg.dice(labels == 2, volume.labelmap == 2),
                        "dice_left": reg.dice(labels == 3, volume.labelmap == 3),
                        "landmark_error_mm": (
                            float("nan")
                            if positions is None
                            else landmark_error(norm, volume, positions, atlas_landmarks)
                        ),
                        "cpu_s_normalize": cpu_norm,
                        "wall_s_normalize": wall_norm,
                        "cpu_s_labels": cpu_labels,
                    }
                )
        table = pd.DataFrame(rows)
        root = Path(patients.root).resolve()
        context = {
            "patients": str(root.relative_to(ROOT) if root.is_relative_to(ROOT) else root),
            "n_cases": len(case_ids),
            "n_cohort": len(patients),
            "n_templates": len(builds[True]),
            "build_cpu_s": build_seconds,
            "template_landmark_error_mm": builds[True].landmark_error_mm,
            "settings": builds[True].settings,
        }
    write(table, context, out_dir)
    return table


def summary(table: pd.DataFrame) -> pd.DataFrame:
    table = table.assign(field_of_view=np.where(table["fov"] == "full", "full", "fragment"))
    grouped = table.groupby(["config", "field_of_view"], sort=False)
    out = grouped.agg(
        n=("case_id", "size"),
        dice_lungs=("dice_lungs", "mean"),
        dice_lungs_median=("dice_lungs", "median"),
        dice_lungs_min=("dice_lungs", "min"),
        dice_right=("dice_right", "mean"),
        dice_left=("dice_left", "mean"),
        landmark_error_mm=("landmark_error_mm", "mean"),
        cpu_s_normalize=("cpu_s_normalize", "mean"),
        wall_s_normalize=("wall_s_normalize", "mean"),
        cpu_s_labels=("cpu_s_labels", "mean"),
    )
    return out.reset_index()


def write(table: pd.DataFrame, context: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "registration.csv", table.to_csv(index=False, float_format="%.5g"))
    main = summary(table)
    by_effusion = (
        table[table["config"] == "nonlinear/all"]
        .groupby("effusion_visible")
        .agg(
            n=("case_id", "size"),
            dice_lungs=("dice_lungs", "mean"),
            landmark_error_mm=("landmark_error_mm", "mean"),
        )
        .reset_index()
    )
    by_effusion["effusion_visible"] = by_effusion["effusion_visible"].map({0: "no", 1: "yes"})
    per_volume = table.groupby("config", sort=False)["cpu_s_normalize"].mean()
    settings = context["settings"]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    subset = (
        f"a subset: the first {context['n_cases']} of the {context['n_cohort']} cases (the whole "
        "default cohort would take longer than the ~3 minutes this benchmark may take on the "
        "shared machine)"
        if context["n_cases"] < context["n_cohort"]
        else f"all {context['n_cases']} cases"
    )
    lines = [
        "# Registration benchmark (multi-template spatial normalisation, study 05)",
        "",
        "Written by `benchmarks/registration_benchmark.py`; per-volume rows in `registration.csv`.",
        "",
        f"- Patients: `{context['patients']}`, {subset}.",
        f"- Templates: {context['n_templates']}, registered to the atlas once with landmark "
        f"initialisation; landmark error after template -> atlas registration (mm): "
        + ", ".join(f"{e:.2f}" for e in context["template_landmark_error_mm"])
        + ".",
        "- Template-set build (CPU s): "
        + ", ".join(
            f"{'nonlinear' if k else 'affine'} {v:.1f}" for k, v in context["build_cpu_s"].items()
        )
        + ".",
        f"- Settings: registration grid {settings.registration_spacing_mm} mm, "
        f"{settings.affine_iterations} affine iterations, {settings.nonlinear_iterations} Demons "
        f"iterations, metric on {settings.sampling_fraction:.0%} of the voxels, "
        f"{settings.n_threads} ITK thread(s); OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}.",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared "
        f"with other jobs, load average {load[0]:.1f} at the end of the run (wall seconds are "
        "inflated by the load; CPU seconds less so).",
        "",
        "Dice of the warped atlas lungs (labels 2 and 3) against the true labelmap, mean "
        "landmark error of the true landmarks inside the field of view carried to the atlas, "
        "seconds per volume (`normalize`; `labels` = resampling the atlas labels afterwards):",
        "",
        main.to_markdown(index=False, floatfmt=".3f"),
        "",
        "Method (`nonlinear/all`) by visible pleural effusion (fluid that replaces lung; the "
        "atlas has none, so the warped lungs fill the pleural space):",
        "",
        by_effusion.to_markdown(index=False, floatfmt=".3f"),
        "",
        "CPU seconds per volume, all fields of view: "
        + ", ".join(f"{k} {v:.2f}" for k, v in per_volume.items())
        + ".",
        "",
    ]
    atomic_write_text(out_dir / "registration.md", "\n".join(lines))
    log.info("wrote %s and %s", out_dir / "registration.csv", out_dir / "registration.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="folder of cohorts")
    parser.add_argument("--n-cases", type=int, default=40, help="patients to normalise")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks")
    args = parser.parse_args()
    if args.n_cases < 1:
        parser.error(f"--n-cases must be >= 1, got {args.n_cases}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    table = run(args.data, args.n_cases, args.out)
    log.info("summary:\n%s", summary(table).to_string(index=False))


if __name__ == "__main__":
    main()
