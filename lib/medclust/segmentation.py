"""Unsupervised segmentation of one volume by clustering, and its scoring against a labelmap.

The segmentation phase of Moriya et al. (Sec. 2.5, Fig. 3): features of all stride-``s``
grid patches inside the thresholded specimen -> k-means with ``K`` clusters -> every
``s x s x s`` sub-patch takes its patch's label. The two traditional baselines of their Fig. 4
label every specimen voxel by its intensity alone: k-means on intensities and multi-threshold
Otsu (scikit-image). Labels are ``1..K`` inside the specimen and 0 outside.

Scores are NMI as the paper uses it (Strehl and Ghosh 2002: mutual information over the geometric
mean of the entropies) over the ground-truth foreground voxels, either on a few annotated axial
slices (the paper's seven) or on the whole volume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from skimage.filters import threshold_multiotsu
from sklearn.cluster import KMeans
from tqdm.auto import tqdm

from medclust.metrics import nmi
from medclust.patches3d import CUBE_BATCH, cube_view, grid_centres, iter_cubes, project_labels


def grid_features(
    image: np.ndarray,
    region: np.ndarray,
    w: int,
    stride: int,
    embed: Callable[[np.ndarray], np.ndarray],
    verbose: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(m, 3)`` of the stride grid inside ``region`` and the features ``(m, d)``
    that ``embed`` (e.g. ``JULE.transform``) gives their ``w``-cubes, streamed in batches
    (``verbose``: a progress bar over the batches)."""
    centres = grid_centres(region, stride)
    view = cube_view(np.asarray(image, dtype=np.float32), w)
    feats = [
        np.asarray(embed(batch))
        for batch in tqdm(
            iter_cubes(view, centres),
            total=-(-len(centres) // CUBE_BATCH),
            desc="grid features",
            disable=not verbose,
            leave=False,
        )
    ]
    return centres, (np.concatenate(feats) if feats else np.empty((0, 0)))


def window_statistics(image: np.ndarray, centres: np.ndarray, w: int) -> np.ndarray:
    """Mean and standard deviation ``(m, 2)`` of the intensities in the ``w``-cube around each
    centre (the window of a patch, :func:`medclust.patches3d.cube_view`): the classical local
    texture description that a patch-wise method should beat."""
    view = cube_view(np.asarray(image, dtype=np.float32), w)
    parts = [
        np.stack([c.mean(axis=(1, 2, 3)), c.std(axis=(1, 2, 3))], axis=1)
        for c in iter_cubes(view, centres)
    ]
    return np.concatenate(parts).astype(np.float64) if parts else np.empty((0, 2))


def subpatch_composition(
    labelmap: np.ndarray, centres: np.ndarray, stride: int, n_classes: int
) -> np.ndarray:
    """Fraction of each true class ``1..n_classes`` among the labelled voxels of the ``s``-cube
    around each grid centre ``(m, n_classes)``: the sub-patch that the label projection paints
    (Sec. 2.5). k-means on it is the ceiling of any patch-wise segmentation; a sub-patch
    without a labelled voxel is all zeros."""
    view = cube_view(np.asarray(labelmap, dtype=np.int32), stride)
    parts = []
    for cubes in iter_cubes(view, centres):
        flat = cubes.reshape(len(cubes), -1).astype(np.int64)
        counts = np.stack([(flat == c).sum(1) for c in range(1, n_classes + 1)], axis=1)
        parts.append(counts / np.maximum(counts.sum(1, keepdims=True), 1))
    return np.concatenate(parts) if parts else np.empty((0, n_classes))


def kmeans_segmentation(
    shape: Sequence[int],
    centres: np.ndarray,
    features: np.ndarray,
    n_clusters: int,
    stride: int,
    seed: int = 0,
) -> np.ndarray:
    """k-means of the patch features, labels projected onto ``s``-cubes (labels ``1..K``)."""
    labels = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(features)
    return project_labels(tuple(shape), centres, labels + 1, stride)


def intensity_kmeans_segmentation(
    image: np.ndarray, region: np.ndarray, n_clusters: int, seed: int = 0
) -> np.ndarray:
    """k-means on the intensities of the specimen voxels (Fig. 4 "k-means"). The voxels are
    clustered as their distinct values weighted by their counts: the same objective as one point
    per voxel, and fast on integer scanner units."""
    values, inverse, counts = np.unique(
        np.asarray(image, dtype=np.float64)[region], return_inverse=True, return_counts=True
    )
    km = KMeans(n_clusters, n_init=10, random_state=seed)
    labels = km.fit_predict(values.reshape(-1, 1), sample_weight=counts)
    out = np.zeros(np.shape(image), dtype=np.int32)
    out[region] = labels[inverse.ravel()] + 1
    return out


def multi_otsu_segmentation(
    image: np.ndarray, region: np.ndarray, n_classes: int, nbins: int = 64
) -> np.ndarray:
    """Multi-threshold Otsu (Otsu 1979; ``skimage.filters.threshold_multiotsu``) on the
    specimen voxels' histogram, ``n_classes >= 2`` classes. The exhaustive search grows as
    ``nbins ** (n_classes - 1)``: with 64 bins six classes take 0.1 s, with 256 bins 130 s."""
    values = np.asarray(image, dtype=np.float64)[region]
    thresholds = threshold_multiotsu(values, classes=n_classes, nbins=nbins)
    out = np.zeros(np.shape(image), dtype=np.int32)
    out[region] = np.digitize(values, thresholds) + 1
    return out


def segmentation_nmi(
    truth: np.ndarray, pred: np.ndarray, slices: Sequence[int] | None = None
) -> float:
    """NMI (geometric normalisation, Strehl and Ghosh) between ``pred`` and ``truth`` over the
    ground-truth foreground (``truth > 0``) of the given axial ``slices`` (last axis), or of the
    whole volume when ``slices`` is None. Foreground voxels a method left unlabelled (0) count
    as one more cluster."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth shape {truth.shape} differs from prediction {pred.shape}")
    if slices is not None:
        idx = np.asarray(list(slices), dtype=np.int64)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= truth.shape[-1]:
            raise ValueError(f"slices {list(slices)} outside 0..{truth.shape[-1] - 1}")
        truth, pred = truth[..., idx], pred[..., idx]
    fg = truth > 0
    if not fg.any():
        raise ValueError("no ground-truth foreground voxel to score")
    return nmi(truth[fg], pred[fg], average_method="geometric")


def slice_contingency(
    truth: np.ndarray, pred: np.ndarray, slices: Sequence[int], n_true: int, n_pred: int
) -> np.ndarray:
    """Contingency tables ``(len(slices), n_true + 1, n_pred + 1)``: per axial slice, the
    ground-truth foreground voxels counted by true label ``0..n_true`` and predicted label
    ``0..n_pred``. Summed over any subset of slices they give :func:`segmentation_nmi` on that
    subset (:func:`medclust.metrics.nmi_from_contingency`, geometric), which is what a bootstrap
    over the annotated slices needs."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    tables = np.zeros((len(slices), n_true + 1, n_pred + 1), dtype=np.int64)
    for i, z in enumerate(slices):
        t, p = truth[..., z], pred[..., z]
        fg = t > 0
        codes = t[fg].astype(np.int64) * (n_pred + 1) + p[fg]
        tables[i] = np.bincount(codes, minlength=tables[i].size).reshape(tables[i].shape)
    return tables


def annotated_slices(value, *, depth: int | None = None) -> list[int]:
    """Axial slice indices of a ``clinical.csv`` ``annotated_slices`` entry.

    ``"12;25;38"`` gives ``[12, 25, 38]``; a single index may arrive as an integer (pandas reads
    a one-slice column as numbers). With ``depth`` (slices in the volume) every index must be
    below it. Raises ``ValueError`` naming ``annotated_slices`` for empty, non-integer,
    negative, duplicate or out-of-range entries.
    """

    def bad(msg: str) -> ValueError:
        return ValueError(f"annotated_slices {msg}, got {value!r}")

    if isinstance(value, bool):
        raise bad("must be a ';'-separated string of slice indices")
    if isinstance(value, int | np.integer):
        items = [int(value)]
    elif isinstance(value, float | np.floating):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise bad("must be a ';'-separated string of slice indices (empty or non-integer)")
        items = [int(value)]
    elif isinstance(value, str):
        tokens = [t.strip() for t in value.split(";")]
        if not value.strip() or not all(t.isdigit() and t.isascii() for t in tokens):
            raise bad("must be a ';'-separated string of non-negative integer slice indices")
        items = [int(t) for t in tokens]
    else:
        raise bad("must be a ';'-separated string of slice indices")
    if min(items) < 0:
        raise bad("must hold non-negative slice indices")
    if len(set(items)) != len(items):
        raise bad("must not repeat a slice")
    if depth is not None and max(items) >= depth:
        raise bad(f"must index slices below the volume depth {depth}")
    return items
