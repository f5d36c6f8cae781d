"""Study 01: convolutional DCN texture signatures predict steatosis grade.

The glue of ``notebooks/01_cdcn_texture_signatures.ipynb``, named after the steps of
M. Perkonigg, D. Sobotka, A. Ba-Ssalamah, G. Langs, *Unsupervised deep clustering for predictive
texture pattern discovery in medical images*:

1. :func:`load_liver` -- the cohort, its grades and the livers z-scored (Sec. 3, data);
2. :func:`random_patches` -- "50.000 image patches with a size of 14x14mm [...] extracted at
   random positions within the livers" (Sec. 3), the cDCN's training set;
3. :func:`sliding_windows` -- the sliding-window parse of each ROI (Sec. 2);
4. the cDCN itself (:class:`medclust.models.DCN`, called in the notebook) and
   :func:`window_clusters`, which labels the windows with it and with the two classical
   baselines (k-means on the pretrained latent, k-means on the raw patches);
5. signatures (:func:`medclust.signatures.case_signatures`, in the notebook) and, on a phantom,
   :func:`true_texture_signature`, the ceiling any clustering could reach;
6. :func:`leave_one_out` -- random-forest low/high classification and LASSO grade regression
   under leave-one-out (Sec. 3), beside the majority-class floor (:func:`majority_floor`) and
   with balanced accuracy and ROC AUC beside the paper's scores; :func:`rf_grade_regression`
   (Fig. 1, right), :func:`lowhigh_tables`; then, since one leave-one-out pass never shows
   how much a score moves when the forest is refitted, :func:`repeated_cv` (repeated
   stratified 5-fold with refits), whose intervals (:func:`lowhigh_intervals`) and paired
   differences (:func:`differences`) resample the cases, seeds and repeats, and the plain
   sentence (:func:`who_wins`);
7. :func:`cluster_importance` -- the random-forest importance of each cluster across the folds
   (Fig. 2) and the four most predictive clusters (Fig. 3);
8. beyond the paper: :func:`texture_recovery`, the clusters against the phantom's true textures,
   beside :func:`texture_reference` (k-means and a supervised linear probe on window pixels,
   mean and GLCM features: can the classes be told apart at all?), and the ablation on mean-subtracted patches
   (:func:`mean_subtracted`);
9. :func:`paper_comparison` and :func:`summary_metrics`.

The notebook's figures (the Figs. 1-3 analogs, training curves, texture confusion) are drawn by
:mod:`medclust.studies.cdcn_figures`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LassoCV
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from medclust import comparison as cmp
from medclust import metrics as cm
from medclust.cohort import Cohort, load_cohort
from medclust.features.glcm import discretise, glcm_features, glcm_matrices
from medclust.intensity import normalize_in_mask
from medclust.models import DCN
from medclust.patches import sample_cohort_patches, sliding_window_patches
from medclust.runtime import select_device
from medclust.signatures import case_signatures
from medclust.stats import binary_scores, loo_predict, repeated_cv_proba, top_k_frequency
from medclust.studies.common import StudyRun, sd_or_zero, start, verdict_clause
from medclust.validation import check_int, check_number

log = logging.getLogger(__name__)

#: The clusterings compared, in the order of the metrics' ``texture_*`` entries.
METHODS = ["cdcn", "ae_kmeans", "raw_kmeans", "cdcn_centred"]
#: Row labels of the tables: the methods, the floor and the ceiling.
LABELS = {
    "cdcn": "cDCN",
    "ae_kmeans": "AE + k-means",
    "raw_kmeans": "raw k-means",
    "cdcn_centred": "cDCN on mean-subtracted patches (ablation)",
    "majority": "majority class (floor)",
    "true_texture": "true texture classes (ceiling)",
}
#: The low/high scores of Perkonigg et al., Sec. 3, then the two that a floor cannot pass:
#: balanced accuracy and ROC AUC of the leave-one-out probabilities.
SCORES = ("accuracy", "sensitivity", "specificity", "f1", "balanced_accuracy", "auc")
#: Scores with an interval (cases, seeds and cross-validation repeats resampled).
INTERVAL_SCORES = ("f1", "balanced_accuracy", "auc")
#: The scores of the verdicts: those a constant prediction cannot pass (0.5).
VERDICT_SCORES = ("balanced_accuracy", "auc")
#: What the cDCN is compared with, in the sentence's order.
RIVALS = ("majority", "ae_kmeans", "raw_kmeans", "cdcn_centred")
#: Folds of the repeated stratified cross-validation (:func:`repeated_cv`).
CV_FOLDS = 5
#: ``metrics.json`` (``dvc metrics show``): short name -> dotted path into the metrics.
HEADLINE = {
    "f1": "lowhigh.f1",
    "bacc": "lowhigh.balanced_accuracy",
    "auc": "lowhigh.auc",
    "ae_auc": "baseline_lowhigh.auc",
    "km_auc": "raw_kmeans_lowhigh.auc",
    "abl_auc": "ablation_lowhigh.auc",
    "floor_f1": "majority_lowhigh.f1",
    "true_auc": "true_texture_lowhigh.auc",
}
#: Bootstrap resamples of the cases (with seeds and repeats) for every interval and difference.
N_BOOT = 1000
#: Permutations of every chance level of the texture recovery.
N_PERM = 1000


# --------------------------------------------------------------------------- set-up and data


def begin(
    report_dir: str,
    device: str,
    *,
    n_patches: int,
    n_clusters: int,
    n_seeds: int,
    patch_px: int,
    n_trees: int,
    cv_repeats: int,
    seed: int,
    pretrain_epochs: int,
    epochs: int,
    patch_size_mm: float,
    window_stride_mm: float,
) -> StudyRun:
    """Check the params (errors name ``param <name>``) and the device, then open the report.

    Counts must be >= 1; ``seed`` and the epochs >= 0 (0 epochs: no training in that phase);
    the sizes in mm > 0. The DCN's per-epoch log lines are silenced (its progress bars stay).
    """
    for name, value in [("seed", seed), ("pretrain_epochs", pretrain_epochs), ("epochs", epochs)]:
        check_int(f"param {name}", value, 0)
    for name, value in [("patch_size_mm", patch_size_mm), ("window_stride_mm", window_stride_mm)]:
        check_number(f"param {name}", value, 0, low_open=True)
    select_device(device)
    run = start(
        report_dir,
        positive_ints={
            "n_patches": n_patches,
            "n_clusters": n_clusters,
            "n_seeds": n_seeds,
            "patch_px": patch_px,
            "n_trees": n_trees,
            "cv_repeats": cv_repeats,
        },
    )
    logging.getLogger("medclust.models.dcn").setLevel(logging.WARNING)
    return run


@dataclass
class Liver:
    """The cohort with its grades and its livers.

    ``volumes[i]`` is ``(image, roi, spacing, labelmap)`` of case ``i``: the image z-scored
    within the liver, the liver as a boolean mask, the voxel spacing in mm and the true texture
    classes (``None`` for a cohort without them)."""

    cohort: Cohort
    grade: np.ndarray
    volumes: list[tuple[np.ndarray, np.ndarray, tuple, np.ndarray | None]]

    def __len__(self) -> int:
        return len(self.cohort)

    @property
    def case_ids(self) -> list[str]:
        return self.cohort.case_ids

    @property
    def high(self) -> np.ndarray:
        """The paper's two classes: 1 for high (grade 2-3), 0 for low (0-1) steatosis."""
        return (self.grade >= 2).astype(int)

    @property
    def has_truth(self) -> bool:
        """Whether every case has a labelmap of true texture classes (the phantom)."""
        return all(v[3] is not None for v in self.volumes)


