"""CAE of Table 3.2 (Quarenghi's thesis) and the DEC / DCEC heads (IDEC = DCEC with gamma 0.1):
architecture, the equations of DEC, the stopping rule, the DCEC loss, determinism, parameter
checks and the sklearn API."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.ndimage import gaussian_filter
from sklearn.base import clone

from medclust.metrics import cluster_accuracy
from medclust.models import (
    CAE,
    DCEC,
    DEC,
    TABLE_3_2,
    CAEEmbedding,
    joint_loss,
    kl_divergence,
    soft_assignment,
    target_distribution,
)

PX = 128  # the thesis' image size: the architecture of Table 3.2 needs it
# small batches and intervals keep every fit below a second on two cores
# (30 toy images in batches of 16: 2 iterations per epoch)
FAST_HEAD = dict(n_clusters=3, update_epochs=1.0, max_epochs=30, batch_size=16, kmeans_n_init=4)


def toy_heads(n_per: int = 10, seed: int = 0):
    """Three easy classes of 128 x 128 "head" images in [0, 1]: an ellipse that is dark with a
    bright rim (CT-like), uniform with fine texture (MRI-like), or smooth blobs (PET-like)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:PX, :PX] / PX - 0.5
    X, y = [], []
    for k in range(3):
        for _ in range(n_per):
            a, b = rng.uniform(0.3, 0.4), rng.uniform(0.35, 0.45)
            r = ((xx - rng.normal(0, 0.02)) / a) ** 2 + ((yy - rng.normal(0, 0.02)) / b) ** 2
            if k == 0:
                img = 0.9 * ((r > 0.8) & (r < 1)) + 0.2 * (r <= 0.8)
            elif k == 1:
                img = (r < 1) * (0.55 + 0.1 * gaussian_filter(rng.normal(size=(PX, PX)), 1) / 0.3)
            else:
                img = (r < 1) * 3.0 * gaussian_filter(rng.random((PX, PX)), 8)
            X.append(np.clip(img + 0.02 * rng.normal(size=(PX, PX)), 0, 1))
            y.append(k)
    return np.asarray(X, np.float32), np.asarray(y)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two OpenMP threads on a busy two-core machine made these small steps ~30x slower; the
    # results do not depend on it. Restored afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    return toy_heads()


@pytest.fixture(scope="module")
def cae(data):
    X, _ = data
    return CAEEmbedding(steps=32, batch_size=8, seed=0).fit(X, X_val=X[::5])


# --------------------------------------------------------------------------- CAE (Table 3.2)


def test_cae_layers_match_table_3_2():
    rows = CAE(embedding_dim=3).summary()
    assert rows == list(TABLE_3_2)
    params = {name: n for name, _, n in rows}
    # the parameter counts printed in Table 3.2 of the thesis
    assert params == {
        "conv1": 416, "conv2": 12832, "conv3": 9248, "flatten": 0, "embedding": 1539,
        "linear": 2048, "reshape": 0, "deconv3": 9248, "deconv2": 12816, "deconv1": 401,
    }  # fmt: skip
    model = CAE(embedding_dim=3)
    assert sum(p.numel() for p in model.parameters()) == sum(params.values()) == 48548
    assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.Dropout) for m in model.modules())
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (16, (5, 5), (4, 4)), (32, (5, 5), (4, 4)), (32, (3, 3), (2, 2)),
    ]  # fmt: skip
    deconvs = [m for m in model.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in deconvs] == [
        (32, (3, 3), (2, 2)), (16, (5, 5), (4, 4)), (1, (5, 5), (4, 4)),
    ]  # fmt: skip


@pytest.mark.parametrize("dim", [10, 30])
def test_cae_other_embedding_dims(dim):
    model = CAE(embedding_dim=dim)
    rows = {name: (shape, n) for name, shape, n in model.summary()}
    assert rows["embedding"] == ((dim,), 512 * dim + dim)
    assert rows["linear"] == ((512,), dim * 512 + 512)
    z, rec = model(torch.zeros(2, 1, PX, PX))
    assert z.shape == (2, dim) and rec.shape == (2, 1, PX, PX)


