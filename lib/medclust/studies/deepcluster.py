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
* Table 1 (:class:`Evaluation`, :func:`table1`, :func:`who_wins`): accuracy, NMI, silhouette
  and Davies-Bouldin of each method on the test split, per seed, with 95 % bootstrap intervals
  over the test scans, beside the one-cluster floor, the untrained network, the classical
  baseline and the true-severity ceiling;
* the training curves (:func:`plot_training_curves`) and the pseudo-label stability of Caron
  et al.'s Fig. 2 (:func:`plot_pseudo_label_stability`), the clusters against the subtypes
  (:func:`confusion`, :func:`plot_confusion`), Fig. 1's dCAMs (:func:`plot_dcams`) and their
  localisation against the phantom's emphysema voxels (:func:`dcam_localisation`,
  :func:`dcam_sentence`);
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
from sklearn import metrics as skm
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from medclust import metrics as cm
from medclust.cohort import load_cohort
from medclust.intensity import window
from medclust.models.deepcluster import DeepCluster, SupervisedPooledClassifier
from medclust.runtime import select_device
from medclust.studies.common import StudyRun, compare_intervals, mean_sd_table, sd_or_zero
from medclust.studies.common import start as start_run
from medclust.validation import check_int

log = logging.getLogger(__name__)

#: DeepCluster's two feature networks (Xie et al. Sec. 2): method name -> ``network`` param.
NETWORKS = {"proposed": "unet", "baseline": "encoder"}

#: The rows of Table 1, in its order: the floor, the references that learn nothing from the
#: scans' pseudo-labels, the two DeepCluster networks, the supervised reference, the ceiling.
NAMES = {
    "one_cluster": "one cluster (floor)",
    "classical": "k-means on HU histogram + %LAA",
    "untrained": "untrained 3D U-Net + k-means",
    "baseline": "baseline (encoder)",
    "proposed": "proposed (3D U-Net)",
    "supervised": "supervised reference",
    "true_severity": "k-means on the true severity (ceiling)",
}

