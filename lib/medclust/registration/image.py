"""The volume carrier of the registration (:class:`Image3D`), its SimpleITK conversion, the
process-wide ITK thread count and the two overlap measures (:func:`ncc`, Eq. (1); :func:`dice`).

Determinism. Every registration, resampling and filter runs with ``n_threads`` threads
(default 1), and :meth:`TemplateSet.build` / :meth:`TemplateSet.normalize` also set SimpleITK's
process-wide default thread count to ``n_threads`` while they run (:func:`itk_threads`): ITK's
multi-threaded sums depend on how the work is split, and some internal pieces split by the
global default whatever the registration object is told (with 1, 2 and 8 default threads the
same call gave three different results). One thread per registration is also what a Dask
worker on one core wants. The volume -> template metric counts a share
``sampling_fraction`` (40 %) of the grid's voxels, drawn once by numpy from ``seed`` and given
to ITK as a fixed-image mask: ITK's own RANDOM/REGULAR sampling jitters the sample points with
a generator that its seed did not make reproducible (two runs differed, and the affine
sometimes diverged). Template -> atlas registrations use every voxel. With these settings two
runs, in one process or in two, whatever the caller's SimpleITK thread setting, give
bit-identical transforms, NCCs and label maps on one machine and software stack (checked by
``tests/test_registration.py``); another CPU or library build may differ in the last bits.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

LUNG_LABELS = (2, 3)  # right and left lung in the routine_ct phantom's labelmaps

_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 0


@contextlib.contextmanager
def itk_threads(n_threads: int) -> Iterator[None]:
    """Run SimpleITK with ``n_threads`` as its process-wide default thread count.

    Setting the thread count of a filter or of ``ImageRegistrationMethod`` is not enough:
    internal pieces (the metric's threader among them) split their work by the global default,
    and their floating-point sums, hence the registration results, change with it (measured:
    1, 2 and 8 default threads gave three different results). The previous value is restored
    when the last concurrent user leaves; concurrent users must ask for the same count.
    """
    global _threads_users, _threads_saved
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        _threads_users += 1
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n_threads))
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_threads_saved)


# --------------------------------------------------------------------------- images


@dataclass
class Image3D:
    """A 3-D volume with its geometry: the thin carrier the registration works on.

    ``array`` has axes (x, y, z) as medclust stores volumes, ``spacing`` is the voxel size in
    mm, ``affine`` the 4x4 voxel -> mm matrix (its column norms must equal ``spacing``; shear
    is not allowed), ``labelmap`` optional integer organ labels of the same shape.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    labelmap: np.ndarray | None = None

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"Image3D: array must be 3-D (x, y, z), got shape {array.shape}")
        if min(array.shape) < 2:
            raise ValueError(f"Image3D: array needs >= 2 voxels per axis, got shape {array.shape}")
        if array.dtype.kind not in "iuf" or not np.all(np.isfinite(array)):
            raise ValueError("Image3D: array must be numeric without NaN or infinite voxels")
        spacing = np.asarray(self.spacing, float).ravel()
        if spacing.size != 3 or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise ValueError(f"Image3D: spacing must be 3 positive numbers, got {self.spacing!r}")
        affine = np.asarray(self.affine, float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"Image3D: affine must be a finite 4x4 matrix, got {affine.shape}")
        zooms = np.linalg.norm(affine[:3, :3], axis=0)
        if not np.allclose(zooms, spacing, rtol=1e-3):
            raise ValueError(
                f"Image3D: spacing {tuple(spacing)} does not match the affine's voxel sizes "
                f"{tuple(np.round(zooms, 4))}"
            )
        direction = affine[:3, :3] / zooms
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
            raise ValueError("Image3D: affine has shear (its axes are not orthogonal)")
        if self.labelmap is not None:
            labelmap = np.asarray(self.labelmap)
            if labelmap.shape != array.shape:
                raise ValueError(
                    f"Image3D: labelmap shape {labelmap.shape} does not match image shape "
                    f"{array.shape}"
                )
            if labelmap.dtype.kind not in "iub":
                raise ValueError(f"Image3D: labelmap must be integer, got dtype {labelmap.dtype}")
            self.labelmap = labelmap
        self.array = array
        self.spacing = tuple(float(s) for s in spacing)
        self.affine = affine

    def __getstate__(self) -> dict:
        """Integer-valued voxels travel as int16 and labels as uint8 when that is lossless."""
        state = dict(self.__dict__)
        state["_dtypes"] = (
            self.array.dtype,
            None if self.labelmap is None else self.labelmap.dtype,
        )
        state["array"] = _compact(self.array, np.int16)
        if self.labelmap is not None:
            state["labelmap"] = _compact(self.labelmap, np.uint8)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        array_dtype, label_dtype = state.pop("_dtypes")
        state["array"] = state["array"].astype(array_dtype, copy=False)
        if state["labelmap"] is not None:
            state["labelmap"] = state["labelmap"].astype(label_dtype, copy=False)
        self.__dict__.update(state)

    @classmethod
    def from_volume(cls, volume) -> Image3D:
        """From a :class:`medclust.cohort.Volume` (image, spacing, affine, labelmap)."""
        return cls(
            array=volume.image,
            spacing=tuple(volume.spacing[:3]),
            affine=volume.affine,
            labelmap=volume.labelmap,
        )

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        spacing: Sequence[float],
        labelmap: np.ndarray | None = None,
        origin: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> Image3D:
        """An axis-aligned image: affine ``diag(spacing)`` plus ``origin`` (write_cohort's
        affine when the origin is 0)."""
        affine = np.diag([*(float(s) for s in spacing), 1.0])
        affine[:3, 3] = np.asarray(origin, float)
        return cls(array=array, spacing=tuple(spacing), affine=affine, labelmap=labelmap)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)

    def voxel_to_mm(self, points_vox: np.ndarray) -> np.ndarray:
        """Physical positions (n, 3) of voxel indices (n, 3) (fractional allowed)."""
        pts = _as_points(points_vox, "points_vox")
        return pts @ self.affine[:3, :3].T + self.affine[:3, 3]

    def mm_to_voxel(self, points_mm: np.ndarray) -> np.ndarray:
        """Fractional voxel indices (n, 3) of physical positions (n, 3)."""
        pts = _as_points(points_mm, "points_mm")
        return (pts - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T

    def to_sitk(self, labels: bool = False) -> sitk.Image:
        """The image (float32) or its labelmap (uint16) as a SimpleITK image in this geometry."""
        if labels:
            if self.labelmap is None:
                raise ValueError("Image3D: no labelmap to convert")
            if self.labelmap.size and (self.labelmap.min() < 0 or self.labelmap.max() > 65535):
                raise ValueError("Image3D: labelmap values must be in 0..65535 for SimpleITK")
            values = np.asarray(self.labelmap, np.uint16)
        else:
            values = np.asarray(self.array, np.float32)
        image = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0)))
        _set_geometry(image, self.spacing, self.affine)
        return image


