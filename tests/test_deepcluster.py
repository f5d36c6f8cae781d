"""DeepCluster with a 3D U-Net and dCAMs (study 03): networks, pooling, the DeepCluster steps
(sampler, empty clusters, head re-initialisation), the dCAM identity, determinism, checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medclust.models.deepcluster import (
    DeepCluster,
    SupervisedPooledClassifier,
    repair_empty_clusters,
    uniform_label_sample,
)
from medclust.models.pooling import masked_average_pool, preprocess_features
from medclust.models.unet3d import Encoder3D, UNet3D, count_parameters, matched_encoder_filters

SIDE = 16  # tiny volumes keep the whole file to a few seconds on two cores
FAST = dict(n_clusters=3, base_filters=2, epochs=3, batch_size=6, seed=0, device="cpu")


def lungs(n: int = 24, shape=(SIDE, SIDE, SIDE), seed: int = 0):
    """Noisy volumes with a "lung" that is bright (label 1) or dark (label 0): a box cut by an
    oblique plane that moves from case to case, so no mask is symmetric on the feature grid."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(0.0, 0.3, (n, *shape)).astype(np.float32)
    z, r, c = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    cut = (z + 2 * r)[None] < shape[0] + np.arange(n)[:, None, None, None] % 9 + 4
    M = np.zeros((n, *shape), np.uint8)
    M[:, 3:-3, 3:-3, 4:-2] = 1
    M *= cut
    X += (M * np.where(y == 1, 1.0, -1.0)[:, None, None, None]).astype(np.float32)
    return X, M, y


@pytest.fixture(scope="module")
def data():
    return lungs()


@pytest.fixture(scope="module")
def fitted(data):
    X, M, _ = data
    return DeepCluster(**FAST).fit(X, M)


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize("shape", [(16, 16, 16), (17, 20, 23), (9, 12, 31)])
def test_unet_dense_features_have_the_input_shape(shape):
    net = UNet3D(1, base_filters=2).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, *shape))
    assert net.out_channels == 2
    assert out.shape == (2, 2, *shape)
    with pytest.raises(ValueError, match="2\\*\\*levels = 8"):
        net(torch.randn(1, 1, 7, 16, 16))


def test_network_params_are_checked():
    with pytest.raises(ValueError, match="base_filters must be an integer >= 1, got 0"):
        UNet3D(1, base_filters=0)
    with pytest.raises(ValueError, match="levels must be an integer >= 1, got 2.0"):
        Encoder3D(1, levels=2.0)
    with pytest.raises(ValueError, match="norm must be 'group' or 'batch' or 'instance'"):
        UNet3D(1, norm="layer")


def test_encoder_is_the_down_path_at_one_sixteenth():
    net = Encoder3D(1, base_filters=2, levels=4).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 35, 48))
    assert net.out_channels == 32 and out.shape == (1, 32, 2, 2, 3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 10  # 4 levels + bottom, two convolutions each
    assert all(c.kernel_size == (3, 3, 3) and c.padding == (1, 1, 1) for c in convs)


def test_encoder_width_matches_the_unet_parameter_count():
    # the numbers in the unet3d module docstring
    assert count_parameters(UNet3D(1, 8)) == 365_880
    assert matched_encoder_filters(8) == 5
    assert count_parameters(Encoder3D(1, 5)) == 345_990
    for base in (4, 8, 16):
        n_unet = count_parameters(UNet3D(1, base))
        width = matched_encoder_filters(base)
        n_enc = count_parameters(Encoder3D(1, width))
        others = [count_parameters(Encoder3D(1, w)) for w in (width - 1, width + 1) if w]
        assert all(abs(n_enc - n_unet) <= abs(n - n_unet) for n in others)
        assert Encoder3D(1, width).out_channels > UNet3D(1, base).encoder.widths[-1]


# --------------------------------------------------------------------------- pooling


def test_masked_pooling_ignores_voxels_outside_the_mask():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 3, 6, 5, 4))
    mask = rng.random((2, 1, 6, 5, 4)) > 0.6
    pooled = masked_average_pool(f, mask)
    expected = [[f[i, c][mask[i, 0]].mean() for c in range(3)] for i in range(2)]
    np.testing.assert_allclose(pooled, expected, rtol=1e-12)
    f2 = np.where(mask, f, rng.normal(100.0, 50.0, f.shape))
    np.testing.assert_array_equal(masked_average_pool(f2, mask), pooled)
    mask[1] = False
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\] is empty"):
        masked_average_pool(f, mask)