def load_liver(cohort: str, label_column: str = "grade") -> Liver:
    """The cohort's cases with a liver mask and a numeric grade; each volume z-scored within its
    liver, since T1 intensities are in arbitrary units (Sec. 3: 70 T1-weighted MRIs, grades
    0/1/2/3 = 1/20/32/17). Leave-one-out needs at least four cases, low and high grades both."""
    data = load_cohort(cohort, ndim=3, require=("mask",))
    grade = data.label_values(label_column).to_numpy()  # no blank grades, or the cases are named
    if not np.issubdtype(grade.dtype, np.number):
        raise ValueError(
            f"{data.root / 'clinical.csv'}: column {label_column!r} must be a numeric grade"
        )
    high = grade >= 2
    if len(data) < 4 or high.min() == high.max():
        raise ValueError(
            f"{data.root}: leave-one-out needs at least 4 cases with both low and high grades"
        )
    volumes = [
        (normalize_in_mask(vol.image, vol.mask), vol.mask > 0, vol.spacing, vol.labelmap)
        for vol in tqdm(data.volumes(), total=len(data), desc="normalising")
    ]
    liver = Liver(data, grade, volumes)
    log.info(
        "%d cases; grades %s; ground-truth texture labels: %s",
        len(data),
        dict(zip(*np.unique(grade, return_counts=True), strict=True)),
        liver.has_truth,
    )
    return liver


@dataclass
class Patches:
    """2D patches with the case (index into :class:`Liver`) and voxel centre of each, and the
    true texture class at the centre (``None`` without ground truth)."""

    patches: np.ndarray
    case: np.ndarray
    centres: np.ndarray
    truth: np.ndarray | None

    def __len__(self) -> int:
        return len(self.patches)


