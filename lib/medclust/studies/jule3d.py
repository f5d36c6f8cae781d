"""Study 02: JULE-3D representation learning + k-means segmentation of micro-CT
(``notebooks/02_jule3d_segmentation.ipynb``).

Moriya et al., *Unsupervised segmentation of 3D medical images based on clustering and deep
representation learning* (SPIE Medical Imaging 2018). The notebook runs the method as calls
(:class:`medclust.models.jule.JULE`, :mod:`medclust.segmentation`); this module holds the glue,
named after the paper's steps:

* the params of the run (:func:`start`, :func:`k_values`): the stride ``s <= w`` of Sec. 2.5
  and the K range of Fig. 4;
* the specimens of Table 1 (:func:`load_specimens`, :func:`specimen_table`): each case thresholded
  into specimen and background (Sec. 2.3), with its evaluation slices (the seven annotated slices
  of Sec. 3.3);
* the training patches of Sec. 2.3 (:func:`training_patches`) and the recurrent process of
  Sec. 2.1-2.2 (:func:`jule_history`, :func:`plot_recurrent_process`);
* the segmentation phase of Sec. 2.5 and its baselines, scored by NMI (:class:`Scores`);
* Fig. 4 (:func:`average_nmi`, :func:`plot_nmi_vs_k`), Fig. 5 (:func:`plot_segmentations`), the
  paper's statements beside this run's (:func:`paper_comparison`) and the metrics
  (:func:`study_metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from medclust import comparison as cmp
from medclust.cohort import Volume, load_cohort
from medclust.metrics import nmi, nmi_from_contingency
from medclust.models.jule import JULE
from medclust.patches3d import grid_centres, sample_cubes, specimen_region
from medclust.plots import label_cmap
from medclust.runtime import select_device
from medclust.segmentation import (
    annotated_slices,
    intensity_kmeans_segmentation,
    kmeans_segmentation,
    multi_otsu_segmentation,
    segmentation_nmi,
    slice_contingency,
    subpatch_composition,
    window_statistics,
)
from medclust.studies.common import StudyRun, sd_or_zero, verdict_clause
from medclust.studies.common import start as start_run
from medclust.validation import check_int

log = logging.getLogger(__name__)

#: The methods, in the order of the figures and tables: the proposed features, the untrained-CNN
#: control, the classical local-texture baseline, the two traditional baselines of Fig. 4 and
#: the ceiling of the label projection (phantoms only).
METHODS = {
    "jule": "JULE-based (proposed)",
    "random_cnn": "k-means on untrained-CNN features",
    "local_stats": "k-means on local mean + sd",
    "kmeans_intensity": "k-means on intensities",
    "multi_otsu": "multi-threshold Otsu",
    "true_tissue": "k-means on true tissue per sub-patch (ceiling)",
}

#: The methods JULE is tested against in the plain sentence and the paper comparison.
RIVALS = ("random_cnn", "local_stats", "kmeans_intensity", "multi_otsu")

#: ``metrics.json`` (dvc metrics show/diff): the slice NMI (the paper's score, specimen average,
#: mean over seeds) of each method at the paper's K.
HEADLINE = {
    "jule": "nmi_at_k_paper.jule",
    "cnn0": "nmi_at_k_paper.random_cnn",
    "local": "nmi_at_k_paper.local_stats",
    "kmeans": "nmi_at_k_paper.kmeans_intensity",
    "otsu": "nmi_at_k_paper.multi_otsu",
    "ceil": "nmi_at_k_paper.true_tissue",
}

#: Bootstrap resamples of the annotated slices (and seeds) for every interval and difference.
N_BOOT = 1000
#: Permutations of every chance level.
N_PERM = 1000


def start(
    report_dir: str,
    threshold: str | float,
    device: str,
    *,
    n_seeds: int,
    patch_size: int,
    stride: int,
) -> StudyRun:
    """Check the params of the run before any work and open the report: ``threshold`` is
    ``"clinical"`` (per case from ``clinical.csv``) or a number, ``device`` an available one,
    and the stride may not exceed the patch side (Sec. 2.5: the ``s``-cubes sit inside the
    patches). The other params are checked by the step that takes them: :func:`k_values`,
    :func:`load_specimens`, :func:`training_patches` and ``JULE`` itself."""
    for name, value in {"n_seeds": n_seeds, "patch_size": patch_size, "stride": stride}.items():
        check_int(f"param {name}", value)
    if stride > patch_size:
        raise ValueError(
            f"param stride ({stride}) must not exceed patch_size ({patch_size}) (Sec. 2.5)"
        )
    if threshold != "clinical" and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float)
    ):
        raise ValueError(
            "param threshold must be 'clinical' (per case from clinical.csv) or a number, "
            f"got {threshold!r}"
        )
    select_device(device)
    return start_run(report_dir)


def k_values(k_min: int, k_paper: int, k_max: int) -> list[int]:
    """The numbers of clusters K of Fig. 4, ``k_min..k_max``; ``k_paper`` (Fig. 5, the paper's
    K = 3) lies among them: ``2 <= k_min <= k_paper <= k_max``."""
    for name, value in {"k_min": k_min, "k_paper": k_paper, "k_max": k_max}.items():
        check_int(f"param {name}", value)
    if not 2 <= k_min <= k_paper <= k_max:
        raise ValueError(
            f"params must satisfy 2 <= k_min <= k_paper <= k_max, got {k_min}, {k_paper}, {k_max}"
        )
    return list(range(k_min, k_max + 1))


# --------------------------------------------------------------------------- Table 1


@dataclass(frozen=True)
class Specimen:
    """One case: its volume, the threshold dividing specimen from background, the thresholded
    ``region`` and the axial evaluation ``slices``."""

    volume: Volume
    threshold: float
    region: np.ndarray
    slices: list[int]

    @property
    def image(self) -> np.ndarray:
        return self.volume.image

    @property
    def labelmap(self) -> np.ndarray | None:
        return self.volume.labelmap


def spread_slices(region: np.ndarray, n: int) -> list[int]:
    """``n`` axial slices evenly spread through the specimen (the first and last slice holding
    specimen voxels excluded), for a cohort without annotated slices."""
    zs = np.flatnonzero(region.any(axis=(0, 1)))
    picks = np.linspace(0, len(zs) - 1, min(n, len(zs)) + 2).round().astype(int)[1:-1]
    return sorted(set(zs[picks]))


def load_specimens(
    cohort: str,
    threshold: str | float,
    annotated_column: str,
    n_eval_slices: int,
    min_voxels: int = 1,
) -> dict[str, Specimen]:
    """The specimens of ``cohort`` by case id (Table 1): the threshold read per case from
    ``clinical.csv`` (``threshold="clinical"``) or one number for all; the evaluation slices
    from ``annotated_column`` or, without it, ``n_eval_slices`` spread slices
    (:func:`spread_slices`). A specimen needs ``min_voxels`` voxels above its threshold."""
    check_int("param n_eval_slices", n_eval_slices)
    data = load_cohort(cohort, ndim=3)
    if threshold == "clinical" and "threshold" not in data.clinical.columns:
        raise ValueError(
            f"{data.root / 'clinical.csv'}: no 'threshold' column; set param threshold to a number"
        )
    specimens = {}
    for i, volume in enumerate(data.volumes()):
        info = data.clinical.iloc[i]
        t = float(info["threshold"]) if threshold == "clinical" else float(threshold)
        region = specimen_region(volume.image, t)
        if region.sum() < min_voxels:
            raise ValueError(
                f"case {volume.case_id!r}: only {int(region.sum())} voxels above threshold {t}"
            )
        if annotated_column in data.clinical.columns:
            slices = annotated_slices(info[annotated_column], depth=volume.image.shape[2])
        else:
            slices = spread_slices(region, n_eval_slices)
        specimens[volume.case_id] = Specimen(volume, t, region, slices)
    return specimens


def has_ground_truth(specimens: Mapping[str, Specimen]) -> bool:
    """Whether every specimen has a labelmap, so that the segmentations can be scored."""
    return all(s.labelmap is not None for s in specimens.values())


def specimen_table(specimens: Mapping[str, Specimen]) -> pd.DataFrame:
    """Table 1 analog: size, resolution (um), threshold, specimen fraction, evaluation slices."""
    return pd.DataFrame(
        [
            {
                "specimen": sid,
                "size_voxels": " x ".join(map(str, spec.image.shape)),
                "resolution_um": " x ".join(f"{1000 * s:.2f}" for s in spec.volume.spacing),
                "threshold": spec.threshold,
                "specimen_fraction": float(spec.region.mean()),
                "eval_slices": ";".join(map(str, spec.slices)),
            }
            for sid, spec in specimens.items()
        ]
    )


# --------------------------------------------------------------------------- phase 1: JULE


def training_patches(
    spec: Specimen, n_patches: int, patch_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n_patches`` random ``patch_size``-cubes whose centre voxel passes the threshold
    (Sec. 2.3), drawn with ``seed``, and their centres ``(n, 3)``."""
    check_int("param n_patches", n_patches)
    cubes, centres = sample_cubes(spec.image, spec.region, n_patches, patch_size, rng=seed)
    log.info(
        "%s seed %d: %d training patches of %d^3", spec.volume.case_id, seed, len(cubes), patch_size
    )
    return cubes, centres


