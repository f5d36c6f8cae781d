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
                         "mse": 0.01, "kl": 0.1, "iterations": 20, "epochs": 1.0,
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
    table = study.main_table(results, images, labels, 3, n_boot=20)
    assert list(table.index) == [study.NAMES[m] for m in study.ORDER]
    assert table.loc["DEC", "acc_mean"] == pytest.approx(0.6)
    assert table.loc["IDEC (gamma 0.1)", "acc_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert table.loc["DEC", "acc_ci_low"] == table.loc["DEC", "acc_ci_high"] == 1.0
    assert table.loc["DEC", "converged"] == 1.0
    assert "cannot be told apart" in study.who_wins(table)
    sweep = study.sweep_results(results, 0)
    assert set(sweep.method) == set(study.SWEEP_METHODS) and set(sweep.seed) == {0}
    assert len(study.sweep_table(sweep)) == 3 * len(study.SWEEP_METHODS)

    metrics = study.study_metrics(results, table, images, 3, [3, 10, 30], 0, 2, 1.5)
    assert metrics["acc"]["dec"] == pytest.approx(0.6)
    assert metrics["acc_sd"]["dcec"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert metrics["acc_ci95"]["dec"] == [1.0, 1.0] and metrics["converged_fraction"] == 1.0
    assert metrics["sweep"]["30"]["dec"] == {"acc": 0.3, "nmi": 0.1}
    assert metrics["sweep"]["3"]["kmeans_cae"]["acc"] == 0.5  # the first seed only
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (6, 2, 4)

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
    # no validation images: no pretraining MSE to show
    caes = {(3, s): SimpleNamespace(best_val_mse_=float("nan")) for s in (0, 1)}
    assert study.thesis_comparison(results, caes, 3, [0, 1], "c")[-1]["this_run"] == ""


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
