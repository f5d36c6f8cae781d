"""JULE-3D pieces: cubic patches, label projection, GDL merging, the CNN, the estimator, and
the segmentation scoring (Moriya et al.; JULE of Yang, Parikh and Batra)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from medclust.models.jule import (
    JULE,
    GDLMerger,
    JULENet,
    initial_clusters,
    knn_affinity,
    triplet_loss,
)
from medclust.patches3d import (
    cube_view,
    extract_cubes,
    grid_centres,
    project_labels,
    sample_cubes,
    specimen_region,
)
from medclust.segmentation import (
    intensity_kmeans_segmentation,
    multi_otsu_segmentation,
    segmentation_nmi,
    slice_contingency,
    subpatch_composition,
    window_statistics,
)

# --------------------------------------------------------------------------- patches


def test_sample_cubes_centres_pass_threshold_and_stay_in_bounds():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (20, 18, 16)).astype(np.float32)
    image[5:12, 4:10, 3:9] += 10
    region = specimen_region(image, 5.0)
    cubes, centres = sample_cubes(image, region, 50, 5, rng=1)
    assert cubes.shape == (50, 5, 5, 5) and cubes.dtype == np.float32
    assert np.all(image[tuple(centres.T)] > 5.0)
    assert np.all(centres >= 0) and np.all(centres < np.array(image.shape))
    # the centre voxel of each cube is the image voxel at its centre
    np.testing.assert_array_equal(cubes[:, 2, 2, 2], image[tuple(centres.T)])
    # without replacement while there are enough candidates
    assert len({tuple(c) for c in centres}) == 50


def test_cube_geometry_and_edge_padding():
    image = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    view = cube_view(image, 3)
    assert view.shape == (6, 5, 4, 3, 3, 3)
    np.testing.assert_array_equal(view[2, 2, 1], image[1:4, 1:4, 0:3])
    corner = extract_cubes(image, np.array([[0, 0, 0]]), 3)[0]
    assert corner[0, 0, 0] == image[0, 0, 0]  # edge repeated outside the volume
    assert corner[1, 1, 1] == image[0, 0, 0] and corner[2, 2, 2] == image[1, 1, 1]


def test_sample_cubes_errors_name_the_problem():
    image = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(ValueError, match="no voxel passes the threshold"):
        sample_cubes(image, image > 1, 3, 3)
    with pytest.raises(ValueError, match="w must be"):
        sample_cubes(image + 5, image < 1, 3, 0)
    with pytest.raises(ValueError, match="threshold must be a finite"):
        specimen_region(image, float("nan"))


def test_project_labels_hand_built_example():
    region = np.zeros((6, 6, 3), bool)
    region[:, :, 1] = True
    centres = grid_centres(region, 3)
    # grid at 1, 4 in-plane and slice 1: four centres
    np.testing.assert_array_equal(centres, [[1, 1, 1], [1, 4, 1], [4, 1, 1], [4, 4, 1]])
    out = project_labels(region.shape, centres, np.array([1, 2, 3, 4]), 3)
    expected = np.zeros((6, 6, 3), np.int32)
    expected[0:3, 0:3] = 1
    expected[0:3, 3:6] = 2
    expected[3:6, 0:3] = 3
    expected[3:6, 3:6] = 4
    np.testing.assert_array_equal(out, expected)


def test_projection_covers_the_specimen():
    rng = np.random.default_rng(3)
    region = np.zeros((30, 30, 30), bool)
    xx, yy, zz = np.mgrid[:30, :30, :30]
    region[(xx - 15) ** 2 + (yy - 14) ** 2 + (zz - 15) ** 2 < 100] = True
    centres = grid_centres(region, 3)
    labels = rng.integers(1, 4, len(centres))
    out = project_labels(region.shape, centres, labels, 3)
    # every voxel whose 3-cube centre is in the specimen is labelled; most specimen voxels are
    assert (out[region] > 0).mean() > 0.85
    # a sub-patch never leaves its cube: labelled voxels lie within 1 voxel (Chebyshev) of
    # a grid centre in the region
    from scipy.ndimage import binary_dilation

    near = binary_dilation(region, structure=np.ones((3, 3, 3), bool))
    assert not np.any((out > 0) & ~near)
    with pytest.raises(ValueError, match="labels for"):
        project_labels(region.shape, centres, labels[:-1], 3)


# --------------------------------------------------------------------------- affinities


def _two_blobs(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 0.1, (n, 3)), rng.normal(3, 0.1, (n, 3))])


def test_knn_affinity_is_sparse_and_excludes_self():
    X = _two_blobs()
    W, idx = knn_affinity(X, 5)
    assert sp.issparse(W) and W.nnz == len(X) * 5
    assert not np.any(idx == np.arange(len(X))[:, None])
    assert W.diagonal().sum() == 0
    assert np.all((W.data > 0) & (W.data <= 1))
    # neighbours stay in their blob
    assert np.all((idx < 40) == (np.arange(80) < 40)[:, None])


def test_initial_clusters_follow_nearest_neighbour_chains():
    # 0 -> 1, 1 -> 0, 2 -> 1 (chain), 3 -> 4, 4 -> 3
    neighbours = np.array([[1], [0], [1], [4], [3]])
    labels = initial_clusters(neighbours)
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4] != labels[0]


def test_gdl_merges_the_expected_pair_on_a_toy_affinity():
    # clusters {0,1}, {2,3}, {4,5}: the first two are strongly linked, the third weakly
    n = 6
    W = np.zeros((n, n))
    strong, weak = 1.0, 0.05
    for i, j in [(0, 1), (2, 3), (4, 5)]:
        W[i, j] = W[j, i] = strong
    for i, j in [(1, 2), (0, 3)]:
        W[i, j] = W[j, i] = strong  # links between cluster 0 and 1
    W[3, 4] = W[4, 3] = weak
    merger = GDLMerger(sp.csr_matrix(W), np.array([0, 0, 1, 1, 2, 2]), k_c=5)
    # D[i, j] equals the definition 1^T W_ij W_ji 1
    for i, ci in enumerate([[0, 1], [2, 3], [4, 5]]):
        for j, cj in enumerate([[0, 1], [2, 3], [4, 5]]):
            if i != j:
                expected = W[np.ix_(ci, cj)] @ W[np.ix_(cj, ci)]
                assert merger.D[i, j] == pytest.approx(expected.sum())
    kept, removed = merger.step()
    assert (kept, removed) == (0, 1)
    assert list(merger.labels) == [0, 0, 0, 0, 2, 2]
    # the incremental update equals a recomputation from scratch
    fresh = GDLMerger(sp.csr_matrix(W), merger.labels, k_c=5)
    act = merger.active
    np.testing.assert_allclose(merger.D[np.ix_(act, act)], fresh.D, atol=1e-12)


def test_gdl_incremental_updates_match_recomputation_on_random_data():
    X = _two_blobs(30, seed=4)
    W, idx = knn_affinity(X, 6)
    labels = initial_clusters(idx)
    merger = GDLMerger(W, labels, k_c=3)
    n0 = merger.n_clusters
    out = merger.merge(n0 - 2)
    assert len(np.unique(out)) == 2
    fresh = GDLMerger(W, merger.labels, k_c=3)
    act = merger.active
    np.testing.assert_allclose(merger.D[np.ix_(act, act)], fresh.D, rtol=1e-9, atol=1e-12)
    # two well separated blobs end as the two clusters
    assert len(set(out[:30])) == 1 and len(set(out[30:])) == 1 and out[0] != out[30]


# --------------------------------------------------------------------------- network and loss


@pytest.mark.parametrize("w,pad", [(27, 0), (11, 2)])
def test_network_gives_l2_normalised_160d(w, pad):
    torch.manual_seed(0)
    net = JULENet(w, deep_padding=pad).eval()
    assert net.flat_dim == 1350  # 50 x 3^3 as the paper's FC 1350 input
    out = net(torch.randn(3, w, w, w))
    assert out.shape == (3, 160)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_network_rejects_too_small_patches():
    with pytest.raises(ValueError, match="patch_size 15 is too small"):
        JULENet(15)


def test_triplet_loss_matches_a_hand_computation():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    # one pair (0, 1) with d2 = 1 and one negative (2) with d2(0, 2) = 4
    loss = triplet_loss(emb, labels, n_negatives=5, margin=0.2, gamma=1.0)
    assert float(loss) == pytest.approx(max(0.0, 1.0 - 4.0 + 0.2))
    loss = triplet_loss(emb, labels, n_negatives=5, margin=4.0, gamma=2.0)
    assert float(loss) == pytest.approx(2.0 * 1.0 - 4.0 + 4.0)
    # no positive pair -> zero loss that still back-propagates
    emb.requires_grad_(True)
    zero = triplet_loss(emb, torch.tensor([0, 1, 2]))
    zero.backward()
    assert float(zero.detach()) == 0.0


# --------------------------------------------------------------------------- estimator


def _textures(n: int = 240, w: int = 11, seed: int = 0):
    rng = np.random.default_rng(seed)
    bright = 1.0 + rng.normal(0, 1.0, (n // 2, w, w, w))
    dark = -1.0 + rng.normal(0, 1.0, (n // 2, w, w, w))
    X = np.concatenate([bright, dark]).astype(np.float32)
    return X, np.r_[np.zeros(n // 2), np.ones(n // 2)]


SMALL = dict(n_clusters=4, epochs_per_period=1, deep_padding=2, n_kernels=8, fc_units=64,
             embed_dim=16, batch_size=40, verbose=False, device="cpu")  # fmt: skip


def test_jule_fit_reaches_the_target_and_is_seeded():
    X, y = _textures()
    a = JULE(seed=3, **SMALL).fit(X)
    b = JULE(seed=3, **SMALL).fit(X)
    assert len(np.unique(a.labels_)) == 4
    assert a.n_timesteps_ == a.n_initial_clusters_ - 4
    assert a.history_[-1]["clusters_after"] == 4  # the extra backward pass on final labels
    np.testing.assert_array_equal(a.history_[-1]["labels"], a.labels_)
    # train.lua's schedule: each period merges ceil(0.2 n) clusters, capped at the target
    n = a.n_initial_clusters_
    for h in a.history_[:-1]:
        assert h["clusters_before"] == n
        n = max(n - int(np.ceil(0.2 * n)), 4)
        assert h["clusters_after"] == n == len(np.unique(h["labels"]))
    assert a.n_periods_ == len(a.history_) > 2
    assert a.iter_ == a.n_periods_ * 6  # one epoch of 240 patches in batches of 40 per period
    np.testing.assert_array_equal(a.labels_, b.labels_)
    fa, fb = a.transform(X[:10]), b.transform(X[:10])
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_allclose(np.linalg.norm(fa, axis=1), 1.0, rtol=1e-5)
    # the final clusters separate the two textures
    from medclust.metrics import purity

    assert purity(y, a.labels_) > 0.9
    # the untrained control differs from the trained network
    assert not np.allclose(a.random_network_transform(X[:10]), fa)


def test_jule_fit_leaves_the_callers_rng_alone():
    """The fit seeds a fork of torch's RNG (the network's initial weights) and its own
    generator; the caller's torch, numpy and python streams go on as if it had not run."""
    import random

    X, _ = _textures(80)
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002 (the global state is what is under test)
    random.seed(123)
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    a = JULE(seed=5, **SMALL).fit(X)
    after = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    torch.testing.assert_close(after[0], expected[0])
    np.testing.assert_array_equal(after[1], expected[1])
    assert after[2] == expected[2]
    # and the fit does not depend on what the caller drew before
    torch.manual_seed(999)
    b = JULE(seed=5, **SMALL).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.transform(X[:5]), b.transform(X[:5]))


