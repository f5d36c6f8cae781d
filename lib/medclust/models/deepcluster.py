"""DeepCluster on 3D volumes with dense clustering activation maps (dCAMs).

Xie, Jacobs and van Ginneken, "Deep clustering activation maps for emphysema subtyping"
(MIDL 2021 short paper; "Xie et al." below), Sec. 2, following DeepCluster (Caron, Bojanowski,
Joulin and Douze, "Deep clustering for unsupervised learning of visual features", ECCV 2018;
"Caron et al."). Every epoch of :class:`DeepCluster`:

1. *Features* (Xie et al. Sec. 2, Caron et al. Sec. 3.2): every training volume goes through the
   feature network ``f_theta`` (:class:`~medclust.models.unet3d.UNet3D`, or the baseline
   :class:`~medclust.models.unet3d.Encoder3D`) in eval mode without gradients; the features are
   averaged inside the lung mask (:func:`~medclust.models.pooling.masked_average_pool`).
2. *Preprocessing* (Caron et al. Sec. 3.2 / Sec. 4 "we PCA-reduce to 256 dimensions, whiten and
   l2-normalise"; Xie et al. "scaled and PCA-reduced"): standard scaling, then PCA to
   ``pca_dim`` components with whitening and L2 normalisation of each row where the features
   have at least 16 times ``pca_dim`` dimensions, as Caron et al.'s 4096 -> 256
   (:class:`~medclust.models.pooling.FeaturePreprocessing`).
3. *k-means* (scikit-learn, a new seed every epoch as Caron et al.'s code does) gives the
   pseudo-labels ``y_n``. Empty clusters are repaired as Caron et al. Sec. 3.3 "Empty clusters"
   (:func:`repair_empty_clusters`).
4. *Head* (Xie et al.: "the parameters in g_W were reset to a random initialization at each
   epoch"): ``g_W`` = ``nn.Conv3d(C, K, 1, bias=True)``, re-initialised every epoch like the top
   layer of Caron et al.'s code (weights ~ N(0, 0.01^2), zero bias) with its own SGD optimiser
   without momentum; the network keeps one SGD optimiser with momentum across epochs.
5. *Training* of ``f_theta`` and ``g_W`` for one epoch on the multinomial logistic loss
   ``(1/N) sum_n l(g_W(pool(f_theta(x_n))), y_n)`` (Xie et al. Sec. 2), with the inputs drawn
   uniformly over the pseudo-labels (Caron et al. Sec. 3.3 "Trivial parametrization";
   :func:`uniform_label_sample`), randomly cropped and mirrored as Caron et al.'s training
   images (:func:`~medclust.models.dcam.augment_batch`), with Caron et al.'s learning rate
   scaled linearly to the batch size (:func:`~medclust.models.dcam.scaled_lr`).

After the last epoch the final network's features are clustered once more (steps 1-3): that
clustering is ``labels_``, and :meth:`DeepCluster.transform` and :meth:`DeepCluster.assign`
use its preprocessing and centroids, so new volumes are clustered by the network that was
returned (Xie et al. evaluate "unsupervised clustering accuracy" of the trained network).

Dense clustering activation maps (Xie et al. Sec. 2) are ``g_W`` applied at every voxel of the
dense features (:meth:`~medclust.models.dcam.PooledNetwork.dcam`); their mask-average is the
head's logits on the pooled features (:mod:`medclust.models.dcam`).

:class:`SupervisedPooledClassifier` is the same network and pooled head trained on true labels:
the supervised reference of Xie et al. Sec. 3 (45 % accuracy; Humphries et al., Radiology 2020).

What neither paper fixes (epochs, batch size, ``pca_dim`` for dense features) is a parameter;
the defaults say where they come from.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from sklearn.base import ClusterMixin
from sklearn.cluster import KMeans
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm.auto import tqdm

from medclust.metrics import nmi
from medclust.models.common import torch_numerics
from medclust.models.dcam import INFER_VOLUMES, PooledNetwork, as_masks, as_volumes, digest
from medclust.models.pooling import FeaturePreprocessing, masked_average_pool, resize_mask
from medclust.validation import Int, Options

__all__ = [
    "INFER_VOLUMES",
    "DeepCluster",
    "FeaturePreprocessing",
    "SupervisedPooledClassifier",
    "as_masks",
    "as_volumes",
    "masked_average_pool",
    "repair_empty_clusters",
    "resize_mask",
    "uniform_label_sample",
]

log = logging.getLogger(__name__)

#: Relative size of the centroid perturbation of the empty-cluster repair (Caron et al.'s code
#: relies on faiss, which perturbs by 1/1024).
_SPLIT_EPS = 1.0 / 1024


# --------------------------------------------------------------------------- DeepCluster steps


def repair_empty_clusters(
    Z: np.ndarray, labels: np.ndarray, centers: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """Empty-cluster handling of Caron et al., Sec. 3.3: "if a cluster becomes empty, we
    randomly select a non-empty cluster and use its centroid with a small random perturbation
    as the new centroid for the empty cluster. We then reassign the points belonging to the
    non-empty cluster to the two resulting clusters."

    For each empty cluster ``k`` in turn: a cluster ``s`` with at least two points is drawn
    uniformly; its centroid ``c`` becomes ``c + delta`` (for ``k``) and ``c - delta`` (for
    ``s``) with ``delta`` a random direction of length ``|c| / 1024`` (1/1024 is faiss' split
    perturbation, used by Caron et al.'s code); each point of ``s`` goes to the nearer of the
    two. Should all of them fall on one side (e.g. duplicate points) the point farthest along
    ``delta`` moves to ``k``. Both centroids are then set to the means of their points.

    Returns new ``(labels, centers, n_repaired)``; the inputs are not modified. ``ValueError``
    when no cluster can be split (fewer points than clusters).
    """
    Z = np.asarray(Z, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).copy()
    centers = np.asarray(centers, dtype=np.float64).copy()
    K = len(centers)
    n_repaired = 0
    for k in range(K):
        sizes = np.bincount(labels, minlength=K)
        if sizes[k]:
            continue
        splittable = np.flatnonzero(sizes >= 2)
        if splittable.size == 0:
            raise ValueError(f"cannot fill empty cluster {k}: no cluster has two points to split")
        s = int(rng.choice(splittable))
        members = np.flatnonzero(labels == s)
        c = centers[s]
        direction = rng.standard_normal(c.shape)
        direction /= max(np.linalg.norm(direction), np.finfo(float).tiny)
        delta = _SPLIT_EPS * max(np.linalg.norm(c), 1.0) * direction
        # nearer of c + delta and c - delta <=> sign of the projection on delta
        proj = (Z[members] - c) @ delta
        to_k = proj > 0
        if to_k.all() or not to_k.any():
            to_k = np.zeros(members.size, bool)
            to_k[int(np.argmax(proj))] = True
        labels[members[to_k]] = k
        centers[k] = Z[members[to_k]].mean(0)
        centers[s] = Z[members[~to_k]].mean(0)
        n_repaired += 1
        log.info("empty cluster %d filled by splitting cluster %d (%d points)", k, s, members.size)
    return labels, centers, n_repaired


def uniform_label_sample(
    labels: np.ndarray, n_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of ``n_samples`` draws spread uniformly over the non-empty pseudo-labels (Caron
    et al., Sec. 3.3 "Trivial parametrization"; ``UnifLabelSampler`` of their code).

    Each non-empty cluster gets ``n_samples // K`` draws, and ``n_samples % K`` clusters drawn
    at random get one more (counts differ by at most one). Within a cluster of ``m`` points
    drawn ``d`` times, every point is used ``floor(d / m)`` or ``ceil(d / m)`` times (a fresh
    permutation per round, so small clusters are oversampled evenly). The result is shuffled.
    """
    labels = np.asarray(labels)
    clusters = np.unique(labels)
    K = clusters.size
    if K == 0 or n_samples < 0:
        raise ValueError(f"need labels and n_samples >= 0, got {labels.size} and {n_samples}")
    counts = np.full(K, n_samples // K)
    counts[rng.permutation(K)[: n_samples % K]] += 1
    draws = []
    for cluster, count in zip(clusters, counts, strict=True):
        members = np.flatnonzero(labels == cluster)
        rounds = -(-int(count) // members.size)
        draws.append(np.concatenate([rng.permutation(members) for _ in range(rounds)])[:count])
    return rng.permutation(np.concatenate(draws)).astype(np.int64)


# --------------------------------------------------------------------------- DeepCluster


class DeepCluster(ClusterMixin, PooledNetwork):
    """DeepCluster (Caron et al. 2018) with a 3D U-Net and lung-pooled features, as Xie et al.
    (Sec. 2) use it for emphysema subtyping; see the module docstring for the epoch.

    Parameters
    ----------
    n_clusters : int, default 6
        k-means clusters = head outputs (Xie et al.: the six Fleischner subtypes).
    network : {"unet", "encoder"}, default "unet"
        ``"unet"``: :class:`~medclust.models.unet3d.UNet3D` with ``base_filters`` and three
        levels (the proposed method). ``"encoder"``: the baseline
        :class:`~medclust.models.unet3d.Encoder3D` with four levels and the width
        ``matched_encoder_filters(base_filters)`` whose parameter count is closest to that
        U-Net's (Xie et al. "compensated for the reduced number of parameters").
    base_filters : int, default 8
        Filters of the U-Net's first level (not given in the paper; small for CPU runs).
    epochs : int, default 20
        Clustering + training epochs (not given in either paper for this setting; Caron et al.
        train 500 epochs on ImageNet). ``0`` clusters the features of the untrained network
        (the "random features" reference of Caron et al. Sec. 4).
    pca_dim : int or None, default 8
        PCA components kept (and whitened, then L2-normalised) before k-means where the pooled
        features have at least ``16 * pca_dim`` dimensions (Caron et al.: 4096 -> 256;
        :func:`~medclust.models.pooling.whitening_applies`); otherwise, or with ``None``, the
        features are only standardised. With a few volumes whitening many components lets noise
        decide the clusters: on a bright/dark toy (48 volumes of 32^3, the baseline encoder's
        48 pooled channels, 2 clusters) the pseudo-labels were random at every epoch with 48 or
        16 whitened components and exact with 8 or 4; and whitening + L2 to a few dimensions
        loses information (see ``pooling.MIN_REDUCTION``).
    lr, momentum, weight_decay : float, defaults 0.05, 0.9, 1e-5
        SGD of Caron et al.'s code (``--lr 0.05``, momentum 0.9, ``--wd -5``); ``lr`` is the
        rate for Caron et al.'s batch of 256, and the rate used, ``lr_``, is scaled linearly to
        ``batch_size`` (:func:`~medclust.models.dcam.scaled_lr`: 0.0015625 at 8). The head gets
        a fresh SGD with ``lr_`` and ``weight_decay`` and no momentum every epoch (as the top
        layer in Caron et al.'s code); the network's optimiser persists across epochs.
    batch_size : int, default 8
        Volumes per step (Caron et al.: 256 images; 3D CT volumes need far smaller batches).
    crop_fraction : float, default 0.875
        Training volumes are cropped to this fraction of each side at a random offset
        (Caron et al.'s random crops, without the resizing: lesion sizes in mm are kept);
        1 disables. 0.875 is 224 / 256, the crop of Caron et al.'s 256-px resized images.
    flip_axis : int or None, default 0
        Array axis along which a training volume is mirrored with probability 1/2 (Caron et
        al.'s horizontal flips): the cohort format's x, right-left. ``None`` disables; the
        superior-inferior axis is never a good choice (upper-zone predominance is a sign).
    iters_per_epoch : int or None, default None
        Training steps per epoch; ``None`` draws N samples (one pass), as
        ``UnifLabelSampler(N)`` with ``--reassign 1`` does in Caron et al.'s code.
    kmeans_n_init : int, default 10
        k-means restarts per epoch (scikit-learn's k-means++; Caron et al. run faiss once).
    seed : int, default 0
        Seeds the network initialisation and, per epoch ``e``, k-means
        (``default_rng([seed, 1, e])``), the uniform sampler (``[seed, 2, e]``), the head
        initialisation and the empty-cluster repair (``[seed, 3, e]``).
    device : str, default "auto"
        "auto", "cpu" or "cuda[:N]" (:func:`medclust.runtime.select_device`). Repeat fits are
        bit-identical on the CPU with a fixed number of torch threads (deterministic kernels,
        denormals flushed; see ``common.torch_numerics``); on CUDA the trilinear upsampling's
        backward has no deterministic kernel, so GPU runs may differ in the last bits.
    verbose : bool, default False
        tqdm progress bar over the epochs; each epoch is logged at INFO either way.

    Attributes
    ----------
    labels_ : (N,) int64 -- the clusters of the training volumes by the final network (the
        clustering step after the last epoch, after the empty-cluster repair).
    network_ : UNet3D or Encoder3D -- the trained feature network ``f_theta`` (eval mode).
    head_ : nn.Conv3d(C, n_clusters, 1) -- ``g_W`` of the last epoch (trained on that
        epoch's pseudo-labels; a fresh random head when ``epochs=0``).
    preprocessing_, kmeans_ -- the preprocessing and k-means of the final clustering
        (``kmeans_`` carries the repaired ``labels_`` and ``cluster_centers_``).
    cluster_centers_ : (n_clusters, n_dims_) -- ``kmeans_.cluster_centers_``.
    n_dims_ : int -- dimensions k-means saw in the final clustering (``pca_dim`` when whitened,
        else ``n_features_out_``).
    lr_ : float -- the learning rate used, ``lr`` scaled to ``batch_size``.
    history_ : dict of lists, one entry per epoch -- ``labels`` (the epoch's pseudo-labels),
        ``loss`` (mean training cross-entropy), ``accuracy`` (fraction of training draws whose
        argmax matched the pseudo-label), ``nmi_prev`` (NMI between this and the previous
        epoch's pseudo-labels, Caron et al. Fig. 2(b); NaN at the first), ``cluster_sizes``
        (K ints), ``inertia`` (k-means), ``n_repaired`` (empty clusters refilled), ``n_dims``,
        ``head_init_digest`` and ``head_final_digest`` (SHA-256 of the head's weights when
        re-initialised and after the epoch's training), ``seconds``.
    input_shape_ : (D, H, W) of the training volumes. n_features_out_ : int -- C.
    device_ : torch.device
    """

    _constraints = {
        **PooledNetwork._constraints,
        "epochs": Int(0),
        "n_clusters": Int(2),
        "pca_dim": Int(1, allow_none=True),
        "kmeans_n_init": Int(1),
    }

    def __init__(
        self,
        *,
        n_clusters: int = 6,
        network: str = "unet",
        base_filters: int = 8,
        epochs: int = 20,
        pca_dim: int | None = 8,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 1e-5,
        batch_size: int = 8,
        crop_fraction: float = 0.875,
        flip_axis: int | None = 0,
        iters_per_epoch: int | None = None,
        kmeans_n_init: int = 10,
        seed: int = 0,
        device: str = "auto",
        verbose: bool = False,
    ) -> None:
        self.n_clusters = n_clusters
        self.network = network
        self.base_filters = base_filters
        self.epochs = epochs
        self.pca_dim = pca_dim
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.crop_fraction = crop_fraction
        self.flip_axis = flip_axis
        self.iters_per_epoch = iters_per_epoch
        self.kmeans_n_init = kmeans_n_init
        self.seed = seed
        self.device = device
        self.verbose = verbose

    # ----------------------------------------------------------------- public API

    def fit(self, volumes: Any, masks: Any = None, y: Any = None) -> DeepCluster:
        """Run ``epochs`` DeepCluster epochs on ``volumes`` ``(N, D, H, W)`` (windowed and
        normalised by the caller) with lung ``masks`` (same shape; ``None``: whole volume).
        ``y`` is ignored."""
        X, M = self._prepare(volumes, masks)
        if len(X) < self.n_clusters:
            raise ValueError(f"{len(X)} volumes cannot form n_clusters={self.n_clusters} clusters")
        self._start(X)
        with torch_numerics():
            self._fit(X, M)
        return self

    def fit_predict(self, volumes: Any, masks: Any = None, y: Any = None) -> np.ndarray:
        """``fit(volumes, masks).labels_``."""
        return self.fit(volumes, masks).labels_

    def transform(self, volumes: Any, masks: Any = None) -> np.ndarray:
        """The final network's pooled features, preprocessed as for the final clustering:
        ``(N, n_dims_)`` float64, the space of ``cluster_centers_``."""
        return self.transform_pooled(self.pooled_features(volumes, masks))

    def assign(self, volumes: Any, masks: Any = None) -> np.ndarray:
        """Cluster of each volume: the nearest of the final ``cluster_centers_`` in the space
        of :meth:`transform` (``predict`` is the head's class, which selects the dCAM)."""
        return self.kmeans_.predict(self.transform(volumes, masks)).astype(np.int64)

    def transform_pooled(self, pooled: np.ndarray) -> np.ndarray:
        """:meth:`transform` from features already pooled by :meth:`pooled_features`."""
        check_is_fitted(self, "preprocessing_")
        return self.preprocessing_.transform(pooled)

    # ----------------------------------------------------------------- internals

    def _new_head(self, rng: np.random.Generator) -> nn.Conv3d:
        """``g_W`` re-initialised as the top layer of Caron et al.'s code: N(0, 0.01^2)
        weights, zero bias, from a generator seeded by ``(seed, epoch)``."""
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        with torch.random.fork_rng(devices=[]):  # its default init is overwritten below
            head = nn.Conv3d(self.n_features_out_, int(self.n_clusters), 1, bias=True)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
            head.bias.zero_()
        return head.to(self.device_)

    def _cluster(self, pooled: np.ndarray, epoch: int):
        preprocessing = FeaturePreprocessing(self.pca_dim, seed=int(self.seed))
        Z = preprocessing.fit_transform(pooled)
        km_seed = int(np.random.default_rng([int(self.seed), 1, epoch]).integers(2**31 - 1))
        km = KMeans(int(self.n_clusters), n_init=int(self.kmeans_n_init), random_state=km_seed)
        km.fit(Z)
        rng = np.random.default_rng([int(self.seed), 3, epoch])
        labels, centers, n_rep = repair_empty_clusters(Z, km.labels_, km.cluster_centers_, rng)
        km.labels_, km.cluster_centers_ = labels, centers.astype(km.cluster_centers_.dtype)
        return labels, preprocessing, km, n_rep, rng

    def _fit(self, X: np.ndarray, M: np.ndarray) -> None:
        hist: dict[str, list] = {
            key: []
            for key in (
                "labels", "loss", "accuracy", "nmi_prev", "cluster_sizes", "inertia",
                "n_repaired", "n_dims", "head_init_digest", "head_final_digest", "seconds",
            )
        }  # fmt: skip
        opt_net = self._network_optimiser()
        previous = None
        bar = tqdm(range(int(self.epochs)), desc="DeepCluster", disable=not self.verbose)
        for epoch in bar:
            start = time.perf_counter()
            # 1-3: features of the frozen network -> preprocessing -> k-means pseudo-labels
            pooled = self._pooled_features(X, M)
            labels, prep, km, n_rep, rng = self._cluster(pooled, epoch)
            # 4: a fresh head every epoch, with its own optimiser (no momentum to carry over)
            self.head_ = self._new_head(rng)
            init_digest = digest(self.head_)
            opt_head = torch.optim.SGD(
                self.head_.parameters(), lr=self.lr_, weight_decay=float(self.weight_decay)
            )
            # 5: one epoch of training, uniform over the pseudo-labels
            order = uniform_label_sample(
                labels, self._n_draws(len(X)), np.random.default_rng([int(self.seed), 2, epoch])
            )
            augment = np.random.default_rng([int(self.seed), 4, epoch])
            loss, acc = self._train_epoch(X, M, labels, order, [opt_net, opt_head], augment)

            sizes = np.bincount(labels, minlength=int(self.n_clusters))
            hist["labels"].append(labels)
            hist["loss"].append(loss)
            hist["accuracy"].append(acc)
            hist["nmi_prev"].append(np.nan if previous is None else nmi(previous, labels))
            hist["cluster_sizes"].append(sizes.tolist())
            hist["inertia"].append(float(km.inertia_))
            hist["n_repaired"].append(n_rep)
            hist["n_dims"].append(prep.n_features_out_)
            hist["head_init_digest"].append(init_digest)
            hist["head_final_digest"].append(digest(self.head_))
            hist["seconds"].append(time.perf_counter() - start)
            previous = labels
            bar.set_postfix(loss=f"{loss:.3f}", nmi=f"{hist['nmi_prev'][-1]:.3f}")
            log.info(
                "DeepCluster epoch %d/%d: loss %.4f, acc %.3f, NMI(prev) %.3f, sizes %s, %.1f s",
                epoch + 1, self.epochs, loss, acc, hist["nmi_prev"][-1], sizes.tolist(),
                hist["seconds"][-1],
            )  # fmt: skip
        bar.close()
        # the clustering step once more, on the final network's features
        pooled = self._pooled_features(X, M)
        labels, prep, km, _, rng = self._cluster(pooled, int(self.epochs))
        if self.epochs == 0:
            self.head_ = self._new_head(rng)
        self.network_.eval()
        self.head_.eval()
        self.labels_ = labels.astype(np.int64)
        self.preprocessing_, self.kmeans_ = prep, km
        self.cluster_centers_ = km.cluster_centers_
        self.n_dims_ = prep.n_features_out_
        self.history_ = hist


# --------------------------------------------------------------------------- supervised


class SupervisedPooledClassifier(PooledNetwork):
    """The supervised reference of Xie et al. Sec. 3 (45 % accuracy, Humphries et al. 2020):
    the same feature network and lung-pooled 1x1x1 head as :class:`DeepCluster`, trained on
    the true labels with cross-entropy (one head for the whole fit, one SGD with momentum for
    network and head). ``dcam`` gives class activation maps.

    Parameters
    ----------
    network, base_filters, epochs, momentum, weight_decay, batch_size, crop_fraction,
    flip_axis, iters_per_epoch, seed, device, verbose
        As :class:`DeepCluster`.
    lr : float, default 0.32
        SGD learning rate for batches of 256, scaled linearly to ``batch_size`` (``lr_``) as
        DeepCluster's: 0.01 at 8, the rate at which this network learned a bright/dark toy
        (48 volumes of 32^3) within 3 epochs. Caron et al.'s 0.05 is DeepCluster's; at that
        per-sample rate a fresh head on lung-pooled features stays at chance through a
        CPU-sized run, and the supervised reference is there to show what the true labels can
        teach the same network.
    balanced : bool, default False
        Draw the training volumes uniformly over the classes (as DeepCluster does over
        pseudo-labels) instead of a plain permutation per epoch.

    Attributes
    ----------
    classes_ : the sorted label values; ``predict`` returns them.
    network_, head_, history_ (``loss`` and ``accuracy`` per epoch: mean training
    cross-entropy and fraction of correct training draws), lr_, input_shape_, device_.
    """

    _constraints = {**PooledNetwork._constraints, "balanced": Options(bool)}

    def __init__(
        self,
        *,
        network: str = "unet",
        base_filters: int = 8,
        epochs: int = 20,
        lr: float = 0.32,
        momentum: float = 0.9,
        weight_decay: float = 1e-5,
        batch_size: int = 8,
        crop_fraction: float = 0.875,
        flip_axis: int | None = 0,
        iters_per_epoch: int | None = None,
        balanced: bool = False,
        seed: int = 0,
        device: str = "auto",
        verbose: bool = False,
    ) -> None:
        self.network = network
        self.base_filters = base_filters
        self.epochs = epochs
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.crop_fraction = crop_fraction
        self.flip_axis = flip_axis
        self.iters_per_epoch = iters_per_epoch
        self.balanced = balanced
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def fit(self, volumes: Any, masks: Any, y: Any) -> SupervisedPooledClassifier:
        """Train on ``volumes`` ``(N, D, H, W)``, lung ``masks`` and labels ``y`` ``(N,)``."""
        X, M = self._prepare(volumes, masks)
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise ValueError(f"y must have shape ({len(X)},), got {y.shape}")
        self.classes_, targets = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(f"y must contain at least two classes, got {self.classes_.tolist()}")
        self._start(X)
        with torch_numerics():
            with self._seeded(1):
                head = nn.Conv3d(self.n_features_out_, self.classes_.size, 1, bias=True)
            self.head_ = head.to(self.device_)
            opt = torch.optim.SGD(
                [*self.network_.parameters(), *self.head_.parameters()],
                lr=self.lr_,
                momentum=float(self.momentum),
                weight_decay=float(self.weight_decay),
            )
            hist: dict[str, list[float]] = {"loss": [], "accuracy": []}
            bar = tqdm(range(int(self.epochs)), desc="supervised", disable=not self.verbose)
            for epoch in bar:
                rng = np.random.default_rng([int(self.seed), 2, epoch])
                n_draws = self._n_draws(len(X))
                if self.balanced:
                    order = uniform_label_sample(targets, n_draws, rng)
                else:
                    rounds = -(-n_draws // len(X))
                    order = np.concatenate([rng.permutation(len(X)) for _ in range(rounds)])
                    order = order[:n_draws]
                augment = np.random.default_rng([int(self.seed), 4, epoch])
                loss, acc = self._train_epoch(X, M, targets, order, [opt], augment)
                hist["loss"].append(loss)
                hist["accuracy"].append(acc)
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}")
                log.info("supervised epoch %d/%d: loss %.4f, train acc %.3f", epoch + 1,
                         self.epochs, loss, acc)  # fmt: skip
            bar.close()
        self.history_ = hist
        return self

    def score(self, volumes: Any, masks: Any, y: Any) -> float:
        """Accuracy of :meth:`predict` against ``y``."""
        return float(np.mean(self.predict(volumes, masks) == np.asarray(y)))

    def _label_values(self, idx: np.ndarray) -> np.ndarray:
        return self.classes_[idx]
