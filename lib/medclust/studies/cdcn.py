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
   under leave-one-out (Sec. 3), :func:`rf_grade_regression` (Fig. 1, right),
   :func:`lowhigh_tables`;
7. :func:`cluster_importance` -- the random-forest importance of each cluster across the folds
   (Fig. 2) and the four most predictive clusters (Fig. 3);
8. beyond the paper: :func:`texture_recovery`, the clusters against the phantom's true textures;
9. :func:`paper_comparison` and :func:`summary_metrics`.

The notebook's figures (the Figs. 1-3 analogs, training curves, texture confusion) are drawn by
:mod:`medclust.studies.cdcn_figures`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LassoCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from medclust import metrics as cm
from medclust.cohort import Cohort, load_cohort
from medclust.intensity import normalize_in_mask
from medclust.models import DCN
from medclust.patches import sample_cohort_patches, sliding_window_patches
from medclust.runtime import select_device
from medclust.signatures import case_signatures
from medclust.stats import binary_scores, loo_predict, top_k_frequency
from medclust.studies.common import StudyRun, sd_or_zero, start
from medclust.validation import check_int, check_number

log = logging.getLogger(__name__)

#: The clusterings compared, in the order of the metrics' ``texture_*`` entries.
METHODS = ["cdcn", "ae_kmeans", "raw_kmeans"]
#: Row labels of the tables.
LABELS = {
    "cdcn": "cDCN",
    "ae_kmeans": "AE + k-means",
    "raw_kmeans": "raw k-means",
    "true_texture": "true texture classes (ceiling)",
}
#: The low/high scores of Perkonigg et al., Sec. 3.
SCORES = ("accuracy", "sensitivity", "specificity", "f1")
#: ``metrics.json`` (``dvc metrics show``): short name -> dotted path into the metrics.
HEADLINE = {
    "f1": "lowhigh.f1",
    "spec": "lowhigh.specificity",
    "ae_f1": "baseline_lowhigh.f1",
    "km_f1": "raw_kmeans_lowhigh.f1",
    "true_f1": "true_texture_lowhigh.f1",
    "nmi": "texture_nmi.cdcn",
}


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


def evaluate_signature(features: np.ndarray, liver: Liver, n_trees: int, seed: int) -> dict:
    """Leave-one-out on one set of signatures (Sec. 3): random-forest low/high classification
    (``lowhigh`` scores, per-fold ``importances``) and LASSO regression of the grade, its
    penalty chosen by an inner CV on each training fold (``lasso_grade``, its Spearman
    correlation with grade, and ``lasso_empty_folds``: folds where LASSO kept no cluster)."""
    grade, high = liver.grade, liver.high
    forest = RandomForestClassifier(n_estimators=n_trees, random_state=seed, n_jobs=1)
    clf = loo_predict(forest, features, high, seed=seed)
    reg = loo_predict(_lasso(len(liver)), features, grade.astype(float), seed=seed)
    return {
        "lowhigh": binary_scores(high, clf.predictions),
        "importances": clf.importances,
        "lasso_grade": reg.predictions,
        "grade_spearman": spearmanr(grade, reg.predictions).statistic,
        # folds where LassoCV kept no cluster: the prediction is the training mean, which under
        # leave-one-out is anti-correlated with the left-out grade (Spearman near -1)
        "lasso_empty_folds": int((np.abs(reg.importances).sum(axis=1) == 0).sum()),
    }


def leave_one_out(
    signatures: Mapping[tuple[str, int], np.ndarray],
    truth_signature: np.ndarray | None,
    liver: Liver,
    n_trees: int,
    seed: int,
) -> dict[tuple[str, int], dict]:
    """:func:`evaluate_signature` for every ``(method, seed)`` (in sorted order) and, when
    given, for the true texture signature as ``("true_texture", seed)``."""
    results = {}
    for key in tqdm(sorted(signatures), desc="leave-one-out"):
        results[key] = evaluate_signature(signatures[key], liver, n_trees, key[1])
    if truth_signature is not None:
        results["true_texture", seed] = evaluate_signature(truth_signature, liver, n_trees, seed)
    return results


def rf_grade_regression(
    features: np.ndarray, grade: np.ndarray, n_trees: int, seed: int
) -> np.ndarray:
    """Leave-one-out random-forest regression of the grade (Fig. 1, right)."""
    forest = RandomForestRegressor(n_estimators=n_trees, random_state=seed, n_jobs=1)
    return loo_predict(forest, features, grade.astype(float), seed=seed).predictions


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
) -> list[dict[str, Any]]:
    """The paper's headline numbers (Sec. 3: low/high accuracy 0.70, sensitivity 0.78,
    specificity 0.52, F1 0.78; clusters 2, 10, 9, 8; Fig. 1) beside this run's, with the
    baselines and, on a phantom, the true-texture ceiling."""
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
    baseline = "classical baseline, not in the paper"
    for quantity, method, why in [
        ("low/high f1, AE + k-means baseline", "ae_kmeans", baseline),
        ("low/high f1, raw k-means baseline", "raw_kmeans", baseline),
        ("low/high f1, true texture signatures", "true_texture", "ceiling on the phantom"),
    ]:
        if any(m == method for m, _ in results):
            f1 = _mean_sd(results, method, "f1")
            rows.append({"quantity": quantity, "paper": "", "this_run": f1, "note": why})
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
) -> dict[str, Any]:
    """Every metric of the run (``runtime_s`` is added by the notebook): mean low/high scores of
    the cDCN, the baselines and the ceiling, the grade correlation, the top clusters and how
    often they are in the top four, the design counts and the texture recovery."""
    top_fraction = importance.filter(like="_fraction").iloc[:, 0].to_numpy()
    metrics = {
        "lowhigh": _method_mean(results, "cdcn"),
        "baseline_lowhigh": _method_mean(results, "ae_kmeans"),
        "raw_kmeans_lowhigh": _method_mean(results, "raw_kmeans"),
        "grade_spearman": float(_cdcn_spearman(results)),
        "top_clusters": top_clusters,
        "top4_stability": float(np.mean(top_fraction[np.array(top_clusters) - 1])),
        "n_cases": n_cases,
        "n_patches": n_patches,
        "n_windows": n_windows,
        "n_seeds": n_seeds,
    }
    if texture is not None:
        metrics["true_texture_lowhigh"] = _method_mean(results, "true_texture")
        for score in ("nmi", "acc"):
            metrics[f"texture_{score}"] = {
                m: float(texture.loc[texture.method == LABELS[m], score].mean()) for m in METHODS
            }
    return metrics
