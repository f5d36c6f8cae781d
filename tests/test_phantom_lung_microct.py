"""Tests of the lung micro-CT phantom generator (tiny specimens, the file runs in seconds)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu
from sklearn.cluster import KMeans

from medclust.cohort import load_cohort
from medclust.metrics import nmi
from medclust.segmentation import annotated_slices
from medclust_phantoms import lung_microct

SMALL = {"size": 40, "seed": 3}
FRACS = [f"frac_{name}" for name in lung_microct.CLASSES.values()]


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _local_sd(image: np.ndarray, width: int) -> np.ndarray:
    f = image.astype(np.float64)
    mean = ndi.uniform_filter(f, width)
    return np.sqrt(np.maximum(ndi.uniform_filter(f * f, width) - mean * mean, 0.0))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return lung_microct.generate(tmp_path_factory.mktemp("lung") / "a", **SMALL)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The committed demo cohort (defaults: three 96^3 specimens, ~2 s)."""
    cohort = load_cohort(lung_microct.generate(tmp_path_factory.mktemp("lung") / "demo"))
    return cohort, {case.id: cohort.load(case.id) for case in cohort}


@pytest.fixture(scope="module")
def volumes(tiny):
    cohort = load_cohort(tiny, require=("mask", "labelmap"))
    return cohort, {case.id: cohort.load(case.id) for case in cohort}


def test_bit_reproducible(tiny, tmp_path):
    again = lung_microct.generate(tmp_path / "b", **SMALL)
    first, second = _files(tiny), _files(again)
    assert sorted(first) == sorted(second)
    assert len(first) == 2 + 3 * 3
    for name, data in first.items():
        assert data == second[name], name


def test_specimen_streams_do_not_depend_on_count(tiny, tmp_path):
    # specimen i draws from SeedSequence(seed).spawn(n)[i], whatever n is
    one = lung_microct.generate(tmp_path / "one", n_specimens=1, **SMALL)
    assert _files(one)["images/lung_A.nii.gz"] == _files(tiny)["images/lung_A.nii.gz"]


def test_seed_changes_image(volumes, tmp_path):
    other = lung_microct.generate(tmp_path / "c", size=40, seed=4, n_specimens=1)
    assert not np.array_equal(load_cohort(other).load("lung_A").image, volumes[1]["lung_A"].image)


def test_cohort_loads_and_is_consistent(tiny, volumes):
    cohort, vols = volumes
    assert cohort.case_ids == ["lung_A", "lung_B", "lung_C"]
    assert cohort.labels == {
        0: "background",
        1: "invasive_carcinoma",
        2: "noninvasive_carcinoma",
        3: "normal",
    }
    assert cohort.extra["clinical_label"] == "dominant_tissue"
    assert cohort.extra["generator_params"]["size"] == 40
    clinical = cohort.clinical
    assert list(pd.read_csv(tiny / "clinical.csv").columns[:4]) == [
        "case_id",
        "threshold",
        "annotated_slices",
        "spacing_mm",
    ]
    for case in cohort:
        assert np.asarray(nib.load(str(case.image)).dataobj).dtype == np.int16
        for path in (case.mask, case.labelmap):
            assert np.asarray(nib.load(str(path)).dataobj).dtype == np.uint8
        vol, row = vols[case.id], clinical.loc[case.id]
        assert vol.image.shape == (40, 40, 40)
        assert 0.027 <= row["spacing_mm"] <= 0.030
        assert vol.spacing == pytest.approx((row["spacing_mm"],) * 3)
        mask, lab = vol.mask > 0, vol.labelmap
        assert np.array_equal(mask, lab > 0)
        assert 0.1 < mask.mean() < 0.5  # a good part of the volume ...
        assert not mask[[0, 1, -2, -1]].any() and not mask[:, [0, -1]].any()  # ... inside it
        assert not mask[:, :, [0, -1]].any()
        assert ndi.label(mask)[1] == 1
        counts = np.bincount(lab[mask], minlength=4)[1:]
        fractions = counts / mask.sum()
        assert fractions.min() > 0.1  # every class a sizeable part of every specimen
        assert row[FRACS].to_numpy(float) == pytest.approx(fractions, abs=1e-5)
        assert row["dominant_tissue"] == lung_microct.CLASSES[int(np.argmax(counts)) + 1]
    # proportions differ between specimens
    assert clinical[FRACS].to_numpy().std(axis=0).max() > 0.05
    assert clinical["spacing_mm"].nunique() == 3
    assert clinical["threshold"].nunique() == 3


