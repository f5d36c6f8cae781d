"""Rerun the studies into a scratch folder and compare every metric with the committed one.

``make verify`` (or ``python -m medclust.verify [STAGE ...]``) executes each study notebook
with its committed ``params.yaml`` block, exactly as its DVC stage does, but writes the report
(and study 05's extracted features, study 01's checkpoints) under a scratch folder; the
committed ``reports/`` are never touched. It then compares every number of the rerun's
``metrics.json`` with the committed one and prints one table:
``metric | committed | rerun | tolerance | basis | pass``.

Tolerances (the ``basis`` column says which applied to each metric):

* ``exact`` — counts of the data and the design (``n_*``, ``patch_size``, ...) and every metric
  of ``cohorts``: the cohorts are bit-identical on every machine, so these must be equal.
* ``3 SE`` — a trained or sampled metric that is a mean over ``n_seeds`` seeds. A rerun on a
  CPU that picks other floating-point kernels behaves like a rerun with other seeds, so the
  difference of two such means has a standard error of ``sd * sqrt(2 / n_seeds)``, with
  ``sd`` the committed seed-to-seed standard deviation of that metric (its ``*_sd`` /
  ``*_seed_sd`` companion in ``metrics.json``, else the study's per-seed table); the
  tolerance is three of those standard errors. A metric whose seeds all agreed
  (``sd = 0``, a deterministic baseline) gets ``1e-6``: it must reproduce.
* the ``*_sd`` metrics themselves: three standard errors of a difference of two seed sds
  (``3 sd / sqrt(n_seeds - 1)``).
* ``info`` — wall-clock times and cluster indices (arbitrary labels): shown, not compared.

On this project's reference machine kind with the CPU profile of the Makefile the rerun is
bit-identical, so every row passes with a difference of 0; see the README's
"Reproducibility" section for what holds where.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd
import yaml

Z = 3.0  # standard errors of a difference of two seed means
DETERMINISTIC_TOL = 1e-6  # metrics.json rounds to 6 decimals
INFO_KEYS = ("runtime_s", "*.runtime_s", "top_clusters", "top_clusters.*", "chosen_seed")
# design and data counts, equal on every machine; matched against the last key segment
EXACT_NAMES = ("n_*", "patch_size", "input_size", "epochs")

# Per-seed tables for studies whose metrics.json carries no seed spread:
# stage -> (table, {metric glob: (rows query, column)})
PER_SEED_TABLES: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "cdcn": (
        "lowhigh_per_seed.csv",
        {
            "lowhigh.*": ("method == 'cDCN'", "{last}"),
            "baseline_lowhigh.*": ("method == 'AE + k-means'", "{last}"),
            "raw_kmeans_lowhigh.*": ("method == 'raw k-means'", "{last}"),
            "grade_spearman": ("method == 'cDCN'", "grade_spearman_lasso"),
        },
    ),
}


@dataclass(frozen=True)
class Stage:
    name: str  # dvc.yaml stage and params.yaml block
    notebook: Path
    report_dir: Path  # committed report folder


def notebook_stages(root: Path) -> dict[str, Stage]:
    """Every dvc.yaml stage that runs a notebook, with its params block's report folder."""
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())
    stages = {}
    for name, stage in dvc["stages"].items():
        cmd = " ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"]
        found = re.search(r"papermill .*?(notebooks/\S+\.ipynb)", cmd)
        if found:
            block = params[name]
            stages[name] = Stage(name, root / found.group(1), root / block["report_dir"])
    return stages


def flatten(tree, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def _seed_sd_from_companions(key: str, metrics: dict[str, object]) -> tuple[float, str] | None:
    """``acc.dec`` -> ``acc_sd.dec``; ``nmi.jule.3`` -> ``nmi_seed_sd.jule``."""
    head, _, rest = key.partition(".")
    parts = rest.split(".") if rest else []
    for suffix in ("_sd", "_seed_sd"):
        for n in range(len(parts), -1, -1):
            name = ".".join([head + suffix, *parts[:n]])
            value = metrics.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value), name
    return None


def _seed_sd_from_table(stage: str, key: str, report_dir: Path) -> tuple[float, str] | None:
    if stage not in PER_SEED_TABLES:
        return None
    table, rules = PER_SEED_TABLES[stage]
    path = report_dir / "tables" / table
    for pattern, (query, column) in rules.items():
        if fnmatch(key, pattern) and path.exists():
            column = column.format(last=key.rsplit(".", 1)[-1])
            values = pd.read_csv(path).query(query)[column].dropna()
            if len(values) >= 2:
                return float(values.std(ddof=1)), f"sd of {table} [{query}] {column}"
    return None


def tolerance(
    stage: str, key: str, committed: dict[str, object], report_dir: Path
) -> tuple[float | None, str]:
    """``(tolerance, basis)`` for one flattened metric; ``None`` = not compared."""
    last = key.rsplit(".", 1)[-1]
    if any(fnmatch(key, p) for p in INFO_KEYS):
        return None, "info"
    if stage == "cohorts" or any(fnmatch(last, p) for p in EXACT_NAMES):
        return 0.0, "exact"
    n_seeds = committed.get("n_seeds")
    n = int(n_seeds) if isinstance(n_seeds, int | float) and n_seeds >= 1 else 1
    if key.split(".")[0].endswith(("_sd", "_seed_sd")):
        # an sd from n seeds has a standard error of about sd / sqrt(2 (n - 1))
        sd = float(committed[key])
        if sd == 0.0:
            return DETERMINISTIC_TOL, "deterministic (sd = 0)"
        return Z * sd / math.sqrt(max(n - 1, 1)), f"3 SE of a seed sd, n_seeds={n}"
    found = _seed_sd_from_companions(key, committed) or _seed_sd_from_table(stage, key, report_dir)
    if found is None:
        return 0.0, "exact (no seed spread recorded)"
    sd, source = found
    if sd == 0.0:
        return DETERMINISTIC_TOL, f"deterministic ({source} = 0)"
    return Z * sd * math.sqrt(2.0 / n), f"3 SE, sd from {source}, n_seeds={n}"


