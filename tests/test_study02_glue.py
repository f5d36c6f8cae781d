"""The glue of study 02 (medclust.studies.jule3d): param checks, specimens and their
evaluation slices, the NMI bookkeeping of the segmentation phase, Fig. 4's table, the paper
comparison and the metrics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from medclust.cohort import CaseData, write_cohort
from medclust.studies import jule3d as study

# --------------------------------------------------------------------------- params


def test_start_checks_the_params_before_opening_the_report(tmp_path):
    ok = dict(n_seeds=1, patch_size=11, stride=4)
    with pytest.raises(ValueError, match=r"param stride \(12\) must not exceed patch_size \(11\)"):
        study.start(str(tmp_path / "a"), "clinical", "cpu", **{**ok, "stride": 12})
    with pytest.raises(ValueError, match="param n_seeds must be an integer >= 1, got 0"):
        study.start(str(tmp_path / "a"), "clinical", "cpu", **{**ok, "n_seeds": 0})
    with pytest.raises(ValueError, match="param threshold must be 'clinical'"):
        study.start(str(tmp_path / "a"), "otsu", "cpu", **ok)
    with pytest.raises(ValueError, match="invalid device"):
        study.start(str(tmp_path / "a"), 0.5, "gpu", **ok)
    assert not (tmp_path / "a").exists()
    run = study.start(str(tmp_path / "b"), -300, "cpu", **ok)
    assert run.report.dir.is_dir() and run.runtime_s() >= 0


def test_k_values():
    assert study.k_values(2, 3, 6) == [2, 3, 4, 5, 6]
    assert study.k_values(3, 3, 3) == [3]
    with pytest.raises(ValueError, match="2 <= k_min <= k_paper <= k_max, got 2, 7, 6"):
        study.k_values(2, 7, 6)
    with pytest.raises(ValueError, match="2 <= k_min"):
        study.k_values(1, 3, 6)
    with pytest.raises(ValueError, match="param k_max must be an integer"):
        study.k_values(2, 3, 6.0)


# --------------------------------------------------------------------------- specimens


def test_spread_slices_skip_the_specimen_ends():
    region = np.zeros((4, 4, 20), bool)
    region[1:3, 1:3, 5:15] = True  # specimen on slices 5..14
    # 3 + 2 points evenly spread over slices 5..14, the two ends dropped
    assert study.spread_slices(region, 3) == [7, 9, 12]
    # more slices asked for than the specimen has: each inner specimen slice once
    assert study.spread_slices(region, 50) == list(range(6, 14))


def _cohort(tmp_path, clinical_extra: dict, labelmap: bool = True):
    rng = np.random.default_rng(0)
    cases = []
    for i in range(2):
        image = rng.integers(0, 3, (12, 12, 10)).astype(np.int16)
        image[2:10, 2:10, 2:8] += 10
        lab = (image > 5).astype(np.uint8) if labelmap else None
        cases.append(CaseData(f"s{i}", image, (0.01, 0.01, 0.01), labelmap=lab))
    clinical = pd.DataFrame({"case_id": ["s0", "s1"], **clinical_extra})
    return write_cohort(tmp_path / "c", cases, clinical, name="c", modality="CT", description="")


def test_load_specimens_reads_thresholds_and_slices(tmp_path):
    cohort = _cohort(tmp_path, {"threshold": [5.0, 6.0], "annotated_slices": ["3;4", "5"]})
    specimens = study.load_specimens(str(cohort), "clinical", "annotated_slices", 7)
    assert list(specimens) == ["s0", "s1"]
    assert specimens["s1"].threshold == 6.0 and specimens["s1"].slices == [5]
    assert specimens["s0"].slices == [3, 4]
    np.testing.assert_array_equal(specimens["s0"].region, specimens["s0"].image > 5.0)
    assert study.has_ground_truth(specimens)
    table = study.specimen_table(specimens)
    assert list(table.columns) == [
        "specimen",
        "size_voxels",
        "resolution_um",
        "threshold",
        "specimen_fraction",
        "eval_slices",
    ]
    assert table.loc[0, "size_voxels"] == "12 x 12 x 10"
    assert table.loc[0, "resolution_um"] == "10.00 x 10.00 x 10.00"
    assert table.loc[0, "eval_slices"] == "3;4"
    assert table.loc[0, "specimen_fraction"] == pytest.approx(8 * 8 * 6 / (12 * 12 * 10))


def test_load_specimens_without_clinical_columns(tmp_path):
    cohort = _cohort(tmp_path, {}, labelmap=False)
    with pytest.raises(ValueError, match="no 'threshold' column"):
        study.load_specimens(str(cohort), "clinical", "annotated_slices", 7)
    specimens = study.load_specimens(str(cohort), 5.0, "annotated_slices", 2)
    assert specimens["s0"].slices == study.spread_slices(specimens["s0"].region, 2)
    assert not study.has_ground_truth(specimens)
    with pytest.raises(ValueError, match="case 's0': only .* voxels above threshold 50.0"):
        study.load_specimens(str(cohort), 50.0, "annotated_slices", 2, min_voxels=2)
    with pytest.raises(ValueError, match="param n_eval_slices must be"):
        study.load_specimens(str(cohort), 5.0, "annotated_slices", 0)


# --------------------------------------------------------------------------- scores


def _specimen(labelmap: bool = True) -> study.Specimen:
    image = np.zeros((10, 10, 4), np.float32)
    image[1:9, 1:5] = 100.0
    image[1:9, 5:9] = 200.0
    image += np.random.default_rng(1).normal(0, 1, image.shape).astype(np.float32)
    region = image > 50
    truth = np.where(region, np.where(image > 150, 2, 1), 0).astype(np.int32)
    volume = SimpleNamespace(image=image, labelmap=truth if labelmap else None, spacing=(1,) * 3)
    return study.Specimen(volume, 50.0, region, [1, 2])


def test_scores_rows_examples_and_baselines():
    scores = study.Scores({"a": _specimen()}, k_paper=2, example_seed=0, stride=2)
    spec = scores.specimens["a"]
    perfect = np.where(spec.region, spec.labelmap, 0)
    scores.add("a", "jule", 0, 2, perfect)
    scores.add("a", "jule", 1, 2, perfect)  # not the example seed: scored, not kept
    scores.add_intensity_kmeans("a", 0, [2, 3])
    scores.add_multi_otsu("a", [0, 1], [2])
    table = scores.table()
    assert list(table.columns) == ["specimen", "method", "seed", "K", "nmi_slices", "nmi_volume"]
    assert list(zip(table.method, table.seed, table.K, strict=True)) == [
        ("jule", 0, 2),
        ("jule", 1, 2),
        ("kmeans_intensity", 0, 2),
        ("kmeans_intensity", 0, 3),
        ("multi_otsu", 0, 2),
        ("multi_otsu", 1, 2),
    ]
    assert table.nmi_slices[0] == pytest.approx(1.0) and table.nmi_volume[0] == pytest.approx(1.0)
    # two well separated intensities: both baselines find them at K = 2 (Otsu's threshold may
    # sit at the edge of the gap between the modes: near perfect)
    assert table.nmi_volume[2] > 0.99 and table.nmi_volume[4] > 0.9
    assert sorted(scores.examples) == [
        ("a", "jule"),
        ("a", "kmeans_intensity"),
        ("a", "multi_otsu"),
    ]
    np.testing.assert_array_equal(scores.examples["a", "jule"], perfect)
    # the contingency tables of the annotated slices sum to the slice NMI
    from medclust.metrics import nmi_from_contingency

    tables = scores.contingency["a", "kmeans_intensity", 0, 3]
    assert tables.shape == (2, 3, 4)  # 2 slices, true labels 0..2, predicted 0..3
    assert nmi_from_contingency(tables.sum(0), "geometric") == pytest.approx(table.nmi_slices[3])


def test_patch_methods_paint_the_stride_cubes():
    # two halves split at y = 6, on the stride-2 grid's block boundary
    image = np.full((12, 12, 4), 100.0, np.float32)
    image[:, 6:] = 200.0
    truth = np.where(image > 150, 2, 1).astype(np.int32)
    volume = SimpleNamespace(image=image, labelmap=truth, spacing=(1,) * 3)
    spec = study.Specimen(volume, 50.0, image > 50, [1, 2])
    scores = study.Scores({"a": spec}, k_paper=2, example_seed=0, stride=2)
    scores.add_local_statistics("a", 0, [2], w=1)  # a 1-voxel window: its mean, sd 0
    scores.add_true_tissue("a", 0, [2])
    table = scores.table()
    assert list(table.method) == ["local_stats", "true_tissue"]
    assert table.nmi_slices[0] == pytest.approx(1.0) and table.nmi_slices[1] == pytest.approx(1.0)
    seg = scores.examples["a", "local_stats"]
    # labels are constant on every 2-cube of the grid (the projection of Sec. 2.5)
    blocks = seg.reshape(6, 2, 6, 2, 2, 2)
    assert (blocks == blocks[:, :1, :, :1, :, :1]).all()


def test_intervals_resample_the_slices_of_each_specimen():
    specimens = {"a": _specimen(), "b": _specimen()}
    scores = study.Scores(specimens, k_paper=2, example_seed=0, stride=2)
    for sid, spec in specimens.items():
        perfect = np.where(spec.region, spec.labelmap, 0)
        noise = np.where(spec.region, np.random.default_rng(0).integers(1, 3, perfect.shape), 0)
        for s in (0, 1):
            scores.add(sid, "jule", s, 2, perfect)
            scores.add(sid, "random_cnn", s, 2, noise)
    ci = scores.intervals(n_boot=200).set_index("method")
    assert list(ci.columns) == ["K", "nmi", "nmi_sd", "low", "high"]
    # a perfect segmentation scores 1 on every resample; the same for both seeds: sd 0
    assert ci.nmi["jule"] == pytest.approx(1.0) and ci.nmi_sd["jule"] == 0.0
    assert ci.low["jule"] == pytest.approx(1.0) and ci.high["jule"] == pytest.approx(1.0)
    assert ci.high["random_cnn"] < 0.2 and ci.low["random_cnn"] <= ci.nmi["random_cnn"]
    assert study.Scores(specimens, 2, 0, 2).intervals().empty


def test_scores_without_ground_truth_only_count():
    scores = study.Scores({"a": _specimen(labelmap=False)}, k_paper=2, example_seed=0, stride=2)
    scores.add_intensity_kmeans("a", 0, [2])
    assert list(scores.table().columns) == ["specimen", "method", "seed", "K"]
    assert scores.intervals().empty


def _results() -> pd.DataFrame:
    """Two specimens, two seeds, K = 2, 3: JULE wins at K = 3 only."""
    nmi = {"jule": (0.2, 0.5), "kmeans_intensity": (0.3, 0.4), "multi_otsu": (0.1, 0.3)}
    nmi["random_cnn"] = (0.0, 0.1)
    rows = []
    for sid in ("a", "b"):
        for method, by_k in nmi.items():
            for s in (0, 1):
                for k, v in zip((2, 3), by_k, strict=True):
                    shift = 0.02 * s + (0.01 if sid == "b" else 0.0)
                    rows.append(
                        {"specimen": sid, "method": method, "seed": s, "K": k}
                        | {"nmi_slices": v + shift, "nmi_volume": v + shift + 0.1}
                    )
    return pd.DataFrame(rows)


def _intervals() -> pd.DataFrame:
    """Hand-made intervals: at K = 2 JULE is below k-means and overlaps Otsu; at K = 3 JULE is
    above both and the untrained CNN; the local statistics overlap JULE everywhere."""
    spans = {
        "jule": {2: (0.20, 0.15, 0.25), 3: (0.50, 0.45, 0.55)},
        "random_cnn": {2: (0.05, 0.0, 0.1), 3: (0.10, 0.05, 0.15)},
        "local_stats": {2: (0.22, 0.1, 0.3), 3: (0.48, 0.4, 0.6)},
        "kmeans_intensity": {2: (0.35, 0.3, 0.4), 3: (0.40, 0.35, 0.44)},
        "multi_otsu": {2: (0.25, 0.2, 0.3), 3: (0.30, 0.25, 0.35)},
        "true_tissue": {2: (0.8, 0.75, 0.85), 3: (0.9, 0.85, 0.95)},
    }
    return pd.DataFrame(
        [
            {"method": m, "K": k, "nmi": v[0], "nmi_sd": 0.01, "low": v[1], "high": v[2]}
            for m, by_k in spans.items()
            for k, v in by_k.items()
        ]
    )


def test_average_nmi_and_the_paper_comparison():
    results = _results()
    table = study.average_nmi(results)
    assert list(table.index) == ["jule", "random_cnn", "kmeans_intensity", "multi_otsu"]
    assert list(table.columns) == [2, 3]
    assert table.loc["jule", 3] == pytest.approx(0.5 + 0.01 + 0.005)
    table1 = pd.DataFrame({"size_voxels": ["96 x 96 x 96", "90 x 96 x 96"]})
    rows = study.paper_comparison(table1, _intervals(), 1000, 11, 20, 4, 3, 2)
    by_quantity = {r["quantity"]: r["this_run"] for r in rows}
    assert by_quantity["specimens"] == 2
    assert by_quantity["specimen size (voxels)"] == "96 x 96 x 96; 90 x 96 x 96"
    assert by_quantity["training patches / patch size"] == "1,000 / 11³"
    vs = "JULE vs {}: K where JULE wins / loses / ties"
    assert by_quantity[vs.format("k-means on intensities")] == "1 / 1 / 0"
    assert by_quantity[vs.format("multi-threshold Otsu")] == "1 / 0 / 1"
    assert by_quantity[vs.format("k-means on untrained-CNN features")] == "2 / 0 / 0"
    assert by_quantity[vs.format("k-means on local mean + sd")] == "0 / 0 / 2"
    assert by_quantity["average NMI at K = 3: JULE / k-means / Otsu"] == "0.500 / 0.400 / 0.300"
    # unscored: only the sizes
    assert len(study.paper_comparison(table1, None, 1000, 11, 20, 4, 3, 2)) == 5


def test_who_wins_and_the_interval_table():
    text = study.who_wins(_intervals(), 3)
    assert text.startswith("At K = 3, JULE (0.500 [0.450, 0.550]) beats k-means on untrained-CNN")
    assert "cannot be told apart from k-means on local mean + sd (0.480 [0.400, 0.600])" in text
    assert "beats multi-threshold Otsu" in text
    assert "The best method here is JULE-based (proposed)." in text
    assert "would reach 0.900 [0.850, 0.950]" in text
    text2 = study.who_wins(_intervals(), 2)
    assert "is worse than k-means on intensities" in text2
    assert "The best method here is k-means on intensities." in text2
    table = study.interval_table(_intervals())
    assert table.loc["JULE-based (proposed)", 3] == "0.500 ± 0.010 [0.450, 0.550]"


def test_jule_history_and_metrics():
    labels = np.array([0, 0, 1, 1, 2, 2])
    models = {
        (sid, s): SimpleNamespace(
            n_timesteps_=10 + s,
            n_periods_=3,
            iter_=30,
            history_=[{"clusters_before": 30, "clusters_after": 3, "loss": 0.1, "labels": labels}],
        )
        for sid in ("a", "b")
        for s in (0, 1)
    }
    truths = {key: np.array([1, 1, 2, 2, 3, 3]) for key in models}
    truths["b", 1] = None
    history = study.jule_history(models, truths)
    assert list(history.columns) == [
        "specimen",
        "seed",
        "period",
        "clusters_before",
        "clusters_after",
        "loss",
        "nmi_to_truth",
    ]
    assert len(history) == 4
    assert history.nmi_to_truth[0] == pytest.approx(1.0) and np.isnan(history.nmi_to_truth[3])
    assert "nmi_to_truth" not in study.jule_history(models).columns
    intervals = _intervals()
    metrics = study.study_metrics(_results(), intervals, models, 1000, 11, 3)
    assert metrics["n_specimens"] == 2 and metrics["n_seeds"] == 2
    assert metrics["jule_timesteps"] == {"a": 10, "b": 10}  # mean 10.5, truncated
    assert metrics["jule_sgd_steps"] == {"a": 30, "b": 30}
    assert metrics["nmi"]["jule"] == {"2": pytest.approx(0.215), "3": pytest.approx(0.515)}
    assert metrics["nmi_at_k_paper"]["jule"] == pytest.approx(0.515)
    assert metrics["nmi_ci"]["jule"] == [0.45, 0.55]
    assert metrics["nmi_per_specimen"]["b"]["jule"]["3"] == pytest.approx(0.52)
    # specimen means per seed 0.505 and 0.525: sd 0.02 / sqrt(2)
    assert metrics["nmi_seed_sd"]["jule"] == pytest.approx(0.02 / np.sqrt(2))
    assert metrics["nmi_full_volume"]["jule"] == pytest.approx(0.615)
    assert set(study.HEADLINE.values()) <= {f"nmi_at_k_paper.{m}" for m in study.METHODS}
    unscored = _results().drop(columns=["nmi_slices", "nmi_volume"])
    assert "nmi" not in study.study_metrics(unscored, pd.DataFrame(), models, 1000, 11, 3)
