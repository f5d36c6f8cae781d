"""Tests of the emphysema chest-CT phantom generator (tiny cohorts, a few seconds in all)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from scipy.stats import spearmanr

from medclust.cohort import load_cohort
from medclust_phantoms import emphysema_ct

SMALL = {"shape": (32, 32, 32), "spacing": (7.0, 7.0, 7.0)}
CENTRILOBULAR = (1, 2, 3)  # trace, mild, moderate


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("emph") / "a"
    return emphysema_ct.generate(root, n_train=6, n_test=6, seed=3, **SMALL)


@pytest.fixture(scope="module")
def cohort36(tmp_path_factory):
    """A larger quick cohort (36 cases of 32^3) with its volumes loaded."""
    root = tmp_path_factory.mktemp("emph36") / "c"
    emphysema_ct.generate(root, n_train=30, n_test=6, seed=0, **SMALL)
    cohort = load_cohort(root, require=("mask", "labelmap"))
    return cohort, {cid: cohort.load(cid) for cid in cohort.case_ids}


def test_bit_reproducible(tiny, tmp_path):
    again = emphysema_ct.generate(tmp_path / "b", n_train=6, n_test=6, seed=3, **SMALL)
    first, second = _files(tiny), _files(again)
    assert sorted(first) == sorted(second)
    assert len(first) == 2 + 3 * 12
    for name, data in first.items():
        assert data == second[name], name


def test_seed_changes_images(tiny, tmp_path):
    other = emphysema_ct.generate(tmp_path / "c", n_train=6, n_test=6, seed=4, **SMALL)
    a = load_cohort(tiny).load("emph_0000").image
    b = load_cohort(other).load("emph_0000").image
    assert not np.array_equal(a, b)


def test_cohort_loads_with_types_and_splits(tiny):
    cohort = load_cohort(tiny, require=("mask", "labelmap"))
    assert len(cohort) == 12
    assert cohort.labels == emphysema_ct.LABELS
    assert cohort.extra["clinical_label"] == "subtype"
    clinical = cohort.clinical
    assert list(clinical.columns[:3]) == ["subtype", "subtype_id", "split"]
    assert {"laa950", "emphysema_fraction", "severity", "age", "sex", "noise_hu"} <= set(
        clinical.columns
    )
    assert (clinical["subtype"] == [emphysema_ct.SUBTYPES[k] for k in clinical["subtype_id"]]).all()
    # split counts honoured, every subtype once in each split of six
    assert (clinical["split"] == ["train"] * 6 + ["test"] * 6).all()
    for split in ("train", "test"):
        ids = clinical.loc[clinical["split"] == split, "subtype_id"]
        assert sorted(ids) == list(range(6))
    for case in cohort:
        assert np.asarray(nib.load(str(case.image)).dataobj).dtype == np.int16
        for path in (case.mask, case.labelmap):
            assert np.asarray(nib.load(str(path)).dataobj).dtype == np.uint8
        vol = cohort.load(case.id)
        assert vol.image.shape == SMALL["shape"]
        assert vol.spacing == pytest.approx(SMALL["spacing"])


def test_anatomy_lungs_inside_body(tiny):
    cohort = load_cohort(tiny, require=("mask", "labelmap"))
    for case_id in cohort.case_ids:
        vol = cohort.load(case_id)
        image, lung = vol.image, vol.mask > 0
        assert lung.sum() > 500
        # air outside the body, lungs enclosed by the body on every axial slice
        assert image[0, 0, :].mean() < -950 and image[-1, -1, :].mean() < -950
        body = np.stack(
            [ndi.binary_fill_holes(image[:, :, k] > -500) for k in range(image.shape[2])], axis=2
        )
        assert not (lung & ~body).any()
        for face in (lung[0], lung[-1], lung[:, 0], lung[:, -1], lung[:, :, 0], lung[:, :, -1]):
            assert not face.any()
        # two lungs, one each side of the mediastinum (x runs right -> left)
        labels, n = ndi.label(lung)
        assert n == 2
        centres = [np.argwhere(labels == k)[:, 0].mean() for k in (1, 2)]
        assert min(centres) < image.shape[0] / 2 < max(centres)
        # healthy lung (away from partial volume with the wall) is aerated, the body around
        # it is soft tissue and fat
        healthy = ndi.binary_erosion(lung) & (vol.labelmap == 0)
        assert -900 < np.median(image[healthy]) < -780
        assert -150 < np.median(image[body & ~lung & (image > -500)]) < 150


def test_clinical_matches_volumes(tiny):
    cohort = load_cohort(tiny)
    for case_id in cohort.case_ids:
        vol = cohort.load(case_id)
        lung = vol.mask > 0
        row = cohort.clinical.loc[case_id]
        laa = 100.0 * np.mean(vol.image[lung] < -950)
        assert row["laa950"] == pytest.approx(laa, abs=1e-3)
        assert row["emphysema_fraction"] == pytest.approx(np.mean(vol.labelmap[lung] > 0), abs=1e-5)
        assert row["lung_volume_ml"] == pytest.approx(lung.sum() * 7.0**3 / 1000, abs=0.1)


def test_labelmap_inside_lung_and_low_attenuation(tiny, cohort36):
    cohort, volumes = cohort36
    values = []
    for vol in volumes.values():
        emph = vol.labelmap > 0
        assert not (emph & (vol.mask == 0)).any()
        assert set(np.unique(vol.labelmap)) <= set(emphysema_ct.LABELS)
        values.append(vol.image[emph])
    assert np.mean(np.concatenate(values)) < -900
    clinical = cohort.clinical
    for case_id in clinical.index[clinical["subtype"] == "absent"]:
        assert not volumes[case_id].labelmap.any()
        assert clinical.loc[case_id, "emphysema_fraction"] == 0.0
        assert clinical.loc[case_id, "laa950"] < 1.0  # only noise reaches below -950 HU


def test_laa950_increases_with_subtype(cohort36):
    clinical = cohort36[0].clinical
    assert set(clinical["subtype_id"]) == set(range(6))
    assert spearmanr(clinical["subtype_id"], clinical["laa950"]).statistic > 0.7
    assert spearmanr(clinical["subtype_id"], clinical["emphysema_fraction"]).statistic > 0.85
    means = clinical.groupby("subtype_id")["emphysema_fraction"].mean()
    assert (np.diff(means.to_numpy()) > 0).all()
    assert means[5] > 0.2 and means[1] < 0.01


def test_upper_lobe_predominance(cohort36):
    """Centrilobular emphysema (labelmap 1) of the trace, mild and moderate cases is denser
    in the upper half of the lung than in the lower half: pooled, and case by case once
    there are enough lesion voxels (a trace case has only a handful at 32^3)."""
    cohort, volumes = cohort36
    density = {}  # case id -> (subtype id, upper-half density, lower-half density, voxels)
    clinical = cohort.clinical
    for case_id in clinical.index[clinical["subtype_id"].isin(CENTRILOBULAR)]:
        vol = volumes[case_id]
        lung, emph = vol.mask > 0, vol.labelmap == 1
        z = np.flatnonzero(lung.any(axis=(0, 1)))
        high = np.arange(lung.shape[2]) > (z[0] + z[-1]) / 2  # z runs inferior -> superior
        density[case_id] = (
            clinical.loc[case_id, "subtype_id"],
            emph[:, :, high].sum() / lung[:, :, high].sum(),
            emph[:, :, ~high].sum() / lung[:, :, ~high].sum(),
            emph.sum(),
        )
    columns = ["subtype", "upper", "lower", "voxels"]
    table = pd.DataFrame.from_dict(density, orient="index", columns=columns)
    assert len(table) >= 10
    pooled = table.groupby("subtype")[["upper", "lower"]].mean()
    assert (pooled["upper"] > pooled["lower"]).all()
    assert table["upper"].mean() > 2.0 * table["lower"].mean()
    several = table[table["voxels"] >= 20]
    assert len(several) >= 5
    assert (several["upper"] > several["lower"]).mean() >= 0.85


def test_patterns_by_subtype(cohort36):
    cohort, volumes = cohort36
    clinical = cohort.clinical
    for case_id, row in clinical.iterrows():
        codes = set(np.unique(volumes[case_id].labelmap)) - {0}
        if row["subtype_id"] <= 3:  # no panlobular destruction below confluent
            assert 2 not in codes
        if row["subtype"] == "advanced_destructive":
            assert 2 in codes
        assert (3 in codes) <= bool(row["paraseptal"])
        if 3 in codes:  # paraseptal lesions are subpleural
            depth = ndi.distance_transform_edt(volumes[case_id].mask > 0)
            assert np.median(depth[volumes[case_id].labelmap == 3]) <= 2.0


def test_same_case_more_disease_is_hyperexpanded():
    """Case i has the same anatomy and nuisance draws for every subtype: advanced destructive
    emphysema enlarges its lungs and raises its LAA-950."""
    for i in range(2):
        absent = emphysema_ct.make_case(0, i, 0, **SMALL)
        advanced = emphysema_ct.make_case(0, i, 5, **SMALL)
        assert absent.row["noise_hu"] == advanced.row["noise_hu"]
        assert absent.row["age"] == advanced.row["age"]
        assert advanced.row["lung_volume_ml"] > 1.05 * absent.row["lung_volume_ml"]
        assert advanced.row["laa950"] > absent.row["laa950"] + 10.0


def test_subtype_counts_and_assignment():
    assert emphysema_ct.subtype_counts(150) == (48, 27, 33, 21, 12, 9)
    assert emphysema_ct.subtype_counts(60) == (19, 11, 13, 8, 5, 4)
    for n in (6, 7, 12, 35, 2500):
        counts = emphysema_ct.subtype_counts(n)
        assert sum(counts) == n and min(counts) >= 1
    assert sum(emphysema_ct.subtype_counts(3)) == 3
    assert emphysema_ct.subtype_counts(10, (1, 1, 0, 0, 0, 0)) == (5, 5, 0, 0, 0, 0)
    ids, splits = emphysema_ct.case_subtypes(0, 150, 60, emphysema_ct.DEFAULTS["subtype_fractions"])
    assert list(splits) == ["train"] * 150 + ["test"] * 60
    assert tuple(np.bincount(ids[:150], minlength=6)) == (48, 27, 33, 21, 12, 9)
    assert tuple(np.bincount(ids[150:], minlength=6)) == (19, 11, 13, 8, 5, 4)
    assert not np.array_equal(ids[:150], np.sort(ids[:150]))  # shuffled
    other, _ = emphysema_ct.case_subtypes(1, 150, 60, emphysema_ct.DEFAULTS["subtype_fractions"])
    assert not np.array_equal(ids, other)


def test_extent_for_severity():
    extents = [emphysema_ct.extent_for_severity(s) for s in np.linspace(0.5, 6.0, 23)]
    assert (np.diff(extents) > 0).all()
    assert emphysema_ct.extent_for_severity(1.0) < 0.005  # trace
    assert 0.005 < emphysema_ct.extent_for_severity(2.0) < 0.05  # mild
    assert 0.05 < emphysema_ct.extent_for_severity(3.0) < 0.2  # moderate
    assert emphysema_ct.extent_for_severity(4.0) > 0.2  # confluent


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("seed", -1),
        ("n_train", 0),
        ("n_train", 2.5),
        ("n_test", -1),
        ("shape", (32, 32)),
        ("shape", (16, 32, 32)),
        ("spacing", (7.0, 0.0, 7.0)),
        ("spacing", (7.0, 7.0, 30.0)),
        ("subtype_fractions", (0, 0, 0, 0, 0, 0)),
        ("subtype_fractions", (1, 2, 3)),
        ("severity_sd", 2.0),
        ("severity_sd", "high"),
        ("noise_hu", (40.0, 20.0)),
        ("noise_hu", (30.0,)),
        ("supersample", 0),
        ("supersample", 5),
    ],
)
def test_bad_params(tmp_path, param, value):
    with pytest.raises(ValueError, match=param):
        emphysema_ct.generate(tmp_path / "bad", **{param: value})
    assert not (tmp_path / "bad").exists()


def test_make_case_checks_its_arguments():
    with pytest.raises(ValueError, match="subtype_id"):
        emphysema_ct.make_case(0, 0, 6, **SMALL)
    with pytest.raises(ValueError, match="index"):
        emphysema_ct.make_case(0, -1, 2, **SMALL)
    with pytest.raises(ValueError, match="supersample"):
        emphysema_ct.make_case(0, 0, 2, supersample=9, **SMALL)


def test_unknown_param(tmp_path):
    with pytest.raises(TypeError, match="colour"):
        emphysema_ct.generate(tmp_path / "bad", colour="red")


def test_clinical_csv_columns(tiny):
    clinical = pd.read_csv(tiny / "clinical.csv")
    assert list(clinical.columns[:4]) == ["case_id", "subtype", "subtype_id", "split"]
    assert clinical["case_id"].tolist() == [f"emph_{i:04d}" for i in range(12)]
    assert set(clinical["sex"]) <= {"F", "M"}
    assert clinical["laa950"].between(0, 100).all()
    assert clinical["emphysema_fraction"].between(0, 1).all()
