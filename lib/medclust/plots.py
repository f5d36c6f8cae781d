"""Figures shared by the notebooks: axial slices with masks and label maps overlaid."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: notebooks run under papermill on machines without a screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402


def label_cmap(n_labels: int) -> ListedColormap:
    """Distinct colours for labels 1..n_labels; label 0 is transparent."""
    base = plt.get_cmap("tab20" if n_labels > 10 else "tab10")
    colours = [(0, 0, 0, 0)] + [base(i % base.N) for i in range(n_labels)]
    return ListedColormap(colours)


def intensity_window(image: np.ndarray, mask: np.ndarray | None = None, q=(1, 99)) -> tuple:
    """Display window from percentiles (of the ROI when a mask is given)."""
    values = image[mask > 0] if mask is not None and np.any(mask) else image
    lo, hi = np.percentile(values, q)
    return float(lo), float(hi if hi > lo else lo + 1)


def show_axial(
    ax,
    image: np.ndarray,
    z: int,
    mask: np.ndarray | None = None,
    labelmap: np.ndarray | None = None,
    n_labels: int | None = None,
    window: tuple | None = None,
    alpha: float = 0.45,
    title: str | None = None,
):
    """One axial slice with overlays: the mask as a contour, the label map as translucent
    colours. Array axes are (x, y, z); x runs to the right and y downwards, as in a
    radiological display."""
    vmin, vmax = window or intensity_window(image)
    ax.imshow(image[:, :, z].T, cmap="gray", vmin=vmin, vmax=vmax, origin="upper")
    if labelmap is not None:
        n = n_labels or int(labelmap.max())
        lab = np.ma.masked_equal(labelmap[:, :, z].T, 0)
        ax.imshow(
            lab,
            cmap=label_cmap(n),
            vmin=0,
            vmax=n,
            alpha=alpha,
            origin="upper",
            interpolation="nearest",
        )
    if mask is not None and np.any(mask[:, :, z]):
        ax.contour(mask[:, :, z].T > 0, levels=[0.5], colors="yellow", linewidths=0.8)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def largest_roi_slice(mask: np.ndarray) -> int:
    """Index of the axial slice with the most ROI voxels (the middle slice without a mask)."""
    if mask is None or not np.any(mask):
        return mask.shape[2] // 2 if mask is not None else 0
    return int(np.argmax((mask > 0).sum(axis=(0, 1))))


def label_legend(ax, labels: dict[int, str], n_labels: int | None = None, **kwargs):
    """Legend patches for the label colours of :func:`show_axial` (label 0 left out)."""
    from matplotlib.patches import Patch

    cmap = label_cmap(n_labels or max(labels, default=1))
    handles = [
        Patch(color=cmap(k), label=f"{k} {name}") for k, name in sorted(labels.items()) if k > 0
    ]
    if handles:
        ax.legend(handles=handles, fontsize=7, frameon=False, **kwargs)
    return ax
