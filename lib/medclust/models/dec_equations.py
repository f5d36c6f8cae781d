"""The equations of DEC (Xie, Girshick and Farhadi, "Unsupervised Deep Embedding for Clustering
Analysis", ICML 2016, Sec. 3.1) and DCEC's joint loss, as Quarenghi's thesis writes them
(Sec. 2.2-2.3); the training loop that uses them is :mod:`medclust.models.dec`.

* soft assignment, Student's t kernel (DEC Eq. 1, thesis Eq. 2.3, ``alpha = 1``)::

      q_ij = (1 + |z_i - mu_j|^2 / alpha)^(-(alpha+1)/2) / sum_j' (same for j')

* target distribution (DEC Eq. 3, thesis Eq. 2.5), ``f_j = sum_i q_ij``::

      p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j')

* clustering loss ``L_c = KL(P || Q)`` (DEC Eq. 2, thesis Eq. 2.4). As in Keras' ``kld`` used by
  the reference code of DEC/IDEC/DCEC (github.com/XifengGuo), a minibatch loss is the sum over
  clusters averaged over the samples of the batch;
* joint loss of DCEC / IDEC ``L = L_r + gamma L_c`` (thesis Eq. 2.6), ``L_r`` the per-pixel
  reconstruction MSE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medclust.validation import check_number

__all__ = ["joint_loss", "kl_divergence", "soft_assignment", "target_distribution"]


def log_soft_assignment(z: torch.Tensor, centers: torch.Tensor, alpha: float) -> torch.Tensor:
    """``log q_ij`` of DEC Eq. 1 for tensors (no checks; the training loop's form)."""
    # a log-softmax of -(alpha+1)/2 log(1 + d^2/alpha): exact, and finite however far a point
    # lies from every centre. Squared distances are formed explicitly (no
    # |z|^2 - 2 z.mu + |mu|^2 cancellation).
    d2 = ((z[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    return torch.log_softmax(-0.5 * (alpha + 1.0) * torch.log1p(d2 / alpha), dim=1)


def soft_assignment(z: Any, centers: Any, alpha: float = 1.0) -> Any:
    """Student's t soft assignment ``q_ij`` of DEC Eq. 1 (thesis Eq. 2.3).

    ``z`` is ``(n, d)``, ``centers`` ``(k, d)``; returns ``(n, k)`` with rows summing to 1.
    Torch tensors in, a tensor out (differentiable); NumPy arrays in, a NumPy array out.
    """
    check_number("alpha", alpha, 0, low_open=True)
    if torch.is_tensor(z):
        return log_soft_assignment(z, torch.as_tensor(centers).to(z), float(alpha)).exp()
    zt = torch.as_tensor(np.asarray(z))
    ct = torch.as_tensor(np.asarray(centers)).to(zt)
    return log_soft_assignment(zt, ct, float(alpha)).exp().numpy()


def target_distribution(q: Any) -> Any:
    """Auxiliary target ``p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j')``, ``f_j = sum_i q_ij``
    (DEC Eq. 3, thesis Eq. 2.5). Torch or NumPy, ``(n, k)`` -> ``(n, k)``."""
    if torch.is_tensor(q):
        w = q**2 / q.sum(0, keepdim=True)
        return w / w.sum(1, keepdim=True)
    q = np.asarray(q)
    w = q**2 / q.sum(0, keepdims=True)
    return w / w.sum(1, keepdims=True)


def kl_divergence(p: Any, q: Any) -> Any:
    """``KL(P || Q) = sum_j p_ij log(p_ij / q_ij)`` averaged over the rows ``i`` (DEC Eq. 2,
    thesis Eq. 2.4, normalised per sample like Keras' ``kld``); ``0 log 0 = 0``.

    Torch tensors give a (differentiable) scalar tensor, NumPy arrays a float.
    """
    if torch.is_tensor(q):
        p = torch.as_tensor(p).to(q)
        tiny = torch.finfo(q.dtype).tiny
        return (torch.special.xlogy(p, p) - p * torch.log(q.clamp_min(tiny))).sum(1).mean()
    return float(kl_divergence(torch.as_tensor(np.asarray(p)), torch.as_tensor(np.asarray(q))))


def joint_loss(
    x: torch.Tensor, x_rec: torch.Tensor, p: torch.Tensor, q: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DCEC (and IDEC) objective ``L = L_r + gamma L_c`` (thesis Eq. 2.6) on a minibatch.

    ``L_r`` is the mean squared error per pixel (Keras' ``mse``, the thesis' "MSE error"),
    ``L_c = KL(P || Q)`` per :func:`kl_divergence`. Returns ``(L, L_r, L_c)``.
    """
    rec = ((x_rec - x) ** 2).mean()
    kl = kl_divergence(p, q)
    return rec + gamma * kl, rec, kl
