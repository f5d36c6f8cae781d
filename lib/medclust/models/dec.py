"""DEC and DCEC clustering heads on the pretrained CAE of Quarenghi's thesis (IDEC is DCEC
with ``gamma = 0.1``).

Both share the clustering layer and the self-training loop of DEC (Xie, Girshick and
Farhadi, "Unsupervised Deep Embedding for Clustering Analysis", ICML 2016, Sec. 3.1), as the
thesis describes it in Sec. 2.2-2.3, with the soft assignment ``q_ij`` (Student's t kernel,
DEC Eq. 1), the target distribution ``p_ij`` (DEC Eq. 3) and the clustering loss
``L_c = KL(P || Q)`` (DEC Eq. 2) of :mod:`medclust.models.dec_equations`.

Training (thesis Sec. 2.2 "Initialization and optimization" and 2.3.3; DCEC's ``fit``):

1. take a pretrained autoencoder (pretraining = ``gamma = 0``): the thesis'
   :class:`~medclust.models.cae.CAE` by default, or any module with ``encode`` / ``decode``
   (:mod:`medclust.models.autoencoders`);
2. k-means (``n_init = 20``, DEC Sec. 3.2 / the reference code) on the embeddings of all
   training images gives the initial centres ``mu_j`` and labels (the "k-means + CAE" row of
   Tables 3.4 and 3.6, kept as ``init_labels_``);
3. every T optimiser iterations (``update_epochs`` of an epoch), ``Q`` is computed on the
   *whole* training set, ``P`` is recomputed from it and held fixed until the next update; the
   labels ``argmax_j q_ij`` are compared with those of the previous update (the k-means labels
   at the first) and training stops once the fraction that changed is below ``tol`` (DEC Sec.
   3, thesis Sec. 2.2/2.3.3), or after ``max_epochs`` epochs. Both are in epochs so that they
   mean the same on any cohort size; the references' iteration counts (T = 140, 2e4 at batch
   256 on MNIST's 70,000 images) are 0.5 and 73 epochs;
4. between updates, Adam (thesis Sec. 2.2 and 2.3.3) steps on minibatches of the loss, jointly
   on the network weights and the centres ``mu_j`` (the clustering layer's weights).

The heads differ in the loss only:

* :class:`DEC` discards the decoder; ``L = L_c`` (thesis Sec. 2.2, Table 3.3).
* :class:`DCEC` keeps the decoder; ``L = L_r + gamma L_c`` with ``L_r`` the per-pixel MSE of the
  reconstruction (Guo, Liu, Zhu and Yin, "Deep Clustering with Convolutional Autoencoders",
  ICONIP 2017; thesis Eq. 2.6) and ``gamma = 0.01`` (thesis Sec. 2.3.3; Guo et al. use 0.1).
* IDEC (Guo, Gao, Liu and Yin, "Improved Deep Embedded Clustering with Local Structure
  Preservation", IJCAI 2017) is the same objective as DCEC -- DCEC *is* IDEC with a
  convolutional autoencoder. On the thesis' CAE the *only* difference is ``gamma = 0.1``
  (IDEC's and DCEC's published value) instead of the thesis' 0.01, so IDEC is
  ``DCEC(gamma=0.1)``: a parameter value, not a separate algorithm or class.

Deviation from the reference code: it cycles through the training set in its stored order; here
every pass over the data uses a fresh permutation (from ``(seed, pass)``), because a data set
stored class by class (as the thesis' CT / MRI / PET folders may be) would otherwise give
single-class minibatches.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
import torch
from sklearn.base import ClusterMixin, TransformerMixin, clone
from sklearn.cluster import KMeans
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm.auto import tqdm

from medclust.models.autoencoders import (
    check_autoencoder,
    encode,
    epoch_order,
    network_input,
    reconstruction_mse,
)
from medclust.models.base import BASE_CONSTRAINTS
from medclust.models.cae import CAE, CAEEmbedding, CAEInference, as_images
from medclust.models.common import INFER_BATCH, torch_numerics
from medclust.models.dec_equations import (
    joint_loss,
    kl_divergence,
    log_soft_assignment,
    soft_assignment,
    target_distribution,
)
from medclust.validation import Int, Real

__all__ = ["DCEC", "DEC", "joint_loss", "kl_divergence", "soft_assignment", "target_distribution"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- shared estimator


class _KLClustering(ClusterMixin, TransformerMixin, CAEInference):
    """The loop shared by :class:`DEC` and :class:`DCEC` (see module docstring).

    Subclasses set ``_keep_decoder`` and ``_name`` and, when they keep the decoder, a
    ``gamma`` parameter.
    """

    _keep_decoder = False
    _name = "DEC"
    _constraints = {
        **BASE_CONSTRAINTS,
        "n_clusters": Int(1),
        "update_epochs": Real(0, low_open=True),
        "tol": Real(0, 1),
        "max_epochs": Real(0),
        "batch_size": Int(1),
        "lr": Real(0, low_open=True),
        "alpha": Real(0, low_open=True),
        "kmeans_n_init": Int(1),
    }

    def __init__(
        self,
        *,
        n_clusters: int = 3,
        pretrained: nn.Module | CAEEmbedding | None = None,
        update_epochs: float = 0.5,
        tol: float = 1e-3,
        max_epochs: float = 73.0,
        batch_size: int = 256,
        lr: float = 1e-3,
        alpha: float = 1.0,
        kmeans_n_init: int = 20,
        seed: int = 0,
        device: str = "cpu",
        verbose: bool = False,
    ) -> None:
        self.n_clusters = n_clusters
        self.pretrained = pretrained
        self.update_epochs = update_epochs
        self.tol = tol
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.alpha = alpha
        self.kmeans_n_init = kmeans_n_init
        self.seed = seed
        self.device = device
        self.verbose = verbose

    # ----------------------------------------------------------------- public API

    def fit(self, X: Any, y: Any = None) -> _KLClustering:
        """Pretrain if needed, initialise by k-means, then self-train until ``tol`` or
        ``max_epochs``. ``y`` is ignored."""
        self._validate_params()
        Xn = self._input(X)
        self._select_device()
        with torch_numerics():
            self._fit(Xn)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Cluster labels ``argmax_j q_ij`` (int64)."""
        return self.predict_proba(X).argmax(1).astype(np.int64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Soft assignments ``q`` (DEC Eq. 1), ``(n, n_clusters)`` float32."""
        check_is_fitted(self, "autoencoder_")
        return self._soft(self.transform(X))

    def transform(self, X: Any) -> np.ndarray:
        """Embeddings of the fine-tuned encoder, ``(n, embedding_dim)`` float32."""
        check_is_fitted(self, "autoencoder_")
        return encode(self.autoencoder_, self._input(X))

    def pretrained_embedding(self, X: Any) -> np.ndarray:
        """Embeddings of the autoencoder as it was before clustering (the "k-means + CAE"
        features; label them with ``KMeans``-style nearest ``init_centers_``)."""
        check_is_fitted(self, "pretrained_model_")
        return encode(self.pretrained_model_, self._input(X))

    def kl_divergence(self, X: Any) -> float:
        """``KL(P || Q)`` on ``X``, ``P`` the target distribution of ``X``'s own ``Q`` (the
        "KL div" of Tables 3.5-3.6 when ``X`` is the training set; ``kl_`` holds that value)."""
        q = self.predict_proba(X).astype(np.float64)
        return kl_divergence(target_distribution(q), q)

    # ----------------------------------------------------------------- internals

    def _input(self, X: Any) -> np.ndarray:
        """``X`` checked as the network's input (the CAE's when it pretrains one here)."""
        net = getattr(self, "autoencoder_", self.pretrained)
        if net is None or isinstance(net, CAEEmbedding):
            return as_images(X)
        return network_input(net, X)

    def _soft(self, Z: np.ndarray) -> np.ndarray:
        c = torch.from_numpy(np.ascontiguousarray(self.cluster_centers_, dtype=np.float32))
        return self._batched(
            lambda z: log_soft_assignment(z, c, float(self.alpha)).exp(),
            np.asarray(Z, dtype=np.float32),
            device=torch.device("cpu"),
        )

    def _autoencoder(self, Xn: np.ndarray) -> tuple[nn.Module, dict | None]:
        """A fresh copy of the pretrained autoencoder (pretrained here when needed) and its
        pretraining history, if known."""
        p = self.pretrained
        if isinstance(p, CAEEmbedding) and hasattr(p, "model_"):
            net, hist = p.model_, p.history_
        elif p is None or isinstance(p, CAEEmbedding):  # pretrain here, on the same data
            est = CAEEmbedding(seed=self.seed, device=self.device) if p is None else clone(p)
            if p is None:
                est.set_params(batch_size=self.batch_size, lr=self.lr, verbose=self.verbose)
            log.info("%s: pretraining %r", self._name, est)
            est.fit(Xn)
            net, hist = est.model_, est.history_
        else:
            net, hist = check_autoencoder(p), None
        if isinstance(net, CAE) and net.in_px != Xn.shape[2]:
            raise ValueError(f"pretrained CAE takes {net.in_px} px images, X has {Xn.shape[2]}")
        if len(Xn) < self.n_clusters:
            raise ValueError(f"{len(Xn)} samples cannot form n_clusters={self.n_clusters} clusters")
        return copy.deepcopy(net).to(self.device_), hist

    def _forward(self, net: nn.Module, xb: torch.Tensor):
        """Embedding and, with a decoder, the reconstruction (shaped like ``xb``)."""
        z = net.encode(xb)
        return z, (net.decode(z).reshape(xb.shape) if self._keep_decoder else None)

    def _full_pass(self, net: nn.Module, centers: torch.Tensor, Xt: torch.Tensor):
        """``q`` on the whole set and, with a decoder, the summed squared reconstruction error."""
        net.eval()
        qs, sse = [], 0.0
        with torch.no_grad():
            for a in range(0, len(Xt), INFER_BATCH):
                xb = Xt[a : a + INFER_BATCH]
                z, rec = self._forward(net, xb)
                if rec is not None:
                    sse += float(((rec.double() - xb.double()) ** 2).sum())
                qs.append(log_soft_assignment(z, centers, float(self.alpha)).exp())
        net.train()
        return torch.cat(qs), sse

    def _loss(self, net: nn.Module, xb: torch.Tensor, pb: torch.Tensor, centers: torch.Tensor):
        z, rec = self._forward(net, xb)
        q = log_soft_assignment(z, centers, float(self.alpha)).exp()
        if rec is not None:
            return joint_loss(xb, rec, pb, q, float(self.gamma))[0]
        return kl_divergence(pb, q)

    def _schedule(self, n: int) -> tuple[int, int, int]:
        """Iterations per epoch, between target updates (T) and at most, for ``n`` samples."""
        per_epoch = math.ceil(n / int(self.batch_size))
        T = max(1, round(float(self.update_epochs) * per_epoch))
        return per_epoch, T, math.ceil(float(self.max_epochs) * per_epoch)

    def _fit(self, Xn: np.ndarray) -> None:
        net, pre_hist = self._autoencoder(Xn)
        self.pretrained_model_ = copy.deepcopy(net).eval()
        self.pretrain_history_ = pre_hist
        n, bs = len(Xn), int(self.batch_size)
        per_epoch, T, max_iter = self._schedule(n)
        self.update_interval_, self.max_iter_ = T, max_iter

        # ---- initialisation: k-means on the pretrained embedding (DEC Sec. 3.2)
        Z0 = encode(net, Xn)
        km = KMeans(int(self.n_clusters), n_init=int(self.kmeans_n_init), random_state=self.seed)
        km.fit(Z0)
        self.init_labels_ = km.labels_.astype(np.int64)
        self.init_centers_ = km.cluster_centers_.astype(np.float32)
        self.init_inertia_ = float(km.inertia_)
        log.info("%s: k-means initialisation, inertia %.5g; T = %d of %d iterations per epoch",
                 self._name, km.inertia_, T, per_epoch)  # fmt: skip

        net.train()
        centers = nn.Parameter(torch.from_numpy(self.init_centers_.copy()).to(self.device_))
        # DEC: the decoder gets no gradient, so Adam leaves it as it is (the thesis drops it)
        opt = torch.optim.Adam([*net.parameters(), centers], lr=float(self.lr))
        Xt = torch.from_numpy(Xn).to(self.device_)

        hist: dict[str, list[float]] = {"iteration": [], "changed": [], "kl": [], "loss": []}
        if self._keep_decoder:
            hist["reconstruction"] = []
        last = torch.from_numpy(self.init_labels_).to(self.device_)
        order = torch.empty(0, dtype=torch.long)
        n_pass = pos = 0
        loss_sum, loss_n = 0.0, 0
        converged = False
        P = None
        it = 0
        bar = tqdm(total=max_iter, desc=self._name, disable=not self.verbose)
        while True:
            if it % T == 0 or it >= max_iter:
                # ---- target update on the whole training set (DEC Sec. 3.1, thesis Sec. 2.3.3)
                q, sse = self._full_pass(net, centers.detach(), Xt)
                P = target_distribution(q)
                labels = q.argmax(1)
                changed = float((labels != last).double().mean())
                last = labels
                hist["iteration"].append(it)
                hist["changed"].append(changed)
                hist["kl"].append(float(kl_divergence(P.double(), q.double())))
                hist["loss"].append(loss_sum / loss_n if loss_n else float("nan"))
                if self._keep_decoder:
                    hist["reconstruction"].append(sse / Xn.size)
                loss_sum, loss_n = 0.0, 0
                bar.set_postfix(kl=f"{hist['kl'][-1]:.4f}", changed=f"{changed:.4f}")
                log.info(
                    "%s iter %d: KL %.5f, changed %.4f%s", self._name, it, hist["kl"][-1],
                    changed, f", mse {hist['reconstruction'][-1]:.6f}" if self._keep_decoder else "",
                )  # fmt: skip
                if it > 0 and changed < float(self.tol):
                    converged = True
                    log.info("%s: %.4f < tol %g changed at iteration %d", self._name, changed,
                             self.tol, it)  # fmt: skip
                    break
                if it >= max_iter:
                    break
            # ---- one Adam step on a minibatch, P fixed
            if pos >= len(order):
                order = torch.from_numpy(epoch_order(self.seed, 1, n_pass, n)).to(self.device_)
                n_pass, pos = n_pass + 1, 0
            idx = order[pos : pos + bs]
            pos += bs
            loss = self._loss(net, Xt[idx], P[idx], centers)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            loss_n += len(idx)
            it += 1
            bar.update(1)
        bar.close()

        # ---- fitted attributes
        self.autoencoder_ = net.eval()
        self.cluster_centers_ = centers.detach().cpu().numpy().astype(np.float32)
        self.labels_ = last.cpu().numpy().astype(np.int64)
        self.history_ = hist
        self.n_iter_ = it
        self.n_epochs_ = it / per_epoch
        self.converged_ = converged
        self.kl_ = hist["kl"][-1]
        if not converged:
            log.warning("%s stopped at max_epochs=%g (%d iterations) before reaching tol",
                        self._name, self.max_epochs, max_iter)  # fmt: skip


# --------------------------------------------------------------------------- the heads


class DEC(_KLClustering):
    """Deep Embedded Clustering (Xie et al. 2016) on the thesis' CAE (thesis Sec. 2.2, Table 3.3).

    The decoder is discarded; the encoder and the clustering layer (the centres ``mu_j``) are
    fine-tuned on ``KL(P || Q)`` alone. See the module docstring for the loop.

    Parameters
    ----------
    n_clusters : int, default 3
        CT / MRI / PET (thesis Sec. 3.1).
    pretrained : nn.Module, CAEEmbedding or None
        The pretrained autoencoder: any ``nn.Module`` with ``encode(x)`` and ``decode(z)``
        (:class:`CAE`, e.g. ``CAEEmbedding.model_``, the cDCN's ``ConvAutoencoder``,
        :class:`~medclust.models.autoencoders.MLPAutoencoder`, a user's network) or a fitted
        :class:`CAEEmbedding`, deep-copied and left untouched; an unfitted
        :class:`CAEEmbedding` is cloned and fitted on ``X``; ``None`` pretrains
        ``CAEEmbedding(seed=seed, batch_size=batch_size, lr=lr)`` (embedding dimension 3) on
        ``X``. Inputs go through ``as_images`` for the CAE, as any float array otherwise.
        Note that ``sklearn.base.clone`` turns a fitted :class:`CAEEmbedding` into an unfitted
        one (so the clone pretrains again); pass the module to share one pretrained network
        between clones.
    update_epochs : float, default 0.5
        Epochs between target updates (T = ``round(update_epochs * ceil(n / batch_size))``
        iterations, at least 1; ``update_interval_``). The thesis uses "every T iterations"
        without a value; DCEC's and IDEC's T = 140 iterations at batch 256 on MNIST's 70,000
        images is 0.51 epochs.
    tol : float, default 0.001
        Stop when fewer than this fraction of labels change between two target updates
        (thesis Sec. 2.2 "tol%" without a value; 0.1 % is the value of DEC's and DCEC's
        experiments and ``tol=0.001`` in DCEC's and IDEC's reference code).
    max_epochs : float, default 73
        Cap in epochs (``max_iter_`` iterations): DCEC's and IDEC's ``maxiter=2e4`` at batch
        256 on 70,000 images is 73 epochs.
    batch_size : int, default 256
        Not in the thesis; DEC's and DCEC's.
    lr : float, default 0.001
        Adam learning rate (thesis Sec. 2.2: Adam, no rate; 0.001 is DCEC's, Adam with
        Keras' default parameters).
    alpha : float, default 1.0
        Degrees of freedom of the Student's t kernel (thesis Sec. 2.2, DEC Eq. 1).
    kmeans_n_init : int, default 20
        k-means restarts of the initialisation (DEC Sec. 3.2 and the reference code).
    seed : int, default 0
        Seeds k-means, the per-pass minibatch order (``default_rng([seed, 1, pass])``) and,
        when pretraining here, the CAE.
    device : str, default "cpu"
        "cpu", "cuda[:N]" or "auto". Repeat fits are bit-identical on the CPU with a fixed
        number of torch threads (deterministic kernels, denormals flushed; restored after).
    verbose : bool, default False
        tqdm progress bar; every target update is logged at INFO either way.

    Attributes
    ----------
    labels_ : (n,) int64 -- ``argmax_j q_ij`` of the training images at the last target update.
    cluster_centers_ : (n_clusters, embedding_dim) float32 -- the centres ``mu_j``.
    init_labels_, init_centers_, init_inertia_ -- k-means on the pretrained embedding: the
        "k-means + CAE" baseline of Tables 3.4 and 3.6.
    history_ : dict of lists, one entry per target update (the first at iteration 0, the last
        at the stop): ``iteration``; ``changed`` (fraction of labels that changed since the
        previous update, the k-means labels for the first); ``kl`` (``KL(P || Q)`` on the whole
        training set with the freshly computed ``P``); ``loss`` (mean minibatch loss of the
        iterations since the previous update, NaN for the first); for DCEC also
        ``reconstruction`` (per-pixel MSE on the whole training set).
    kl_ : float -- ``history_["kl"][-1]``, the "KL div" of Tables 3.5-3.6.
    n_iter_ : int -- optimiser iterations run; ``n_epochs_`` the same in epochs.
    update_interval_, max_iter_ : int -- T and the cap in iterations for the fitted data.
    converged_ : bool -- whether the ``tol`` criterion stopped training (else ``max_epochs``).
    autoencoder_ : nn.Module -- the fine-tuned network (DEC: its decoder is not trained).
    pretrained_model_ : nn.Module -- a copy of the network before clustering.
    pretrain_history_ : dict or None -- ``CAEEmbedding.history_`` of the pretraining, if known.
    device_ : torch.device
    """

    _keep_decoder = False
    _name = "DEC"


class DCEC(_KLClustering):
    """Deep Convolutional Embedded Clustering (Guo et al., ICONIP 2017; thesis Sec. 2.3).

    Keeps the decoder and minimises ``L = L_r + gamma L_c`` (:func:`joint_loss`) over the
    encoder, decoder and centres, with the update schedule and stopping rule of :class:`DEC`.

    Parameters
    ----------
    gamma : float, default 0.01
        Weight of the clustering loss: 0.01 is the thesis' (Sec. 2.3.3); Guo et al. use 0.1
        in both DCEC and IDEC (Guo, Gao, Liu and Yin, IJCAI 2017), so ``DCEC(gamma=0.1)`` is
        IDEC on the thesis' CAE (same objective, schedule and stopping rule).
    others
        As :class:`DEC` (same defaults and sources).

    Attributes
    ----------
    As :class:`DEC` (``autoencoder_`` with a fine-tuned decoder), plus
    ``history_["reconstruction"]`` and ``reconstruction_mse_`` (per-pixel MSE on the training
    set at the stop, the "MSE error" of Tables 3.5-3.6).
    """

    _keep_decoder = True
    _name = "DCEC"
    _constraints = {**_KLClustering._constraints, "gamma": Real(0)}

    def __init__(
        self,
        *,
        n_clusters: int = 3,
        pretrained: nn.Module | CAEEmbedding | None = None,
        gamma: float = 0.01,
        update_epochs: float = 0.5,
        tol: float = 1e-3,
        max_epochs: float = 73.0,
        batch_size: int = 256,
        lr: float = 1e-3,
        alpha: float = 1.0,
        kmeans_n_init: int = 20,
        seed: int = 0,
        device: str = "cpu",
        verbose: bool = False,
    ) -> None:
        super().__init__(
            n_clusters=n_clusters, pretrained=pretrained, update_epochs=update_epochs,
            tol=tol, max_epochs=max_epochs, batch_size=batch_size, lr=lr, alpha=alpha,
            kmeans_n_init=kmeans_n_init, seed=seed, device=device, verbose=verbose,
        )  # fmt: skip
        self.gamma = gamma

    @property
    def reconstruction_mse_(self) -> float:
        check_is_fitted(self, "autoencoder_")
        return self.history_["reconstruction"][-1]

    def reconstruct(self, X: Any) -> np.ndarray:
        """Reconstructions by the fine-tuned CAE, shaped like ``X`` (Fig. 3.8)."""
        check_is_fitted(self, "autoencoder_")
        return self._reconstruct_like(self.autoencoder_, X)

    def reconstruction_mse(self, X: Any) -> float:
        """Per-pixel MSE of the fine-tuned CAE on ``X`` (the "MSE error" of Table 3.5)."""
        check_is_fitted(self, "autoencoder_")
        return reconstruction_mse(self.autoencoder_, self._input(X))
