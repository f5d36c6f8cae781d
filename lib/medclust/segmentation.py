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
    """k-means on the intensities of the specimen voxels (Fig. 4 "k-means")."""
    values = np.asarray(image, dtype=np.float64)[region].reshape(-1, 1)
    out = np.zeros(np.shape(image), dtype=np.int32)
    out[region] = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(values) + 1
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