def test_masked_pooling_at_a_lower_resolution():
    f = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    mask = torch.zeros(1, 1, 4, 4, 4)
    mask[..., :2, :2, 2:] = 1  # exactly the feature cell (0, 0, 1)
    assert masked_average_pool(f, mask, mode="area").item() == 1.0
    assert masked_average_pool(f, mask, mode="nearest").item() == 1.0
    # "trilinear": the mask-average of the trilinearly upsampled features, exactly
    rng = np.random.default_rng(1)
    f = torch.from_numpy(rng.normal(size=(2, 3, 3, 4, 2)))
    mask = torch.from_numpy(rng.random((2, 1, 11, 16, 9)) > 0.5).double()
    up = F.interpolate(f, size=(11, 16, 9), mode="trilinear", align_corners=False)
    expected = (up * mask).sum((2, 3, 4)) / mask.sum((2, 3, 4))
    torch.testing.assert_close(masked_average_pool(f, mask, mode="trilinear"), expected)
    tiny = torch.zeros(1, 1, 16, 16, 16)
    tiny[0, 0, 1, 1, 1] = 1
    with pytest.raises(ValueError, match="empty at the feature resolution"):
        masked_average_pool(torch.ones(1, 2, 2, 2, 2), tiny, mode="nearest")


# --------------------------------------------------------------------------- DeepCluster steps


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_preprocessing_whitens_normalises_and_drops_flat_components():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 3))
    # six columns, only three independent: the last three are copies (zero residual variance)
    X = np.concatenate([base, base @ np.diag([2.0, -1.0, 0.5])], axis=1)
    Z, scaler, pca = preprocess_features(X, pca_dim=5, seed=0)
    assert pca.n_components_ == 3  # 5 asked, 2 of them ~0 variance and dropped
    assert Z.shape == (40, 3)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0)
    np.testing.assert_allclose(scaler.mean_, X.mean(0))
    Z_all, _, pca_all = preprocess_features(base, pca_dim=None)
    assert pca_all.n_components_ == 3 and Z_all.shape == (40, 3)
    with pytest.raises(RuntimeError, match="NaN or inf"):
        preprocess_features(np.where(X > 2, np.nan, X), pca_dim=2)
    with pytest.raises(RuntimeError, match="identical for every volume"):
        preprocess_features(np.ones((5, 3)), pca_dim=2)


def test_uniform_sampler_gives_every_nonempty_cluster_the_same_draws():
    labels = np.repeat([0, 1, 3], [50, 7, 3])  # cluster 2 is empty
    rng = np.random.default_rng(0)
    idx = uniform_label_sample(labels, 60, rng)
    assert idx.shape == (60,)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=4), [20, 20, 0, 20])
    small = np.bincount(idx[labels[idx] == 3], minlength=60)[57:]
    assert sorted(small) == [6, 7, 7]  # 20 draws of 3 points: each used 6 or 7 times
    big = np.bincount(idx[labels[idx] == 0])
    assert big.max() == 1  # 20 of 50 points: no repeats
    # 61 draws over 3 clusters: counts differ by at most one
    counts = np.bincount(labels[uniform_label_sample(labels, 61, rng)])[[0, 1, 3]]
    assert sorted(counts) == [20, 20, 21]
    a = uniform_label_sample(labels, 60, np.random.default_rng(5))
    np.testing.assert_array_equal(a, uniform_label_sample(labels, 60, np.random.default_rng(5)))