def test_cae_rejects_bad_sizes():
    with pytest.raises(ValueError, match="multiple of 32"):
        CAE(in_px=100)
    with pytest.raises(ValueError, match="multiple of 32"):
        CAEEmbedding(steps=1).fit(np.zeros((4, 48, 48), np.float32))


def test_cae_embedding_history_and_outputs(cae, data):
    X, _ = data
    assert len(cae.history_["train"]) == len(cae.history_["val"]) == 8
    assert cae.history_["train"][-1] < cae.history_["train"][0]
    assert cae.n_iter_ == 32 and cae.history_["step"] == [4, 8, 12, 16, 20, 24, 28, 32]
    assert cae.transform(X).shape == (len(X), 3) and cae.transform(X).dtype == np.float32
    assert cae.reconstruct(X[:2]).shape == (2, PX, PX)
    assert cae.reconstruct(X[:2, None]).shape == (2, 1, PX, PX)
    # the best-validation weights are kept, and the step they come from is reported
    best = int(np.argmin(cae.history_["val"]))
    assert cae.best_step_ == cae.history_["step"][best]
    assert cae.best_val_mse_ == min(cae.history_["val"])
    assert cae.best_val_mse_ == pytest.approx(cae.reconstruction_mse(X[::5]), rel=1e-6)
    no_val = CAEEmbedding(steps=3, batch_size=16).fit(X)  # 2 steps per epoch: one partial
    assert no_val.history_["step"] == [2, 3] and no_val.history_["val"] == []
    assert no_val.best_step_ == 3 and math.isnan(no_val.best_val_mse_)


def test_cae_embedding_is_deterministic(data):
    X, _ = data
    a = CAEEmbedding(steps=4, batch_size=16, seed=3).fit(X)
    b = clone(a).fit(X)
    np.testing.assert_equal(a.history_, b.history_)  # NaN-aware
    assert np.array_equal(a.transform(X), b.transform(X))


# --------------------------------------------------------------------------- equations of DEC


def test_soft_assignment_hand_example():
    z = np.array([[0.0, 0.0]])
    centers = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])  # squared distances 0, 1, 4
    # alpha = 1: q_j proportional to 1 / (1 + d_j^2) = 1, 1/2, 1/5
    np.testing.assert_allclose(soft_assignment(z, centers), [[1 / 1.7, 0.5 / 1.7, 0.2 / 1.7]])
    # alpha = 2: (1 + d^2 / 2)^(-3/2)
    k = np.array([1.0, 1.5, 3.0]) ** -1.5
    np.testing.assert_allclose(soft_assignment(z, centers, alpha=2.0), [k / k.sum()])
    qt = soft_assignment(torch.tensor(z), torch.tensor(centers))
    assert torch.is_tensor(qt)
    np.testing.assert_allclose(qt.numpy(), soft_assignment(z, centers))


@settings(max_examples=30, deadline=None)
@given(
    z=arrays(np.float64, (7, 3), elements=st.floats(-50, 50)),
    c=arrays(np.float64, (4, 3), elements=st.floats(-50, 50)),
)
def test_soft_assignment_and_target_rows_sum_to_one(z, c):
    q = soft_assignment(z, c)
    assert q.shape == (7, 4) and np.all(q >= 0)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-12)
    p = target_distribution(q)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)


def test_target_distribution_hand_example():
    q = np.array([[0.5, 0.5], [0.9, 0.1]])
    # f = (1.4, 0.6); row 0: (0.25/1.4, 0.25/0.6) -> (0.3, 0.7);
    # row 1: (0.81/1.4, 0.01/0.6) -> (0.972, 0.028)
    np.testing.assert_allclose(target_distribution(q), [[0.3, 0.7], [0.972, 0.028]])
    np.testing.assert_allclose(
        target_distribution(torch.tensor(q)).numpy(), [[0.3, 0.7], [0.972, 0.028]]
    )