def compare(stage: str, committed: dict, rerun: dict, report_dir: Path) -> list[dict[str, object]]:
    flat_c, flat_r = flatten(committed), flatten(rerun)
    rows = []
    for key in sorted(set(flat_c) | set(flat_r)):
        c, r = flat_c.get(key), flat_r.get(key)
        tol, basis = tolerance(stage, key, flat_c, report_dir) if key in flat_c else (0.0, "new")
        if tol is None:
            ok = None
        elif c is None or r is None:
            ok = False
        elif isinstance(c, int | float) and isinstance(r, int | float):
            ok = abs(float(c) - float(r)) <= tol + 1e-12
        else:
            ok = c == r
        rows.append(
            {
                "stage": stage,
                "metric": key,
                "committed": c,
                "rerun": r,
                "tolerance": tol,
                "basis": basis,
                "pass": ok,
            }
        )
    return rows


def _run_notebook(stage: Stage, parameters: dict, out_dir: Path, root: Path) -> None:
    import papermill as pm

    pm.execute_notebook(
        str(stage.notebook),
        str(out_dir / "notebook.ipynb"),
        parameters=parameters,
        kernel_name="python3",
        progress_bar=False,
        cwd=str(root),
    )


def rerun(stage: Stage, params: dict, scratch: Path, root: Path) -> Path:
    """Execute ``stage`` with its committed params into ``scratch/<stage>``; return the
    scratch report folder."""
    out = scratch / stage.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    parameters = dict(params[stage.name], report_dir=str(out))
    if "checkpoint_dir" in parameters:  # never resume from the user's checkpoints
        parameters["checkpoint_dir"] = str(scratch / "checkpoints" / stage.name)
    if stage.name == "population":  # its features come from the population_features stage
        features = scratch / "features"
        shutil.rmtree(features, ignore_errors=True)
        dvc = yaml.safe_load((root / "dvc.yaml").read_text())
        cmd = shlex.split(dvc["stages"]["population_features"]["cmd"])
        cmd[cmd.index("--out") + 1] = str(features)
        if cmd[0] == "python":
            cmd[0] = sys.executable
        subprocess.run(cmd, check=True, cwd=root)
        parameters["features_dir"] = str(features)
    _run_notebook(stage, parameters, out, root)
    return out


def format_table(rows: list[dict[str, object]]) -> str:
    def fmt(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    header = "| metric | committed | rerun | tolerance | basis | pass |"
    lines = [header, "|---|---:|---:|---:|---|---|"]
    for row in rows:
        verdict = {True: "yes", False: "**NO**", None: "info"}[row["pass"]]
        lines.append(
            f"| {row['stage']}: {row['metric']} | {fmt(row['committed'])} | {fmt(row['rerun'])}"
            f" | {fmt(row['tolerance'])} | {row['basis']} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medclust.verify",
        description="Rerun studies into a scratch folder and compare their metrics with the "
        "committed reports/*/metrics.json.",
    )
    parser.add_argument("stages", nargs="*", help="stages to verify (default: all)")
    parser.add_argument("--scratch", default="verify", help="scratch folder (default: verify)")
    parser.add_argument("--root", default=".", help="repository root (default: .)")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    stages = notebook_stages(root)
    unknown = [s for s in args.stages if s not in stages]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; known: {sorted(stages)}")
    params = yaml.safe_load((root / "params.yaml").read_text())
    scratch = Path(args.scratch).resolve()
    rows, timing = [], {}
    for name in args.stages or list(stages):
        stage = stages[name]
        committed_path = stage.report_dir / "metrics.json"
        if not committed_path.exists():
            print(f"error: {committed_path} does not exist: nothing to compare", file=sys.stderr)
            return 1
        print(f"verify: rerunning {name} into {scratch / name}", flush=True)
        start = time.perf_counter()
        out = rerun(stage, params, scratch, root)
        timing[name] = time.perf_counter() - start
        rerun_metrics = json.loads((out / "metrics.json").read_text())
        committed = json.loads(committed_path.read_text())
        rows.extend(compare(name, committed, rerun_metrics, stage.report_dir))
    table = format_table(rows)
    (scratch / "verify.md").write_text(table + "\n")
    pd.DataFrame(rows).to_csv(scratch / "verify.csv", index=False)
    print(table)
    failed = [r for r in rows if r["pass"] is False]
    compared = [r for r in rows if r["pass"] is not None]
    exact = sum(1 for r in compared if r["committed"] == r["rerun"])
    print(
        f"\n{len(compared) - len(failed)} of {len(compared)} metrics within tolerance "
        f"({exact} identical); reruns took "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items())
        + f"; table in {scratch / 'verify.md'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
