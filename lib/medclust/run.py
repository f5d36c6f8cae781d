"""Run one study notebook with its ``params.yaml`` block: what every DVC stage calls.

``python -m medclust.run cdcn`` executes ``notebooks/01_cdcn_texture_signatures.ipynb`` with
papermill and the ``cdcn`` block of ``params.yaml`` as its parameters (each parameter is
declared once, there), renders it to HTML, and only then replaces the report folder as a whole.

* **Checked first.** Every parameter name must be one of the notebook's (a typo is an error
  naming the closest valid name) and keep the type of its default; nothing runs otherwise.
* **All or nothing.** The run writes into ``<report_dir>.partial/`` beside the report folder;
  on success that folder replaces the report (the previous one is removed only then); on
  failure the previous report stays exactly as it was and the message says where the partial
  output is. The DVC stages declare their outputs ``persist: true``, so DVC does not delete the
  committed results before a run either.
* **Your own cohort.** ``python -m medclust.run cdcn --set cohort=/data/my_liver
  --report-dir /tmp/my_report`` runs the study on another cohort into a folder of your choice
  (created if needed) without touching ``params.yaml`` or ``reports/``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from medclust.outputs import default_mode

ROOT = Path(__file__).resolve().parents[2]

# params.yaml block -> notebook (stem under notebooks/)
STUDIES: dict[str, str] = {
    "cohorts": "00_cohorts",
    "cdcn": "01_cdcn_texture_signatures",
    "jule3d": "02_jule3d_segmentation",
    "deepcluster": "03_deepcluster_dcam",
    "cae_dec": "04_cae_dec_dcec",
    "population": "05_population_clustering",
}

PARTIAL = ".partial"

# Environment of the notebook's kernel, set before torch and numpy load there (README,
# "Reproducibility"). x86-64-v3: torch, oneDNN, MKL, OpenBLAS and numpy use their AVX2 + FMA
# kernels on every CPU that has them (Intel since Haswell, AMD since Zen) instead of each
# picking its own (AVX-512 where present), and torch splits its reductions over 2 threads, so
# the studies give the same bits on all such CPUs. "native" lets every library choose.
# Variables already set in the environment win.
CPU_PROFILES: dict[str, dict[str, str]] = {
    "x86-64-v3": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_CBWR": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "OMP_NUM_THREADS": "2",
    },
    "native": {},
}
DEFAULT_CPU_PROFILE = "x86-64-v3"


def cpu_profile_env(name: str | None = None) -> dict[str, str]:
    """The variables of CPU profile ``name`` (default: ``$MEDCLUST_CPU_PROFILE``, else
    x86-64-v3) that the environment does not set already."""
    name = name or os.environ.get("MEDCLUST_CPU_PROFILE") or DEFAULT_CPU_PROFILE
    if name not in CPU_PROFILES:
        raise ParamError(
            f"unknown CPU profile {name!r} (MEDCLUST_CPU_PROFILE); known: {', '.join(CPU_PROFILES)}"
        )
    return {k: v for k, v in CPU_PROFILES[name].items() if k not in os.environ}


class ParamError(ValueError):
    """A parameter that cannot work; the message names it."""


@dataclass(frozen=True)
class Study:
    name: str
    notebook: Path

    @classmethod
    def named(cls, name: str, root: Path = ROOT) -> Study:
        if name not in STUDIES:
            raise ParamError(
                f"unknown study {name!r}{_closest(name, STUDIES)}; known: {', '.join(STUDIES)}"
            )
        return cls(name, root / "notebooks" / f"{STUDIES[name]}.ipynb")

    def defaults(self) -> dict[str, object]:
        """The notebook's ``parameters`` cell as ``{name: default}``."""
        import ast

        import papermill as pm

        inspected = pm.inspect_notebook(str(self.notebook))
        return {name: ast.literal_eval(p["default"]) for name, p in inspected.items()}


def _closest(name: str, valid) -> str:
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number" if isinstance(value, float) else "int"
    return type(value).__name__