@pytest.mark.parametrize("which", ["volumes", "demo"])
def test_threshold_recovers_specimen(which, request):
    cohort, vols = request.getfixturevalue(which)
    assert pd.api.types.is_integer_dtype(cohort.clinical["threshold"])
    ball = ndi.generate_binary_structure(3, 1)
    for case_id, vol in vols.items():
        threshold = cohort.clinical.loc[case_id, "threshold"]
        mask = vol.mask > 0
        raw = vol.image > threshold
        smooth = ndi.binary_opening(ndi.binary_closing(raw, ball), ball)
        for seg in (raw, smooth):
            dice = 2 * (seg & mask).sum() / (seg.sum() + mask.sum())
            assert dice > 0.9, (case_id, dice)
        air = vol.image[~ndi.binary_dilation(mask, iterations=3)]
        assert air.mean() < threshold < np.median(vol.image[mask])
        assert (air > threshold).mean() < 0.01


@pytest.mark.parametrize("which", ["volumes", "demo"])
def test_annotated_slices_hold_the_classes(which, request):
    cohort, vols = request.getfixturevalue(which)
    for case_id, vol in vols.items():
        value = cohort.clinical.loc[case_id, "annotated_slices"]
        assert isinstance(value, str)
        slices = annotated_slices(value, depth=vol.image.shape[2])
        assert len(slices) == 7
        assert slices == sorted(slices)
        z_extent = np.flatnonzero(vol.mask.any(axis=(0, 1)))
        assert slices[-1] - slices[0] >= 0.4 * (z_extent[-1] - z_extent[0])
        for z in slices:
            lab = vol.labelmap[:, :, z]
            assert lab.any() and len(np.unique(lab[lab > 0])) >= 2, (case_id, z)


