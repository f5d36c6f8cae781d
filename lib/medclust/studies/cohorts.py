"""Study 00, a first look at the cohorts (``notebooks/00_cohorts.ipynb``).

Not a paper: the cohort survey every study relies on. For each cohort folder under
``data_dir`` (Medical Segmentation Decathlon / nnU-Net layout, :mod:`medclust.cohort`): the
per-case sizes and spacings (:func:`volume_facts`), one overview row (:func:`overview_table`),
example slices spread over the clinical label (:func:`example_ids`, :func:`plot_examples`) and
one ``metrics.json`` block (:func:`cohort_metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

from medclust.cohort import Cohort, find_cohorts
from medclust.plots import label_legend, largest_roi_slice, show_axial


def cohort_folders(data_dir: str | Path) -> list[Path]:
    """The cohort folders (with a ``dataset.json``) under ``data_dir``; ``FileNotFoundError``
    when there is none."""
    folders = find_cohorts(data_dir)
    if not folders:
        raise FileNotFoundError(
            f"data_dir={data_dir!r}: no cohort folder with a dataset.json (run `make data`)"
        )
    return folders


def volume_facts(cohort: Cohort) -> pd.DataFrame:
    """One row per case: shape, spacing (mm), ROI size (ml in 3D, cm^2 for 2D images) and the
    1st / 99th intensity percentiles."""
    rows = []
    for volume in cohort.volumes():
        roi = volume.mask
        # ROI size in ml (3D) or cm^2 (2D images)
        voxel_size = float(np.prod(volume.spacing)) / (1000.0 if volume.image.ndim == 3 else 100.0)
        rows.append(
            {
                "case_id": volume.case_id,
                "shape": "x".join(map(str, volume.image.shape)),
                "spacing_mm": "x".join(f"{s:g}" for s in volume.spacing),
                "roi_voxels": int((roi > 0).sum()) if roi is not None else np.nan,
                "roi_size": float((roi > 0).sum() * voxel_size) if roi is not None else np.nan,
                "roi_unit": "ml" if volume.image.ndim == 3 else "cm2",
                "intensity_p1": float(np.percentile(volume.image, 1)),
                "intensity_p99": float(np.percentile(volume.image, 99)),
            }
        )
    return pd.DataFrame(rows)


def overview_table(cohorts: Sequence[Cohort], facts: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per cohort (``tables/cohorts``): modality, cases, the first three distinct shapes
    and spacings, median ROI size, labels and clinical columns; ``facts`` from
    :func:`volume_facts` by cohort name."""
    return pd.DataFrame(
        [
            {
                "cohort": cohort.name,
                "modality": cohort.modality,
                "cases": len(cohort),
                "shapes": ", ".join(sorted(facts[cohort.name]["shape"].unique())[:3]),
                "spacing_mm": ", ".join(sorted(facts[cohort.name]["spacing_mm"].unique())[:3]),
                "roi_size_median": facts[cohort.name]["roi_size"].median(),
                "roi_unit": facts[cohort.name]["roi_unit"].iloc[0],
                "labels": "; ".join(f"{k}={v}" for k, v in cohort.labels.items()),
                "clinical_columns": ", ".join(cohort.clinical.columns),
            }
            for cohort in cohorts
        ]
    )


def clinical_label(cohort: Cohort) -> str:
    """The clinical column a cohort declares as its label, else its first non-numeric one."""
    declared = cohort.extra.get("clinical_label")
    if declared in cohort.clinical.columns:
        return declared
    # not ``dtype == object``: pandas 3 reads text columns as the ``str`` dtype
    text = [c for c in cohort.clinical.columns if not is_numeric_dtype(cohort.clinical[c])]
    return text[0] if text else cohort.clinical.columns[0]


def example_ids(cohort: Cohort, n: int) -> list[str]:
    """Up to n case ids, taking cases in turn from each value of the clinical label."""
    label = clinical_label(cohort)
    groups = [list(ids) for _, ids in cohort.clinical.groupby(label).groups.items()]
    picked = []
    while len(picked) < min(n, len(cohort)):
        for group in groups:
            if group and len(picked) < n:
                picked.append(group.pop(0))
    return picked


def _as3d(array: np.ndarray | None) -> np.ndarray | None:
    """A 2D image as a volume of one slice (None stays None)."""
    return array if array is None or array.ndim == 3 else array[..., None]


def plot_examples(cohort: Cohort, ids: Sequence[str]) -> plt.Figure:
    """One panel per case: the axial slice with the largest ROI (the middle slice without a
    mask), the ROI contour and the ground-truth label map, titled with the clinical label."""
    label = clinical_label(cohort)
    n_labels = max(cohort.labels) if cohort.labels else None
    fig, axes = plt.subplots(1, len(ids), figsize=(3.2 * len(ids), 3.4), squeeze=False)
    for ax, case_id in zip(axes[0], ids, strict=True):
        volume = cohort.load(case_id)
        image, mask, labelmap = _as3d(volume.image), _as3d(volume.mask), _as3d(volume.labelmap)
        z = largest_roi_slice(mask) if mask is not None else image.shape[2] // 2
        show_axial(
            ax,
            image,
            z,
            mask=mask,
            labelmap=labelmap,
            n_labels=n_labels,
            title=f"{case_id}\n{label}={cohort.clinical.loc[case_id, label]}  z={z}",
        )
    label_legend(axes[0, -1], cohort.labels, n_labels, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{cohort.name}: {cohort.modality}", fontsize=10)
    return fig


def cohort_metrics(cohorts: Sequence[Cohort], facts: Mapping[str, pd.DataFrame]) -> dict:
    """One block per cohort (cases, median ROI size and voxel count, counts of the clinical
    label), so ``dvc metrics diff`` shows when a cohort changes; plus the headline totals
    ``n_cohorts`` and ``n_cases``."""
    metrics = {}
    for cohort in cohorts:
        label = clinical_label(cohort)
        table = facts[cohort.name]
        voxels = [np.prod([int(s) for s in shape.split("x")]) for shape in table["shape"]]
        counts = cohort.clinical[label].value_counts().sort_index()
        metrics[cohort.name] = {
            "n_cases": len(cohort),
            "roi_size_median": table["roi_size"].median(),
            "roi_unit": table["roi_unit"].iloc[0],
            "voxels_median": float(np.median(voxels)),
            "label_counts": {str(k): int(v) for k, v in counts.items()},
        }
    headline = {"n_cohorts": len(metrics), "n_cases": sum(m["n_cases"] for m in metrics.values())}
    return {**metrics, **headline}


#: ``metrics.json`` holds the totals only (``tables/metrics_all.json`` every block).
HEADLINE = {"n_cohorts": "n_cohorts", "n_cases": "n_cases"}