def check_params(study: Study, params: dict[str, object]) -> dict[str, object]:
    """``params`` checked against the notebook's parameters cell: every name known, every
    value of its default's type (an int where a float is expected is fine)."""
    defaults = study.defaults()
    for name, value in params.items():
        if name not in defaults:
            raise ParamError(
                f"{study.name}: unknown parameter {name!r}{_closest(name, defaults)}; "
                f"valid: {', '.join(defaults)}"
            )
        want, got = _kind(defaults[name]), _kind(value)
        if want != got and not (want == "number" and got == "int"):
            raise ParamError(
                f"{study.name}: parameter {name!r} must be {want} like its default "
                f"{defaults[name]!r}, got {value!r}"
            )
    missing = sorted(set(defaults) - set(params))
    if missing:
        raise ParamError(f"{study.name}: params block lacks {', '.join(missing)}")
    return params


def read_block(path: Path, name: str) -> dict[str, object]:
    try:
        params = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParamError(f"{path}: {exc}") from exc
    if not isinstance(params, dict) or name not in params:
        raise ParamError(f"{path}: no {name!r} block")
    return dict(params[name])


def parse_set(items: list[str]) -> dict[str, object]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamError(f"--set expects NAME=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _swap_in(partial: Path, report: Path) -> None:
    """Replace ``report`` by ``partial`` (two renames; the old report is removed last)."""
    old = report.with_name(report.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if report.exists():
        report.rename(old)
    partial.rename(report)
    shutil.rmtree(old, ignore_errors=True)


def _publishable(folder: Path) -> None:
    """Files and folders get the user's umask (papermill's temporary files are private)."""
    file_mode, dir_mode = default_mode(), default_mode(directory=True)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(dir_mode if path.is_dir() else file_mode)


def run(study: Study, params: dict[str, object], *, quiet: bool = False) -> Path:
    """Execute ``study`` with ``params`` into ``params['report_dir']`` (see the module)."""
    report = Path(params["report_dir"])
    partial = report.with_name(report.name + PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    executed = partial / "notebook.ipynb"
    os.environ.update(cpu_profile_env())  # the kernel inherits it
    import papermill as pm

    try:
        pm.execute_notebook(
            str(study.notebook),
            str(executed),
            parameters={**params, "report_dir": str(partial)},
            kernel_name="python3",
            log_output=not quiet,
            progress_bar=False,
            cwd=str(Path.cwd()),
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "jupyter",
                "nbconvert",
                "--log-level",
                "WARN",
                "--to",
                "html",
                "--no-input",
                str(executed),
            ],
            check=True,
        )
    except BaseException:
        kept = "the previous report is unchanged" if report.exists() else "no report was written"
        print(
            f"{study.name}: run failed; {kept} ({report}); partial output in {partial}",
            file=sys.stderr,
        )
        raise
    _publishable(partial)
    _swap_in(partial, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medclust.run",
        description="Run one study notebook with its params.yaml block; the report folder is "
        "replaced only when the run succeeds.",
    )
    parser.add_argument("study", help=f"one of: {', '.join(STUDIES)}")
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one parameter for this run (YAML value), e.g. --set cohort=data/my_cohort",
    )
    parser.add_argument("--report-dir", help="write the report here instead of report_dir")
    parser.add_argument("--quiet", action="store_true", help="do not echo the notebook's output")
    args = parser.parse_args(argv)
    try:
        study = Study.named(args.study)
        params = {**read_block(Path(args.params), args.study), **parse_set(args.overrides)}
        if args.report_dir:
            params["report_dir"] = args.report_dir
        check_params(study, params)
        cpu_profile_env()
    except ParamError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    try:
        report = run(study, params, quiet=args.quiet)
    except Exception as exc:  # the notebook's own error, already shown in its output
        name = type(exc).__name__
        parser.exit(1, f"{parser.prog}: error: {args.study} failed: {name}: {_last_line(exc)}\n")
    print(f"{study.name}: report written to {report}")
    return 0


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else ""


if __name__ == "__main__":
    sys.exit(main())