def _truth_at(liver: Liver, case: np.ndarray, centres: np.ndarray) -> np.ndarray | None:
    if not liver.has_truth:
        return None
    labelmaps = [v[3] for v in liver.volumes]
    return np.array([labelmaps[c][x, y, z] for c, (x, y, z) in zip(case, centres, strict=True)])


def random_patches(
    liver: Liver,
    n_patches: int,
    size_mm: float,
    out_px: int,
    seed: int,
    min_inside: float,
) -> Patches:
    """The cDCN's training patches (Sec. 3): ``n_patches`` of ``size_mm`` x ``size_mm`` at random
    positions within the livers, resampled to ``out_px`` px (physical size: each volume's
    spacing converts it to voxels); see :func:`medclust.patches.sample_cohort_patches`."""
    patches, case, centres = sample_cohort_patches(
        [(image, roi, spacing) for image, roi, spacing, _ in liver.volumes],
        n_patches,
        size_mm=size_mm,
        out_px=out_px,
        seed=seed,
        min_inside=min_inside,
        case_ids=liver.case_ids,
    )
    log.info(
        "%d training patches of %dx%d px from %d cases", len(patches), out_px, out_px, len(liver)
    )
    return Patches(patches, case, centres, _truth_at(liver, case, centres))


def sliding_windows(liver: Liver, size_mm: float, stride_mm: float, out_px: int) -> Patches:
    """Every liver parsed "with a sliding window" (Sec. 2) of stride ``stride_mm`` (the paper
    gives none): the positions that make up each case's signature."""
    patches, case, centres = [], [], []
    for i, (image, roi, spacing, _) in enumerate(tqdm(liver.volumes, desc="sliding windows")):
        p, c = sliding_window_patches(image, roi, spacing, size_mm, stride_mm, out_px)
        patches.append(p)
        centres.append(c)
        case.append(np.full(len(p), i))
    patches, case, centres = map(np.concatenate, (patches, case, centres))
    log.info("%d windows, %.0f per case", len(patches), len(patches) / len(liver))
    return Patches(patches, case, centres, _truth_at(liver, case, centres))


# --------------------------------------------------------------------------- clustering


def window_clusters(
    dcn: DCN, train: Patches, windows: Patches, n_clusters: int, seed: int
) -> dict[tuple[str, int], np.ndarray]:
    """The cluster of every window, ``{(method, seed): labels}``, for the fitted cDCN (nearest
    centroid in its latent space) and the two baselines on the same training patches:
    ``ae_kmeans`` (k-means on the pretrained latent, DCN's initialisation) and ``raw_kmeans``
    (k-means on the patch pixels)."""
    labels = {("cdcn", seed): dcn.predict(windows.patches)}
    latent = dcn.pretrained_embedding(windows.patches)
    labels["ae_kmeans", seed] = DCN.nearest(latent, dcn.init_centers_)
    raw = KMeans(n_clusters, n_init=10, random_state=seed)
    raw.fit(train.patches.reshape(len(train.patches), -1))
    labels["raw_kmeans", seed] = raw.predict(windows.patches.reshape(len(windows.patches), -1))
    return labels


def mean_subtracted(patches: Patches) -> Patches:
    """The same patches with each patch's own mean removed (the ablation: without the local
    brightness that every method clusters by, does the cDCN see texture?)."""
    centred = patches.patches - patches.patches.mean(axis=(1, 2), keepdims=True)
    return Patches(centred, patches.case, patches.centres, patches.truth)


def true_texture_signature(liver: Liver, windows: Patches) -> np.ndarray | None:
    """Each case's signature built from the true texture class at every window centre
    (background class 0 dropped): the best signature any clustering of these windows could
    give. ``None`` for a cohort without ground truth."""
    if windows.truth is None:
        return None
    n_truth = int(max(max(liver.cohort.labels, default=0), windows.truth.max())) + 1
    signature = case_signatures(windows.truth, windows.case, len(liver), n_truth, liver.case_ids)
    return signature[:, 1:]


# --------------------------------------------------------------------------- leave-one-out


def _lasso(n_cases: int):
    # inner 5-fold CV chooses the penalty; fewer folds on a cohort too small for five
    return make_pipeline(StandardScaler(), LassoCV(cv=min(5, n_cases - 2), max_iter=20000))


def _lowhigh(high: np.ndarray, p_high: np.ndarray) -> dict[str, float]:
    """The scores of :data:`SCORES` for leave-one-out probabilities of high steatosis; the
    prediction is the more probable class (ties: low), as the forest's own ``predict``."""
    auc = roc_auc_score(high, p_high) if len(np.unique(high)) == 2 else float("nan")
    return {**binary_scores(high, (p_high > 0.5).astype(int)), "auc": float(auc)}


