"""JULE's forward pass: agglomerative clustering by graph degree linkage (Yang, Parikh and
Batra, CVPR 2016, Sec. 3.3; Zhang et al., ECCV 2012), as :class:`medclust.models.jule.JULE`
runs it on the current CNN features of each partially unrolled period.

* :func:`knn_affinity`: the sparse K_s-nearest-neighbour sample affinity ``W``;
* :func:`initial_clusters`: every sample joined to its nearest neighbour (step 0);
* :class:`GDLMerger`: graph degree linkage between clusters and JULE's merging criterion
  (Eq. 5-7), updated exactly after each merge.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors


def knn_affinity(X: np.ndarray, k_s: int = 20) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sparse K_s-NN affinity ``W`` (n x n, row i holds i's neighbours) and the neighbour
    indices ``(n, k_s)`` sorted by distance (JULE Sec. 3.3)."""
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    n = len(X)
    k = min(int(k_s), n - 1)
    if k < 1:
        raise ValueError(f"need at least 2 samples for a neighbour graph, got {n}")
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    # drop each sample itself (ties with duplicates may put it second: remove by identity)
    not_self = idx != np.arange(n)[:, None]
    keep = np.cumsum(not_self, axis=1) <= k
    sel = not_self & keep
    idx = idx[sel].reshape(n, k)
    d2 = dist[sel].reshape(n, k) ** 2
    sigma2 = float(d2.mean())
    weights = np.exp(-d2 / sigma2) if sigma2 > 0 else np.ones_like(d2)
    W = sp.csr_matrix((weights.ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    return W, idx


def initial_clusters(neighbours: np.ndarray) -> np.ndarray:
    """Labels from linking every sample to its nearest neighbour (components of the 1-NN
    graph), the initialisation of JULE's agglomerative clustering."""
    nn1 = np.asarray(neighbours)[:, 0]
    n = len(nn1)
    graph = sp.csr_matrix((np.ones(n), (np.arange(n), nn1)), shape=(n, n))
    _, labels = connected_components(graph, directed=True, connection="weak")
    return labels.astype(np.int64)


def _in_out(W: sp.csr_matrix, Wt: sp.csr_matrix, members: np.ndarray) -> np.ndarray:
    """``in_C(x) * out_C(x)`` for all x: ``sum_{a in C} W[a, x] * sum_{c in C} W[x, c]``."""
    w_in = np.asarray(W[members].sum(axis=0)).ravel()
    w_out = np.asarray(Wt[members].sum(axis=0)).ravel()
    return w_in * w_out


class GDLMerger:
    """Agglomerative clustering by graph degree linkage with JULE's merging criterion.

    ``D[i, j] = 1^T W_ij W_ji 1`` (paths i -> j -> i through cluster j) is kept dense over the
    current clusters and updated exactly after each merge: ``D[:, m] = D[:, a] + D[:, b]`` and
    ``D[m, :]`` from the in/out degrees of the merged cluster. The symmetric affinity is
    ``A[i, j] = D[i, j] / |C_i|^2 + D[j, i] / |C_j|^2``. Each cluster's ``k_c`` best neighbours
    are cached and recomputed only for the columns a merge touches.
    """

    def __init__(self, W: sp.csr_matrix, labels: np.ndarray, k_c: int = 5, lam: float = 1.0):
        self.W = W.tocsr()
        self.Wt = W.T.tocsr()
        self.labels = np.unique(np.asarray(labels), return_inverse=True)[1].astype(np.int64)
        self.k_c, self.lam = int(k_c), float(lam)
        n, nc = len(self.labels), int(self.labels.max()) + 1
        Y = sp.csr_matrix((np.ones(n), (np.arange(n), self.labels)), shape=(n, nc))
        P = (self.Wt @ Y).tocsr()  # P[x, i] = sum_{a in C_i} W[a, x]
        Q = (self.W @ Y).tocsr()  # Q[x, i] = sum_{c in C_i} W[x, c]
        self.D = ((P.multiply(Q)).T @ Y).toarray().astype(np.float64)
        np.fill_diagonal(self.D, 0.0)
        self.size = np.bincount(self.labels, minlength=nc).astype(np.float64)
        self.active = np.ones(nc, dtype=bool)
        self.A = self._affinity_all()
        k = max(min(self.k_c, nc - 1), 1)
        self.top_val = np.full((nc, k), -np.inf)
        self.top_idx = np.zeros((nc, k), dtype=np.int64)
        self._refresh_top(np.arange(nc))

    @property
    def n_clusters(self) -> int:
        return int(self.active.sum())

    def _affinity_all(self) -> np.ndarray:
        inv = 1.0 / self.size**2
        A = self.D * inv[:, None] + self.D.T * inv[None, :]
        np.fill_diagonal(A, -np.inf)
        return A

    def _refresh_top(self, cols: np.ndarray) -> None:
        k = min(self.k_c, len(self.A) - 1)
        if len(cols) == 0 or k < 1:
            return
        sub = self.A[:, cols].T  # (len(cols), nc)
        part = np.argpartition(-sub, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(sub, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        self.top_idx[cols] = np.take_along_axis(part, order, axis=1)
        self.top_val[cols] = np.take_along_axis(vals, order, axis=1)

    def scores(self) -> np.ndarray:
        """JULE's merging criterion per cluster (``-inf`` for merged-away clusters)."""
        best = self.top_val[:, 0].copy()
        k = self.top_val.shape[1]
        if self.n_clusters > self.k_c and k > 1:
            best += self.lam * (best[:, None] - self.top_val[:, 1:]).sum(axis=1) / (k - 1)
        best[~self.active] = -np.inf
        return best

    def step(self) -> tuple[int, int]:
        """One timestep: merge the chosen pair; returns ``(kept, removed)`` cluster ids."""
        if self.n_clusters < 2:
            raise ValueError("cannot merge: fewer than two clusters remain")
        i = int(np.argmax(self.scores()))
        j = int(self.top_idx[i, 0])
        a, b = min(i, j), max(i, j)
        members_b = self.labels == b
        self.labels[members_b] = a
        self.size[a] += self.size[b]
        self.size[b] = 0.0
        self.active[b] = False
        self.D[:, a] += self.D[:, b]
        members = np.flatnonzero(self.labels == a)
        flow = _in_out(self.W, self.Wt, members)
        self.D[a, :] = np.bincount(self.labels, weights=flow, minlength=len(self.D))
        self.D[a, a] = 0.0
        self.D[b, :] = 0.0
        self.D[:, b] = 0.0
        act = self.active
        row = np.full(len(self.D), -np.inf)
        row[act] = self.D[a, act] / self.size[a] ** 2 + self.D[act, a] / self.size[act] ** 2
        row[a] = -np.inf
        self.A[a, :] = row
        self.A[:, a] = row
        self.A[b, :] = -np.inf
        self.A[:, b] = -np.inf
        touched = (self.top_idx == a) | (self.top_idx == b)
        dirty = touched.any(axis=1) | (row > self.top_val[:, -1])
        dirty[a] = True
        self._refresh_top(np.flatnonzero(dirty & act))
        return a, b

    def merge(self, n_steps: int) -> np.ndarray:
        for _ in range(int(n_steps)):
            self.step()
        return np.unique(self.labels, return_inverse=True)[1]
