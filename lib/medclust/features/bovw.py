"""Bag of visual words: spatio-visual vocabularies and per-volume word-count histograms.

Study 05 (population clustering of routine lung CT, /work/shared/papers/004_8f822e2a6a11f707.txt,
Sec. 2 "Feature Extraction", item 3 "Bag of Words"): local features (dense Haralick texture,
3D SIFT) are "augment[ed] [...] with their spatial position in the reference space. This
enables to train spatio-visual vocabularies. To account for the different occurrence
frequencies of small and large 3DSIFT features, we train two separate vocabularies, microSIFT
(3DSIFT features with <= 2cm in diameter) and macroSIFT (diameter > 2cm)"; ``f_i^H`` and
``f_i^S`` are the word-count representations of image ``I_i``. The vocabulary is the usual
vector quantisation of the bag-of-visual-words paradigm (Sivic and Zisserman, "Video Google",
ICCV 2003; Csurka et al., "Visual categorization with bags of keypoints", 2004): k-means
centres of the pooled local features, every feature is assigned to its nearest centre (its
*word*) and a volume is summarised by how often each word occurs.

Scaling (why position and appearance weigh alike). :class:`Vocabulary` standardises every
appearance column to zero mean and unit variance over its training features (Haralick
features differ by orders of magnitude; SIFT bins are left comparable). Over ``D`` such columns
two independent features lie ``2 D`` apart in expected squared Euclidean distance.
:func:`augment_with_position` appends the atlas position ``p`` (mm) as
``weight * sqrt(D / 3) * p / scale_mm``; the vocabulary only centres these columns (k-means is
invariant to translations; re-scaling them would undo the weight). With ``scale_mm`` the
per-axis standard deviation of positions over the lungs (:data:`POSITION_SCALE_MM`), the three
position columns then contribute ``2 D weight**2`` as well: ``weight = 1`` gives position and
appearance equal shares of the distance, ``weight = 0`` ignores position, and two features
``scale_mm`` apart along every axis are as far apart as two features one standard deviation
apart in every appearance column.

Separate vocabularies (:data:`FEATURE_KINDS`): ``haralick`` (dense texture), ``micro_sift``
(3D SIFT keypoints of diameter <= :data:`MICRO_MAX_DIAMETER_MM`) and ``macro_sift`` (larger);
:func:`local_features` cuts them out of the per-volume records of
:func:`medclust.population.extract_volume` and augments them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import MiniBatchKMeans

from medclust.validation import Int, Options, check_number, validate

log = logging.getLogger(__name__)

#: Per-axis standard deviation (mm) of positions spread evenly over two lungs, rounded: adult
#: lungs of ~250 (left-right) x 180 (antero-posterior) x 230 mm (cranio-caudal) give
#: ``extent / sqrt(12)`` = 72, 52 and 66 mm (root mean square 64 mm); the lungs of the phantom
#: atlas of :mod:`medclust_phantoms.routine_ct_atlas` give 70, 38 and 58 mm (57 mm).
POSITION_SCALE_MM = 60.0
#: The paper's split of 3D SIFT keypoints: microSIFT <= 2 cm diameter, macroSIFT > 2 cm.
MICRO_MAX_DIAMETER_MM = 20.0
#: The three vocabularies of the paper (Haralick, microSIFT, macroSIFT).
FEATURE_KINDS: tuple[str, ...] = ("haralick", "micro_sift", "macro_sift")
#: Number of appended position columns.
N_POSITION_COLUMNS = 3


# --------------------------------------------------------------------------- checks


def _as_features(x: Any, name: str, n_columns: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2D array (n_features, n_columns), got {arr.shape}")
    if n_columns is not None and arr.shape[1] != n_columns:
        raise ValueError(f"{name} has {arr.shape[1]} columns, expected {n_columns}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def _as_feature_list(features: Any, n_columns: int | None = None) -> list[np.ndarray]:
    if isinstance(features, np.ndarray) or not isinstance(features, Sequence):
        raise ValueError(
            "features must be a list with one (n_i, n_columns) array of local features per "
            f"volume, got {type(features).__name__}"
        )
    if len(features) == 0:
        raise ValueError("features must hold at least one volume, got an empty list")
    out = []
    for i, x in enumerate(features):
        arr = _as_features(x, f"features[{i}]", n_columns)
        if n_columns is None:
            n_columns = arr.shape[1]
        out.append(arr)
    return out


# --------------------------------------------------------------------------- augmentation


def augment_with_position(
    descriptors: Any, atlas_mm: Any, weight: float, scale_mm: float = POSITION_SCALE_MM
) -> np.ndarray:
    """Append the atlas position of each local feature, scaled (study 05, Sec. 2 "Bag of Words":
    "we augment the features with their spatial position in the reference space").

    Parameters
    ----------
    descriptors : (n, D) appearance features (raw; the :class:`Vocabulary` standardises them).
    atlas_mm : (n, 3) positions in atlas space, mm.
    weight : float >= 0. Share of position against appearance in the squared distance of the
        vocabulary: 1 = equal shares, 0 = position ignored (module docstring).
    scale_mm : per-axis spread of positions that counts like one standard deviation of every
        appearance column (default :data:`POSITION_SCALE_MM`).

    Returns
    -------
    (n, D + 3) float64: ``[descriptors, weight * sqrt(D / 3) * atlas_mm / scale_mm]``. Fit the
    :class:`Vocabulary` with ``position_columns=3`` so that it keeps this scaling.
    """
    weight = check_number("weight", weight, 0.0)
    scale_mm = check_number("scale_mm", scale_mm, 0.0, low_open=True)
    desc = _as_features(descriptors, "descriptors")
    pos = _as_features(atlas_mm, "atlas_mm", N_POSITION_COLUMNS)
    if len(pos) != len(desc):
        raise ValueError(
            f"atlas_mm has {len(pos)} rows but descriptors have {len(desc)}: one position per "
            "local feature"
        )
    factor = weight * math.sqrt(desc.shape[1] / N_POSITION_COLUMNS) / scale_mm
    return np.hstack([desc, pos * factor])


def local_features(
    records: Sequence[Mapping[str, Any]],
    kind: str,
    position_weight: float = 1.0,
    micro_max_diameter_mm: float = MICRO_MAX_DIAMETER_MM,
    scale_mm: float = POSITION_SCALE_MM,
) -> list[np.ndarray]:
    """One position-augmented local-feature array per volume for vocabulary ``kind``.

    ``records``: per-volume mappings as :func:`medclust.population.extract_volume` returns them
    (or :func:`medclust.population.load_features` reads back), with ``haralick``,
    ``haralick_pos``, ``sift``, ``sift_pos`` and ``sift_diameter_mm``. ``kind`` is one of
    :data:`FEATURE_KINDS`: ``haralick``; ``micro_sift`` (``diameter <= micro_max_diameter_mm``,
    the paper's 2 cm) or ``macro_sift`` (larger). Feed the result to a :class:`Vocabulary` with
    ``position_columns=3``; a volume without features of the kind gives a ``(0, D + 3)`` array.
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"kind must be one of {FEATURE_KINDS}, got {kind!r}")
    limit = check_number("micro_max_diameter_mm", micro_max_diameter_mm, 0.0, low_open=True)
    out = []
    for i, rec in enumerate(records):
        name = rec.get("case_id", i) if isinstance(rec, Mapping) else i
        try:
            if kind == "haralick":
                desc, pos = rec["haralick"], rec["haralick_pos"]
            else:
                small = np.asarray(rec["sift_diameter_mm"], dtype=np.float64) <= limit
                keep = small if kind == "micro_sift" else ~small
                desc = np.asarray(rec["sift"])[keep]
                pos = np.asarray(rec["sift_pos"])[keep]
        except KeyError as exc:
            raise ValueError(f"record {name!r} lacks {exc.args[0]!r}") from None
        out.append(augment_with_position(desc, pos, position_weight, scale_mm))
    return out


