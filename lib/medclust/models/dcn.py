"""Convolutional Deep Clustering Network (cDCN) of Perkonigg et al.

The cDCN is the Deep Clustering Network (DCN) of Yang, Fu, Sidiropoulos and Hong, "Towards
K-means-friendly spaces: simultaneous deep learning and clustering", ICML 2017, with the
convolutional autoencoder of Perkonigg et al., Sec. 2. It minimises Eq. (1) of Perkonigg et al.
(the DCN objective of Yang et al., Sec. 3)::

    sum_i  l(g(f(x_i)), x_i) + (lambda / 2) * || f(x_i) - M s_i ||^2

with ``f``/``g`` the encoder/decoder, ``l`` the mean squared error over pixels, ``M`` the
centroids and ``s_i`` the one-hot assignment. We keep Yang et al.'s ``lambda / 2`` (Perkonigg et
al. write ``lambda``; the factor only rescales ``lambda``). Minibatch losses are averaged over
the samples of the batch.

Training follows DCN, Yang et al. 2017, Sec. 3 / Algorithm 1:

1. *Initialisation*: pretrain the autoencoder on the reconstruction loss alone, then run k-means
   on the latent codes to get ``M`` and the assignments ``s_i``.
2. For each minibatch (every epoch visits all samples in a fresh random order):
   (a) one optimiser step on the network for the minibatch loss above, with ``M`` and the
   stored ``s_i`` held fixed;
   (b) re-encode the minibatch with the updated network and assign each sample to its nearest
   centroid (the assignment update of Yang et al., Sec. 3);
   (c) update the centroids of the assigned clusters with the count-based rule of Yang et al.,
   Sec. 3: for each sample ``i`` assigned to ``k``, ``c_k += 1`` and
   ``m_k <- m_k - (1 / c_k) (m_k - f(x_i))`` (see :func:`dcn_centroid_update`).

The order (network, then assignment, then centroids) is that of Algorithm 1 and of the authors'
reference code (github.com/boyangumn/DCN-New). The optimiser is Adam (Yang et al. use SGD with
momentum; Adam is what later PyTorch reimplementations use and needs no learning-rate schedule).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import ClusterMixin, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from medclust.models import conv_autoencoder
from medclust.models.autoencoders import check_autoencoder, encode, epoch_order, network_input
from medclust.models.base import BASE_CONSTRAINTS, TorchEstimator
from medclust.models.common import INFER_BATCH, as_image_batch, torch_numerics
from medclust.models.conv_autoencoder import ConvAutoencoder, Upsample2x
from medclust.outputs import atomic_write_bytes
from medclust.validation import Int, Options, Real, check_int

__all__ = ["DCN", "ConvAutoencoder", "Upsample2x", "dcn_centroid_update", "nearest_centroid"]

log = logging.getLogger(__name__)

#: Bumped whenever the checkpoint layout changes, so stale checkpoints are not resumed.
CHECKPOINT_VERSION = 1
#: Parameters that do not change the result and so are left out of the checkpoint key.
_UNKEYED = ("verbose", "checkpoint_dir", "device")


# --------------------------------------------------------------------------- clustering steps


def nearest_centroid(z: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Assignment step of DCN (Yang et al. 2017, Sec. 3): nearest centroid (ties: lowest index).

    Squared distances are formed explicitly rather than via ``|z|^2 - 2 z.c + |c|^2``, whose
    cancellation could flip near-ties between runs on different hardware.
    """
    return ((z[:, None, :] - centers[None, :, :]) ** 2).sum(-1).argmin(1)


