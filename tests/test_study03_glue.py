"""Study 03's glue (medclust.studies.deepcluster): params, the scans, the classical baseline's
features, Table 1 (scores, bootstrap intervals, the verdict), the pseudo-label stability, the
dCAM localisation score and the metrics, on small synthetic scans (the notebook itself runs in
test_notebooks' smoke runs)."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_cases
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler

from medclust.cohort import write_cohort
from medclust.intensity import window
from medclust.models.deepcluster import DeepCluster, SupervisedPooledClassifier
from medclust.studies import deepcluster as study

SUBTYPE_CODE = {"absent": 0, "mild": 1, "moderate": 2}


def scans(
    n: int = 6,
    side: int = 8,
    truth: bool = True,
    severity: bool = False,
    decoy: bool = False,
    noise: float = 0.0,
) -> study.Scans:
    """``n`` scans, half train half test; the lung is the central box, its lower half
    emphysema (-980 HU) in scan i > 0 and healthy lung (-850 HU) elsewhere. ``severity``: the
    subtype's rank as the latent severity. ``decoy``: in scans i > 0 the first healthy slice
    is darker than the emphysema (-990 HU), so -HU ranks only half the healthy lung below it.
    ``noise``: sd of Gaussian HU noise (so that no two scans are the same)."""
    hu = np.full((n, side, side, side), -850.0, np.float32)
    masks = np.zeros(hu.shape, bool)
    masks[:, 2:-2, 2:-2, 2:-2] = True
    truth_maps = []
    for i in range(n):
        emph = np.zeros(hu.shape[1:], bool)
        if i:
            emph[2 : side // 2, 2:-2, 2:-2] = True
            if decoy:
                hu[i, side // 2, 2:-2, 2:-2] = -990.0
        hu[i][emph] = -980.0
        truth_maps.append(emph if truth else None)
    if noise:
        hu += np.random.default_rng(0).normal(0.0, noise, hu.shape).astype(np.float32)
    y = np.array(["absent", "mild", "moderate"] * (n // 3))
    splits = np.array(["train", "test"] * (n // 2))
    sev = np.array([SUBTYPE_CODE[v] for v in y], float) if severity else None
    return study.Scans(hu, masks, truth_maps, window(hu, -1000.0, -600.0), y, splits, severity=sev)


def codes(labels: np.ndarray) -> np.ndarray:
    return np.array([SUBTYPE_CODE[v] for v in labels])


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


def test_table1_rows_are_floor_references_networks_and_ceiling():
    assert list(study.NAMES) == [
        "one_cluster", "classical", "untrained", "baseline", "proposed", "supervised",
        "true_severity",
    ]  # fmt: skip
    assert study.NETWORKS == {"proposed": "unet", "baseline": "encoder"}
    assert set(study.PAPER) <= set(study.NAMES)
    # every headline metric names a method of Table 1 (or a dCAM map)
    for path in study.HEADLINE.values():
        score, method = path.split(".")
        assert method in study.NAMES and score in {"acc", "nmi", "dcam_auc"}


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
    assert s.severity is None and scans(severity=True).severity.tolist() == [0, 1, 2, 0, 1, 2]
    counts = study.dataset_counts(s, "subtype")
    assert counts.loc["mild", "test"] == 1 and counts.to_numpy().sum() == 6


def test_load_scans_resamples_windows_and_reads_the_severity(tmp_path):
    n = 4
    clinical = pd.DataFrame(
        {
            "case_id": [f"case_{i:02d}" for i in range(n)],
            "grade": ["a", "b", "a", "b"],
            "split": ["train", "test", "train", "test"],
            "severity": [0.5, 1.5, 0.25, 2.0],
        }
    )
    root = write_cohort(
        tmp_path / "tiny",
        tiny_cases(n),
        clinical,
        name="tiny",
        modality="test",
        description="tiny test cohort",
        labels={0: "outside", 1: "a", 2: "b"},
    )
    args = (str(root), "grade", "split", 8, (-1000.0, -600.0))
    s = study.load_scans(*args, severity_column="severity")
    assert s.hu.shape == s.masks.shape == s.X.shape == (n, 8, 8, 8)
    assert s.masks.dtype == bool and all(m.any() for m in s.masks)
    assert s.X.min() >= 0.0 and s.X.max() <= 1.0
    assert s.y.tolist() == ["a", "b", "a", "b"] and s.test.tolist() == [False, True] * 2
    assert s.has_truth_map and s.truth_maps[0].shape == (8, 8, 8)
    np.testing.assert_array_equal(s.severity, [0.5, 1.5, 0.25, 2.0])
    assert study.load_scans(*args).severity is None
    with pytest.raises(ValueError, match=r"no column 'sev' \(param severity_column\)"):
        study.load_scans(*args, severity_column="sev")


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


# --------------------------------------------------------------------------- Table 1


def test_evaluation_scores_intervals_and_table1():
    s = scans(12, severity=True)
    evaluation = study.Evaluation(s)
    y_test = codes(evaluation.y_test)  # mild, absent, moderate, mild, absent, moderate
    points = y_test[:, None] * 10.0 + np.linspace(0, 1, 6)[:, None]
    for seed in (0, 1):
        evaluation.add("proposed", seed, y_test, points)  # a perfect clustering
        evaluation.one_cluster(seed)
        evaluation.true_severity(seed, 3)
    res = evaluation.results()
    assert list(res.columns) == ["method", "seed", "acc", "nmi", "silhouette", "davies_bouldin"]
    assert len(res) == 6
    proposed = res[res.method == "proposed"].iloc[0]
    assert proposed.acc == 1.0 and proposed.nmi == pytest.approx(1.0)
    assert proposed.silhouette > 0.9 and proposed.davies_bouldin < 0.1
    floor = res[res.method == "one_cluster"].iloc[0]
    # the largest subtype's share; nothing to score silhouette and Davies-Bouldin on
    assert floor.acc == pytest.approx(1 / 3) and floor.nmi == 0.0
    assert np.isnan(floor.silhouette) and np.isnan(floor.davies_bouldin)
    np.testing.assert_array_equal(evaluation.predictions["one_cluster", 0], np.zeros(6))
    # the ceiling clusters the true severity: every subtype is one value here
    assert (res[res.method == "true_severity"].acc == 1.0).all()

    ci = evaluation.intervals(n_boot=200)
    assert list(ci.index) == ["proposed", "one_cluster", "true_severity"]
    # a perfect clustering stays perfect on every resample: a degenerate interval
    for score in ("acc", "nmi"):
        assert ci.loc["proposed", f"{score}_ci_low"] == pytest.approx(1.0)
        assert ci.loc["proposed", f"{score}_ci_high"] == pytest.approx(1.0)
    assert 0 < ci.loc["one_cluster", "acc_ci_low"] <= 1 / 3 <= ci.loc["one_cluster", "acc_ci_high"]
    assert np.isnan(ci.loc["one_cluster", "silhouette_ci_low"])
    assert ci.loc["proposed", "silhouette_ci_low"] > 0.9
    wide = evaluation.intervals(level=0.5, n_boot=200)
    assert wide.loc["one_cluster", "acc_ci_low"] >= ci.loc["one_cluster", "acc_ci_low"]

    table = study.table1(res, ci)
    assert list(table.index) == [
        study.NAMES[m] for m in ("one_cluster", "proposed", "true_severity")
    ]
    assert list(table.columns[:4]) == ["acc_mean", "acc_std", "acc_ci_low", "acc_ci_high"]
    floor_row = table.loc[study.NAMES["one_cluster"]]
    assert np.isnan(floor_row.silhouette_mean) and np.isnan(floor_row.silhouette_ci_low)
    assert table.loc[study.NAMES["proposed"], "acc_mean"] == 1.0
    assert table.loc[study.NAMES["proposed"], "acc_std"] == 0.0


def test_the_ceiling_is_skipped_without_a_severity():
    evaluation = study.Evaluation(scans())
    evaluation.true_severity(0, 3)
    assert evaluation.rows == [] and evaluation.predictions == {}


def test_classical_baseline_is_kmeans_fitted_on_the_training_scans():
    s = scans(12)
    features, _ = study.classical_features(s, n_hist_bins=10, laa_threshold_hu=-950.0)
    km = KMeans(2, n_init=10, random_state=0).fit(features[s.train])
    evaluation = study.Evaluation(s)
    evaluation.classical(0, 2, features)
    np.testing.assert_array_equal(
        evaluation.predictions["classical", 0], km.predict(features[s.test])
    )
    np.testing.assert_array_equal(evaluation.points["classical", 0], features[s.test])
    # every test scan has emphysema: one cluster, a third of them right
    assert evaluation.results().acc.tolist() == [pytest.approx(1 / 3)]


def test_deepcluster_and_supervised_are_scored_on_the_test_scans():
    s = scans(12, noise=20.0)
    train, test = s.inputs("train"), s.inputs("test")
    # 8^3 scans: whole volumes as training crops (the U-Net needs 8 voxels)
    common = dict(base_filters=2, batch_size=3, crop_fraction=1.0, seed=0, device="cpu")
    evaluation = study.Evaluation(s)
    untrained = DeepCluster(n_clusters=2, epochs=0, **common).fit(*train)
    proposed = DeepCluster(n_clusters=2, epochs=1, **common).fit(*train)
    evaluation.deepcluster("untrained", 0, untrained)
    evaluation.deepcluster("proposed", 0, proposed)
    for method, model in (("untrained", untrained), ("proposed", proposed)):
        assert evaluation.models[method, 0] is model
        np.testing.assert_array_equal(evaluation.predictions[method, 0], model.assign(*test))
        np.testing.assert_array_equal(evaluation.points[method, 0], model.transform(*test))
    # the head's class (for the dCAMs) only where the head was trained
    assert list(evaluation.head_predictions) == [("proposed", 0)]
    np.testing.assert_array_equal(
        evaluation.head_predictions["proposed", 0], proposed.predict(*test)
    )
    supervised = SupervisedPooledClassifier(epochs=1, **common).fit(*train, s.y[s.train])
    evaluation.supervised(0, supervised)
    np.testing.assert_array_equal(
        evaluation.predictions["supervised", 0], supervised.predict(*test)
    )
    scaler = StandardScaler().fit(supervised.pooled_features(*train))
    np.testing.assert_allclose(
        evaluation.points["supervised", 0],
        scaler.transform(supervised.pooled_features(*test)),
    )
    res = evaluation.results()
    assert res.method.tolist() == ["untrained", "proposed", "supervised"]
    assert res.acc.between(0, 1).all() and res.nmi.between(0, 1).all()


def table_of(acc: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    """A Table 1 with the given (mean, ci_low, ci_high) accuracies per method."""
    results = pd.DataFrame(
        [
            {"method": m, "seed": seed, "acc": mean, "nmi": 0.5, "silhouette": 0.2,
             "davies_bouldin": 1.0}
            for m, (mean, _, _) in acc.items()
            for seed in (0, 1)
        ]
    )  # fmt: skip
    intervals = pd.DataFrame(
        [{"method": m, "acc_ci_low": lo, "acc_ci_high": hi} for m, (_, lo, hi) in acc.items()]
    ).set_index("method")
    return study.table1(results, intervals)


def test_who_wins_reads_the_intervals():
    table = table_of(
        {
            "one_cluster": (0.2, 0.15, 0.25),
            "classical": (0.4, 0.3, 0.5),
            "untrained": (0.3, 0.2, 0.4),
            "baseline": (0.45, 0.4, 0.5),
            "proposed": (0.6, 0.55, 0.65),
            "supervised": (0.7, 0.6, 0.8),
            "true_severity": (0.9, 0.85, 0.95),
        }
    )
    text = study.who_wins(table)
    rivals = (
        "one cluster (floor)",
        "baseline (encoder)",
        "untrained 3D U-Net + k-means",
        "k-means on HU histogram",
    )
    for rival in rivals:
        assert f"beats {rival}" in text
    assert "the proposed 3D U-Net beats one cluster (floor); beats baseline" in text
    shown = "proposed (3D U-Net) 0.600 [0.550, 0.650], one cluster (floor) 0.200 [0.150, 0.250]"
    assert shown in text
    assert text.endswith(
        "For scale: the supervised reference scores 0.700 and k-means on the true severity "
        "(ceiling) 0.900."
    )
    mixed = study.who_wins(
        table_of(
            {
                "one_cluster": (0.2, 0.15, 0.25),
                "classical": (0.8, 0.75, 0.85),
                "baseline": (0.58, 0.5, 0.6),
                "proposed": (0.6, 0.55, 0.65),
            }
        )
    )
    assert "cannot be told apart from baseline (encoder)" in mixed
    assert "is worse than k-means on HU histogram" in mixed
    assert mixed.count("beats") == 1 and "beats one cluster (floor)" in mixed
    assert "untrained" not in mixed and "severity" not in mixed and "supervised" not in mixed
    assert "For scale" not in mixed


# --------------------------------------------------------------------------- figures


def test_pseudo_label_stability_per_epoch():
    s = scans(12)
    y_train = codes(s.y[s.train])
    one = SimpleNamespace(
        history_={"labels": [np.zeros(6, int), y_train], "nmi_prev": [np.nan, 0.0]}
    )
    half = SimpleNamespace(history_={"labels": [y_train], "nmi_prev": [np.nan]})
    models = {
        ("proposed", 0): one,
        ("baseline", 0): half,
        ("supervised", 0): SimpleNamespace(history_={"loss": [1.0]}),  # not DeepCluster
        ("untrained", 0): SimpleNamespace(history_={}),
    }
    df = study.pseudo_label_stability(models, s)
    assert list(df.columns) == ["method", "seed", "epoch", "nmi_prev", "nmi_truth"]
    assert df[["method", "epoch"]].values.tolist() == [
        ["proposed", 1], ["proposed", 2], ["baseline", 1]
    ]  # fmt: skip
    np.testing.assert_allclose(df.nmi_truth, [0.0, 1.0, 1.0])
    assert np.isnan(df.nmi_prev[0]) and df.nmi_prev[1] == 0.0
    fig = study.plot_pseudo_label_stability(df)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_training_curves_plot_every_network():
    h = {"loss": [1.0, 0.5], "accuracy": [0.4, 0.8]}
    models = {
        ("proposed", 0): SimpleNamespace(history_=h, n_clusters=3),
        ("baseline", 0): SimpleNamespace(history_=h),
        ("supervised", 0): SimpleNamespace(history_=h),
    }
    fig = study.plot_training_curves(models, 0)
    assert [len(ax.lines) for ax in fig.axes] == [4, 4]  # 3 curves + chance
    plt.close(fig)


# --------------------------------------------------------------------------- dCAMs


class FixedMaps:
    """A stand-in network whose dCAM is the scan's true emphysema map in channel 0 and its
    opposite in channel 1 (the scan found by its input)."""

    def __init__(self, s: study.Scans) -> None:
        self.truth = {x.tobytes(): t for x, t in zip(s.X, s.truth_maps, strict=True)}

    def dcam(self, X: np.ndarray) -> np.ndarray:
        t = np.stack([self.truth[x.tobytes()] for x in X]).astype(np.float32)
        return np.stack([t, 1 - t], axis=1)


def test_dcam_aucs_score_the_head_class_channel():
    s = scans(12, decoy=True)
    maps = FixedMaps(s)
    # chunks of 4 and 2 test scans; every test scan has emphysema and healthy lung
    np.testing.assert_array_equal(study.dcam_aucs(maps, s, np.zeros(6, int), chunk=4), [1.0] * 6)
    head = np.array([0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(study.dcam_aucs(maps, s, head, chunk=4), [1, 0, 1, 0, 1, 0])


def test_dcam_localisation_against_minus_hu():
    s = scans(12, decoy=True)
    evaluation = study.Evaluation(s)
    for key, head_class in ((("proposed", 0), 0), (("proposed", 1), 0), (("baseline", 0), 1)):
        evaluation.models[key] = FixedMaps(s)
        evaluation.head_predictions[key] = np.full(6, head_class)
    auc = study.dcam_localisation(evaluation, n_boot=100)
    assert auc["map"].tolist() == [
        "minus_hu", "proposed", "baseline", "proposed - minus_hu", "baseline - minus_hu"
    ]  # fmt: skip
    # -HU ranks the emphysema above one healthy slice and below the darker decoy: AUC 1/2;
    # the proposed head's channel is the truth (AUC 1), the baseline's its opposite (AUC 0)
    np.testing.assert_allclose(auc["auc"], [0.5, 1.0, 0.0, 0.5, -0.5])
    np.testing.assert_allclose(auc["ci_low"], auc["auc"])  # the same on every scan
    np.testing.assert_allclose(auc["ci_high"], auc["auc"])
    assert (auc["n_scans"] == 6).all()
    sentence = study.dcam_sentence(auc)
    assert sentence.startswith("The proposed dCAMs localise emphysema better than plain low")
    assert "1.000 [1.000, 1.000] vs 0.500 [0.500, 0.500]" in sentence
    assert "paired difference +0.500 [+0.500, +0.500] over 6 test scans." in sentence
    no_maps = study.Evaluation(scans(12, truth=False))
    assert study.dcam_localisation(no_maps) is None
    assert "no emphysema maps" in study.dcam_sentence(None)


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [(-0.1, 0.1, "cannot be told apart from"), (-0.3, -0.1, "localise emphysema worse than")],
)
def test_dcam_sentence_verdicts(low, high, verdict):
    auc = pd.DataFrame(
        {
            "map": ["minus_hu", "proposed", "proposed - minus_hu"],
            "auc": [0.8, 0.75, -0.05],
            "ci_low": [0.7, 0.6, low],
            "ci_high": [0.9, 0.85, high],
            "n_scans": [10, 10, 10],
        }
    )
    assert study.dcam_sentence(auc).startswith(f"The proposed dCAMs {verdict} plain low")


# --------------------------------------------------------------------------- results


def test_paper_comparison_and_metrics():
    s = scans()
    scores = ["acc", "nmi", "silhouette", "davies_bouldin"]
    rng = np.random.default_rng(0)
    results = pd.DataFrame(
        [
            {"method": m, "seed": seed, **dict(zip(scores, rng.random(4), strict=True))}
            for seed in (0, 1)
            for m in study.NAMES
        ]
    )
    results.loc[results.method == "proposed", "acc"] = [0.5, 0.7]
    results.loc[results.method == "one_cluster", ["silhouette", "davies_bouldin"]] = np.nan
    results.loc[results.method == "supervised", "silhouette"] = np.nan
    intervals = pd.DataFrame(
        [
            {"method": m, "acc_ci_low": 0.1 * i, "acc_ci_high": 0.1 * i + 0.05}
            | {f"{score}_ci_{end}": 0.5 for score in scores[1:] for end in ("low", "high")}
            for i, m in enumerate(study.NAMES)
        ]
    ).set_index("method")
    table = study.table1(results, intervals)
    assert list(table.index) == list(study.NAMES.values())
    names = ["minus_hu", "proposed", "baseline", "proposed - minus_hu", "baseline - minus_hu"]
    auc = pd.DataFrame(
        {
            "map": names,
            "auc": [0.7, 0.9, 0.8, 0.2, 0.1],
            "ci_low": [0.6, 0.85, 0.7, 0.1, 0.0],
            "ci_high": [0.75, 0.95, 0.9, 0.3, 0.2],
            "n_scans": [3] * 5,
        }
    )
    rows = study.paper_comparison(table, auc, s, input_size=8, n_seeds=2)
    # acc, silhouette and Davies-Bouldin for the paper's three methods, acc for the others
    assert len(rows) == 3 * 3 + 4 + 1
    by_quantity = {r["quantity"]: r for r in rows}
    proposed = by_quantity["proposed (3D U-Net): acc"]
    assert proposed["paper"] == 0.43
    assert proposed["this_run"] == "0.600 ± 0.141 [0.400, 0.450]"
    assert "3 train / 3 test, 8³" in proposed["note"] and "over 2 seeds" in proposed["note"]
    assert by_quantity["supervised reference: silhouette"]["paper"] == ""
    assert by_quantity["supervised reference: silhouette"]["this_run"] == "undefined"
    assert by_quantity["one cluster (floor): acc"]["note"] == "not in the paper"
    assert "one cluster (floor): silhouette" not in by_quantity
    assert rows[-1]["this_run"] == (
        "0.900 [0.850, 0.950] / 0.800 [0.700, 0.900] / 0.700 [0.600, 0.750]"
    )
    assert "3 test scans" in rows[-1]["note"]
    assert len(study.paper_comparison(table, None, s, input_size=8, n_seeds=2)) == len(rows) - 1

    metrics = study.study_metrics(results, table, auc, s, epochs=3, n_seeds=2, input_size=8)
    assert list(metrics)[:6] == ["acc", "nmi", "silhouette", "davies_bouldin", "acc_sd", "acc_ci"]
    assert list(metrics["acc"]) == list(study.NAMES)
    assert metrics["acc"]["proposed"] == pytest.approx(0.6)
    assert metrics["acc_sd"]["proposed"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert metrics["acc_ci"]["proposed"] == [pytest.approx(0.4), pytest.approx(0.45)]
    assert np.isnan(metrics["silhouette"]["one_cluster"])
    assert (metrics["n_train"], metrics["n_test"], metrics["epochs"]) == (3, 3, 3)
    assert metrics["input_size"] == 8 and metrics["n_seeds"] == 2
    assert metrics["dcam_auc"] == dict(zip(names, [0.7, 0.9, 0.8, 0.2, 0.1], strict=True))
    assert metrics["dcam_auc_ci"]["proposed - minus_hu"] == [0.1, 0.3]
    for path in study.HEADLINE.values():  # every headline number is in the metrics
        score, method = path.split(".")
        assert isinstance(metrics[score][method], float)
    one_seed = study.study_metrics(results[results.seed == 0], table, None, s, epochs=3)
    assert one_seed["acc_sd"]["proposed"] == 0.0 and "dcam_auc" not in one_seed
