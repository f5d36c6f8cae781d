"""Study 04's glue (medclust.studies.cae_dec): params, slicing and splitting the cohort, the
tables, the thesis comparison and the metrics, on hand-made inputs (no training)."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_cohort
from matplotlib.collections import PathCollection

from medclust.cohort import Volume, load_cohort
from medclust.plots import voronoi_projection
from medclust.studies import cae_dec as study


def test_embedding_dims_and_runs():
    assert study.embedding_dims("3,10,30", 3, 128) == [3, 10, 30]
    assert study.embedding_dims("30, 10", 3, 64) == [3, 10, 30]  # embedding_dim always in
    with pytest.raises(ValueError, match="param sweep_dims"):
        study.embedding_dims("3;10", 3, 128)
    with pytest.raises(ValueError, match="param image_px must be a multiple of 32"):
        study.embedding_dims("3", 3, 100)
    # every seed at the main dimension, the first seed at the others (Table 3.6)
    assert study.runs(3, [3, 10, 30], [5, 6, 7]) == [(3, 5), (3, 6), (3, 7), (10, 5), (30, 5)]


def test_case_images_slices_through_the_mask_and_rescales():
    image = np.zeros((40, 40, 10), np.float32)
    image[..., 3:9] = np.arange(6)[None, None, :] + np.linspace(0, 1, 40)[:, None, None]
    mask = np.zeros(image.shape, np.uint8)
    mask[10:30, 10:30, 3:9] = 1
    vol = Volume("c", image, (1.0, 1.0, 1.0), np.eye(4), mask=mask)
    planes = study.case_images(vol, 32, 3)
    assert len(planes) == 3 and all(p.shape == (32, 32) for p in planes)
    assert all(p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1 for p in planes)
    # slices 3, 5 and 8 (evenly spaced through the mask) hold 0, 2 and 5 + a ramp: each is
    # rescaled on its own, so all three look alike
    np.testing.assert_allclose(planes[0], planes[2], atol=1e-5)
    assert planes[0].max() - planes[0].min() > 0.9
    # more slices asked for than the mask covers: each masked slice once
    assert len(study.case_images(vol, 32, 20)) == 6
    two_d = Volume("d", image[..., 5], (1.0, 1.0), np.eye(4))
    assert len(study.case_images(two_d, 64, 8)) == 1


def test_case_splits_by_label_70_10_20(tmp_path):
    data = load_cohort(write_tiny_cohort(tmp_path / "c", n=20))
    splits = study.case_splits(data, "split", "grade", seed=0)
    for grade in (0, 1):  # 10 cases each: 7 / 1 / 2
        counts = pd.Series(splits[data.clinical["grade"].to_numpy() == grade]).value_counts()
        assert counts.to_dict() == {"train": 7, "val": 1, "test": 2}
    assert list(study.case_splits(data, "split", "grade", seed=0)) == list(splits)
    assert list(study.case_splits(data, "split", "grade", seed=1)) != list(splits)
    data.clinical["split"] = ["train"] * 19 + ["holdout"]
    with pytest.raises(ValueError, match=r"column 'split' has values \['holdout'\]"):
        study.case_splits(data, "split", "grade", seed=0)


def test_head_images_keeps_cases_together(tmp_path):
    data = load_cohort(write_tiny_cohort(tmp_path / "c", n=10))
    images = study.head_images(data, "grade", "split", 32, 2, seed=0)
    assert images.X.shape == (20, 32, 32) and images.X.dtype == np.float32
    assert images.classes == ["0", "1"] and images.n_clusters == 2
    for case in set(images.case_ids):  # a case's slices share one split
        assert len(set(images.split[images.case_ids == case])) == 1
    counts = images.counts()
    assert counts.to_numpy().sum() == 20 and counts.index.name == "grade"
    assert np.array_equal(images.X_train, images.X[images.split == "train"])
    assert images.X_val is None or len(images.X_val) == images.val.sum()


def test_cohort_note_comes_from_the_cohort(tmp_path):
    data = load_cohort(write_tiny_cohort(tmp_path / "c", n=10))
    images = study.head_images(data, "grade", "split", 32, 2, seed=0)
    note = study.cohort_note(data, images)
    n = [int(m.sum()) for m in (images.train, images.val, images.test)]
    assert note == f"{data.name} ({data.modality}; {n[0]}/{n[1]}/{n[2]} train/val/test images)"


def _results() -> pd.DataFrame:
    rows = []
    for s, acc in [(0, 0.5), (1, 0.7)]:
        for m in study.ORDER:
            rows.append({"embedding_dim": 3, "seed": s, "method": m, "acc": acc, "nmi": acc / 2,
                         "ari": acc / 4, "mse": 0.01, "kl": 0.1, "iterations": 20, "epochs": 1.0,
                         "converged": True, "pretrain_steps": 30, "best_step": 20})  # fmt: skip
    for d in (10, 30):
        for m in study.SWEEP_METHODS:
            rows.append({"embedding_dim": d, "seed": 0, "method": m, "acc": d / 100,
                         "nmi": 0.1, "mse": 0.02, "kl": 0.2})  # fmt: skip
    return pd.DataFrame(rows)


def _images() -> study.HeadImages:
    split = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 4)
    y = np.array(["CT", "MR"] * 6)
    return study.HeadImages(np.zeros((12, 32, 32), np.float32), y, split, np.arange(12), "m")


def test_tables_metrics_and_thesis_rows():
    results, images = _results(), _images()
    y_test = images.y[images.test]
    labels = {(m, 3, s): y_test for m in study.ORDER for s in (0, 1)}
    labels["dec", 10, 0] = np.array(["CT"] * 4)  # another dimension: not in the main table
    for s in (0, 1):
        labels["one_cluster", 3, s] = np.zeros(4, int)
    scores = study.main_scores(images, labels, 3, n_boot=20)
    assert scores.methods == study.ORDER and scores.resamples.n == 4
    assert scores.scored["dec", "acc"].n_runs == 2
    chance = study.chance_levels(images, labels, 3, n_perm=20)
    # every clustering but the true classes has a chance level of ACC, NMI and ARI
    assert list(chance) == study.ORDER[:-1]
    assert all([c.score for c in cs] == ["acc", "nmi", "ari"] for cs in chance.values())
    table = study.main_table(results, scores, chance, 3)
    assert list(table.index) == [study.NAMES[m] for m in ["chance", *study.ORDER]]
    assert table.loc["DEC", "acc_mean"] == pytest.approx(0.6)
    assert table.loc["DEC", "ari_mean"] == pytest.approx(0.15)
    assert table.loc["IDEC (gamma 0.1)", "acc_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    # the right modality on every test image: a degenerate interval at 1
    for score in ("acc", "nmi", "ari"):
        assert table.loc["DEC", f"{score}_ci_low"] == table.loc["DEC", f"{score}_ci_high"] == 1.0
    assert table.loc["DEC", "converged"] == 1.0
    # the chance row: DEC's null, no sd over seeds, no MSE
    row = table.loc[study.NAMES["chance"]]
    acc = chance["dec"][0]
    assert (row.acc_mean, row.acc_ci_low, row.acc_ci_high) == (acc.mean, acc.low, acc.high)
    assert np.isnan(row.acc_std) and np.isnan(row.mse_mean) and np.isnan(row.converged)
    assert list(table.columns) == list(study.main_table(results, scores, {}, 3).columns)
    # the same clusters everywhere: no comparison can tell two methods apart
    diffs = study.differences(scores)
    assert [(d.a, d.b) for d in diffs[::2]] == study.COMPARISONS
    assert [d.score for d in diffs] == ["acc", "nmi"] * len(study.COMPARISONS)
    assert {d.verdict for d in diffs} == {"cannot tell"}
    text = study.who_wins(table, diffs, chance)
    assert "DEC cannot be told apart from k-means + CAE (paired difference +0.000" in text
    sweep = study.sweep_results(results, 0)
    assert set(sweep.method) == set(study.SWEEP_METHODS) and set(sweep.seed) == {0}
    assert len(study.sweep_table(sweep)) == 3 * len(study.SWEEP_METHODS)

    metrics = study.study_metrics(results, table, chance, diffs, images, 3, [3, 10, 30], 0, 2, 1.5)
    assert metrics["acc"]["dec"] == pytest.approx(0.6)
    assert metrics["ari"]["dec"] == pytest.approx(0.15)
    assert metrics["acc_sd"]["dcec"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert metrics["acc_ci95"]["dec"] == [1.0, 1.0] and metrics["converged_fraction"] == 1.0
    assert metrics["acc_chance"]["dec"] == acc.mean and "true_classes" not in metrics["acc_chance"]
    assert metrics["acc_chance"]["one_cluster"] == pytest.approx(0.5)  # one cluster: its share
    assert metrics["acc_chance_p"]["one_cluster"] == 1.0
    assert metrics["nmi_chance"]["dec"] == chance["dec"][1].mean
    assert metrics["difference"]["acc_dec_vs_kmeans_cae"] == {"diff": 0.0, "ci": [0.0, 0.0]}
    assert len(metrics["difference"]) == 2 * len(study.COMPARISONS)
    assert metrics["sweep"]["30"]["dec"] == {"acc": 0.3, "nmi": 0.1}
    assert metrics["sweep"]["3"]["kmeans_cae"]["acc"] == 0.5  # the first seed only
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (6, 2, 4)
    for path in study.HEADLINE.values():  # every headline number is in the metrics
        key, _, method = path.partition(".")
        assert isinstance(metrics[key][method] if method else metrics[key], float)

    caes = {(3, s): SimpleNamespace(best_val_mse_=v) for s, v in [(0, 0.002), (1, 0.004)]}
    rows = study.thesis_comparison(results, caes, 3, [0, 1], "my cohort")
    by_quantity = {r["quantity"]: r for r in rows}
    dec3 = by_quantity["DEC ACC / NMI, dim 3"]
    assert dec3["paper"] == "0.805 / 0.613" and dec3["this_run"] == "0.600 ± 0.141 / 0.300 ± 0.071"
    assert dec3["note"].startswith("my cohort")
    assert by_quantity["DCEC ACC / NMI, dim 30"]["this_run"] == "0.300 / 0.100"
    assert by_quantity["IDEC (gamma 0.1) ACC / NMI, dim 3"]["note"].startswith("not in the thesis")
    pre = by_quantity["pretraining MSE, dim 3 (validation, best epoch)"]
    assert pre["this_run"] == "0.003 ± 0.001"
    # the thesis' comparisons (both methods in the thesis, ACC only) beside the paired ones
    with_diffs = study.thesis_comparison(results, caes, 3, [0, 1], "my cohort", diffs)
    assert len(with_diffs) == len(rows) + 3
    by_quantity = {r["quantity"]: r for r in with_diffs}
    claim = by_quantity["DEC − k-means + CAE: ACC, dim 3"]
    assert claim["paper"] == "+0.183"
    assert claim["this_run"] == "+0.000 [+0.000, +0.000]: cannot tell"
    assert (
        claim["note"]
        == "my cohort; paired on the same test images, draws and seeds; won 0 of 2 seeds"
    )
    assert by_quantity["DEC − DCEC: ACC, dim 3"]["paper"] == "+0.167"
    assert by_quantity["DCEC − k-means + CAE: ACC, dim 3"]["paper"] == "+0.016"
    assert [q for q in by_quantity if "−" in q] == [
        "DEC − k-means + CAE: ACC, dim 3",
        "DCEC − k-means + CAE: ACC, dim 3",
        "DEC − DCEC: ACC, dim 3",
    ]
    # no validation images: no pretraining MSE to show
    caes = {(3, s): SimpleNamespace(best_val_mse_=float("nan")) for s in (0, 1)}
    assert study.thesis_comparison(results, caes, 3, [0, 1], "c")[-1]["this_run"] == ""


def _wrong(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` with the first ``n`` modalities swapped (CT <-> MR)."""
    pred = y.copy()
    pred[:n] = np.where(pred[:n] == "CT", "MR", "CT")
    return pred


