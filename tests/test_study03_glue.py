"""Study 03's glue (medclust.studies.deepcluster): params, the scans, the classical baseline's
features, Table 1 (scores, intervals, chance levels, paired differences, the verdict), the
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


def test_table1_rows_are_chance_floor_references_networks_and_ceiling():
    assert list(study.NAMES) == [
        "chance", "one_cluster", "classical", "untrained", "baseline", "proposed", "supervised",
        "true_severity",
    ]  # fmt: skip
    assert "floor" not in study.NAMES["chance"] and "majority" in study.NAMES["one_cluster"]
    assert study.NETWORKS == {"proposed": "unet", "baseline": "encoder"}
    assert study.PLAIN_ACCURACY == ("supervised",)
    assert study.RIVALS == ("baseline", "untrained", "classical")
    assert set(study.PAPER) <= set(study.NAMES)
    # every headline metric names a method of Table 1 (or a dCAM map)
    for path in study.HEADLINE.values():
        score, method = path.split(".")
        assert method in study.NAMES and score in {"acc", "acc_chance", "nmi", "dcam_auc"}


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
    s = scans(24, severity=True)
    evaluation = study.Evaluation(s)
    y_test = codes(evaluation.y_test)  # mild, absent, moderate, ...: 4 of each
    points = y_test[:, None] * 10.0 + np.linspace(0, 1, 12)[:, None]
    for seed in (0, 1):
        evaluation.add("proposed", seed, y_test, points)  # a perfect clustering
        evaluation.one_cluster(seed)
        evaluation.true_severity(seed, 3)
    res = evaluation.results()
    assert list(res.columns) == [
        "method", "seed", "acc", "nmi", "ari", "silhouette", "davies_bouldin"
    ]  # fmt: skip
    assert len(res) == 6
    proposed = res[res.method == "proposed"].iloc[0]
    assert proposed.acc == 1.0 and proposed.nmi == pytest.approx(1.0) and proposed.ari == 1.0
    assert proposed.silhouette > 0.9 and proposed.davies_bouldin < 0.1
    floor = res[res.method == "one_cluster"].iloc[0]
    # the largest subtype's share; nothing to score silhouette and Davies-Bouldin on
    assert floor.acc == pytest.approx(1 / 3) and floor.nmi == 0.0 and floor.ari == 0.0
    assert np.isnan(floor.silhouette) and np.isnan(floor.davies_bouldin)
    np.testing.assert_array_equal(evaluation.predictions["one_cluster", 0], np.zeros(12))
    # the ceiling clusters the true severity: every subtype is one value here
    assert (res[res.method == "true_severity"].acc == 1.0).all()
    assert evaluation.methods() == ["proposed", "one_cluster", "true_severity"]
    assert evaluation.runs("proposed") == [0, 1]

    scores = evaluation.scores(n_boot=200)
    assert scores.methods == ["proposed", "one_cluster", "true_severity"]
    assert ("one_cluster", "silhouette") not in scores.scored  # no points: not scored
    ci = scores.summary()
    # a perfect clustering stays perfect on every draw: a degenerate interval at 1
    for score in ("acc", "nmi", "ari"):
        assert ci.loc["proposed", f"{score}_ci_low"] == pytest.approx(1.0)
        assert ci.loc["proposed", f"{score}_ci_high"] == pytest.approx(1.0)
    assert 0 < ci.loc["one_cluster", "acc_ci_low"] <= 1 / 3 <= ci.loc["one_cluster", "acc_ci_high"]
    assert np.isnan(ci.loc["one_cluster", "silhouette_ci_low"])
    assert ci.loc["proposed", "silhouette_ci_low"] > 0.9
    narrow = evaluation.scores(level=0.5, n_boot=200).summary()
    assert narrow.loc["one_cluster", "acc_ci_low"] >= ci.loc["one_cluster", "acc_ci_low"]

    chance = evaluation.chance(n_perm=200)
    assert list(chance) == ["proposed", "one_cluster", "true_severity"]
    acc, nmi, ari = chance["proposed"]
    assert (acc.score, nmi.score, ari.score) == ("acc", "nmi", "ari")
    # three clusters of four against three subtypes of four: shuffles score well above 1/3
    # (the Hungarian matching picks the best pairing) and far below the perfect 1
    assert acc.observed == 1.0 and 1 / 3 < acc.mean < 0.7 and acc.p_value == pytest.approx(1 / 201)
    assert abs(ari.mean) < 0.05 and 0 < nmi.mean < 0.3
    # one cluster: every shuffle is the same table, its chance is its own accuracy
    assert chance["one_cluster"][0].mean == pytest.approx(1 / 3)
    assert chance["one_cluster"][0].p_value == 1.0

    table = study.table1(res, scores, chance)
    assert list(table.index) == [
        study.NAMES[m] for m in ("chance", "one_cluster", "proposed", "true_severity")
    ]
    assert list(table.columns[:4]) == ["acc_mean", "acc_std", "acc_ci_low", "acc_ci_high"]
    assert [c for c in table.columns if c.endswith("_mean")] == [
        f"{score}_mean" for score in study.TABLE1_SCORES
    ]
    # the chance row: the null of the proposed clusters, its mean and 95 % of the shuffles
    row = table.loc[study.NAMES["chance"]]
    assert (row.acc_mean, row.acc_ci_low, row.acc_ci_high) == (acc.mean, acc.low, acc.high)
    assert (row.ari_mean, row.nmi_ci_high) == (ari.mean, nmi.high)
    assert np.isnan(row.acc_std) and np.isnan(row.silhouette_mean)
    floor_row = table.loc[study.NAMES["one_cluster"]]
    assert np.isnan(floor_row.silhouette_mean) and np.isnan(floor_row.silhouette_ci_low)
    assert table.loc[study.NAMES["proposed"], "acc_mean"] == 1.0
    assert table.loc[study.NAMES["proposed"], "acc_std"] == 0.0
    # no proposed clusters, no chance row
    no_chance = study.table1(res, scores, {})
    assert study.NAMES["chance"] not in no_chance.index and len(no_chance) == 3


RENAMED = {"absent": "mild", "mild": "moderate", "moderate": "absent"}


def test_the_supervised_reference_is_scored_by_plain_accuracy():
    """A classifier's accuracy counts the subtypes it names right; a clustering's matches its
    clusters to the subtypes first: subtype names permuted are all wrong for the one, all
    right for the other."""
    s = scans(24)
    evaluation = study.Evaluation(s)
    y = evaluation.y_test
    renamed = np.array([RENAMED[v] for v in y])
    evaluation.add("supervised", 0, y, None)  # the true subtype names
    evaluation.add("supervised", 1, renamed, None)
    evaluation.add("proposed", 0, renamed, None)  # the same labels, as clusters
    res = evaluation.results()
    assert res.acc.tolist() == [1.0, 0.0, 1.0]
    assert res.nmi.tolist() == pytest.approx([1.0, 1.0, 1.0])  # NMI ignores the names
    scores = evaluation.scores(n_boot=100)
    np.testing.assert_array_equal(scores.scored["supervised", "acc"].point, [1.0, 0.0])
    np.testing.assert_array_equal(scores.scored["proposed", "acc"].point, [1.0])
    # plain accuracy on every draw: the mean of the right calls, here 1 and 0 for the seeds
    np.testing.assert_array_equal(scores.scored["supervised", "acc"].boot[0], 1.0)
    np.testing.assert_array_equal(scores.scored["supervised", "acc"].boot[1], 0.0)
    np.testing.assert_allclose(scores.scored["supervised", "nmi"].boot, 1.0)
    # the supervised reference has no chance level of a clustering (its floor: one cluster)
    assert list(evaluation.chance(n_perm=20)) == ["proposed"]


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


def _wrong(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` with its first ``n`` items put in the next cluster."""
    pred = y.copy()
    pred[:n] = (pred[:n] + 1) % 3
    return pred