def _compact(values: np.ndarray, dtype: type) -> np.ndarray:
    """``values`` as ``dtype`` when that loses nothing, else unchanged."""
    info = np.iinfo(dtype)
    if values.size and not (info.min <= values.min() and values.max() <= info.max):
        return values
    small = values.astype(dtype)
    return small if np.array_equal(small, values) else values


def _set_geometry(image: sitk.Image, spacing: Sequence[float], affine: np.ndarray) -> None:
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in affine[:3, 3]])
    direction = affine[:3, :3] / np.asarray(spacing, float)[None, :]
    image.SetDirection([float(v) for v in direction.ravel()])


def _to_numpy(image: sitk.Image) -> np.ndarray:
    """SimpleITK image -> numpy array with axes (x, y, z) (vector components last)."""
    arr = sitk.GetArrayFromImage(image)
    return np.ascontiguousarray(np.moveaxis(arr, (0, 1, 2), (2, 1, 0)))


def _as_points(points, name: str) -> np.ndarray:
    pts = np.asarray(points, float)
    if pts.ndim == 1 and pts.size == 3:
        pts = pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3), got {np.shape(points)}")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return pts


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation (Pearson) of ``a`` and ``b`` over ``mask`` (Eq. (1));
    0.0 when either is constant there."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"ncc: a and b differ in shape: {a.shape} vs {b.shape}")
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != a.shape:
            raise ValueError(f"ncc: mask shape {mask.shape} does not match {a.shape}")
        a, b = a[mask], b[mask]
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2 |a & b| / (|a| + |b|)`` of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"dice: masks differ in shape: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
