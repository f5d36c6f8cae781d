"""Rerun the studies into a scratch folder and compare every metric with the committed one.

``make verify`` (or ``python -m medclust.verify [STAGE ...]``) executes each study notebook
with its committed ``params.yaml`` block, exactly as its DVC stage does, but writes the report
(and study 05's extracted features, study 01's checkpoints) under a scratch folder; the
committed ``reports/`` are never touched. It then compares every metric of the rerun
(``tables/metrics_all.json``) with the committed one and prints one table:
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

from medclust.outputs import flatten_metrics as flatten
from medclust.run import STUDIES, Study, run

Z = 3.0  # standard errors of a difference of two seed means
DETERMINISTIC_TOL = 1e-6  # metrics.json rounds to 6 decimals
INFO_KEYS = (
    "runtime_s",
    "*.runtime_s",
    "top_clusters",
    "top_clusters.*",
    "chosen_seed",
    "seconds_per_seed.*",
    "absent_cohorts",
)
# design and data counts, equal on every machine; matched against the last key segment
EXACT_NAMES = ("n_*", "patch_size", "input_size", "epochs")

# Where a study's per-seed values live, for metrics without a *_sd companion:
# stage -> [(metric regex, table under tables/, rows query, column)]; the regex's named groups,
# the stage's params and the committed top-level metrics fill the {placeholders}. The seed
# spread is the sd over seeds of the per-seed mean of the matching rows.
_METHODS_01 = {
    "cdcn": "cDCN",
    "ae_kmeans": "AE + k-means",
    "raw_kmeans": "raw k-means",
    "cdcn_centred": "cDCN on mean-subtracted patches (ablation)",
}
_REFERENCES_01 = {
    "pixels": "window pixels",
    "mean": "window mean",
    "glcm": "window GLCM features",
}
PER_SEED_RULES: dict[str, list[tuple[str, str, str, str]]] = {
    "cdcn": [
        (r"lowhigh\.(?P<c>\w+)", "lowhigh_per_seed.csv", "method == 'cDCN'", "{c}"),
        (
            r"baseline_lowhigh\.(?P<c>\w+)",
            "lowhigh_per_seed.csv",
            "method == 'AE + k-means'",
            "{c}",
        ),
        (
            r"raw_kmeans_lowhigh\.(?P<c>\w+)",
            "lowhigh_per_seed.csv",
            "method == 'raw k-means'",
            "{c}",
        ),
        (
            r"ablation_lowhigh\.(?P<c>\w+)",
            "lowhigh_per_seed.csv",
            f"method == '{_METHODS_01['cdcn_centred']}'",
            "{c}",
        ),
        (r"grade_spearman", "lowhigh_per_seed.csv", "method == 'cDCN'", "grade_spearman_lasso"),
        *[
            (
                rf"texture_reference_{metric}\.{key}",
                "texture_reference_per_seed.csv",
                f"method == '{name}'",
                column,
            )
            for key, name in _REFERENCES_01.items()
            for metric, column in (("nmi", "nmi"), ("probe", "probe_bacc"))
        ],
        *[
            (
                rf"texture_(?P<c>nmi|acc)\.{key}",
                "texture_recovery_per_seed.csv",
                f"method == '{name}'",
                "{c}",
            )
            for key, name in _METHODS_01.items()
        ],
    ],
    "jule3d": [
        (
            r"nmi\.(?P<m>\w+)\.(?P<k>\d+)",
            "nmi_per_specimen_seed_k.csv",
            "method == '{m}' and K == {k}",
            "nmi_slices",
        ),
        (
            r"nmi_per_specimen\.(?P<s>\w+)\.(?P<m>\w+)\.(?P<k>\d+)",
            "nmi_per_specimen_seed_k.csv",
            "specimen == '{s}' and method == '{m}' and K == {k}",
            "nmi_slices",
        ),
        (
            r"nmi_at_k_paper\.(?P<m>\w+)",
            "nmi_per_specimen_seed_k.csv",
            "method == '{m}' and K == {k_paper}",
            "nmi_slices",
        ),
        (
            r"nmi_full_volume\.(?P<m>\w+)",
            "nmi_per_specimen_seed_k.csv",
            "method == '{m}' and K == {k_paper}",
            "nmi_volume",
        ),
    ],
    "deepcluster": [
        (
            r"(?P<c>acc|nmi|silhouette|davies_bouldin)\.(?P<m>\w+)",
            "results_per_seed.csv",
            "method == '{m}'",
            "{c}",
        ),
    ],
    "cae_dec": [
        (
            r"(?P<c>acc|nmi|kl)\.(?P<m>\w+)",
            "results_per_seed.csv",
            "method == '{m}' and embedding_dim == {embedding_dim}",
            "{c}",
        ),
        (
            r"sweep\.(?P<d>\d+)\.(?P<m>\w+)\.(?P<c>acc|nmi)",
            "results_per_seed.csv",
            "method == '{m}' and embedding_dim == {d}",
            "{c}",
        ),
        (
            r"recon_mse\.cae",
            "results_per_seed.csv",
            "method == 'kmeans_cae' and embedding_dim == {embedding_dim}",
            "mse",
        ),
        (
            r"recon_mse\.dcec",
            "results_per_seed.csv",
            "method == 'dcec' and embedding_dim == {embedding_dim}",
            "mse",
        ),
    ],
    "population": [
        (
            r"q_k\.(?P<d>\w+)\.(?P<k>\d+)",
            "q_k_per_descriptor_seed_k.csv",
            "descriptor == '{d}' and K == {k}",
            "q_k",
        ),
        (
            r"phenotype_nmi\.(?P<d>\w+)",
            "q_k_per_descriptor_seed_k.csv",
            "descriptor == '{d}' and K == {chosen_k}",
            "phenotype_nmi",
        ),
    ],
}


@dataclass(frozen=True)
class Stage:
    name: str  # dvc.yaml stage and params.yaml block
    study: Study
    report_dir: Path  # committed report folder


def notebook_stages(root: Path, params: dict | None = None) -> dict[str, Stage]:
    """Every study stage (:data:`medclust.run.STUDIES`) with its committed report folder
    (``params``: the parsed ``params.yaml``, read from ``root`` if not given)."""
    if params is None:
        params = yaml.safe_load((root / "params.yaml").read_text())
    return {
        name: Stage(name, Study.named(name, root), root / params[name]["report_dir"])
        for name in STUDIES
    }


def all_metrics(report_dir: Path) -> Path:
    """``tables/metrics_all.json`` (every metric), else ``metrics.json`` (older reports)."""
    detail = report_dir / "tables" / "metrics_all.json"
    return detail if detail.exists() else report_dir / "metrics.json"


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


def _seed_sd_from_table(
    stage: str, key: str, report_dir: Path, fields: dict[str, object]
) -> tuple[float, str] | None:
    for pattern, table, query, column in PER_SEED_RULES.get(stage, []):
        found = re.fullmatch(pattern, key)
        path = report_dir / "tables" / table
        if not found or not path.exists():
            continue
        values = {**fields, **found.groupdict()}
        try:
            q, c = query.format(**values), column.format(**values)
            rows = pd.read_csv(path).query(q)
            per_seed = rows.groupby("seed")[c].mean().dropna()
        except (KeyError, ValueError, SyntaxError):
            continue
        if len(per_seed) >= 2:
            return float(per_seed.std(ddof=1)), f"sd over seeds of {table} [{q}] {c}"
    return None


def tolerance(
    stage: str,
    key: str,
    committed: dict[str, object],
    report_dir: Path,
    params: dict[str, object] | None = None,
) -> tuple[float | None, str]:
    """``(tolerance, basis)`` for one flattened metric; ``None`` = shown, not judged."""
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
    fields = {**(params or {}), **{k: v for k, v in committed.items() if "." not in k}}
    found = _seed_sd_from_companions(key, committed) or _seed_sd_from_table(
        stage, key, report_dir, fields
    )
    if found is None:
        return None, "not judged: no seed spread recorded"
    sd, source = found
    if sd == 0.0:
        return DETERMINISTIC_TOL, f"deterministic ({source} = 0)"
    return Z * sd * math.sqrt(2.0 / n), f"3 SE, sd from {source}, n_seeds={n}"


def compare(
    stage: str,
    committed: dict,
    rerun: dict,
    report_dir: Path,
    params: dict[str, object] | None = None,
) -> list[dict[str, object]]:
    flat_c, flat_r = flatten(committed), flatten(rerun)
    rows = []
    for key in sorted(set(flat_c) | set(flat_r)):
        if key not in flat_c or key not in flat_r:
            tol, basis = 0.0, "missing in the rerun" if key in flat_c else "new in the rerun"
            c, r, ok = flat_c.get(key), flat_r.get(key), False
        else:
            c, r = flat_c[key], flat_r[key]
            tol, basis = tolerance(stage, key, flat_c, report_dir, params)
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (c, r))
            if tol is None:
                ok = None
            elif numbers:
                ok = abs(float(c) - float(r)) <= tol + 1e-12
            else:  # null (a metric that does not apply), text, lists: must be equal
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


def rerun(stage: Stage, params: dict, scratch: Path, root: Path) -> Path:
    """Execute ``stage`` with its committed params into ``scratch/<stage>``; return the
    scratch report folder."""
    out = scratch / stage.name
    parameters = dict(params[stage.name], report_dir=str(out))
    if "checkpoint_dir" in parameters:  # never resume from the user's checkpoints
        parameters["checkpoint_dir"] = str(scratch / "checkpoints" / stage.name)
    if stage.name == "population":  # its features come from the population_features stage
        features = scratch / "features"
        shutil.rmtree(features, ignore_errors=True)
        dvc = yaml.safe_load((root / "dvc.yaml").read_text())
        cmd = shlex.split(dvc["stages"]["population_features"]["cmd"])
        cmd += ["--out", str(features)]  # overrides the block's out folder
        if cmd[0] == "python":
            cmd[0] = sys.executable
        subprocess.run(cmd, check=True, cwd=root)
        parameters["features_dir"] = str(features)
    return run(stage.study, parameters, quiet=True)


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
        verdict = {True: "yes", False: "**NO**", None: "-"}[row["pass"]]
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
    parser.add_argument(
        "--compare-only",
        action="store_true",
        help="compare the reports already in the scratch folder, without rerunning",
    )
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    params = yaml.safe_load((root / "params.yaml").read_text())
    stages = notebook_stages(root, params)
    unknown = [s for s in args.stages if s not in stages]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; known: {sorted(stages)}")
    scratch = Path(args.scratch).resolve()
    rows, timing = [], {}
    for name in args.stages or list(stages):
        stage = stages[name]
        committed_path = all_metrics(stage.report_dir)
        if not committed_path.exists():
            print(f"error: {committed_path} does not exist: nothing to compare", file=sys.stderr)
            return 1
        if args.compare_only:
            out = scratch / name
        else:
            print(f"verify: rerunning {name} into {scratch / name}", flush=True)
            start = time.perf_counter()
            out = rerun(stage, params, scratch, root)
            timing[name] = time.perf_counter() - start
        rerun_metrics = json.loads(all_metrics(out).read_text())
        committed = json.loads(committed_path.read_text())
        rows.extend(compare(name, committed, rerun_metrics, stage.report_dir, params[name]))
    table = format_table(rows)
    (scratch / "verify.md").write_text(table + "\n")
    pd.DataFrame(rows).to_csv(scratch / "verify.csv", index=False)
    print(table)
    failed = [r for r in rows if r["pass"] is False]
    compared = [r for r in rows if r["pass"] is not None]
    unjudged = sum(1 for r in rows if r["basis"].startswith("not judged"))
    identical = sum(1 for r in compared if r["committed"] == r["rerun"])
    took = ", ".join(f"{k} {v:.0f} s" for k, v in timing.items())
    print(
        f"\n{len(compared) - len(failed)} of {len(compared)} metrics within tolerance "
        f"({identical} identical); {unjudged} shown but not judged (no seed spread recorded)"
        f"{'; reruns took ' + took if took else ''}; table in {scratch / 'verify.md'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
