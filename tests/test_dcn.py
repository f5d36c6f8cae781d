"""cDCN: architecture, the DCN update rules, determinism, checkpoint/resume, sklearn API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

from medclust.models import DCN, ConvAutoencoder, dcn_centroid_update, nearest_centroid
from medclust.models import dcn as dcn_module
from medclust.models.conv_autoencoder import Upsample2x

PX = 16  # the architecture of the paper at 16 px keeps the tests fast on two cores
FAST = dict(n_clusters=3, pretrain_epochs=8, epochs=4, batch_size=16, lam=1.0, seed=0)


def blob_textures(n_per: int = 30, px: int = PX, seed: int = 0):
    """Three well-separated textures: dark fine-grained, mid smooth, bright medium blobs."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for k, (mu, sigma) in enumerate([(-2.0, 0.5), (0.0, 2.0), (2.0, 1.0)]):
        for _ in range(n_per):
            img = gaussian_filter(rng.normal(size=(px, px)), sigma, mode="wrap")
            X.append(mu + 0.5 * img / img.std())
            y.append(k)
    return np.asarray(X, np.float32), np.asarray(y)


@pytest.fixture(scope="module")
def data():
    return blob_textures()


@pytest.fixture(scope="module")
def fitted(data):
    X, _ = data
    return DCN(**FAST).fit(X)


def sequential_update(centers, counts, z, labels):
    """The rule as written in Yang et al. (Sec. 3, Algorithm 1), one sample at a time."""
    m, c = centers.astype(np.float64).copy(), counts.astype(np.float64).copy()
    for zi, k in zip(z, labels, strict=True):
        c[k] += 1
        m[k] = m[k] - (1.0 / c[k]) * (m[k] - zi)
    return m, c


# --------------------------------------------------------------------------- network


def test_autoencoder_architecture_matches_the_paper():
    ae = ConvAutoencoder(in_px=32, latent_dim=20)
    convs = [m for m in ae.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [50, 20, 10]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in ae.encoder) == 3
    dec = [m for m in ae.decoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in dec] == [20, 50, 1]
    assert ae.encoder[-1].in_features == 160 and ae.encoder[-1].out_features == 20
    z, rec = ae(torch.zeros(5, 1, 32, 32))
    assert z.shape == (5, 20) and rec.shape == (5, 1, 32, 32)
    with pytest.raises(ValueError, match="multiple of 8"):
        ConvAutoencoder(in_px=30)


def test_channels_last_layout_gives_the_nchw_values():
    torch.manual_seed(0)
    ae = ConvAutoencoder(in_px=32, latent_dim=20)
    assert ae.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    nchw = ConvAutoencoder(in_px=32, latent_dim=20).to(memory_format=torch.contiguous_format)
    nchw.load_state_dict(ae.state_dict())
    nchw.encode = nchw.encoder  # the plain NCHW forward pass
    x = torch.randn(8, 1, 32, 32)
    with torch.no_grad():
        (z, rec), (z0, rec0) = ae(x), nchw(x)
    assert torch.allclose(z, z0, atol=1e-5) and torch.allclose(rec, rec0, atol=1e-5)


def test_upsample_matches_torch_nearest():
    x = torch.randn(2, 3, 4, 5)
    ref = torch.nn.Upsample(scale_factor=2)(x)
    assert torch.equal(Upsample2x()(x), ref)


# --------------------------------------------------------------------------- update rules


def test_centroid_update_on_known_numbers():
    centers = torch.tensor([[0.0, 0.0], [10.0, 10.0], [5.0, 5.0]])
    counts = torch.tensor([1.0, 3.0, 7.0], dtype=torch.float64)
    z = torch.tensor([[2.0, 0.0], [4.0, 0.0], [10.0, 14.0]])
    labels = torch.tensor([0, 0, 1])
    new_c, new_n = dcn_centroid_update(centers, counts, z, labels)
    # cluster 0: c=2 -> m=(0,0)-(1/2)((0,0)-(2,0))=(1,0); c=3 -> m=(1,0)-(1/3)((1,0)-(4,0))=(2,0)
    # cluster 1: c=4 -> m=(10,10)-(1/4)((10,10)-(10,14))=(10,11); cluster 2 untouched
    torch.testing.assert_close(new_c, torch.tensor([[2.0, 0.0], [10.0, 11.0], [5.0, 5.0]]))
    torch.testing.assert_close(new_n, torch.tensor([3.0, 4.0, 7.0], dtype=torch.float64))
    assert torch.equal(centers, torch.tensor([[0.0, 0.0], [10.0, 10.0], [5.0, 5.0]]))