# --------------------------------------------------------------------------- vocabulary


class Vocabulary(TransformerMixin, BaseEstimator):
    """Visual vocabulary: standardisation + mini-batch k-means of pooled local features, and
    word-count histograms per volume (bag of visual words; study 05, Sec. 2 "Bag of Words").

    Parameters
    ----------
    n_words : int
        Vocabulary size (k-means clusters).
    seed : int
        Seeds the per-volume subsampling and the k-means (initialisation and mini-batches).
    batch_size : int
        Mini-batch size of :class:`sklearn.cluster.MiniBatchKMeans` (Sculley, "Web-scale
        k-means clustering", WWW 2010).
    max_per_volume : int or None
        Fit on at most this many local features per volume (drawn without replacement), so
        that volumes with many features do not dominate and memory stays bounded; None = all.
    position_columns : int
        The last ``position_columns`` columns are positions from :func:`augment_with_position`:
        centred only, not rescaled (their scaling carries the position weight). 0 = none.
    standardize : bool
        Standardise the other columns to zero mean and unit variance over the training features
        (constant columns are only centred).
    n_init : int
        k-means++ initialisations; the best (lowest inertia) is kept.
    max_iter : int
        Passes over the training features.

    Attributes
    ----------
    mean_, scale_ : (n_columns,) the fitted standardisation (``scale_ = 1`` for position and
        constant columns).
    cluster_centers_ : (n_words, n_columns) the words, in the standardised space.
    kmeans_ : the fitted :class:`~sklearn.cluster.MiniBatchKMeans`.
    n_features_in_ : number of columns. n_training_features_ : local features used by the fit.
    inertia_ : k-means inertia on the training features.
    """

    _constraints = {
        "n_words": Int(1),
        "seed": Int(0),
        "batch_size": Int(1),
        "max_per_volume": Int(1, allow_none=True),
        "position_columns": Int(0),
        "standardize": Options(bool, np.bool_),
        "n_init": Int(1),
        "max_iter": Int(1),
    }

    def __init__(
        self,
        *,
        n_words: int = 100,
        seed: int = 0,
        batch_size: int = 1024,
        max_per_volume: int | None = None,
        position_columns: int = 0,
        standardize: bool = True,
        n_init: int = 3,
        max_iter: int = 100,
    ) -> None:
        self.n_words = n_words
        self.seed = seed
        self.batch_size = batch_size
        self.max_per_volume = max_per_volume
        self.position_columns = position_columns
        self.standardize = standardize
        self.n_init = n_init
        self.max_iter = max_iter

    def _check_params(self) -> None:
        validate(self, self._constraints)

    def _training_sample(self, volumes: list[np.ndarray]) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        parts = []
        for x in volumes:
            if self.max_per_volume is not None and len(x) > self.max_per_volume:
                pick = np.sort(rng.choice(len(x), size=int(self.max_per_volume), replace=False))
                x = x[pick]
            parts.append(x)
        return np.concatenate(parts, axis=0)

    def fit(self, features: Sequence[Any], y: Any = None) -> Vocabulary:
        """Fit the standardisation and the words on a list of per-volume ``(n_i, C)`` arrays."""
        self._check_params()
        volumes = _as_feature_list(features)
        n_columns = volumes[0].shape[1]
        if self.position_columns > n_columns:
            raise ValueError(
                f"position_columns={self.position_columns} exceeds the {n_columns} feature columns"
            )
        sample = self._training_sample(volumes)
        if len(sample) < self.n_words:
            raise ValueError(
                f"n_words={self.n_words} exceeds the {len(sample)} local features to fit on "
                f"({len(volumes)} volumes)"
            )
        n_appearance = n_columns - int(self.position_columns)
        mean = sample.mean(axis=0)
        scale = np.ones(n_columns)
        if self.standardize:
            sd = sample[:, :n_appearance].std(axis=0)
            scale[:n_appearance] = np.where(sd > 1e-12 * (1.0 + np.abs(mean[:n_appearance])), sd, 1)
        self.mean_, self.scale_ = mean, scale
        self.n_features_in_ = n_columns
        self.n_training_features_ = len(sample)
        self.kmeans_ = MiniBatchKMeans(
            n_clusters=int(self.n_words),
            batch_size=int(self.batch_size),
            n_init=int(self.n_init),
            max_iter=int(self.max_iter),
            random_state=int(self.seed),
        ).fit(self._standardised(sample))
        self.cluster_centers_ = self.kmeans_.cluster_centers_
        self.inertia_ = float(self.kmeans_.inertia_)
        log.info(
            "vocabulary: %d words from %d local features of %d volumes (%d columns)",
            self.n_words,
            len(sample),
            len(volumes),
            n_columns,
        )
        return self

    def _standardised(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) / self.scale_

    def _check_fitted(self) -> None:
        if not hasattr(self, "kmeans_"):
            raise ValueError("this Vocabulary is not fitted yet: call fit first")

    def predict(self, X: Any) -> np.ndarray:
        """Word id (int64, ``0..n_words-1``) of every row of one ``(n, C)`` feature array."""
        self._check_fitted()
        x = _as_features(X, "X", self.n_features_in_)
        if len(x) == 0:
            return np.empty(0, dtype=np.int64)
        return self.kmeans_.predict(self._standardised(x)).astype(np.int64)

    def transform(self, features: Sequence[Any]) -> np.ndarray:
        """Word-count histograms ``(n_volumes, n_words)`` (int64) of per-volume feature arrays:
        row ``i`` counts the words of volume ``i`` and sums to its number of local features."""
        self._check_fitted()
        volumes = _as_feature_list(features, self.n_features_in_)
        counts = np.array([len(x) for x in volumes])
        volume_of = np.repeat(np.arange(len(volumes)), counts)
        words = self.predict(np.concatenate(volumes, axis=0))
        n_words = int(self.n_words)
        flat = np.bincount(volume_of * n_words + words, minlength=len(volumes) * n_words)
        return flat.reshape(len(volumes), n_words).astype(np.int64)

    def fit_transform(self, features: Sequence[Any], y: Any = None, **fit_params) -> np.ndarray:
        return self.fit(features).transform(features)