def evaluated(methods=tuple(study.NAMES), points: bool = True):
    """Table 1 of 30 test scans (10 per subtype), two seeds. The proposed clustering is wrong
    on the first 6 scans (seed 0) or 3 (seed 1); the untrained network makes the same
    calls; the encoder baseline is wrong on the first 12 (every scan the proposed gets wrong,
    and more); the classical baseline, the supervised reference and the ceiling are right on
    every scan. Returns the scans, results, scores, chance, table and differences."""
    s = scans(60)
    evaluation = study.Evaluation(s)
    y = codes(evaluation.y_test)
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        proposed = _wrong(y, 6 if seed == 0 else 3)
        preds = {
            "classical": y,
            "untrained": proposed,
            "baseline": _wrong(y, 12),
            "proposed": proposed,
            "supervised": evaluation.y_test,
            "true_severity": y,
        }
        for method in methods:
            if method == "one_cluster":
                evaluation.one_cluster(seed)
            elif method in preds:
                # the points separate the true subtypes: the proposed clusters fit them better
                z = y[:, None] * 10.0 + rng.normal(0, 1, (30, 2))
                keep = points and method in ("proposed", "baseline")
                evaluation.add(method, seed, preds[method], z if keep else None)
    results = evaluation.results()
    scores, chance = evaluation.scores(n_boot=200), evaluation.chance(n_perm=200)
    table = study.table1(results, scores, chance)
    return s, results, scores, chance, table, study.differences(scores)