def test_invasive_and_noninvasive_differ_in_variance_not_mean(demo):
    # Moriya et al. Sec. 4: both carcinomas are of high intensity, normal tissue of low;
    # invasive carcinoma varies little, noninvasive carcinoma a lot
    _, vols = demo
    width = 5
    for case_id, vol in vols.items():
        image, lab = vol.image, vol.labelmap
        air = image[~ndi.binary_dilation(vol.mask > 0, iterations=3)].mean()
        core = {k: ndi.binary_erosion(lab == k, iterations=width // 2 + 1) for k in (1, 2, 3)}
        assert all(c.sum() > 1000 for c in core.values()), case_id
        level = {k: image[core[k]].mean() - air for k in core}
        sd = _local_sd(image, width)
        spread = {k: np.median(sd[core[k]]) for k in core}
        assert abs(level[1] - level[2]) < 0.05 * level[1], (case_id, level)
        assert level[3] < 0.75 * level[1], (case_id, level)
        assert spread[2] > 2.0 * spread[1], (case_id, spread)
        # alveolar walls are about as bright as the tumour
        assert np.percentile(image[core[3]] - air, 95) > 0.85 * level[1]


def test_intensity_alone_is_imperfect_texture_separates(demo):
    """Multi-Otsu on voxel intensity (a baseline of the paper) scores a low NMI; k-means on
    local mean and standard deviation over 9^3 voxels scores clearly higher."""
    _, vols = demo
    width = 9
    for case_id, vol in vols.items():
        image, lab = vol.image.astype(np.float64), vol.labelmap
        inner = ndi.distance_transform_edt(lab > 0) > width // 2 + 1
        mean = ndi.uniform_filter(image, width)
        features = np.stack([mean[inner], _local_sd(image, width)[inner]], axis=1)
        features = (features - features.mean(axis=0)) / features.std(axis=0)
        by_texture = KMeans(3, n_init=3, random_state=0).fit_predict(features[::2])
        by_intensity = np.digitize(image[inner], threshold_multiotsu(image[inner], 3))
        nmi_intensity = nmi(lab[inner], by_intensity)
        nmi_texture = nmi(lab[inner][::2], by_texture)
        assert nmi_intensity < 0.4, case_id
        assert nmi_texture > nmi_intensity + 0.1, (case_id, nmi_intensity, nmi_texture)


def test_difficulty_raises_noise(tmp_path):
    def air_noise(difficulty):
        root = lung_microct.generate(
            tmp_path / f"n{difficulty}", size=32, n_specimens=1, difficulty=difficulty
        )
        vol = load_cohort(root).load("lung_A")
        air = vol.image[~ndi.binary_dilation(vol.mask > 0, iterations=3)]
        tumour = vol.image[ndi.binary_erosion(vol.labelmap == 1, iterations=2)]
        return air.std() / (tumour.mean() - air.mean())

    easy, hard = air_noise(0.0), air_noise(1.0)
    assert 0.01 < easy < 0.03 < hard < 0.08


def test_annotated_slices_parser():
    parse = annotated_slices
    assert parse("12;25;38;51;64;77;88") == [12, 25, 38, 51, 64, 77, 88]
    assert parse(" 3 ; 7") == [3, 7]
    assert parse(5) == [5]
    assert parse(np.int64(5)) == [5]
    assert parse(5.0) == [5]
    assert parse("0;9", depth=10) == [0, 9]
    for bad in ("", "  ", "a;b", "1;;2", "1;2;", "-1;2", "1.5", "1;1", None, True, [1, 2], 2.5):
        with pytest.raises(ValueError, match="annotated_slices"):
            parse(bad)
    with pytest.raises(ValueError, match="annotated_slices"):
        parse(float("nan"))
    with pytest.raises(ValueError, match="depth 10"):
        parse("3;10", depth=10)


def test_choose_annotated_slices_known_answer():
    lab = np.zeros((10, 10, 20), np.uint8)
    lab[2:8, 2:8, 2:18] = 1
    lab[2:5, 2:8, 5:15] = 2  # classes 1 and 2 on slices 2..17 ...
    lab[2:8, 2:4, 5:15] = 3  # ... and all three on slices 5..14
    assert lung_microct.choose_annotated_slices(lab, 4) == [5, 8, 11, 14]
    assert lung_microct.choose_annotated_slices(lab, 10) == list(range(5, 15))
    # too few slices with three classes: those with two classes are used
    assert lung_microct.choose_annotated_slices(lab, 16) == list(range(2, 18))
    assert lung_microct.choose_annotated_slices(lab, 30) == list(range(2, 18))
    assert lung_microct.choose_annotated_slices(np.zeros_like(lab), 3) == []


def test_specimen_ids():
    ids = [lung_microct.specimen_id(i) for i in (0, 1, 25, 26, 27, 701, 702)]
    assert ids == ["lung_A", "lung_B", "lung_Z", "lung_AA", "lung_AB", "lung_ZZ", "lung_AAA"]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("difficulty", 2),
        ("difficulty", "hard"),
        ("n_specimens", 0),
        ("n_specimens", 2.5),
        ("seed", -1),
        ("size", 10),
        ("size", 40.0),
        ("spacing_range_mm", (0.03, 0.027)),
        ("spacing_range_mm", (0.0, 0.03)),
        ("spacing_range_mm", (0.03,)),
        ("region_scale", 0.9),
        ("alveolus_mm", 0.05),
        ("alveolus_mm", 2.0),
        ("n_annotated_slices", 0),
        ("n_annotated_slices", 500),
    ],
)
def test_bad_params(tmp_path, param, value):
    with pytest.raises(ValueError, match=param):
        lung_microct.generate(tmp_path / "bad", **{param: value})
    assert not (tmp_path / "bad").exists()


def test_unknown_param(tmp_path):
    with pytest.raises(TypeError, match="colour"):
        lung_microct.generate(tmp_path / "bad", colour="red")


def test_dataset_json_describes_ground_truth(tiny):
    meta = json.loads((tiny / "dataset.json").read_text())
    assert meta["name"] == lung_microct.NAME == "lung_microct"
    assert meta["mask_labels"] == {"0": "background", "1": "specimen"}
    assert "threshold" in meta["ground_truth"] and "annotated_slices" in meta["ground_truth"]
    assert meta["generator_params"]["spacing_range_mm"] == [0.027, 0.030]
