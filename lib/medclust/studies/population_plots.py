"""Figures of study 05 (``notebooks/05_population_clustering.ipynb``), the analogs of the
paper's Fig. 3-6 (/work/shared/papers/004_8f822e2a6a11f707.txt); the notebook calls them as
``study.plot_*`` (:mod:`medclust.studies.population`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.manifold import TSNE

from medclust.association import significance_matrix
from medclust.cohort import Cohort
from medclust.features.bovw import FEATURE_KINDS

if TYPE_CHECKING:
    from medclust.studies.population import QualityCurves


def plot_q_k(curves: QualityCurves, names: Sequence[str]) -> plt.Figure:
    """Fig. 3 analog (Q_K of f^L against K: each seed grey, the chosen one red, their mean
    blue) beside the Fig. 4 analog (mean Q_K of each descriptor in ``names``)."""
    ks, mean_q = list(curves.ks), curves.mean_q
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    fl = curves.quality[curves.quality.descriptor == "f_L"]
    for s, grp in fl.groupby("seed"):
        chosen = s == curves.chosen_seed
        axes[0].plot(
            grp.K,
            grp.q_k,
            color="red" if chosen else "grey",
            lw=2 if chosen else 1,
            alpha=1 if chosen else 0.6,
        )
    axes[0].plot(ks, mean_q.loc["f_L", ks], color="tab:blue", lw=2, label="mean over seeds")
    axes[0].axvline(curves.chosen_k, ls=":", color="k")
    axes[0].set(xlabel="K", ylabel="Q_K", title="Fig. 3 analog: f^L")
    axes[0].legend(fontsize=8)
    for name in names:
        axes[1].plot(ks, mean_q.loc[name, ks], marker="o", label=name)
    axes[1].set(xlabel="K", ylabel="mean Q_K over seeds", title="Fig. 4 analog: descriptors")
    axes[1].legend(fontsize=8)
    return fig


def plot_associations(assoc: pd.DataFrame, terms: Sequence[str], n_clusters: int) -> plt.Figure:
    """Fig. 6a analog: clusters x ``terms`` (by decreasing frequency), red over-represented,
    blue under-represented, for the significant (term, cluster) pairs of ``assoc``."""
    sig = significance_matrix(assoc).reindex(list(terms))
    fig, ax = plt.subplots(figsize=(0.42 * n_clusters + 3, 0.3 * len(sig) + 1.5))
    sns.heatmap(
        sig, cmap="bwr", vmin=-1, vmax=1, cbar=False, linewidths=0.3, linecolor="lightgrey", ax=ax
    )
    q = int((sig != 0).to_numpy().sum())
    ax.set(
        xlabel="cluster",
        ylabel="term",
        title=f"significant associations (f^L, K = {n_clusters}, Q_K = {q})",
    )
    return fig


def _show_middle_slice(ax, data: Cohort, case_id: str) -> None:
    image = data.load(case_id).image
    ax.imshow(image[:, :, image.shape[2] // 2].T, cmap="gray", vmin=-1000, vmax=300)


def plot_three_clusters(
    assoc: pd.DataFrame,
    curves: QualityCurves,
    counts: Mapping[str, np.ndarray],
    f_L: np.ndarray,
    data: Cohort,
) -> plt.Figure:
    """Fig. 6b-e analog: the three clusters of the chosen clustering with the most
    over-represented terms, each with its mean word counts, mean topic mixture, top-5 terms and
    the middle slice of its first volume."""
    all_counts = np.hstack([counts[k] for k in FEATURE_KINDS])
    case_ids, chosen = data.case_ids, curves.chosen
    over = assoc[assoc.significant & assoc.over_represented]
    top = over.groupby("cluster").size().sort_values(ascending=False).index[:3].tolist()
    top = top or list(range(min(3, curves.chosen_k)))
    fig, axes = plt.subplots(
        len(top),
        4,
        figsize=(14, 3.4 * len(top)),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": [2, 1.4, 1.6, 1.2]},
    )
    for r, k in enumerate(top):
        members = np.flatnonzero(chosen == k)
        axes[r, 0].plot(all_counts[members].mean(axis=0), color="k", lw=0.8)
        axes[r, 0].set(
            title=f"cluster {k} ({len(members)} volumes): mean word counts",
            xlabel="word (Haralick | micro | macro)",
        )
        axes[r, 1].bar(range(f_L.shape[1]), f_L[members].mean(axis=0), color="tab:blue")
        axes[r, 1].set(title="mean topic mixture f^L", xlabel="topic")
        rows_k = over[over.cluster == k].sort_values("p_holm").head(5)
        text = "\n".join(
            f"{t}: OR {o:.1f}, p {p:.1e}"
            for t, o, p in zip(rows_k.term, rows_k.odds_ratio, rows_k.p_holm, strict=True)
        )
        axes[r, 2].text(
            0,
            1,
            "over-represented terms\n" + (text or "(none)"),
            va="top",
            fontsize=8,
            family="monospace",
        )
        axes[r, 2].set_axis_off()
        _show_middle_slice(axes[r, 3], data, case_ids[members[0]])
        axes[r, 3].set_title(case_ids[members[0]], fontsize=8)
        axes[r, 3].set_axis_off()
    return fig


def plot_tsne(
    f_L: np.ndarray, data: Cohort, phenotype_column: str, chosen: np.ndarray, seed: int
) -> plt.Figure:
    """Fig. 5 analog: t-SNE of f^L coloured by the true phenotype (by cluster without one), with
    the middle slices of the four most extreme volumes."""
    case_ids, clinical = data.case_ids, data.clinical
    perplexity = min(30.0, (len(case_ids) - 1) / 3)
    emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(f_L)
    fig, ax = plt.subplots(figsize=(8, 6.5))
    has_phenotype = phenotype_column in clinical.columns
    colour = (
        clinical[phenotype_column].astype(str) if has_phenotype else pd.Series(chosen.astype(str))
    )
    for j, value in enumerate(sorted(colour.unique())):
        sel = (colour == value).to_numpy()
        ax.scatter(emb[sel, 0], emb[sel, 1], s=10, label=value, color=plt.get_cmap("tab10")(j % 10))
    ax.legend(fontsize=7, markerscale=2, title=phenotype_column if has_phenotype else "cluster")
    extremes = [
        int(np.argmin(emb[:, 0])),
        int(np.argmax(emb[:, 0])),
        int(np.argmin(emb[:, 1])),
        int(np.argmax(emb[:, 1])),
    ]
    corners = [(0.02, 0.4), (0.78, 0.4), (0.4, 0.02), (0.4, 0.78)]
    for i, (x0, y0) in zip(extremes, corners, strict=True):
        inset = ax.inset_axes([x0, y0, 0.2, 0.2])
        _show_middle_slice(inset, data, case_ids[i])
        inset.set_axis_off()
        ax.annotate(
            "",
            xy=emb[i],
            xytext=(x0 + 0.1, y0 + 0.1),
            textcoords="axes fraction",
            arrowprops=dict(arrowstyle="-", lw=0.5),
        )
    ax.set(title="t-SNE of the LDA descriptors f^L", xticks=[], yticks=[])
    return fig