@pytest.fixture(scope="module")
def table1_all():
    return evaluated()


def test_differences_pair_the_proposed_network_with_each_rival(table1_all):
    *_, diffs = table1_all
    assert [(d.b, d.score) for d in diffs] == [
        ("baseline", "acc"), ("baseline", "nmi"), ("untrained", "acc"), ("untrained", "nmi"),
        ("classical", "acc"), ("classical", "nmi"), ("baseline", "silhouette"),
        ("baseline", "davies_bouldin"),
    ]  # fmt: skip
    verdicts = {(d.b, d.score): d.verdict for d in diffs}
    # right on every scan the baseline is right on, and on 6 (seed 0) or 9 (seed 1) more
    assert verdicts["baseline", "acc"] == verdicts["baseline", "nmi"] == "better"
    # the same calls: a difference of 0 on every draw
    same = next(d for d in diffs if (d.b, d.score) == ("untrained", "acc"))
    assert same.verdict == "cannot tell" and same.low == same.high == same.diff == 0.0
    assert verdicts["classical", "acc"] == "worse"
    acc = next(d for d in diffs if (d.b, d.score) == ("baseline", "acc"))
    assert acc.diff == pytest.approx((24 + 27) / 60 - 18 / 30)
    assert (acc.runs_won, acc.runs) == (2, 2)
    assert verdicts["baseline", "silhouette"] == "better"
    davies = next(d for d in diffs if d.score == "davies_bouldin")
    assert not davies.higher_is_better and davies.diff < 0  # lower is better


def test_who_wins_reads_the_verdicts(table1_all):
    _, _, _, chance, table, diffs = table1_all
    text = study.who_wins(table, diffs, chance)
    c = chance["proposed"][0]
    assert text.startswith(
        f"The proposed 3D U-Net clusters the test scans with accuracy 0.850, above its chance "
        f"level {c.mean:.3f} [{c.low:.3f}, {c.high:.3f}] (permutation p = {c.p_value:.3f}). "
        "Paired on the same test scans, bootstrap draws and seeds, it is better than baseline "
        "(encoder) (paired difference +0.250 ["
    )
    assert c.p_value < 0.05
    assert "; won 2 of 2 seeds); cannot be told apart from untrained 3D U-Net + k-means " in text
    assert "(paired difference +0.000 [+0.000, +0.000]; won 0 of 2 seeds)" in text
    assert "; is worse than k-means on HU histogram + %LAA (paired difference -0.150 [" in text
    assert " On the paper's internal scores: on silhouette it is better than baseline" in text
    assert "; on davies-bouldin it " in text
    assert text.endswith(
        "For scale: the supervised reference scores a plain accuracy of 1.000 (its floor, the "
        "majority class: 0.333) and k-means on the true severity (ceiling) 1.000."
    )
    _, _, _, chance, table, diffs = evaluated(
        ("one_cluster", "classical", "baseline", "proposed"), points=False
    )
    mixed = study.who_wins(table, diffs, chance)
    assert "is better than baseline (encoder)" in mixed
    assert "is worse than k-means on HU histogram + %LAA" in mixed
    assert "untrained" not in mixed and "severity" not in mixed and "supervised" not in mixed
    assert "For scale" not in mixed and "internal scores" not in mixed


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


class TrainHead:
    """A stand-in trained network whose head puts the training scans in ``classes`` (in
    order); it keeps the scans it was shown."""

    def __init__(self, classes) -> None:
        self.classes = np.asarray(classes)

    def pooled_features(self, X: np.ndarray, masks: np.ndarray) -> np.ndarray:
        self.shown = X
        return np.arange(len(X), dtype=float)[:, None]

    def predict_pooled(self, pooled: np.ndarray) -> np.ndarray:
        return self.classes[pooled[:, 0].astype(int)]