def test_kl_divergence_hand_example():
    p = np.array([[0.3, 0.7], [1.0, 0.0]])
    q = np.array([[0.5, 0.5], [0.8, 0.2]])
    # per row sum_j p log(p/q), 0 log 0 = 0, then the mean over rows
    expected = (0.3 * np.log(0.6) + 0.7 * np.log(1.4) + np.log(1.25)) / 2
    assert kl_divergence(p, q) == pytest.approx(expected, rel=1e-12)
    assert kl_divergence(q, q) == pytest.approx(0.0, abs=1e-15)


def test_dcec_loss_is_the_weighted_sum():
    g = torch.Generator().manual_seed(0)
    x, x_rec = torch.rand(4, 1, 8, 8, generator=g), torch.rand(4, 1, 8, 8, generator=g)
    q = torch.softmax(torch.randn(4, 3, generator=g), 1).requires_grad_(True)
    p = target_distribution(q.detach())
    total, rec, kl = joint_loss(x, x_rec, p, q, gamma=0.01)
    mse = ((x_rec - x) ** 2).mean()
    kl_hand = (p * torch.log(p / q)).sum(1).mean()
    assert rec.item() == pytest.approx(mse.item(), rel=1e-6)
    assert kl.item() == pytest.approx(kl_hand.item(), rel=1e-5)
    assert total.item() == pytest.approx(mse.item() + 0.01 * kl_hand.item(), rel=1e-6)
    total.backward()  # the clustering term carries gradient, scaled by gamma
    g_expected = torch.autograd.grad(0.01 * (p * torch.log(p / q)).sum(1).mean(), q)[0]
    torch.testing.assert_close(q.grad, g_expected)


# --------------------------------------------------------------------------- clustering heads


def test_dec_stops_by_tol(cae, data):
    X, _ = data
    # T = 1 and a larger step make labels move at first (the trajectory itself is not tested)
    kw = {**FAST_HEAD, "update_epochs": 0.5, "lr": 3e-3, "max_epochs": 200}
    dec = DEC(pretrained=cae.model_, tol=0.01, **kw).fit(X)
    h = dec.history_
    assert dec.converged_ and dec.n_iter_ < 400
    assert h["iteration"] == list(range(dec.n_iter_ + 1))
    # stopped at the first target update after iteration 0 with fewer than tol labels changed
    assert h["changed"][-1] < 0.01 and all(c >= 0.01 for c in h["changed"][1:-1])
    assert math.isnan(h["loss"][0]) and all(np.isfinite(h["loss"][1:]))
    assert dec.kl_ == h["kl"][-1] == pytest.approx(dec.kl_divergence(X), rel=1e-4)
    assert "reconstruction" not in h and dec.update_interval_ == 1 and dec.max_iter_ == 400
    # DEC drops the decoder: it is not trained
    assert torch.equal(dec.autoencoder_.decoder.deconv1.weight, cae.model_.decoder.deconv1.weight)
    assert np.array_equal(dec.predict(X), dec.labels_)
    q = dec.predict_proba(X)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
    assert dec.transform(X).shape == (len(X), 3)
    # the k-means + CAE row: k-means on the pretrained embedding
    assert dec.init_labels_.shape == (len(X),) and dec.init_centers_.shape == (3, 3)
    np.testing.assert_array_equal(dec.pretrained_embedding(X), cae.transform(X))


def test_max_iter_stops_when_tol_is_never_met(cae, data):
    X, _ = data
    dec = DEC(pretrained=cae.model_, tol=0.0, **{**FAST_HEAD, "max_epochs": 3.5}).fit(X)
    assert not dec.converged_ and dec.n_iter_ == dec.max_iter_ == 7 and dec.n_epochs_ == 3.5
    assert dec.history_["iteration"] == [0, 2, 4, 6, 7]


