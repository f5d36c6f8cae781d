"""DeepCluster on 3D volumes with dense clustering activation maps (dCAMs).

Xie, Jacobs and van Ginneken, "Deep clustering activation maps for emphysema subtyping"
(MIDL 2021 short paper; "Xie et al." below), Sec. 2, following DeepCluster (Caron, Bojanowski,
Joulin and Douze, "Deep clustering for unsupervised learning of visual features", ECCV 2018;
"Caron et al."). Every epoch of :class:`DeepCluster`:

1. *Features* (Xie et al. Sec. 2, Caron et al. Sec. 3.2): every training volume goes through the
   feature network ``f_theta`` (:class:`~medclust.models.unet3d.UNet3D`, or the baseline
   :class:`~medclust.models.unet3d.Encoder3D`) in eval mode without gradients; the features are
   averaged inside the lung mask (:func:`masked_average_pool`).
2. *Preprocessing* (Caron et al. Sec. 3.2 / Sec. 4 "we PCA-reduce to 256 dimensions, whiten and
   l2-normalise"; Xie et al. "scaled and PCA-reduced"): standard scaling, PCA to ``pca_dim``
   components with whitening, L2 normalisation of each row.
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
   :func:`uniform_label_sample`).

Dense clustering activation maps (Xie et al. Sec. 2): ``g_W`` applied at every voxel of the dense
features, skipping the pooling. ``g_W`` is linear and the pooling is a weighted average, so the
mask-average of a dCAM *is* the head's logits on the pooled features. For the baseline encoder
the dCAM is upsampled trilinearly to the input size, and the pooling at its low resolution uses
the mask weights of the transposed trilinear interpolation (``mode="trilinear"`` of
:func:`masked_average_pool`), which keeps the identity exact there too.

:class:`SupervisedPooledClassifier` is the same network and pooled head trained on true labels:
the supervised reference of Xie et al. Sec. 3 (45 % accuracy; Humphries et al., Radiology 2020).

What neither paper fixes (epochs, batch size, ``pca_dim`` for dense features) is a parameter;
the defaults say where they come from.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm.auto import tqdm

from medclust.metrics import nmi
from medclust.models.common import torch_numerics
from medclust.models.unet3d import Encoder3D, UNet3D, matched_encoder_filters
from medclust.runtime import select_device

log = logging.getLogger(__name__)

#: Volumes per forward pass in inference (feature extraction, predict, dCAMs): the 3D
#: counterpart of ``common.INFER_BATCH``.
INFER_VOLUMES = 4

_NETWORKS = ("unet", "encoder")
_POOL_MODES = ("area", "nearest", "trilinear")
#: Relative size of the centroid perturbation of the empty-cluster repair (Caron et al.'s code
#: relies on faiss, which perturbs by 1/1024).
_SPLIT_EPS = 1.0 / 1024


# --------------------------------------------------------------------------- pooling


def _linear_interp_matrix(n_out: int, n_in: int, dtype, device) -> torch.Tensor:
    """``(n_out, n_in)`` matrix of 1D linear interpolation from ``n_in`` to ``n_out`` samples,
    exactly the weights of ``F.interpolate(mode="linear", align_corners=False)`` (rows sum
    to 1). Trilinear interpolation is the product of these along the three axes."""
    eye = torch.eye(n_in, dtype=dtype, device=device)[:, None, :]  # n_in signals of length n_in
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :].T


def resize_mask(mask: torch.Tensor, size: tuple[int, ...], mode: str = "area") -> torch.Tensor:
    """Mask weights ``(N, 1, *size)`` at a feature resolution ``size``, from ``mask``
    ``(N, 1, *full)`` (1-3 spatial axes).

    * ``"area"``: fraction of each feature cell covered by the mask (adaptive average pooling);
    * ``"nearest"``: nearest-neighbour resampling (binary, may lose small masks);
    * ``"trilinear"``: the transpose of (multi)linear upsampling from ``size`` to ``full``
      (``align_corners=False``). With these weights the pooled features equal the mask-average
      of the features upsampled trilinearly to the mask's grid, so a dCAM upsampled that way
      averages to the head's logits exactly. The weights sum to the mask's voxel count.

    The mask is returned unchanged when ``size`` is already its size.
    """
    if mode not in _POOL_MODES:
        raise ValueError(f"mode must be one of {_POOL_MODES}, got {mode!r}")
    full = tuple(mask.shape[2:])
    size = tuple(int(s) for s in size)
    if full == size:
        return mask
    if mode == "nearest":
        return F.interpolate(mask, size=size, mode="nearest")
    if mode == "area":
        pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
        return pool[len(size)](mask, size)
    weights = mask
    for axis, (n_full, n_low) in enumerate(zip(full, size, strict=True)):
        u = _linear_interp_matrix(n_full, n_low, mask.dtype, mask.device)  # (n_full, n_low)
        weights = torch.movedim(torch.movedim(weights, axis + 2, -1) @ u, -1, axis + 2)
    return weights


def masked_average_pool(features: Any, mask: Any, mode: str = "area") -> Any:
    """Average of ``features`` ``(N, C, *spatial)`` over the voxels inside ``mask``
    (``(N, 1, *full)`` or ``(N, *full)``), ``-> (N, C)``; the lung-wise pooling of Xie et al.,
    Sec. 2 ("average-pool dense features within the lungs").

    Nonzero mask voxels are inside; voxels outside do not contribute. When the mask is on a
    finer grid than the features it is resized by :func:`resize_mask` (``mode``). A mask that
    is empty (at the feature resolution) is a ``ValueError`` naming the sample. Torch tensors in
    give a (differentiable) tensor out, NumPy arrays in a NumPy array.
    """
    as_numpy = not torch.is_tensor(features)
    f = torch.as_tensor(np.asarray(features)) if as_numpy else features
    m = torch.as_tensor(np.asarray(mask)) if not torch.is_tensor(mask) else mask
    if f.ndim < 3:
        raise ValueError(f"features must have shape (N, C, *spatial), got {tuple(f.shape)}")
    if m.ndim == f.ndim - 1:
        m = m[:, None]
    if m.ndim != f.ndim or m.shape[0] != f.shape[0] or m.shape[1] != 1:
        raise ValueError(
            f"mask must have shape (N, 1, *spatial) or (N, *spatial) with N = {f.shape[0]}, "
            f"got {tuple(m.shape)}"
        )
    dtype = f.dtype if f.is_floating_point() else torch.float32
    m = (m != 0).to(dtype=dtype, device=f.device)
    if not m.flatten(1).any(1).all():
        bad = (~m.flatten(1).any(1)).nonzero().flatten().tolist()
        raise ValueError(f"mask of sample(s) {bad} is empty")
    w = resize_mask(m, f.shape[2:], mode)[:, 0]
    total = w.flatten(1).sum(1)
    if not bool((total > 0).all()):
        bad = (total <= 0).nonzero().flatten().tolist()
        raise ValueError(
            f"mask of sample(s) {bad} is empty at the feature resolution {tuple(f.shape[2:])} "
            f"(mode={mode!r}; 'area' or 'trilinear' keep small masks)"
        )
    pooled = torch.einsum("nc...,n...->nc", f.to(dtype), w) / total[:, None]
    return pooled.numpy() if as_numpy else pooled


# --------------------------------------------------------------------------- DeepCluster steps


def preprocess_features(
    features: np.ndarray, pca_dim: int | None, seed: int = 0
) -> tuple[np.ndarray, StandardScaler, PCA]:
    """Caron et al. Sec. 3.2/4: standard scaling, PCA with whitening to ``pca_dim`` components
    (``None``: all), L2 normalisation of each row. Returns ``(Z, scaler, pca)``.

    ``pca_dim`` is capped at ``min(n_samples, n_features)``, and components whose variance is
    below ``1e-6`` of the largest are dropped, so whitening never divides by ~0 (a random
    network's pooled features are strongly correlated).
    """
    X = np.asarray(features, dtype=np.float64)
    if not np.all(np.isfinite(X)):
        raise RuntimeError("the pooled features contain NaN or inf (training diverged? lower lr)")
    scaler = StandardScaler().fit(X)
    Xs = scaler.transform(X)
    cap = min(X.shape)
    k = cap if pca_dim is None else min(int(pca_dim), cap)
    pca = PCA(n_components=k, whiten=True, svd_solver="full", random_state=seed).fit(Xs)
    if not pca.explained_variance_[0] > 0:
        raise RuntimeError("the pooled features are identical for every volume (collapsed network)")
    keep = int(np.count_nonzero(pca.explained_variance_ > 1e-6 * pca.explained_variance_[0]))
    if keep < k:
        log.info("PCA: %d of %d components have ~0 variance; keeping %d", k - keep, k, keep)
        pca = PCA(n_components=keep, whiten=True, svd_solver="full", random_state=seed).fit(Xs)
    return _l2_normalise(pca.transform(Xs)), scaler, pca


def _l2_normalise(Z: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    return Z / np.maximum(norms, np.finfo(Z.dtype).tiny)


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


# --------------------------------------------------------------------------- input checks


def as_volumes(volumes: Any, name: str = "volumes") -> np.ndarray:
    """``(N, D, H, W)`` float32 (from such an array, ``(N, 1, D, H, W)`` or a list of equal-size
    3D arrays); ``ValueError`` on other shapes or non-finite values."""
    if isinstance(volumes, list | tuple):
        shapes = {np.shape(v) for v in volumes}
        if len(shapes) > 1:
            raise ValueError(f"{name} must all have the same shape, got {sorted(shapes)}")
    arr = np.asarray(volumes, dtype=np.float32)
    if arr.ndim == 5 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 4:
        raise ValueError(f"{name} must have shape (N, D, H, W), got {np.shape(volumes)}")
    if len(arr) == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return np.ascontiguousarray(arr)


def as_masks(masks: Any, shape: tuple[int, ...], name: str = "masks") -> np.ndarray:
    """Binary float32 masks ``(N, D, H, W)`` matching ``shape`` (``None``: every voxel);
    ``ValueError`` naming the first empty mask."""
    if masks is None:
        return np.ones(shape, np.float32)
    arr = np.asarray(masks)
    if arr.ndim == 5 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have the volumes' shape {tuple(shape)}, got {arr.shape}")
    arr = arr != 0
    empty = np.flatnonzero(~arr.reshape(len(arr), -1).any(1))
    if empty.size:
        more = f" ({empty.size} empty masks: {empty.tolist()})" if empty.size > 1 else ""
        raise ValueError(f"{name}[{empty[0]}] is empty{more}")
    return arr.astype(np.float32)


def _check_int(obj: Any, name: str, minimum: int, allow_none: bool = False) -> None:
    v = getattr(obj, name)
    if allow_none and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{none}, got {v!r}")


def _check_number(obj: Any, name: str, lo: float, hi: float, hi_open: bool = False) -> None:
    v = getattr(obj, name)
    ok = isinstance(v, int | float | np.number) and not isinstance(v, bool) and np.isfinite(v)
    if not ok or not lo <= float(v) <= hi or (hi_open and float(v) == hi):
        bracket = ")" if hi_open else "]"
        raise ValueError(f"{name} must be a number in [{lo}, {hi}{bracket}, got {v!r}")


def _digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- shared estimator


class _PooledNetwork(BaseEstimator):
    """Network + lung-pooled 1x1x1 head: what :class:`DeepCluster` and
    :class:`SupervisedPooledClassifier` share (building, training epochs, inference, dCAMs)."""

    # ----------------------------------------------------------------- inference API

    def dense_features(self, volumes: Any) -> np.ndarray:
        """Output of the feature network, ``(N, C, d, h, w)`` float32: the dense features
        (input size) for the U-Net, the low-resolution features for the encoder."""
        check_is_fitted(self, "network_")
        X = as_volumes(volumes)
        self._check_size(X.shape)
        return self._map(X, None, lambda f, m: f)

    def pooled_features(self, volumes: Any, masks: Any = None) -> np.ndarray:
        """Raw lung-pooled features ``pool(f(x))``, ``(N, C)`` float32."""
        check_is_fitted(self, "network_")
        X = as_volumes(volumes)
        self._check_size(X.shape)
        return self._pooled_features(X, as_masks(masks, X.shape))

    def decision_function(self, volumes: Any, masks: Any = None) -> np.ndarray:
        """Logits ``g_W(pool(f(x)))``, ``(N, K)`` float32 (``masks=None``: whole volume)."""
        check_is_fitted(self, "network_")
        X = as_volumes(volumes)
        self._check_size(X.shape)
        M = as_masks(masks, X.shape)
        return self._map(X, M, lambda f, m: self._head_logits(self._pool(f, m)))

    def predict(self, volumes: Any, masks: Any = None) -> np.ndarray:
        """Class of the largest logit of the head on the pooled features."""
        return self._label_values(self.decision_function(volumes, masks).argmax(1))

    def dcam(self, volumes: Any, masks: Any = None) -> np.ndarray:
        """Dense clustering activation maps (Xie et al., Sec. 2): the head ``g_W`` applied at
        every voxel of the dense features, without pooling, ``(N, K, D, H, W)`` float32.

        For the encoder the maps are computed at its low resolution and upsampled trilinearly
        (``align_corners=False``) to the input size. With ``masks`` the voxels outside are set
        to NaN (transparent in overlays); the mean over the voxels inside then equals
        :meth:`decision_function` (up to float rounding), because ``g_W`` is linear and the
        pooling is a weighted mean.
        """
        check_is_fitted(self, "network_")
        X = as_volumes(volumes)
        self._check_size(X.shape)
        M = None if masks is None else as_masks(masks, X.shape)

        def maps(f: torch.Tensor, _m) -> torch.Tensor:
            out = self.head_(f)
            if out.shape[2:] != X.shape[1:]:
                out = F.interpolate(out, size=X.shape[1:], mode="trilinear", align_corners=False)
            return out

        out = self._map(X, None, maps)
        if M is not None:
            out[np.broadcast_to(M[:, None] == 0, out.shape)] = np.nan
        return out

    # ----------------------------------------------------------------- internals

    def _label_values(self, idx: np.ndarray) -> np.ndarray:
        return idx.astype(np.int64)

    def _validate_common(self) -> None:
        if self.network not in _NETWORKS:
            raise ValueError(f"network must be one of {_NETWORKS}, got {self.network!r}")
        for name in ("base_filters", "epochs", "batch_size"):
            _check_int(self, name, 1)
        _check_int(self, "seed", 0)
        _check_int(self, "iters_per_epoch", 1, allow_none=True)
        _check_number(self, "lr", 0.0, np.inf)
        if not float(self.lr) > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        _check_number(self, "momentum", 0.0, 1.0, hi_open=True)
        _check_number(self, "weight_decay", 0.0, np.inf)
        if not isinstance(self.verbose, bool | np.bool_):
            raise ValueError(f"verbose must be a bool, got {self.verbose!r}")

    def _new_network(self) -> nn.Module:
        # forked RNG: seeding must not disturb the caller's torch random stream; built on the
        # CPU so the initial weights do not depend on the device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            if self.network == "unet":
                net = UNet3D(1, int(self.base_filters), levels=3)
            else:
                net = Encoder3D(1, matched_encoder_filters(int(self.base_filters)), levels=4)
        return self._to_device(net)

    def _to_device(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device_)
        if self.device_.type == "cpu":
            # oneDNN's 3D convolutions are about twice as fast channels-last on the CPU
            module = module.to(memory_format=torch.channels_last_3d)
        return module

    def _batch(self, arr: np.ndarray, idx) -> torch.Tensor:
        t = torch.from_numpy(arr[idx])[:, None].to(self.device_)
        if self.device_.type == "cpu":
            t = t.contiguous(memory_format=torch.channels_last_3d)
        return t

    def _check_size(self, shape: tuple[int, ...]) -> None:
        levels = 3 if self.network == "unet" else 4
        if min(shape[1:]) < 2**levels:
            raise ValueError(
                f"volumes must be at least {2**levels} voxels along every axis for the "
                f"{self.network!r} network ({levels} poolings), got {tuple(shape[1:])}"
            )

    @staticmethod
    def _pool(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        # "trilinear": the low-resolution encoder features are pooled as their trilinear
        # upsampling would be, so the dCAM identity holds for the baseline too
        return masked_average_pool(f, m, mode="trilinear")

    def _head_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """The 1x1x1 convolution ``g_W`` on a pooled ``(N, C)`` vector (a one-voxel map)."""
        return self.head_(pooled[:, :, None, None, None]).flatten(1)

    def _map(self, X: np.ndarray, M: np.ndarray | None, fn) -> np.ndarray:
        """``fn(features, mask)`` over batches of ``INFER_VOLUMES``, network in eval mode."""
        net = self.network_
        was_training = net.training
        net.eval()
        out = []
        try:
            with torch.no_grad(), torch_numerics():
                for a in range(0, len(X), INFER_VOLUMES):
                    idx = slice(a, a + INFER_VOLUMES)
                    m = None if M is None else self._batch(M, idx)
                    res = fn(net(self._batch(X, idx)), m)
                    out.append(res.float().cpu().contiguous().numpy())
        finally:
            net.train(was_training)
        return np.concatenate(out)

    def _pooled_features(self, X: np.ndarray, M: np.ndarray) -> np.ndarray:
        return self._map(X, M, lambda f, m: self._pool(f, m))

    def _train_epoch(
        self,
        X: np.ndarray,
        M: np.ndarray,
        targets: np.ndarray,
        order: np.ndarray,
        optimisers: list[torch.optim.Optimizer],
    ) -> tuple[float, float]:
        """One pass over ``order`` in minibatches: cross-entropy of the pooled head's logits
        (Xie et al. Sec. 2). Returns the mean loss and the fraction of correct argmaxes."""
        net, head = self.network_, self.head_
        net.train()
        head.train()
        y_all = torch.from_numpy(targets.astype(np.int64))
        bs = int(self.batch_size)
        loss_sum, correct = 0.0, 0
        for a in range(0, len(order), bs):
            idx = order[a : a + bs]
            x, m = self._batch(X, idx), self._batch(M, idx)
            y = y_all[idx].to(self.device_)
            logits = self._head_logits(self._pool(net(x), m))
            loss = F.cross_entropy(logits, y)
            for opt in optimisers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in optimisers:
                opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == y).sum())
        net.eval()
        head.eval()
        return loss_sum / max(len(order), 1), correct / max(len(order), 1)

    def _network_optimiser(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            self.network_.parameters(),
            lr=float(self.lr),
            momentum=float(self.momentum),
            weight_decay=float(self.weight_decay),
        )

    def _n_draws(self, n: int) -> int:
        return n if self.iters_per_epoch is None else int(self.iters_per_epoch) * self.batch_size

    def _prepare(self, volumes: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
        self._validate()
        X = as_volumes(volumes)
        self._check_size(X.shape)
        M = as_masks(masks, X.shape)
        return X, M

    def _start(self, X: np.ndarray) -> None:
        self.device_ = select_device(self.device)
        self.input_shape_ = tuple(X.shape[1:])
        self.network_ = self._new_network()
        self.n_features_out_ = int(self.network_.out_channels)


# --------------------------------------------------------------------------- DeepCluster


class DeepCluster(ClusterMixin, _PooledNetwork):
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
        train 500 epochs on ImageNet).
    pca_dim : int or None, default 8
        PCA components kept (and whitened) before k-means; ``None`` keeps all. Capped at the
        feature and sample counts, and near-zero-variance components are dropped
        (:func:`preprocess_features`). Neither paper gives a value for this setting (Caron et
        al. reduce 4096 to 256 dimensions for 1.3 M images). Whitening gives every kept
        component the same weight, so keeping many of them with few volumes lets noise decide
        the clusters: on a bright/dark toy (48 volumes of 32^3, the baseline encoder's 48
        pooled channels, 2 clusters, lr 0.01) the pseudo-labels were random at every epoch
        (NMI to the truth and between epochs ~0) with 48 or 16 components and exact (NMI 1)
        with 8 or 4. The U-Net's pooled features have ``base_filters`` channels: 8 keeps all
        of them for ``base_filters <= 8``.
    lr, momentum, weight_decay : float, defaults 0.05, 0.9, 1e-5
        SGD of Caron et al.'s code (``--lr 0.05``, momentum 0.9, ``--wd -5``). The head gets a
        fresh SGD with the same ``lr`` and ``weight_decay`` and no momentum every epoch (as the
        top layer in Caron et al.'s code); the network's optimiser persists across epochs.
        Caron et al.'s rate is for batches of 256 images; with batches of 8 volumes 0.05 worked
        for DeepCluster on the toy above with both networks, but supervised training of the
        baseline encoder did not converge at 0.05 (it did at 0.01).
    batch_size : int, default 8
        Volumes per step (Caron et al.: 256 images; 3D CT volumes need far smaller batches).
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
    labels_ : (N,) int64 -- pseudo-labels of the last epoch (the targets the head was trained
        on, after the empty-cluster repair).
    network_ : UNet3D or Encoder3D -- the trained feature network ``f_theta`` (eval mode).
    head_ : nn.Conv3d(C, n_clusters, 1) -- ``g_W`` of the last epoch.
    scaler_, pca_, kmeans_ -- the preprocessing and k-means of the last epoch (``kmeans_``
        carries the repaired ``labels_`` and ``cluster_centers_``).
    cluster_centers_ : (n_clusters, pca_dim_) -- ``kmeans_.cluster_centers_``.
    pca_dim_ : int -- PCA components actually kept in the last epoch.
    history_ : dict of lists, one entry per epoch -- ``loss`` (mean training cross-entropy),
        ``accuracy`` (fraction of training draws whose argmax matched the pseudo-label),
        ``nmi_prev`` (NMI between this and the previous epoch's pseudo-labels, Caron et al.
        Fig. 2(b); NaN at the first), ``cluster_sizes`` (K ints), ``inertia`` (k-means),
        ``n_repaired`` (empty clusters refilled), ``pca_dim``, ``head_init_digest`` and
        ``head_final_digest`` (SHA-256 of the head's weights when re-initialised and after the
        epoch's training), ``seconds``.
    input_shape_ : (D, H, W) of the training volumes. n_features_out_ : int -- C.
    device_ : torch.device
    """

    def __init__(
        self,
        n_clusters: int = 6,
        network: str = "unet",
        base_filters: int = 8,
        epochs: int = 20,
        pca_dim: int | None = 8,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 1e-5,
        batch_size: int = 8,
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
        """Pooled features preprocessed as for the last epoch's k-means (scaled, PCA-whitened,
        L2-normalised): ``(N, pca_dim_)`` float64. The network is the final one, so for the
        training set this is one training epoch later than the k-means of ``labels_``."""
        check_is_fitted(self, "pca_")
        X = as_volumes(volumes)
        self._check_size(X.shape)
        pooled = self._pooled_features(X, as_masks(masks, X.shape))
        return _l2_normalise(self.pca_.transform(self.scaler_.transform(pooled.astype(float))))

    # ----------------------------------------------------------------- internals

    def _validate(self) -> None:
        self._validate_common()
        _check_int(self, "n_clusters", 2)
        _check_int(self, "pca_dim", 1, allow_none=True)
        _check_int(self, "kmeans_n_init", 1)

    def _new_head(self, rng: np.random.Generator) -> nn.Conv3d:
        """``g_W`` re-initialised as the top layer of Caron et al.'s code: N(0, 0.01^2)
        weights, zero bias, from a generator seeded by ``(seed, epoch)``."""
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        with torch.random.fork_rng(devices=[]):
            head = nn.Conv3d(self.n_features_out_, int(self.n_clusters), 1, bias=True)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
            head.bias.zero_()
        return head.to(self.device_)

    def _cluster(self, pooled: np.ndarray, epoch: int):
        Z, scaler, pca = preprocess_features(pooled, self.pca_dim, seed=int(self.seed))
        km_seed = int(np.random.default_rng([int(self.seed), 1, epoch]).integers(2**31 - 1))
        km = KMeans(int(self.n_clusters), n_init=int(self.kmeans_n_init), random_state=km_seed)
        km.fit(Z)
        rng = np.random.default_rng([int(self.seed), 3, epoch])
        labels, centers, n_rep = repair_empty_clusters(Z, km.labels_, km.cluster_centers_, rng)
        km.labels_, km.cluster_centers_ = labels, centers.astype(km.cluster_centers_.dtype)
        return labels, scaler, pca, km, n_rep, rng

    def _fit(self, X: np.ndarray, M: np.ndarray) -> None:
        hist: dict[str, list] = {
            key: []
            for key in (
                "loss", "accuracy", "nmi_prev", "cluster_sizes", "inertia", "n_repaired",
                "pca_dim", "head_init_digest", "head_final_digest", "seconds",
            )
        }  # fmt: skip
        opt_net = self._network_optimiser()
        previous = None
        bar = tqdm(range(int(self.epochs)), desc="DeepCluster", disable=not self.verbose)
        for epoch in bar:
            start = time.perf_counter()
            # 1-3: features of the frozen network -> preprocessing -> k-means pseudo-labels
            pooled = self._pooled_features(X, M)
            labels, scaler, pca, km, n_rep, rng = self._cluster(pooled, epoch)
            # 4: a fresh head every epoch, with its own optimiser (no momentum to carry over)
            self.head_ = self._new_head(rng)
            init_digest = _digest(self.head_)
            opt_head = torch.optim.SGD(
                self.head_.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay)
            )
            # 5: one epoch of training, uniform over the pseudo-labels
            order = uniform_label_sample(
                labels, self._n_draws(len(X)), np.random.default_rng([int(self.seed), 2, epoch])
            )
            loss, acc = self._train_epoch(X, M, labels, order, [opt_net, opt_head])

            sizes = np.bincount(labels, minlength=int(self.n_clusters))
            hist["loss"].append(loss)
            hist["accuracy"].append(acc)
            hist["nmi_prev"].append(np.nan if previous is None else nmi(previous, labels))
            hist["cluster_sizes"].append(sizes.tolist())
            hist["inertia"].append(float(km.inertia_))
            hist["n_repaired"].append(n_rep)
            hist["pca_dim"].append(int(pca.n_components_))
            hist["head_init_digest"].append(init_digest)
            hist["head_final_digest"].append(_digest(self.head_))
            hist["seconds"].append(time.perf_counter() - start)
            previous = labels
            bar.set_postfix(loss=f"{loss:.3f}", nmi=f"{hist['nmi_prev'][-1]:.3f}")
            log.info(
                "DeepCluster epoch %d/%d: loss %.4f, acc %.3f, NMI(prev) %.3f, sizes %s, %.1f s",
                epoch + 1, self.epochs, loss, acc, hist["nmi_prev"][-1], sizes.tolist(),
                hist["seconds"][-1],
            )  # fmt: skip
        bar.close()
        self.network_.eval()
        self.head_.eval()
        self.labels_ = labels.astype(np.int64)
        self.scaler_, self.pca_, self.kmeans_ = scaler, pca, km
        self.cluster_centers_ = km.cluster_centers_
        self.pca_dim_ = int(pca.n_components_)
        self.history_ = hist


# --------------------------------------------------------------------------- supervised


class SupervisedPooledClassifier(_PooledNetwork):
    """The supervised reference of Xie et al. Sec. 3 (45 % accuracy, Humphries et al. 2020):
    the same feature network and lung-pooled 1x1x1 head as :class:`DeepCluster`, trained on
    the true labels with cross-entropy (one head for the whole fit, one SGD with momentum for
    network and head). ``dcam`` gives class activation maps.

    Parameters
    ----------
    network, base_filters, epochs, momentum, weight_decay, batch_size, iters_per_epoch, seed,
    device, verbose
        As :class:`DeepCluster`.
    lr : float, default 0.01
        SGD learning rate. Lower than DeepCluster's 0.05: on a bright/dark toy (48 volumes of
        32^3, batches of 8) the baseline encoder stayed at chance at 0.05 and reached 100 %
        training accuracy within 3 epochs at 0.01 (and at 0.002); the U-Net learned at all
        three rates.
    balanced : bool, default False
        Draw the training volumes uniformly over the classes (as DeepCluster does over
        pseudo-labels) instead of a plain permutation per epoch.

    Attributes
    ----------
    classes_ : the sorted label values; ``predict`` returns them.
    network_, head_, history_ (``loss`` and ``accuracy`` per epoch: mean training
    cross-entropy and fraction of correct training draws), input_shape_, device_.
    """

    def __init__(
        self,
        network: str = "unet",
        base_filters: int = 8,
        epochs: int = 20,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-5,
        batch_size: int = 8,
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
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(self.seed) + 1)
                head = nn.Conv3d(self.n_features_out_, self.classes_.size, 1, bias=True)
            self.head_ = head.to(self.device_)
            opt = torch.optim.SGD(
                [*self.network_.parameters(), *self.head_.parameters()],
                lr=float(self.lr),
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
                loss, acc = self._train_epoch(X, M, targets, order, [opt])
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

    def _validate(self) -> None:
        self._validate_common()
        if not isinstance(self.balanced, bool | np.bool_):
            raise ValueError(f"balanced must be a bool, got {self.balanced!r}")

    def _label_values(self, idx: np.ndarray) -> np.ndarray:
        return self.classes_[idx]