def _batch_norms(net: torch.nn.Module) -> list[torch.nn.BatchNorm3d]:
    return [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]


def test_the_untrained_control_is_calibrated_on_the_training_patches(monkeypatch):
    """JULE's updateCNN = 0 control keeps the initial weights, but its batch norm running
    statistics are those of the training patches (a fresh layer holds mean 0 / var 1); the
    calibration draws from a stream of its own, so the trained network is the same with or
    without it."""
    X, _ = _textures(80)  # two minibatches of 40
    a = JULE(seed=5, **SMALL).fit(X)
    initial = a.initial_network_
    assert not initial.training and not a.network_.training
    norms = _batch_norms(initial)
    assert len(norms) == 3
    for m in norms:
        assert not torch.allclose(m.running_mean, torch.zeros_like(m.running_mean))
        assert not torch.allclose(m.running_var, torch.ones_like(m.running_var))
        assert m.momentum == 0.1  # restored after the cumulative pass
    # the first layer sees the patches themselves: its running mean is the mean of the first
    # convolution's output over all training patches (equal minibatches: whatever the order)
    Xn = torch.from_numpy((X - a.mean_) / a.std_)[:, None]
    with torch.no_grad():
        conv1 = initial.features[0](Xn)
    torch.testing.assert_close(norms[0].running_mean, conv1.mean(dim=(0, 2, 3, 4)))
    # every layer: the statistics of a no-gradient pass in training mode over the patches in
    # minibatches of batch_size, in the calibration's own order
    again = copy.deepcopy(initial)
    for m in _batch_norms(again):
        m.reset_running_stats()
        m.momentum = None
    order = np.random.default_rng(np.random.SeedSequence([5, 5])).permutation(80)
    again.train()
    with torch.no_grad():
        for start in range(0, 80, SMALL["batch_size"]):
            again(Xn[order[start : start + SMALL["batch_size"]]])
    for m, expected in zip(norms, _batch_norms(again), strict=True):
        torch.testing.assert_close(m.running_mean, expected.running_mean)
        torch.testing.assert_close(m.running_var, expected.running_var)

    # the same seed: the same fit and the same control
    b = JULE(seed=5, **SMALL).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(
        a.random_network_transform(X[:5]), b.random_network_transform(X[:5])
    )
    # without the calibration: the same trained network, another control
    monkeypatch.setattr(JULE, "_calibrated", lambda self, net, Xn: net.eval())
    plain = JULE(seed=5, **SMALL).fit(X)
    for m in _batch_norms(plain.initial_network_):
        torch.testing.assert_close(m.running_mean, torch.zeros_like(m.running_mean))
    np.testing.assert_array_equal(plain.labels_, a.labels_)
    np.testing.assert_array_equal(plain.transform(X[:5]), a.transform(X[:5]))
    # the same initial weights, other batch-norm statistics: other features
    for p, q in zip(plain.initial_network_.parameters(), initial.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert not np.allclose(plain.random_network_transform(X[:5]), a.random_network_transform(X[:5]))


def test_jule_param_errors_name_the_param():
    X, _ = _textures(40)
    with pytest.raises(ValueError, match=r"eta must be a finite number in \(0, 1\], got 0.0"):
        JULE(eta=0.0, **SMALL).fit(X)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 2, got 1"):
        JULE(**{**SMALL, "batch_size": 1}).fit(X)
    with pytest.raises(ValueError, match="verbose must be bool"):
        JULE(**{**SMALL, "verbose": 1}).fit(X)
    with pytest.raises(TypeError):
        JULE(4)  # hyper-parameters are keyword-only
    with pytest.raises(ValueError, match="n_clusters=50 needs more than 50 patches"):
        JULE(**{**SMALL, "n_clusters": 50}).fit(X)
    with pytest.raises(ValueError, match="cubic patches"):
        JULE(**SMALL).fit(X[:, :, :, :5])


# --------------------------------------------------------------------------- segmentation


def test_baseline_segmentations_and_nmi():
    rng = np.random.default_rng(1)
    truth = np.zeros((20, 20, 10), np.int32)
    truth[2:18, 2:10] = 1
    truth[2:18, 10:18] = 2
    image = np.where(truth == 1, 100.0, np.where(truth == 2, 200.0, 0.0))
    image = image + rng.normal(0, 5, image.shape)
    region = truth > 0
    for seg in (
        intensity_kmeans_segmentation(image, region, 2),
        multi_otsu_segmentation(image, region, 2),
    ):
        assert set(np.unique(seg[region])) == {1, 2} and not seg[~region].any()
        # Otsu's threshold may sit at the edge of the gap between the modes: near perfect
        assert segmentation_nmi(truth, seg) > 0.98
        assert segmentation_nmi(truth, seg, slices=[0, 5]) > 0.98
    # a random labelling scores near 0
    noise = np.where(region, rng.integers(1, 3, truth.shape), 0)
    assert segmentation_nmi(truth, noise) < 0.01
    with pytest.raises(ValueError, match="outside 0..9"):
        segmentation_nmi(truth, noise, slices=[10])


def test_window_statistics_and_subpatch_composition():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(9, 9, 9)).astype(np.float32)
    centres = np.array([[4, 4, 4], [0, 0, 0]])
    stats = window_statistics(image, centres, 3)
    cube = image[3:6, 3:6, 3:6]
    np.testing.assert_allclose(stats[0], [cube.mean(), cube.std()], rtol=1e-5)
    # at the border the window repeats the edge voxels, as the patches do
    edge = extract_cubes(image, centres[1:], 3)[0]
    np.testing.assert_allclose(stats[1], [edge.mean(), edge.std()], rtol=1e-5)
    labels = np.zeros((4, 4, 4), np.int32)
    labels[:2, :2, :2] = 1
    labels[1, 1, 1] = 2
    labels[2:, :2, :2] = 2
    grid = grid_centres(np.ones((4, 4, 4), bool), 2)
    comp = subpatch_composition(labels, grid, 2, 2)
    assert comp.shape == (8, 2)
    np.testing.assert_allclose(comp[0], [7 / 8, 1 / 8])  # the block at the origin
    np.testing.assert_allclose(comp[4], [0, 1])  # the block at x = 2..3
    np.testing.assert_allclose(comp[1], [0, 0])  # unlabelled block


def test_slice_contingency_sums_to_the_slice_nmi():
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 4, (10, 10, 6))
    pred = np.where(truth > 0, rng.integers(0, 3, truth.shape), 0)
    pred[truth == 1] = 2
    tables = slice_contingency(truth, pred, [1, 4], n_true=3, n_pred=2)
    assert tables.shape == (2, 4, 3) and tables[:, 0].sum() == 0  # background not counted
    from medclust.metrics import nmi_from_contingency

    assert nmi_from_contingency(tables.sum(0), "geometric") == pytest.approx(
        segmentation_nmi(truth, pred, [1, 4])
    )