def test_dcec_keeps_the_decoder(cae, data):
    X, _ = data
    before = [p.detach().clone() for p in cae.model_.parameters()]
    dcec = DCEC(pretrained=cae.model_, **FAST_HEAD).fit(X)
    # the given network is copied, never trained in place
    assert all(torch.equal(a, b) for a, b in zip(before, cae.model_.parameters(), strict=True))
    assert dcec.gamma == 0.01
    h = dcec.history_
    assert len(h["reconstruction"]) == len(h["kl"]) == len(h["iteration"])
    assert h["reconstruction"][0] == pytest.approx(cae.reconstruction_mse(X), rel=1e-5)
    assert dcec.reconstruction_mse_ == pytest.approx(dcec.reconstruction_mse(X), rel=1e-5)
    assert dcec.reconstruct(X[:2]).shape == (2, PX, PX)
    dec_w = dcec.autoencoder_.decoder.deconv1.weight
    assert not torch.equal(dec_w, cae.model_.decoder.deconv1.weight)  # the decoder trained


def test_dcec_training_loss_is_reconstruction_plus_gamma_kl(cae, data):
    X, _ = data
    dcec = DCEC(pretrained=cae.model_, gamma=0.3, **{**FAST_HEAD, "max_epochs": 0}).fit(X)
    xb = torch.from_numpy(X[:5, None])
    z, rec = dcec.autoencoder_(xb)
    centers = torch.from_numpy(dcec.cluster_centers_)
    q = soft_assignment(z, centers)
    p = target_distribution(q.detach())
    expected = ((rec - xb) ** 2).mean() + 0.3 * kl_divergence(p, q)
    assert dcec._loss(dcec.autoencoder_, xb, p, centers).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_gamma_weights_the_clustering_term(cae, data):
    """IDEC is DCEC(gamma=0.1): gamma alone decides how far the centres move. With gamma 0 the
    loss is the reconstruction alone, so the centres get no gradient and stay at k-means'."""
    X, _ = data
    kw = {**FAST_HEAD, "max_epochs": 3}
    rec_only = DCEC(pretrained=cae.model_, gamma=0.0, **kw).fit(X)
    idec = DCEC(pretrained=cae.model_, gamma=0.1, **kw).fit(X)
    assert np.array_equal(rec_only.cluster_centers_, rec_only.init_centers_)
    assert np.array_equal(idec.init_centers_, rec_only.init_centers_)
    assert not np.array_equal(idec.cluster_centers_, idec.init_centers_)


def test_seeded_fits_are_identical(data):
    X, _ = data
    kw = dict(FAST_HEAD, max_epochs=5, seed=1)
    a = DCEC(pretrained=CAEEmbedding(steps=4, batch_size=16, seed=1), **kw).fit(X)
    b = clone(a).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    assert np.array_equal(a.init_labels_, b.init_labels_)
    np.testing.assert_equal(a.history_, b.history_)
    assert a.pretrain_history_ == b.pretrain_history_


def test_sklearn_clone_and_params(cae):
    for est in (
        CAEEmbedding(embedding_dim=10, steps=5),
        DEC(pretrained=cae.model_, update_epochs=7),
        DCEC(pretrained=cae, gamma=0.2),
        DCEC(gamma=0.1),
    ):
        c = clone(est)
        assert type(c) is type(est)
        for name, value in est.get_params(deep=False).items():
            if isinstance(value, torch.nn.Module):  # deep-copied
                assert c.get_params()[name] is not value
            elif name != "pretrained":
                assert c.get_params()[name] == value
    assert "gamma" not in DEC().get_params()
    with pytest.raises(TypeError, match="pretrained must be an autoencoder"):
        DEC(pretrained="cae").fit(np.zeros((4, PX, PX), np.float32))
    with pytest.raises(ValueError, match="tol"):
        DEC(pretrained=cae.model_, tol=2.0).fit(np.zeros((4, PX, PX), np.float32))


