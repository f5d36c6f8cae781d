"""Figures of study 01 (Perkonigg et al.): the Fig. 1-3 analogs, training curves and the texture
confusion. Each function returns the figure for :meth:`medclust.outputs.Report.figure`; the
steps that compute what they draw are in :mod:`medclust.studies.cdcn`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy.stats import spearmanr

from medclust import metrics as cm
from medclust.plots import largest_roi_slice, show_axial

if TYPE_CHECKING:
    from medclust.studies.cdcn import Liver, Patches


def training_curves(histories: Mapping[int, tuple[list, dict]]) -> plt.Figure:
    """Autoencoder pretraining MSE and the two terms of Eq. (1) per epoch, for every seed."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for s, (pre, joint) in histories.items():
        epochs = range(1, len(joint["total"]) + 1)
        axes[0].plot(range(1, len(pre) + 1), pre, label=f"seed {s}")
        axes[1].plot(epochs, joint["reconstruction"], label=f"reconstruction, seed {s}")
        axes[1].plot(epochs, joint["clustering"], "--", label=f"clustering, seed {s}")
    axes[0].set(title="autoencoder pretraining", xlabel="epoch", ylabel="MSE")
    axes[1].set(title="DCN training (Eq. 1 terms)", xlabel="epoch", ylabel="loss")
    axes[1].legend(fontsize=6)
    axes[0].legend(fontsize=6)
    return fig


def regression_vs_grade(grade: np.ndarray, lasso: np.ndarray, forest: np.ndarray):
    """Fig. 1 analog: leave-one-out LASSO and random-forest values against the true grade."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, (name, values) in zip(axes, [("LASSO", lasso), ("random forest", forest)], strict=True):
        frame = pd.DataFrame({"grade": grade, "prediction": values})
        sns.boxplot(frame, x="grade", y="prediction", ax=ax, color="lightgrey", fliersize=0)
        sns.stripplot(frame, x="grade", y="prediction", ax=ax, color="tab:blue", size=4, jitter=0.2)
        rho = spearmanr(grade, values).statistic
        ax.set_title(f"cDCN signature, {name} (LOO)\nSpearman {rho:.2f}")
        ax.set_xlabel("true steatosis grade")
    axes[0].set_ylabel("predicted grade")
    return fig


def feature_importance(importances: np.ndarray, importance: pd.DataFrame):
    """Fig. 2 analog: box plots of each cluster's importance over the folds, and the fraction
    of folds in which it is among the top four (``importance`` from :func:`cluster_importance`)."""
    names = [str(k + 1) for k in range(importances.shape[1])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    frame = pd.DataFrame(importances, columns=names)
    frame = frame.melt(var_name="cluster", value_name="importance")
    sns.boxplot(frame, x="cluster", y="importance", ax=axes[0], color="tab:orange", fliersize=2)
    axes[0].set_title("RF feature importance over LOO folds (low/high)")
    top_fraction = importance.filter(like="_fraction").iloc[:, 0].to_numpy()
    axes[1].bar(names, top_fraction, color="tab:green")
    axes[1].set(title="fraction of folds in the top 4", xlabel="cluster", ylim=(0, 1))
    return fig


def _top_cluster_map(
    liver: Liver, windows: Patches, case: int, labels: np.ndarray, top: list[int], stride_mm: float
) -> np.ndarray:
    """Label map of one case: each window of a ``top`` cluster painted as the stride-sized
    square around its centre, with the cluster's rank (1..4) as label."""
    image, roi, spacing, _ = liver.volumes[case]
    out = np.zeros(image.shape, dtype=np.int32)
    half = [max(1, int(round(stride_mm / sp / 2))) for sp in spacing[:2]]
    sel = windows.case == case
    for (x, y, z), k in zip(windows.centres[sel], labels[sel], strict=True):
        if k + 1 in top:
            x0, y0 = max(0, x - half[0]), max(0, y - half[1])
            out[x0 : x + half[0] + 1, y0 : y + half[1] + 1, z] = top.index(k + 1) + 1
    return out * roi


def top_cluster_overlays(
    liver: Liver, windows: Patches, labels: np.ndarray, top_clusters: list[int], stride_mm: float
):
    """Fig. 3 analog: the windows of the most predictive clusters on the first case of the
    lowest and of the highest grade, at the slice with the largest liver area."""
    grade = liver.grade
    low_case = int(np.flatnonzero(grade == grade.min())[0])
    high_case = int(np.flatnonzero(grade == grade.max())[0])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, case in zip(axes, [low_case, high_case], strict=True):
        image, roi, _, _ = liver.volumes[case]
        show_axial(
            ax,
            image,
            largest_roi_slice(roi),
            mask=roi,
            labelmap=_top_cluster_map(liver, windows, case, labels, top_clusters, stride_mm),
            n_labels=4,
            title=f"{liver.case_ids[case]}, grade {grade[case]}",
        )
    handles = [plt.Rectangle((0, 0), 1, 1, color=plt.get_cmap("tab10")(i)) for i in range(4)]
    fig.legend(
        handles, [f"cluster {k}" for k in top_clusters], loc="lower center", ncol=4, fontsize=8
    )
    return fig


def texture_confusion(truth: np.ndarray, labels: np.ndarray, class_names: Mapping[int, str]):
    """Share of each cDCN cluster's windows per true texture class."""
    table, clusters, classes = cm.contingency(truth, labels)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    frac = table / table.sum(axis=1, keepdims=True)
    sns.heatmap(
        frac,
        ax=ax,
        cmap="viridis",
        annot=True,
        fmt=".2f",
        annot_kws={"size": 6},
        xticklabels=[class_names.get(int(c), str(c)) for c in classes],
        yticklabels=[str(int(k) + 1) for k in clusters],
    )
    ax.set(
        xlabel="true texture class",
        ylabel="cDCN cluster",
        title="share of each cluster's windows per true class",
    )
    return fig