#: Bootstrap resamples of the test scans for every interval.
N_BOOT = 1000

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
    "acc_floor": "acc.one_cluster",
    "acc_ceil": "acc.true_severity",
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
    """Check the params (the ``positive_ints``; ``pca_dim >= 0``, 0 standardising the pooled
    features without PCA whatever their dimension; a lung window with ``hu_min < hu_max``), choose the torch device and open the
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
    severity: np.ndarray | None = None  #: (N,) the latent severity (phantom), or None

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
    severity_column: str = "",
) -> Scans:
    """Inspiratory chest CTs with a lung mask each (the paper: manually annotated masks) and
    the subtype and split from ``clinical.csv``; every scan resampled to ``input_size``^3
    (trilinear; masks and emphysema maps nearest) and windowed: ``hu_window`` mapped to [0, 1],
    clipped. ``severity_column`` (``""``: none) names the latent severity of a phantom, the
    ceiling's feature."""
    data = load_cohort(cohort, ndim=3, require=("mask",))
    columns = [(label_column, "label_column"), (split_column, "split_column")]
    if severity_column:
        columns.append((severity_column, "severity_column"))
    for column, param in columns:
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
        severity=(data.clinical[severity_column].to_numpy(float) if severity_column else None),
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
    (method, seed), with the fitted models, the test predictions and the points the internal
    scores are measured on (for the intervals and figures)."""

    def __init__(self, scans: Scans) -> None:
        self.scans = scans
        self.rows: list[dict] = []
        self.models: dict = {}
        self.predictions: dict = {}
        self.points: dict = {}
        self.head_predictions: dict = {}

    @property
    def y_test(self) -> np.ndarray:
        return self.scans.y[self.scans.test]

    def add(self, method: str, seed: int, pred: np.ndarray, points: np.ndarray | None) -> None:
        """Accuracy and NMI of ``pred`` against the test subtypes, silhouette and
        Davies-Bouldin in the space of ``points`` (the test scans'; ``None``: not defined)."""
        pred = np.asarray(pred)
        self.predictions[method, seed] = pred
        self.points[method, seed] = points
        internal = (
            {"silhouette": np.nan, "davies_bouldin": np.nan}
            if points is None
            else cm.internal_scores(points, pred, seed=seed)
        )
        self.rows.append(
            {
                "method": method,
                "seed": seed,
                "acc": cm.cluster_accuracy(self.y_test, pred),
                "nmi": cm.nmi(self.y_test, pred),
                **internal,
            }
        )

    def one_cluster(self, seed: int) -> None:
        """The floor: every test scan in one cluster (its accuracy is the largest subtype's
        share; silhouette and Davies-Bouldin are undefined)."""
        self.add("one_cluster", seed, np.zeros(int(self.scans.test.sum()), np.int64), None)

    def classical(self, seed: int, n_clusters: int, features: np.ndarray) -> None:
        """k-means with ``n_clusters`` fitted on the training scans' ``features`` (all scans'
        rows): the test scans' clusters."""
        train, test = self.scans.train, self.scans.test
        km = KMeans(n_clusters, n_init=10, random_state=seed).fit(features[train])
        self.add("classical", seed, km.predict(features[test]), features[test])

    def true_severity(self, seed: int, n_clusters: int) -> None:
        """The ceiling: k-means with ``n_clusters`` on the phantom's latent severity, fitted on
        the training scans. The images are rendered from the severity, not from the subtype,
        and neighbouring subtypes overlap in severity, so even a perfect reading of it confuses
        them: this is what clustering the disease the images show can reach."""
        sev = self.scans.severity
        if sev is None:
            return
        z = StandardScaler().fit(sev[self.scans.train, None]).transform(sev[:, None])
        km = KMeans(n_clusters, n_init=10, random_state=seed).fit(z[self.scans.train])
        self.add("true_severity", seed, km.predict(z[self.scans.test]), z[self.scans.test])

    def deepcluster(self, method: str, seed: int, model: DeepCluster) -> None:
        """A fitted DeepCluster (``epochs=0``: the untrained network): each test scan takes
        the nearest centroid of the final clustering of the training scans
        (:meth:`~medclust.models.deepcluster.DeepCluster.assign`); silhouette and
        Davies-Bouldin in that feature space. The head's own class on the test scans is kept
        for the dCAMs of trained networks."""
        self.models[method, seed] = model
        pooled = model.pooled_features(*self.scans.inputs("test"))
        Z_test = model.transform_pooled(pooled)
        self.add(method, seed, model.kmeans_.predict(Z_test), Z_test)
        if model.epochs > 0:
            self.head_predictions[method, seed] = model.predict_pooled(pooled)

    def supervised(self, seed: int, model: SupervisedPooledClassifier) -> None:
        """The supervised reference: its predicted subtypes; silhouette and Davies-Bouldin on
        its pooled features, standardised on the training scans."""
        self.models["supervised", seed] = model
        train, test = self.scans.inputs("train"), self.scans.inputs("test")
        scaler = StandardScaler().fit(model.pooled_features(*train))
        pooled = model.pooled_features(*test)
        self.add("supervised", seed, model.predict_pooled(pooled), scaler.transform(pooled))

    def results(self) -> pd.DataFrame:
        """One row per method and seed: acc, nmi, silhouette, davies_bouldin."""
        return pd.DataFrame(self.rows)

    def intervals(self, level: float = 0.95, n_boot: int = N_BOOT) -> pd.DataFrame:
        """95 % bootstrap intervals over the test scans of each score's mean over seeds (the
        same resamples for every method and score; percentile intervals shifted by the
        bootstrap bias, :func:`~medclust.metrics.bootstrap_statistic`): accuracy and NMI of
        the predictions, the mean per-scan silhouette value, Davies-Bouldin recomputed on the
        resampled points. One row per method; columns ``<score>_ci_low`` / ``_ci_high``."""
        y = self.y_test
        rows = []
        for method in dict.fromkeys(m for m, _ in self.predictions):
            seeds = [s for m, s in self.predictions if m == method]
            statistics = _resampled_scores(
                y,
                [self.predictions[method, s] for s in seeds],
                [self.points[method, s] for s in seeds],
            )
            row = {"method": method}
            for score, statistic in statistics.items():
                lo, hi = cm.bootstrap_statistic(
                    len(y), statistic, n_boot=n_boot, level=level, correct_bias=True
                )
                row |= {f"{score}_ci_low": lo, f"{score}_ci_high": hi}
            rows.append(row)
        return pd.DataFrame(rows).set_index("method")


def _resampled_scores(y: np.ndarray, preds: list, points: list) -> dict:
    """``{score: statistic(idx)}``: each score's mean over the seeds' ``preds`` on the test
    scans ``idx`` (acc, NMI; with ``points``, the mean per-scan silhouette value and
    Davies-Bouldin recomputed on the resampled points)."""
    y_codes = np.unique(y, return_inverse=True)[1]
    codes = [np.unique(p, return_inverse=True)[1] for p in preds]
    scores = {
        "acc": lambda idx: np.mean([cm.cluster_accuracy(y[idx], p[idx]) for p in preds]),
        "nmi": lambda idx: np.mean([_nmi(y_codes[idx], c[idx]) for c in codes]),
    }
    if points[0] is not None:
        pairs = list(zip(points, preds, strict=True))
        sil = [_silhouette_values(z, p) for z, p in pairs]
        scores["silhouette"] = lambda idx: np.mean([v[idx].mean() for v in sil])
        scores["davies_bouldin"] = lambda idx: np.mean(
            [cm.davies_bouldin(z[idx], p[idx]) for z, p in pairs]
        )
    return scores


def _nmi(y_codes: np.ndarray, p_codes: np.ndarray) -> float:
    """NMI of two integer-coded labelings (:func:`~medclust.metrics.nmi_from_contingency`)."""
    k = int(p_codes.max()) + 1
    table = np.bincount(y_codes * k + p_codes, minlength=(int(y_codes.max()) + 1) * k)
    return cm.nmi_from_contingency(table.reshape(-1, k))


def _silhouette_values(points: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-scan silhouette values (NaN-free; zeros for a single cluster)."""
    if np.unique(pred).size < 2:
        return np.zeros(len(pred))
    return skm.silhouette_samples(points, pred)


def table1(results: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """Table 1 analog: per method (rows in :data:`NAMES` order) the mean and sd over seeds of
    each score and its bootstrap interval."""
    scores = ["acc", "nmi", "silhouette", "davies_bouldin"]
    stats = mean_sd_table(
        results, "method", scores, order=[m for m in NAMES if m in set(results.method)]
    )
    table = stats.join(intervals)
    columns = [f"{s}_{part}" for s in scores for part in ("mean", "std", "ci_low", "ci_high")]
    table = table[[c for c in columns if c in table.columns]]
    table.index = [NAMES[m] for m in table.index]
    return table


def _verdict(table: pd.DataFrame, a: str, b: str, score: str = "acc") -> str:
    """How method ``a`` compares with ``b`` on ``score`` (intervals apart or overlapping)."""
    lo, hi = table[f"{score}_ci_low"], table[f"{score}_ci_high"]
    na, nb = NAMES[a], NAMES[b]
    return {1: "beats", -1: "is worse than", 0: "cannot be told apart from"}[
        compare_intervals((lo[na], hi[na]), (lo[nb], hi[nb]))
    ]


def who_wins(table: pd.DataFrame) -> str:
    """Plain sentences from :func:`table1`: does the 3D U-Net beat the encoder baseline, the
    untrained network and the classical baseline here, and where do they sit between the
    floor and the ceiling?"""
    acc, lo, hi = table["acc_mean"], table["acc_ci_low"], table["acc_ci_high"]

    def show(method: str) -> str:
        name = NAMES[method]
        return f"{name} {acc[name]:.3f} [{lo[name]:.3f}, {hi[name]:.3f}]"

    rivals = [
        m for m in ("one_cluster", "baseline", "untrained", "classical") if NAMES[m] in acc.index
    ]
    parts = [f"{_verdict(table, 'proposed', m)} {NAMES[m]}" for m in rivals]
    text = (
        f"On test accuracy (mean over seeds, 95 % bootstrap interval over the test scans) the "
        f"proposed 3D U-Net {'; '.join(parts)}: {show('proposed')}, "
        + ", ".join(show(m) for m in rivals)
        + "."
    )
    more = []
    if NAMES["supervised"] in acc.index:
        more.append(f"the supervised reference scores {acc[NAMES['supervised']]:.3f}")
    if NAMES["true_severity"] in acc.index:
        more.append(f"k-means on the true severity (ceiling) {acc[NAMES['true_severity']]:.3f}")
    return text + (f" For scale: {' and '.join(more)}." if more else "")


# --------------------------------------------------------------------------- figures


def plot_training_curves(models: dict, seed: int) -> plt.Figure:
    """Loss and accuracy on the (pseudo-)labels per epoch of the seed's trained models: a
    head that fits its pseudo-labels climbs well above chance (1/K)."""
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3))
    for method in ("proposed", "baseline", "supervised"):
        h = models[method, seed].history_
        style = {"color": "grey"} if method == "supervised" else {}
        axes[0].plot(np.arange(1, len(h["loss"]) + 1), h["loss"], label=method, **style)
        axes[1].plot(np.arange(1, len(h["loss"]) + 1), h["accuracy"], label=method, **style)
    k = models["proposed", seed].n_clusters
    axes[0].axhline(np.log(k), color="k", lw=0.6, ls=":", label="ln K (chance)")
    axes[1].axhline(1 / k, color="k", lw=0.6, ls=":")
    for ax, title in zip(
        axes, ["cross-entropy", "training accuracy on (pseudo-)labels"], strict=True
    ):
        ax.set(xlabel="epoch", title=title)
    axes[0].legend(fontsize=7)
    return fig


def pseudo_label_stability(models: dict, scans: Scans) -> pd.DataFrame:
    """Per trained DeepCluster model and epoch (Caron et al. Fig. 2): the NMI between the
    pseudo-labels of epochs t-1 and t (2b, stability), and between the pseudo-labels and the
    true subtypes of the training scans (2a)."""
    y = scans.y[scans.train]
    rows = []
    for (method, seed), model in models.items():
        if method not in NETWORKS:
            continue
        h = model.history_
        for epoch, (labels, prev) in enumerate(zip(h["labels"], h["nmi_prev"], strict=True)):
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "epoch": epoch + 1,
                    "nmi_prev": prev,
                    "nmi_truth": cm.nmi(y, labels),
                }
            )
    return pd.DataFrame(rows)


def plot_pseudo_label_stability(stability: pd.DataFrame) -> plt.Figure:
    """Caron et al. Fig. 2 analog: NMI(t-1, t) and NMI to the true subtypes per epoch, one thin
    line per seed and the mean over seeds for each network."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharex=True)
    for method, color in (("proposed", "C0"), ("baseline", "C1")):
        sel = stability[stability.method == method]
        for column, ax in zip(("nmi_prev", "nmi_truth"), axes, strict=True):
            for _, one in sel.groupby("seed"):
                ax.plot(one.epoch, one[column], color=color, lw=0.6, alpha=0.4)
            mean = sel.groupby("epoch")[column].mean()
            ax.plot(mean.index, mean.to_numpy(), color=color, lw=2, label=NAMES[method])
    axes[0].set(title="NMI(pseudo-labels t-1, t)  (Caron Fig. 2b)", xlabel="epoch", ylim=(0, 1))
    axes[1].set(title="NMI(pseudo-labels, true subtype)  (Fig. 2a)", xlabel="epoch")
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


def _scan_aucs(scans: Scans, maps_of, test_rows: np.ndarray) -> np.ndarray:
    """Per test scan with emphysema and healthy lung: the ROC AUC of its map (``maps_of(j)``
    for the j-th test scan, a ``(D, H, W)`` array) against the true emphysema voxels inside
    the lung."""
    aucs = []
    for j, i in enumerate(test_rows):
        lung, truth = scans.masks[i], scans.truth_maps[i]
        t = truth[lung]
        if 0 < t.sum() < t.size:
            aucs.append(roc_auc_score(t, maps_of(j)[lung]))
    return np.asarray(aucs)


def dcam_aucs(model, scans: Scans, head_class: np.ndarray, chunk: int = 50) -> np.ndarray:
    """Per-scan AUC (:func:`_scan_aucs`) of the dCAM channel of the head's class, computed
    ``chunk`` test scans at a time (a dCAM holds K maps of the scan's size)."""
    X, M = scans.inputs("test")
    rows = np.flatnonzero(scans.test)
    out = []
    for a in range(0, len(rows), chunk):
        maps = model.dcam(X[a : a + chunk])
        cls = head_class[a : a + chunk]
        out.append(_scan_aucs(scans, lambda j, m=maps, c=cls: m[j, c[j]], rows[a : a + chunk]))
    return np.concatenate(out)


def dcam_localisation(evaluation: Evaluation, n_boot: int = N_BOOT) -> pd.DataFrame | None:
    """Localisation of the dCAMs (beyond the paper, which shows them, Fig. 1): per test scan
    the ROC AUC of the dCAM channel of the head's class against the phantom's emphysema
    voxels, averaged over seeds, for each network, beside a map that needs no learning, low
    attenuation (-HU), and the paired difference of each network from -HU. Mean over the
    scans with a 95 % bootstrap interval over them. ``None`` when the cohort has no emphysema
    maps."""
    scans = evaluation.scans
    if not scans.has_truth_map:
        return None
    rows = np.flatnonzero(scans.test)
    per_scan = {"minus_hu": _scan_aucs(scans, lambda j: -scans.hu[rows[j]], rows)}
    for method in NETWORKS:
        keys = [(m, s) for m, s in evaluation.head_predictions if m == method]
        per_scan[method] = np.mean(
            [dcam_aucs(evaluation.models[k], scans, evaluation.head_predictions[k]) for k in keys],
            axis=0,
        )
    n = len(per_scan["minus_hu"])
    values = dict(per_scan)
    for method in NETWORKS:
        values[f"{method} - minus_hu"] = per_scan[method] - per_scan["minus_hu"]
    out = []
    for name, v in values.items():
        lo, hi = cm.bootstrap_statistic(n, lambda idx, v=v: v[idx].mean(), n_boot=n_boot)
        out.append({"map": name, "auc": float(v.mean()), "ci_low": lo, "ci_high": hi, "n_scans": n})
    return pd.DataFrame(out)


def dcam_sentence(auc: pd.DataFrame | None) -> str:
    """One plain sentence: do the proposed dCAMs localise emphysema better than -HU?"""
    if auc is None:
        return "The cohort has no emphysema maps: the dCAMs cannot be scored."
    row = auc.set_index("map")
    d = row.loc["proposed - minus_hu"]
    verdict = {
        1: "localise emphysema better than",
        -1: "localise emphysema worse than",
        0: "cannot be told apart from",
    }[compare_intervals((d.ci_low, d.ci_high), (0.0, 0.0))]
    p, h = row.loc["proposed"], row.loc["minus_hu"]
    return (
        f"The proposed dCAMs {verdict} plain low attenuation (-HU): voxel AUC against the true "
        f"emphysema {p.auc:.3f} [{p.ci_low:.3f}, {p.ci_high:.3f}] vs {h.auc:.3f} "
        f"[{h.ci_low:.3f}, {h.ci_high:.3f}], paired difference {d.auc:+.3f} "
        f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}] over {int(p.n_scans)} test scans."
    )


