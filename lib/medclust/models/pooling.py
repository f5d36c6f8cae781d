"""From dense features to the vectors DeepCluster clusters (Xie et al. Sec. 2, Caron et al.
Sec. 3.2).

* :func:`masked_average_pool` -- the lung-wise pooling of Xie et al. ("average-pool dense
  features within the lungs"), with the mask resized to the feature grid by
  :func:`resize_mask` when the features are coarser (the baseline encoder).
* :class:`FeaturePreprocessing` -- Caron et al.'s preprocessing before k-means: standard
  scaling, and PCA with whitening and L2 normalisation of each row where the feature dimension
  allows it (:func:`whitening_applies`).

References as in :mod:`medclust.models.deepcluster`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)

_POOL_MODES = ("area", "nearest", "trilinear")


# --------------------------------------------------------------------------- lung pooling


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


# --------------------------------------------------------------------------- preprocessing

#: Caron et al. (Sec. 4, and ``preprocess_features`` of their code) PCA-reduce 4096-d AlexNet
#: features to 256 dimensions, whiten them and L2-normalise each row: the features have 16
#: times the kept dimensions. Whitening gives every kept component unit variance and L2
#: normalisation removes one more degree of freedom, which costs little in 256 dimensions but
#: much in a few: on the phantom's 33 HU-histogram features, whitening to 8 dimensions + L2
#: took k-means' accuracy from 0.45 to 0.34, and on 16 pooled channels of an untrained 3D U-Net
#: from 0.36 to 0.29 (issue 16). So the PCA step is used only where the features have at least
#: this many times ``pca_dim`` dimensions, as in Caron et al.; below that they are only
#: standardised.
MIN_REDUCTION = 16


def whitening_applies(n_features: int, pca_dim: int | None) -> bool:
    """Whether :class:`FeaturePreprocessing` PCA-whitens and L2-normalises features of
    ``n_features`` dimensions: only when ``pca_dim`` is set and
    ``n_features >= MIN_REDUCTION * pca_dim`` (Caron et al.'s 4096 = 16 x 256)."""
    return pca_dim is not None and n_features >= MIN_REDUCTION * int(pca_dim)


class FeaturePreprocessing:
    """The features DeepCluster clusters (Caron et al. Sec. 3.2/4; Xie et al. "scaled and
    PCA-reduced"): standard scaling, then -- where :func:`whitening_applies` -- PCA with
    whitening to ``pca_dim`` components and L2 normalisation of each row.

    PCA keeps at most ``n_samples`` components, and components whose variance is below
    ``1e-6`` of the largest are dropped, so whitening never divides by ~0 (a random network's
    pooled features are strongly correlated).

    Attributes after :meth:`fit`: ``scaler_``; ``pca_`` (``None`` when only standardised);
    ``n_features_out_``, the dimension k-means sees.
    """

    def __init__(self, pca_dim: int | None = None, *, seed: int = 0) -> None:
        self.pca_dim = pca_dim
        self.seed = seed

    def fit(self, features: np.ndarray) -> FeaturePreprocessing:
        X = _finite_features(features)
        if len(X) > 1 and not np.any(np.ptp(X, axis=0) > 0):
            raise RuntimeError(
                "the pooled features are identical for every volume (collapsed network)"
            )
        self.scaler_ = StandardScaler().fit(X)
        self.pca_ = None
        if whitening_applies(X.shape[1], self.pca_dim):
            Xs = self.scaler_.transform(X)
            k = min(int(self.pca_dim), len(X))
            pca = self._pca(k).fit(Xs)
            keep = int(
                np.count_nonzero(pca.explained_variance_ > 1e-6 * pca.explained_variance_[0])
            )
            if keep < k:
                log.info("PCA: %d of %d components have ~0 variance; keeping %d", k - keep, k, keep)
                pca = self._pca(keep).fit(Xs)
            self.pca_ = pca
        self.n_features_out_ = X.shape[1] if self.pca_ is None else int(self.pca_.n_components_)
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        Xs = self.scaler_.transform(_finite_features(features))
        return Xs if self.pca_ is None else l2_normalise(self.pca_.transform(Xs))

    def fit_transform(self, features: np.ndarray) -> np.ndarray:
        return self.fit(features).transform(features)

    def _pca(self, k: int) -> PCA:
        return PCA(n_components=k, whiten=True, svd_solver="full", random_state=self.seed)


def _finite_features(features: np.ndarray) -> np.ndarray:
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"features must have shape (n_samples, n_features), got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise RuntimeError("the pooled features contain NaN or inf (training diverged? lower lr)")
    return X


def l2_normalise(Z: np.ndarray) -> np.ndarray:
    """Each row divided by its Euclidean norm (a zero row stays zero)."""
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    return Z / np.maximum(norms, np.finfo(Z.dtype).tiny)