def evaluate_signature(features: np.ndarray, liver: Liver, n_trees: int, seed: int) -> dict:
    """Leave-one-out on one set of signatures (Sec. 3): random-forest low/high classification
    (``p_high``: the out-of-fold probability of high steatosis; ``lowhigh`` scores, per-fold
    ``importances``) and LASSO regression of the grade, its penalty chosen by an inner CV on
    each training fold (``lasso_grade``, its Spearman correlation with grade, and
    ``lasso_empty_folds``: folds where LASSO kept no cluster). The folds run on every core
    (each is seeded: the same result on one)."""
    grade, high = liver.grade, liver.high
    forest = RandomForestClassifier(n_estimators=n_trees, random_state=seed, n_jobs=1)
    clf = loo_predict(forest, features, high, method="predict_proba", seed=seed, n_jobs=-1)
    reg = loo_predict(_lasso(len(liver)), features, grade.astype(float), seed=seed, n_jobs=-1)
    p_high = clf.predictions[:, 1]
    return {
        "p_high": p_high,
        "lowhigh": _lowhigh(high, p_high),
        "importances": clf.importances,
        "lasso_grade": reg.predictions,
        "grade_spearman": spearmanr(grade, reg.predictions).statistic,
        # folds where LassoCV kept no cluster: the prediction is the training mean, which under
        # leave-one-out is anti-correlated with the left-out grade (Spearman near -1)
        "lasso_empty_folds": int((np.abs(reg.importances).sum(axis=1) == 0).sum()),
    }


def majority_floor(liver: Liver) -> dict:
    """The floor of every low/high score: each case called the cohort's majority class with a
    constant probability (F1 0.824 on the paper's 49 high / 21 low; balanced accuracy and AUC
    0.5 whatever the balance). Not the majority of each leave-one-out training fold, which
    flips with the left-out case and scores an AUC of 0 by construction."""
    high = liver.high
    majority = float(np.mean(high) > 0.5)
    p_high = np.full(len(high), majority)
    return {
        "p_high": p_high,
        "lowhigh": _lowhigh(high, p_high),
        "importances": None,
        "lasso_grade": None,
        "grade_spearman": float("nan"),
        "lasso_empty_folds": 0,
    }


def leave_one_out(
    signatures: Mapping[tuple[str, int], np.ndarray],
    truth_signature: np.ndarray | None,
    liver: Liver,
    n_trees: int,
    seed: int,
) -> dict[tuple[str, int], dict]:
    """:func:`evaluate_signature` for every ``(method, seed)`` (in sorted order), the
    majority-class floor as ``("majority", seed)`` and, when given, the true texture signature
    as ``("true_texture", seed)``."""
    results = {}
    for key in tqdm(sorted(signatures), desc="leave-one-out"):
        results[key] = evaluate_signature(signatures[key], liver, n_trees, key[1])
    results["majority", seed] = majority_floor(liver)
    if truth_signature is not None:
        results["true_texture", seed] = evaluate_signature(truth_signature, liver, n_trees, seed)
    return results


def repeated_cv(
    signatures: Mapping[tuple[str, int], np.ndarray],
    truth_signature: np.ndarray | None,
    liver: Liver,
    n_trees: int,
    seed: int,
    n_repeats: int,
) -> dict[str, list[np.ndarray]]:
    """The random forest's out-of-fold probability of high steatosis under ``n_repeats``
    repetitions of stratified :data:`CV_FOLDS`-fold cross-validation (fewer folds where a class
    has fewer cases, at least two), refitted in every fold
    (:func:`medclust.stats.repeated_cv_proba`; the same folds for every signature):
    ``{method: [p_high per (seed, repeat)]}``, seeds in order, repeats within. The majority
    floor is one constant run; the true texture signature has one run per repeat."""
    features = dict(signatures)
    seeds = {key: key[1] for key in signatures}
    if truth_signature is not None:
        features["true_texture", seed] = truth_signature
        seeds["true_texture", seed] = seed
    forest = RandomForestClassifier(n_estimators=n_trees, n_jobs=1)
    # fewer folds on a cohort with fewer cases of a class (at least two folds)
    n_folds = max(2, min(CV_FOLDS, int(np.bincount(liver.high).min())))
    proba = repeated_cv_proba(
        forest,
        features,
        liver.high,
        seeds=seeds,
        n_folds=n_folds,
        n_repeats=n_repeats,
        seed=seed,
        n_jobs=-1,
    )
    out: dict[str, list[np.ndarray]] = {"majority": [majority_floor(liver)["p_high"]]}
    for key in sorted(proba):
        out.setdefault(key[0], []).extend(p[:, 1] for p in proba[key])
    return out