def patch_truth(spec: Specimen, centres: np.ndarray) -> np.ndarray | None:
    """The true class of each patch's centre voxel, or None without a labelmap."""
    if spec.labelmap is None:
        return None
    return np.asarray(spec.labelmap)[tuple(np.asarray(centres).T)]


def jule_history(
    models: Mapping[tuple[str, int], JULE],
    truths: Mapping[tuple[str, int], np.ndarray | None] | None = None,
) -> pd.DataFrame:
    """One row per partially unrolled period of every fit (``models`` by (specimen, seed)):
    clusters before and after the forward pass, the mean triplet loss of the backward pass and,
    with ``truths`` (the training patches' true classes, :func:`patch_truth`), the NMI of the
    period's clusters to them (JULE's ``evalPerf``). The final row of a fit is the extra
    backward pass on the final labels (Sec. 2.2)."""
    rows = []
    for key, model in models.items():
        truth = (truths or {}).get(key)
        for period, h in enumerate(model.history_):
            row = {"specimen": key[0], "seed": key[1], "period": period}
            row.update({c: h[c] for c in ("clusters_before", "clusters_after", "loss")})
            if truth is not None:
                row["nmi_to_truth"] = nmi(truth, h["labels"], average_method="geometric")
            rows.append(row)
    return pd.DataFrame(rows)


