"""Study 01's glue (medclust.studies.cdcn): param checks, cohort checks, the truth ceiling,
leave-one-out tables, cluster ranking, the paper comparison and the metrics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_cohort
from sklearn.metrics import roc_auc_score

from medclust import comparison as cmp
from medclust.studies import cdcn as study

PARAMS = dict(
    n_patches=10,
    n_clusters=3,
    n_seeds=2,
    patch_px=16,
    n_trees=5,
    cv_repeats=2,
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
        ("cv_repeats", 0, "an integer >= 1"),
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
    # the paired differences on AUC (not balanced accuracy) beside the paper's claim
    diffs = [
        _difference("majority", "auc", 0.2, 0.1, 0.3, "better"),
        _difference("raw_kmeans", "auc", 0.05, -0.05, 0.15, "cannot tell"),
        _difference("majority", "balanced_accuracy", 0.2, 0.1, 0.3, "better"),
    ]
    rows = study.paper_comparison(fake_results(), [2, 10, 9, 8], 70, 4000, 2, diffs)
    with_diffs = pd.DataFrame(rows).set_index("quantity")
    assert len(with_diffs) == len(frame) + 2
    floor = with_diffs.loc["cDCN − majority class (floor): low/high AUC"]
    assert floor["paper"] == "predictive (F1 0.78)"
    assert floor["this_run"] == "+0.20 [+0.10, +0.30]: better"
    assert "repeated stratified 5-fold CV with refits" in floor["note"]
    raw = with_diffs.loc["cDCN − raw k-means: low/high AUC"]
    assert raw["paper"] == "" and raw["this_run"] == "+0.05 [-0.05, +0.15]: cannot tell"


def _difference(rival, score, diff, low, high, verdict):
    return cmp.Difference("cdcn", rival, score, diff, low, high, verdict, 0.01, 2, 2)


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


def _liver(n_low: int = 10, n_high: int = 20):
    return SimpleNamespace(high=np.repeat([0, 1], [n_low, n_high]))


def test_repeated_cv_one_run_per_seed_and_repeat():
    liver = _liver()
    high = liver.high
    label = np.column_stack([high, 1 - high]).astype(float)  # the signature is the label
    noise = np.random.default_rng(0).random((30, 3))
    signatures = {
        ("cdcn", 0): label,
        ("cdcn", 1): label,
        ("ae_kmeans", 0): label,  # seed 0 knows the label, seed 1 does not
        ("ae_kmeans", 1): noise,
        ("cdcn_centred", 0): label,  # the cDCN's signatures again, with its seeds
        ("cdcn_centred", 1): label,
    }
    cv = study.repeated_cv(signatures, label, liver, n_trees=5, seed=0, n_repeats=2)
    assert list(cv) == ["majority", "ae_kmeans", "cdcn", "cdcn_centred", "true_texture"]
    # one run per (seed, repeat) of each method, one per repeat of the truth, one floor
    assert {m: len(runs) for m, runs in cv.items()} == {
        "majority": 1,
        "ae_kmeans": 4,
        "cdcn": 4,
        "cdcn_centred": 4,
        "true_texture": 2,
    }
    np.testing.assert_array_equal(cv["majority"][0], np.ones(30))  # 20 of 30 high
    for runs in cv.values():
        assert all(p.shape == (30,) and ((p >= 0) & (p <= 1)).all() for p in runs)
    # a signature that is the label: every out-of-fold probability on the right side
    for p in cv["cdcn"] + cv["true_texture"]:
        np.testing.assert_array_equal(p > 0.5, high == 1)
    # seeds in order, repeats within: the two runs of seed 0 first
    aucs = [roc_auc_score(high, p) for p in cv["ae_kmeans"]]
    assert aucs[:2] == [1.0, 1.0] and max(aucs[2:]) < 1.0
    # the same features with the same seeds on the same folds: the same probabilities
    for a, b in zip(cv["cdcn"], cv["cdcn_centred"], strict=True):
        np.testing.assert_array_equal(a, b)

    scores = study.lowhigh_scores(cv, liver, n_boot=200)
    assert scores.methods == list(cv)
    diffs = {(d.b, d.score): d for d in study.differences(scores)}
    # the rivals in RIVALS order that ran (no raw k-means here), balanced accuracy first
    assert list(diffs) == [
        (rival, score)
        for score in ("balanced_accuracy", "auc")
        for rival in ("majority", "ae_kmeans", "cdcn_centred")
    ]
    floor = diffs["majority", "auc"]
    # perfect on every run against a constant 0.5 on every draw
    assert floor.verdict == "better" and floor.diff == pytest.approx(0.5)
    assert floor.low == pytest.approx(0.5) and floor.high == pytest.approx(0.5)
    assert (floor.runs_won, floor.runs) == (4, 4)
    assert diffs["majority", "balanced_accuracy"].verdict == "better"
    same = diffs["cdcn_centred", "auc"]
    assert same.verdict == "cannot tell" and same.low == same.high == same.diff == 0.0
    assert (same.runs_won, same.runs) == (0, 4)
    assert diffs["ae_kmeans", "auc"].diff > 0 and diffs["ae_kmeans", "auc"].runs_won == 2


def _cv_by_hand():
    """Probabilities of high steatosis per run: the AE baseline perfect, the cDCN right but
    for a few low cases it calls high, raw k-means noise, the floor constant."""
    high = np.repeat([0, 1], [21, 49])
    rng = np.random.default_rng(0)
    perfect = high * 0.8 + 0.1
    cdcn = perfect.copy()
    cdcn[:4] = 0.9  # four low cases called high
    return {
        "majority": [np.ones(70)],
        "cdcn": [cdcn, cdcn],
        "ae_kmeans": [perfect, perfect],
        "raw_kmeans": [rng.random(70), rng.random(70)],
    }, SimpleNamespace(high=high)


def test_lowhigh_intervals_and_the_sentence():
    cv, liver = _cv_by_hand()
    scores = study.lowhigh_scores(cv, liver, n_boot=200)
    intervals = study.lowhigh_intervals(scores)
    assert list(intervals.columns) == ["method", "score", "mean", "low", "high"]
    assert list(intervals.method.unique()) == [
        "majority class (floor)",
        "cDCN",
        "AE + k-means",
        "raw k-means",
    ]
    by = intervals.set_index(["method", "score"])
    for score in ("balanced_accuracy", "auc"):
        floor = by.loc["majority class (floor)", score]
        assert floor["low"] == floor["high"] == floor["mean"] == 0.5  # constant on every draw
    perfect = by.loc["AE + k-means", "auc"]
    # a perfect prediction has a degenerate interval at 1
    assert perfect["mean"] == perfect["low"] == perfect["high"] == 1.0
    cdcn = by.loc["cDCN", "balanced_accuracy"]
    assert cdcn["mean"] == pytest.approx((17 / 21 + 1) / 2)
    assert cdcn["low"] <= cdcn["mean"] <= cdcn["high"] < 1.0
    # the four low cases tie with every high case: AUC 1 - 4 * 49 / 2 / (21 * 49)
    assert by.loc[("cDCN", "auc"), "mean"] == pytest.approx(1 - 2 / 21)

    diffs = study.differences(scores)
    verdicts = {(d.b, d.score): d.verdict for d in diffs}
    assert verdicts == {
        ("majority", "balanced_accuracy"): "better",
        ("ae_kmeans", "balanced_accuracy"): "worse",  # wrong on 4 cases the AE gets right
        ("raw_kmeans", "balanced_accuracy"): "better",
        ("majority", "auc"): "better",
        ("ae_kmeans", "auc"): "worse",
        ("raw_kmeans", "auc"): "better",
    }
    text = study.who_wins(intervals, diffs)
    assert text.startswith(
        "Under 5-fold cross-validation repeated with refits, paired on the same cases, folds, "
        "seeds and repeats: On balanced accuracy the cDCN ("
    )
    d = next(d for d in diffs if (d.b, d.score) == ("majority", "balanced_accuracy"))
    assert (
        f"is better than majority class (floor) (paired difference {d.as_text(2)}; "
        "won 2 of 2 seed x repeat runs)"
    ) in text
    assert "is worse than AE + k-means (paired difference -0.10 [" in text
    assert "won 0 of 2 seed x repeat runs" in text
    assert "On ROC AUC the cDCN (" in text and "true texture" not in text
    table = study.interval_table(intervals)
    assert list(table.columns) == ["f1", "balanced_accuracy", "auc"]
    assert table.loc["majority class (floor)", "auc"] == "0.50 [0.50, 0.50]"

    # with the ceiling: its AUC for scale
    cv["true_texture"] = [liver.high.astype(float)]
    scores = study.lowhigh_scores(cv, liver, n_boot=50)
    text = study.who_wins(study.lowhigh_intervals(scores), study.differences(scores))
    assert text.endswith(
        "Signatures of the true texture classes reach an AUC of 1.00 [1.00, 1.00]: the ceiling "
        "any clustering of these windows could give."
    )


def test_texture_chance_shuffles_each_seeds_clusters():
    truth = np.repeat([1, 2, 3], 20)
    rng = np.random.default_rng(0)
    window_labels = {
        ("cdcn", 0): truth - 1,  # the truth itself
        ("cdcn", 1): (truth % 3),  # the truth, renamed
        ("raw_kmeans", 0): np.zeros(60, int),  # one cluster
        ("ae_kmeans", 0): rng.integers(0, 3, 60),
    }
    chance = study.texture_chance(window_labels, truth, n_perm=200)
    assert list(chance) == ["cDCN", "raw k-means", "AE + k-means"]
    assert all([c.score for c in cs] == ["acc", "nmi", "ari"] for cs in chance.values())
    acc, nmi, ari = chance["cDCN"]
    assert acc.observed == nmi.observed == ari.observed == pytest.approx(1.0)
    # perfect clusters are never reached by shuffling: the smallest p-value of 200 shuffles
    assert acc.p_value == nmi.p_value == pytest.approx(1 / 201)
    assert 1 / 3 < acc.mean < 0.6 and 0 < nmi.mean < 0.1 and abs(ari.mean) < 0.05
    assert acc.n_perm == 200 and acc.low <= acc.mean <= acc.high
    # one cluster: every shuffle is the same table (accuracy 1/3, NMI and ARI 0), p = 1
    acc1, nmi1, ari1 = chance["raw k-means"]
    for value in (acc1.mean, acc1.low, acc1.high):
        assert value == pytest.approx(1 / 3)
    assert nmi1.mean == ari1.mean == 0.0 and acc1.p_value == 1.0
    assert chance["AE + k-means"][0].p_value > 0.05  # random clusters are at chance


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
    diffs = [_difference("majority", "auc", 0.2, 0.1, 0.3, "better")]
    truth = np.repeat([1, 2], 30)
    chance = study.texture_chance({("cdcn", 0): truth, ("raw_kmeans", 0): truth % 2}, truth, 20)
    metrics = study.summary_metrics(
        results, importance, top, texture, 70, 400, 900, 2, intervals=intervals,
        reference=reference, diffs=diffs, chance=chance,
    )  # fmt: skip
    assert metrics["lowhigh"]["accuracy"] == pytest.approx(0.75)
    assert metrics["baseline_lowhigh"]["f1"] == pytest.approx(0.6)
    assert metrics["majority_lowhigh"]["f1"] == pytest.approx(0.82)
    assert metrics["ablation_lowhigh"]["auc"] == pytest.approx(0.7)
    assert metrics["lowhigh_ci"] == {"cdcn": {"auc": [0.6, 0.8]}}
    assert metrics["difference"] == {"auc_cdcn_vs_majority": {"diff": 0.2, "ci": [0.1, 0.3]}}
    # chance NMI of two balanced clusters of 60 windows: near 0; ACC above 1/2
    assert set(metrics["texture_chance_nmi"]) == {"cdcn", "raw_kmeans"}
    assert 0 <= metrics["texture_chance_nmi"]["cdcn"] < 0.05
    assert 0.5 < metrics["texture_chance_acc"]["raw_kmeans"] < 0.65
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
    assert "difference" not in plain and "texture_chance_nmi" not in plain
    assert set(study.HEADLINE.values()) <= {
        f"{a}.{b}" for a, v in metrics.items() if isinstance(v, dict) for b in v
    }
