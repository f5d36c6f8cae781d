"""Study 01's glue (medclust.studies.cdcn): param checks, cohort checks, the truth ceiling,
leave-one-out tables, cluster ranking, the paper comparison and the metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_cohort

from medclust.studies import cdcn as study

PARAMS = dict(
    n_patches=10,
    n_clusters=3,
    n_seeds=2,
    patch_px=16,
    n_trees=5,
    seed=0,
    pretrain_epochs=0,
    epochs=0,
    patch_size_mm=14.0,
    window_stride_mm=10.0,
)


def lowhigh(accuracy, f1=0.5):
    return {
        "accuracy": accuracy,
        "sensitivity": 0.5,
        "specificity": 0.25,
        "f1": f1,
        "balanced_accuracy": 0.375,
        "auc": accuracy - 0.1,
    }


def fake_results(with_truth=True):
    """Two seeds of each method, in the order leave_one_out produces them."""
    results = {}
    for method, base in (("ae_kmeans", 0.6), ("cdcn", 0.7), ("raw_kmeans", 0.5)):
        for s in (0, 1):
            results[method, s] = {
                "lowhigh": lowhigh(base + 0.1 * s, f1=base),
                "grade_spearman": 0.2 + 0.2 * s,
                "lasso_empty_folds": s,
            }
    results["majority", 0] = {
        "lowhigh": lowhigh(0.7, f1=0.82),
        "grade_spearman": float("nan"),
        "lasso_empty_folds": 0,
    }
    if with_truth:
        results["true_texture", 0] = {
            "lowhigh": lowhigh(0.9, f1=0.95),
            "grade_spearman": 0.8,
            "lasso_empty_folds": 0,
        }
    return results


def test_begin_checks_params_and_opens_the_report(tmp_path):
    run = study.begin(str(tmp_path / "report"), "cpu", **PARAMS)
    assert run.report.dir.is_dir() and run.runtime_s() >= 0
    for name, value, rule in [
        ("n_patches", 0, "an integer >= 1"),
        ("seed", -1, "an integer >= 0"),
        ("epochs", 1.5, "an integer >= 0"),
        ("window_stride_mm", 0.0, "a finite number in"),
    ]:
        with pytest.raises(ValueError, match=f"param {name} must be {rule}"):
            study.begin(str(tmp_path / "other"), "cpu", **{**PARAMS, name: value})
    assert not (tmp_path / "other").exists()  # refused before the report folder is made
    with pytest.raises(ValueError, match="device"):
        study.begin(str(tmp_path / "other"), "tpu", **PARAMS)


def test_load_liver_needs_low_and_high_grades(tmp_path):
    cohort = write_tiny_cohort(tmp_path / "tiny", n=4)  # grades 0, 1, 0, 1: all low
    with pytest.raises(ValueError, match="both low and high grades"):
        study.load_liver(str(cohort), "grade")
    clinical = cohort / "clinical.csv"
    frame = pd.read_csv(clinical)
    frame["grade"] = [0, 3, 1, 2]
    frame.to_csv(clinical, index=False)
    liver = study.load_liver(str(cohort), "grade")
    assert len(liver) == 4 and liver.has_truth
    np.testing.assert_array_equal(liver.high, [0, 1, 0, 1])
    image, roi, _, _ = liver.volumes[0]
    assert roi.dtype == bool
    assert abs(image[roi].mean()) < 1e-5 and image[roi].std() == pytest.approx(1, abs=1e-4)
    frame["grade"] = ["a", "b", "c", "d"]
    frame.to_csv(clinical, index=False)
    with pytest.raises(ValueError, match="must be a numeric grade"):
        study.load_liver(str(cohort), "grade")


def test_windows_carry_the_true_class_and_the_ceiling_drops_background(tmp_path):
    cohort = write_tiny_cohort(tmp_path / "tiny", n=4)
    frame = pd.read_csv(cohort / "clinical.csv")
    frame["grade"] = [0, 3, 1, 2]
    frame.to_csv(cohort / "clinical.csv", index=False)
    liver = study.load_liver(str(cohort), "grade")
    windows = study.sliding_windows(liver, size_mm=3.0, stride_mm=1.5, out_px=8)
    assert len(windows) == len(windows.case) == len(windows.truth)
    for c, (x, y, z), t in zip(windows.case, windows.centres, windows.truth, strict=True):
        assert liver.volumes[c][3][x, y, z] == t
    ceiling = study.true_texture_signature(liver, windows)
    assert ceiling.shape == (4, 2)  # classes 1 and 2 of the tiny cohort, background dropped
    np.testing.assert_allclose(ceiling.sum(axis=1), 1.0)
    train = study.random_patches(liver, 12, 3.0, 8, seed=0, min_inside=0.0)
    assert train.patches.shape == (12, 8, 8) and train.truth.shape == (12,)


def test_lowhigh_tables_keep_the_order_of_the_results():
    per_seed, summary = study.lowhigh_tables(fake_results())
    assert list(per_seed.method.unique()) == [
        "AE + k-means",
        "cDCN",
        "raw k-means",
        "majority class (floor)",
        "true texture classes (ceiling)",
    ]
    assert list(summary.method) == list(per_seed.method.unique())
    cdcn = summary.set_index("method").loc["cDCN"]
    assert cdcn["accuracy_mean"] == pytest.approx(0.75)
    assert cdcn["accuracy_std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert cdcn["lasso_empty_folds_mean"] == pytest.approx(0.5)
    assert "seed_mean" not in summary.columns


def test_cluster_importance_ranks_by_median_importance():
    importances = np.array(
        [
            [0.1, 0.5, 0.2, 0.2, 0.0],
            [0.1, 0.4, 0.3, 0.2, 0.0],
            [0.6, 0.1, 0.1, 0.2, 0.0],
        ]
    )
    table, top = study.cluster_importance(importances, k=2)
    assert top == [2, 3]  # medians 0.1, 0.4, 0.2, 0.2, 0: ties go to the lower cluster
    assert list(table.columns) == ["cluster", "median_importance", "top2_fraction"]
    np.testing.assert_allclose(table.top2_fraction, [1 / 3, 2 / 3, 2 / 3, 1 / 3, 0])
    table4, top4 = study.cluster_importance(importances)
    assert top4 == [2, 3, 4, 1] and "top4_fraction" in table4


def test_paper_comparison_rows():
    rows = study.paper_comparison(fake_results(), [2, 10, 9, 8], 70, 4000, 2)
    frame = pd.DataFrame(rows).set_index("quantity")
    assert frame.loc["low/high accuracy", "paper"] == 0.70
    assert frame.loc["low/high accuracy", "this_run"] == f"0.75 ± {np.std([0.7, 0.8], ddof=1):.2f}"
    scores = "low/high f1 / balanced accuracy / AUC, "
    assert frame.loc[scores + "true texture classes (ceiling)", "this_run"] == (
        "0.95 ± 0.00 / 0.38 ± 0.00 / 0.80 ± 0.00"
    )
    assert frame.loc[scores + "majority class (floor)", "this_run"].startswith("0.82 ± 0.00")
    assert frame.loc["low/high auc", "this_run"] == f"0.65 ± {np.std([0.6, 0.7], ddof=1):.2f}"
    assert frame.loc["most predictive clusters", "this_run"] == "2, 10, 9, 8"
    assert frame.loc["Spearman(LASSO LOO value, grade)", "this_run"] == "0.30"
    assert "70 cases, 4000 patches" in frame.loc["low/high f1", "note"]
    without = pd.DataFrame(study.paper_comparison(fake_results(False), [1], 4, 10, 2))
    assert scores + "true texture classes (ceiling)" not in set(without.quantity)
    assert len(without) == len(frame) - 1


def test_floor_auc_and_balanced_accuracy_cannot_pass_a_constant():
    class Liver:
        grade = np.repeat([0, 1, 2, 3], [1, 20, 32, 17])
        high = (grade >= 2).astype(int)

    floor = study.majority_floor(Liver())
    assert floor["lowhigh"]["f1"] == pytest.approx(2 * 49 / (2 * 49 + 21))  # 0.824
    assert floor["lowhigh"]["balanced_accuracy"] == 0.5 and floor["lowhigh"]["auc"] == 0.5
    # the low/high AUC is scikit-learn's (ties counting half), NaN with a single class
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    score = rng.integers(0, 4, 70) / 4
    auc = study._lowhigh(Liver.high, score)["auc"]
    assert auc == pytest.approx(roc_auc_score(Liver.high, score))
    assert np.isnan(study._lowhigh(np.ones(5, int), np.full(5, 0.7))["auc"])


def _p_high_results():
    high = np.repeat([0, 1], [21, 49])
    rng = np.random.default_rng(0)
    results = {("majority", 0): study.majority_floor(type("L", (), {"high": high})())}
    for s in (0, 1):
        good = np.clip(high * 0.6 + rng.normal(0.2, 0.1, 70), 0, 1)
        noise = rng.random(70)
        results["cdcn", s] = {"p_high": good}
        results["raw_kmeans", s] = {"p_high": noise}
    return results, type("L", (), {"high": high})()


def test_lowhigh_intervals_and_the_sentence():
    results, liver = _p_high_results()
    intervals = study.lowhigh_intervals(results, liver, n_boot=200)
    assert list(intervals.columns) == ["method", "score", "mean", "low", "high"]
    by = intervals.set_index(["method", "score"])
    floor = by.loc["majority class (floor)", "auc"]
    assert floor["low"] == floor["high"] == 0.5  # a constant score on every resample
    cdcn = by.loc["cDCN", "auc"]
    assert cdcn["low"] <= cdcn["mean"] <= cdcn["high"] and cdcn["low"] > 0.9
    text = study.who_wins(intervals)
    assert text.startswith("On balanced accuracy the cDCN signatures (")
    assert "beat majority class (floor) (0.50 [0.50, 0.50])" in text
    assert "beat raw k-means" in text and "true texture" not in text
    table = study.interval_table(intervals)
    assert list(table.columns) == ["f1", "balanced_accuracy", "auc"]
    assert table.loc["majority class (floor)", "auc"] == "0.50 [0.50, 0.50]"


def test_mean_subtracted_patches_and_the_texture_reference():
    rng = np.random.default_rng(2)
    truth = np.repeat([1, 2], 40)
    # class 2: a checkerboard texture of the same mean as the flat class 1
    flat = np.full((40, 8, 8), 1.0) + rng.normal(0, 0.05, (40, 8, 8))
    board = 1.0 + 1.5 * (np.indices((8, 8)).sum(0) % 2 - 0.5) + rng.normal(0, 0.05, (40, 8, 8))
    patches = np.concatenate([flat, board]).astype(np.float32) + rng.normal(0, 1, (80, 1, 1))
    cases = np.arange(80) % 10
    windows = study.Patches(patches, cases, np.zeros((80, 3), int), truth)
    centred = study.mean_subtracted(windows)
    np.testing.assert_allclose(centred.patches.mean(axis=(1, 2)), 0, atol=1e-5)
    assert centred.truth is truth
    reference = study.texture_reference(windows, 2, [0], n_sample=80).set_index("method")
    # the patch means are random offsets; the GLCM sees the checkerboard, k-means and probe alike
    assert reference.nmi["window GLCM features"] > 0.9 > 0.2 > reference.nmi["window mean"]
    assert reference.probe_bacc["window GLCM features"] > 0.9
    assert reference.probe_bacc["window mean"] < 0.75


def test_linear_probe_is_grouped_by_case():
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], 30)
    X = rng.normal(0, 1, (90, 3)) + 4 * np.eye(3)[truth]
    assert study.linear_probe(X, truth, np.arange(90) % 6) > 0.95
    noise = rng.normal(0, 1, (90, 3))
    assert study.linear_probe(noise, truth, np.arange(90) % 6) < 0.6
    # one case: nothing to hold out
    assert np.isnan(study.linear_probe(X, truth, np.zeros(90, int)))


def test_summary_metrics():
    importance, top = study.cluster_importance(np.tile(np.arange(5.0), (3, 1)), k=4)
    texture = pd.DataFrame(
        {
            "method": ["cDCN", "AE + k-means", "raw k-means", "cDCN"],
            "seed": [0, 0, 0, 1],
            "nmi": [0.2, 0.1, 0.05, 0.4],
            "acc": [0.5, 0.4, 0.3, 0.7],
        }
    )
    results = fake_results()
    results["cdcn_centred", 0] = {"lowhigh": lowhigh(0.8), "grade_spearman": 0.5}
    reference = pd.DataFrame(
        {
            "method": list(study.REFERENCES.values()),
            "seed": 0,
            "nmi": [0.1, 0.12, 0.18],
            "probe_bacc": [0.4, 0.3, 0.5],
        }
    )
    intervals = pd.DataFrame(
        {"method": ["cDCN"], "score": ["auc"], "mean": [0.7], "low": [0.6], "high": [0.8]}
    )
    metrics = study.summary_metrics(
        results, importance, top, texture, 70, 400, 900, 2, intervals=intervals, reference=reference
    )
    assert metrics["lowhigh"]["accuracy"] == pytest.approx(0.75)
    assert metrics["baseline_lowhigh"]["f1"] == pytest.approx(0.6)
    assert metrics["majority_lowhigh"]["f1"] == pytest.approx(0.82)
    assert metrics["ablation_lowhigh"]["auc"] == pytest.approx(0.7)
    assert metrics["lowhigh_ci"] == {"cdcn": {"auc": [0.6, 0.8]}}
    assert metrics["texture_reference_nmi"] == {"pixels": 0.1, "mean": 0.12, "glcm": 0.18}
    assert metrics["texture_reference_probe"] == {"pixels": 0.4, "mean": 0.3, "glcm": 0.5}
    assert metrics["grade_spearman"] == pytest.approx(0.3)
    assert metrics["top_clusters"] == [5, 4, 3, 2] and metrics["top4_stability"] == 1.0
    assert metrics["texture_nmi"] == pytest.approx(
        {"cdcn": 0.3, "ae_kmeans": 0.1, "raw_kmeans": 0.05}
    )
    plain = study.summary_metrics(fake_results(False), importance, top, None, 4, 10, 20, 2)
    assert "texture_nmi" not in plain and "true_texture_lowhigh" not in plain
    assert "ablation_lowhigh" not in plain and "lowhigh_ci" not in plain
    assert set(study.HEADLINE.values()) <= {
        f"{a}.{b}" for a, v in metrics.items() if isinstance(v, dict) for b in v
    }