def plot_recurrent_process(history: pd.DataFrame) -> plt.Figure:
    """Clusters after each forward pass (log scale), their NMI to the true classes of the
    training patches (when known) and the loss of each backward pass, per specimen and seed."""
    panels = ["clusters_after", "nmi_to_truth", "loss"]
    panels = [p for p in panels if p in history.columns]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2))
    labels = {
        "clusters_after": ("clusters after merging", "JULE forward passes"),
        "nmi_to_truth": ("NMI of the clusters to the true tissue", "clusters vs truth"),
        "loss": ("mean triplet loss", "JULE backward passes"),
    }
    for j, ((sid, s), h) in enumerate(history.groupby(["specimen", "seed"])):
        for ax, column in zip(axes, panels, strict=True):
            ax.plot(h.period, h[column], marker="o", ms=3, color=f"C{j}", label=f"{sid} seed {s}")
    for ax, column in zip(axes, panels, strict=True):
        ax.set(xlabel="partially unrolled period", ylabel=labels[column][0])
        ax.set_title(labels[column][1], fontsize=9)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- phase 2: scores


def feature_maps(model: JULE) -> list[tuple[str, object]]:
    """The patch embeddings of Sec. 2.5 by method: the trained CNN (``"jule"``) and the same
    CNN before training (``"random_cnn"``, the control)."""
    return [("jule", model.transform), ("random_cnn", model.random_network_transform)]