def test_the_emphysema_channel_is_chosen_on_the_training_scans():
    s = scans(12)
    head = TrainHead([0, 1, 2, 0, 1, 2])  # the six training scans
    laa = np.zeros(12)
    laa[s.train] = [5.0, 10.0, 30.0, 5.0, 10.0, 20.0]  # class 2 has the most %LAA: 25
    laa[s.test] = [90.0, 0.0, 0.0, 90.0, 0.0, 0.0]  # the test scans do not vote
    assert study.emphysema_channel(head, s, laa) == 2
    np.testing.assert_array_equal(head.shown, s.X[s.train])
    # the classes the training scans fall in, by their mean %LAA: 7.5 (class 3), 16.25 (1)
    assert study.emphysema_channel(TrainHead([3, 3, 1, 1, 1, 1]), s, laa) == 1
    laa[s.train] = [40.0, 40.0, 0.0, 0.0, 0.0, 90.0]
    assert study.emphysema_channel(TrainHead([3, 3, 1, 1, 1, 1]), s, laa) == 3


def test_dcam_aucs_score_the_given_channel():
    s = scans(12, decoy=True)
    maps = FixedMaps(s)
    # chunks of 4 and 2 test scans; every test scan has emphysema and healthy lung
    np.testing.assert_array_equal(study.dcam_aucs(maps, s, 0, chunk=4), [1.0] * 6)
    np.testing.assert_array_equal(study.dcam_aucs(maps, s, 1, chunk=4), [0.0] * 6)
    np.testing.assert_array_equal(study.dcam_aucs(maps, s, 1, chunk=50), [0.0] * 6)


