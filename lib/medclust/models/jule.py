"""JULE with a 3D CNN: joint unsupervised learning of patch representations and clusters.

Moriya et al. (SPIE 2018) extend JULE (Yang, Parikh and Batra, "Joint Unsupervised Learning of
Deep Representations and Image Clusters", CVPR 2016) to 3D patches. JULE is a recurrent process
(paper Sec. 2.1, Fig. 1): the *forward pass* merges clusters by agglomerative clustering on the
current CNN features, the *backward pass* trains the CNN with the current cluster labels as
supervision, until ``C`` clusters remain. Moriya et al. add one more backward pass on the final
labels (Sec. 2.2, ``final_backward``).

Pieces, with the defaults of JULE's paper and official Torch code (``train.lua``):

* **Network** (Moriya Sec. 2.4, Fig. 2), :class:`JULENet`: three 5x5x5 conv layers of 50 kernels,
  stride 1, batch norm + ReLU after each, 2x2x2 max pooling after the first, FC 1350, FC 160,
  L2 normalisation. On 27^3 patches the convolutions leave 50 x 3^3 = 1350 values. For smaller
  demo patches ``deep_padding = 2`` pads the 2nd and 3rd convolutions ("same"), e.g. 11^3 patches
  also end at 50 x 3^3. Weights ~ N(0, 0.01), biases 0 (``NetInit`` of the reference code).
* **Sample affinity** (JULE Sec. 3.3): K_s-nearest-neighbour graph (``k_s = 20``) on the
  L2-normalised features, ``W_ij = exp(-||x_i - x_j||^2 / sigma^2)`` with ``sigma^2`` the mean
  squared distance to the K_s neighbours; sparse, so memory is O(n K_s).
* **Initial clusters**: every sample joins its nearest neighbour (connected components of the
  1-NN graph), computed on the raw patch intensities as the reference code does at step 0.
* **Cluster affinity**: graph degree linkage (Zhang et al. ECCV 2012, JULE Eq. 5),
  ``A(C_i, C_j) = 1/|C_i|^2 1^T W_ij W_ji 1 + 1/|C_j|^2 1^T W_ji W_ij 1``.
* **Merging criterion** (JULE Eq. 6-7): merge ``C_i`` with its most affine neighbour ``N^1``,
  choosing the ``i`` that maximises ``A(C_i, N^1) + lam / (K_c - 1) sum_k=2..K_c (A(C_i, N^1) -
  A(C_i, N^k))`` (``k_c = 5``, ``lam = 1``; the local-structure term only while more than
  ``K_c`` clusters exist). One merge is one timestep.
* **Unfolding schedule** (JULE.torch ``train.lua``): a partially unrolled period trains the CNN
  ``epoch_pp`` epochs on the current labels, then merges ``ceil(eta * n_clusters)`` clusters,
  capped so that exactly ``n_clusters`` remain (``updateLabels``, lines 213-219; the merge
  every ``epoch_pp`` epochs, lines 480-481). ``eta = 0.2`` is the code's default (line 28,
  "0.2 or 0.9, as described in the paper"; its README keeps 0.9 "to save training time"):
  each period removes a fifth of the clusters, e.g. 179 -> 143 -> ... -> 20 in ten periods.
  The features for merging come from the network in training mode, in minibatches of
  ``batch_size`` (``extFeature`` right after ``updateCNN`` set ``training()``, line 405):
  batch statistics, as the reference, over a random order of the patches (the order of
  randomly cropped patches); :meth:`JULE.transform` uses the running statistics
  (``evaluate()``, line 451, precedes the reference's final feature extraction).
* **Backward pass** (JULE Eq. 10): weighted triplet loss ``max(0, gamma ||a - p||^2 -
  ||a - n||^2 + margin)`` over all same-cluster pairs ``(a, p)`` of a minibatch, each with
  ``n_negatives = 20`` random negatives from other clusters of the batch (``gamma = 1``,
  ``margin = 0.2``); SGD, batch 100, lr 0.01 with the "inv" policy ``lr (1 + 1e-4 it)^-0.75``,
  momentum 0.9, weight decay 5e-5; ``epochs_per_period = 20`` epochs per period (``epoch_pp``,
  line 40).

Inputs are cubes ``(n, w, w, w)``; :meth:`JULE.fit` centralises them with the mean and standard
deviation of all training patches (Moriya Sec. 2.3) and :meth:`JULE.transform` reuses those.
The forward pass (affinities, initial clusters, merging) lives in
:mod:`medclust.models.jule_agglomerative`; its names are importable from here too.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any

import numpy as np
import torch
from sklearn.base import ClusterMixin, TransformerMixin
from torch import nn
from tqdm.auto import tqdm

from medclust.models.base import BASE_CONSTRAINTS, TorchEstimator
from medclust.models.common import torch_numerics
from medclust.models.jule_agglomerative import GDLMerger, initial_clusters, knn_affinity
from medclust.validation import Int, Options, Real

log = logging.getLogger(__name__)

#: Patches per forward pass in :meth:`JULE.transform`.
JULE_INFER_BATCH = 512


# --------------------------------------------------------------------------- network


def _conv_out(n: int, kernel: int, padding: int) -> int:
    return n + 2 * padding - kernel + 1


class JULENet(nn.Module):
    """The 3D CNN of Moriya et al. Fig. 2 (see module docstring)."""

    def __init__(
        self,
        patch_size: int = 27,
        n_kernels: int = 50,
        fc_units: int = 1350,
        embed_dim: int = 160,
        deep_padding: int = 0,
    ):
        super().__init__()
        side = _conv_out(patch_size, 5, 0) // 2
        side = _conv_out(_conv_out(side, 5, deep_padding), 5, deep_padding)
        if side < 1:
            raise ValueError(
                f"patch_size {patch_size} is too small for three 5x5x5 convolutions and a "
                f"2x2x2 pooling with deep_padding={deep_padding} (27 without padding, 11 with 2)"
            )

        def block(cin: int, pad: int) -> list[nn.Module]:
            return [
                nn.Conv3d(cin, n_kernels, 5, padding=pad),
                nn.BatchNorm3d(n_kernels),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(1, 0),
            nn.MaxPool3d(2, 2),
            *block(n_kernels, deep_padding),
            *block(n_kernels, deep_padding),
        )
        self.flat_dim = n_kernels * side**3
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.flat_dim, fc_units),
            nn.ReLU(inplace=True),
            nn.Linear(fc_units, embed_dim),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv3d | nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x[:, None]
        return nn.functional.normalize(self.head(self.features(x)), dim=1)


# --------------------------------------------------------------------------- loss


def triplet_loss(
    emb: torch.Tensor,
    labels: torch.Tensor,
    n_negatives: int = 20,
    margin: float = 0.2,
    gamma: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """JULE's weighted triplet loss on a minibatch (JULE Eq. 10, ``TripletEmbeddingCriterion``
    of the reference code): every same-cluster pair ``(a, p)``, ``a < p``, with up to
    ``n_negatives`` random samples of other clusters as negatives,
    ``mean(max(0, gamma ||a - p||^2 - ||a - n||^2 + margin))``. Returns 0 (with a graph) when the
    batch has no pair or no negative."""
    d2 = torch.cdist(emb, emb).pow(2)
    same = labels[:, None] == labels[None, :]
    a_idx, p_idx = torch.triu_indices(len(labels), len(labels), 1, device=emb.device)
    pos = same[a_idx, p_idx]
    a_idx, p_idx = a_idx[pos], p_idx[pos]
    if len(a_idx) == 0:
        return emb.sum() * 0.0
    neg_ok = ~same[a_idx]  # (pairs, B)
    noise = torch.rand(neg_ok.shape, generator=generator, device="cpu").to(emb.device)
    k = min(int(n_negatives), neg_ok.shape[1])
    score = torch.where(neg_ok, noise, torch.full_like(noise, -1.0))
    top, n_idx = torch.topk(score, k, dim=1)
    valid = top >= 0
    if not bool(valid.any()):
        return emb.sum() * 0.0
    d_pos = d2[a_idx, p_idx][:, None].expand_as(n_idx)
    d_neg = d2[a_idx[:, None].expand_as(n_idx), n_idx]
    hinge = torch.relu(gamma * d_pos - d_neg + margin)
    return hinge[valid].mean()


# --------------------------------------------------------------------------- estimator


class JULE(ClusterMixin, TransformerMixin, TorchEstimator):
    """JULE recurrent clustering + 3D CNN training on cubic patches (module docstring).

    ``fit(X)`` with ``X`` ``(n, w, w, w)``. Fitted: ``labels_`` (the final agglomerative
    clusters, ``n_clusters`` of them), ``network_``, ``initial_network_`` (the untrained
    weights), ``mean_``/``std_`` (patch centralisation), ``n_initial_clusters_``,
    ``n_timesteps_`` (merges), ``n_periods_`` (partially unrolled periods), ``history_`` (per
    period: clusters before/after, mean triplet loss of its backward pass, ``labels`` of the
    training patches after its forward pass). ``transform`` gives the L2-normalised
    ``embed_dim``-d features.

    ``epochs_per_period`` is JULE's ``epoch_pp``: the epochs of one backward pass, not of the
    whole fit (the number of periods follows from ``eta`` and the initial clusters). The
    network's initial weights come from torch's RNG seeded with ``seed`` inside the fit (the
    caller's RNG state is left as it was), the minibatch order and triplet negatives from a
    ``torch.Generator`` seeded with ``seed``. ``verbose`` shows a progress bar over the periods.
    """

    _constraints = {
        **BASE_CONSTRAINTS,
        "n_clusters": Int(1),
        "eta": Real(0.0, 1.0, low_open=True),
        "k_s": Int(1),
        "k_c": Int(1),
        "lam": Real(0.0),
        "epochs_per_period": Int(0),
        "batch_size": Int(2),
        "lr": Real(0.0),
        "lr_gamma": Real(0.0),
        "lr_power": Real(0.0),
        "momentum": Real(0.0, 1.0),
        "weight_decay": Real(0.0),
        "margin": Real(0.0),
        "gamma": Real(0.0),
        "n_negatives": Int(1),
        "final_backward": Options(bool),
        "n_kernels": Int(1),
        "fc_units": Int(1),
        "embed_dim": Int(1),
        "deep_padding": Int(0),
    }

    def __init__(
        self,
        *,
        n_clusters: int = 100,
        eta: float = 0.2,
        k_s: int = 20,
        k_c: int = 5,
        lam: float = 1.0,
        epochs_per_period: int = 20,
        batch_size: int = 100,
        lr: float = 0.01,
        lr_gamma: float = 1e-4,
        lr_power: float = 0.75,
        momentum: float = 0.9,
        weight_decay: float = 5e-5,
        margin: float = 0.2,
        gamma: float = 1.0,
        n_negatives: int = 20,
        final_backward: bool = True,
        n_kernels: int = 50,
        fc_units: int = 1350,
        embed_dim: int = 160,
        deep_padding: int = 0,
        seed: int = 0,
        device: str = "auto",
        verbose: bool = True,
    ):
        self.n_clusters = n_clusters
        self.eta = eta
        self.k_s = k_s
        self.k_c = k_c
        self.lam = lam
        self.epochs_per_period = epochs_per_period
        self.batch_size = batch_size
        self.lr = lr
        self.lr_gamma = lr_gamma
        self.lr_power = lr_power
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.margin = margin
        self.gamma = gamma
        self.n_negatives = n_negatives
        self.final_backward = final_backward
        self.n_kernels = n_kernels
        self.fc_units = fc_units
        self.embed_dim = embed_dim
        self.deep_padding = deep_padding
        self.seed = seed
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers

    def _check_cubes(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 4 or not (X.shape[1] == X.shape[2] == X.shape[3]):
            raise ValueError(f"X must be cubic patches (n, w, w, w), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values")
        if len(X) <= self.n_clusters:
            raise ValueError(
                f"n_clusters={self.n_clusters} needs more than {self.n_clusters} patches, "
                f"got {len(X)}"
            )
        return X

    def _net(self, w: int) -> JULENet:
        return JULENet(w, self.n_kernels, self.fc_units, self.embed_dim, self.deep_padding)

    def _embed(self, net: nn.Module, Xn: np.ndarray, order: torch.Tensor | None = None):
        """Features of ``Xn`` ``(n, d)`` float64: with the running statistics of batch norm, or,
        given a permutation ``order`` (the merging step of :meth:`fit`), in training mode over
        minibatches of ``batch_size`` taken in that order. The reference takes its dataset's
        order; random patches are in random order, whereas ours are sorted by position, and
        batches of neighbouring patches would normalise their shared intensity away."""
        if order is None:
            net.eval()
            return self._batched(net, Xn, batch=JULE_INFER_BATCH).astype(np.float64)
        net.train()
        idx = order.numpy()
        feats = np.empty((len(Xn), self.embed_dim))
        feats[idx] = self._batched(net, Xn[idx], batch=self.batch_size)
        return feats

    def _train_period(self, net, opt, Xn, labels, gen, n_epochs) -> float:
        """``n_epochs`` of triplet-loss SGD with the current labels (one backward pass)."""
        net.train()
        y_all = torch.from_numpy(labels)
        losses = []
        for _ in range(n_epochs):
            order = torch.randperm(len(Xn), generator=gen)
            for start in range(0, len(Xn), self.batch_size):
                idx = order[start : start + self.batch_size]
                if len(idx) < 2:
                    continue
                lr = self.lr * (1 + self.lr_gamma * self.iter_) ** (-self.lr_power)
                for group in opt.param_groups:
                    group["lr"] = lr
                xb = torch.from_numpy(Xn[idx.numpy()]).to(self.device_)
                emb = net(xb)
                loss = triplet_loss(
                    emb,
                    y_all[idx].to(self.device_),
                    self.n_negatives,
                    self.margin,
                    self.gamma,
                    generator=gen,
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self.iter_ += 1
                losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else float("nan")

    # ------------------------------------------------------------------ API

    def fit(self, X: Any, y: Any = None) -> JULE:
        self._validate_params()
        X = self._check_cubes(X)
        self._select_device()
        started = time.perf_counter()
        self.mean_ = float(X.mean())
        self.std_ = float(X.std()) or 1.0
        Xn = (X - self.mean_) / self.std_
        with self._seeded(), torch_numerics():
            gen = torch.Generator().manual_seed(int(self.seed))
            net = self._net(X.shape[1]).to(self.device_)
            # the untrained network, kept for the updateCNN = 0 control, its batch-norm
            # statistics those of the training patches (fresh layers hold mean 0 / var 1)
            initial = self._calibrated(copy.deepcopy(net), Xn)
            opt = torch.optim.SGD(
                net.parameters(),
                lr=self.lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
            )
            self.iter_ = 0
            # step 0: initial clusters on the raw (L2-normalised) patches, as the reference code
            flat = Xn.reshape(len(Xn), -1).astype(np.float64)
            flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
            _, neighbours = knn_affinity(flat, self.k_s)
            labels = initial_clusters(neighbours)
            self.n_initial_clusters_ = int(labels.max()) + 1
            log.info("JULE: %d patches, %d initial clusters", len(X), self.n_initial_clusters_)
            history, timesteps = [], 0
            bar = tqdm(desc="JULE periods", disable=not self.verbose, unit="period", leave=False)
            n_now = self.n_initial_clusters_
            while n_now > self.n_clusters:
                loss = self._train_period(net, opt, Xn, labels, gen, self.epochs_per_period)
                feats = self._embed(net, Xn, order=torch.randperm(len(Xn), generator=gen))
                W, _ = knn_affinity(feats, self.k_s)
                merger = GDLMerger(W, labels, self.k_c, self.lam)
                n_steps = min(math.ceil(self.eta * n_now), n_now - self.n_clusters)
                labels = merger.merge(n_steps)
                history.append(
                    {
                        "clusters_before": n_now,
                        "clusters_after": n_now - n_steps,
                        "loss": loss,
                        "labels": labels,
                    }
                )
                timesteps += n_steps
                n_now -= n_steps
                bar.update(1)
                bar.set_postfix(clusters=n_now, loss=f"{loss:.4f}")
            if self.final_backward:  # Moriya Sec. 2.2: train once more on the final labels
                loss = self._train_period(net, opt, Xn, labels, gen, self.epochs_per_period)
                history.append(
                    {
                        "clusters_before": n_now,
                        "clusters_after": n_now,
                        "loss": loss,
                        "labels": labels,
                    }
                )
            bar.close()
        self.network_ = net.eval()
        self.initial_network_ = initial
        self.labels_ = labels
        self.n_timesteps_ = timesteps
        self.n_periods_ = len(history)
        self.history_ = history
        seconds = time.perf_counter() - started
        log.info("JULE: %d timesteps, %d periods, %.1f s", timesteps, len(history), seconds)
        return self

    def _calibrated(self, net: nn.Module, Xn: np.ndarray) -> nn.Module:
        """``net`` with its batch-norm running statistics set to the average over the
        training patches ``Xn`` (a no-gradient pass in training mode over minibatches of
        ``batch_size`` in a random order of their own stream, so the fit's draws are
        unchanged), in evaluation mode. Without it an untrained network normalises with the
        initial mean 0 and variance 1 and its features say little about the patches."""
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the pass
        order = np.random.default_rng(np.random.SeedSequence([int(self.seed), 5])).permutation(
            len(Xn)
        )
        net.train()
        self._batched(net, Xn[order], batch=self.batch_size)
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        return net.eval()

    def transform(self, X: Any) -> np.ndarray:
        """L2-normalised ``embed_dim``-d features of cubes ``X`` ``(n, w, w, w)``."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 4:
            raise ValueError(f"X must be cubic patches (n, w, w, w), got shape {X.shape}")
        return self._embed(self.network_, (X - self.mean_) / self.std_)

    def random_network_transform(self, X: Any) -> np.ndarray:
        """Features of ``X`` from the *untrained* network (``initial_network_``, the weights the
        fit started from, batch norm calibrated on the training patches: JULE's
        ``updateCNN = 0`` control: does the training help?)."""
        X = np.asarray(X, dtype=np.float32)
        return self._embed(self.initial_network_, (X - self.mean_) / self.std_)