class Scores:
    """NMI of each segmentation against the ground truth, on the evaluation slices and on the
    whole volume (when the specimens have labelmaps), one row per (specimen, method, seed, K);
    keeps each segmentation's per-slice contingency tables for the bootstrap
    (:meth:`scores`) and the segmentations at ``k_paper`` of ``example_seed`` for Fig. 5
    (``examples``).

    Patch-wise methods cluster one feature vector per stride-``s`` grid patch and paint the
    patch's ``s``-cube (:meth:`add_patch_features`; the local statistics and the true-tissue
    ceiling build their own features). The two traditional baselines of Fig. 4 label every
    specimen voxel by its intensity alone (:meth:`add_intensity_kmeans`,
    :meth:`add_multi_otsu`).
    """

    def __init__(
        self, specimens: Mapping[str, Specimen], k_paper: int, example_seed: int, stride: int
    ):
        self.specimens = specimens
        self.scored = has_ground_truth(specimens)
        self.k_paper, self.example_seed, self.stride = k_paper, example_seed, stride
        self.rows: list[dict] = []
        self.examples: dict[tuple[str, str], np.ndarray] = {}
        self.contingency: dict[tuple[str, str, int, int], np.ndarray] = {}

    def add(self, sid: str, method: str, seed: int, k: int, seg: np.ndarray) -> None:
        spec = self.specimens[sid]
        row = {"specimen": sid, "method": method, "seed": seed, "K": k}
        if self.scored:
            row["nmi_slices"] = segmentation_nmi(spec.labelmap, seg, spec.slices)
            row["nmi_volume"] = segmentation_nmi(spec.labelmap, seg)
            n_true = int(np.max(spec.labelmap))
            self.contingency[sid, method, seed, k] = slice_contingency(
                spec.labelmap, seg, spec.slices, n_true, k
            )
        self.rows.append(row)
        if k == self.k_paper and seed == self.example_seed:
            self.examples[sid, method] = seg

    def add_patch_features(
        self,
        sid: str,
        method: str,
        seed: int,
        ks: Sequence[int],
        centres: np.ndarray,
        features: np.ndarray,
    ) -> None:
        """k-means of one feature vector per grid patch for each K, each label painted on the
        patch's ``s``-cube (Sec. 2.5, Fig. 3)."""
        shape = self.specimens[sid].image.shape
        for k in ks:
            seg = kmeans_segmentation(shape, centres, features, k, self.stride, seed=seed)
            self.add(sid, method, seed, k, seg)

    def add_local_statistics(self, sid: str, seed: int, ks: Sequence[int], w: int) -> None:
        """The classical texture baseline: k-means on the mean and standard deviation of the
        intensities in each grid patch's ``w``-cube (the JULE patch), both standardised."""
        spec = self.specimens[sid]
        centres = grid_centres(spec.region, self.stride)
        stats = window_statistics(spec.image, centres, w)
        stats = (stats - stats.mean(0)) / np.where(stats.std(0) > 0, stats.std(0), 1.0)
        self.add_patch_features(sid, "local_stats", seed, ks, centres, stats)

    def add_true_tissue(self, sid: str, seed: int, ks: Sequence[int]) -> None:
        """The ceiling of the label projection (phantoms, or any cohort with labelmaps):
        k-means on the true class composition of each grid patch's ``s``-cube, the block its
        label paints; at K = number of classes this is about each block's majority class."""
        spec = self.specimens[sid]
        centres = grid_centres(spec.region, self.stride)
        fractions = subpatch_composition(
            spec.labelmap, centres, self.stride, int(np.max(spec.labelmap))
        )
        self.add_patch_features(sid, "true_tissue", seed, ks, centres, fractions)

    def add_intensity_kmeans(self, sid: str, seed: int, ks: Sequence[int]) -> None:
        """k-means on the intensities of the specimen voxels, for each K."""
        spec = self.specimens[sid]
        for k in ks:
            seg = intensity_kmeans_segmentation(spec.image, spec.region, k, seed=seed)
            self.add(sid, "kmeans_intensity", seed, k, seg)

    def add_multi_otsu(self, sid: str, seeds: Sequence[int], ks: Sequence[int]) -> None:
        """Multi-threshold Otsu for each K; deterministic, so one segmentation serves (and is
        scored for) every seed."""
        spec = self.specimens[sid]
        for k in ks:
            otsu = multi_otsu_segmentation(spec.image, spec.region, k)
            for s in seeds:
                self.add(sid, "multi_otsu", s, k, otsu)

    def table(self) -> pd.DataFrame:
        """The rows so far (``tables/nmi_per_specimen_seed_k``)."""
        return pd.DataFrame(self.rows)

    def _slice_tables(self, method: str, seed: int, k: int) -> list[np.ndarray]:
        """Per specimen, the ``(slices, classes, clusters)`` contingency tables."""
        return [self.contingency[sid, method, seed, k].astype(np.float64) for sid in self.specimens]

    def _runs(self, method: str, k: int) -> list[int]:
        return sorted({key[2] for key in self.contingency if key[1] == method and key[3] == k})

    def scores(self, n_boot: int = N_BOOT, level: float = 0.95) -> dict[int, cmp.MethodScores]:
        """Per K, every method's slice NMI averaged over specimens (the Fig. 4 average) on all
        annotated slices and on ``n_boot`` bootstrap draws of them, resampled within each
        specimen, seeds resampled too: the same draws for every method
        (:mod:`medclust.comparison`). Empty when unscored."""
        if not self.contingency:
            return {}
        counts = [len(self.specimens[sid].slices) for sid in self.specimens]
        strata, bounds = np.repeat(np.arange(len(counts)), counts), np.cumsum([0, *counts])
        resamples = cmp.Resamples(len(strata), n_boot, strata=strata)

        def statistic(tables: list[np.ndarray]):
            def of_weights(w: np.ndarray) -> np.ndarray:
                per_specimen = [
                    nmi_from_contingency(
                        np.einsum("bs,sij->bij", w[:, bounds[i] : bounds[i + 1]], t),
                        average_method="geometric",
                    )
                    for i, t in enumerate(tables)
                ]
                return np.mean(per_specimen, axis=0)

            return of_weights

        out: dict[int, cmp.MethodScores] = {}
        for k in sorted({key[3] for key in self.contingency}):
            scores = out.setdefault(k, cmp.MethodScores(resamples, level))
            for method in METHODS:
                runs = self._runs(method, k)
                if runs:
                    stats = [statistic(self._slice_tables(method, s, k)) for s in runs]
                    scores.add(method, "nmi", cmp.scored_by(stats, resamples))
        return out

    def chance(self, k: int, n_perm: int = N_PERM) -> dict[str, cmp.Chance]:
        """At ``k`` clusters, each method's chance level: its segmentation's labels shuffled
        over the specimen voxels of the annotated slices (each seed and specimen keeping its
        own cluster sizes), the slice NMI averaged over specimens and seeds as for the method
        (:func:`medclust.comparison.random_tables`)."""
        rng = np.random.default_rng(np.random.SeedSequence([0, 2, k]))
        out = {}
        for method in METHODS:
            runs = self._runs(method, k)
            if not runs:
                continue
            null, observed = np.zeros(n_perm), []
            for seed in runs:
                tables = [t.sum(axis=0) for t in self._slice_tables(method, seed, k)]
                observed.append(
                    np.mean([nmi_from_contingency(t, average_method="geometric") for t in tables])
                )
                null += np.mean(
                    [
                        nmi_from_contingency(
                            cmp.random_tables(t, n_perm, rng), average_method="geometric"
                        )
                        for t in tables
                    ],
                    axis=0,
                )
            out[method] = cmp.null_summary(null / len(runs), float(np.mean(observed)), "nmi")
        return out


