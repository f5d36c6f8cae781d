"""The glue of study 00 (medclust.studies.cohorts): finding cohorts, per-case facts, example
cases spread over the clinical label, the metrics blocks."""

from __future__ import annotations

import pytest
from conftest import write_tiny_cohort

from medclust.cohort import load_cohort
from medclust.studies import cohorts as study


@pytest.fixture
def cohort(tmp_path):
    """Five cases, clinical label ``grade`` = 0, 1, 0, 1, 0; mask 6 x 5 x 2 voxels of 1.5 x 1.5 x
    5 mm (0.225 ml)."""
    return load_cohort(write_tiny_cohort(tmp_path / "data" / "tiny", n=5))


def test_cohort_folders_needs_a_cohort(tmp_path, cohort):
    assert [p.name for p in study.cohort_folders(tmp_path / "data")] == ["tiny"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no cohort folder"):
        study.cohort_folders(tmp_path / "empty")


def test_volume_facts_sizes_in_physical_units(cohort):
    facts = study.volume_facts(cohort)
    assert list(facts["case_id"]) == [f"case_{i:02d}" for i in range(5)]
    assert set(facts["shape"]) == {"12x10x4"} and set(facts["spacing_mm"]) == {"1.5x1.5x5"}
    assert (facts["roi_voxels"] == 60).all() and set(facts["roi_unit"]) == {"ml"}
    assert facts["roi_size"].tolist() == pytest.approx([60 * 1.5 * 1.5 * 5.0 / 1000.0] * 5)


def test_clinical_label_declared_or_first_text_column(cohort):
    assert study.clinical_label(cohort) == "grade"
    cohort.extra.pop("clinical_label", None)
    cohort.clinical["site"] = "A"
    assert study.clinical_label(cohort) == "site"


def test_example_ids_take_turns_over_the_label(cohort):
    assert study.example_ids(cohort, 3) == ["case_00", "case_01", "case_02"]
    assert study.example_ids(cohort, 4) == ["case_00", "case_01", "case_02", "case_03"]
    assert study.example_ids(cohort, 9) == [f"case_{i:02d}" for i in (0, 1, 2, 3, 4)]


def test_cohort_metrics_blocks_and_totals(cohort):
    facts = {cohort.name: study.volume_facts(cohort)}
    metrics = study.cohort_metrics([cohort], facts)
    assert metrics["n_cohorts"] == 1 and metrics["n_cases"] == 5
    block = metrics["tiny"]
    assert block["label_counts"] == {"0": 3, "1": 2}
    assert block["voxels_median"] == 12 * 10 * 4
    overview = study.overview_table([cohort], facts)
    assert overview.loc[0, "cases"] == 5 and overview.loc[0, "labels"] == "0=outside; 1=a; 2=b"