def test_empty_clusters_are_repaired_by_splitting():
    rng = np.random.default_rng(0)
    Z = np.concatenate([rng.normal(-5, 1, (12, 2)), rng.normal(5, 1, (8, 2))])
    labels = np.repeat([0, 2], [12, 8])  # clusters 1 and 3 empty
    centers = np.array([Z[:12].mean(0), [9.0, 9.0], Z[12:].mean(0), [-9.0, 9.0]])
    new, new_centers, n = repair_empty_clusters(Z, labels, centers, np.random.default_rng(1))
    assert n == 2
    sizes = np.bincount(new, minlength=4)
    assert (sizes > 0).all() and sizes.sum() == 20
    # a split cluster's points only go to the formerly empty ones; the means follow
    for k in range(4):
        np.testing.assert_allclose(new_centers[k], Z[new == k].mean(0))
    assert set(new[:12]) <= {0, 1, 3} and set(new[12:]) <= {1, 2, 3}
    np.testing.assert_array_equal(labels, np.repeat([0, 2], [12, 8]))  # input untouched
    # duplicate points cannot be split by a hyperplane: one point is moved instead
    dup, _, _ = repair_empty_clusters(
        np.ones((4, 3)), np.zeros(4, int), np.ones((2, 3)), np.random.default_rng(0)
    )
    assert sorted(np.bincount(dup)) == [1, 3]
    with pytest.raises(ValueError, match="no cluster has two points"):
        repair_empty_clusters(np.eye(2), np.array([0, 1]), np.zeros((3, 2)), rng)


def test_fit_history_and_head_reinitialisation(fitted, data):
    X, _, _ = data
    h = fitted.history_
    assert len(h["loss"]) == FAST["epochs"]
    assert np.isnan(h["nmi_prev"][0]) and all(0 <= v <= 1 for v in h["nmi_prev"][1:])
    for sizes in h["cluster_sizes"]:
        assert len(sizes) == 3 and sum(sizes) == len(X) and min(sizes) > 0
    # the head is re-initialised every epoch: it starts neither from the trained head of the
    # previous epoch nor from the same random weights, and it is then trained
    for e in range(1, FAST["epochs"]):
        assert h["head_init_digest"][e] != h["head_final_digest"][e - 1]
        assert h["head_init_digest"][e] != h["head_init_digest"][e - 1]
    assert all(a != b for a, b in zip(h["head_init_digest"], h["head_final_digest"], strict=True))
    assert fitted.head_.weight.shape == (3, fitted.n_features_out_, 1, 1, 1)
    np.testing.assert_array_equal(fitted.labels_, fitted.kmeans_.labels_)
    np.testing.assert_array_equal(np.bincount(fitted.labels_), h["cluster_sizes"][-1])
    Z = fitted.transform(X, data[1])
    assert Z.shape == (len(X), fitted.pca_dim_)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0)