def intervals_table(scores: Mapping[int, cmp.MethodScores]) -> pd.DataFrame:
    """Per method and K (:meth:`Scores.scores`): the slice NMI (mean over seeds of the
    specimen average), its sd over seeds and 95 % interval (slices and seeds resampled)."""
    rows = []
    for k, by_method in scores.items():
        summary = by_method.summary()
        for method in summary.index:
            rows.append(
                {
                    "method": method,
                    "K": k,
                    "nmi": summary.loc[method, "nmi_mean"],
                    "nmi_sd": by_method.scored[method, "nmi"].sd,
                    "low": summary.loc[method, "nmi_ci_low"],
                    "high": summary.loc[method, "nmi_ci_high"],
                }
            )
    return pd.DataFrame(rows)


def differences(scores: Mapping[int, cmp.MethodScores]) -> list[cmp.Difference]:
    """At every K, JULE minus each rival of :data:`RIVALS` on the slice NMI, paired on the same
    annotated slices, draws and seeds."""
    return [
        by_method.compare("jule", rival, "nmi")
        for by_method in scores.values()
        for rival in RIVALS
        if "jule" in by_method.methods and rival in by_method.methods
    ]


def differences_table(scores: Mapping[int, cmp.MethodScores]) -> pd.DataFrame:
    """:func:`differences` with their K (``tables/differences``)."""
    rows = []
    for k, by_method in scores.items():
        table = cmp.differences_table(differences({k: by_method}))
        rows.append(table.assign(K=k))
    return pd.concat(rows, ignore_index=True)[["K", *table.columns]]


