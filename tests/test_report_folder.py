"""The runner replaces only report folders it wrote, and checks its input folders before a
kernel starts (the ``--report-dir`` data-loss issue). Every case uses temporary folders; a
refusal must leave every path exactly as it was."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_tiny_cohort

from medclust.report_folder import MARKER, ReportDirError, check_replaceable, write_marker
from medclust.run import InputError, Study, check_inputs, check_report_dir, read_block


def _cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "medclust.run", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def _state(path: Path):
    if path.is_file():
        return path.read_bytes()
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def data_dir(tmp_path):
    write_tiny_cohort(tmp_path / "mydata" / "tiny")
    return tmp_path / "mydata"


def _refused(done, path):
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert str(path) in done.stderr


# ------------------------------------------------------------------ the reproduction


def test_a_folder_of_the_users_is_refused_and_kept(tmp_path, data_dir):
    keep = tmp_path / "pr" / "keep"
    keep.mkdir(parents=True)
    (keep / "notes.txt").write_text("precious\n")
    done = _cli("cohorts", "--set", f"data_dir={data_dir}", "--report-dir", str(keep))
    _refused(done, keep)
    assert "--force" in done.stderr and MARKER in done.stderr
    assert _state(keep) == {Path("notes.txt"): b"precious\n"}
    assert not keep.with_name("keep.partial").exists()


def test_a_file_is_refused_and_kept(tmp_path, data_dir):
    target = tmp_path / "pr_file"
    target.write_bytes(b"")
    done = _cli("cohorts", "--set", f"data_dir={data_dir}", "--report-dir", str(target))
    _refused(done, target)
    assert "is a file" in done.stderr and "--force" in done.stderr
    assert target.is_file() and target.read_bytes() == b""
    assert not target.with_name("pr_file.partial").exists()


@pytest.mark.parametrize("where", ["repo", "reports", "data", "parent", "cwd"])
def test_repository_places_are_refused_even_with_force(tmp_path, data_dir, where):
    target = {
        "repo": ROOT,
        "reports": ROOT / "reports",
        "data": ROOT / "data",
        "parent": ROOT.parent,
        "cwd": Path("."),
    }[where]
    cwd = tmp_path / "work" if where == "cwd" else ROOT
    cwd.mkdir(exist_ok=True)
    done = _cli(
        "cohorts",
        "--params",
        str(ROOT / "params.yaml"),
        "--set",
        f"data_dir={data_dir}",
        "--report-dir",
        str(target),
        "--force",
        cwd=cwd,
    )
    _refused(done, target)
    assert "even with --force" in done.stderr


def test_home_and_inputs_are_refused_even_with_force(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "data" / "cohort").mkdir(parents=True)
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    cohort = repo / "data" / "cohort"
    for path in (home, repo / "data" / "cohort" / "images", cohort):
        with pytest.raises(ReportDirError, match="even with --force"):
            check_replaceable(path, "cdcn", repo=repo, force=True, inputs=[cohort])
    outside = tmp_path / "elsewhere" / "cohort"
    outside.mkdir(parents=True)
    for path in (outside, outside.parent, outside / "report"):
        with pytest.raises(ReportDirError, match="an input of this run"):
            check_replaceable(path, "cdcn", repo=repo, force=True, inputs=[outside])
    check_replaceable(home / "notes", "cdcn", repo=repo, force=True)  # inside home: allowed


def test_what_may_be_replaced(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    new, empty, own, other, plain = (
        tmp_path / n for n in ("new", "empty", "own", "other", "plain")
    )
    for folder in (empty, own, other, plain):
        folder.mkdir()
    write_marker(own, "cdcn")
    write_marker(other, "jule3d")
    (plain / "x.txt").write_text("x")
    for path in (new, empty, own):
        check_replaceable(path, "cdcn", repo=repo)
    with pytest.raises(ReportDirError, match="the report of study 'jule3d'"):
        check_replaceable(other, "cdcn", repo=repo)
    with pytest.raises(ReportDirError, match=f"without {MARKER}"):
        check_replaceable(plain, "cdcn", repo=repo)
    link = tmp_path / "link"
    link.symlink_to(own)
    with pytest.raises(ReportDirError, match="symbolic link"):
        check_replaceable(link, "cdcn", repo=repo, force=True)
    for path in (other, plain):
        check_replaceable(path, "cdcn", repo=repo, force=True)


def test_stale_siblings_of_the_report_are_checked_too(tmp_path):
    params = {"report_dir": str(tmp_path / "report")}
    partial = tmp_path / "report.partial"
    partial.mkdir()
    (partial / "mine.txt").write_text("not the runner's")
    with pytest.raises(ReportDirError, match="report.partial"):
        check_report_dir(Study.named("cdcn"), params, force=True)
    write_marker(partial, "cdcn")  # a failed run's partial output: the runner's own
    assert check_report_dir(Study.named("cdcn"), params) == tmp_path / "report"


def test_committed_report_folders_carry_their_marker():
    params = read_block(ROOT / "params.yaml", "cohorts")  # any block: report_dir per study
    for block in ("cohorts", "cdcn", "jule3d", "deepcluster", "cae_dec", "population"):
        report = ROOT / read_block(ROOT / "params.yaml", block)["report_dir"]
        assert (report / MARKER).read_text() == f"{block}\n", report
        params = {"report_dir": str(report)}
        assert check_report_dir(Study.named(block), params) == report


# ------------------------------------------------------------------ input folders


def test_a_missing_cohort_fails_before_the_kernel(tmp_path):
    report = tmp_path / "r"
    done = _cli("cdcn", "--set", "cohort=/nope", "--report-dir", str(report))
    _refused(done, "/nope")
    assert "param cohort" in done.stderr and "does not exist" in done.stderr
    assert not any(tmp_path.iterdir())  # no report, no .partial


def test_input_folders_must_be_what_the_study_reads(tmp_path):
    cohort = write_tiny_cohort(tmp_path / "tiny")
    assert check_inputs({"cohort": str(cohort), "seed": 0}) == [cohort]
    (tmp_path / "plain").mkdir()
    (tmp_path / "file").write_text("x")
    cases = {
        "cohort": (tmp_path / "plain", "not a usable cohort.*dataset.json: file is missing"),
        "data_dir": (tmp_path / "plain", "holds no cohort"),
        "features_dir": (tmp_path / "plain", "no index.csv"),
    }
    for name, (folder, message) in cases.items():
        with pytest.raises(InputError, match=f"param {name}=.*{message}"):
            check_inputs({name: str(folder)})
        with pytest.raises(InputError, match=f"param {name}=.*is not a folder"):
            check_inputs({name: str(tmp_path / "file")})
    (cohort / "clinical.csv").unlink()
    with pytest.raises(InputError, match="clinical.csv: file is missing"):
        check_inputs({"cohort": str(cohort)})