def test_centroid_update_with_zero_count_takes_the_sample():
    new_c, new_n = dcn_centroid_update(
        torch.zeros(2, 2), torch.zeros(2), torch.tensor([[3.0, -1.0]]), torch.tensor([1])
    )
    torch.testing.assert_close(new_c, torch.tensor([[0.0, 0.0], [3.0, -1.0]]))
    torch.testing.assert_close(new_n, torch.tensor([0.0, 1.0]))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 40),
    k=st.integers(1, 5),
    count0=st.integers(0, 200),
)
def test_centroid_update_equals_the_sequential_rule(seed, n, k, count0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, 4)).astype(np.float32)
    counts = np.full(k, float(count0))
    z = rng.normal(size=(n, 4)).astype(np.float32)
    labels = rng.integers(0, k, size=n)
    m_ref, c_ref = sequential_update(centers, counts, z, labels)
    m, c = dcn_centroid_update(
        torch.from_numpy(centers), torch.from_numpy(counts), torch.from_numpy(z),
        torch.from_numpy(labels),
    )  # fmt: skip
    np.testing.assert_allclose(m.numpy(), m_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(c.numpy(), c_ref)


def test_nearest_centroid():
    centers = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    z = torch.tensor([[1.0, 1.0], [4.0, -2.0], [2.5, 0.0]])
    assert nearest_centroid(z, centers).tolist() == [0, 1, 0]  # tie -> lowest index


# --------------------------------------------------------------------------- estimator


def test_fit_attributes_and_shapes(fitted, data):
    X, _ = data
    n = len(X)
    assert fitted.labels_.shape == (n,) and fitted.labels_.dtype == np.int64
    assert fitted.cluster_centers_.shape == (3, 20) and fitted.cluster_centers_.dtype == np.float32
    Z = fitted.transform(X)
    assert Z.shape == (n, 20) and Z.dtype == np.float32
    np.testing.assert_array_equal(fitted.transform(X[:, None]), Z)  # (n, 1, px, px) accepted
    np.testing.assert_array_equal(fitted.predict(X), fitted.labels_)
    assert fitted.predict(X[:7]).shape == (7,)
    assert len(fitted.pretrain_history_) == FAST["pretrain_epochs"]
    assert set(fitted.history_) == {"reconstruction", "clustering", "total", "changed"}
    assert all(len(v) == FAST["epochs"] for v in fitted.history_.values())
    assert fitted.counts_.sum() == pytest.approx(3 * 100 + FAST["epochs"] * n)


def test_init_baseline_is_kmeans_on_the_pretrained_latent(fitted, data):
    X, y = data
    Zp = fitted.pretrained_embedding(X)
    assert Zp.shape == (len(X), 20)
    agree = np.mean(DCN.nearest(Zp, fitted.init_centers_) == fitted.init_labels_)
    assert agree > 0.98  # sklearn's and our distance arithmetic may split exact near-ties
    assert adjusted_rand_score(y, fitted.init_labels_) > 0.8


def test_loss_decreases_and_clusters_are_found(fitted, data):
    _, y = data
    pre = fitted.pretrain_history_
    assert pre[-1] < pre[0]
    total = fitted.history_["total"]
    assert total[-1] < total[0]
    assert fitted.history_["clustering"][-1] < fitted.history_["clustering"][0]
    assert adjusted_rand_score(y, fitted.labels_) > 0.9


def test_fit_is_deterministic(fitted, data):
    X, _ = data
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    again = DCN(**FAST).fit(X)
    # the weights are drawn from a forked, seeded RNG: the caller's torch stream is untouched
    assert torch.equal(torch.get_rng_state(), rng_before)
    np.testing.assert_array_equal(again.labels_, fitted.labels_)
    np.testing.assert_array_equal(again.cluster_centers_, fitted.cluster_centers_)
    assert again.history_ == fitted.history_
    # fitting leaves the caller's global RNG and determinism flag alone
    assert not torch.are_deterministic_algorithms_enabled()


def test_pretrained_autoencoder_is_reused(fitted, data):
    X, _ = data
    reuse = DCN(**{**FAST, "pretrain_epochs": 999}, pretrained=fitted.pretrained_autoencoder_)
    reuse.fit(X)
    assert reuse.pretrain_history_ == []
    # same pretrained weights and seed: same k-means initialisation and the same training
    np.testing.assert_array_equal(reuse.init_centers_, fitted.init_centers_)
    np.testing.assert_array_equal(reuse.labels_, fitted.labels_)
    # the caller's module was deep-copied, not trained in place
    for a, b in zip(
        reuse.pretrained.parameters(), fitted.pretrained_autoencoder_.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="latent_dim"):
        DCN(**{**FAST, "latent_dim": 5}, pretrained=fitted.pretrained_autoencoder_).fit(X)


def test_clone_and_get_params_round_trip(fitted):
    est = DCN(n_clusters=4, lam=0.5, init_count="kmeans", device="auto", verbose=True)
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    assert not hasattr(clone(fitted), "labels_")
    p = clone(DCN(pretrained=fitted.pretrained_autoencoder_)).get_params()["pretrained"]
    assert p is not fitted.pretrained_autoencoder_ and isinstance(p, ConvAutoencoder)
    assert DCN(device="auto")._select_device().type in ("cpu", "cuda")
    with pytest.raises(TypeError):
        DCN(4)  # hyper-parameters are keyword-only


def test_input_validation(data):
    X, _ = data
    with pytest.raises(ValueError, match="shape"):
        DCN(**FAST).fit(X[:, :, :8, None])
    with pytest.raises(ValueError, match="multiple of 8"):
        DCN(**FAST).fit(X[:, :12, :12])
    with pytest.raises(ValueError, match="n_clusters"):
        DCN(**FAST).fit(X[:2])
    with pytest.raises(ValueError, match=r"lam must be a finite number in \[0, inf\), got -1.0"):
        DCN(**{**FAST, "lam": -1.0}).fit(X)


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        ("epochs", -1, "epochs must be an integer >= 0, got -1"),
        ("pretrain_epochs", 2.0, "pretrain_epochs must be an integer >= 0, got 2.0"),
        ("batch_size", 0, "batch_size must be an integer >= 1, got 0"),
        ("lr", 0.0, r"lr must be a finite number in \(0, inf\), got 0.0"),
        ("seed", -1, "seed must be an integer >= 0, got -1"),
        ("verbose", 1, "verbose must be bool, got 1"),
        ("checkpoint_dir", 3, "checkpoint_dir must be str or PathLike or None, got 3"),
        ("init_count", -1, "init_count must be an integer >= 0 or 'kmeans', got -1"),
        ("init_count", "sizes", "init_count must be an integer >= 0 or 'kmeans', got 'sizes'"),
    ],
)
def test_parameter_constraints(data, param, value, message):
    X, _ = data
    with pytest.raises(ValueError, match=message):
        DCN(**{**FAST, param: value}).fit(X)