def test_hyper_parameters_are_keyword_only():
    for cls in (CAEEmbedding, DEC, DCEC):
        with pytest.raises(TypeError):
            cls(3)


@pytest.mark.parametrize(
    ("est", "message"),
    [
        (DEC(batch_size=0), "batch_size must be an integer >= 1, got 0"),
        (DEC(max_epochs=-1), r"max_epochs must be a finite number in \[0, inf\), got -1"),
        (DEC(update_epochs=0), r"update_epochs must be a finite number in \(0, inf\), got 0"),
        (DEC(lr=0.0), r"lr must be a finite number in \(0, inf\), got 0.0"),
        (DEC(seed=True), "seed must be an integer >= 0, got True"),
        (DEC(verbose=1), "verbose must be bool, got 1"),
        (DCEC(gamma=-0.1), r"gamma must be a finite number in \[0, inf\), got -0.1"),
        (CAEEmbedding(embedding_dim=0), "embedding_dim must be an integer >= 1, got 0"),
        (CAEEmbedding(steps=-1), "steps must be an integer >= 0, got -1"),
    ],
)
def test_bad_hyper_parameters_are_refused_by_name(est, message):
    with pytest.raises(ValueError, match=message):
        est.fit(np.zeros((4, 32, 32), np.float32))


# --------------------------------------------------------------------------- any autoencoder


def test_schedule_is_in_epochs_whatever_the_cohort_size(cae, data):
    """T and the cap scale with the data: 4x the images, 4x the iterations per epoch."""
    X, _ = data
    small = DEC(pretrained=cae.model_, **{**FAST_HEAD, "max_epochs": 0}).fit(X)
    large = DEC(pretrained=cae.model_, **{**FAST_HEAD, "max_epochs": 0}).fit(np.tile(X, (4, 1, 1)))
    assert (small.update_interval_, large.update_interval_) == (2, 8)
    assert small._schedule(len(X)) == (2, 2, 0) and large._schedule(4 * len(X)) == (8, 8, 0)


def test_any_autoencoder_plugs_into_the_heads():
    """DEC and DCEC (IDEC) take an MLP autoencoder on flat vectors, DCN a user's module."""
    from medclust.models import DCN, ConvAutoencoder
    from medclust.models.autoencoders import MLPAutoencoder, pretrain

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (3, 16))
    X = np.concatenate([c + rng.normal(0, 1, (40, 16)) for c in centres]).astype(np.float32)
    y = np.repeat([0, 1, 2], 40)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ae = MLPAutoencoder((16, 32, 3))
    hist = pretrain(ae, X, steps=60, batch_size=32, seed=0)
    assert len(hist["step"]) == 15 and hist["best_step"] == 60
    for head in (DEC(pretrained=ae, n_clusters=3, batch_size=32, max_epochs=20),
                 DCEC(pretrained=ae, gamma=0.1, n_clusters=3, batch_size=32, max_epochs=20)):  # fmt: skip
        head.fit(X)
        assert head.transform(X).shape == (120, 3)
        assert cluster_accuracy(y, head.predict(X)) > 0.9
    assert DCEC(pretrained=ae, n_clusters=3, max_epochs=1).fit(X).reconstruct(X).shape == X.shape
    dcn = DCN(pretrained=ae, n_clusters=3, epochs=5, batch_size=32).fit(X)
    assert dcn.transform(X).shape == (120, 3) and cluster_accuracy(y, dcn.predict(X)) > 0.9
    with pytest.raises(TypeError, match="pretrained must be an autoencoder"):
        DCN(pretrained=torch.nn.Linear(3, 3), n_clusters=2).fit(np.zeros((8, 16, 16), np.float32))
    with pytest.raises(ValueError, match="latent_dim=4"):  # the cDCN's network is still checked
        DCN(pretrained=ConvAutoencoder(16, latent_dim=4)).fit(np.zeros((20, 16, 16), np.float32))
