"""The glue of study 02 (medclust.studies.jule3d): param checks, specimens and their
evaluation slices, the NMI bookkeeping of the segmentation phase, Fig. 4's table, the paper
comparison and the metrics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from medclust import comparison as cmp
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


def _perfect_and_noise() -> study.Scores:
    specimens = {"a": _specimen(), "b": _specimen()}
    scores = study.Scores(specimens, k_paper=2, example_seed=0, stride=2)
    for sid, spec in specimens.items():
        perfect = np.where(spec.region, spec.labelmap, 0)
        noise = np.where(spec.region, np.random.default_rng(0).integers(1, 3, perfect.shape), 0)
        for s in (0, 1):
            scores.add(sid, "jule", s, 2, perfect)
            scores.add(sid, "random_cnn", s, 2, noise)
    return scores


def test_intervals_resample_the_slices_of_each_specimen():
    scores = _perfect_and_noise()
    by_k = scores.scores(n_boot=200)
    assert list(by_k) == [2] and by_k[2].methods == ["jule", "random_cnn"]
    # two specimens of two annotated slices each, drawn within each specimen
    assert by_k[2].resamples.n == 4
    assert (by_k[2].resamples.idx[:, :2] < 2).all() and (by_k[2].resamples.idx[:, 2:] >= 2).all()
    table = study.intervals_table(by_k)
    assert list(table.columns) == ["method", "K", "nmi", "nmi_sd", "low", "high"]
    ci = table.set_index("method")
    # a perfect segmentation scores 1 on every resample; the same for both seeds: sd 0
    assert ci.nmi["jule"] == pytest.approx(1.0) and ci.nmi_sd["jule"] == 0.0
    assert ci.low["jule"] == pytest.approx(1.0) and ci.high["jule"] == pytest.approx(1.0)
    assert ci.high["random_cnn"] < 0.2 and ci.low["random_cnn"] <= ci.nmi["random_cnn"]
    # the seed-mean NMI is the specimen average of each seed's slice NMI (the results table)
    results = scores.table()
    noise = results[(results.method == "random_cnn") & (results.K == 2)]
    assert ci.nmi["random_cnn"] == pytest.approx(noise.nmi_slices.mean())

    diffs = study.differences_table(by_k)
    assert list(diffs.columns[:4]) == ["K", "score", "method", "versus"]
    assert diffs[["K", "method", "versus", "verdict", "runs_won"]].values.tolist() == [
        [2, "jule", "random_cnn", "better", "2 of 2"]
    ]
    assert diffs.difference[0] == pytest.approx(1.0 - ci.nmi["random_cnn"])
    assert study.best_methods(by_k[2]) == ["jule"]

    chance = scores.chance(2, n_perm=200)
    assert list(chance) == ["jule", "random_cnn"]
    # shuffling the labels over the specimen voxels: NMI near 0 whatever the segmentation
    for c in chance.values():
        assert c.score == "nmi" and c.n_perm == 200 and 0 <= c.low <= c.mean <= c.high < 0.05
    assert chance["jule"].observed == pytest.approx(1.0)
    assert chance["jule"].p_value == pytest.approx(1 / 201)
    assert chance["random_cnn"].observed == pytest.approx(ci.nmi["random_cnn"])
    assert chance["random_cnn"].p_value > 0.05  # a random segmentation is at chance
    assert study.Scores(_perfect_and_noise().specimens, 2, 0, 2).scores() == {}


def test_scores_without_ground_truth_only_count():
    scores = study.Scores({"a": _specimen(labelmap=False)}, k_paper=2, example_seed=0, stride=2)
    scores.add_intensity_kmeans("a", 0, [2])
    assert list(scores.table().columns) == ["specimen", "method", "seed", "K"]
    assert scores.scores() == {} and scores.chance(2) == {}


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
    """Hand-made intervals (the table of intervals_table) for the metrics."""
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


def _scores_by_k() -> dict[int, cmp.MethodScores]:
    """Hand-made slice NMI of two seeds at K = 2, 3 on 200 shared draws. Every method's draw
    is its seed's score plus a noise common to all methods (the shared slices), so a
    difference between two methods with the same gap on both seeds is that gap on every
    draw. At K = 2 JULE is below k-means and ties Otsu; at K = 3 JULE is above both and the
    untrained CNN; the local statistics swap places with JULE between the seeds (a tie) at
    both K; the ceiling is on top."""
    resamples = cmp.Resamples(20, n_boot=200)
    common = np.random.default_rng(0).normal(0, 0.02, 200)
    per_seed = {
        2: {
            "jule": (0.20, 0.22),
            "random_cnn": (0.05, 0.07),
            "local_stats": (0.25, 0.17),
            "kmeans_intensity": (0.35, 0.37),
            "multi_otsu": (0.25, 0.17),
            "true_tissue": (0.80, 0.82),
        },
        3: {
            "jule": (0.50, 0.52),
            "random_cnn": (0.10, 0.12),
            "local_stats": (0.53, 0.47),
            "kmeans_intensity": (0.40, 0.42),
            "multi_otsu": (0.30, 0.32),
            "true_tissue": (0.90, 0.92),
        },
    }
    out = {}
    for k, by_method in per_seed.items():
        out[k] = cmp.MethodScores(resamples)
        for method, point in by_method.items():
            point = np.array(point)
            out[k].add(method, "nmi", cmp.Scored(point, point[:, None] + common[None, :]))
    return out


def _chance() -> dict[str, cmp.Chance]:
    return {"jule": cmp.Chance("nmi", 0.0012, 0.0004, 0.0025, 0.51, 1 / 1001, 1000)}


def test_average_nmi_and_the_paper_comparison():
    results = _results()
    table = study.average_nmi(results)
    assert list(table.index) == ["jule", "random_cnn", "kmeans_intensity", "multi_otsu"]
    assert list(table.columns) == [2, 3]
    assert table.loc["jule", 3] == pytest.approx(0.5 + 0.01 + 0.005)
    table1 = pd.DataFrame({"size_voxels": ["96 x 96 x 96", "90 x 96 x 96"]})
    rows = study.paper_comparison(table1, _scores_by_k(), 1000, 11, 20, 4, 3, 2)
    by_quantity = {r["quantity"]: r for r in rows}
    assert by_quantity["specimens"]["this_run"] == 2
    assert by_quantity["specimen size (voxels)"]["this_run"] == "96 x 96 x 96; 90 x 96 x 96"
    assert by_quantity["training patches / patch size"]["this_run"] == "1,000 / 11³"
    vs = "JULE vs {}: K where JULE is better / worse / cannot be told apart"
    counts = {m: by_quantity[vs.format(study.METHODS[m])]["this_run"] for m in study.RIVALS}
    assert counts == {
        "kmeans_intensity": "1 / 1 / 0",
        "multi_otsu": "1 / 0 / 1",
        "random_cnn": "2 / 0 / 0",
        "local_stats": "0 / 0 / 2",
    }
    otsu = by_quantity[vs.format("multi-threshold Otsu")]
    assert otsu["paper"] == "all K (Fig. 4)" and otsu["note"].startswith("of 2 K; paired")
    assert by_quantity[vs.format(study.METHODS["random_cnn"])]["paper"] == "not run"
    assert by_quantity["average NMI at K = 3: JULE / k-means / Otsu"]["this_run"] == (
        "0.510 / 0.410 / 0.310"
    )
    # unscored: only the sizes
    assert len(study.paper_comparison(table1, {}, 1000, 11, 20, 4, 3, 2)) == 5


def test_best_methods_name_the_ties_with_the_top():
    by_k = _scores_by_k()
    # K = 3: JULE on top (0.51), the local statistics (0.50) tied with it; the ceiling is
    # not a method
    assert study.best_methods(by_k[3]) == ["jule", "local_stats"]
    assert study.best_methods(by_k[2]) == ["kmeans_intensity"]
    diffs = study.differences(by_k)
    assert [(d.b, d.verdict) for d in diffs[:4]] == [
        ("random_cnn", "better"),
        ("local_stats", "cannot tell"),
        ("kmeans_intensity", "worse"),
        ("multi_otsu", "cannot tell"),
    ]
    assert len(diffs) == 8 and {d.a for d in diffs} == {"jule"}
    # the same gap on both seeds and draws: a degenerate interval at the gap
    worse = diffs[2]
    assert worse.diff == pytest.approx(-0.15)
    assert worse.low == pytest.approx(-0.15) and worse.high == pytest.approx(-0.15)
    table = study.differences_table(by_k)
    assert list(table.K) == [2] * 4 + [3] * 4
    assert list(table.columns) == ["K", *cmp.differences_table(diffs).columns]
    assert table.verdict.tolist() == [d.verdict for d in diffs]


def test_who_wins_and_the_interval_table():
    by_k, chance = _scores_by_k(), _chance()
    text = study.who_wins(by_k, chance, 3)
    jule = by_k[3].summary().loc["jule"]
    assert text.startswith(
        f"At K = 3, JULE (0.510 [{jule.nmi_ci_low:.3f}, {jule.nmi_ci_high:.3f}]; chance at its "
        "cluster sizes 0.0012) is better than k-means on untrained-CNN features (paired "
        "difference +0.400 [+0.400, +0.400]; won 2 of 2 seeds)"
    )
    assert "cannot be told apart from k-means on local mean + sd (paired difference +0.010" in text
    assert "is better than multi-threshold Otsu" in text
    assert "is better than k-means on intensities" in text
    assert (
        "The best method here is JULE-based (proposed) (tied with k-means on local mean + sd)."
    ) in text
    assert "would reach 0.910 [" in text and text.endswith("ceiling of the label projection.")
    text2 = study.who_wins(by_k, chance, 2)
    assert "is worse than k-means on intensities (paired difference -0.150" in text2
    assert "won 0 of 2 seeds" in text2
    assert "cannot be told apart from multi-threshold Otsu" in text2
    assert "The best method here is k-means on intensities." in text2
    table = study.interval_table(study.intervals_table(by_k))
    sd = np.std([0.5, 0.52], ddof=1)
    assert table.loc["JULE-based (proposed)", 3] == (
        f"0.510 ± {sd:.3f} [{jule.nmi_ci_low:.3f}, {jule.nmi_ci_high:.3f}]"
    )
    assert list(table.columns) == [2, 3] and len(table) == len(study.METHODS)


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
    diffs = study.differences({3: _scores_by_k()[3]})
    metrics = study.study_metrics(_results(), intervals, models, 1000, 11, 3, _chance(), diffs)
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
    assert metrics["nmi_chance"] == {"jule": 0.0012}
    assert list(metrics["difference"]) == [f"nmi_jule_vs_{r}" for r in study.RIVALS]
    assert metrics["difference"]["nmi_jule_vs_random_cnn"] == {
        "diff": pytest.approx(0.4),
        "ci": [pytest.approx(0.4), pytest.approx(0.4)],
    }
    assert set(study.HEADLINE.values()) <= {f"nmi_at_k_paper.{m}" for m in study.METHODS}
    unscored = _results().drop(columns=["nmi_slices", "nmi_volume"])
    assert "nmi" not in study.study_metrics(unscored, pd.DataFrame(), models, 1000, 11, 3)
