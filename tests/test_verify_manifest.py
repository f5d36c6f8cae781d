"""``make data``'s per-file manifest and ``make verify``'s comparison rules."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from medclust.verify import compare, flatten, notebook_stages, tolerance
from medclust_phantoms import exact, manifest


def _tree(root, files: dict[str, bytes]):
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_manifest_check_names_cohort_and_files(tmp_path):
    data = tmp_path / "data"
    _tree(data, {"a/x.nii.gz": b"1", "a/y.csv": b"2", "b/z.json": b"3"})
    record = [sys.executable, "-m", "medclust_phantoms.manifest", "record", str(data)]
    subprocess.run([*record, str(tmp_path / "data.md5")], check=True, capture_output=True)
    (data / "a" / "y.csv").write_bytes(b"changed")
    (data / "b" / "z.json").unlink()
    (data / "b" / "new.txt").write_bytes(b"4")
    check = [sys.executable, "-m", "medclust_phantoms.manifest", "check", str(data)]
    done = subprocess.run([*check, str(tmp_path / "data.md5")], capture_output=True, text=True)
    assert done.returncode == 1
    assert "2 cohort(s)" in done.stdout
    assert "a: 1 changed" in done.stdout and "changed: data/a/y.csv" in done.stdout
    assert "b: 1 missing, 1 extra" in done.stdout and "missing: data/b/z.json" in done.stdout
    (data / "a" / "y.csv").write_bytes(b"2")
    (data / "b" / "z.json").write_bytes(b"3")
    (data / "b" / "new.txt").unlink()
    done = subprocess.run([*check, str(tmp_path / "data.md5")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_manifest_matches_md5sum_format(tmp_path):
    _tree(tmp_path / "data", {"c/f.bin": b"abc"})
    manifest.write(manifest.digests(tmp_path / "data"), tmp_path / "m.md5")
    assert (tmp_path / "m.md5").read_text() == "900150983cd24fb0d6963f7d28e17f72  data/c/f.bin\n"
    with pytest.raises(ValueError, match="m.md5:1"):
        (tmp_path / "m.md5").write_text("nonsense\n")
        manifest.read(tmp_path / "m.md5")


def test_committed_manifest_lists_what_data_dvc_counts():
    entries = manifest.read(ROOT / "data.md5")
    nfiles = int(
        next(
            line for line in (ROOT / "data.dvc").read_text().splitlines() if "nfiles" in line
        ).split(":")[1]
    )
    assert len(entries) == nfiles
    assert {name.split("/")[1] for name in entries} == {
        "emphysema_ct",
        "head_modalities",
        "liver_mri",
        "lung_microct",
        "routine_ct",
        "routine_ct_atlas",
    }


# --------------------------------------------------------------------------- exact algebra


def test_exact_algebra_agrees_with_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(4, 50))
    np.testing.assert_allclose(exact.contract(a, b), a @ b, rtol=1e-12, atol=1e-15)
    w, stack = rng.normal(size=9), rng.normal(size=(9, 5, 6))
    np.testing.assert_allclose(exact.contract(w, stack), np.tensordot(w, stack, 1), rtol=1e-12)
    m = rng.normal(size=(3, 3)) + 3 * np.eye(3)
    np.testing.assert_allclose(exact.inv3(m), np.linalg.inv(m), rtol=1e-12)
    assert math.isclose(exact.det3(m), np.linalg.det(m), rel_tol=1e-12)
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = m, [10.0, -5.0, 2.0]
    np.testing.assert_allclose(exact.inv_affine(affine) @ affine, np.eye(4), atol=1e-12)
    r = exact.random_rotation(rng)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert math.isclose(exact.det3(r), 1.0, rel_tol=1e-12)
    scaled = r * np.array([0.9, 1.1, 1.05])[None, :]
    np.testing.assert_allclose(exact.polar_rotation(scaled), r, atol=1e-12)
    v = rng.normal(size=(7, 3))
    np.testing.assert_allclose(exact.norm(v, axis=1), np.linalg.norm(v, axis=1), rtol=1e-14)
    with pytest.raises(ValueError, match="do not align"):
        exact.contract(a, a)


# --------------------------------------------------------------------------- verify


def test_every_notebook_stage_is_verifiable():
    stages = notebook_stages(ROOT)
    assert sorted(stages) == sorted(
        ["cohorts", "cdcn", "jule3d", "deepcluster", "cae_dec", "population", "matrix"]
    )
    for stage in stages.values():
        assert (stage.report_dir / "metrics.json").exists(), stage


def test_tolerance_rules(tmp_path):
    committed = flatten(
        {
            "acc": {"dec": 0.6, "kmeans": 0.7},
            "acc_sd": {"dec": 0.05, "kmeans": 0.0},
            "nmi": {"jule": {"3": 0.2}},
            "nmi_seed_sd": {"jule": 0.01},
            "n_train": 694,
            "runtime_s": 12.0,
            "other": 0.3,
            "n_seeds": 2,
        }
    )
    tol, basis = tolerance("cae_dec", "acc.dec", committed, tmp_path)
    assert tol == pytest.approx(3 * 0.05 * math.sqrt(2 / 2)) and "acc_sd.dec" in basis
    assert tolerance("cae_dec", "nmi.jule.3", committed, tmp_path)[0] == pytest.approx(0.03)
    assert tolerance("cae_dec", "acc.kmeans", committed, tmp_path)[1].startswith("deterministic")
    assert tolerance("cae_dec", "n_train", committed, tmp_path) == (0.0, "exact")
    assert tolerance("cae_dec", "runtime_s", committed, tmp_path) == (None, "info")
    assert tolerance("cae_dec", "other", committed, tmp_path) == (
        None,
        "not judged: no seed spread recorded",
    )
    assert tolerance("cohorts", "acc.dec", committed, tmp_path) == (0.0, "exact")


def test_tolerance_from_per_seed_table(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "lowhigh_per_seed.csv").write_text(
        "method,seed,f1\ncDCN,0,0.7\ncDCN,1,0.8\ncDCN,2,0.9\nraw k-means,0,0.5\n"
    )
    tol, basis = tolerance("cdcn", "lowhigh.f1", {"lowhigh.f1": 0.8, "n_seeds": 3}, tmp_path)
    assert tol == pytest.approx(3 * 0.1 * math.sqrt(2 / 3)) and "lowhigh_per_seed.csv" in basis


def test_compare_flags_what_moved(tmp_path):
    committed = {"acc": {"dec": 0.6}, "acc_sd": {"dec": 0.01}, "n_seeds": 3, "n_test": 10}
    rerun = json.loads(json.dumps(committed))
    rows = {r["metric"]: r for r in compare("cae_dec", committed, rerun, tmp_path)}
    assert all(r["pass"] for r in rows.values())
    rerun["acc"]["dec"], rerun["n_test"] = 0.7, 11
    rows = {r["metric"]: r for r in compare("cae_dec", committed, rerun, tmp_path)}
    assert rows["acc.dec"]["pass"] is False and rows["n_test"]["pass"] is False
    assert rows["acc_sd.dec"]["pass"] is True
    del rerun["acc"]
    rows = {r["metric"]: r for r in compare("cae_dec", committed, rerun, tmp_path)}
    assert rows["acc.dec"]["pass"] is False and rows["acc.dec"]["rerun"] is None


def test_study01_rule_labels_match_the_study():
    """verify.py keeps its own copy of study 01's row labels (it must not import torch through
    the study module); the copy has to name the rows the study writes."""
    from medclust import verify
    from medclust.studies import cdcn

    assert verify._REFERENCES_01 == cdcn.REFERENCES
    assert {k: cdcn.LABELS[k] for k in verify._METHODS_01} == verify._METHODS_01
