"""A 3D feature network with a lung-pooled 1x1x1 head, and its dense activation maps (dCAMs).

Xie, Jacobs and van Ginneken (MIDL 2021), Sec. 2: the feature network ``f_theta``
(:class:`~medclust.models.unet3d.UNet3D`, or the baseline
:class:`~medclust.models.unet3d.Encoder3D`) gives dense features; they are averaged inside the
lung mask (:func:`~medclust.models.pooling.masked_average_pool`) and a 1x1x1 convolution ``g_W``
maps the pooled vector to K logits. :class:`PooledNetwork` holds what the two estimators built
on it (:class:`~medclust.models.deepcluster.DeepCluster` and
:class:`~medclust.models.deepcluster.SupervisedPooledClassifier`) share: building the network,
one training epoch of cross-entropy on the pooled logits, batched inference, and the maps.

Dense clustering activation maps (Xie et al. Sec. 2): ``g_W`` applied at every voxel of the
dense features, skipping the pooling. ``g_W`` is linear and the pooling is a weighted average,
so the mask-average of a dCAM *is* the head's logits on the pooled features. For the baseline
encoder the dCAM is upsampled trilinearly to the input size, and the pooling at its low
resolution uses the mask weights of the transposed trilinear interpolation (``mode="trilinear"``
of :func:`~medclust.models.pooling.masked_average_pool`), which keeps the identity exact there
too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_is_fitted
from torch import nn

from medclust.models.base import BASE_CONSTRAINTS, TorchEstimator
from medclust.models.pooling import masked_average_pool
from medclust.models.unet3d import Encoder3D, UNet3D, matched_encoder_filters
from medclust.validation import Int, Options, Real

#: Volumes per forward pass in inference (feature extraction, predict, dCAMs): the 3D
#: counterpart of ``common.INFER_BATCH``.
INFER_VOLUMES = 4

#: The batch size at which a learning rate ``lr`` is given: Caron et al.'s code trains with
#: ``--lr 0.05`` on batches of ``--batch 256`` (facebookresearch/deepcluster, main.py).
REFERENCE_BATCH = 256


def scaled_lr(lr: float, batch_size: int) -> float:
    """The linear scaling rule (Goyal et al., "Accurate, large minibatch SGD", 2017, Sec. 2.1:
    "when the minibatch size is multiplied by k, multiply the learning rate by k"): the rate
    for ``batch_size`` of a rate ``lr`` given for :data:`REFERENCE_BATCH`. Each sample then
    moves the weights as much as in Caron et al.'s setting: 0.05 at 256 is 0.0015625 at 8."""
    return float(lr) * int(batch_size) / REFERENCE_BATCH


def crop_shape(shape: tuple[int, ...], crop_fraction: float) -> list[int]:
    """Sides of a training crop: ``round(crop_fraction * s)`` (at least 1) for each side ``s``."""
    return [max(1, round(crop_fraction * s)) for s in shape]


def augment_batch(
    X: np.ndarray,
    M: np.ndarray,
    rng: np.random.Generator,
    *,
    crop_fraction: float,
    flip_axis: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Caron et al.'s training augmentation in 3D (their ``cluster_assign``: random crops and
    horizontal flips; Sec. 4 "random horizontal flips and crops of random sizes"): every volume
    of ``X`` ``(B, D, H, W)`` and its mask in ``M`` are cropped to ``round(crop_fraction * s)``
    voxels along each axis at an offset drawn uniformly (without resizing, so lesion sizes in
    mm are kept), and mirrored along ``flip_axis`` (the left-right axis; ``None``: never) with
    probability 1/2. A crop that would leave the lung mask empty is moved to centre on a
    mask voxel. ``crop_fraction = 1`` keeps the whole volume."""
    size = crop_shape(X.shape[1:], crop_fraction)
    xs, ms = [], []
    for x, m in zip(X, M, strict=True):
        spare = [s - c for s, c in zip(x.shape, size, strict=True)]
        offsets = [int(rng.integers(0, k + 1)) for k in spare]
        flip = flip_axis is not None and bool(rng.integers(2))
        box = tuple(slice(o, o + c) for o, c in zip(offsets, size, strict=True))
        if not m[box].any():  # centre the crop on a mask voxel instead
            v = np.argwhere(m)[int(np.count_nonzero(m)) // 2]
            offsets = [
                min(max(int(p) - c // 2, 0), k) for p, c, k in zip(v, size, spare, strict=True)
            ]
            box = tuple(slice(o, o + c) for o, c in zip(offsets, size, strict=True))
        x, m = x[box], m[box]
        if flip:
            x, m = np.flip(x, flip_axis), np.flip(m, flip_axis)
        xs.append(x)
        ms.append(m)
    return np.ascontiguousarray(np.stack(xs)), np.ascontiguousarray(np.stack(ms))


_NETWORKS = ("unet", "encoder")


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


def digest(module: nn.Module) -> str:
    """SHA-256 of a module's state (names and weights): tells re-initialised heads apart."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- shared estimator


