"""The glue of study 05 (medclust.studies.population): param checks, features in cohort order,
descriptors, report terms and their scoring, the choice of K and seed, comparison and metrics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from medclust.population import INDEX_COLUMNS, INDEX_CSV, case_file, npz_bytes
from medclust.studies import population as study

PARAMS = {
    "n_words_haralick": 4,
    "n_words_micro_sift": 2,
    "n_words_macro_sift": 2,
    "max_per_volume": 10,
    "n_topics": 3,
    "k_min": 2,
    "k_max": 4,
    "k_step": 1,
    "n_seeds": 2,
    "n_permutations": 5,
    "alpha": 0.05,
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_topics": 0}, "param n_topics must be an integer >= 1, got 0"),
        ({"k_step": 1.5}, "param k_step must be an integer"),
        ({"k_min": 5}, "2 <= k_min <= k_max, got 5, 4"),
        ({"k_min": 1}, "2 <= k_min <= k_max, got 1, 4"),
        ({"alpha": 1.0}, "param alpha must be a finite number in \\(0, 1\\)"),
    ],
)
def test_start_checks_every_param_before_any_work(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        study.start(str(tmp_path / "report"), {**PARAMS, **change})
    assert not (tmp_path / "report").exists()
    run = study.start(str(tmp_path / "report"), PARAMS)
    assert run.report.dir == tmp_path / "report" and run.runtime_s() >= 0


def _write_features(folder, case_ids):
    folder.mkdir()
    rows = []
    for i, case_id in enumerate(case_ids):
        rec = {"case_id": case_id, "template_index": i, "ncc": 0.9, "lung_dice": 0.8}
        rec.update(lung_voxels=10, haralick=np.zeros((i + 1, 13)), sift=np.zeros((2, 160)))
        (folder / case_file(case_id)).write_bytes(npz_bytes(rec))
        rows.append({c: rec.get(c, 0) for c in INDEX_COLUMNS} | {"file": case_file(case_id)})
    pd.DataFrame(rows).to_csv(folder / INDEX_CSV, index=False)


def test_normalized_features_follow_the_cohort_and_name_missing_cases(tmp_path):
    _write_features(tmp_path / "f", ["b", "a"])
    data = SimpleNamespace(case_ids=["a", "b"], root=tmp_path / "cohort")
    records = study.normalized_features(data, str(tmp_path / "f"))
    assert [r["case_id"] for r in records] == ["a", "b"]
    clinical = pd.DataFrame({"fov": ["full", "upper"]}, index=["a", "b"])
    table = study.normalization_per_volume(records, clinical)
    assert table.n_haralick.tolist() == [2, 1] and table.fov.tolist() == ["full", "upper"]
    assert study.normalization_summary(table).index.tolist() == ["full", "upper"]
    assert study.normalization_summary(table.drop(columns="fov")).index.tolist() == ["all"]
    data.case_ids = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"no features for 1 case\(s\).*\['c'\]"):
        study.normalized_features(data, str(tmp_path / "f"))


def test_descriptors_are_frequencies_per_vocabulary_and_topic_mixtures():
    rng = np.random.default_rng(0)
    counts = {
        "haralick": rng.integers(0, 5, (12, 4)).astype(float),
        "micro_sift": rng.integers(0, 5, (12, 2)).astype(float),
        "macro_sift": np.zeros((12, 0)),  # a vocabulary left out
    }
    counts["haralick"][3] = 0
    d = study.volume_descriptors(counts, n_topics=3, seed=0)
    assert list(d) == list(study.DESCRIPTORS)
    np.testing.assert_array_equal(d["f_H"][3], 0)  # a volume without words stays zero
    sums = d["f_H"].sum(axis=1)
    np.testing.assert_allclose(sums[np.arange(12) != 3], 1)
    assert d["f_S"].shape == (12, 2) and d["f_HS"].shape == (12, 6)
    np.testing.assert_allclose(d["f_L"].sum(axis=1), 1)
    table = study.vocabulary_table(counts)
    assert table.loc["volumes without any", "haralick"] == 1
    assert table.loc["local features", "macro_sift"] == 0
    topics = study.topic_table(d["f_L"], [f"c{i}" for i in range(12)])
    assert list(topics.columns) == ["case_id", "topic_0", "topic_1", "topic_2"]


REPORTS = {
    "a": "Emphysema. Small nodule.",
    "b": "No nodule. Pleural effusion.",
    "c": None,
    "d": "Emphysema and effusion.",
    "e": "Emphysema.",
}


def test_report_terms_keep_frequent_terms_by_decreasing_frequency():
    terms_all, terms = study.report_terms(REPORTS, min_term_count=1)
    assert list(terms.columns) == ["emphysema", "pleural_effusion"]
    assert list(terms.index) == ["a", "b", "d", "e"]  # no report: dropped
    freq = study.term_frequencies(terms)
    assert freq.to_dict("list") == {"term": ["emphysema", "pleural_effusion"], "reports": [3, 2]}
    with pytest.raises(ValueError, match="min_term_count"):
        study.report_terms(REPORTS, min_term_count=3)


def test_term_extraction_scores_negation_against_the_truth():
    terms_all, _ = study.report_terms(REPORTS, min_term_count=1)
    empty = study.term_extraction(REPORTS, pd.DataFrame(index=list(REPORTS)), terms_all)
    assert empty.empty
    # what the reports mention (the negated nodule of b is not) and what the patients have
    clinical = pd.DataFrame(
        {"mentioned_nodule": [1, 0, 0, 0, 0], "finding_nodule": [1, 1, 0, 0, 1]},
        index=list(REPORTS),
    )
    table = study.term_extraction(REPORTS, clinical, terms_all)
    assert table[["truth", "extraction"]].values.tolist() == [
        ["mentioned", "with negation"],
        ["mentioned", "without negation"],
        ["finding", "with negation"],
        ["finding", "without negation"],
    ]
    assert table.precision.tolist() == [1.0, 0.5, 1.0, 1.0]
    assert table.recall.tolist() == [1.0, 1.0, 1 / 3, 2 / 3]


def _two_groups(n=20):
    """Descriptors of two well-separated groups; a term present in the first group only."""
    rng = np.random.default_rng(1)
    group = np.repeat([0, 1], n // 2)
    X = rng.normal(size=(n, 3)) * 0.1 + group[:, None] * 5.0
    descriptors = {name: X for name in study.DESCRIPTORS}
    terms = pd.DataFrame({"t": 1 - group, "u": rng.integers(0, 2, n)}, dtype=float)
    terms.iloc[-1] = np.nan  # a volume without a report: clustered, not tested
    return descriptors, terms, pd.Series(group)


def test_q_k_curves_choose_k_by_the_mean_and_the_best_seed_at_it():
    descriptors, terms, phenotypes = _two_groups()
    curves = study.q_k_curves(descriptors, range(2, 5), [3, 4], terms, 0.05, phenotypes)
    q = curves.quality
    assert len(q) == len(study.DESCRIPTORS) * 2 * 3
    assert list(q.columns) == ["descriptor", "seed", "K", "q_k", "phenotype_nmi"]
    mean_f_l = q[q.descriptor == "f_L"].groupby("K").q_k.mean()
    assert curves.chosen_k == mean_f_l.idxmax()
    at_k = q[(q.descriptor == "f_L") & (q.K == curves.chosen_k)]
    assert curves.chosen_seed == at_k[at_k.q_k == at_k.q_k.max()].seed.min()
    assert curves.chosen.shape == (20,) and curves.chosen.max() < curves.chosen_k
    at_2 = q[q.K == 2]
    assert (at_2.phenotype_nmi == 1.0).all()  # two groups, two clusters
    assert (
        "phenotype_nmi" not in study.q_k_curves(descriptors, range(2, 3), [0], terms, 0.05).quality
    )


def test_comparison_and_metrics_from_one_run():
    descriptors, terms, _ = _two_groups()
    curves = study.q_k_curves(descriptors, range(2, 6, 2), [0], terms, 0.05)
    reports = {f"c{i}": "x" if i % 4 else None for i in range(20)}
    registration = pd.DataFrame(
        {"template": [0, 1] * 10, "lung_dice": [0.9] * 20, "fov": ["full", "upper"] * 10}
    )
    q_null = np.array([0, 1, 0, 2])
    extraction = pd.DataFrame(
        {
            "truth": ["mentioned", "mentioned", "finding", "finding"],
            "extraction": ["with negation", "without negation"] * 2,
            "precision": [0.9, 0.8, 0.7, 0.6],
            "recall": [0.5, 0.4, 0.3, 0.2],
            "f1": [0.0] * 4,
        }
    )
    rows = study.paper_comparison(reports, terms, 3, registration, curves, 7, q_null)
    by = {r["quantity"]: r["this_run"] for r in rows}
    assert by["volumes / with report"] == "20 / 15"
    assert by["terms kept"] == "2 (> 3 reports)"
    assert by["templates chosen (Eq. 1) at least once"] == 2
    assert rows[3]["note"] == "K in 2..5 step 2"
    assert by["Q_K at chosen K: observed / permuted reports"] == "7 / 0.75"
    metrics = study.study_metrics(reports, terms, registration, curves, 7, q_null, extraction, 1.5)
    assert set(metrics["q_k"]) == set(study.DESCRIPTORS)
    assert set(metrics["q_k"]["f_L"]) == {"2", "4"}
    assert metrics["q_k_null_max"] == 2 and metrics["n_reports"] == 15
    assert metrics["lung_dice"] == pytest.approx({"mean": 0.9, "full": 0.9, "upper": 0.9})
    assert metrics["term_extraction"] == {
        "precision": 0.9,
        "recall": 0.5,
        "precision_no_negation": 0.8,
        "recall_no_negation": 0.4,
        "recall_vs_true_findings": 0.3,
    }
    assert "phenotype_nmi" not in metrics and metrics["runtime_s"] == 1.5
    assert list(metrics)[-1] == "runtime_s"
