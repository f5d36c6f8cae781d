"""Patch geometry: physical size with anisotropic spacing, centres, strides, cohorts."""

from __future__ import annotations

import numpy as np
import pytest

from medclust.intensity import normalize_in_mask
from medclust.patches import (
    allocate,
    extract_patches,
    patch_shape_voxels,
    sample_cohort_patches,
    sample_patches,
    sliding_window_centres,
    sliding_window_patches,
    stride_voxels,
)

SPACING = (1.5, 1.0, 5.0)


def coordinate_images(shape, spacing):
    """Images whose intensity is the x (resp. y) coordinate in mm of the voxel."""
    x, y, _ = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    return x * spacing[0], y * spacing[1]


def expected_profile(centre: int, n: int, s: float, out_px: int) -> np.ndarray:
    """Bilinear (align_corners=False) resampling of a linear ramp over the window of ``n``
    voxels starting at ``centre - n // 2``: the module's documented geometry."""
    u = np.clip((np.arange(out_px) + 0.5) * n / out_px - 0.5, 0, n - 1)
    return (centre - n // 2 + u) * s


@pytest.mark.parametrize(
    ("size", "spacing", "expected"),
    [
        (14.0, (1.5, 1.0), (9, 14)),
        (14.0, (1.5, 1.5, 5.0), (9, 9)),
        (14.0, (0.7, 0.7, 3.0), (20, 20)),
        (3.0, (2.0, 1.0), (2, 3)),  # 1.5 rounds half up to 2
        (10.0, (4.0, 4.0), (3, 3)),  # 2.5 rounds half up to 3, not to even 2
    ],
)
def test_patch_shape_voxels(size, spacing, expected):
    assert patch_shape_voxels(size, spacing) == expected


@pytest.mark.parametrize("size", [0.0, -3.0, float("nan"), float("inf"), "big", 1.0])
def test_patch_shape_voxels_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="patch_size_mm"):
        patch_shape_voxels(size, (1.5, 1.5))


def test_patch_shape_voxels_rejects_bad_spacing():
    with pytest.raises(ValueError, match="spacing"):
        patch_shape_voxels(14.0, (1.5,))
    with pytest.raises(ValueError, match="spacing"):
        patch_shape_voxels(14.0, (0.0, 1.0))


def test_physical_size_is_honoured_with_anisotropic_spacing():
    shape = (40, 40, 3)
    ix, iy = coordinate_images(shape, SPACING)
    nx, ny = patch_shape_voxels(14.0, SPACING)
    assert (nx, ny) == (9, 14)
    centres = np.array([[20, 20, 1], [17, 22, 0]])
    px = extract_patches(ix, SPACING, centres, 14.0, out_px=32)
    py = extract_patches(iy, SPACING, centres, 14.0, out_px=32)
    assert px.shape == py.shape == (2, 32, 32) and px.dtype == np.float32
    for k, (cx, cy, _) in enumerate(centres):
        # patch axis 0 runs along x, axis 1 along y; each spans n voxels of the given spacing
        np.testing.assert_allclose(px[k, :, 5], expected_profile(cx, nx, 1.5, 32), atol=1e-4)
        np.testing.assert_allclose(py[k, 5, :], expected_profile(cy, ny, 1.0, 32), atol=1e-4)
        assert np.ptp(px[k], axis=1).max() < 1e-4 and np.ptp(py[k], axis=0).max() < 1e-4
        # the interior slope times out_px is the physical extent: within half a voxel of 14 mm
        slope_x = np.diff(px[k, 8:24, 0]).mean()
        slope_y = np.diff(py[k, 0, 8:24]).mean()
        assert abs(slope_x * 32 - 14.0) <= 1.5 / 2 and abs(slope_y * 32 - 14.0) <= 1.0 / 2


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 2.0, 1.0)])
def test_window_is_centred_consistently_for_odd_and_even_counts(spacing):
    # 7 mm -> 7 voxels (odd) at 1 mm, 3.5 -> 4 voxels (even) at 2 mm
    ix, iy = coordinate_images((30, 30, 1), spacing)
    nx, ny = patch_shape_voxels(7.0, spacing)
    c = np.array([[15, 15, 0]])
    for img, n, s in ((ix, nx, spacing[0]), (iy, ny, spacing[1])):
        mean = extract_patches(img, spacing, c, 7.0, out_px=16).mean()
        # the window [c - n//2, c - n//2 + n) is centred on c (odd) or half a voxel before it
        assert mean == pytest.approx((15 - (0.5 if n % 2 == 0 else 0.0)) * s, abs=1e-4)


def test_sample_patches_centres_inside_mask_and_deterministic():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(50, 40, 6)).astype(np.float32)
    mask = np.zeros(img.shape, dtype=np.int32)
    mask[10:30, 5:25, 1:5] = 1
    p, c = sample_patches(img, mask, SPACING, 200, size_mm=14.0, out_px=32, rng=3)
    assert p.shape == (200, 32, 32) and p.dtype == np.float32
    assert c.shape == (200, 3) and np.issubdtype(c.dtype, np.integer)
    assert mask[c[:, 0], c[:, 1], c[:, 2]].all()
    p2, c2 = sample_patches(img, mask, SPACING, 200, size_mm=14.0, out_px=32, rng=3)
    np.testing.assert_array_equal(c, c2)
    np.testing.assert_array_equal(p, p2)
    # fewer candidates than requested: sampling falls back to replacement
    small = np.zeros_like(mask)
    small[20, 20, 2] = 1
    _, c3 = sample_patches(img, small, SPACING, 5, rng=0)
    assert (c3 == [20, 20, 2]).all()