class HeadMaps(FixedMaps):
    """:class:`FixedMaps` (dCAM channel 0 the true emphysema, channel 1 its opposite) with a
    head that puts the scans with emphysema in class ``emphysema_class`` and the others in
    the other class."""

    def __init__(self, s: study.Scans, emphysema_class: int) -> None:
        super().__init__(s)
        self.emphysema_class = emphysema_class

    def pooled_features(self, X: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return np.array([[self.truth[x.tobytes()].any()] for x in X], dtype=float)

    def predict_pooled(self, pooled: np.ndarray) -> np.ndarray:
        return np.where(pooled[:, 0] > 0, self.emphysema_class, 1 - self.emphysema_class)


def test_dcam_localisation_against_minus_hu():
    s = scans(12, decoy=True)
    _, laa = study.classical_features(s, n_hist_bins=10, laa_threshold_hu=-950.0)
    evaluation = study.Evaluation(s)
    # the proposed heads' emphysema class has the truth in its channel, the baseline's the
    # opposite; the head's class of each test scan plays no part any more
    for key, emphysema_class in ((("proposed", 0), 0), (("proposed", 1), 0), (("baseline", 0), 1)):
        evaluation.models[key] = HeadMaps(s, emphysema_class)
        evaluation.head_predictions[key] = np.full(6, 1 - emphysema_class)
    auc = study.dcam_localisation(evaluation, laa, n_boot=100)
    assert list(auc.columns) == ["map", "auc", "ci_low", "ci_high", "n_scans", "verdict"]
    assert auc["map"].tolist() == [
        "minus_hu", "proposed", "baseline", "proposed - minus_hu", "baseline - minus_hu"
    ]  # fmt: skip
    # -HU ranks the emphysema above one healthy slice and below the darker decoy: AUC 1/2;
    # the proposed emphysema channel is the truth (AUC 1), the baseline's its opposite (AUC 0)
    np.testing.assert_allclose(auc["auc"], [0.5, 1.0, 0.0, 0.5, -0.5])
    np.testing.assert_allclose(auc["ci_low"], auc["auc"])  # the same on every scan and seed
    np.testing.assert_allclose(auc["ci_high"], auc["auc"])
    assert (auc["n_scans"] == 6).all()
    # the paired differences from -HU carry their verdict; the maps themselves none
    assert auc["verdict"].tolist() == ["", "", "", "better", "worse"]
    sentence = study.dcam_sentence(auc)
    assert sentence.startswith(
        "The proposed dCAMs (the channel of the head class whose training scans have the most "
        "low-attenuation lung) localise emphysema better than plain low attenuation (-HU)"
    )
    assert "1.000 [1.000, 1.000] vs 0.500 [0.500, 0.500]" in sentence
    assert sentence.endswith(
        "paired difference +0.500 [+0.500, +0.500] over 6 test scans and the seeds."
    )
    no_maps = study.Evaluation(scans(12, truth=False))
    assert study.dcam_localisation(no_maps, laa) is None
    assert "no emphysema maps" in study.dcam_sentence(None)


def test_dcam_localisation_averages_seeds_that_disagree():
    """Two seeds of the proposed network, one whose emphysema channel is the truth and one
    whose is its opposite: a mean AUC of 1/2 that cannot be told apart from -HU's 1/2."""
    s = scans(12, decoy=True)
    _, laa = study.classical_features(s, n_hist_bins=10, laa_threshold_hu=-950.0)
    evaluation = study.Evaluation(s)
    for key, emphysema_class in ((("proposed", 0), 0), (("proposed", 1), 1), (("baseline", 0), 0)):
        evaluation.models[key] = HeadMaps(s, emphysema_class)
        evaluation.head_predictions[key] = np.zeros(6, int)
    auc = study.dcam_localisation(evaluation, laa, n_boot=200).set_index("map")
    assert auc.auc["proposed"] == pytest.approx(0.5)
    # seeds resampled: the interval spans the two seeds' AUCs, 0 and 1
    assert auc.ci_low["proposed"] < 0.5 < auc.ci_high["proposed"]
    assert auc.verdict["proposed - minus_hu"] == "cannot tell"
    assert study.dcam_sentence(auc.reset_index()).startswith(
        "The proposed dCAMs (the channel of the head class whose training scans have the most "
        "low-attenuation lung) cannot be told apart from plain low attenuation"
    )


@pytest.mark.parametrize(
    ("low", "high", "verdict", "words"),
    [
        (-0.1, 0.1, "cannot tell", "cannot be told apart from"),
        (-0.3, -0.1, "worse", "localise emphysema worse than"),
        (0.1, 0.3, "better", "localise emphysema better than"),
    ],
)
def test_dcam_sentence_verdicts(low, high, verdict, words):
    auc = pd.DataFrame(
        {
            "map": ["minus_hu", "proposed", "proposed - minus_hu"],
            "auc": [0.8, 0.75, -0.05],
            "ci_low": [0.7, 0.6, low],
            "ci_high": [0.9, 0.85, high],
            "n_scans": [10, 10, 10],
            "verdict": ["", "", verdict],
        }
    )
    sentence = study.dcam_sentence(auc)
    assert sentence.startswith("The proposed dCAMs (the channel of the head class")
    assert f"lung) {words} plain low" in sentence
    assert f"paired difference -0.050 [{low:+.3f}, {high:+.3f}] over 10 test scans" in sentence


# --------------------------------------------------------------------------- results


def test_paper_comparison_and_metrics(table1_all):
    s, results, _, chance, table, diffs = table1_all
    assert list(table.index) == list(study.NAMES.values())
    names = ["minus_hu", "proposed", "baseline", "proposed - minus_hu", "baseline - minus_hu"]
    auc = pd.DataFrame(
        {
            "map": names,
            "auc": [0.7, 0.9, 0.8, 0.2, 0.1],
            "ci_low": [0.6, 0.85, 0.7, 0.1, 0.0],
            "ci_high": [0.75, 0.95, 0.9, 0.3, 0.2],
            "n_scans": [3] * 5,
            "verdict": ["", "", "", "better", "cannot tell"],
        }
    )
    rows = study.paper_comparison(table, diffs, auc, s, input_size=8, n_seeds=2)
    # acc, silhouette and Davies-Bouldin for the paper's three methods, acc for the other
    # five rows (chance included), proposed - baseline on the paper's three scores, the dCAMs
    assert len(rows) == 3 * 3 + 5 + 3 + 1
    by_quantity = {r["quantity"]: r for r in rows}
    proposed = by_quantity["proposed (3D U-Net): acc"]
    row = table.loc[study.NAMES["proposed"]]
    assert proposed["paper"] == 0.43
    assert proposed["this_run"] == (
        f"0.850 ± {np.std([0.8, 0.9], ddof=1):.3f} [{row.acc_ci_low:.3f}, {row.acc_ci_high:.3f}]"
    )
    assert "30 train / 30 test, 8³" in proposed["note"] and "over 2 seeds" in proposed["note"]
    assert by_quantity["supervised reference: silhouette"]["paper"] == ""
    assert by_quantity["supervised reference: silhouette"]["this_run"] == "undefined"
    c = chance["proposed"][0]
    chance_row = by_quantity[study.NAMES["chance"] + ": acc"]
    assert chance_row["this_run"] == f"{c.mean:.3f} [{c.low:.3f}, {c.high:.3f}]"
    assert chance_row["note"] == "not in the paper"
    floor = study.NAMES["one_cluster"]
    assert by_quantity[floor + ": acc"]["note"] == "not in the paper"
    assert floor + ": silhouette" not in by_quantity
    # the paper's "proposed outperforms the baseline" beside this run's paired verdicts
    d = next(d for d in diffs if (d.b, d.score) == ("baseline", "acc"))
    claim = by_quantity["proposed − baseline: acc"]
    assert claim["paper"] == "+0.02 (proposed better)"
    assert claim["this_run"] == f"{d.as_text()}: better"
    assert claim["note"].endswith("proposed won 2 of 2 seeds")
    assert by_quantity["proposed − baseline: davies_bouldin"]["paper"] == "-0.14 (proposed better)"
    assert "proposed − baseline: nmi" not in by_quantity
    assert rows[-1]["this_run"] == (
        "0.900 [0.850, 0.950] / 0.800 [0.700, 0.900] / 0.700 [0.600, 0.750]"
    )
    assert "3 test scans" in rows[-1]["note"]
    without = study.paper_comparison(table, diffs, None, s, input_size=8, n_seeds=2)
    assert len(without) == len(rows) - 1
    assert len(study.paper_comparison(table, [], None, s, input_size=8, n_seeds=2)) == 14

    metrics = study.study_metrics(
        results, table, chance, diffs, auc, s, epochs=3, n_seeds=2, input_size=8
    )
    assert list(metrics)[:7] == [
        "acc", "nmi", "silhouette", "davies_bouldin", "acc_sd", "acc_ci", "ari"
    ]  # fmt: skip
    assert list(metrics["acc"]) == [m for m in study.NAMES if m != "chance"]
    assert metrics["acc"]["proposed"] == pytest.approx(0.85)
    assert metrics["acc"]["supervised"] == 1.0  # plain accuracy of the subtype names
    assert metrics["acc_sd"]["proposed"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert metrics["acc_ci"]["proposed"] == [row.acc_ci_low, row.acc_ci_high]
    assert metrics["ari"]["classical"] == 1.0 and metrics["ari"]["one_cluster"] == 0.0
    assert np.isnan(metrics["silhouette"]["one_cluster"])
    # the chance levels of every clustering (not the supervised reference)
    assert list(metrics["acc_chance"]) == [
        "one_cluster", "classical", "untrained", "baseline", "proposed", "true_severity"
    ]  # fmt: skip
    assert metrics["acc_chance"]["proposed"] == c.mean
    assert metrics["acc_chance"]["one_cluster"] == pytest.approx(1 / 3)
    assert metrics["nmi_chance"]["proposed"] == chance["proposed"][1].mean
    assert metrics["acc_chance_p"]["proposed"] == c.p_value
    assert metrics["difference"]["acc_proposed_vs_baseline"] == {
        "diff": d.diff,
        "ci": [d.low, d.high],
    }
    assert len(metrics["difference"]) == len(diffs)
    assert (metrics["n_train"], metrics["n_test"], metrics["epochs"]) == (30, 30, 3)
    assert metrics["input_size"] == 8 and metrics["n_seeds"] == 2
    assert metrics["dcam_auc"] == dict(zip(names, [0.7, 0.9, 0.8, 0.2, 0.1], strict=True))
    assert metrics["dcam_auc_ci"]["proposed - minus_hu"] == [0.1, 0.3]
    for path in study.HEADLINE.values():  # every headline number is in the metrics
        score, method = path.split(".")
        assert isinstance(metrics[score][method], float)
    one_seed = study.study_metrics(
        results[results.seed == 0], table, chance, diffs, None, s, epochs=3
    )
    assert one_seed["acc_sd"]["proposed"] == 0.0 and "dcam_auc" not in one_seed