def plot_dcams(evaluation: Evaluation, laa: np.ndarray, seed: int) -> plt.Figure:
    """Fig. 1 analog: coronal slices of two test scans from each of the two proposed clusters
    with the most emphysema (mean %LAA), the CT above, the dCAM channel of the head's class
    below (the true emphysema outlined on the phantom)."""
    scans = evaluation.scans
    test = scans.test
    cluster = evaluation.predictions["proposed", seed]
    head_class = evaluation.head_predictions["proposed", seed]
    by_laa = pd.Series(laa[test]).groupby(cluster).mean().sort_values(ascending=False)
    show = [(k, j) for k in by_laa.index[:2] for j in np.flatnonzero(cluster == k)[:2]]
    test_idx = np.flatnonzero(test)
    picked = test_idx[[j for _, j in show]]
    dcams = evaluation.models["proposed", seed].dcam(scans.X[picked])
    fig, axes = plt.subplots(2, len(show), figsize=(2.6 * len(show), 5.2), squeeze=False)
    for c, ((k, j), i) in enumerate(zip(show, picked, strict=True)):
        mask = scans.masks[i]
        yslice = int(np.argmax(mask.sum(axis=(0, 2))))
        ct = scans.hu[i][:, yslice, :].T
        cam = np.where(mask[:, yslice, :], dcams[c, head_class[j]][:, yslice, :], np.nan).T
        for r in range(2):
            axes[r, c].imshow(ct, cmap="gray", vmin=-1000, vmax=200, origin="lower")
            axes[r, c].set_axis_off()
        axes[0, c].set_title(f"cluster {k}, head class {head_class[j]}\n{scans.y[i]}", fontsize=8)
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


