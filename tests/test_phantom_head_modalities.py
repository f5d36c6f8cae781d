"""Tests of the head modalities phantom generator (CT / MRI / PET head slices of the thesis
/work/shared/papers/003_3f35964316a5ac54.txt); tiny cohorts, each test a few seconds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from medclust.cohort import load_cohort
from medclust.intensity import rescale_percentiles
from medclust_phantoms import available, build, head_modalities

SMALL = {"counts": {"CT": 4, "MRI": 4, "PET": 3}, "size": 64}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("head") / "a"
    return head_modalities.generate(root, seed=3, **SMALL)


def test_registered():
    assert "head_modalities" in available()
    assert head_modalities.NAME == "head_modalities"


def test_bit_reproducible(tiny, tmp_path):
    again = head_modalities.generate(tmp_path / "b", seed=3, **SMALL)
    first, second = _files(tiny), _files(again)
    assert sorted(first) == sorted(second)
    assert len(first) == 2 + 3 * 11
    for name, data in first.items():
        assert data == second[name], name


def test_seed_changes_images(tiny, tmp_path):
    other = head_modalities.generate(tmp_path / "c", seed=4, **SMALL)
    for cid in ("ct_000", "mri_000", "pet_000"):
        a = load_cohort(tiny).load(cid).image
        b = load_cohort(other).load(cid).image
        assert not np.array_equal(a, b)


def test_cohort_loads_and_is_consistent(tiny):
    import nibabel as nib

    cohort = load_cohort(tiny, ndim=2, require=("mask",))
    assert len(cohort) == 11
    assert cohort.extra["clinical_label"] == "modality"
    assert cohort.labels == head_modalities.LABELS
    clinical = cohort.clinical
    assert clinical["modality"].value_counts().to_dict() == SMALL["counts"]
    assert set(clinical["split"]) <= set(head_modalities.SPLITS)
    assert clinical["subject"].is_unique
    lo, hi = head_modalities.DEFAULTS["slice_range_mm"]
    assert clinical["slice_mm"].between(lo, hi).all()
    for case in cohort:
        assert np.asarray(nib.load(str(case.image)).dataobj).dtype == np.int16
        for path in (case.mask, case.labelmap):
            assert np.asarray(nib.load(str(path)).dataobj).dtype == np.uint8
        vol = cohort.load(case.id)
        assert vol.image.shape == (64, 64)
        assert vol.spacing == pytest.approx((240 / 64, 240 / 64))
        mask = vol.mask > 0
        assert 0.1 < mask.mean() < 0.7
        assert np.isin(vol.labelmap[mask], head_modalities.MASK_LABELS).mean() > 0.99
        assert set(np.unique(vol.labelmap)) <= set(head_modalities.LABELS)


def test_default_shape_and_build(tmp_path):
    root = build("head_modalities", tmp_path, counts=(1, 1, 1), seed=1)
    cohort = load_cohort(root, ndim=2, require=("mask", "labelmap"))
    assert [c.id for c in cohort] == ["ct_000", "mri_000", "pet_000"]
    assert cohort.load("ct_000").image.shape == (128, 128)


def test_split_counts():
    fractions = head_modalities.DEFAULTS["split"]
    assert head_modalities.split_counts(354, fractions) == (248, 35, 71)
    assert head_modalities.split_counts(283, fractions) == (198, 28, 57)
    for n in (1, 2, 3, 7, 10, 11, 99):
        assert sum(head_modalities.split_counts(n, fractions)) == n
    counts = head_modalities.DEFAULTS["counts"]
    splits = head_modalities.assign_splits(0, counts, fractions)
    for modality, n in counts.items():
        names = splits[modality]
        assert len(names) == n
        for name, frac in zip(head_modalities.SPLITS, fractions, strict=True):
            assert abs((names == name).sum() - frac * n) < 1
        assert not np.array_equal(names, np.sort(names))  # shuffled
    assert not np.array_equal(
        splits["CT"], head_modalities.assign_splits(1, counts, fractions)["CT"]
    )


def _tissue_means(modality: str, n: int = 3) -> np.ndarray:
    """Mean intensity per labelmap class (background, scalp, skull, CSF, GM, WM)."""
    sums, counts = np.zeros(6), np.zeros(6)
    for i in range(n):
        image, _, lab, _ = head_modalities.make_case(0, modality, i)
        # the interior of each class (no partial volume): erode by one pixel
        for k in range(6):
            inner = ndi.binary_erosion(lab == k)
            sums[k] += image[inner].sum()
            counts[k] += inner.sum()
    return sums / np.maximum(counts, 1)


def test_modality_physics():
    bg, scalp, skull, csf, gm, wm = _tissue_means("CT")
    assert bg < -950  # air
    assert skull > 700 and skull > 10 * max(gm, wm)  # bright bone
    assert 20 < wm < gm < 60  # brain ~30-40 HU, low GM/WM contrast
    assert csf < wm
    bg, scalp, skull, csf, gm, wm = _tissue_means("MRI")
    assert wm > gm > csf  # T1 contrast
    assert scalp > gm and skull < gm  # bright scalp fat, dark bone
    bg, scalp, skull, csf, gm, wm = _tissue_means("PET")
    assert gm > 1.3 * wm  # FDG uptake in grey matter
    assert skull < 0.5 * gm and bg < 0.05 * gm  # skull (nearly) invisible


def test_normalise():
    image = np.arange(-1000, 1000, dtype=np.int16).reshape(40, 50)
    out = rescale_percentiles(image)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0


def test_residual_registration_is_a_few_mm(tiny):
    """As after the thesis' co-registration to an atlas (Sec. 3.1): one slice level within a
    few mm, residual rotation / scale / tilt of an affine registration (4 sd bounds)."""
    clinical = load_cohort(tiny).clinical
    lo, hi = head_modalities.DEFAULTS["slice_range_mm"]
    assert hi - lo <= 6.0
    assert clinical["rotation_deg"].abs().max() < 4.0
    assert (clinical["scale"] - 1).abs().max() < 0.08
    assert clinical["tilt_deg"].abs().max() < 4.0


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("difficulty", 1.5),
        ("difficulty", "hard"),
        ("seed", -1),
        ("size", 16),
        ("size", 64.0),
        ("fov_mm", 50.0),
        ("counts", {"CT": 3, "MRI": 3}),
        ("counts", {"CT": 3, "MRI": 0, "PET": 3}),
        ("counts", (3, 3)),
        ("counts", 10),
        ("split", (0.5, 0.5)),
        ("split", (0.7, 0.2, 0.2)),
        ("split", (1.2, -0.1, -0.1)),
        ("slice_range_mm", (30.0, 10.0)),
        ("slice_range_mm", (-60.0, 10.0)),
        ("slice_range_mm", "low"),
    ],
)
def test_bad_params(tmp_path, param, value):
    with pytest.raises(ValueError, match=param):
        head_modalities.generate(tmp_path / "bad", **{param: value})
    assert not (tmp_path / "bad").exists()


def test_unknown_param(tmp_path):
    with pytest.raises(TypeError, match="colour"):
        head_modalities.generate(tmp_path / "bad", colour="red")


def test_clinical_columns(tiny):
    clinical = pd.read_csv(tiny / "clinical.csv")
    assert list(clinical.columns[:5]) == ["case_id", "modality", "split", "subject", "slice_mm"]
    assert set(clinical["modality"]) == set(head_modalities.MODALITIES)