def best_methods(by_method: cmp.MethodScores) -> list[str]:
    """The top-scoring method (ceiling excluded) and every method whose paired difference
    from it cannot be told from 0: the methods tied for best."""
    candidates = [m for m in by_method.methods if m != "true_tissue"]
    top = max(candidates, key=lambda m: by_method.scored[m, "nmi"].mean)
    tied = [
        m
        for m in candidates
        if m != top and by_method.compare(m, top, "nmi").verdict == cmp.CANNOT_TELL
    ]
    return [top, *tied]


# --------------------------------------------------------------------------- Fig. 4 and 5


def average_nmi(results: pd.DataFrame) -> pd.DataFrame:
    """Fig. 4's average panel as a table: the specimen-averaged slice NMI, mean over seeds, one
    row per method (in :data:`METHODS` order, those that ran), one column per K."""
    by_seed = results.groupby(["method", "K", "seed"]).nmi_slices.mean()
    average = by_seed.groupby(["method", "K"]).mean().reset_index()
    table = average.pivot(index="method", columns="K", values="nmi_slices")
    return table.reindex([m for m in METHODS if m in table.index])


def interval_table(intervals: pd.DataFrame) -> pd.DataFrame:
    """The intervals of :func:`intervals_table` as text, ``mean ± sd [low, high]``, one row
    per method and one column per K (``tables/nmi_intervals``)."""
    rows = {}
    for r in intervals.itertuples():
        sd = f" ± {r.nmi_sd:.3f}" if r.nmi_sd > 0 else ""
        rows.setdefault(METHODS[r.method], {})[r.K] = f"{r.nmi:.3f}{sd} [{r.low:.3f}, {r.high:.3f}]"
    return pd.DataFrame.from_dict(rows, orient="index")