def _with_interval(table: pd.DataFrame, name: str, score: str) -> str:
    row = table.loc[name]
    mean, sd = row[f"{score}_mean"], row[f"{score}_std"]
    lo, hi = row.get(f"{score}_ci_low", np.nan), row.get(f"{score}_ci_high", np.nan)
    if not np.isfinite(mean):
        return "undefined"
    text = f"{mean:.3f}" + (f" ± {sd:.3f}" if np.isfinite(sd) and sd > 0 else "")
    return text + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "")


def paper_comparison(
    table: pd.DataFrame, auc: pd.DataFrame | None, scans: Scans, input_size: int, n_seeds: int
) -> list[dict]:
    """Xie et al.'s Table 1 (accuracy, silhouette, Davies-Bouldin) beside this run's mean ±
    sd over seeds and 95 % bootstrap interval, with the floor, the references and the ceiling
    this run adds, and the dCAM localisation (the paper's Fig. 1 is qualitative)."""
    note = (
        f"phantom ({int(scans.train.sum())} train / {int(scans.test.sum())} test, "
        f"{input_size}³), mean ± sd over {n_seeds} seeds [95 % bootstrap CI over test scans]"
    )
    rows = []
    for method, name in NAMES.items():
        if name not in table.index:
            continue
        paper = PAPER.get(method, (None, None, None))
        for metric, value in zip(("acc", "silhouette", "davies_bouldin"), paper, strict=True):
            if method not in PAPER and metric != "acc":
                continue
            rows.append(
                {
                    "quantity": f"{name}: {metric}",
                    "paper": "" if value is None else value,
                    "this_run": _with_interval(table, name, metric),
                    "note": note if method in PAPER else "not in the paper",
                }
            )
    if auc is not None:
        row = auc.set_index("map")
        rows.append(
            {
                "quantity": "dCAM localisation AUC (proposed / baseline / −HU)",
                "paper": "qualitative (Fig. 1)",
                "this_run": " / ".join(
                    f"{row.loc[m].auc:.3f} [{row.loc[m].ci_low:.3f}, {row.loc[m].ci_high:.3f}]"
                    for m in ("proposed", "baseline", "minus_hu")
                ),
                "note": f"mean over seeds per scan, {int(row.loc['minus_hu'].n_scans)} test "
                "scans with emphysema; against the phantom's emphysema voxels",
            }
        )
    return rows


