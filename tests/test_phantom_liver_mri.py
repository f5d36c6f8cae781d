"""Tests of the liver MRI phantom generator (tiny cohorts, each test a few seconds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from medclust.cohort import load_cohort
from medclust_phantoms import liver_mri

SMALL = {"shape": (72, 60, 6), "spacing": (1.5, 1.5, 5.0)}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("liver") / "a"
    return liver_mri.generate(root, n_cases=6, seed=3, **SMALL)


def test_bit_reproducible(tiny, tmp_path):
    again = liver_mri.generate(tmp_path / "b", n_cases=6, seed=3, **SMALL)
    first, second = _files(tiny), _files(again)
    assert sorted(first) == sorted(second)
    assert len(first) == 2 + 3 * 6
    for name, data in first.items():
        assert data == second[name], name


def test_seed_changes_images(tiny, tmp_path):
    other = liver_mri.generate(tmp_path / "c", n_cases=6, seed=4, **SMALL)
    a = load_cohort(tiny).load("liver_000").image
    b = load_cohort(other).load("liver_000").image
    assert not np.array_equal(a, b)


def test_cohort_loads_and_is_consistent(tiny):
    import nibabel as nib

    cohort = load_cohort(tiny, require=("mask", "labelmap"))
    assert len(cohort) == 6
    assert cohort.labels[0] == "outside liver"
    assert set(cohort.labels) == set(range(8))
    clinical = cohort.clinical
    assert set(clinical["steatosis"]) <= {"low", "high"}
    assert ((clinical["grade"] >= 2) == (clinical["steatosis"] == "high")).all()
    for case in cohort:
        for path in (case.image, case.mask, case.labelmap):
            assert np.asarray(nib.load(str(path)).dataobj).dtype.kind in "iu"
        assert np.asarray(nib.load(str(case.image)).dataobj).dtype == np.int16
        vol = cohort.load(case.id)
        assert vol.spacing == pytest.approx(SMALL["spacing"])
        assert vol.image.shape == SMALL["shape"]
        mask, lab = vol.mask > 0, vol.labelmap
        assert mask.sum() > 100
        assert not lab[~mask].any()
        assert lab[mask].min() >= 1 and lab[mask].max() <= 7
        assert vol.image.min() >= 0 and vol.image[mask].mean() > vol.image[~mask].mean()
        counts = np.bincount(lab[mask], minlength=8)
        row = clinical.loc[case.id]
        for k, name in liver_mri.CLASSES.items():
            assert row[f"frac_{name}"] == pytest.approx(counts[k] / mask.sum(), abs=1e-5)


def test_grade_counts():
    assert liver_mri.grade_counts_for(70) == (1, 20, 32, 17)
    for n in (4, 5, 6, 12, 35, 100, 140):
        counts = liver_mri.grade_counts_for(n)
        assert sum(counts) == n and min(counts) >= 1
    assert liver_mri.grade_counts_for(140) == (2, 40, 64, 34)
    assert sum(liver_mri.grade_counts_for(2)) == 2
    grades = liver_mri.case_grades(0, 70, (1, 20, 32, 17))
    assert tuple(np.bincount(grades, minlength=4)) == (1, 20, 32, 17)
    assert not np.array_equal(grades, np.sort(grades))  # shuffled
    assert not np.array_equal(grades, liver_mri.case_grades(1, 70, (1, 20, 32, 17)))


def test_grade_signal(tmp_path):
    root = liver_mri.generate(tmp_path / "g", n_cases=12, seed=0, shape=(96, 80, 8))
    cohort = load_cohort(root, require=("labelmap",))
    grades, related, unrelated = [], [], []
    for case in cohort:
        lab = cohort.load(case.id).labelmap
        counts = np.bincount(lab[lab > 0], minlength=8) / (lab > 0).sum()
        grades.append(int(cohort.clinical.loc[case.id, "grade"]))
        related.append(counts[list(liver_mri.GRADE_CLASSES)].sum())
        unrelated.append(counts[list(liver_mri.UNRELATED_CLASSES)].sum())
    assert len(set(grades)) == 4
    assert spearmanr(grades, related).statistic > 0.5
    assert np.mean(unrelated) < 0.4 and max(unrelated) < 0.5
    assert abs(spearmanr(grades, unrelated).statistic) < 0.8


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("difficulty", 2),
        ("difficulty", "hard"),
        ("n_cases", 0),
        ("n_cases", 2.5),
        ("seed", -1),
        ("shape", (10, 10)),
        ("shape", (8, 8, 4)),
        ("spacing", (1.5, 0.0, 5.0)),
        ("grade_counts", (0, 0, 0, 0)),
        ("grade_counts", (1, 2, 3)),
        ("region_scale_mm", 0.1),
    ],
)
def test_bad_params(tmp_path, param, value):
    with pytest.raises(ValueError, match=param):
        liver_mri.generate(tmp_path / "bad", **{param: value})
    assert not (tmp_path / "bad").exists()


def test_unknown_param(tmp_path):
    with pytest.raises(TypeError, match="colour"):
        liver_mri.generate(tmp_path / "bad", colour="red")


def test_clinical_columns(tiny):
    clinical = pd.read_csv(tiny / "clinical.csv")
    assert list(clinical.columns[:3]) == ["case_id", "grade", "steatosis"]
    fracs = clinical[[f"frac_{n}" for n in liver_mri.CLASSES.values()]]
    assert np.allclose(fracs.sum(axis=1), 1.0, atol=1e-4)
    assert {"age", "sex"} <= set(clinical.columns)