def test_checkpoint_key(data):
    X, _ = data
    est = DCN(**FAST)
    key = est._key(dcn_module.as_image_batch(X))
    assert DCN(**FAST, verbose=True, checkpoint_dir="x")._key(dcn_module.as_image_batch(X)) == key
    assert DCN(**{**FAST, "lam": 2.0})._key(dcn_module.as_image_batch(X)) != key
    assert est._key(dcn_module.as_image_batch(X[::-1].copy())) != key


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("stop_after_saves", [2, FAST["pretrain_epochs"] + 1 + 2])
def test_resume_from_checkpoint_equals_uninterrupted_fit(
    fitted, data, tmp_path, monkeypatch, stop_after_saves
):
    """Interrupt during pretraining (2 saves) or after two clustering epochs, then resume."""
    X, _ = data
    real_save = dcn_module._atomic_save
    saves = {"n": 0}

    def crashing_save(obj, path):
        real_save(obj, path)
        saves["n"] += 1
        if saves["n"] == stop_after_saves:
            raise Interrupted

    monkeypatch.setattr(dcn_module, "_atomic_save", crashing_save)
    with pytest.raises(Interrupted):
        DCN(**FAST, checkpoint_dir=tmp_path).fit(X)
    monkeypatch.setattr(dcn_module, "_atomic_save", real_save)
    assert len(list(tmp_path.glob("dcn-*.pt"))) == 1
    assert not list(tmp_path.glob("*.tmp"))

    epochs = {"pretrain": 0, "cluster": 0}
    for name, phase in (("_pretrain_epoch", "pretrain"), ("_cluster_epoch", "cluster")):
        orig = getattr(DCN, name)

        def counted(self, *a, _orig=orig, _phase=phase, **kw):
            epochs[_phase] += 1
            return _orig(self, *a, **kw)

        monkeypatch.setattr(DCN, name, counted)

    resumed = DCN(**FAST, checkpoint_dir=tmp_path).fit(X)
    done_pre = min(stop_after_saves, FAST["pretrain_epochs"])
    done_clu = max(0, stop_after_saves - FAST["pretrain_epochs"] - 1)
    assert epochs == {
        "pretrain": FAST["pretrain_epochs"] - done_pre,
        "cluster": FAST["epochs"] - done_clu,
    }
    np.testing.assert_array_equal(resumed.labels_, fitted.labels_)
    np.testing.assert_array_equal(resumed.cluster_centers_, fitted.cluster_centers_)
    np.testing.assert_array_equal(resumed.counts_, fitted.counts_)
    np.testing.assert_array_equal(resumed.init_labels_, fitted.init_labels_)
    assert resumed.history_ == fitted.history_
    assert resumed.pretrain_history_ == fitted.pretrain_history_

    # a finished checkpoint: the repeat fit trains nothing and gives the same result
    epochs.update(pretrain=0, cluster=0)
    again = DCN(**FAST, checkpoint_dir=tmp_path).fit(X)
    assert epochs == {"pretrain": 0, "cluster": 0}
    np.testing.assert_array_equal(again.labels_, fitted.labels_)