def study_metrics(
    results: pd.DataFrame,
    table: pd.DataFrame,
    auc: pd.DataFrame | None,
    scans: Scans,
    **settings: int,
) -> dict:
    """Mean scores per method, the sd of the accuracy over seeds and its bootstrap interval,
    the split sizes, the ``settings`` (epochs, n_seeds, input_size) and the dCAM AUCs with
    their intervals where the cohort has maps."""
    methods = [m for m in NAMES if m in set(results.method)]

    def by_method(metric: str) -> dict[str, float]:
        return {m: float(results[results.method == m][metric].mean()) for m in methods}

    metrics = {
        metric: by_method(metric) for metric in ("acc", "nmi", "silhouette", "davies_bouldin")
    }
    metrics["acc_sd"] = {m: sd_or_zero(results[results.method == m].acc) for m in methods}
    metrics["acc_ci"] = {
        m: [float(table.loc[NAMES[m], "acc_ci_low"]), float(table.loc[NAMES[m], "acc_ci_high"])]
        for m in methods
    }
    metrics |= {"n_train": int(scans.train.sum()), "n_test": int(scans.test.sum()), **settings}
    if auc is not None:
        row = auc.set_index("map")
        metrics["dcam_auc"] = {m: float(row.loc[m].auc) for m in row.index}
        metrics["dcam_auc_ci"] = {
            m: [float(row.loc[m].ci_low), float(row.loc[m].ci_high)] for m in row.index
        }
    return metrics
