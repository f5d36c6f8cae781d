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

from medclust.cohort import Volume, load_cohort
from medclust.models.jule import JULE
from medclust.patches3d import sample_cubes, specimen_region
from medclust.plots import label_cmap
from medclust.runtime import select_device
from medclust.segmentation import (
    annotated_slices,
    intensity_kmeans_segmentation,
    multi_otsu_segmentation,
    segmentation_nmi,
)
from medclust.studies.common import StudyRun, sd_or_zero
from medclust.studies.common import start as start_run
from medclust.validation import check_int

log = logging.getLogger(__name__)

#: The methods of Fig. 4 (and the untrained-CNN control), in the order of the figures and tables.
METHODS = {
    "jule": "JULE-based (proposed)",
    "kmeans_intensity": "k-means on intensities",
    "multi_otsu": "multi-threshold Otsu",
    "random_cnn": "k-means on untrained-CNN features",
}

#: ``metrics.json`` (dvc metrics show/diff): the full-volume NMI of each method at the paper's K.
HEADLINE = {
    "jule": "nmi_full_volume.jule",
    "kmeans": "nmi_full_volume.kmeans_intensity",
    "otsu": "nmi_full_volume.multi_otsu",
    "cnn0": "nmi_full_volume.random_cnn",
}


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


def training_patches(spec: Specimen, n_patches: int, patch_size: int, seed: int) -> np.ndarray:
    """``n_patches`` random ``patch_size``-cubes whose centre voxel passes the threshold
    (Sec. 2.3), drawn with ``seed``."""
    check_int("param n_patches", n_patches)
    cubes, _ = sample_cubes(spec.image, spec.region, n_patches, patch_size, rng=seed)
    log.info(
        "%s seed %d: %d training patches of %d^3", spec.volume.case_id, seed, len(cubes), patch_size
    )
    return cubes


def jule_history(models: Mapping[tuple[str, int], JULE]) -> pd.DataFrame:
    """One row per partially unrolled period of every fit (``models`` by (specimen, seed)):
    clusters before and after the forward pass and the mean triplet loss of the backward pass
    (the final row of a fit is the extra backward pass on the final labels, Sec. 2.2)."""
    return pd.DataFrame(
        [
            {"specimen": sid, "seed": s, "period": period, **h}
            for (sid, s), model in models.items()
            for period, h in enumerate(model.history_)
        ]
    )


def plot_recurrent_process(history: pd.DataFrame) -> plt.Figure:
    """Clusters after each forward pass (log scale) and the loss of each backward pass."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for (sid, s), h in history.groupby(["specimen", "seed"]):
        axes[0].plot(h.period, h.clusters_after, marker="o", label=f"{sid} seed {s}")
        axes[1].plot(h.period, h.loss, marker="o")
    axes[0].set(
        yscale="log",
        xlabel="partially unrolled period",
        ylabel="clusters after merging",
        title="JULE forward passes",
    )
    axes[1].set(
        xlabel="partially unrolled period",
        ylabel="mean triplet loss",
        title="JULE backward passes",
    )
    axes[0].legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- phase 2: scores


def feature_maps(model: JULE) -> list[tuple[str, object]]:
    """The patch embeddings of Sec. 2.5 by method: the trained CNN (``"jule"``) and the same
    CNN before training (``"random_cnn"``, the control)."""
    return [("jule", model.transform), ("random_cnn", model.random_network_transform)]


class Scores:
    """NMI of each segmentation against the ground truth, on the evaluation slices and on the
    whole volume (when the specimens have labelmaps), one row per (specimen, method, seed, K);
    keeps the segmentations at ``k_paper`` of ``example_seed`` for Fig. 5 (``examples``).

    The two traditional baselines of Fig. 4 label every specimen voxel by its intensity alone
    and are segmented and scored here (:meth:`add_intensity_kmeans`, :meth:`add_multi_otsu`).
    """

    def __init__(self, specimens: Mapping[str, Specimen], k_paper: int, example_seed: int):
        self.specimens = specimens
        self.scored = has_ground_truth(specimens)
        self.k_paper, self.example_seed = k_paper, example_seed
        self.rows: list[dict] = []
        self.examples: dict[tuple[str, str], np.ndarray] = {}

    def add(self, sid: str, method: str, seed: int, k: int, seg: np.ndarray) -> None:
        spec = self.specimens[sid]
        row = {"specimen": sid, "method": method, "seed": seed, "K": k}
        if self.scored:
            row["nmi_slices"] = segmentation_nmi(spec.labelmap, seg, spec.slices)
            row["nmi_volume"] = segmentation_nmi(spec.labelmap, seg)
        self.rows.append(row)
        if k == self.k_paper and seed == self.example_seed:
            self.examples[sid, method] = seg

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


# --------------------------------------------------------------------------- Fig. 4 and 5


def _nmi_ranges(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean/min/max of the slice NMI over seeds, per specimen and averaged over specimens."""
    stats = ["mean", "min", "max"]
    per_specimen = results.groupby(["specimen", "method", "K"]).nmi_slices.agg(stats).reset_index()
    by_seed = results.groupby(["method", "K", "seed"]).nmi_slices.mean()
    return per_specimen, by_seed.groupby(["method", "K"]).agg(stats).reset_index()


def average_nmi(results: pd.DataFrame) -> pd.DataFrame:
    """Fig. 4's average panel as a table: the specimen-averaged slice NMI, mean over seeds, one
    row per method (in :data:`METHODS` order), one column per K."""
    _, average = _nmi_ranges(results)
    return average.pivot(index="method", columns="K", values="mean").reindex(list(METHODS))


