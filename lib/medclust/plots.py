"""Figures shared by the notebooks: axial slices with masks and label maps overlaid; 2D maps
of embeddings with the Voronoi cells of cluster centres."""

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


def voronoi_projection(ax, Z, centres, projector, labels, classes, title: str | None = None):
    """A 2D map of the embeddings ``Z`` and the cluster ``centres`` (projected together by
    ``projector``, e.g. ``TSNE`` or ``UMAP``; anything with ``fit_transform``): the Voronoi cell
    of each projected centre as a pale background (the region nearest to it in the map), the
    points coloured by their true ``labels`` (one colour per entry of ``classes``), the centres
    as black crosses."""
    both = projector.fit_transform(np.vstack([Z, centres]))
    points, proj_centres = both[: len(Z)], both[len(Z) :]
    pad = 0.05 * (points.max(0) - points.min(0))
    gx, gy = np.meshgrid(
        *(
            np.linspace(points[:, k].min() - pad[k], points[:, k].max() + pad[k], 200)
            for k in range(2)
        )
    )
    cell = ((np.stack([gx, gy], -1)[..., None, :] - proj_centres) ** 2).sum(-1).argmin(-1)
    ax.contourf(gx, gy, cell, levels=np.arange(len(centres) + 1) - 0.5, cmap="Pastel1", alpha=0.6)
    labels = np.asarray(labels)
    for k, c in enumerate(classes):
        sel = labels == c
        ax.scatter(points[sel, 0], points[sel, 1], s=6, label=c, color=plt.get_cmap("tab10")(k))
    ax.scatter(proj_centres[:, 0], proj_centres[:, 1], marker="X", s=80, color="black")
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax
