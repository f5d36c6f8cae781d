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
* Table 1 (:class:`Evaluation`, :func:`table1`, :func:`differences`, :func:`who_wins`):
  accuracy, NMI, ARI, silhouette and Davies-Bouldin of each method on the test split, per
  seed, with 95 % intervals over the test scans and seeds, beside the permutation chance
  level of each clustering (:meth:`Evaluation.chance`), the one-cluster row (the majority
  class: the supervised reference's floor), the untrained network, the classical baseline and
  the true-severity ceiling; the verdicts come from paired differences on the same scans,
  draws and seeds (:mod:`medclust.comparison`);
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

from medclust import comparison as cmp
from medclust import metrics as cm
from medclust.cohort import load_cohort
from medclust.intensity import window
from medclust.models.deepcluster import DeepCluster, SupervisedPooledClassifier
from medclust.runtime import select_device
from medclust.studies.common import (
    StudyRun,
    mean_sd_table,
    sd_or_zero,
    verdict_clause,
    with_chance_row,
)
from medclust.studies.common import start as start_run
from medclust.validation import check_int

log = logging.getLogger(__name__)

#: DeepCluster's two feature networks (Xie et al. Sec. 2): method name -> ``network`` param.
NETWORKS = {"proposed": "unet", "baseline": "encoder"}

#: The rows of Table 1, in its order: chance, one cluster (the majority class: the floor of the
#: supervised reference, not the chance level of a clustering), the references that learn
#: nothing from the scans' pseudo-labels, the two DeepCluster networks, the supervised
#: reference, the ceiling.
NAMES = {
    "chance": "chance (permutation null at the proposed clusters' sizes)",
    "one_cluster": "one cluster (majority class; floor of the supervised reference)",
    "classical": "k-means on HU histogram + %LAA",
    "untrained": "untrained 3D U-Net + k-means",
    "baseline": "baseline (encoder)",
    "proposed": "proposed (3D U-Net)",
    "supervised": "supervised reference",
    "true_severity": "k-means on the true severity (ceiling)",
}

#: Bootstrap resamples of the test scans (and seeds) for every interval and difference.
N_BOOT = 1000
#: Permutations of every chance level.
N_PERM = 1000
#: Methods scored by plain accuracy (their classes are the subtypes), not Hungarian matching.
PLAIN_ACCURACY = ("supervised",)
#: The clustering rivals of the proposed network in the verdicts.
RIVALS = ("baseline", "untrained", "classical")

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
    "acc_chance": "acc_chance.proposed",
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
        """Accuracy, NMI and ARI of ``pred`` against the test subtypes, silhouette and
        Davies-Bouldin in the space of ``points`` (the test scans'; ``None``: not defined).
        The accuracy of a clustering matches clusters to subtypes (Hungarian); that of the
        methods of :data:`PLAIN_ACCURACY` is plain (Humphries et al.'s 45 % is a classifier's)."""
        pred = np.asarray(pred)
        self.predictions[method, seed] = pred
        self.points[method, seed] = points
        internal = (
            {"silhouette": np.nan, "davies_bouldin": np.nan}
            if points is None
            else cm.internal_scores(points, pred, seed=seed)
        )
        plain = method in PLAIN_ACCURACY
        self.rows.append(
            {
                "method": method,
                "seed": seed,
                "acc": float(np.mean(pred == self.y_test))
                if plain
                else cm.cluster_accuracy(self.y_test, pred),
                "nmi": cm.nmi(self.y_test, pred),
                "ari": cm.ari(self.y_test, pred),
                **internal,
            }
        )

    def one_cluster(self, seed: int) -> None:
        """Every test scan in one cluster: its accuracy is the largest subtype's share, the
        majority class, which is the floor of the supervised reference's plain accuracy; for
        a clustering into K subtypes the floor is its chance level (:meth:`chance`).
        Silhouette and Davies-Bouldin are undefined."""
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

    def methods(self) -> list[str]:
        """The methods added, in order."""
        return list(dict.fromkeys(m for m, _ in self.predictions))

    def runs(self, method: str) -> list[int]:
        """The seeds of ``method``, in order."""
        return [s for m, s in self.predictions if m == method]

    def scores(self, n_boot: int = N_BOOT, level: float = 0.95) -> cmp.MethodScores:
        """Every method's scores on all test scans and on ``n_boot`` bootstrap draws of them,
        seeds resampled too (the same draws of scans and seeds for every method,
        :mod:`medclust.comparison`): accuracy, NMI and ARI of the predictions, the mean
        per-scan silhouette value and Davies-Bouldin recomputed on the resampled points."""
        y = self.y_test
        scores = cmp.MethodScores(cmp.Resamples(len(y), n_boot), level)
        for method in self.methods():
            preds = [self.predictions[method, s] for s in self.runs(method)]
            points = [self.points[method, s] for s in self.runs(method)]
            if method in PLAIN_ACCURACY:
                correct = [(p == y).astype(float) for p in preds]
                scores.add(method, "acc", cmp.mean_scores(correct, scores.resamples))
                scores.add_partitions(method, y, preds, ("nmi", "ari"))
            else:
                scores.add_partitions(method, y, preds)
            if points[0] is None:
                continue
            silhouettes = [_silhouette_values(z, p) for z, p in zip(points, preds, strict=True)]
            scores.add(method, "silhouette", cmp.mean_scores(silhouettes, scores.resamples))
            scores.add(
                method,
                "davies_bouldin",
                cmp.scored_by(
                    [
                        cmp.per_draw(lambda idx, z=z, p=p: cm.davies_bouldin(z[idx], p[idx]))
                        for z, p in zip(points, preds, strict=True)
                    ],
                    scores.resamples,
                ),
            )
        return scores

    def chance(self, n_perm: int = N_PERM) -> dict[str, list[cmp.Chance]]:
        """The chance level of every clustering (not the supervised reference, whose floor is
        the majority class): accuracy, NMI and ARI after shuffling each seed's clusters over
        the test scans, so each keeps its own cluster sizes
        (:func:`~medclust.comparison.chance_level`)."""
        out = {}
        for method in self.methods():
            if method in PLAIN_ACCURACY:
                continue
            preds = [self.predictions[method, s] for s in self.runs(method)]
            out[method] = [
                cmp.chance_level(self.y_test, preds, score, n_perm=n_perm)
                for score in cmp.PARTITION_SCORES
            ]
        return out


def _silhouette_values(points: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-scan silhouette values (NaN-free; zeros for a single cluster)."""
    if np.unique(pred).size < 2:
        return np.zeros(len(pred))
    return skm.silhouette_samples(points, pred)


#: Table 1's scores, in its column order.
TABLE1_SCORES = ("acc", "nmi", "ari", "silhouette", "davies_bouldin")


def table1(
    results: pd.DataFrame, scores: cmp.MethodScores, chance: dict[str, list[cmp.Chance]]
) -> pd.DataFrame:
    """Table 1 analog: per method (rows in :data:`NAMES` order) the mean and sd over seeds of
    each score and its 95 % interval over test scans and seeds; the chance row holds the
    permutation null of the proposed clusters (mean and 95 % of the shuffles)."""
    methods = [m for m in NAMES if m in set(results.method)]
    stats = mean_sd_table(results, "method", TABLE1_SCORES, order=methods)
    summary = scores.summary()
    table = stats.join(summary[[c for c in summary.columns if "_ci_" in c]])
    if "proposed" in chance:
        table = with_chance_row(table, chance["proposed"])
    columns = [
        f"{s}_{part}" for s in TABLE1_SCORES for part in ("mean", "std", "ci_low", "ci_high")
    ]
    table = table[[c for c in columns if c in table.columns]]
    table.index = [NAMES[m] for m in table.index]
    return table


def differences(scores: cmp.MethodScores) -> list[cmp.Difference]:
    """The paired differences behind the verdicts: the proposed network minus each rival of
    :data:`RIVALS` on accuracy and NMI, and minus the encoder baseline on silhouette and
    Davies-Bouldin (Xie et al.'s internal scores; lower Davies-Bouldin is better)."""
    out = []
    for rival in RIVALS:
        if rival not in scores.methods:
            continue
        out += [scores.compare("proposed", rival, score) for score in ("acc", "nmi")]
    if "baseline" in scores.methods and ("proposed", "silhouette") in scores.scored:
        out.append(scores.compare("proposed", "baseline", "silhouette"))
        out.append(scores.compare("proposed", "baseline", "davies_bouldin", higher_is_better=False))
    return out


def chance_sentence(chance: dict[str, list[cmp.Chance]], method: str, score: str = "acc") -> str:
    """ "0.295, above its chance level 0.236 [0.215, 0.263] (p = 0.001)"."""
    c = next(c for c in chance[method] if c.score == score)
    where = "above" if c.p_value < 0.05 else "not above"
    return (
        f"{c.observed:.3f}, {where} its chance level {c.mean:.3f} [{c.low:.3f}, {c.high:.3f}] "
        f"(permutation p = {c.p_value:.3f})"
    )


def who_wins(
    table: pd.DataFrame, diffs: list[cmp.Difference], chance: dict[str, list[cmp.Chance]]
) -> str:
    """Plain sentences: is the proposed 3D U-Net above chance, and better or worse than the
    encoder baseline, the untrained network and the classical baseline (paired differences
    on the same test scans, draws and seeds); where do the supervised reference and the
    ceiling sit?"""
    acc = table["acc_mean"]
    on_acc = [d for d in diffs if d.score == "acc"]
    text = (
        f"The proposed 3D U-Net clusters the test scans with accuracy "
        f"{chance_sentence(chance, 'proposed')}. Paired on the same test scans, bootstrap "
        "draws and seeds, it " + "; ".join(verdict_clause(d, NAMES) for d in on_acc) + "."
    )
    internal = [d for d in diffs if d.score in ("silhouette", "davies_bouldin")]
    if internal:
        text += (
            " On the paper's internal scores: "
            + "; ".join(
                f"on {d.score.replace('_', '-')} it {verdict_clause(d, NAMES)}" for d in internal
            )
            + "."
        )
    more = []
    if NAMES["supervised"] in acc.index:
        floor = acc.get(NAMES["one_cluster"], np.nan)
        more.append(
            f"the supervised reference scores a plain accuracy of {acc[NAMES['supervised']]:.3f}"
            f" (its floor, the majority class: {floor:.3f})"
        )
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


def emphysema_channel(model, scans: Scans, laa: np.ndarray) -> int:
    """The dCAM channel that stands for emphysema, chosen on the training scans alone: the head
    class whose training scans have the most low-attenuation lung (mean %LAA-950). A head's
    classes have no fixed meaning (k-means numbers its clusters anew), so scoring each test
    scan's own class against its emphysema would build in an AUC near 0.5."""
    head = model.predict_pooled(model.pooled_features(*scans.inputs("train")))
    per_class = pd.Series(laa[scans.train]).groupby(head).mean()
    return int(per_class.idxmax())


def dcam_aucs(model, scans: Scans, channel: int, chunk: int = 50) -> np.ndarray:
    """Per-scan AUC (:func:`_scan_aucs`) of dCAM channel ``channel`` on the test scans,
    computed ``chunk`` scans at a time (a dCAM holds K maps of the scan's size)."""
    X, _ = scans.inputs("test")
    rows = np.flatnonzero(scans.test)
    out = []
    for a in range(0, len(rows), chunk):
        maps = model.dcam(X[a : a + chunk])
        out.append(_scan_aucs(scans, lambda j, m=maps: m[j, channel], rows[a : a + chunk]))
    return np.concatenate(out)


def dcam_localisation(
    evaluation: Evaluation, laa: np.ndarray, n_boot: int = N_BOOT
) -> pd.DataFrame | None:
    """Localisation of the dCAMs (beyond the paper, which shows them, Fig. 1): per test scan
    the ROC AUC of each trained network's emphysema channel (:func:`emphysema_channel`,
    chosen on the training scans) against the phantom's emphysema voxels, beside a map that
    needs no learning, low attenuation (-HU). Rows: each map's mean over scans and seeds with
    its 95 % interval (scans and seeds resampled), then each network minus -HU, paired on the
    same scans and draws, with its verdict. ``None`` when the cohort has no emphysema maps."""
    scans = evaluation.scans
    if not scans.has_truth_map:
        return None
    rows = np.flatnonzero(scans.test)
    per_scan = {"minus_hu": [_scan_aucs(scans, lambda j: -scans.hu[rows[j]], rows)]}
    for method in NETWORKS:
        per_scan[method] = []
        for key in [(m, s) for m, s in evaluation.head_predictions if m == method]:
            model = evaluation.models[key]
            per_scan[method].append(dcam_aucs(model, scans, emphysema_channel(model, scans, laa)))
    n = len(per_scan["minus_hu"][0])
    scores = cmp.MethodScores(cmp.Resamples(n, n_boot))
    for name, values in per_scan.items():
        scores.add(name, "auc", cmp.mean_scores(values, scores.resamples))
    summary = scores.summary()
    out = [
        {
            "map": name,
            "auc": summary.loc[name, "auc_mean"],
            "ci_low": summary.loc[name, "auc_ci_low"],
            "ci_high": summary.loc[name, "auc_ci_high"],
            "n_scans": n,
            "verdict": "",
        }
        for name in per_scan
    ]
    for method in NETWORKS:
        d = scores.compare(method, "minus_hu", "auc")
        out.append(
            {
                "map": f"{method} - minus_hu",
                "auc": d.diff,
                "ci_low": d.low,
                "ci_high": d.high,
                "n_scans": n,
                "verdict": d.verdict,
            }
        )
    return pd.DataFrame(out)


def dcam_sentence(auc: pd.DataFrame | None) -> str:
    """One plain sentence: do the proposed dCAMs localise emphysema better than -HU?"""
    if auc is None:
        return "The cohort has no emphysema maps: the dCAMs cannot be scored."
    row = auc.set_index("map")
    d = row.loc["proposed - minus_hu"]
    verdict = {
        cmp.BETTER: "localise emphysema better than",
        cmp.WORSE: "localise emphysema worse than",
        cmp.CANNOT_TELL: "cannot be told apart from",
    }[d.verdict]
    p, h = row.loc["proposed"], row.loc["minus_hu"]
    return (
        f"The proposed dCAMs (the channel of the head class whose training scans have the most "
        f"low-attenuation lung) {verdict} plain low attenuation (-HU): voxel AUC against the "
        f"true emphysema {p.auc:.3f} [{p.ci_low:.3f}, {p.ci_high:.3f}] vs {h.auc:.3f} "
        f"[{h.ci_low:.3f}, {h.ci_high:.3f}], paired difference {d.auc:+.3f} "
        f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}] over {int(p.n_scans)} test scans and the seeds."
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
    table: pd.DataFrame,
    diffs: list[cmp.Difference],
    auc: pd.DataFrame | None,
    scans: Scans,
    input_size: int,
    n_seeds: int,
) -> list[dict]:
    """Xie et al.'s Table 1 (accuracy, silhouette, Davies-Bouldin) beside this run's mean ±
    sd over seeds and 95 % interval, with the chance level, the references and the ceiling
    this run adds; the paper's claim "proposed outperforms the baseline" beside this run's
    paired difference and verdict on each score; and the dCAM localisation (the paper's
    Fig. 1 is qualitative)."""
    note = (
        f"phantom ({int(scans.train.sum())} train / {int(scans.test.sum())} test, "
        f"{input_size}³), mean ± sd over {n_seeds} seeds [95 % CI over test scans and seeds]"
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
    for d in diffs:
        if d.b != "baseline":
            continue
        i = ("acc", "silhouette", "davies_bouldin").index(d.score) if d.score != "nmi" else None
        if i is None:
            continue
        paper_diff = PAPER["proposed"][i] - PAPER["baseline"][i]
        rows.append(
            {
                "quantity": f"proposed − baseline: {d.score}",
                "paper": f"{paper_diff:+.2f} (proposed better)",
                "this_run": f"{d.as_text()}: {d.verdict}",
                "note": f"paired on the same test scans, draws and seeds; proposed won "
                f"{d.runs_won} of {d.runs} seeds",
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
    chance: dict[str, list[cmp.Chance]],
    diffs: list[cmp.Difference],
    auc: pd.DataFrame | None,
    scans: Scans,
    **settings: int,
) -> dict:
    """Mean scores per method, the sd of the accuracy over seeds and its 95 % interval, the
    chance levels (and the accuracy's permutation p-value), the paired differences with their
    verdicts, the split sizes, the ``settings`` (epochs, n_seeds, input_size) and the dCAM
    AUCs with their intervals where the cohort has maps."""
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
    metrics["ari"] = by_method("ari")
    for score in cmp.PARTITION_SCORES:
        metrics[f"{score}_chance"] = {
            m: next(c.mean for c in cs if c.score == score) for m, cs in chance.items()
        }
    metrics["acc_chance_p"] = {
        m: next(c.p_value for c in cs if c.score == "acc") for m, cs in chance.items()
    }
    # the verdicts themselves are in tables/differences (text does not belong to dvc metrics)
    metrics["difference"] = {
        f"{d.score}_{d.a}_vs_{d.b}": {"diff": d.diff, "ci": [d.low, d.high]} for d in diffs
    }
    metrics |= {"n_train": int(scans.train.sum()), "n_test": int(scans.test.sum()), **settings}
    if auc is not None:
        row = auc.set_index("map")
        metrics["dcam_auc"] = {m: float(row.loc[m].auc) for m in row.index}
        metrics["dcam_auc_ci"] = {
            m: [float(row.loc[m].ci_low), float(row.loc[m].ci_high)] for m in row.index
        }
    return metrics