class PooledNetwork(TorchEstimator):
    """Network + lung-pooled 1x1x1 head: what :class:`~medclust.models.deepcluster.DeepCluster`
    and :class:`~medclust.models.deepcluster.SupervisedPooledClassifier` share (building,
    training epochs, inference, dCAMs). Subclasses set ``head_`` and implement ``fit``."""

    _constraints = {
        **BASE_CONSTRAINTS,
        "network": Options(*_NETWORKS),
        "base_filters": Int(1),
        "epochs": Int(1),
        "batch_size": Int(1),
        "iters_per_epoch": Int(1, allow_none=True),
        "lr": Real(0.0, low_open=True),
        "momentum": Real(0.0, 1.0, high_open=True),
        "weight_decay": Real(0.0),
        "crop_fraction": Real(0.0, 1.0, low_open=True),
        "flip_axis": Int(0, 2, allow_none=True),
    }

    # ----------------------------------------------------------------- inference API

    def dense_features(self, volumes: Any) -> np.ndarray:
        """Output of the feature network, ``(N, C, d, h, w)`` float32: the dense features
        (input size) for the U-Net, the low-resolution features for the encoder."""
        X = self._inference_input(volumes)
        return self._map(X, None, lambda f, m: f)

    def pooled_features(self, volumes: Any, masks: Any = None) -> np.ndarray:
        """Raw lung-pooled features ``pool(f(x))``, ``(N, C)`` float32."""
        X = self._inference_input(volumes)
        return self._pooled_features(X, as_masks(masks, X.shape))

    def decision_function(self, volumes: Any, masks: Any = None) -> np.ndarray:
        """Logits ``g_W(pool(f(x)))``, ``(N, K)`` float32 (``masks=None``: whole volume)."""
        X = self._inference_input(volumes)
        M = as_masks(masks, X.shape)
        return self._map(X, M, lambda f, m: self._head_logits(self._pool(f, m)))

    def predict(self, volumes: Any, masks: Any = None) -> np.ndarray:
        """Class of the largest logit of the head on the pooled features."""
        return self._label_values(self.decision_function(volumes, masks).argmax(1))

    def predict_pooled(self, pooled: np.ndarray) -> np.ndarray:
        """:meth:`predict` from features already pooled by :meth:`pooled_features` (saves a
        pass through the network when both are needed)."""
        check_is_fitted(self, "head_")
        with torch.no_grad():
            t = torch.as_tensor(np.asarray(pooled, np.float32), device=self.device_)
            logits = self._head_logits(t).cpu().numpy()
        return self._label_values(logits.argmax(1))

    def dcam(self, volumes: Any, masks: Any = None) -> np.ndarray:
        """Dense clustering activation maps (Xie et al., Sec. 2): the head ``g_W`` applied at
        every voxel of the dense features, without pooling, ``(N, K, D, H, W)`` float32.

        For the encoder the maps are computed at its low resolution and upsampled trilinearly
        (``align_corners=False``) to the input size. With ``masks`` the voxels outside are set
        to NaN (transparent in overlays); the mean over the voxels inside then equals
        :meth:`decision_function` (up to float rounding), because ``g_W`` is linear and the
        pooling is a weighted mean.
        """
        X = self._inference_input(volumes)
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

    def _inference_input(self, volumes: Any) -> np.ndarray:
        check_is_fitted(self, "network_")
        X = as_volumes(volumes)
        self._check_size(X.shape)
        return X

    def _new_network(self) -> nn.Module:
        # seeded in a forked RNG (the caller's torch random stream is left alone) and built on
        # the CPU, so the initial weights do not depend on the device
        with self._seeded():
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

    def _batch(self, arr: np.ndarray, idx=slice(None)) -> torch.Tensor:
        t = torch.from_numpy(arr[idx])[:, None].to(self.device_)
        if self.device_.type == "cpu":
            t = t.contiguous(memory_format=torch.channels_last_3d)
        return t

    def _check_size(self, shape: tuple[int, ...], what: str = "volumes") -> None:
        levels = 3 if self.network == "unet" else 4
        if min(shape[1:]) < 2**levels:
            raise ValueError(
                f"{what} must be at least {2**levels} voxels along every axis for the "
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

    def _map(
        self,
        X: np.ndarray,
        M: np.ndarray | None,
        fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    ) -> np.ndarray:
        """``fn(features, mask)`` over batches of ``INFER_VOLUMES`` volumes (no gradients,
        network in eval mode): :meth:`_batched` over the sample indices, which pick the
        volumes and their masks."""
        net = self.network_
        was_training = net.training
        net.eval()

        def run(idx: torch.Tensor) -> torch.Tensor:
            idx = idx.numpy()
            m = None if M is None else self._batch(M, idx)
            return fn(net(self._batch(X, idx)), m).float().contiguous()

        try:
            return self._batched(run, np.arange(len(X)), INFER_VOLUMES, torch.device("cpu"))
        finally:
            net.train(was_training)

    def _pooled_features(self, X: np.ndarray, M: np.ndarray) -> np.ndarray:
        return self._map(X, M, lambda f, m: self._pool(f, m))

    def _train_epoch(
        self,
        X: np.ndarray,
        M: np.ndarray,
        targets: np.ndarray,
        order: np.ndarray,
        optimisers: list[torch.optim.Optimizer],
        rng: np.random.Generator,
    ) -> tuple[float, float]:
        """One pass over ``order`` in minibatches of augmented volumes (:func:`augment_batch`
        with ``crop_fraction`` and ``flip_axis``, drawn from ``rng``): cross-entropy of the
        pooled head's logits (Xie et al. Sec. 2). Returns the mean loss and the fraction of
        correct argmaxes."""
        net, head = self.network_, self.head_
        net.train()
        head.train()
        y_all = torch.from_numpy(targets.astype(np.int64))
        bs = int(self.batch_size)
        loss_sum, correct = 0.0, 0
        for a in range(0, len(order), bs):
            idx = order[a : a + bs]
            xb, mb = augment_batch(
                X[idx], M[idx], rng, crop_fraction=self.crop_fraction, flip_axis=self.flip_axis
            )
            x, m = self._batch(xb), self._batch(mb)
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
            lr=self.lr_,
            momentum=float(self.momentum),
            weight_decay=float(self.weight_decay),
        )

    def _n_draws(self, n: int) -> int:
        return n if self.iters_per_epoch is None else int(self.iters_per_epoch) * self.batch_size

    def _prepare(self, volumes: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
        self._validate_params()
        X = as_volumes(volumes)
        self._check_size(X.shape)
        crop = crop_shape(X.shape[1:], self.crop_fraction)
        self._check_size((len(X), *crop), f"training crops (crop_fraction={self.crop_fraction})")
        M = as_masks(masks, X.shape)
        return X, M

    def _start(self, X: np.ndarray) -> None:
        self._select_device()
        self.input_shape_ = tuple(X.shape[1:])
        self.lr_ = scaled_lr(self.lr, self.batch_size)
        self.network_ = self._new_network()
        self.n_features_out_ = int(self.network_.out_channels)
