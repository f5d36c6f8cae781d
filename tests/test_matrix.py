"""The method x cohort matrix (medclust.studies.matrix) and the cohort listing it reads
(medclust.datasets.listing): tiny 2D and 3D cohorts, a MedMNIST-layout npz written here."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from medclust import comparison as cmp
from medclust.cohort import CaseData, write_cohort
from medclust.datasets.listing import SOURCES_JSON, convert_listed, entries, read_sources
from medclust.run import InputError, check_inputs
from medclust.studies import matrix as study

TINY = study.Settings(
    image_px=32, embedding_dim=2, pretrain_steps=5, batch_size=8, learning_rate=1e-3,
    update_epochs=0.5, tol=0.001, max_epochs=1.0, dcec_gamma=0.01, idec_gamma=0.1,
    dcn_lambda=0.01, dcn_epochs=1, volume_px=12, jule_clusters=3, jule_epochs_per_period=1,
    jule_samples=20, deepcluster_epochs=1, deepcluster_filters=2, device="cpu",
)  # fmt: skip


def _blobs(n: int, shape: tuple, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes: a bright square (class 1) or none (class 0), on noise; uint8."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.integers(0, 60, size=(n, *shape)).astype(np.uint8)
    centre = tuple(slice(s // 4, 3 * s // 4) for s in shape)
    X[(y == 1, *centre)] = 200
    return X, y


def _cohort(root, n=40, shape=(32, 32), label="grade", splits=True):
    X, y = _blobs(n, shape)
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 10) + ["test"] * (n - n // 2 - n // 10))
    clinical = pd.DataFrame({"case_id": [f"c{i:03d}" for i in range(n)], label: y})
    if splits:
        clinical["split"] = split
    cases = (CaseData(f"c{i:03d}", X[i], (1.0,) * len(shape)) for i in range(n))
    return write_cohort(root, cases, clinical, name=root.name, modality="test",
                        description="tiny", clinical_label=label)  # fmt: skip


def _npz(path, n=30, shape=(28, 28)):
    X, y = _blobs(n, shape)
    parts = {"train": slice(0, 20), "val": slice(20, 24), "test": slice(24, n)}
    np.savez(
        path,
        **{f"{k}_images": X[s] for k, s in parts.items()},
        **{f"{k}_labels": y[s, None] for k, s in parts.items()},
    )
    return path


# ------------------------------------------------------------------ the listing


def test_entries_map_npz_to_the_real_folder_and_folders_to_themselves(tmp_path):
    listed = entries({"bm": "x/breastmnist.npz", "head": "data/head_modalities"}, tmp_path)
    assert [(e.name, e.folder, e.converted) for e in listed] == [
        ("bm", tmp_path / "bm", True),
        ("head", tmp_path.__class__("data/head_modalities"), False),
    ]
    for bad in ({}, {"a b": "x.npz"}, {"a": ""}, ["x.npz"]):
        with pytest.raises(ValueError, match="param cohorts"):
            entries(bad, tmp_path)


def test_convert_listed_converts_what_is_here_and_records_what_is_not(tmp_path):
    npz = _npz(tmp_path / "toymnist.npz")
    real = tmp_path / "real"
    status = convert_listed(
        {"toy": str(npz), "gone": str(tmp_path / "nope.npz"), "folder": "data/x"}, real
    )
    assert status["toy"]["status"] == "converted" and status["gone"]["status"] == "absent"
    assert "not on this machine" in status["gone"]["detail"] and "folder" not in status
    assert read_sources(real) == json.loads((real / SOURCES_JSON).read_text()) == status
    assert (real / "toy" / "dataset.json").is_file() and not (real / "gone").exists()
    again = convert_listed({"toy": str(npz)}, real)  # a rerun replaces its own conversion
    assert again["toy"]["status"] == "converted"


def test_the_listed_cli_reads_a_params_block(tmp_path):
    npz = _npz(tmp_path / "toymnist.npz")
    params = tmp_path / "params.yaml"
    params.write_text(f"matrix:\n  real_dir: {tmp_path / 'real'}\n  cohorts:\n    toy: {npz}\n")
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "medclust.datasets", "listed", *a],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    done = run("--params", str(params), "--section", "matrix")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("toy: converted")
    bad = run("--params", str(params), "--section", "nope")
    assert bad.returncode == 1 and "no block 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_the_runner_checks_the_folders_of_a_listing(tmp_path):
    cohort = _cohort(tmp_path / "tiny")
    listing = {"tiny": str(cohort), "real": str(tmp_path / "absent.npz")}
    assert check_inputs({"cohorts": listing}) == [cohort]  # an absent npz is not an error
    with pytest.raises(InputError, match="param cohorts.gone=.*does not exist"):
        check_inputs({"cohorts": {**listing, "gone": str(tmp_path / "gone")}})


# ------------------------------------------------------------------ the cohorts


def test_available_and_load_images(tmp_path):
    folder = _cohort(tmp_path / "tiny2d", shape=(40, 40))
    present, absent = study.available(
        {"tiny2d": str(folder), "bm": str(tmp_path / "bm.npz")}, tmp_path / "real"
    )
    assert [e.name for e in present] == ["tiny2d"] and "dvc repro real_cohorts" in absent["bm"]
    with pytest.raises(ValueError, match="is not a cohort folder"):
        study.available({"x": str(tmp_path / "nothing")}, tmp_path / "real")
    images = study.load_images(present[0], 32, 12, seed=0)
    assert images.X.shape == (40, 32, 32) and images.ndim == 2 and images.n_classes == 2
    assert images.X.min() >= 0 and images.X.max() <= 1 and images.test.sum() == 16
    assert set(images.y) == {"0", "1"} and images.val.sum() == 4
    volumes = study.load_images(
        study.available({"v": str(_cohort(tmp_path / "tiny3d", shape=(16, 16, 16)))}, "r")[0][0],
        32, 12, seed=0,
    )  # fmt: skip
    assert volumes.X.shape == (40, 12, 12, 12) and volumes.ndim == 3


def test_a_cohort_without_split_gets_a_seeded_split(tmp_path):
    entry = entries({"t": str(_cohort(tmp_path / "t", splits=False))}, tmp_path)[0]
    a, b = (study.load_images(entry, 32, 12, seed=s).split for s in (0, 0))
    assert (a == b).all() and set(a) == {"train", "val", "test"}


# ------------------------------------------------------------------ methods, scores, report


@pytest.fixture(scope="module")
def scored_2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("m")
    images = study.load_images(entries({"tiny": str(_cohort(root / "tiny"))}, root)[0], 32, 12, 0)
    return study.score_cohort(study.run_cohort(images, [0, 1], TINY), n_boot=50, n_perm=50)


def test_every_method_runs_and_is_scored_on_2d_images(scored_2d):
    runs = scored_2d.runs
    assert runs.methods() == [m for m in study.METHODS if m not in study.VOLUME_METHODS]
    assert len(runs.runs("dec")) == 2 and len(runs.runs("logistic")) == 1  # deterministic
    rows = study.cohort_rows(scored_2d).set_index("method")
    # the bright square is the class: pixels, PCA and the supervised ceiling find it
    for method in ("raw_kmeans", "pca_kmeans", "logistic"):
        assert rows.acc_mean[method] == 1.0, method
    assert rows.acc_mean["one_cluster"] == 0.5 and rows.acc_chance["one_cluster"] == 0.5
    assert np.isnan(rows.acc_chance["logistic"])  # a classifier: its floor is the majority
    assert rows.verdict["pca_kmeans"] == "" and rows.verdict["raw_kmeans"] == cmp.CANNOT_TELL
    assert (rows.seconds_per_seed >= 0).all() and rows.seconds_per_seed["dec"] > 0
    assert (rows.acc_ci_high <= 1.0).all() and (rows.acc_ci_low >= 0.0).all()
    claims = {(d.a, d.b) for d in scored_2d.differences}
    assert {("dec", "kmeans_cae"), ("dcec", "kmeans_cae")} <= claims
    assert ("jule", "raw_kmeans") not in claims  # no JULE on 2D images


def test_volume_methods_run_on_3d_cohorts(tmp_path):
    entry = entries({"v": str(_cohort(tmp_path / "v", n=30, shape=(12, 12, 12)))}, tmp_path)[0]
    images = study.load_images(entry, 32, 12, seed=0)
    runs = study.run_cohort(images, [0], TINY)
    assert {"jule", "deepcluster", "dec", "dcn"} <= set(runs.methods())
    assert runs.predictions["jule", 0].shape == (images.test.sum(),)


def test_tables_figure_verdict_and_metrics(scored_2d):
    long = study.cohort_rows(scored_2d)
    table = study.matrix_table(long)
    assert list(table.columns) == ["tiny"] and table.index[0] == "one cluster (majority class)"
    assert table.loc["k-means on pixels", "tiny"].endswith(" =")
    assert "n/a" not in table.to_string()
    assert list(study.runtime_table(long).columns) == ["tiny"]
    fig = study.plot_matrix(long, {"bm": "not on this machine"})
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["tiny", "bm"]
    text = study.verdict(long, {"bm": "x"})
    assert text.startswith("tiny: the best clustering is ") and "Absent on this machine: bm" in text
    rows = study.paper_comparison([scored_2d])
    assert [r["quantity"] for r in rows] == ["tiny: DEC − k-means + CAE (MLP AE in 3D), ACC",
                                             "tiny: DCEC − k-means + CAE (MLP AE in 3D), ACC"]  # fmt: skip
    metrics = study.matrix_metrics(long, [scored_2d], {"bm": "x"})
    assert metrics["acc"]["tiny"]["raw_kmeans"] == 1.0 and metrics["absent"] == 1
    assert metrics["better"] + metrics["worse"] + metrics["tied"] == 6  # 6 clusterings
    assert set(study.HEADLINE) <= {*metrics, "runtime_s"}
    assert "acc_sd" in metrics and "dec" in metrics["acc_sd"]["tiny"]


@pytest.mark.slow
def test_the_matrix_notebook_runs_and_reports_an_absent_cohort(tmp_path):
    """The notebook on a tiny cohort and an npz that is not there: the column is reported
    absent, the rest runs (what `make repro` does on a machine without ../shared)."""
    cohort = _cohort(tmp_path / "tiny")
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "medclust.run", "matrix", "--quiet",
         "--set", f"cohorts={{tiny: {cohort}, bm: {tmp_path / 'bm.npz'}}}",
         "--set", f"real_dir={tmp_path / 'real'}", "--set", "n_seeds=1",
         "--set", "pretrain_steps=5", "--set", "max_epochs=1.0", "--set", "dcn_epochs=1",
         "--report-dir", str(report)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["cohorts"] == 1 and metrics["absent"] == 1
    assert "Absent on this machine: bm" in (report / "tables" / "verdict.md").read_text()
    assert (report / "figures" / "matrix_acc.png").is_file()