def test_who_wins_reads_the_paired_verdicts():
    """40 test images, two seeds. DEC and IDEC are wrong on the first 4 images, k-means + CAE
    and DCEC on the first 10 (the same calls), PCA k-means on none, raw k-means makes DEC's
    calls."""
    split = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 40)
    y = np.array(["CT", "MR"] * 24)
    images = study.HeadImages(np.zeros((48, 32, 32), np.float32), y, split, np.arange(48), "m")
    y_test = y[images.test]
    preds = {
        "one_cluster": np.zeros(40, int),
        "kmeans_cae": _wrong(y_test, 10),
        "dec": _wrong(y_test, 4),
        "dcec": _wrong(y_test, 10),
        "idec": _wrong(y_test, 4),
        "pca_kmeans": y_test,
        "raw_kmeans": _wrong(y_test, 4),
        "true_classes": y_test,
    }
    labels = {(m, 3, s): p for m, p in preds.items() for s in (0, 1)}
    results = pd.DataFrame(
        [
            {"embedding_dim": 3, "seed": s, "method": m, "acc": float(np.mean(p == y_test)),
             "nmi": 0.5, "ari": 0.5, "mse": 0.01, "kl": 0.1, "iterations": 20, "epochs": 1.0,
             "converged": True}
            for (m, _, s), p in labels.items()
        ]
    )  # fmt: skip
    results.loc[results.method == "one_cluster", "acc"] = 0.5
    scores = study.main_scores(images, labels, 3, n_boot=200)
    chance = study.chance_levels(images, labels, 3, n_perm=200)
    table = study.main_table(results, scores, chance, 3)
    diffs = study.differences(scores)
    verdicts = {(d.a, d.b): d.verdict for d in diffs if d.score == "acc"}
    assert verdicts == {
        ("dec", "kmeans_cae"): "better",  # right wherever k-means + CAE is, and on 6 more
        ("dcec", "kmeans_cae"): "cannot tell",  # the same calls
        ("dec", "dcec"): "better",
        ("idec", "kmeans_cae"): "better",
        ("dec", "pca_kmeans"): "worse",
        ("dec", "raw_kmeans"): "cannot tell",
    }
    text = study.who_wins(table, diffs, chance)
    c = chance["dec"][0]
    assert 0.5 < c.mean < 0.65 and c.p_value < 0.05  # two balanced clusters of 20
    assert text.startswith(
        f"DEC clusters the test images with ACC 0.900 (chance at its cluster sizes {c.mean:.3f} "
        f"[{c.low:.3f}, {c.high:.3f}], permutation p = {c.p_value:.3f}). Paired on the same test "
        "images, bootstrap draws and seeds, DEC is better than k-means + CAE (paired difference "
        "+0.150 ["
    )
    assert "; won 2 of 2 seeds); is better than DCEC (paired difference +0.150 [" in text
    assert "; is worse than k-means on PCA-d pixels (paired difference -0.100 [" in text
    assert "; cannot be told apart from k-means on raw pixels (paired difference +0.000 " in text
    assert (
        ". DCEC cannot be told apart from k-means + CAE (paired difference +0.000 [+0.000, "
        "+0.000]; won 0 of 2 seeds); IDEC is better than k-means + CAE"
    ) in text
    assert text.endswith(". Ceiling (the true modality): 1.000.")
    # without the other heads' comparisons: DEC alone
    only_dec = [d for d in diffs if d.a == "dec"]
    assert "DCEC cannot" not in study.who_wins(table, only_dec, chance)