def dcn_centroid_update(
    centers: torch.Tensor, counts: torch.Tensor, z: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid step of DCN (Yang et al. 2017, Sec. 3 / Algorithm 1) for one minibatch.

    For each sample ``i`` in order, with ``k = labels[i]``: ``c_k += 1`` then
    ``m_k <- m_k - (1 / c_k) (m_k - z_i)``. Applied to the ``n_k`` samples of cluster ``k`` this
    telescopes to the running mean ``m_k' = (c_k m_k + sum_i z_i) / (c_k + n_k)``, which is what
    is computed here (in float64, with a one-hot product so the result does not depend on
    scatter-add ordering). A cluster with ``c_k = 0`` thus jumps to the mean of its first
    samples. Returns new ``(centers, counts)``; the inputs are not modified.
    """
    k = centers.shape[0]
    onehot = torch.nn.functional.one_hot(labels.long(), k).to(torch.float64)
    n_new = onehot.sum(0)
    sums = onehot.T @ z.to(torch.float64)
    c_old = counts.to(torch.float64)
    c_new = c_old + n_new
    hit = n_new > 0
    num = c_old[:, None] * centers.to(torch.float64) + sums
    upd = torch.where(hit[:, None], num / c_new.clamp(min=1)[:, None], centers.to(torch.float64))
    return upd.to(centers.dtype), counts + n_new.to(counts.dtype)


# --------------------------------------------------------------------------- helpers


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _atomic_save(obj: Any, path: Path) -> None:
    """Serialise to memory, then write atomically, so a crash mid-write never leaves a
    truncated checkpoint behind."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _cpu(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v) for k, v in state.items()}


# --------------------------------------------------------------------------- estimator


class DCN(ClusterMixin, TransformerMixin, TorchEstimator):
    """Convolutional Deep Clustering Network (Perkonigg et al., Sec. 2; Yang et al. 2017).

    Minimises Eq. (1) of Perkonigg et al. by the alternating scheme of DCN (Yang et al. 2017,
    Sec. 3 / Algorithm 1); see the module docstring for the exact steps. Hyper-parameters are
    keyword-only and checked in ``fit`` against ``_constraints``.

    Parameters
    ----------
    n_clusters : int, default 10
        Number of clusters (the paper's choice, "fixed after preliminary experiments").
    latent_dim : int, default 20
        Latent dimension (the paper's).
    lam : float, default 0.01
        Weight of the clustering term (the paper's lambda), entering as ``lam / 2``. Not
        reported by the paper. Calibrated on the liver phantom (5,000 z-scored 14 mm patches, 5 pretraining epochs):
        the pretrained per-pixel MSE was ~0.3 and the mean squared latent distance to the
        nearest k-means centroid ~30, so 0.01 starts the clustering term at about half the
        reconstruction term. At 0.1 the clustering term was 2.3 times the reconstruction term in
        the first epoch and one of the 10 clusters emptied within 5 epochs (none at 0.01).
    pretrain_epochs, epochs : int, default 50, 50
        Epochs of autoencoder pretraining and of joint DCN training (the values Yang et al. and
        the PyTorch reimplementations use; the paper reports none).
    batch_size : int, default 256
    lr : float, default 1e-3
        Adam learning rate for both phases.
    init_count : int or "kmeans", default 100
        Initial per-cluster counts ``c_k`` of the centroid rule. 100 for every cluster is what
        the authors' reference code uses; ``"kmeans"`` starts from the k-means cluster sizes,
        which makes the centroids nearly static for large data sets.
    kmeans_n_init : int, default 10
        Restarts of the k-means initialisation.
    pretrained : nn.Module or None
        An already pretrained autoencoder (e.g. another fit's ``pretrained_autoencoder_``): the
        cDCN's ``ConvAutoencoder`` or any module with ``encode(x)`` and ``decode(z)``
        (:mod:`medclust.models.autoencoders`, e.g. ``MLPAutoencoder`` on flat vectors). It is
        deep-copied and pretraining is skipped (``pretrain_epochs`` is ignored).
    seed : int, default 0
        Seeds weight initialisation, the per-epoch sample order (epoch ``e`` of phase ``p`` uses
        ``numpy.random.default_rng([seed, p, e])``, so a resumed fit needs no saved RNG state)
        and k-means.
    device : str, default "cpu"
        A torch device; "auto" picks CUDA when available. Bit-identical repeat fits are
        guaranteed on the CPU with a fixed number of torch threads. ``fit``, ``transform`` and
        ``predict`` run with deterministic kernels and denormals flushed to zero (see
        ``torch_numerics``; both restored afterwards).
    checkpoint_dir : path or None
        If set, the full training state (network, optimiser, centroids, counts, assignments,
        histories, epoch) is written atomically after every epoch to
        ``checkpoint_dir/dcn-<key>.pt``, where ``<key>`` hashes the data and every parameter
        except ``verbose``, ``checkpoint_dir`` and ``device``. A later fit with the same key
        resumes after the last finished epoch and ends with the same result as an uninterrupted
        fit; a finished checkpoint makes a repeat fit return at once.
    verbose : bool, default False
        Show tqdm progress bars. Per-epoch losses always go to the module logger (INFO).

    Attributes
    ----------
    labels_ : (n,) int64 -- nearest-centroid label of each training sample after training.
    cluster_centers_ : (n_clusters, latent_dim) float32 -- the centroids ``M``.
    counts_ : (n_clusters,) float64 -- final centroid counts ``c_k``.
    history_ : dict of lists -- per clustering epoch: ``reconstruction`` (mean MSE),
        ``clustering`` (mean ``lam/2 * ||f(x) - M s||^2``), ``total`` (their sum; minibatch
        means weighted by batch size) and ``changed`` (fraction of assignments that changed).
    pretrain_history_ : list of float -- mean reconstruction MSE per pretraining epoch.
    autoencoder_ : ConvAutoencoder -- the trained network.
    pretrained_autoencoder_ : ConvAutoencoder -- a copy of the network after pretraining.
    init_centers_, init_labels_ : k-means on the pretrained latent (DCN's initialisation). They
        are the classical "autoencoder + k-means" baseline: label new data with
        ``DCN.nearest(dcn.pretrained_embedding(X), dcn.init_centers_)``.
    device_ : torch.device -- the device used.
    """

    _constraints = {
        **BASE_CONSTRAINTS,
        "n_clusters": Int(1),
        "latent_dim": Int(1),
        "lam": Real(0),
        "pretrain_epochs": Int(0),
        "epochs": Int(0),
        "batch_size": Int(1),
        "lr": Real(0, low_open=True),
        "kmeans_n_init": Int(1),
        "checkpoint_dir": Options(str, os.PathLike, None),
    }

    def __init__(
        self,
        *,
        n_clusters: int = 10,
        latent_dim: int = 20,
        lam: float = 0.01,
        pretrain_epochs: int = 50,
        epochs: int = 50,
        batch_size: int = 256,
        lr: float = 1e-3,
        init_count: int | str = 100,
        kmeans_n_init: int = 10,
        pretrained: torch.nn.Module | None = None,
        seed: int = 0,
        device: str = "cpu",
        checkpoint_dir: str | os.PathLike | None = None,
        verbose: bool = False,
    ) -> None:
        self.n_clusters = n_clusters
        self.latent_dim = latent_dim
        self.lam = lam
        self.pretrain_epochs = pretrain_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.init_count = init_count
        self.kmeans_n_init = kmeans_n_init
        self.pretrained = pretrained
        self.seed = seed
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.verbose = verbose

    # ----------------------------------------------------------------- public API

    def _input(self, X: Any) -> np.ndarray:
        """``X`` checked as the network's input (image patches for the cDCN's own)."""
        net = getattr(self, "autoencoder_", self.pretrained)
        return as_image_batch(X) if net is None else network_input(net, X)

    def fit(self, X: Any, y: Any = None) -> DCN:
        """Pretrain (unless ``pretrained``), initialise by k-means, then train jointly."""
        Xn = self._input(X)
        self._validate(Xn)
        self._select_device()
        with torch_numerics():
            self._fit(Xn)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Latent codes ``f(x)``, shape ``(n, latent_dim)`` float32."""
        check_is_fitted(self, "autoencoder_")
        return encode(self.autoencoder_, self._input(X))

    def predict(self, X: Any) -> np.ndarray:
        """Label of the nearest centroid of ``cluster_centers_`` in the latent space."""
        return self.nearest(self.transform(X), self.cluster_centers_)

    def pretrained_embedding(self, X: Any) -> np.ndarray:
        """Latent codes of the network as it was after pretraining (before joint training)."""
        check_is_fitted(self, "pretrained_autoencoder_")
        return encode(self.pretrained_autoencoder_, self._input(X))

    @staticmethod
    def nearest(Z: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Nearest-centroid labels (int64) for latent codes ``Z`` (the assignment step)."""
        z = torch.as_tensor(np.asarray(Z, dtype=np.float32))
        c = torch.as_tensor(np.asarray(centers, dtype=np.float32))
        out = [nearest_centroid(z[a : a + INFER_BATCH], c) for a in range(0, len(z), INFER_BATCH)]
        return torch.cat(out).numpy().astype(np.int64) if out else np.empty(0, np.int64)

    # ----------------------------------------------------------------- internals

    def _validate(self, Xn: np.ndarray) -> None:
        self._validate_params()
        if not (isinstance(self.init_count, str) and self.init_count == "kmeans"):
            try:
                check_int("init_count", self.init_count, 0)
            except ValueError:
                raise ValueError(
                    f"init_count must be an integer >= 0 or 'kmeans', got {self.init_count!r}"
                ) from None
        if len(Xn) < self.n_clusters:
            raise ValueError(f"{len(Xn)} samples cannot form n_clusters={self.n_clusters} clusters")
        if self.pretrained is not None:
            p = check_autoencoder(self.pretrained)
            if isinstance(p, ConvAutoencoder) and (
                p.latent_dim != self.latent_dim or p.in_px != Xn.shape[2]
            ):
                raise ValueError(
                    f"pretrained autoencoder has latent_dim={p.latent_dim}, in_px={p.in_px}; "
                    f"expected {self.latent_dim}, {Xn.shape[2]}"
                )

    def _key(self, Xn: np.ndarray) -> str:
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in _UNKEYED}
        if params["pretrained"] is not None:
            params["pretrained"] = _state_digest(params["pretrained"].state_dict())
        h = hashlib.sha256()
        h.update(
            json.dumps({"v": CHECKPOINT_VERSION, **params}, sort_keys=True, default=repr).encode()
        )
        # a change to this code or the network's must not resume a checkpoint of the old code
        h.update(Path(__file__).read_bytes())
        h.update(Path(conv_autoencoder.__file__).read_bytes())
        h.update(repr(Xn.shape).encode())
        h.update(Xn.tobytes())
        return h.hexdigest()

    def _new_model(self, in_px: int | None) -> torch.nn.Module:
        if self.pretrained is not None:
            return copy.deepcopy(self.pretrained).to(self.device_)
        # forked RNG: seeding must not disturb the caller's global torch random stream
        with self._seeded():
            model = ConvAutoencoder(in_px, self.latent_dim)
        return model.to(self.device_)

    def _order(self, phase: int, epoch: int, n: int) -> np.ndarray:
        # Derived from (seed, phase, epoch) alone, so resuming needs no generator state.
        return epoch_order(self.seed, phase, epoch, n)

    def _pretrain_epoch(self, model, opt, Xt: torch.Tensor, epoch: int) -> float:
        model.train()
        n, total = len(Xt), 0.0
        order = torch.from_numpy(self._order(0, epoch, n)).to(Xt.device)
        for a in range(0, n, self.batch_size):
            xb = Xt[order[a : a + self.batch_size]]
            rec = model.decode(model.encode(xb)).reshape(xb.shape)
            loss = ((rec - xb) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        return total / n

    def _cluster_epoch(self, model, opt, Xt, st: dict[str, torch.Tensor], epoch: int) -> dict:
        model.train()
        n = len(Xt)
        half_lambda = 0.5 * float(self.lam)
        rec_sum = clu_sum = 0.0
        changed = 0
        order = torch.from_numpy(self._order(1, epoch, n)).to(Xt.device)
        for a in range(0, n, self.batch_size):
            idx = order[a : a + self.batch_size]
            xb = Xt[idx]
            # (a) network step with M and s_i fixed (Algorithm 1, Yang et al.)
            z = model.encode(xb)
            rec = model.decode(z).reshape(xb.shape)
            rec_l = ((rec - xb) ** 2).flatten(1).mean(1)
            clu_l = half_lambda * ((z - st["centers"][st["assign"][idx]]) ** 2).sum(1)
            loss = (rec_l + clu_l).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                # (b) assignments and (c) centroids from the *updated* network
                z_new = model.encode(xb)
                lab = nearest_centroid(z_new, st["centers"])
                changed += int((lab != st["assign"][idx]).sum())
                st["centers"], st["counts"] = dcn_centroid_update(
                    st["centers"], st["counts"], z_new, lab
                )
                st["assign"][idx] = lab
            rec_sum += float(rec_l.detach().sum())
            clu_sum += float(clu_l.detach().sum())
        return {
            "reconstruction": rec_sum / n,
            "clustering": clu_sum / n,
            "total": (rec_sum + clu_sum) / n,
            "changed": changed / n,
        }

    def _load(self, path: Path | None, key: str) -> dict | None:
        if path is None or not path.is_file():
            return None
        try:
            ck = torch.load(path, map_location=self.device_, weights_only=True)
        except Exception as exc:  # a foreign or damaged file: train from scratch, keep going
            log.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
            return None
        if ck.get("key") != key:
            log.warning("ignoring checkpoint %s: it belongs to other data or parameters", path)
            return None
        log.info("resuming from %s (phase %s, epoch %d)", path, ck["phase"], ck["epoch"])
        return ck

    def _fit(self, Xn: np.ndarray) -> None:
        key = self._key(Xn)
        path = None
        if self.checkpoint_dir is not None:
            path = Path(self.checkpoint_dir) / f"dcn-{key[:20]}.pt"
        ck = self._load(path, key)
        Xt = torch.from_numpy(Xn).to(self.device_)
        model = self._new_model(Xn.shape[2] if Xn.ndim == 4 else None)
        n_pre = 0 if self.pretrained is not None else int(self.pretrain_epochs)

        def save(phase: str, epoch: int, opt, extra: dict) -> None:
            if path is None:
                return
            _atomic_save(
                {
                    "key": key,
                    "version": CHECKPOINT_VERSION,
                    "phase": phase,
                    "epoch": epoch,
                    "model": _cpu(model.state_dict()),
                    "optimizer": opt.state_dict(),
                    "pretrain_history": list(pre_hist),
                    **extra,
                },
                path,
            )

        pre_hist: list[float] = []
        phase, start = "pretrain", 0
        if ck is not None:
            model.load_state_dict(ck["model"])
            phase, start, pre_hist = ck["phase"], int(ck["epoch"]), list(ck["pretrain_history"])

        # ---- phase 1: autoencoder pretraining (reconstruction loss only)
        if phase == "pretrain":
            opt = torch.optim.Adam(model.parameters(), lr=float(self.lr))
            if ck is not None:
                opt.load_state_dict(ck["optimizer"])
            bar = tqdm(range(start, n_pre), desc="DCN pretrain", disable=not self.verbose)
            for epoch in bar:
                pre_hist.append(self._pretrain_epoch(model, opt, Xt, epoch))
                bar.set_postfix(mse=f"{pre_hist[-1]:.4f}")
                log.info("pretrain epoch %d/%d: mse %.5f", epoch + 1, n_pre, pre_hist[-1])
                save("pretrain", epoch + 1, opt, {})
            # ---- DCN initialisation: k-means on the pretrained latent codes
            pretrained_state = _cpu(model.state_dict())
            latent = encode(model, Xn)
            km = KMeans(self.n_clusters, n_init=int(self.kmeans_n_init), random_state=self.seed)
            km.fit(latent)
            init_centers = torch.from_numpy(km.cluster_centers_.astype(np.float32))
            init_labels = torch.from_numpy(km.labels_.astype(np.int64))
            if self.init_count == "kmeans":
                counts = torch.bincount(init_labels, minlength=self.n_clusters).double()
            else:
                counts = torch.full((self.n_clusters,), float(self.init_count), dtype=torch.float64)
            st = {
                "centers": init_centers.clone().to(self.device_),
                "counts": counts.to(self.device_),
                "assign": init_labels.clone().to(self.device_),
            }
            hist: dict[str, list[float]] = {
                "reconstruction": [], "clustering": [], "total": [], "changed": []
            }  # fmt: skip
            opt = torch.optim.Adam(model.parameters(), lr=float(self.lr))
            start = 0
            log.info("k-means initialisation: inertia %.4f", km.inertia_)
        else:
            pretrained_state = ck["pretrained_state"]
            init_centers, init_labels = ck["init_centers"].cpu(), ck["init_labels"].cpu()
            st = {k: ck[k] for k in ("centers", "counts", "assign")}
            hist = {k: list(v) for k, v in ck["history"].items()}
            opt = torch.optim.Adam(model.parameters(), lr=float(self.lr))
            opt.load_state_dict(ck["optimizer"])

        def cluster_extra() -> dict:
            return {
                "pretrained_state": pretrained_state,
                "init_centers": init_centers,
                "init_labels": init_labels,
                "history": hist,
                **{k: v.detach().cpu().clone() for k, v in st.items()},
            }

        if phase == "pretrain":
            save("cluster", 0, opt, cluster_extra())

        # ---- phase 2: joint training (Algorithm 1 of Yang et al.)
        bar = tqdm(range(start, int(self.epochs)), desc="DCN train", disable=not self.verbose)
        for epoch in bar:
            rec = self._cluster_epoch(model, opt, Xt, st, epoch)
            for k, v in rec.items():
                hist[k].append(v)
            bar.set_postfix(rec=f"{rec['reconstruction']:.4f}", clu=f"{rec['clustering']:.4f}")
            log.info(
                "DCN epoch %d/%d: reconstruction %.5f, clustering %.5f, changed %.4f",
                epoch + 1, self.epochs, rec["reconstruction"], rec["clustering"], rec["changed"],
            )  # fmt: skip
            save("cluster", epoch + 1, opt, cluster_extra())

        # ---- fitted attributes
        model.eval()
        self.autoencoder_ = model
        pre = copy.deepcopy(model)
        pre.load_state_dict(pretrained_state)
        self.pretrained_autoencoder_ = pre.eval()
        self.pretrain_history_ = pre_hist
        self.history_ = hist
        self.init_centers_ = init_centers.numpy().astype(np.float32)
        self.init_labels_ = init_labels.numpy().astype(np.int64)
        self.cluster_centers_ = st["centers"].detach().cpu().numpy().astype(np.float32)
        self.counts_ = st["counts"].detach().cpu().numpy().astype(np.float64)
        self.labels_ = self.nearest(encode(model, Xn), self.cluster_centers_)
