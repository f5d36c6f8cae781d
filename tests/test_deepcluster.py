"""DeepCluster with a 3D U-Net and dCAMs (study 03): networks, pooling, the DeepCluster steps
(sampler, empty clusters, head re-initialisation), the dCAM identity, determinism, checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medclust.models.dcam import augment_batch, scaled_lr
from medclust.models.deepcluster import (
    DeepCluster,
    SupervisedPooledClassifier,
    repair_empty_clusters,
    uniform_label_sample,
)
from medclust.models.pooling import (
    MIN_REDUCTION,
    FeaturePreprocessing,
    masked_average_pool,
    whitening_applies,
)
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


def test_whitening_only_where_the_features_have_16_times_the_kept_dimensions():
    assert MIN_REDUCTION == 16
    assert whitening_applies(4096, 256)  # Caron et al.: 4096-d AlexNet features -> 256
    assert not whitening_applies(4095, 256)
    assert whitening_applies(128, 8) and not whitening_applies(64, 8)
    assert not whitening_applies(10_000, None)


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_preprocessing_whitens_normalises_and_drops_flat_components():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 3))
    # 96 columns (>= 16 x 5, so PCA applies), only three independent
    X = base @ rng.normal(size=(3, 96))
    prep = FeaturePreprocessing(5, seed=0).fit(X)
    assert prep.pca_.n_components_ == 3  # 5 asked, 2 of them ~0 variance and dropped
    Z = prep.transform(X)
    assert Z.shape == (40, 3) and prep.n_features_out_ == 3
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0)
    np.testing.assert_allclose(prep.scaler_.mean_, X.mean(0))
    with pytest.raises(RuntimeError, match="NaN or inf"):
        FeaturePreprocessing(2).fit(np.where(X > 2, np.nan, X))
    with pytest.raises(RuntimeError, match="identical for every volume"):
        FeaturePreprocessing(2).fit(np.ones((5, 3)))


@pytest.mark.parametrize("pca_dim", [None, 8, 4])
def test_few_features_are_only_standardised(pca_dim):
    # 33 features (a HU histogram + %LAA) are fewer than 16 x 4: no PCA, no L2, nothing lost
    X = np.random.default_rng(1).normal(3.0, 2.0, size=(50, 33))
    prep = FeaturePreprocessing(pca_dim).fit(X)
    Z = prep.transform(X)
    assert prep.pca_ is None and prep.n_features_out_ == 33
    np.testing.assert_allclose(Z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(0), 1.0)
    np.testing.assert_allclose(Z, (X - X.mean(0)) / X.std(0))


def test_learning_rate_is_scaled_linearly_from_carons_batch_of_256():
    assert scaled_lr(0.05, 256) == 0.05
    assert scaled_lr(0.05, 8) == pytest.approx(0.0015625)
    dc = DeepCluster(**{**FAST, "epochs": 1, "batch_size": 4}).fit(*lungs(8)[:2])
    assert dc.lr_ == pytest.approx(0.05 * 4 / 256)


def test_augmentation_crops_and_mirrors_volume_and_mask_together():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 16, 12, 8)).astype(np.float32)
    M = (X > 0).astype(np.float32)
    xb, mb = augment_batch(X, M, np.random.default_rng(3), crop_fraction=0.75, flip_axis=0)
    assert xb.shape == mb.shape == (20, 12, 9, 6)
    np.testing.assert_array_equal(mb, (xb > 0).astype(np.float32))  # the same box and flip
    seen = set()
    for x, xa in zip(X, xb, strict=True):  # each crop is a box of x, mirrored or not
        hits = [
            (flip, o)
            for flip in (False, True)
            for o in np.ndindex(5, 4, 3)
            if np.array_equal(
                (np.flip(x, 0) if flip else x)[
                    (slice(4 - o[0], 16 - o[0]) if flip else slice(o[0], o[0] + 12)),
                    o[1] : o[1] + 9,
                    o[2] : o[2] + 6,
                ],
                xa,
            )
        ]
        assert len(hits) == 1
        seen.add(hits[0][0])
    assert seen == {False, True}
    same, _ = augment_batch(X, M, np.random.default_rng(3), crop_fraction=0.75, flip_axis=0)
    np.testing.assert_array_equal(same, xb)
    whole, _ = augment_batch(X, M, rng, crop_fraction=1.0, flip_axis=None)
    np.testing.assert_array_equal(whole, X)
    # a crop that would miss a one-voxel mask is moved onto it
    M_corner = np.zeros_like(M)
    M_corner[:, 0, 0, 0] = 1
    _, m_c = augment_batch(X, M_corner, rng, crop_fraction=0.5, flip_axis=None)
    assert (m_c[:, 0, 0, 0] == 1).all() and m_c.sum() == len(X)


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
    assert set(h) == {
        "labels", "loss", "accuracy", "nmi_prev", "cluster_sizes", "inertia", "n_repaired",
        "n_dims", "head_init_digest", "head_final_digest", "seconds",
    }  # fmt: skip
    assert all(len(v) == FAST["epochs"] for v in h.values())
    assert np.isnan(h["nmi_prev"][0]) and all(0 <= v <= 1 for v in h["nmi_prev"][1:])
    for labels, sizes in zip(h["labels"], h["cluster_sizes"], strict=True):
        assert labels.shape == (len(X),)
        assert len(sizes) == 3 and sum(sizes) == len(X) and min(sizes) > 0
        np.testing.assert_array_equal(np.bincount(labels, minlength=3), sizes)
    # 2 pooled channels are fewer than 16 x pca_dim: k-means saw the standardised features
    assert h["n_dims"] == [fitted.n_features_out_] * FAST["epochs"] == [2] * FAST["epochs"]
    # the head is re-initialised every epoch: it starts neither from the trained head of the
    # previous epoch nor from the same random weights, and it is then trained
    for e in range(1, FAST["epochs"]):
        assert h["head_init_digest"][e] != h["head_final_digest"][e - 1]
        assert h["head_init_digest"][e] != h["head_init_digest"][e - 1]
    assert all(a != b for a, b in zip(h["head_init_digest"], h["head_final_digest"], strict=True))
    assert fitted.head_.weight.shape == (3, fitted.n_features_out_, 1, 1, 1)


def test_final_clustering_of_the_trained_network(fitted, data):
    X, M, _ = data
    # labels_ come from one more clustering step after the last epoch, not from its history
    np.testing.assert_array_equal(fitted.labels_, fitted.kmeans_.labels_)
    assert fitted.labels_.dtype == np.int64 and fitted.labels_.shape == (len(X),)
    assert (np.bincount(fitted.labels_, minlength=3) > 0).all()
    assert fitted.cluster_centers_ is fitted.kmeans_.cluster_centers_
    assert fitted.cluster_centers_.shape == (3, fitted.n_dims_)
    prep = fitted.preprocessing_
    assert isinstance(prep, FeaturePreprocessing) and prep.pca_ is None
    assert fitted.n_dims_ == prep.n_features_out_ == fitted.n_features_out_
    for gone in ("pca_dim_", "scaler_", "pca_"):
        assert not hasattr(fitted, gone)
    # not whitened: transform gives the standardised pooled features (not unit-norm rows)
    Z = fitted.transform(X, M)
    assert Z.shape == (len(X), fitted.n_dims_)
    np.testing.assert_allclose(Z.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(Z.std(0), 1.0)
    np.testing.assert_allclose(Z, prep.transform(fitted.pooled_features(X, M)))
    # the training volumes are assigned to the clusters they were given (no empty cluster was
    # repaired in the final clustering of this toy, so the nearest centroid is the label)
    np.testing.assert_array_equal(fitted.assign(X, M), fitted.labels_)
    np.testing.assert_array_equal(fitted.assign(X[5:9], M[5:9]), fitted.labels_[5:9])


def test_zero_epochs_clusters_the_untrained_network(fitted, data):
    X, M, _ = data
    dc = DeepCluster(**{**FAST, "epochs": 0}).fit(X, M)
    assert dc.history_ == {key: [] for key in fitted.history_}
    assert dc.labels_.shape == (len(X),)
    # the final clustering of the untrained network is the first epoch's clustering of a
    # trained run with the same seed (same features, same k-means seed)
    np.testing.assert_array_equal(dc.labels_, fitted.history_["labels"][0])
    np.testing.assert_array_equal(dc.assign(X, M), dc.labels_)
    assert dc.transform(X, M).shape == (len(X), dc.n_dims_)
    # a fresh random head, for predict and the dCAMs
    assert dc.head_.weight.shape == (3, dc.n_features_out_, 1, 1, 1)
    assert not dc.head_.training and not dc.network_.training
    assert float(dc.head_.bias.detach().abs().max()) == 0.0
    assert 0 < float(dc.head_.weight.detach().std()) < 0.05  # N(0, 0.01^2)
    assert dc.predict(X[:3], M[:3]).shape == (3,)
    maps = dc.dcam(X[:3], M[:3])
    np.testing.assert_allclose(
        np.nanmean(maps, axis=(2, 3, 4)), dc.decision_function(X[:3], M[:3]), rtol=1e-4, atol=1e-6
    )


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
    # 32 voxels: the training crops (28 at crop_fraction 0.875) still cover 4 poolings
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


def test_wide_features_are_whitened_before_kmeans(data):
    X, M, _ = data
    # the encoder needs 16-voxel crops: on 16^3 volumes only whole ones (crop_fraction 1)
    dc = DeepCluster(
        **{**FAST, "network": "encoder", "base_filters": 4, "epochs": 1, "pca_dim": 3},
        crop_fraction=1.0,
    ).fit(X, M)
    assert dc.n_features_out_ == 48  # = 16 x pca_dim: PCA-whitening + L2 apply
    assert dc.preprocessing_.pca_ is not None and dc.n_dims_ == dc.preprocessing_.n_features_out_
    assert dc.n_dims_ == 3 and dc.history_["n_dims"] == [3]
    Z = dc.transform(X, M)
    assert Z.shape == (len(X), 3) and dc.cluster_centers_.shape == (3, 3)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0)
    np.testing.assert_array_equal(dc.kmeans_.predict(Z), dc.assign(X, M))


def test_supervised_classifier_separates_bright_from_dark_lungs(data):
    X, M, y = data
    names = np.array(["dark", "bright"])[y]
    # lr is given for batches of 256: the default 0.05 is 0.0012 per step of 6, and in 20 steps
    # it left 6 of seeds 0-11 at chance on this toy; 0.25 failed 1 of 12, 0.5 passed all 12
    # with little margin, 1.0 (0.023 per step) passes all 12 with the loss down to 0.04-0.36
    clf = SupervisedPooledClassifier(
        base_filters=2, epochs=5, batch_size=6, lr=1.0, seed=0, device="cpu"
    ).fit(X, M, names)
    assert clf.lr_ == pytest.approx(scaled_lr(1.0, 6)) == pytest.approx(6 / 256)
    assert list(clf.classes_) == ["bright", "dark"]
    assert clf.history_["loss"][-1] < clf.history_["loss"][0]
    X_new, M_new, y_new = lungs(16, seed=7)
    assert clf.score(X_new, M_new, np.array(["dark", "bright"])[y_new]) == 1.0
    assert clf.dcam(X_new[:2]).shape == (2, 2, SIDE, SIDE, SIDE)
    maps = clf.dcam(X_new[:2], M_new[:2])
    np.testing.assert_allclose(
        np.nanmean(maps, axis=(2, 3, 4)),
        clf.decision_function(X_new[:2], M_new[:2]),
        rtol=1e-4,
        atol=1e-5,
    )


def test_seeded_fits_are_identical(fitted, data):
    X, M, _ = data
    again = DeepCluster(**FAST).fit(X, M)
    np.testing.assert_array_equal(again.labels_, fitted.labels_)
    np.testing.assert_array_equal(again.cluster_centers_, fitted.cluster_centers_)
    assert set(again.history_) == set(fitted.history_)
    for key, values in fitted.history_.items():
        if key == "labels":  # arrays, one per epoch
            assert len(again.history_[key]) == len(values)
            for a, b in zip(again.history_[key], values, strict=True):
                np.testing.assert_array_equal(a, b)
        elif key == "nmi_prev":  # NaN at the first epoch
            np.testing.assert_array_equal(again.history_[key], values)
        elif key != "seconds":
            assert again.history_[key] == values, key
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
        ("epochs", 2.5, "epochs must be an integer >= 0, got 2.5"),
        ("epochs", -1, "epochs must be an integer >= 0, got -1"),
        ("pca_dim", 0, "pca_dim must be an integer >= 1 or None"),
        ("crop_fraction", 0, r"crop_fraction must be a finite number in \(0, 1\], got 0"),
        ("crop_fraction", 1.5, r"crop_fraction must be a finite number in \(0, 1\], got 1.5"),
        ("flip_axis", 3, "flip_axis must be an integer >= 0 and <= 2 or None, got 3"),
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
    # the volumes are big enough but the training crops are not (checked before any work)
    crops = r"training crops \(crop_fraction=0.875\) must be at least 16 voxels"
    with pytest.raises(ValueError, match=crops + r".*'encoder'.*got \(14, 14, 14\)"):
        DeepCluster(**{**FAST, "network": "encoder"}).fit(X, M)
    with pytest.raises(ValueError, match=crops):
        SupervisedPooledClassifier(network="encoder", device="cpu").fit(X, M, y)
    with pytest.raises(ValueError, match=r"training crops \(crop_fraction=0.4\) .* 8 voxels"):
        DeepCluster(**{**FAST, "crop_fraction": 0.4}).fit(X, M)
    with pytest.raises(ValueError, match="balanced must be bool, got 1"):
        SupervisedPooledClassifier(balanced=1, device="cpu").fit(X, M, y)
    with pytest.raises(ValueError, match="y must have shape"):
        SupervisedPooledClassifier(**{k: FAST[k] for k in ("base_filters", "device")}).fit(
            X, M, y[:-1]
        )