def plot_nmi_vs_k(results: pd.DataFrame, specimen_ids: Sequence[str], ks: Sequence[int]):
    """Fig. 4 analog: NMI against K per specimen and averaged; lines are means over seeds,
    bands their range."""
    per_specimen, average = _nmi_ranges(results)
    panels = [(sid, per_specimen[per_specimen.specimen == sid]) for sid in specimen_ids]
    panels.append(("average", average))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), sharey=True)
    for ax, (title, frame) in zip(np.atleast_1d(axes), panels, strict=True):
        for j, (method, label) in enumerate(METHODS.items()):
            f = frame[frame.method == method]
            ax.plot(f.K, f["mean"], marker="o", label=label, color=f"C{j}")
            ax.fill_between(f.K, f["min"], f["max"], color=f"C{j}", alpha=0.2)
        ax.set(title=title, xlabel="K", xticks=ks)
    np.atleast_1d(axes)[0].set_ylabel("NMI (annotated slices)")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    return fig


def plot_segmentations(
    specimens: Mapping[str, Specimen], examples: Mapping[tuple[str, str], np.ndarray], k: int
):
    """Fig. 5 analog: per specimen, its middle evaluation slice: ground truth (when known), the
    image and each method's segmentation (``examples`` by (specimen, method), from
    :class:`Scores`) with ``k`` clusters; cluster colours are arbitrary."""
    scored = has_ground_truth(specimens)
    cmap = label_cmap(max(k, 3) + 1)
    columns = (["ground truth"] if scored else []) + ["image"] + list(METHODS)
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
        panels.update({m: examples[sid, m][:, :, z] for m in METHODS})
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
            title = METHODS.get(name, name)
            ax.set_title(f"{sid}: {title}" if c == 0 else title, fontsize=7)
            ax.set_axis_off()
    return fig


# --------------------------------------------------------------------------- paper, metrics


def paper_comparison(
    table1: pd.DataFrame,
    table_fig4: pd.DataFrame | None,
    n_patches: int,
    patch_size: int,
    n_final_clusters: int,
    stride: int,
    k_paper: int,
    n_seeds: int,
) -> list[dict]:
    """The paper's statements beside this run's: the specimens (Table 1), the demo's sizes,
    and, when scored (``table_fig4`` from :func:`average_nmi`), at how many K JULE beats each
    baseline (the paper: all, Fig. 4) and the average NMI at ``k_paper`` (not given as
    numbers in the paper)."""
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
            "demo scale",
        ),
        ("final JULE clusters C", "100 (lung-A, C), 10 (lung-B)", n_final_clusters, ""),
        ("segmentation stride s / K", "5 / 3", f"{stride} / {k_paper}", ""),
    ]
    rows = [dict(zip(("quantity", "paper", "this_run", "note"), r, strict=True)) for r in sizes]
    if table_fig4 is None:
        return rows
    ks = list(table_fig4.columns)
    for m in ("kmeans_intensity", "multi_otsu"):
        n_win = int(sum(table_fig4.loc["jule", k] > table_fig4.loc[m, k] for k in ks))
        rows.append(
            {
                "quantity": f"K values where JULE beats {METHODS[m]} (average NMI)",
                "paper": "all (Fig. 4)",
                "this_run": f"{n_win} of {len(ks)}",
                "note": "NMI on evaluation slices",
            }
        )
    at_k = [f"{table_fig4.loc[m, k_paper]:.3f}" for m in ("jule", "kmeans_intensity", "multi_otsu")]
    rows.append(
        {
            "quantity": f"average NMI at K = {k_paper}: JULE / k-means / Otsu",
            "paper": "not given as numbers ('not high')",
            "this_run": " / ".join(at_k),
            "note": f"mean over {n_seeds} seeds",
        }
    )
    return rows


def _by_k(frame: pd.DataFrame, value: str) -> dict[str, dict[str, float]]:
    """``{method: {K: mean of value}}`` over the rows of ``frame``."""
    return {
        m: {
            str(k): float(v) for k, v in frame[frame.method == m].groupby("K")[value].mean().items()
        }
        for m in METHODS
    }


def study_metrics(
    results: pd.DataFrame,
    models: Mapping[tuple[str, int], JULE],
    n_patches: int,
    patch_size: int,
    k_paper: int,
) -> dict:
    """The study's metrics: sizes, JULE's timesteps and periods per specimen (mean over seeds,
    truncated), and, when scored, the slice NMI per method and K (mean over seeds of the
    specimen average; ``nmi_per_specimen`` per specimen), its sd over seeds at ``k_paper``
    (``nmi_seed_sd``, 0 for one seed) and the whole-volume NMI at ``k_paper``
    (``nmi_full_volume``)."""
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
    }
    if "nmi_slices" not in results.columns:
        return metrics
    by_seed = results.groupby(["method", "K", "seed"]).mean(numeric_only=True).reset_index()
    at_k = by_seed[by_seed.K == k_paper]
    metrics["nmi"] = _by_k(by_seed, "nmi_slices")
    metrics["nmi_seed_sd"] = {m: sd_or_zero(at_k[at_k.method == m].nmi_slices) for m in METHODS}
    metrics["nmi_per_specimen"] = {
        sid: _by_k(results[results.specimen == sid], "nmi_slices") for sid in specimen_ids
    }
    metrics["nmi_full_volume"] = {
        m: float(at_k[at_k.method == m].nmi_volume.mean()) for m in METHODS
    }
    return metrics
