"""Study 03: DeepCluster with a 3D U-Net and dense clustering activation maps
(``notebooks/03_deepcluster_dcam.ipynb``).

Xie, Jacobs and van Ginneken, *Deep clustering activation maps for emphysema subtyping* (MIDL
2021 short paper). The notebook runs the method as calls
(:class:`medclust.models.deepcluster.DeepCluster`,
:class:`~medclust.models.deepcluster.SupervisedPooledClassifier`, ``dcam``); this module holds
the glue, named after the paper's steps:

* the params of the run (:func:`start`);
* the scans (:func:`load_scans`, :func:`dataset_counts`): every CT resampled to one grid and
  windowed to the lung window (the paper: 2,000 train / 500 test COPDGene scans);
* the classical baseline's features (:func:`classical_features`): lung HU histogram + %LAA-950;
* Table 1 (:class:`Evaluation`, :func:`table1`): accuracy, NMI, silhouette and Davies-Bouldin
  of each method on the test split, per seed;
* the training curves (:func:`plot_training_curves`), the clusters against the subtypes
  (:func:`confusion`, :func:`plot_confusion`), Fig. 1's dCAMs (:func:`plot_dcams`) and their
  localisation against the phantom's emphysema voxels (:func:`dcam_localisation`);
* the paper's numbers beside this run's (:func:`paper_comparison`) and the metrics
  (:func:`study_metrics`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from medclust import metrics as cm
from medclust.cohort import load_cohort
from medclust.intensity import window
from medclust.models.deepcluster import DeepCluster, SupervisedPooledClassifier
from medclust.runtime import select_device
from medclust.studies.common import StudyRun, mean_sd, mean_sd_table, sd_or_zero
from medclust.studies.common import start as start_run
from medclust.validation import check_int

log = logging.getLogger(__name__)

#: DeepCluster's two feature networks (Xie et al. Sec. 2): method name -> ``network`` param.
NETWORKS = {"proposed": "unet", "baseline": "encoder"}

#: The rows of Table 1, in its order.
NAMES = {
    "baseline": "baseline (encoder)",
    "proposed": "proposed (3D U-Net)",
    "supervised": "supervised reference",
    "classical": "k-means on HU histogram + %LAA",
}

#: The Fleischner subtypes in order of severity (the confusion table's columns).
SUBTYPES = ("absent", "trace", "mild", "moderate", "confluent", "advanced_destructive")

#: Xie et al. Table 1: (accuracy, silhouette, Davies-Bouldin) per method.
PAPER = {
    "baseline": (0.41, 0.44, 0.69),
    "proposed": (0.43, 0.54, 0.55),
    "supervised": (0.45, None, None),
}

#: ``metrics.json`` (dvc metrics show/diff): the headline numbers.
HEADLINE = {
    "acc": "acc.proposed",
    "acc_enc": "acc.baseline",
    "acc_sup": "acc.supervised",
    "acc_hu": "acc.classical",
    "nmi": "nmi.proposed",
    "dcam_auc": "dcam_auc.proposed",
}

#: HU range of the lung histogram of the classical baseline.
HIST_RANGE_HU = (-1000.0, -500.0)


def start(
    report_dir: str,
    *,
    device: str,
    hu_window: tuple[float, float],
    pca_dim: int,
    **positive_ints: int,
) -> tuple[StudyRun, str]:
    """Check the params (the ``positive_ints``; ``pca_dim >= 0``, 0 keeping every PCA
    component; a lung window with ``hu_min < hu_max``), choose the torch device and open the
    report. Returns the run and the device's name (the estimators' ``device``)."""
    check_int("param pca_dim", pca_dim, 0)
    hu_min, hu_max = hu_window
    if not hu_min < hu_max:
        raise ValueError(f"params hu_min ({hu_min}) must be below hu_max ({hu_max})")
    run = start_run(report_dir, positive_ints)
    return run, str(select_device(device))


# --------------------------------------------------------------------------- data


@dataclass
class Scans:
    """The cohort on a common ``input_size``^3 grid (the notebook's Data section)."""

    hu: np.ndarray  #: (N, s, s, s) float32 Hounsfield units
    masks: np.ndarray  #: (N, s, s, s) bool lung masks
    truth_maps: list  #: per scan a bool emphysema map (the phantom's labelmap), or None
    X: np.ndarray  #: (N, s, s, s) float32, the lung window mapped to [0, 1]
    y: np.ndarray  #: (N,) subtype names
    splits: np.ndarray  #: (N,) "train" / "test" / ...
    root: str = ""

    @property
    def train(self) -> np.ndarray:
        return self.splits == "train"

    @property
    def test(self) -> np.ndarray:
        return self.splits == "test"

    @property
    def has_truth_map(self) -> bool:
        return all(m is not None for m in self.truth_maps)

    def inputs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(X, masks)`` of the scans of ``split``: the networks' input."""
        rows = self.splits == split
        return self.X[rows], self.masks[rows]


def _resample(arr: np.ndarray, input_size: int, mode: str) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    if t.shape[-3:] != (input_size,) * 3:
        kw = {"align_corners": False} if mode == "trilinear" else {}
        t = torch.nn.functional.interpolate(t, size=(input_size,) * 3, mode=mode, **kw)
    return t[0, 0].numpy()


def load_scans(
    cohort: str,
    label_column: str,
    split_column: str,
    input_size: int,
    hu_window: tuple[float, float],
) -> Scans:
    """Inspiratory chest CTs with a lung mask each (the paper: manually annotated masks) and
    the subtype and split from ``clinical.csv``; every scan resampled to ``input_size``^3
    (trilinear; masks and emphysema maps nearest) and windowed: ``hu_window`` mapped to [0, 1],
    clipped."""
    data = load_cohort(cohort, ndim=3, require=("mask",))
    for column, param in ((label_column, "label_column"), (split_column, "split_column")):
        if column not in data.clinical.columns:
            raise ValueError(f"{data.root / 'clinical.csv'}: no column {column!r} (param {param})")
    splits = data.clinical[split_column].astype(str).to_numpy()
    if not {"train", "test"} <= set(splits):
        raise ValueError(
            f"{data.root / 'clinical.csv'}: column {split_column!r} needs 'train' and 'test' "
            f"rows, got {sorted(set(splits))}"
        )
    hu, masks, truth_maps = [], [], []
    for volume in data.volumes():
        hu.append(_resample(volume.image, input_size, "trilinear"))
        masks.append(_resample(volume.mask > 0, input_size, "nearest") > 0.5)
        truth_maps.append(
            None
            if volume.labelmap is None
            else _resample(volume.labelmap > 0, input_size, "nearest") > 0.5
        )
        if not masks[-1].any():
            raise ValueError(
                f"case {volume.case_id!r}: the lung mask is empty after resampling to "
                f"{input_size}^3"
            )
    hu, masks = np.stack(hu), np.stack(masks)
    return Scans(
        hu=hu,
        masks=masks,
        truth_maps=truth_maps,
        X=window(hu, *hu_window),
        y=data.label_values(label_column).astype(str).to_numpy(),
        splits=splits,
        root=str(data.root),
    )


def dataset_counts(scans: Scans, label_column: str) -> pd.DataFrame:
    """Scans per subtype and split."""
    return pd.crosstab(pd.Series(scans.y, name=label_column), pd.Series(scans.splits, name="split"))


def classical_features(
    scans: Scans, n_hist_bins: int, laa_threshold_hu: float
) -> tuple[np.ndarray, np.ndarray]:
    """The classical baseline's features: per scan the normalised histogram of lung HU
    (``n_hist_bins`` bins over [-1000, -500] HU) and %LAA-950 (the percentage of lung voxels
    below ``laa_threshold_hu``), standardised on the training scans. Returns the standardised
    features and %LAA."""
    edges = np.linspace(*HIST_RANGE_HU, n_hist_bins + 1)

    def features(hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
        values = hu[mask]
        hist = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0] / len(values)
        return np.r_[hist, 100.0 * np.mean(values < laa_threshold_hu)]

    H = np.stack([features(hu, mask) for hu, mask in zip(scans.hu, scans.masks, strict=True)])
    return StandardScaler().fit(H[scans.train]).transform(H), H[:, -1]


# --------------------------------------------------------------------------- Table 1


class Evaluation:
    """Clustering of the test split by each method and seed (Table 1): one row of scores per
    (method, seed), with the fitted models and the test predictions for the figures."""

    def __init__(self, scans: Scans) -> None:
        self.scans = scans
        self.rows: list[dict] = []
        self.models: dict = {}
        self.predictions: dict = {}
        self.head_predictions: dict = {}

    def add(self, method: str, seed: int, pred: np.ndarray, features: np.ndarray) -> None:
        """Accuracy and NMI of ``pred`` against the test subtypes, silhouette and
        Davies-Bouldin in the space of ``features`` (the test scans')."""
        y_test = self.scans.y[self.scans.test]
        self.predictions[method, seed] = pred
        self.rows.append(
            {
                "method": method,
                "seed": seed,
                "acc": cm.cluster_accuracy(y_test, pred),
                "nmi": cm.nmi(y_test, pred),
                **cm.internal_scores(features, pred, seed=seed),
            }
        )

    def classical(self, seed: int, kmeans: KMeans, features: np.ndarray) -> None:
        """k-means fitted on the training scans' ``features``: the test scans' clusters."""
        test = self.scans.test
        self.add("classical", seed, kmeans.predict(features[test]), features[test])

    def deepcluster(self, method: str, seed: int, model: DeepCluster) -> None:
        """A trained DeepCluster: the training features of the final network are clustered
        once more (the clustering step of an epoch, after the last training epoch) and each
        test scan takes its nearest centroid; silhouette and Davies-Bouldin in that whitened
        feature space. The head's own class on the test scans is kept for the dCAMs."""
        self.models[method, seed] = model
        train, test = self.scans.inputs("train"), self.scans.inputs("test")
        final_kmeans = KMeans(model.n_clusters, n_init=10, random_state=seed)
        final_kmeans.fit(model.transform(*train))
        Z_test = model.transform(*test)
        self.add(method, seed, final_kmeans.predict(Z_test), Z_test)
        self.head_predictions[method, seed] = model.predict(*test)

    def supervised(self, seed: int, model: SupervisedPooledClassifier) -> None:
        """The supervised reference: its predicted subtypes; silhouette and Davies-Bouldin on
        its pooled features, standardised on the training scans."""
        self.models["supervised", seed] = model
        train, test = self.scans.inputs("train"), self.scans.inputs("test")
        pooled = StandardScaler().fit(model.pooled_features(*train))
        self.add(
            "supervised",
            seed,
            model.predict(*test),
            pooled.transform(model.pooled_features(*test)),
        )

    def results(self) -> pd.DataFrame:
        """One row per method and seed: acc, nmi, silhouette, davies_bouldin."""
        return pd.DataFrame(self.rows)


def table1(results: pd.DataFrame) -> pd.DataFrame:
    """Table 1 analog: mean and sd over seeds of each score, one row per method."""
    scores = ["acc", "nmi", "silhouette", "davies_bouldin"]
    return mean_sd_table(results, "method", scores, order=list(NAMES), names=NAMES)


# --------------------------------------------------------------------------- figures


def plot_training_curves(models: dict, seed: int) -> plt.Figure:
    """Loss, accuracy on the pseudo-labels and the NMI between consecutive epochs'
    pseudo-labels (Caron et al. Fig. 2b) of the seed's models."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for method in ("proposed", "baseline"):
        h = models[method, seed].history_
        axes[0].plot(h["loss"], label=method)
        axes[1].plot(h["accuracy"], label=method)
        axes[2].plot(h["nmi_prev"], label=method)
    axes[0].plot(models["supervised", seed].history_["loss"], label="supervised", color="grey")
    titles = ["cross-entropy", "training accuracy on (pseudo-)labels", "NMI(epoch t-1, epoch t)"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set(xlabel="epoch", title=title)
    axes[0].legend(fontsize=7)
    return fig


def confusion(pred: np.ndarray, scans: Scans) -> pd.DataFrame:
    """Test scans per cluster and subtype (subtypes in order of severity)."""
    y = scans.y
    order = [c for c in SUBTYPES if c in set(y)] or sorted(set(y))
    return pd.crosstab(
        pd.Series(pred, name="cluster"), pd.Series(y[scans.test], name="subtype")
    ).reindex(columns=order, fill_value=0)


def plot_confusion(table: pd.DataFrame, pred: np.ndarray, laa_test: np.ndarray) -> plt.Figure:
    """The confusion table as a heatmap beside %LAA-950 per cluster."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    sns.heatmap(table, annot=True, fmt="d", cmap="Blues", ax=axes[0], cbar=False)
    axes[0].set_title("proposed clusters vs Fleischner subtype (test)")
    sns.boxplot(x=pred, y=laa_test, ax=axes[1], color="lightgrey")
    axes[1].set(xlabel="cluster", ylabel="%LAA-950", title="emphysema extent per cluster")
    return fig


# --------------------------------------------------------------------------- dCAMs


def _dcam_auc(scans: Scans, maps: np.ndarray, assigned: np.ndarray) -> tuple[float, int]:
    """Mean over the test scans with emphysema (and healthy lung) of the ROC AUC of the
    ``assigned`` channel of ``maps`` against the true emphysema voxels inside the lung."""
    aucs = []
    for j, i in enumerate(np.flatnonzero(scans.test)):
        lung, truth = scans.masks[i], scans.truth_maps[i]
        t = truth[lung]
        if 0 < t.sum() < t.size:
            aucs.append(roc_auc_score(t, maps[j][assigned[j]][lung]))
    return float(np.mean(aucs)) if aucs else float("nan"), len(aucs)


def dcam_localisation(
    dcams: dict[str, np.ndarray], evaluation: Evaluation, seed: int
) -> pd.DataFrame | None:
    """Localisation of the dCAMs (beyond the paper, which shows them, Fig. 1): per test scan
    the ROC AUC of the dCAM channel of the head's class against the phantom's emphysema
    voxels, for each network, beside a map that needs no learning, low attenuation (-HU).
    ``None`` when the cohort has no emphysema maps."""
    scans = evaluation.scans
    if not scans.has_truth_map:
        return None
    rows = {}
    for method, maps in dcams.items():
        rows[method] = _dcam_auc(scans, maps, evaluation.head_predictions[method, seed])
    n_scored = rows[method][1]
    minus_hu = -scans.hu[scans.test][:, None]
    rows["minus_hu"] = _dcam_auc(scans, minus_hu, np.zeros(int(scans.test.sum()), int))
    return pd.DataFrame([{"map": k, "auc": v[0], "n_scans": n_scored} for k, v in rows.items()])


def plot_dcams(dcams: np.ndarray, evaluation: Evaluation, laa: np.ndarray, seed: int) -> plt.Figure:
    """Fig. 1 analog: coronal slices of two test scans from each of the two proposed clusters
    with the most emphysema (mean %LAA), the CT above, the dCAM channel of the head's class
    below (the true emphysema outlined on the phantom)."""
    scans = evaluation.scans
    test = scans.test
    cluster = evaluation.predictions["proposed", seed]
    head_class = evaluation.head_predictions["proposed", seed]
    by_laa = pd.Series(laa[test]).groupby(cluster).mean().sort_values(ascending=False)
    show = [(k, j) for k in by_laa.index[:2] for j in np.flatnonzero(cluster == k)[:2]]
    fig, axes = plt.subplots(2, len(show), figsize=(2.6 * len(show), 5.2), squeeze=False)
    test_idx = np.flatnonzero(test)
    for c, (k, j) in enumerate(show):
        i = test_idx[j]
        mask = scans.masks[i]
        yslice = int(np.argmax(mask.sum(axis=(0, 2))))
        ct = scans.hu[i][:, yslice, :].T
        cam = np.where(mask[:, yslice, :], dcams[j, head_class[j]][:, yslice, :], np.nan).T
        for r in range(2):
            axes[r, c].imshow(ct, cmap="gray", vmin=-1000, vmax=200, origin="lower")
            axes[r, c].set_axis_off()
        axes[0, c].set_title(f"cluster {k} (head class {head_class[j]}): {scans.y[i]}", fontsize=8)
        axes[1, c].imshow(cam, cmap="inferno", alpha=0.6, origin="lower")
        if scans.has_truth_map:
            truth = scans.truth_maps[i][:, yslice, :].T
            axes[1, c].contour(truth, levels=[0.5], colors="cyan", linewidths=0.6)
    for r, label in enumerate(["CT (coronal)", "dCAM (cyan: true emphysema)"]):
        axes[r, 0].text(
            -0.1, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right"
        )
    return fig


# --------------------------------------------------------------------------- results


def _auc_by_map(auc: pd.DataFrame) -> dict[str, float]:
    return {row.map: float(row.auc) for row in auc.itertuples()}


def paper_comparison(
    results: pd.DataFrame, auc: pd.DataFrame | None, scans: Scans, input_size: int
) -> list[dict]:
    """Xie et al.'s Table 1 (accuracy, silhouette, Davies-Bouldin) beside this run's mean ±
    sd over seeds, and the dCAM localisation (the paper's Fig. 1 is qualitative)."""
    n_seeds = results.seed.nunique()
    note = (
        f"phantom ({int(scans.train.sum())} train / {int(scans.test.sum())} test, "
        f"{input_size}³), mean ± sd over {n_seeds} seeds"
    )
    rows = []
    for method in NAMES:
        sel = results[results.method == method]
        paper = PAPER.get(method, (None, None, None))
        for metric, value in zip(("acc", "silhouette", "davies_bouldin"), paper, strict=True):
            rows.append(
                {
                    "quantity": f"{NAMES[method]}: {metric}",
                    "paper": "" if value is None else value,
                    "this_run": mean_sd(sel[metric]),
                    "note": note if method in PAPER else "not in the paper",
                }
            )
    if auc is not None:
        by_map = _auc_by_map(auc)
        rows.append(
            {
                "quantity": "dCAM localisation AUC (proposed / baseline / −HU)",
                "paper": "qualitative (Fig. 1)",
                "this_run": " / ".join(
                    f"{by_map[m]:.3f}" for m in ("proposed", "baseline", "minus_hu")
                ),
                "note": "first seed; against the phantom's emphysema voxels",
            }
        )
    return rows


def study_metrics(
    results: pd.DataFrame, auc: pd.DataFrame | None, scans: Scans, **settings: int
) -> dict:
    """Mean scores per method, the sd of the accuracy over seeds, the split sizes, the
    ``settings`` (epochs, n_seeds, input_size) and the dCAM AUCs where the cohort has maps."""

    def by_method(metric: str) -> dict[str, float]:
        return {m: float(results[results.method == m][metric].mean()) for m in NAMES}

    metrics = {
        metric: by_method(metric) for metric in ("acc", "nmi", "silhouette", "davies_bouldin")
    }
    metrics["acc_sd"] = {m: sd_or_zero(results[results.method == m].acc) for m in NAMES}
    metrics |= {"n_train": int(scans.train.sum()), "n_test": int(scans.test.sum()), **settings}
    if auc is not None:
        by_map = _auc_by_map(auc)
        metrics["dcam_auc"] = {m: by_map[m] for m in ("proposed", "baseline", "minus_hu")}
    return metrics