def plot_nmi_vs_k(
    results: pd.DataFrame,
    intervals: pd.DataFrame,
    specimen_ids: Sequence[str],
    ks: Sequence[int],
):
    """Fig. 4 analog: NMI against K per specimen (lines: mean over seeds, bands: their range)
    and averaged over specimens (band: the bootstrap interval of :func:`intervals_table`)."""
    stats = ["mean", "min", "max"]
    per_specimen = results.groupby(["specimen", "method", "K"]).nmi_slices.agg(stats)
    average = intervals.rename(columns={"nmi": "mean", "low": "min", "high": "max"})
    panels = [(sid, per_specimen.loc[sid].reset_index()) for sid in specimen_ids]
    panels.append(("average (95 % bootstrap interval)", average))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.4), sharey=True)
    for ax, (title, frame) in zip(np.atleast_1d(axes), panels, strict=True):
        for j, (method, label) in enumerate(METHODS.items()):
            f = frame[frame.method == method]
            if f.empty:
                continue
            style = "--" if method == "true_tissue" else "-"
            ax.plot(f.K, f["mean"], style, marker="o", ms=3, label=label, color=f"C{j}")
            ax.fill_between(f.K, f["min"], f["max"], color=f"C{j}", alpha=0.2)
        ax.set(xlabel="K", xticks=ks)
        ax.set_title(title, fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("NMI (annotated slices)")
    handles, names = np.atleast_1d(axes)[-1].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def plot_segmentations(
    specimens: Mapping[str, Specimen], examples: Mapping[tuple[str, str], np.ndarray], k: int
):
    """Fig. 5 analog: per specimen, its middle evaluation slice: ground truth (when known), the
    image and each method's segmentation (``examples`` by (specimen, method), from
    :class:`Scores`) with ``k`` clusters; cluster colours are arbitrary."""
    scored = has_ground_truth(specimens)
    cmap = label_cmap(max(k, 3) + 1)
    methods = [m for m in METHODS if any(key[1] == m for key in examples)]
    columns = (["ground truth"] if scored else []) + ["image"] + methods
    fig, axes = plt.subplots(
        len(specimens),
        len(columns),
        figsize=(2.3 * len(columns), 2.4 * len(specimens)),
        squeeze=False,
    )
    for r, (sid, spec) in enumerate(specimens.items()):
        z = spec.slices[len(spec.slices) // 2]
        panels = {"image": spec.image[:, :, z]}
        if scored:
            panels["ground truth"] = spec.labelmap[:, :, z]
        panels.update({m: examples[sid, m][:, :, z] for m in methods})
        for c, name in enumerate(columns):
            ax = axes[r, c]
            if name == "image":
                ax.imshow(panels[name].T, cmap="gray", origin="upper")
            else:
                ax.imshow(
                    panels[name].T,
                    cmap=cmap,
                    vmin=0,
                    vmax=cmap.N - 1,
                    origin="upper",
                    interpolation="nearest",
                )
            title = METHODS.get(name, name).replace(" (", "\n(")
            ax.set_title(f"{sid}: {title}" if c == 0 else title, fontsize=6)
            ax.set_axis_off()
    return fig


# --------------------------------------------------------------------------- paper, metrics


def paper_comparison(
    table1: pd.DataFrame,
    scores: Mapping[int, cmp.MethodScores],
    n_patches: int,
    patch_size: int,
    n_final_clusters: int,
    stride: int,
    k_paper: int,
    n_seeds: int,
) -> list[dict]:
    """The paper's statements beside this run's: the specimens (Table 1), the demo's sizes,
    and, when scored (``scores`` from :meth:`Scores.scores`), at how many K JULE is better,
    worse or cannot be told apart from each rival (the paper: better than both traditional
    methods at every K, Fig. 4) by the paired difference, and the average NMI at ``k_paper``
    (not given as numbers in the paper)."""
    sizes = [
        ("specimens", "3 (lung-A/B/C)", len(table1), "phantom specimens"),
        (
            "specimen size (voxels)",
            "477-971 per side",
            "; ".join(table1.size_voxels),
            "demo miniatures; a paper-sized phantom: --set size=512 (README)",
        ),
        (
            "training patches / patch size",
            "10,000 / 27³",
            f"{n_patches:,} / {patch_size}³",
            "demo scale: 27³ takes 13.6 s per epoch of 1,000 patches here, 11³ 0.8 s",
        ),
        ("final JULE clusters C", "100 (lung-A, C), 10 (lung-B)", n_final_clusters, ""),
        ("segmentation stride s / K", "5 / 3", f"{stride} / {k_paper}", ""),
    ]
    rows = [dict(zip(("quantity", "paper", "this_run", "note"), r, strict=True)) for r in sizes]
    if not scores:
        return rows
    diffs = differences(scores)
    for rival in RIVALS:
        verdicts = [d.verdict for d in diffs if d.b == rival]
        paper = "all K (Fig. 4)" if rival in ("kmeans_intensity", "multi_otsu") else "not run"
        rows.append(
            {
                "quantity": f"JULE vs {METHODS[rival]}: K where JULE is better / worse / "
                "cannot be told apart",
                "paper": paper,
                "this_run": " / ".join(
                    str(verdicts.count(v)) for v in (cmp.BETTER, cmp.WORSE, cmp.CANNOT_TELL)
                ),
                "note": f"of {len(verdicts)} K; paired differences over the annotated slices "
                "and seeds",
            }
        )
    at_k = scores[k_paper].summary()
    shown = [m for m in ("jule", "kmeans_intensity", "multi_otsu") if m in at_k.index]
    rows.append(
        {
            "quantity": f"average NMI at K = {k_paper}: JULE / k-means / Otsu",
            "paper": "not given as numbers ('not high')",
            "this_run": " / ".join(f"{at_k.nmi_mean[m]:.3f}" for m in shown),
            "note": f"mean over {n_seeds} seeds",
        }
    )
    return rows


def who_wins(
    scores: Mapping[int, cmp.MethodScores], chance: Mapping[str, cmp.Chance], k_paper: int
) -> str:
    """The plain sentence: at the paper's K, how JULE compares with each rival (paired
    differences on the same annotated slices, draws and seeds), which methods are best (every
    method tied with the top), whether JULE is above its chance level, and how far the
    ceiling of the label projection lies above."""
    by_method = scores[k_paper]
    at = by_method.summary()

    def show(m: str) -> str:
        return f"{at.nmi_mean[m]:.3f} [{at.nmi_ci_low[m]:.3f}, {at.nmi_ci_high[m]:.3f}]"

    parts = [
        f"{verdict_clause(by_method.compare('jule', r, 'nmi'), METHODS)}"
        for r in RIVALS
        if r in by_method.methods
    ]
    c = chance["jule"]
    best = [METHODS[m] for m in best_methods(by_method)]
    tie = f" (tied with {', '.join(best[1:])})" if len(best) > 1 else ""
    text = (
        f"At K = {k_paper}, JULE ({show('jule')}; chance at its cluster sizes {c.mean:.4f}) "
        + "; ".join(parts)
        + f". The best method here is {best[0]}{tie}."
    )
    if "true_tissue" in by_method.methods:
        text += (
            " Painting each sub-patch by its true tissue would reach "
            f"{show('true_tissue')}: that is the ceiling of the label projection."
        )
    return text


def _by_k(frame: pd.DataFrame, value: str) -> dict[str, dict[str, float]]:
    """``{method: {K: mean of value}}`` over the rows of ``frame``, methods that ran."""
    return {
        m: {
            str(k): float(v) for k, v in frame[frame.method == m].groupby("K")[value].mean().items()
        }
        for m in METHODS
        if m in set(frame.method)
    }


def study_metrics(
    results: pd.DataFrame,
    intervals: pd.DataFrame,
    models: Mapping[tuple[str, int], JULE],
    n_patches: int,
    patch_size: int,
    k_paper: int,
    chance: Mapping[str, cmp.Chance] | None = None,
    diffs: Sequence[cmp.Difference] = (),
) -> dict:
    """The study's metrics: sizes, JULE's timesteps, periods and SGD steps per specimen (mean
    over seeds, truncated), and, when scored, the slice NMI per method and K (mean over seeds of
    the specimen average; ``nmi_per_specimen`` per specimen), at ``k_paper`` its mean
    (``nmi_at_k_paper``, the headline), sd over seeds (``nmi_seed_sd``, 0 for one seed) and
    bootstrap interval (``nmi_ci``), the whole-volume NMI (``nmi_full_volume``), and, given
    them, each method's chance level (``nmi_chance``) and JULE's paired differences from its
    rivals (``difference``) at ``k_paper``."""
    specimen_ids = list(dict.fromkeys(sid for sid, _ in models))
    seeds = list(dict.fromkeys(s for _, s in models))

    def per_specimen(attr: str) -> dict[str, int]:
        return {
            sid: int(np.mean([getattr(models[sid, s], attr) for s in seeds]))
            for sid in specimen_ids
        }

    metrics = {
        "n_patches": n_patches,
        "patch_size": patch_size,
        "n_specimens": len(specimen_ids),
        "n_seeds": len(seeds),
        "jule_timesteps": per_specimen("n_timesteps_"),
        "jule_periods": per_specimen("n_periods_"),
        "jule_sgd_steps": per_specimen("iter_"),
    }
    if "nmi_slices" not in results.columns:
        return metrics
    by_seed = results.groupby(["method", "K", "seed"]).mean(numeric_only=True).reset_index()
    at_k = by_seed[by_seed.K == k_paper]
    ran = [m for m in METHODS if m in set(results.method)]
    ci = intervals[intervals.K == k_paper].set_index("method")
    metrics["nmi_at_k_paper"] = {m: float(at_k[at_k.method == m].nmi_slices.mean()) for m in ran}
    metrics["nmi_seed_sd"] = {m: sd_or_zero(at_k[at_k.method == m].nmi_slices) for m in ran}
    metrics["nmi_ci"] = {m: [float(ci.low[m]), float(ci.high[m])] for m in ran}
    metrics["nmi"] = _by_k(by_seed, "nmi_slices")
    metrics["nmi_per_specimen"] = {
        sid: _by_k(results[results.specimen == sid], "nmi_slices") for sid in specimen_ids
    }
    metrics["nmi_full_volume"] = {m: float(at_k[at_k.method == m].nmi_volume.mean()) for m in ran}
    if chance:
        metrics["nmi_chance"] = {m: c.mean for m, c in chance.items()}
    metrics["difference"] = {
        f"nmi_jule_vs_{d.b}": {"diff": d.diff, "ci": [d.low, d.high]} for d in diffs
    }
    return metrics