def test_sample_patches_min_inside():
    img = np.zeros((60, 60, 2), dtype=np.float32)
    mask = np.zeros(img.shape, dtype=bool)
    mask[10:40, 10:40, :] = True
    nx, ny = patch_shape_voxels(14.0, SPACING)
    _, c = sample_patches(img, mask, SPACING, 300, rng=1, min_inside=1.0)
    for x, y, _ in c:
        # the full window [x - nx//2, x - nx//2 + nx) lies in the ROI
        assert 10 <= x - nx // 2 and x - nx // 2 + nx <= 40
        assert 10 <= y - ny // 2 and y - ny // 2 + ny <= 40
    with pytest.raises(ValueError, match="min_inside"):
        sample_patches(img, mask, SPACING, 3, min_inside=1.5)


def test_patches_at_the_image_border_are_mirrored():
    img = np.arange(10 * 10, dtype=np.float32).reshape(10, 10, 1)
    p = extract_patches(img, (1.0, 1.0, 1.0), np.array([[0, 0, 0]]), 4.0, out_px=4)
    assert np.isfinite(p).all() and p.shape == (1, 4, 4)
    with pytest.raises(ValueError, match="inside the image"):
        extract_patches(img, (1.0, 1.0, 1.0), np.array([[10, 0, 0]]), 4.0)


def test_sliding_window_stride_in_mm():
    shape = (30, 40, 3)
    img = np.zeros(shape, np.float32)
    mask = np.ones(shape, bool)
    assert stride_voxels(6.0, SPACING) == (4, 6)
    p, c = sliding_window_patches(img, mask, SPACING, size_mm=14.0, stride_mm=6.0, out_px=32)
    xs, ys = np.arange(0, 30, 4), np.arange(0, 40, 6)
    assert len(c) == len(xs) * len(ys) * 3 and p.shape == (len(c), 32, 32)
    assert set(np.unique(c[:, 0])) == set(xs) and set(np.unique(c[:, 1])) == set(ys)
    assert set(np.unique(c[:, 2])) == {0, 1, 2}
    # only grid positions whose centre lies in the ROI
    roi = np.zeros(shape, bool)
    roi[5:17, 7:30, 1] = True
    c2 = sliding_window_centres(roi, SPACING, 14.0, 6.0)
    assert roi[tuple(c2.T)].all()
    expected = {(x, y, 1) for x in xs for y in ys if 5 <= x < 17 and 7 <= y < 30}
    assert {tuple(v) for v in c2} == expected
    # min_inside thins the grid to windows that are mostly in the ROI
    c3 = sliding_window_centres(roi, SPACING, 14.0, 6.0, min_inside=0.9)
    assert len(c3) < len(c2)


def test_sliding_window_patches_content_matches_extract():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(24, 20, 2)).astype(np.float32)
    mask = np.zeros(img.shape, bool)
    mask[4:20, 3:15] = True
    p, c = sliding_window_patches(img, mask, (1.2, 1.2, 4.0), 9.0, 4.0, 16)
    np.testing.assert_array_equal(p, extract_patches(img, (1.2, 1.2, 4.0), c, 9.0, 16))


def test_sample_cohort_patches_allocation():
    rng = np.random.default_rng(2)
    vols = []
    for side in (10, 20, 14):
        img = rng.normal(size=(40, 40, 4)).astype(np.float32)
        mask = np.zeros(img.shape, bool)
        mask[5 : 5 + side, 5 : 5 + side, :] = True
        vols.append((img, mask, SPACING))
    sizes = np.array([10 * 10, 20 * 20, 14 * 14]) * 4
    p, ci, c = sample_cohort_patches(vols, 1000, seed=4)
    assert p.shape == (1000, 32, 32) and ci.shape == (1000,) and c.shape == (1000, 3)
    np.testing.assert_array_equal(np.bincount(ci, minlength=3), allocate(sizes, 1000))
    for i, (_, mask, _) in enumerate(vols):
        cc = c[ci == i]
        assert mask[tuple(cc.T)].all()
    p2, ci2, c2 = sample_cohort_patches(vols, 1000, seed=4)
    np.testing.assert_array_equal(p, p2)
    np.testing.assert_array_equal(c, c2)
    _, ci3, _ = sample_cohort_patches(vols, 10, seed=4, allocation="equal")
    np.testing.assert_array_equal(np.bincount(ci3), [4, 3, 3])
    with pytest.raises(ValueError, match="allocation"):
        sample_cohort_patches(vols, 10, allocation="random")


def test_allocate_sums_to_total():
    out = allocate([1, 1, 1], 10)
    assert out.sum() == 10 and list(out) == [4, 3, 3]
    assert allocate([0.2, 0.8], 7).sum() == 7


@pytest.mark.parametrize("method", ["zscore", "robust"])
def test_normalize_in_mask(method):
    rng = np.random.default_rng(5)
    img = (rng.normal(size=(30, 30, 4)) * 40 + 300).astype(np.float32)
    mask = np.zeros(img.shape, bool)
    mask[5:25, 5:25] = True
    img[~mask] = 0.0  # background must not enter the statistics
    out = normalize_in_mask(img, mask, method=method)
    assert out.dtype == np.float32
    if method == "zscore":
        assert out[mask].mean() == pytest.approx(0, abs=1e-4)
        assert out[mask].std() == pytest.approx(1, abs=1e-4)
    else:
        assert np.median(out[mask]) == pytest.approx(0, abs=1e-4)
        assert out[mask].std() == pytest.approx(1, abs=0.1)
    with pytest.raises(ValueError, match="empty"):
        normalize_in_mask(img, np.zeros_like(mask))
