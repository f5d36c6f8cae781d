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
* **Inputs checked first.** Every input folder (``cohort``, ``data_dir``, ``features_dir``,
  the folders of a ``cohorts`` listing) must exist and be what the study reads (a cohort, a
  folder of cohorts, a feature folder) before a kernel starts; a failure leaves nothing
  behind.
* **Only its own folders replaced.** The runner marks every report folder it writes (a
  ``.medclust-report`` file naming the study) and replaces an existing path only when it is a
  report of the same study or an empty folder; anything else is refused before any work
  unless ``--force`` is given, and some places never (:mod:`medclust.report_folder`).
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
from medclust.report_folder import ReportDirError, check_replaceable, write_marker

ROOT = Path(__file__).resolve().parents[2]

# params.yaml block -> notebook (stem under notebooks/)
STUDIES: dict[str, str] = {
    "cohorts": "00_cohorts",
    "cdcn": "01_cdcn_texture_signatures",
    "jule3d": "02_jule3d_segmentation",
    "deepcluster": "03_deepcluster_dcam",
    "cae_dec": "04_cae_dec_dcec",
    "population": "05_population_clustering",
    "matrix": "06_method_matrix",
}

PARTIAL = ".partial"
OLD = ".old"

#: Parameters that name an input folder -> what the folder must be (:func:`check_inputs`).
INPUT_FOLDERS: dict[str, str] = {
    "cohort": "a cohort (dataset.json + clinical.csv)",
    "data_dir": "a folder of cohorts",
    "features_dir": "a feature folder (index.csv, python -m medclust.population)",
}
#: A parameter listing cohorts by name (the method matrix): each folder source must be a
#: cohort; an npz source is converted by the ``real_cohorts`` stage and may be absent.
COHORT_LISTING = "cohorts"

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


class InputError(ValueError):
    """An input folder that is missing or is not what the study reads; the message names the
    parameter and the path."""


def _input_folders(params: dict[str, object]) -> list[tuple[str, Path]]:
    """``(param, folder)`` of every input folder of ``params``: those of
    :data:`INPUT_FOLDERS` and the folder sources of a :data:`COHORT_LISTING`."""
    out = [(name, Path(str(params[name]))) for name in INPUT_FOLDERS if name in params]
    listing = params.get(COHORT_LISTING)
    if isinstance(listing, dict):
        out += [
            (f"{COHORT_LISTING}.{key}", Path(str(source)))
            for key, source in listing.items()
            if not str(source).endswith(".npz")
        ]
    return out


def check_inputs(params: dict[str, object]) -> list[Path]:
    """The input folders of ``params`` (:func:`_input_folders`), each checked to exist and to
    be what the study reads, without opening any voxel; :class:`InputError` otherwise."""
    from medclust.cohort import DATASET_JSON, CohortError, find_cohorts, load_cohort

    folders = []
    for name, folder in _input_folders(params):
        what = INPUT_FOLDERS.get(name, INPUT_FOLDERS["cohort"])
        where = f"param {name}={str(folder)!r}"
        if not folder.is_dir():
            state = "is not a folder" if folder.exists() else "does not exist"
            raise InputError(f"{where}: {state} (it must be {what})")
        if name == "cohort" or name.startswith(f"{COHORT_LISTING}."):
            try:
                load_cohort(folder, check_voxels=False)
            except CohortError as exc:
                raise InputError(f"{where}: not a usable cohort: {exc}") from exc
        elif name == "data_dir" and not find_cohorts(folder):
            raise InputError(f"{where}: holds no cohort (a sub-folder with {DATASET_JSON})")
        elif name == "features_dir":
            from medclust.population.store import INDEX_CSV

            if not (folder / INDEX_CSV).is_file():
                raise InputError(f"{where}: no {INDEX_CSV} (it must be {what})")
        folders.append(folder)
    return folders


def check_report_dir(
    study: Study, params: dict[str, object], *, force: bool = False, root: Path = ROOT
) -> Path:
    """The report folder of ``params``, checked (with its ``.partial`` and ``.old`` siblings)
    to be one the runner may replace (:func:`medclust.report_folder.check_replaceable`)."""
    report = Path(str(params["report_dir"]))
    inputs = [folder for _, folder in _input_folders(params)]
    check_replaceable(report, study.name, repo=root, force=force, inputs=inputs)
    for sibling in (PARTIAL, OLD):
        check_replaceable(
            report.with_name(report.name + sibling), study.name, repo=root, inputs=inputs
        )
    return report


def _swap_in(partial: Path, report: Path) -> None:
    """Replace ``report`` by ``partial`` (two renames; the old report is removed last)."""
    old = report.with_name(report.name + OLD)
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


def run(
    study: Study, params: dict[str, object], *, quiet: bool = False, force: bool = False
) -> Path:
    """Execute ``study`` with ``params`` into ``params['report_dir']`` (see the module):
    inputs and report folder are checked first (:class:`InputError`,
    :class:`~medclust.report_folder.ReportDirError`), nothing is written before."""
    check_inputs(params)
    report = check_report_dir(study, params, force=force)
    partial = report.with_name(report.name + PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write_marker(partial, study.name)
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
    parser.add_argument(
        "--report-dir",
        help="write the report here instead of report_dir; an existing path is replaced only "
        "when it is a report of the same study written by this runner, or an empty folder",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --report-dir that is not such a report (never the repository, "
        "its data/ or reports/, the home folder or an input of the run)",
    )
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
        report = run(study, params, quiet=args.quiet, force=args.force)
    except (InputError, ReportDirError) as exc:  # refused before any work
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
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
