"""Tests of the liver MRI phantom generator (tiny cohorts, each test a few seconds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from medclust.cohort import load_cohort
from medclust_phantoms import liver_mri
from medclust_phantoms.liver_mri import design

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


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = liver_mri.generate(
        tmp_path_factory.mktemp("liver") / "g", n_cases=12, seed=0, shape=(96, 80, 8)
    )
    return load_cohort(root, require=("labelmap",))


def test_biopsy_pdff_follows_the_grade(graded):
    clinical = graded.clinical
    edges = (design.PDFF_RANGE[0], *design.PDFF_CUTS, design.PDFF_RANGE[1])
    for _, row in clinical.iterrows():
        g = int(row["grade"])
        assert edges[g] <= row["pdff_biopsy"] <= edges[g + 1], row.name
    assert len(set(clinical["grade"])) == 4
    # the whole liver's fat follows the biopsy, with heterogeneity
    assert spearmanr(clinical["grade"], clinical["pdff_liver"]).statistic > 0.8
    assert not np.allclose(clinical["pdff_liver"], clinical["pdff_biopsy"], atol=0.5)


def test_spared_patterns_follow_the_fat(graded):
    clinical = graded.clinical
    marked = clinical["frac_sparing_marked"] + clinical["frac_perivascular_marked"]
    spared = clinical[[f"frac_{liver_mri.CLASSES[k]}" for k in liver_mri.GRADE_CLASSES]].sum(axis=1)
    assert spearmanr(clinical["grade"], marked).statistic > 0.6
    assert (marked[clinical["grade"] == 0] == 0).all()
    assert (spared[clinical["grade"] >= 2] > 0.02).all()
    assert (clinical["frac_vessel"] > 0).all()


def test_spared_areas_are_darker_where_fat_is_marked(graded):
    # the pattern is visible: spared parenchyma is darker than the fatty parenchyma around it
    checked = 0
    for case in graded:
        vol = graded.load(case.id)
        lab, img = vol.labelmap, vol.image
        if (lab == 3).sum() > 20:
            assert img[lab == 3].mean() < img[lab == 1].mean(), case.id
            checked += 1
    assert checked >= 2


def test_signal_physics():
    # the spoiled gradient echo peaks at the Ernst angle arccos(exp(-TR/T1))
    t1, tr = design.T1_MS["liver_water"], 5.0
    ernst = np.degrees(np.arccos(np.exp(-tr / t1)))
    signal = [design.spoiled_gre(t1, tr, a) for a in (ernst - 2, ernst, ernst + 2)]
    assert signal[1] > signal[0] and signal[1] > signal[2]
    # fat (short T1) is brighter than liver water and blood darker, at every site's settings
    for tr in design.TR_MS:
        for flip in design.FLIP_DEG:
            assert 1.2 < design.fat_signal_ratio(tr, flip) < 1.6
            assert 0.5 < design.blood_signal_ratio(tr, flip) < 0.9
    assert design.pdff_grade(np.array([0.0, 6.39, 6.4, 17.4, 22.0, 22.1, 40.0])).tolist() == [
        0,
        0,
        1,
        2,
        2,
        3,
        3,
    ]


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
        ("segment_scale_mm", 0.1),
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
    assert {"age", "sex", "pdff_biopsy", "pdff_liver"} <= set(clinical.columns)