def test_score_run_scores_acc_nmi_and_ari_of_every_method():
    images = _images()  # test labels: CT, MR, CT, MR
    embedding = np.array([[0.0], [1.0], [0.0], [1.0]])
    cae = SimpleNamespace(
        transform=lambda X: embedding,
        reconstruction_mse=lambda X: 0.01,
        n_iter_=30,
        best_step_=20,
    )
    dec = SimpleNamespace(
        init_centers_=np.array([[1.0], [0.0]]),  # k-means + CAE: MR, CT, MR, CT
        predict=lambda X: np.array([0, 0, 0, 1]),  # one MR image in the CT cluster
        kl_divergence=lambda X: 0.2,
        n_iter_=7,
        n_epochs_=1.5,
        converged_=True,
    )
    baselines = {"one_cluster": (np.zeros(4, int), 0.05)}
    rows, labels = study.score_run(images, cae, {"dec": dec}, 3, 0, baselines)
    by = pd.DataFrame(rows).set_index("method")
    assert list(by.index) == ["kmeans_cae", "dec", "one_cluster"] and list(labels) == list(by.index)
    # k-means + CAE names the modalities the other way round: perfect once matched
    assert by.acc["kmeans_cae"] == by.nmi["kmeans_cae"] == by.ari["kmeans_cae"] == 1.0
    assert by.acc["dec"] == 0.75 and by.ari["dec"] == pytest.approx(0.0)
    assert by.ari["one_cluster"] == 0.0 and by.acc["one_cluster"] == 0.5
    assert (by.kl["dec"], by.iterations["dec"], by.converged["dec"]) == (0.2, 7, True)
    assert by.best_step["kmeans_cae"] == 20 and by.mse["one_cluster"] == 0.05


def test_dec_confusion_names_clusters_by_their_matched_modality():
    images = _images()  # test labels: CT, MR, CT, MR
    confusion = study.dec_confusion(images, np.array([1, 0, 1, 1]))
    assert confusion.loc["CT", "CT"] == 2 and confusion.loc["MR", "MR"] == 1
    assert confusion.loc["CT", "MR"] == 1 and confusion.to_numpy().sum() == 4


def test_voronoi_projection_draws_cells_points_and_centres():
    class FirstTwo:
        def fit_transform(self, X):
            return X[:, :2]

    Z = np.array([[0.0, 0, 5], [1, 0, 5], [10, 10, 5], [11, 10, 5]])
    centres = np.array([[0.5, 0, 0], [10.5, 10, 0]])
    fig, ax = plt.subplots()
    voronoi_projection(ax, Z, centres, FirstTwo(), ["a", "a", "b", "b"], ["a", "b"], "t")
    assert ax.get_title() == "t"
    offsets = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    assert [len(o) for o in offsets] == [2, 2, 2]  # class a, class b, centres
    np.testing.assert_array_equal(offsets[-1], centres[:, :2])
    plt.close(fig)
