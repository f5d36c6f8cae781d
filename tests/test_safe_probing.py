"""What a reviewer types cannot destroy data or results, and bad input fails early and clearly.

One test per reproduction of the "safe to probe" issue: the phantom CLI and an existing
cohort, a failed study run and the previous report, blank labels, a patch larger than every
ROI, typos in params and device, file modes, the size of metrics.json, CLI errors and names,
and a study run on a user's cohort into a folder of the user's choice.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, dvc_stages, write_tiny_cohort

from medclust.cohort import CohortError, load_cohort
from medclust.outputs import atomic_write_text, default_mode
from medclust.patches import sample_cohort_patches
from medclust.report_folder import MARKER, write_marker
from medclust.run import ParamError, Study, check_params, read_block


def _cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def _tree_state(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ 1. phantom CLI and data


def test_phantom_cli_refuses_an_existing_cohort(tmp_path):
    small = ["--set", "n_cases=2", "--set", "shape=[40, 32, 4]"]
    first = _cli("medclust_phantoms", "liver_mri", "--out", str(tmp_path), *small)
    assert first.returncode == 0, first.stderr
    before = _tree_state(tmp_path / "liver_mri")
    again = _cli("medclust_phantoms", "liver_mri", "--out", str(tmp_path), "--set", "n_cases=3")
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "--force" in again.stderr
    assert "Traceback" not in again.stderr
    assert _tree_state(tmp_path / "liver_mri") == before
    forced = _cli("medclust_phantoms", "liver_mri", "--out", str(tmp_path), *small, "--force")
    assert forced.returncode == 0, forced.stderr


def test_phantom_cli_needs_out_and_checks_params_before_writing(tmp_path):
    no_out = _cli("medclust_phantoms", "liver_mri")
    assert no_out.returncode == 2 and "--out" in no_out.stderr
    typo = _cli("medclust_phantoms", "--out", str(tmp_path), "--set", "n_cases=3")
    assert typo.returncode == 2 and "unknown parameter" in typo.stderr
    assert not any(tmp_path.iterdir())  # nothing written although liver_mri knows n_cases
    bad = _cli("medclust_phantoms", "liver_mri", "--out", str(tmp_path), "--set", "n_cases=-1")
    assert bad.returncode == 1 and "n_cases" in bad.stderr and "Traceback" not in bad.stderr


# ------------------------------------------------------------------ 2/3. all-or-nothing runs


def _previous_report(folder, study="cohorts"):
    folder.mkdir(parents=True)
    write_marker(folder, study)  # a report the runner wrote: the only kind it replaces
    (folder / "metrics.json").write_text('{"acc": 0.5}\n')
    (folder / "figures").mkdir()
    (folder / "figures" / "old.png").write_bytes(b"png")
    return _tree_state(folder)


@pytest.mark.slow
def test_failed_run_keeps_previous_report_and_says_where_partial_is(tmp_path):
    report = tmp_path / "reports" / "00_cohorts"
    before = _previous_report(report)
    broken = tmp_path / "broken" / "cohort"  # passes the runner's checks, fails in the kernel
    broken.mkdir(parents=True)
    (broken / "dataset.json").write_text("{ not json")
    failed = _cli(
        "medclust.run",
        "cohorts",
        "--quiet",
        "--set",
        f"data_dir={broken.parent}",
        "--report-dir",
        str(report),
    )
    assert failed.returncode == 1
    assert "previous report is unchanged" in failed.stderr
    assert str(report) + ".partial" in failed.stderr
    assert _tree_state(report) == before


@pytest.mark.slow
def test_study_on_a_user_cohort_into_a_new_folder(tmp_path):
    """The README's own-cohort command: any study, any cohort, a report folder of one's choice
    (created); params.yaml and reports/ untouched."""
    write_tiny_cohort(tmp_path / "mydata" / "tiny")
    params_before = (ROOT / "params.yaml").read_bytes()
    report = tmp_path / "my" / "report"
    done = _cli(
        "medclust.run",
        "cohorts",
        "--quiet",
        "--set",
        f"data_dir={tmp_path / 'mydata'}",
        "--set",
        "n_examples=1",
        "--report-dir",
        str(report),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((report / "metrics.json").read_text())["n_cases"] == 3
    assert (report / "notebook.html").is_file() and (
        report / "tables" / "metrics_all.json"
    ).exists()
    assert not report.with_name("report.partial").exists()
    assert (report / MARKER).read_text() == "cohorts\n"
    assert (ROOT / "params.yaml").read_bytes() == params_before
    mode = stat.S_IMODE((report / "metrics.json").stat().st_mode)
    assert mode == default_mode()
    (report / "stale.txt").write_text("from the first run")
    again = _cli(
        "medclust.run",
        "cohorts",
        "--quiet",
        "--set",
        f"data_dir={tmp_path / 'mydata'}",
        "--set",
        "n_examples=1",
        "--report-dir",
        str(report),
    )
    assert again.returncode == 0, again.stderr  # its own report: replaced as a whole
    assert not (report / "stale.txt").exists() and (report / "metrics.json").is_file()


def test_every_stage_keeps_its_outputs_before_a_run():
    for name, stage in dvc_stages().items():
        if stage["cmd"].startswith("python -m medclust.run"):
            assert stage["outs"] and all(stage["outs"].values()), name


# ------------------------------------------------------------------ 4. checked before any work


def test_blank_label_names_the_cases(tmp_path):
    root = write_tiny_cohort(tmp_path / "tiny", n=4)
    clinical = pd.read_csv(root / "clinical.csv", dtype=str)
    clinical.loc[1, "grade"] = None
    clinical.loc[3, "grade"] = " "
    clinical.to_csv(root / "clinical.csv", index=False)
    cohort = load_cohort(root)
    with pytest.raises(
        CohortError, match=r"clinical.csv: column 'grade' \(label_column\) is blank"
    ) as err:
        cohort.label_values("grade")
    assert "case_01, case_03" in str(err.value)
    with pytest.raises(CohortError, match="no column 'stage'"):
        cohort.label_values("stage")
    assert list(load_cohort(write_tiny_cohort(tmp_path / "ok")).label_values("grade")) == [0, 1, 0]


def test_patch_larger_than_every_roi_fails_at_once_naming_case_and_param():
    image = np.zeros((200, 200, 3), np.float32)
    mask = np.zeros_like(image, dtype=np.uint8)
    mask[50:150, 50:150, :] = 1
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"case 'liver_007'.*patch_size_mm=1000") as err:
        sample_cohort_patches(
            [(image, mask, (1.5, 1.5, 5.0))],
            10,
            size_mm=1000.0,
            out_px=8,
            min_inside=0.5,
            case_ids=["liver_007"],
        )
    assert time.perf_counter() - start < 5.0
    assert "min_inside" in str(err.value)


def test_unknown_param_names_the_closest_valid_one():
    study = Study.named("cdcn")
    params = read_block(ROOT / "params.yaml", "cdcn")
    assert check_params(study, params) == params
    with pytest.raises(
        ParamError, match=r"unknown parameter 'n_clusterz' \(did you mean 'n_clusters'\?\)"
    ):
        check_params(study, {**params, "n_clusterz": 5})
    with pytest.raises(ParamError, match="'n_clusters' must be int"):
        check_params(study, {**params, "n_clusters": "ten"})
    with pytest.raises(ParamError, match="unknown study 'cdnc'.*did you mean 'cdcn'"):
        Study.named("cdnc")


def test_runner_cli_rejects_typos_before_running(tmp_path):
    done = _cli(
        "medclust.run", "cdcn", "--set", "n_clusterz=5", "--report-dir", str(tmp_path / "r")
    )
    assert done.returncode == 2
    assert "did you mean 'n_clusters'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "r.partial").exists()


def test_invalid_device_is_called_invalid():
    from medclust.runtime import select_device

    with pytest.raises(ValueError, match="invalid device 'cudax'"):
        select_device("cudax")


# ------------------------------------------------------------------ 5. file modes


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a" / "metrics.json", "{}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        root = write_tiny_cohort(tmp_path / "cohort")
        assert stat.S_IMODE(root.stat().st_mode) == 0o755
        assert stat.S_IMODE((root / "clinical.csv").stat().st_mode) == 0o644
    finally:
        os.umask(old)


# ------------------------------------------------------------------ 6. readable metrics


def test_committed_metrics_json_hold_headline_numbers_only():
    for metrics in sorted((ROOT / "reports").glob("*/metrics.json")):
        values = json.loads(metrics.read_text())
        assert 1 <= len(values) <= 8, metrics
        assert all(isinstance(v, int | float) for v in values.values()), metrics
        assert all(len(k) <= 10 for k in values), metrics
        assert (metrics.parent / "tables" / "metrics_all.json").is_file(), metrics


# ------------------------------------------------------------------ 7. CLI names and errors


@pytest.mark.parametrize(
    "module",
    [
        "medclust_phantoms",
        "medclust.population",
        "medclust.run",
        "medclust.verify",
        "medclust_phantoms.manifest",
    ],
)
def test_cli_help_names_the_program(module):
    done = _cli(module, "--help")
    assert done.returncode == 0 and f"python -m {module}" in done.stdout


def test_cpu_profile_pins_kernels_unless_the_environment_says_otherwise(monkeypatch):
    from medclust.run import cpu_profile_env

    monkeypatch.delenv("MEDCLUST_CPU_PROFILE", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    env = cpu_profile_env()
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and "OMP_NUM_THREADS" not in env
    assert cpu_profile_env("native") == {}
    monkeypatch.setenv("MEDCLUST_CPU_PROFILE", "avx9")
    with pytest.raises(ParamError, match="unknown CPU profile 'avx9'"):
        cpu_profile_env()