def test_dcam_averages_to_the_pooled_logits(fitted, data):
    X, M, _ = data
    maps = fitted.dcam(X[:5], M[:5])
    assert maps.shape == (5, 3, SIDE, SIDE, SIDE) and maps.dtype == np.float32
    assert np.isnan(maps[:, :, 0, 0, 0]).all()  # outside the lung
    logits = fitted.decision_function(X[:5], M[:5])
    np.testing.assert_allclose(np.nanmean(maps, axis=(2, 3, 4)), logits, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(fitted.predict(X[:5], M[:5]), logits.argmax(1))
    dense = fitted.dense_features(X[:2])
    assert dense.shape == (2, fitted.n_features_out_, SIDE, SIDE, SIDE)


def test_encoder_baseline_dcam_is_upsampled_to_the_input():
    shape = (32, 32, 36)
    X, M, _ = lungs(12, shape, seed=3)
    dc = DeepCluster(**{**FAST, "network": "encoder", "epochs": 1}).fit(X, M)
    assert dc.network_.base_filters == matched_encoder_filters(FAST["base_filters"])
    assert dc.dense_features(X[:2]).shape == (2, dc.n_features_out_, 2, 2, 2)
    maps = dc.dcam(X[:4], M[:4])
    assert maps.shape == (4, 3, *shape)
    assert np.nanstd(maps[0, 0]) > 0  # interpolated, not a constant
    np.testing.assert_allclose(
        np.nanmean(maps, axis=(2, 3, 4)), dc.decision_function(X[:4], M[:4]), rtol=1e-4, atol=1e-6
    )


def test_supervised_classifier_separates_bright_from_dark_lungs(data):
    X, M, y = data
    names = np.array(["dark", "bright"])[y]
    clf = SupervisedPooledClassifier(
        base_filters=2, epochs=5, batch_size=6, seed=0, device="cpu"
    ).fit(X, M, names)
    assert list(clf.classes_) == ["bright", "dark"]
    assert clf.history_["loss"][-1] < clf.history_["loss"][0]
    X_new, M_new, y_new = lungs(16, seed=7)
    assert clf.score(X_new, M_new, np.array(["dark", "bright"])[y_new]) == 1.0
    assert clf.dcam(X_new[:2]).shape == (2, 2, SIDE, SIDE, SIDE)


def test_seeded_fits_are_identical(fitted, data):
    X, M, _ = data
    again = DeepCluster(**FAST).fit(X, M)
    np.testing.assert_array_equal(again.labels_, fitted.labels_)
    assert again.history_ == {**fitted.history_, "seconds": again.history_["seconds"]}
    for (name, a), b in zip(
        fitted.network_.state_dict().items(), again.network_.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    other = DeepCluster(**{**FAST, "seed": 1}).fit(X, M)
    assert other.history_["head_init_digest"] != fitted.history_["head_init_digest"]


def test_fit_leaves_the_callers_torch_rng_alone(data):
    X, M, y = data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DeepCluster(**{**FAST, "epochs": 1}).fit(X, M)
    SupervisedPooledClassifier(base_filters=2, epochs=1, batch_size=6, device="cpu").fit(X, M, y)
    torch.testing.assert_close(torch.rand(3), expected)


def test_hyper_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        DeepCluster(6)
    with pytest.raises(TypeError):
        SupervisedPooledClassifier("unet")
    assert set(DeepCluster().get_params()) == set(DeepCluster._constraints)
    assert set(SupervisedPooledClassifier().get_params()) == set(
        SupervisedPooledClassifier._constraints
    )


@pytest.mark.parametrize(
    ("param", "value", "match"),
    [
        ("n_clusters", 1, "n_clusters must be an integer >= 2, got 1"),
        ("n_clusters", 25, "n_clusters=25"),
        ("network", "vgg", "network must be 'unet' or 'encoder', got 'vgg'"),
        ("base_filters", 0, "base_filters"),
        ("epochs", 2.5, "epochs must be an integer >= 1, got 2.5"),
        ("pca_dim", 0, "pca_dim must be an integer >= 1 or None"),
        ("lr", -0.1, r"lr must be a finite number in \(0, inf\)"),
        ("momentum", 1.0, r"momentum must be a finite number in \[0, 1\)"),
        ("verbose", 1, "verbose must be bool"),
        ("weight_decay", -1, "weight_decay"),
        ("batch_size", 0, "batch_size"),
        ("iters_per_epoch", 0, "iters_per_epoch"),
        ("seed", -1, "seed"),
        ("device", "tpu", "device"),
    ],
)
def test_bad_params_are_named(data, param, value, match):
    X, M, _ = data
    with pytest.raises(ValueError, match=match):
        DeepCluster(**{**FAST, param: value}).fit(X, M)


def test_bad_inputs_are_named(data):
    X, M, y = data
    M_empty = M.copy()
    M_empty[2] = 0
    with pytest.raises(ValueError, match=r"masks\[2\] is empty"):
        DeepCluster(**FAST).fit(X, M_empty)
    with pytest.raises(ValueError, match="volumes' shape"):
        DeepCluster(**FAST).fit(X, M[:, :-1])
    with pytest.raises(ValueError, match="at least 16 voxels"):
        DeepCluster(**{**FAST, "network": "encoder"}).fit(X[:, :12], M[:, :12])
    with pytest.raises(ValueError, match="NaN"):
        DeepCluster(**FAST).fit(np.where(M == 1, np.nan, X), M)
    with pytest.raises(ValueError, match="balanced must be bool, got 1"):
        SupervisedPooledClassifier(balanced=1, device="cpu").fit(X, M, y)
    with pytest.raises(ValueError, match="y must have shape"):
        SupervisedPooledClassifier(**{k: FAST[k] for k in ("base_filters", "device")}).fit(
            X, M, y[:-1]
        )
