"""Study 03's glue (medclust.studies.deepcluster): params, the lung window, the classical
baseline's features, the dCAM localisation score, Table 1 and the metrics, on small synthetic
scans (the notebook itself runs in test_notebooks' smoke runs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medclust.intensity import window
from medclust.studies import deepcluster as study


def scans(n: int = 6, side: int = 8, truth: bool = True) -> study.Scans:
    """``n`` scans, half train half test; the lung is the central box, its lower half
    emphysema (-980 HU) in scan i > 0 and healthy lung (-850 HU) elsewhere."""
    hu = np.full((n, side, side, side), -850.0, np.float32)
    masks = np.zeros(hu.shape, bool)
    masks[:, 2:-2, 2:-2, 2:-2] = True
    truth_maps = []
    for i in range(n):
        emph = np.zeros(hu.shape[1:], bool)
        if i:
            emph[2 : side // 2, 2:-2, 2:-2] = True
        hu[i][emph] = -980.0
        truth_maps.append(emph if truth else None)
    y = np.array(["absent", "mild", "moderate"] * (n // 3))
    splits = np.array(["train", "test"] * (n // 2))
    return study.Scans(hu, masks, truth_maps, window(hu, -1000.0, -600.0), y, splits)


def test_start_checks_the_params(tmp_path):
    ok = dict(device="cpu", hu_window=(-1000.0, -600.0), pca_dim=0, n_seeds=2)
    run, device = study.start(str(tmp_path), **ok)
    assert device == "cpu" and run.report.dir == tmp_path
    with pytest.raises(ValueError, match="param pca_dim must be an integer >= 0, got -1"):
        study.start(str(tmp_path), **{**ok, "pca_dim": -1})
    with pytest.raises(ValueError, match=r"hu_min \(-600.0\) must be below hu_max"):
        study.start(str(tmp_path), **{**ok, "hu_window": (-600.0, -1000.0)})
    with pytest.raises(ValueError, match="param n_seeds must be an integer >= 1, got 0"):
        study.start(str(tmp_path), **{**ok, "n_seeds": 0})


def test_the_lung_window_maps_to_unit_interval():
    hu = np.array([-1200.0, -1000.0, -800.0, -600.0, 40.0], np.float32)
    out = window(hu, -1000.0, -600.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="low < high"):
        window(hu, -600.0, -600.0)


def test_scans_split_inputs():
    s = scans()
    X, masks = s.inputs("test")
    np.testing.assert_array_equal(X, s.X[1::2])
    np.testing.assert_array_equal(masks, s.masks[1::2])
    assert s.train.sum() == 3 and s.has_truth_map and not scans(truth=False).has_truth_map
    counts = study.dataset_counts(s, "subtype")
    assert counts.loc["mild", "test"] == 1 and counts.to_numpy().sum() == 6


def test_classical_features_are_the_lung_histogram_and_laa():
    s = scans()
    Hs, laa = study.classical_features(s, n_hist_bins=10, laa_threshold_hu=-950.0)
    # half the lung of every scan but the first is emphysema (-980 HU < -950)
    np.testing.assert_array_equal(laa, [0.0] + [50.0] * 5)
    assert Hs.shape == (6, 11)
    np.testing.assert_allclose(Hs[s.train].mean(0), 0.0, atol=1e-12)


def test_confusion_orders_the_subtypes_by_severity():
    s = scans()
    table = study.confusion(np.array([0, 1, 1]), s)
    assert list(table.columns) == ["absent", "mild", "moderate"]
    assert table.loc[1].tolist() == [1, 0, 1]  # test scans 1, 3, 5: mild, absent, moderate


def fake_evaluation(s: study.Scans, seed: int = 0) -> study.Evaluation:
    evaluation = study.Evaluation(s)
    for method in ("proposed", "baseline"):
        evaluation.head_predictions[method, seed] = np.array([0, 1, 0])
    return evaluation


def test_dcam_localisation_scores_against_the_true_emphysema():
    s = scans()
    test = np.flatnonzero(s.test)
    truth = np.stack([s.truth_maps[i] for i in test]).astype(np.float32)
    # channel 0 is the truth map, channel 1 its opposite; the proposed head picks 0, 1, 0
    perfect = np.stack([truth, 1 - truth], axis=1)
    dcams = {"proposed": perfect, "baseline": perfect[:, ::-1].copy()}
    auc = study.dcam_localisation(dcams, fake_evaluation(s), seed=0)
    assert auc["map"].tolist() == ["proposed", "baseline", "minus_hu"]
    # scan 1 (head class 1) is scored on the opposite map: AUC 0; scans 3, 5: AUC 1
    np.testing.assert_allclose(auc["auc"], [2 / 3, 1 / 3, 1.0])
    assert (auc["n_scans"] == 3).all()
    assert study.dcam_localisation(dcams, fake_evaluation(scans(truth=False)), seed=0) is None


SCORES = ["acc", "nmi", "silhouette", "davies_bouldin"]


def test_table1_comparison_and_metrics():
    s = scans()
    rng = np.random.default_rng(0)
    results = pd.DataFrame(
        [
            {
                "method": m,
                "seed": seed,
                **dict(zip(SCORES, rng.random(4), strict=True)),
            }
            for seed in (0, 1)
            for m in ("proposed", "classical", "baseline", "supervised")
        ]
    )
    table = study.table1(results)
    assert list(table.index) == list(study.NAMES.values())
    acc = results[results.method == "proposed"].acc
    assert table.loc["proposed (3D U-Net)", "acc_mean"] == acc.mean()
    auc = pd.DataFrame({"map": ["proposed", "baseline", "minus_hu"], "auc": [0.9, 0.8, 0.7]})
    rows = study.paper_comparison(results, auc, s, input_size=8)
    assert len(rows) == 3 * len(study.NAMES) + 1
    assert rows[3]["quantity"] == "proposed (3D U-Net): acc" and rows[3]["paper"] == 0.43
    assert "over 2 seeds" in rows[3]["note"] and rows[-1]["this_run"] == "0.900 / 0.800 / 0.700"
    metrics = study.study_metrics(results, auc, s, epochs=3, n_seeds=2, input_size=8)
    assert list(metrics)[:5] == ["acc", "nmi", "silhouette", "davies_bouldin", "acc_sd"]
    assert metrics["acc"]["proposed"] == acc.mean()
    assert metrics["acc_sd"]["proposed"] == acc.std(ddof=1)
    assert (metrics["n_train"], metrics["n_test"], metrics["epochs"]) == (3, 3, 3)
    assert metrics["dcam_auc"] == {"proposed": 0.9, "baseline": 0.8, "minus_hu": 0.7}
    one_seed = study.study_metrics(results[results.seed == 0], None, s, epochs=3)
    assert one_seed["acc_sd"]["proposed"] == 0.0 and "dcam_auc" not in one_seed