def lowhigh_scores(
    cv: Mapping[str, list[np.ndarray]], liver: Liver, n_boot: int = N_BOOT
) -> cmp.MethodScores:
    """The scores of :data:`INTERVAL_SCORES` of every method's cross-validated probabilities
    (:func:`repeated_cv`) on all cases and on ``n_boot`` bootstrap draws of the cases, drawn
    within low and within high steatosis so that every draw keeps the cohort's balance, and of
    the runs (seeds x repeats): the same draws for every method."""
    high = liver.high
    scores = cmp.MethodScores(cmp.Resamples(len(high), n_boot, strata=high))
    for method, runs in cv.items():
        for score in INTERVAL_SCORES:
            scores.add(method, score, cmp.binary_scores(high, runs, score, scores.resamples))
    return scores


def lowhigh_intervals(scores: cmp.MethodScores) -> pd.DataFrame:
    """Per method (table labels) and score of :data:`INTERVAL_SCORES`: the mean over the runs
    of :func:`repeated_cv` and its 95 % interval (cases, seeds and repeats resampled)."""
    summary = scores.summary()
    return pd.DataFrame(
        [
            {
                "method": LABELS[method],
                "score": score,
                "mean": summary.loc[method, f"{score}_mean"],
                "low": summary.loc[method, f"{score}_ci_low"],
                "high": summary.loc[method, f"{score}_ci_high"],
            }
            for method in summary.index
            for score in INTERVAL_SCORES
        ]
    )


def interval_table(intervals: pd.DataFrame) -> pd.DataFrame:
    """:func:`lowhigh_intervals` as text, ``mean [low, high]``, one row per method and one
    column per score (``tables/lowhigh_intervals``)."""
    text = intervals.assign(
        value=[f"{r.mean:.2f} [{r.low:.2f}, {r.high:.2f}]" for r in intervals.itertuples()]
    )
    table = text.pivot(index="method", columns="score", values="value")
    return table.reindex(index=list(dict.fromkeys(intervals.method)), columns=list(INTERVAL_SCORES))


def differences(scores: cmp.MethodScores) -> list[cmp.Difference]:
    """The cDCN minus each of :data:`RIVALS` (the majority floor, the two baselines, the
    ablation) on balanced accuracy and AUC, paired on the same cases, draws, seeds and
    repeats."""
    return [
        scores.compare("cdcn", rival, score)
        for score in VERDICT_SCORES
        for rival in RIVALS
        if rival in scores.methods
    ]


def who_wins(intervals: pd.DataFrame, diffs: list[cmp.Difference]) -> str:
    """The plain sentence: are the cDCN signatures better or worse than the majority-class
    floor, the two baselines and the mean-subtracted ablation on balanced accuracy and AUC
    (paired differences under repeated cross-validation), with the true-texture ceiling for
    scale."""
    by = intervals.set_index(["method", "score"])

    def show(method: str, score: str) -> str:
        row = by.loc[LABELS[method], score]
        return f"{row['mean']:.2f} [{row.low:.2f}, {row.high:.2f}]"

    parts = []
    for score, name in (("balanced_accuracy", "balanced accuracy"), ("auc", "ROC AUC")):
        against = [
            verdict_clause(d, LABELS, digits=2, runs="seed x repeat runs")
            for d in diffs
            if d.score == score
        ]
        parts.append(f"On {name} the cDCN ({show('cdcn', score)}) " + "; ".join(against))
    text = (
        f"Under {CV_FOLDS}-fold cross-validation repeated with refits, paired on the same "
        "cases, folds, seeds and repeats: " + ". ".join(parts) + "."
    )
    if (LABELS["true_texture"], "auc") in by.index:
        text += (
            f" Signatures of the true texture classes reach an AUC of {show('true_texture', 'auc')}:"
            " the ceiling any clustering of these windows could give."
        )
    return text


def rf_grade_regression(
    features: np.ndarray, grade: np.ndarray, n_trees: int, seed: int
) -> np.ndarray:
    """Leave-one-out random-forest regression of the grade (Fig. 1, right)."""
    forest = RandomForestRegressor(n_estimators=n_trees, random_state=seed, n_jobs=1)
    return loo_predict(forest, features, grade.astype(float), seed=seed, n_jobs=-1).predictions


