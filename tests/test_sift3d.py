"""3D SIFT keypoints and descriptors (medclust.features.sift3d) on synthetic volumes with known
answers: Gaussian blobs of known scale, ellipsoids rotated by np.rot90, masks, constant images."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medclust.features.sift3d import (
    KEYPOINT_COLUMNS,
    SIFT3D,
    _edge_ok,
    _normalise_descriptor,
    orientation_bin_directions,
    split_micro_macro,
)

#: Lindeberg: the gamma=1 normalised Laplacian of a 3D Gaussian blob peaks at sqrt(2/3) sigma_b.
BLOB_SCALE = math.sqrt(2.0 / 3.0)


def _grid_mm(shape, spacing, centre_vox):
    return np.meshgrid(
        *[(np.arange(n) - centre_vox[a]) * spacing[a] for a, n in enumerate(shape)], indexing="ij"
    )


def gaussian_blob(shape, spacing, sigma_mm, centre_vox, amplitude=1.0):
    """A Gaussian blob of ``sigma_mm`` (whatever the spacing) on a zero background."""
    g = _grid_mm(shape, spacing, centre_vox)
    return amplitude * np.exp(-sum(gi**2 for gi in g) / (2.0 * sigma_mm**2))


def ellipsoid(shape, spacing, centre_vox, semi_axes_mm, edge_mm=1.0):
    """Bright ellipsoid with a logistic edge of width ``edge_mm``."""
    g = _grid_mm(shape, spacing, centre_vox)
    r = np.sqrt(sum((gi / s) ** 2 for gi, s in zip(g, semi_axes_mm, strict=True)))
    return 1.0 / (1.0 + np.exp((r - 1.0) * min(semi_axes_mm) / edge_mm))


# --------------------------------------------------------------------------- detection


def test_blob_keypoint_at_centre_with_known_scale():
    spacing = (2.0, 2.0, 2.0)
    centre = (20.3, 19.6, 21.2)  # off the voxel grid
    sigma_b = 8.0
    kps = SIFT3D().detect(gaussian_blob((42, 40, 44), spacing, sigma_b, centre), spacing)
    assert list(kps.columns) == list(KEYPOINT_COLUMNS)
    assert len(kps) == 1
    kp = kps.iloc[0]
    np.testing.assert_allclose(kp[["x", "y", "z"]].to_numpy(float), centre, atol=0.3)
    assert kp.sigma_mm == pytest.approx(BLOB_SCALE * sigma_b, rel=0.08)
    assert kp.sigma_mm == pytest.approx(sigma_b, rel=0.25)  # the brief's 20-30% band
    assert kp.diameter_mm == pytest.approx(2.0 * math.sqrt(3.0) * kp.sigma_mm)
    assert kp.dog_response < 0  # bright blob: L(k sigma) - L(sigma) < 0 at its centre
    # A dark blob is the same keypoint with a positive response.
    dark = SIFT3D().detect(1.0 - gaussian_blob((42, 40, 44), spacing, sigma_b, centre), spacing)
    assert len(dark) == 1 and dark.dog_response.iloc[0] == pytest.approx(-kp.dog_response)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (3.0, 3.0, 3.0), (1.5, 1.5, 3.0)])
def test_scale_in_mm_follows_when_spacing_changes(spacing):
    sigma_b, fov_mm = 8.0, 90.0
    shape = tuple(round(fov_mm / s) for s in spacing)
    centre = tuple(n / 2 - 0.5 for n in shape)  # the same physical point for every spacing
    kps = SIFT3D().detect(gaussian_blob(shape, spacing, sigma_b, centre), spacing)
    assert len(kps) == 1
    kp = kps.iloc[0]
    assert kp.sigma_mm == pytest.approx(BLOB_SCALE * sigma_b, rel=0.08)
    offset_mm = (kp[["x", "y", "z"]].to_numpy(float) - centre) * np.array(spacing)
    assert np.abs(offset_mm).max() < 0.6


def test_twice_larger_blob_crosses_micro_macro_split():
    spacing, shape, centre = (2.0, 2.0, 2.0), (48, 48, 48), (23.5, 23.5, 23.5)
    small = SIFT3D().detect(gaussian_blob(shape, spacing, 6.0, centre), spacing)
    large = SIFT3D().detect(gaussian_blob(shape, spacing, 12.0, centre), spacing)
    assert len(small) == len(large) == 1
    # diameter = 2 sqrt(3) sqrt(2/3) sigma_b = 2 sqrt(2) sigma_b: ~17 mm and ~34 mm.
    assert small.diameter_mm.iloc[0] == pytest.approx(2 * math.sqrt(2) * 6.0, rel=0.08)
    assert large.diameter_mm.iloc[0] / small.diameter_mm.iloc[0] == pytest.approx(2.0, rel=0.1)
    both = pd.concat([small, large], ignore_index=True)
    micro, macro = split_micro_macro(both)
    assert micro.index.tolist() == [0] and macro.index.tolist() == [1]
    # The threshold is a parameter: at 40 mm both are micro.
    assert len(split_micro_macro(both, threshold_mm=40.0)[0]) == 2


def test_no_keypoints_on_constant_image():
    det = SIFT3D()
    kps, desc = det.detect_and_describe(np.full((30, 30, 30), 250, np.int16), (2.0, 2.0, 2.0))
    assert len(kps) == 0 and list(kps.columns) == list(KEYPOINT_COLUMNS)
    assert desc.shape == (0, 160) and desc.dtype == np.float32


def test_mask_is_honoured():
    spacing, shape = (2.0, 2.0, 2.0), (56, 40, 40)
    image = gaussian_blob(shape, spacing, 6.0, (14.0, 19.5, 19.5)) + gaussian_blob(
        shape, spacing, 6.0, (41.0, 19.5, 19.5)
    )
    det = SIFT3D()
    everywhere = det.detect(image, spacing)
    assert sorted(np.round(everywhere.x).astype(int)) == [14, 41]
    mask = np.zeros(shape, bool)
    mask[28:] = True
    inside = det.detect(image, spacing, mask=mask)
    assert np.round(inside.x).astype(int).tolist() == [41]
    assert len(det.detect(image, spacing, mask=np.zeros(shape, np.uint8))) == 0


def test_elongated_tube_is_rejected_by_the_hessian_test():
    spacing, shape = (2.0, 2.0, 2.0), (40, 40, 40)
    g = _grid_mm(shape, spacing, (19.5, 19.5, 19.5))
    tube = np.exp(-(g[0] ** 2 + g[1] ** 2) / (2 * 5.0**2))  # infinite along z
    assert len(SIFT3D().detect(tube, spacing)) == 0
    # The criterion itself (Allaire et al. 2008): definite and Tr^3/Det < (2r+1)^3/r^2 = 92.6.
    hess = np.array([np.diag(d) for d in [(1, 1, 1), (-2, -2, -2), (1, 1, 0.01), (1, -1, 1)]])
    assert _edge_ok(hess.astype(float), 10.0).tolist() == [True, True, False, False]
    # (r, r, 1) sits on the boundary; slightly rounder passes, flatter fails.
    assert _edge_ok(np.diag([9.0, 9.0, 1.0])[None], 10.0).tolist() == [True]
    assert _edge_ok(np.diag([11.0, 11.0, 1.0])[None], 10.0).tolist() == [False]


def test_max_keypoints_keeps_the_strongest():
    spacing, shape = (2.0, 2.0, 2.0), (64, 40, 40)
    centres = [(10.0, 19.5, 19.5), (31.5, 19.5, 19.5), (53.0, 19.5, 19.5)]
    amplitudes = (0.5, 1.0, 0.75)
    image = sum(
        gaussian_blob(shape, spacing, 6.0, c, a) for c, a in zip(centres, amplitudes, strict=True)
    )
    all_kps = SIFT3D().detect(image, spacing)
    assert np.round(all_kps.x).astype(int).tolist() == [32, 53, 10]  # by |response|
    assert np.all(np.diff(all_kps.dog_response.abs().to_numpy()) <= 0)
    capped = SIFT3D(max_keypoints=2).detect(image, spacing)
    pd.testing.assert_frame_equal(capped, all_kps.iloc[:2])


# --------------------------------------------------------------------------- descriptor


def test_normalise_clip_renormalise_hand_example():
    v = np.zeros((2, 160))
    v[0, :2] = [3.0, 4.0]  # unit: (0.6, 0.8) -> clipped (0.2, 0.2) -> (1/sqrt2, 1/sqrt2)
    v[1, :100] = 1.0  # unit: 0.1 each, below the clip
    out = _normalise_descriptor(v, 0.2)
    np.testing.assert_allclose(out[0, :2], [1 / math.sqrt(2)] * 2)
    np.testing.assert_allclose(out[1, :100], 0.1)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0)
    assert not _normalise_descriptor(np.zeros((1, 8)), 0.2).any()  # no gradient stays zero


def test_descriptors_unit_norm_and_clipped():
    spacing, shape = (2.0, 2.0, 2.0), (41, 41, 41)
    image = ellipsoid(shape, spacing, (20, 20, 20), (12, 8, 5))
    det = SIFT3D()
    kps, desc = det.detect_and_describe(image, spacing)
    assert len(kps) >= 1 and desc.shape == (len(kps), det.descriptor_length) == (len(kps), 160)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, rtol=1e-5)
    assert desc.min() >= 0
    # Clipping was active: the largest entries were all cut to 0.2 and are equal after the
    # common renormalisation, and the renormalised value exceeds 0.2 (the norm shrank).
    top = desc[0].max()
    assert np.sum(np.isclose(desc[0], top, rtol=1e-5)) >= 2 and top > 0.2
    assert SIFT3D(orientation_bins=8, descriptor_grid=4).descriptor_length == 512


def test_orientation_bins_are_unit_face_normals():
    for n, cos_nn in [(20, math.sqrt(5) / 3), (8, 1.0 / 3.0)]:
        normals = orientation_bin_directions(n)
        np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)
        np.testing.assert_allclose(normals.sum(axis=0), 0.0, atol=1e-12)  # symmetric set
        gram = normals @ normals.T
        np.fill_diagonal(gram, -2)
        assert gram.max() == pytest.approx(cos_nn)  # 41.8 deg (icosahedron), 70.5 (octahedron)


def _rotation_phantoms():
    spacing, shape, c = (2.0, 2.0, 2.0), (41, 41, 41), np.array([20.0, 20.0, 20.0])
    # An ellipsoid with an asymmetric bump: a full 3D frame is defined by its shape.
    body = ellipsoid(shape, spacing, c, (12, 8, 5)) + 0.8 * ellipsoid(
        shape, spacing, c + [3.0, 2.0, 2.5], (4, 4, 4)
    )
    g = _grid_mm(shape, spacing, c)
    tube = np.exp(-(g[0] ** 2 + g[1] ** 2) / (2 * 4.0**2))
    slab = 1.0 / (1.0 + np.exp(-g[2]))
    return spacing, body, {"tube": tube, "slab": slab}


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_descriptor_is_invariant_to_90_degree_rotations():
    spacing, body, others = _rotation_phantoms()
    centre = pd.DataFrame({"x": [20.0], "y": [20.0], "z": [20.0], "sigma_mm": [5.0]})
    det, upright = SIFT3D(), SIFT3D(rotation_invariant=False)
    ref, ref_upright = (
        det.describe(body, spacing, centre)[0],
        upright.describe(body, spacing, centre)[0],
    )
    rotated_sims, upright_sims = [], []
    for axes in [(0, 1), (1, 2), (0, 2)]:
        turned = np.rot90(body, 1, axes=axes)  # the cube's centre voxel stays in place
        rotated_sims.append(_cosine(ref, det.describe(turned, spacing, centre)[0]))
        upright_sims.append(_cosine(ref_upright, upright.describe(turned, spacing, centre)[0]))
    other_sims = [_cosine(ref, det.describe(v, spacing, centre)[0]) for v in others.values()]
    assert min(rotated_sims) > 0.95
    assert max(other_sims) < 0.85 and max(other_sims) < min(rotated_sims) - 0.1
    # Without the rotation frame some rotation changes the descriptor clearly.
    assert min(upright_sims) < 0.8


def test_detected_keypoint_rotates_with_the_volume():
    spacing, body, _ = _rotation_phantoms()
    det = SIFT3D(max_keypoints=1)
    kps, desc = det.detect_and_describe(body, spacing)
    turned_kps, turned_desc = det.detect_and_describe(np.rot90(body, 1, axes=(0, 1)), spacing)
    # np.rot90(axes=(0, 1)) moves voxel (x, y, z) to (n - 1 - y, x, z).
    x, y, z = kps.iloc[0][["x", "y", "z"]]
    np.testing.assert_allclose(
        turned_kps.iloc[0][["x", "y", "z"]].to_numpy(float), [40 - y, x, z], atol=1e-3
    )
    assert turned_kps.sigma_mm.iloc[0] == pytest.approx(kps.sigma_mm.iloc[0], rel=1e-4)
    assert _cosine(desc[0], turned_desc[0]) > 0.95


def test_deterministic():
    rng = np.random.default_rng(3)
    spacing, shape = (2.0, 2.0, 2.0), (40, 40, 40)
    noisy = rng.normal(0, 0.02, shape)
    for _ in range(6):
        noisy += gaussian_blob(shape, spacing, rng.uniform(6, 10), rng.uniform(8, 32, 3))
    a_kps, a_desc = SIFT3D().detect_and_describe(noisy, spacing)
    b_kps, b_desc = SIFT3D().detect_and_describe(noisy, spacing)
    assert len(a_kps) >= 3
    pd.testing.assert_frame_equal(a_kps, b_kps)
    np.testing.assert_array_equal(a_desc, b_desc)
    # describe() on the detected keypoints gives the descriptors of detect_and_describe().
    np.testing.assert_array_equal(SIFT3D().describe(noisy, spacing, a_kps), a_desc)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n_scales_per_octave", 0),
        ("n_scales_per_octave", 2.5),
        ("sigma0_mm", -1.0),
        ("n_octaves", 0),
        ("contrast_threshold", -0.1),
        ("edge_ratio", 1.0),
        ("max_keypoints", 0),
        ("intensity_range", (400, -1000)),
        ("descriptor_grid", 0),
        ("orientation_bins", 12),
        ("subregion_width", 0.0),
        ("clip", 1.5),
        ("rotation_invariant", "yes"),
    ],
)
def test_bad_params_name_the_param(param, value):
    image = np.zeros((10, 10, 10))
    with pytest.raises(ValueError, match=param):
        SIFT3D(**{param: value}).detect(image, (1.0, 1.0, 1.0))


def test_bad_inputs_are_named():
    det, image = SIFT3D(), np.zeros((10, 10, 10))
    with pytest.raises(ValueError, match="spacing"):
        det.detect(image, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        det.detect(image, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="3D"):
        det.detect(np.zeros((10, 10)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        det.detect(np.full((10, 10, 10), np.nan), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="mask"):
        det.detect(image, (1.0, 1.0, 1.0), mask=np.ones((10, 10, 9)))
    with pytest.raises(ValueError, match="sigma0_mm"):
        SIFT3D(sigma0_mm=0.4).detect(image, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="sigma_mm"):
        det.describe(image, (1.0, 1.0, 1.0), pd.DataFrame({"x": [1.0], "y": [1.0], "z": [1.0]}))
    with pytest.raises(ValueError, match="threshold_mm"):
        split_micro_macro(pd.DataFrame({"diameter_mm": [1.0]}), threshold_mm=0)
    with pytest.raises(ValueError, match="diameter_mm"):
        split_micro_macro(pd.DataFrame({"sigma_mm": [1.0]}))
