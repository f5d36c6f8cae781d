"""GLCM matrices and features against the IBSI digital phantom, hand-computed examples and the
invariants of dense Haralick sampling (medclust.features.glcm, .dense_haralick)."""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import medclust.features.dense_haralick as dense
from medclust.features.dense_haralick import (
    dense_haralick,
    grid_centres,
    grid_step_voxels,
    window_radius_voxels,
)
from medclust.features.glcm import (
    DIRECTIONS,
    FEATURE_NAMES,
    HARALICK_FEATURES,
    discretise,
    glcm_features,
    glcm_matrices,
)

PHANTOM = "ibsi1_digital_phantom"
IBSI_AGGREGATION = {"3d_averaged": "3D, averaged", "3d_merged": "3D, merged"}
#: IBSI configuration of the digital phantom: grey levels used as they are, N_g = 6.
PHANTOM_LEVELS = 6


# --------------------------------------------------------------------------- IBSI phantom


@cache
def _phantom(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image = np.asarray(nib.load(folder / "nifti" / "image" / "phantom.nii.gz").dataobj)
    mask = np.asarray(nib.load(folder / "nifti" / "mask" / "mask.nii.gz").dataobj)
    return image, mask


@cache
def _phantom_matrices(folder: Path) -> np.ndarray:
    image, mask = _phantom(folder)
    return glcm_matrices(image, mask, PHANTOM_LEVELS)


@cache
def _reference(folder: Path):
    import pandas as pd

    table = pd.read_csv(folder / "ibsi1_reference_values_digital_phantom.csv")
    table = table[table["family"] == "Grey level co-occurrence based features"].copy()
    table["key"] = table["feature"].str.lower().str.replace(" ", "_")
    return table


def _ibsi_tolerance(value: float, tolerance: float) -> float:
    """The published tolerance, or half a unit in the 3rd significant figure when it is 0."""
    if tolerance and math.isfinite(tolerance) and tolerance > 0:
        return tolerance
    exponent = math.floor(math.log10(abs(value)))
    return 0.5 * 10.0 ** (exponent - 2) * (1 + 1e-9)


def test_reference_lists_exactly_our_features(shared_data):
    table = _reference(shared_data / PHANTOM)
    for label in IBSI_AGGREGATION.values():
        assert sorted(table.loc[table["aggregation"] == label, "key"]) == sorted(FEATURE_NAMES)


@pytest.mark.parametrize("aggregation", sorted(IBSI_AGGREGATION))
@pytest.mark.parametrize("feature", FEATURE_NAMES)
def test_ibsi_digital_phantom_feature(shared_data, feature, aggregation):
    folder = shared_data / PHANTOM
    image, mask = _phantom(folder)
    # Voxels inside the ROI already carry the phantom's grey levels 1..6 (the 9 lies outside).
    assert set(np.unique(image[mask > 0])) <= set(range(1, PHANTOM_LEVELS + 1))
    table = _reference(folder)
    row = table[(table["key"] == feature) & (table["aggregation"] == IBSI_AGGREGATION[aggregation])]
    assert len(row) == 1, f"no IBSI reference row for {feature} / {aggregation}"
    expected = float(row["value"].iloc[0])
    tolerance = _ibsi_tolerance(expected, float(row["tolerance"].iloc[0]))
    value = glcm_features(_phantom_matrices(folder), aggregation, features=[feature])[feature]
    assert abs(value - expected) <= tolerance, (feature, aggregation, value, expected, tolerance)


def _rst_tables(text: str, section: str, next_section: str) -> list[np.ndarray]:
    body = text.split(f"{section}\n")[1].split(next_section)[0]
    tables = []
    for chunk in body.split(".. table::")[1:]:
        matrix = np.zeros((PHANTOM_LEVELS, PHANTOM_LEVELS), dtype=np.int64)
        rows = re.findall(r"^\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*(\d+)\s*\|", chunk, re.M)
        for i, j, n in rows:
            matrix[int(float(i)) - 1, int(float(j)) - 1] = int(n)
        tables.append(matrix)
    return tables


def test_ibsi_digital_phantom_matrices(shared_data):
    folder = shared_data / PHANTOM
    text = (folder / "ibsi_doc_06_Digital_phantom_texture_matrices.rst").read_text()
    per_direction = _rst_tables(
        text, "Grey level co-occurrence matrix (3D)", "Grey level co-occurrence matrix (3D, merged)"
    )
    (merged,) = _rst_tables(
        text, "Grey level co-occurrence matrix (3D, merged)", "Grey level run length matrix (2D)"
    )
    ours = _phantom_matrices(folder)
    # The IBSI tables list the 13 directions in lexicographic (x, y, z) order, as DIRECTIONS does
    # (the .rst conversion garbled their captions, not their order).
    assert len(per_direction) == 13
    for k, table in enumerate(per_direction):
        np.testing.assert_array_equal(ours[k], table, err_msg=f"direction {DIRECTIONS[k]}")
    np.testing.assert_array_equal(ours.sum(axis=0), merged)


# --------------------------------------------------------------------------- hand-computed


def _tiny():
    # x=0: [1, 2], x=1: [2, 2] along y; one slice.
    return np.array([[1, 2], [2, 2]]).reshape(2, 2, 1)


def test_tiny_matrices_by_hand():
    m = glcm_matrices(_tiny(), None, 2)
    by_direction = {tuple(d): m[k] for k, d in enumerate(DIRECTIONS)}
    # (0,1,0): pairs (1,2) and (2,2); (1,0,0): (1,2) and (2,2); (1,1,0): (1,2); (1,-1,0): (2,2).
    np.testing.assert_array_equal(by_direction[(0, 1, 0)], [[0, 1], [1, 2]])
    np.testing.assert_array_equal(by_direction[(1, 0, 0)], [[0, 1], [1, 2]])
    np.testing.assert_array_equal(by_direction[(1, 1, 0)], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(by_direction[(1, -1, 0)], [[0, 0], [0, 2]])
    for d, matrix in by_direction.items():
        if d[2] != 0:
            assert matrix.sum() == 0
    np.testing.assert_array_equal(m.sum(axis=0), [[0, 3], [3, 6]])


def test_tiny_features_by_hand():
    m = glcm_matrices(_tiny(), None, 2)
    merged = glcm_features(m, "3d_merged")  # p = [[0, 1/4], [1/4, 1/2]]
    assert merged["joint_maximum"] == pytest.approx(0.5)
    assert merged["joint_average"] == pytest.approx(1.75)
    assert merged["contrast"] == pytest.approx(0.5)
    assert merged["dissimilarity"] == pytest.approx(0.5)
    assert merged["angular_second_moment"] == pytest.approx(0.375)
    assert merged["joint_entropy"] == pytest.approx(1.5)
    assert merged["autocorrelation"] == pytest.approx(3.0)
    assert merged["inverse_difference"] == pytest.approx(0.75)
    assert merged["sum_average"] == pytest.approx(3.5)
    # Averaged over the 4 in-plane directions only (the 9 others hold no pair):
    # contrasts 0.5, 0.5, 1 and 0; joint maxima 0.5, 0.5, 0.5 and 1.
    averaged = glcm_features(m, "3d_averaged")
    assert averaged["contrast"] == pytest.approx(0.5)
    assert averaged["joint_maximum"] == pytest.approx(0.625)


def test_mask_and_distance():
    line = np.array([1, 2, 1, 2, 1]).reshape(5, 1, 1)
    m = glcm_matrices(line, None, 2, distance=2)
    along_x = m[[tuple(d) for d in DIRECTIONS].index((1, 0, 0))]
    np.testing.assert_array_equal(along_x, [[4, 0], [0, 2]])  # pairs (1,1), (2,2), (1,1)
    mask = np.array([1, 1, 1, 0, 1]).reshape(5, 1, 1)
    m = glcm_matrices(line, mask, 2, distance=1)
    np.testing.assert_array_equal(m.sum(axis=0), [[0, 2], [2, 0]])  # (1,2), (2,1) only
    # Voxels outside the mask may hold anything, even levels beyond n_levels.
    np.testing.assert_array_equal(glcm_matrices(line * (mask * 2 - 1), mask, 2), m)


def _brute_force_matrices(image, mask, n_levels, distance):
    """The IBSI definition voxel by voxel: every pair with both voxels in the mask, both ways."""
    out = np.zeros((13, n_levels, n_levels), dtype=np.int64)
    for k, direction in enumerate(DIRECTIONS):
        for x in np.argwhere(mask):
            y = x + distance * direction
            if np.all(y >= 0) and np.all(y < image.shape) and mask[tuple(y)]:
                a, b = image[tuple(x)] - 1, image[tuple(y)] - 1
                out[k, a, b] += 1
                out[k, b, a] += 1
    return out


@pytest.mark.parametrize("distance", [1, 2])
def test_matrices_equal_brute_force(distance):
    rng = np.random.default_rng(distance)
    image = rng.integers(1, 5, size=(6, 5, 4))
    mask = rng.random(image.shape) > 0.3
    np.testing.assert_array_equal(
        glcm_matrices(image, mask, 4, distance), _brute_force_matrices(image, mask, 4, distance)
    )


def test_features_are_orientation_independent():
    rng = np.random.default_rng(3)
    volume = rng.integers(1, 5, size=(6, 7, 5))
    for moved in (np.rot90(volume, 1, axes=(0, 1)), np.rot90(volume, 1, axes=(1, 2))):
        for agg in IBSI_AGGREGATION:
            got = glcm_features(glcm_matrices(np.flip(moved, axis=0), None, 4), agg)
            want = glcm_features(glcm_matrices(volume, None, 4), agg)
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------------- discretisation


def test_fixed_bin_number_ibsi():
    image = np.array([0.0, 25, 50, 75, 100, 500]).reshape(6, 1, 1)
    mask = np.array([1, 1, 1, 1, 1, 0]).reshape(6, 1, 1)
    levels, n = discretise(image, mask, n_bins=4)
    assert n == 4
    # floor(4 (x - 0) / 100) + 1, the maximum in the top bin, 0 outside the mask.
    np.testing.assert_array_equal(levels.ravel(), [1, 2, 3, 4, 4, 0])
    flat, n = discretise(np.full((2, 2, 2), 7.0), None, n_bins=5)
    assert n == 5 and np.all(flat == 1)


def test_fixed_bin_size_ibsi():
    hu = np.array([-1100.0, -1000, -990, -976, -975, -900]).reshape(6, 1, 1)
    levels, n = discretise(hu, None, bin_width=25, lower=-1000)
    # floor((x + 1000) / 25) + 1; below the lower bound goes to level 1.
    np.testing.assert_array_equal(levels.ravel(), [1, 1, 1, 1, 2, 5])
    assert n == 5
    levels, n = discretise(hu, None, bin_width=25, lower=-1000, upper=-950)
    assert n == 3
    np.testing.assert_array_equal(levels.ravel(), [1, 1, 1, 1, 2, 3])
    levels, n = discretise(hu, None, bin_width=100)  # lower = ROI minimum -1100
    np.testing.assert_array_equal(levels.ravel(), [1, 2, 2, 2, 2, 3])
    assert n == 3


# --------------------------------------------------------------------------- dense sampling


def _random_case(shape=(14, 13, 9), n_levels=5, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(1, n_levels + 1, size=shape)
    idx = np.indices(shape)
    centre = (np.asarray(shape) - 1) / 2
    radii = np.asarray(shape) / 2.2
    mask = (((idx - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) < 1
    mask &= rng.random(shape) > 0.15  # holes: pairs across them must be skipped
    return image, mask


def _crop_features(image, mask, centre, radius, n_levels, aggregation, features):
    lo = np.maximum(np.asarray(centre) - radius, 0)
    hi = np.minimum(np.asarray(centre) + radius + 1, image.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    matrices = glcm_matrices(image[box], mask[box], n_levels)
    return np.array(list(glcm_features(matrices, aggregation, features).values()))


@pytest.mark.parametrize("n_levels", [5, 40])
@pytest.mark.parametrize("aggregation", sorted(IBSI_AGGREGATION))
def test_dense_window_equals_cropped_glcm(aggregation, n_levels):
    image, mask = _random_case(n_levels=n_levels)
    spacing = (1.0, 1.25, 2.5)
    radius = np.array(window_radius_voxels(7.5, spacing))
    # 7.5 / 1 = 7.5 -> 7 voxels; 7.5 / 1.25 = 6 -> 7 (ties go up); 7.5 / 2.5 = 3 -> 3 voxels.
    assert tuple(radius) == (3, 3, 1)
    centres = np.array([[7, 6, 4], [0, 6, 4], [13, 7, 5], [3, 10, 1], [7, 0, 4], [6, 6, 8]])
    got_centres, values = dense_haralick(
        image, mask, spacing, 7.5, 3.0, n_levels, FEATURE_NAMES, aggregation, centres=centres
    )
    np.testing.assert_array_equal(got_centres, centres)
    assert values.shape == (len(centres), len(FEATURE_NAMES))
    assert np.isfinite(values).all()  # every window holds pairs (empty ones: test below)
    for row, centre in zip(values, centres, strict=True):
        want = _crop_features(image, mask, centre, radius, n_levels, aggregation, FEATURE_NAMES)
        np.testing.assert_allclose(row, want, rtol=1e-10, atol=1e-12)


def test_dense_grid_and_default_features():
    image, mask = _random_case(seed=1)
    spacing = (1.0, 1.0, 2.0)
    assert grid_step_voxels(4.0, spacing) == (4, 4, 2)
    centres, values = dense_haralick(image, mask, spacing, 5.0, 4.0, 5)
    assert values.shape == (len(centres), len(HARALICK_FEATURES))
    assert np.array_equal(centres, grid_centres(mask, spacing, 4.0))
    assert len(centres) > 5 and mask[tuple(centres.T)].all()
    assert np.all(centres[:, :2] % 4 == 2) and np.all(centres[:, 2] % 2 == 1)
    # Every grid node inside the mask is a centre.
    nodes = np.stack(
        np.meshgrid(np.arange(2, 14, 4), np.arange(2, 13, 4), np.arange(1, 9, 2), indexing="ij"),
        -1,
    ).reshape(-1, 3)
    assert len(centres) == mask[tuple(nodes.T)].sum()
    radius = np.array(window_radius_voxels(5.0, spacing))
    for row, centre in zip(values, centres, strict=True):
        want = _crop_features(image, mask, centre, radius, 5, "3d_merged", HARALICK_FEATURES)
        np.testing.assert_allclose(row, want, rtol=1e-10, atol=1e-12)


def test_window_size_follows_anisotropic_spacing():
    assert window_radius_voxels(10.0, (1.0, 1.0, 1.0)) == (5, 5, 5)  # 11 voxels per axis
    assert window_radius_voxels(10.0, (1.0, 1.0, 2.5)) == (5, 5, 2)  # 11 x 11 x 5
    assert window_radius_voxels(10.0, (0.7, 0.7, 5.0)) == (7, 7, 1)  # 15 x 15 x 3
    assert window_radius_voxels(6.0, (1.2, 2.0, 3.0)) == (2, 1, 1)  # 5 x 3 x 3
    assert grid_step_voxels(6.0, (0.7, 2.0, 5.0)) == (9, 3, 1)
    # A thicker z spacing shrinks the window along z only: the same 10 mm window gives the
    # features of a 11 x 11 x 5 crop at (1, 1, 2.5) mm and of a 11 x 11 x 11 crop at 1 mm.
    image, mask = _random_case(shape=(15, 15, 15), seed=2)
    centre = np.array([[7, 7, 7]])
    _, thick = dense_haralick(image, mask, (1, 1, 2.5), 10.0, 5.0, 5, centres=centre)
    _, iso = dense_haralick(image, mask, (1, 1, 1), 10.0, 5.0, 5, centres=centre)
    thick_crop = _crop_features(
        image, mask, centre[0], (5, 5, 2), 5, "3d_merged", HARALICK_FEATURES
    )
    iso_crop = _crop_features(image, mask, centre[0], (5, 5, 5), 5, "3d_merged", HARALICK_FEATURES)
    np.testing.assert_allclose(thick[0], thick_crop, rtol=1e-10)
    np.testing.assert_allclose(iso[0], iso_crop, rtol=1e-10)
    assert not np.allclose(thick[0], iso[0])


def _moved_centres(shape, centres, move):
    index = np.arange(np.prod(shape)).reshape(shape)
    moved = move(index)
    lookup = np.empty((index.size, 3), dtype=np.int64)
    lookup[moved.ravel()] = np.argwhere(np.ones(moved.shape, dtype=bool))
    return moved.shape, lookup[index[tuple(centres.T)]]


@pytest.mark.parametrize("aggregation", sorted(IBSI_AGGREGATION))
@pytest.mark.parametrize(
    "move",
    [
        lambda v: np.rot90(v, 1, axes=(0, 1)),
        lambda v: np.rot90(v, 1, axes=(0, 2)),
        lambda v: np.flip(v, axis=1),
        lambda v: np.flip(np.rot90(v, 1, axes=(1, 2)), axis=0),
    ],
    ids=["rot90_xy", "rot90_xz", "flip_y", "rot90_yz_flip_x"],
)
def test_dense_features_are_orientation_independent(move, aggregation):
    image, mask = _random_case(shape=(12, 11, 10), seed=4)
    centres = np.array([[6, 5, 5], [0, 5, 4], [11, 6, 5], [6, 1, 5], [5, 5, 9], [3, 8, 2]])
    _, want = dense_haralick(
        image, mask, (1, 1, 1), 5.0, 2.0, 5, FEATURE_NAMES, aggregation, centres=centres
    )
    assert np.isfinite(want).all()
    _, moved_centres = _moved_centres(image.shape, centres, move)
    _, got = dense_haralick(
        move(image),
        move(mask),
        (1, 1, 1),
        5.0,
        2.0,
        5,
        FEATURE_NAMES,
        aggregation,
        centres=moved_centres,
    )
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


CONSTANT_LEVEL = 3
CONSTANT_FEATURES = {
    "joint_maximum": 1.0,
    "joint_average": CONSTANT_LEVEL,
    "sum_average": 2 * CONSTANT_LEVEL,
    "autocorrelation": CONSTANT_LEVEL**2,
    "angular_second_moment": 1.0,
    "inverse_difference": 1.0,
    "normalised_inverse_difference": 1.0,
    "inverse_difference_moment": 1.0,
    "normalised_inverse_difference_moment": 1.0,
    "correlation": 1.0,  # documented convention for a flat region
}


@pytest.mark.parametrize("aggregation", sorted(IBSI_AGGREGATION))
def test_constant_image_gives_documented_values(aggregation):
    image = np.full((9, 8, 7), CONSTANT_LEVEL)
    mask = np.ones(image.shape, dtype=bool)
    mask[:, :, 0] = False
    _, values = dense_haralick(image, mask, (2, 2, 2), 6.0, 4.0, 5, FEATURE_NAMES, aggregation)
    assert len(values) > 0
    expected = np.array([CONSTANT_FEATURES.get(name, 0.0) for name in FEATURE_NAMES])
    np.testing.assert_allclose(values, np.broadcast_to(expected, values.shape), atol=1e-12)


def test_windows_without_pairs_are_nan():
    image = np.ones((7, 7, 7), dtype=int)
    mask = np.zeros(image.shape, dtype=bool)
    mask[1, 1, 1] = mask[5, 5, 5] = True  # isolated voxels: no pair inside the mask
    centres, values = dense_haralick(image, mask, (1, 1, 1), 3.0, 1.0, 2)
    np.testing.assert_array_equal(centres, [[1, 1, 1], [5, 5, 5]])
    assert np.isnan(values).all()
    with pytest.raises(ValueError, match="no voxel pairs"):
        glcm_features(glcm_matrices(image, mask, 2))


# --------------------------------------------------------------------------- bad parameters


def _dense(**overrides):
    image, mask = _random_case(shape=(6, 6, 6))
    kwargs = {
        "image": image,
        "mask": mask,
        "spacing": (1, 1, 1),
        "window_mm": 3.0,
        "step_mm": 2.0,
        "n_levels": 5,
    }
    kwargs.update(overrides)
    return dense_haralick(**kwargs)


@pytest.mark.parametrize(
    "call, param",
    [
        (lambda: _dense(window_mm=-1.0), "window_mm"),
        (lambda: _dense(window_mm=1.5), "window_mm"),  # one voxel per axis
        (lambda: _dense(window_mm="big"), "window_mm"),
        (lambda: _dense(step_mm=0), "step_mm"),
        (lambda: _dense(spacing=(1, 1)), "spacing"),
        (lambda: _dense(spacing=(1, 0, 1)), "spacing"),
        (lambda: _dense(n_levels=0), "n_levels"),
        (lambda: _dense(n_levels=3), "n_levels"),  # levels up to 5 in the mask
        (lambda: _dense(aggregation="2d"), "aggregation"),
        (lambda: _dense(features=["entropy"]), "features"),
        (lambda: _dense(distance=0), "distance"),
        (lambda: _dense(distance=3), "distance"),  # windows of 3 voxels
        (lambda: _dense(centres=np.array([[9, 0, 0]])), "centres"),
        (lambda: _dense(mask=np.ones((5, 6, 6))), "mask"),
        (lambda: _dense(image=np.full((6, 6, 6), 1.5)), "image"),
        (lambda: _dense(image=np.ones((6, 6))), "image"),
        (lambda: glcm_matrices(np.ones((3, 3, 3)), None, 1, distance=1.5), "distance"),
        (lambda: glcm_features(np.ones((13, 3, 4))), "matrices"),
        (lambda: glcm_features(-np.ones((13, 3, 3))), "matrices"),
        (lambda: glcm_features(np.ones((13, 3, 3)), "2d_averaged"), "aggregation"),
        (lambda: discretise(np.ones((2, 2, 2)), None), "n_bins"),
        (lambda: discretise(np.ones((2, 2, 2)), None, n_bins=4, bin_width=2), "bin_width"),
        (lambda: discretise(np.ones((2, 2, 2)), None, n_bins=0), "n_bins"),
        (lambda: discretise(np.ones((2, 2, 2)), None, bin_width=-2), "bin_width"),
        (lambda: discretise(np.ones((2, 2, 2)), None, n_bins=4, lower=-1000), "lower"),
        (lambda: discretise(np.ones((2, 2, 2)), None, bin_width=1, upper=-5.0), "upper"),
        (lambda: discretise(np.ones((2, 2, 2)), np.zeros((2, 2, 2))), "mask"),
    ],
)
def test_bad_parameters_are_named(call, param):
    with pytest.raises(ValueError, match=param):
        call()


# --------------------------------------------------------------------------- fast path


def _random_centres(shape, n, seed):
    """``n`` distinct voxel indices, border voxels included."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(math.prod(shape), size=n, replace=False)
    return np.stack(np.unravel_index(np.sort(flat), shape), axis=-1)


@pytest.mark.parametrize("aggregation", sorted(IBSI_AGGREGATION))
@pytest.mark.parametrize(
    "n_levels, distance, spacing",
    [
        (3, 1, (1.0, 1.25, 2.5)),  # few levels: the marginal entropies sum over dense bins
        (56, 1, (1.0, 1.0, 2.5)),  # CT-like: histograms by cell (averaged), 16-bit codes
        (80, 2, (1.0, 1.0, 1.5)),  # distance 2; averaged codes need 32 bits (13 * 81^2 > 2^16)
        (300, 1, (1.0, 1.0, 2.5)),  # merged codes need 32 bits too (301^2 > 2^16)
    ],
)
def test_dense_fast_path_equals_reference_on_random_windows(
    aggregation, n_levels, distance, spacing
):
    """The sorted pair-code path of dense_haralick against glcm_features(glcm_matrices(crop)),
    every IBSI feature, on random windows (inside, on the border, across mask holes)."""
    image, mask = _random_case(shape=(12, 11, 9), n_levels=n_levels, seed=n_levels)
    centres = _random_centres(image.shape, 30, seed=distance)
    radius = np.array(window_radius_voxels(7.5, spacing))
    _, values = dense_haralick(
        image, mask, spacing, 7.5, 3.0, n_levels, FEATURE_NAMES, aggregation, distance, centres
    )
    for row, centre in zip(values, centres, strict=True):
        lo = np.maximum(centre - radius, 0)
        hi = np.minimum(centre + radius + 1, image.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        matrices = glcm_matrices(image[box], mask[box], n_levels, distance)
        if matrices.sum() == 0:
            assert np.isnan(row).all()
            continue
        want = glcm_features(matrices, aggregation)
        want = np.array([want[name] for name in FEATURE_NAMES])
        # Cluster shade, a third moment, is often ~0 from terms ~sigma^3: its rounding error
        # scales with sigma^3, not with its value.
        atol = np.full(len(FEATURE_NAMES), 1e-12)
        sum_variance = want[FEATURE_NAMES.index("sum_variance")]
        atol[FEATURE_NAMES.index("cluster_shade")] = 1e-12 * max(1.0, sum_variance) ** 1.5
        off = np.abs(row - want) > atol + 1e-9 * np.abs(want)
        assert not off.any(), (centre, np.array(FEATURE_NAMES)[off], row[off], want[off])


@pytest.mark.parametrize("aggregation", sorted(IBSI_AGGREGATION))
def test_dense_chunks_do_not_change_values(aggregation, monkeypatch):
    """One window per chunk (the scratch histograms reused 40 times) gives the same rows."""
    image, mask = _random_case(n_levels=20, seed=5)
    centres = _random_centres(image.shape, 40, seed=6)
    args = (image, mask, (1.0, 1.0, 2.0), 5.0, 2.0, 20, FEATURE_NAMES, aggregation)
    _, whole = dense_haralick(*args, centres=centres)
    monkeypatch.setattr(dense, "_MAX_PAIRS_PER_CHUNK", 1)
    _, one_by_one = dense_haralick(*args, centres=centres)
    np.testing.assert_allclose(one_by_one, whole, rtol=1e-12, atol=1e-14)
    assert np.isnan(whole).any() == np.isnan(one_by_one).any()


@pytest.mark.parametrize("aggregation", sorted(IBSI_AGGREGATION))
def test_dense_single_slice_mask_averages_in_plane_directions_only(aggregation):
    """A one-slice mask: only the 4 in-plane directions hold pairs; "3d_averaged" averages
    those 4 (as glcm_features does), not 13."""
    image, _ = _random_case(shape=(9, 9, 5), n_levels=6, seed=7)
    mask = np.zeros(image.shape, dtype=bool)
    mask[:, :, 2] = True
    centres = np.array([[4, 4, 2], [0, 8, 2], [3, 5, 2]])
    _, values = dense_haralick(
        image, mask, (1, 1, 1), 5.0, 1.0, 6, FEATURE_NAMES, aggregation, centres=centres
    )
    for row, centre in zip(values, centres, strict=True):
        want = _crop_features(image, mask, centre, np.array([2, 2, 2]), 6, aggregation, None)
        np.testing.assert_allclose(row, want, rtol=1e-10, atol=1e-12)
    if aggregation == "3d_averaged":
        in_plane = [k for k, d in enumerate(DIRECTIONS) if d[2] == 0]
        m = glcm_matrices(image[2:7, 2:7, :], mask[2:7, 2:7, :], 6)
        assert np.flatnonzero(m.sum(axis=(1, 2))).tolist() == in_plane


def test_symmetric_matrix_identities():
    """For symmetric matrices (the identities the fast path uses), on the reference path:
    joint variance = (sum variance + contrast) / 4, correlation = (sum variance - contrast) /
    (sum variance + contrast), sum average = 2 joint average, and HX = HY gives
    HXY1 = HXY2 = 2 HX."""
    rng = np.random.default_rng(8)
    for _ in range(5):
        volume = rng.integers(1, 7, size=(5, 6, 4))
        f = glcm_features(glcm_matrices(volume, None, 6), "3d_merged")
        sv, contrast = f["sum_variance"], f["contrast"]
        assert f["joint_variance"] == pytest.approx((sv + contrast) / 4, rel=1e-12)
        assert f["correlation"] == pytest.approx((sv - contrast) / (sv + contrast), rel=1e-10)
        assert f["sum_average"] == pytest.approx(2 * f["joint_average"], rel=1e-12)


@pytest.mark.parametrize("aggregation", sorted(IBSI_AGGREGATION))
def test_constant_window_entropies_are_exactly_zero(aggregation):
    """One grey level: every entropy, and hence both information correlations, is exactly 0 on
    the fast path as on the reference (information_correlation_2 = sqrt(1 - exp(-2 x)) would
    turn a rounding residue x ~ 1e-16 into ~1e-8)."""
    image = np.full((7, 7, 5), 4)
    names = [
        "joint_entropy",
        "sum_entropy",
        "difference_entropy",
        "information_correlation_1",
        "information_correlation_2",
    ]
    _, values = dense_haralick(image, None, (1, 1, 1), 5.0, 2.0, 9, names, aggregation)
    assert len(values) > 0
    np.testing.assert_array_equal(values, 0.0)


def test_key_dtype_is_the_smallest_that_holds_the_codes():
    assert dense._key_dtype(2**16) is np.uint16
    assert dense._key_dtype(2**16 + 1) is np.uint32
    assert dense._key_dtype(2**32 + 1) is np.uint64