def mean_std_by_method(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd (over seeds) of every column, one row per method in first-seen order,
    columns ``<column>_mean`` / ``<column>_std``."""
    table = per_seed.drop(columns="seed").groupby("method", sort=False).agg(["mean", "std"])
    table.columns = [f"{a}_{b}" for a, b in table.columns]
    return table.reset_index()


def lowhigh_tables(results: Mapping[tuple[str, int], dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Low/high scores per method and seed (with the LASSO grade correlation) and their mean
    and sd per method."""
    per_seed = pd.DataFrame(
        [
            {
                "method": LABELS[method],
                "seed": s,
                **r["lowhigh"],
                "grade_spearman_lasso": r["grade_spearman"],
                "lasso_empty_folds": r["lasso_empty_folds"],
            }
            for (method, s), r in results.items()
        ]
    )
    return per_seed, mean_std_by_method(per_seed)


def cluster_importance(importances: np.ndarray, k: int = 4) -> tuple[pd.DataFrame, list[int]]:
    """Fig. 2: each cluster's median random-forest importance over the leave-one-out folds and
    the fraction of folds in which it is among the ``k`` most important; and the ``k`` clusters
    of highest median importance (numbered from 1, as in the paper)."""
    median = np.median(importances, axis=0)
    top = [int(c) + 1 for c in np.argsort(-median, kind="stable")[:k]]
    table = pd.DataFrame(
        {
            "cluster": np.arange(1, importances.shape[1] + 1),
            "median_importance": median,
            f"top{k}_fraction": top_k_frequency(importances, k),
        }
    )
    return table, top


# --------------------------------------------------------------------------- beyond the paper


def texture_recovery(
    window_labels: Mapping[tuple[str, int], np.ndarray], truth: np.ndarray
) -> pd.DataFrame:
    """NMI, ARI, Hungarian accuracy and purity of each ``(method, seed)``'s window clusters
    against the true texture class at the window centres."""
    return pd.DataFrame(
        [
            {
                "method": LABELS[method],
                "seed": s,
                **cm.external_scores(truth, labels),
                "purity": cm.purity(truth, labels),
            }
            for (method, s), labels in window_labels.items()
        ]
    )


def texture_chance(
    window_labels: Mapping[tuple[str, int], np.ndarray], truth: np.ndarray, n_perm: int = N_PERM
) -> dict[str, list[cmp.Chance]]:
    """Each method's chance level for :func:`texture_recovery`: Hungarian accuracy, NMI and ARI
    of its window clusters shuffled over the windows (each seed keeping its own cluster
    sizes), as a mean over seeds (:func:`medclust.comparison.chance_level`)."""
    by_method: dict[str, list[np.ndarray]] = {}
    for (method, _), labels in window_labels.items():
        by_method.setdefault(method, []).append(labels)
    return {
        LABELS[method]: [
            cmp.chance_level(truth, labels, score, n_perm=n_perm) for score in cmp.PARTITION_SCORES
        ]
        for method, labels in by_method.items()
    }


#: Texture references: one description of each window, clustered by k-means and probed by a
#: supervised linear classifier (:func:`linear_probe`), scored against the truth.
REFERENCES = {
    "pixels": "window pixels",
    "mean": "window mean",
    "glcm": "window GLCM features",
}
#: Folds of the linear probe, grouped by case.
PROBE_FOLDS = 5
#: GLCM of the texture reference: fixed bin size on the liver-z-scored intensities (IBSI
#: "Intensity discretisation"), -3 to 3 SD in 0.5 SD bins (13 grey levels), distance 1.
GLCM_BINS = {"bin_width": 0.5, "lower": -3.0, "upper": 3.0}


def window_glcm(patches: np.ndarray) -> np.ndarray:
    """IBSI GLCM features (:mod:`medclust.features.glcm`, all 25, "3D merged" over the 4
    in-plane directions that a 2D window has) of each window ``(n, px, px)``."""
    rows = []
    for patch in patches:
        levels, n_levels = discretise(patch[:, :, None], **GLCM_BINS)
        rows.append(list(glcm_features(glcm_matrices(levels, None, n_levels)).values()))
    return np.asarray(rows)


def linear_probe(
    X: np.ndarray, truth: np.ndarray, groups: np.ndarray, n_folds: int = PROBE_FOLDS
) -> float:
    """Balanced accuracy of a linear classifier of the true class from one description ``X`` of
    the windows: LDA with Ledoit-Wolf shrinkage and equal priors over the classes of each
    training fold, on standardised features, in ``n_folds`` folds grouped by case (``groups``:
    no case is both learned and scored; fewer folds with fewer cases, NaN with one case).
    Supervised: it says whether the description holds the classes at all, which k-means on it
    then may or may not find."""
    n_folds = min(n_folds, len(np.unique(groups)))
    if n_folds < 2:
        return float("nan")
    pred = np.empty_like(truth)
    for train, test in GroupKFold(n_folds).split(X, truth, groups):
        classes = np.unique(truth[train])
        lda = LinearDiscriminantAnalysis(
            solver="lsqr", shrinkage="auto", priors=np.full(len(classes), 1.0 / len(classes))
        )
        model = make_pipeline(StandardScaler(), lda)
        with warnings.catch_warnings():
            # a class with one window in a training fold: the shrunk covariance still holds
            warnings.filterwarnings("ignore", message="Only one sample available")
            model.fit(X[train], truth[train])
        pred[test] = model.predict(X[test])
    return float(balanced_accuracy_score(truth, pred))


def texture_reference(
    windows: Patches, n_clusters: int, seeds: list[int], n_sample: int = 4000
) -> pd.DataFrame:
    """How separable the true texture classes are by simple descriptions of the windows (the
    window pixels, the window mean, standardised GLCM features): per seed, on ``n_sample``
    windows drawn with the seed, NMI, ARI, Hungarian accuracy and purity against the class at
    the window centre of k-means (``n_clusters``) on each description, and the balanced
    accuracy of a supervised :func:`linear_probe` (``probe_bacc``). A phantom whose classes no
    description separates cannot test a texture method."""
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(windows), min(n_sample, len(windows)), replace=False))
        patches, truth = windows.patches[pick], windows.truth[pick]
        features = {
            "pixels": patches.reshape(len(patches), -1),
            "mean": patches.mean(axis=(1, 2))[:, None],
            "glcm": StandardScaler().fit_transform(window_glcm(patches)),
        }
        for key, X in features.items():
            labels = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(X)
            rows.append(
                {
                    "method": REFERENCES[key],
                    "seed": seed,
                    **cm.external_scores(truth, labels),
                    "purity": cm.purity(truth, labels),
                    "probe_bacc": linear_probe(X, truth, windows.case[pick]),
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- paper and metrics


def _method_mean(results: Mapping, method: str) -> dict[str, float]:
    return {
        k: float(np.mean([r["lowhigh"][k] for (m, _), r in results.items() if m == method]))
        for k in SCORES
    }


def _mean_sd(results: Mapping, method: str, key: str) -> str:
    values = [r["lowhigh"][key] for (m, _), r in results.items() if m == method]
    return f"{np.mean(values):.2f} ± {sd_or_zero(values):.2f}"


def _cdcn_spearman(results: Mapping) -> float:
    return np.mean([r["grade_spearman"] for (m, _), r in results.items() if m == "cdcn"])


def paper_comparison(
    results: Mapping[tuple[str, int], dict],
    top_clusters: list[int],
    n_cases: int,
    n_patches: int,
    n_seeds: int,
    diffs: list[cmp.Difference] = (),
) -> list[dict[str, Any]]:
    """The paper's headline numbers (Sec. 3: low/high accuracy 0.70, sensitivity 0.78,
    specificity 0.52, F1 0.78; clusters 2, 10, 9, 8; Fig. 1) beside this run's, with the
    baselines and, on a phantom, the true-texture ceiling; and the paper's claim that the
    signatures predict low/high steatosis beside this run's paired difference of the cDCN from
    the majority floor and from the baselines (``diffs``, :func:`differences`)."""
    note = (
        f"phantom cohort ({n_cases} cases, {n_patches} patches, mean ± sd over {n_seeds} seeds); "
        "the paper's 70 patient MRIs and 50,000 patches differ in data and scale"
    )
    paper = {"accuracy": 0.70, "sensitivity": 0.78, "specificity": 0.52, "f1": 0.78}
    rows = [
        {
            "quantity": f"low/high {key}",
            "paper": value,
            "this_run": _mean_sd(results, "cdcn", key),
            "note": note,
        }
        for key, value in paper.items()
    ]
    paper_bacc = (paper["sensitivity"] + paper["specificity"]) / 2
    for key in ("balanced_accuracy", "auc"):
        rows.append(
            {
                "quantity": f"low/high {key.replace('_', ' ')}",
                "paper": f"not reported ({paper_bacc:.2f} from its sensitivity and specificity)"
                if key == "balanced_accuracy"
                else "not reported",
                "this_run": _mean_sd(results, "cdcn", key),
                "note": "0.5 for any constant prediction",
            }
        )
    baseline = "classical baseline, not in the paper"
    for method, why in [
        (
            "majority",
            "floor: every case called the majority class; on the paper's 49 high / 21 low "
            "cases its F1 is 0.82, above the paper's 0.78",
        ),
        ("ae_kmeans", baseline),
        ("raw_kmeans", baseline),
        ("cdcn_centred", "ablation: the cDCN without each patch's mean"),
        ("true_texture", "ceiling on the phantom"),
    ]:
        if any(m == method for m, _ in results):
            scores = " / ".join(
                _mean_sd(results, method, k) for k in ("f1", "balanced_accuracy", "auc")
            )
            rows.append(
                {
                    "quantity": f"low/high f1 / balanced accuracy / AUC, {LABELS[method]}",
                    "paper": "",
                    "this_run": scores,
                    "note": why,
                }
            )
    for d in diffs:
        if d.score != "auc":
            continue
        rows.append(
            {
                "quantity": f"cDCN − {LABELS[d.b]}: low/high AUC",
                "paper": "predictive (F1 0.78)" if d.b == "majority" else "",
                "this_run": f"{d.as_text(2)}: {d.verdict}",
                "note": f"repeated stratified {CV_FOLDS}-fold CV with refits; paired on the same "
                "cases, folds, seeds and repeats",
            }
        )
    rows.append(
        {
            "quantity": "most predictive clusters",
            "paper": "2, 10, 9, 8",
            "this_run": ", ".join(map(str, top_clusters)),
            "note": "cluster numbers are arbitrary; what compares is the stability of the "
            "ranking (fig2)",
        }
    )
    rows.append(
        {
            "quantity": "Spearman(LASSO LOO value, grade)",
            "paper": "correlated (Fig. 1, no number)",
            "this_run": f"{_cdcn_spearman(results):.2f}",
            "note": note,
        }
    )
    return rows


def summary_metrics(
    results: Mapping[tuple[str, int], dict],
    importance: pd.DataFrame,
    top_clusters: list[int],
    texture: pd.DataFrame | None,
    n_cases: int,
    n_patches: int,
    n_windows: int,
    n_seeds: int,
    intervals: pd.DataFrame | None = None,
    reference: pd.DataFrame | None = None,
    diffs: list[cmp.Difference] = (),
    chance: Mapping[str, list[cmp.Chance]] | None = None,
) -> dict[str, Any]:
    """Every metric of the run (``runtime_s`` is added by the notebook): mean low/high scores of
    the cDCN, the baselines and the ceiling, the grade correlation, the top clusters and how
    often they are in the top four, the design counts, the texture recovery, and when given the
    intervals under repeated cross-validation (``lowhigh_ci``, :func:`lowhigh_intervals`), the
    paired differences (``difference``, :func:`differences`; their verdicts are in
    ``tables/differences``), the texture references (``texture_reference_nmi``,
    :func:`texture_reference`) and the texture recovery's chance levels (``texture_chance``,
    :func:`texture_chance`)."""
    top_fraction = importance.filter(like="_fraction").iloc[:, 0].to_numpy()
    metrics = {
        "lowhigh": _method_mean(results, "cdcn"),
        "baseline_lowhigh": _method_mean(results, "ae_kmeans"),
        "raw_kmeans_lowhigh": _method_mean(results, "raw_kmeans"),
        "majority_lowhigh": _method_mean(results, "majority"),
        "grade_spearman": float(_cdcn_spearman(results)),
        "top_clusters": top_clusters,
        "top4_stability": float(np.mean(top_fraction[np.array(top_clusters) - 1])),
        "n_cases": n_cases,
        "n_patches": n_patches,
        "n_windows": n_windows,
        "n_seeds": n_seeds,
    }
    if any(m == "cdcn_centred" for m, _ in results):
        metrics["ablation_lowhigh"] = _method_mean(results, "cdcn_centred")
    keys = {label: key for key, label in LABELS.items()}
    if intervals is not None:
        metrics["lowhigh_ci"] = {
            keys[method]: {r.score: [float(r.low), float(r.high)] for r in rows.itertuples()}
            for method, rows in intervals.groupby("method", sort=False)
        }
    if diffs:
        metrics["difference"] = {
            f"{d.score}_cdcn_vs_{d.b}": {"diff": d.diff, "ci": [d.low, d.high]} for d in diffs
        }
    if chance:
        for score in ("nmi", "acc"):
            metrics[f"texture_chance_{score}"] = {
                keys[m]: next(c.mean for c in cs if c.score == score) for m, cs in chance.items()
            }
    if texture is not None:
        metrics["true_texture_lowhigh"] = _method_mean(results, "true_texture")
        for score in ("nmi", "acc"):
            metrics[f"texture_{score}"] = {
                m: float(texture.loc[texture.method == LABELS[m], score].mean())
                for m in METHODS
                if (texture.method == LABELS[m]).any()
            }
    if reference is not None:
        for score, key in (("nmi", "nmi"), ("probe_bacc", "probe")):
            metrics[f"texture_reference_{key}"] = {
                ref: float(reference.loc[reference.method == name, score].mean())
                for ref, name in REFERENCES.items()
            }
    return metrics
