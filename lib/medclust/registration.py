"""Multi-template spatial normalisation (study 05; /work/shared/papers/004_8f822e2a6a11f707.txt,
Sec. 2 "Spatial Normalization", Fig. 2 and Eq. (1)), wrapping SimpleITK.

The paper maps every routine CT volume ``I_i`` to one reference atlas ``A`` through a set of
templates ``E_1..E_E`` that cover the population's variability:

* **build** (:meth:`TemplateSet.build`, once): every template is registered to the atlas,
  "carefully supervised and supported by manually annotated landmarks" -> ``T_eA``;
* **normalise** (:meth:`TemplateSet.normalize`, per volume): the volume is registered to every
  template (initial position estimate, affine, non-linear) -> ``T_ie``; the compositions
  ``T_eA o T_ie`` are candidate maps to the atlas, and the one that maximises the normalised
  cross-correlation of the atlas warped into the volume with the volume is chosen (Eq. (1)).

Conventions. An :class:`Image3D` holds a volume as medclust stores it: array axes (x, y, z),
axial slices along the last axis, and the 4x4 voxel -> mm affine of its NIfTI file (as
:func:`medclust.cohort.nifti_bytes` writes it: ``diag(spacing)``). Physical space here is the
space of that affine, used as is (no RAS -> LPS flip): registration only needs every image in
one consistent frame, and points come back in the same mm as the cohort's landmark columns.
Transforms follow ITK: the fixed image is the volume (or, in the build, the template) and a
transform maps a *fixed* point to the corresponding *moving* point. The chosen composition
therefore maps volume mm -> atlas mm, which is exactly what is needed both to carry volume
coordinates into the atlas (:meth:`Normalization.to_atlas_mm`) and to pull atlas labels back
onto the volume grid (:meth:`Normalization.atlas_labels`). Because the volume is the fixed
image, a partial field of view (a fragment) only asks for its own voxels to be matched inside
the larger template.

Choices (measured on the ``routine_ct`` phantoms, 48 x 48 x 40 voxels at 7.5 x 7.5 x 8 mm; see
``benchmarks/registration_benchmark.py``):

* **Coarse isotropic grid.** The paper registers at an isotropic 2 mm. The demo must push ~200
  volumes through five templates in about a minute on two cores, so every image is clipped to a
  CT window (-1000..500 HU: bone must not dominate), Gaussian-smoothed against aliasing and
  resampled to ``registration_spacing_mm`` (12 mm; the grid spans exactly the image's first
  to last voxel centre). Template -> atlas registrations run once, on a finer grid
  (``template_spacing_mm``, 8 mm) with more iterations.
* **Initial position estimate.** The paper uses correlated 3D-SIFT features. Here the
  in-plane position comes from the body centroids and the position along the slice axis from
  an exhaustive search (half-slice steps) of the normalised cross-correlation over every
  placement of the volume's slab inside the template, vectorised in numpy on one resampling of
  the template. This finds fragments (upper or lower thorax, re-indexed from slice 0) that a
  moment-based initialiser would centre wrongly. With landmarks (template -> atlas) the
  initial transform is instead the least-squares affine through the landmark pairs
  (``sitk.LandmarkBasedTransformInitializer``).
* **Affine.** 12-parameter ``sitk.AffineTransform`` centred on the fixed grid, correlation
  metric (the same criterion as Eq. (1), insensitive to the per-scan HU offsets of routine CT),
  plain gradient descent with parameter scales from the physical shift each parameter causes
  (``SetOptimizerScalesFromPhysicalShift``: matrix entries ~ r**2, translations 1) and a
  learning rate re-estimated every iteration so that no step moves the image by more than a
  quarter of a grid voxel. ITK's regular-step gradient descent was tried first: its step has
  a fixed length in parameter units whatever the scales, so once the translation was right it
  changed matrix entries by whole units and diverged on some template pairs.
* **Non-linear.** SimpleITK's fast symmetric-forces Demons on the displacement field of the
  coarse fixed grid, after the affine, Gaussian regularisation of the field
  (``field_sigma_vox``). A B-spline transform optimised with ``ImageRegistrationMethod`` was
  tried first and cost ~1 s per metric evaluation on the native 48 x 48 x 40 grid, two orders
  of magnitude over budget; Demons iterations cost a few ms. The field lives on the fixed
  grid, so it covers a fragment's own field of view; outside its grid a
  ``DisplacementFieldTransform`` is the identity (the affine still applies).
* **Selection (Eq. (1)).** For every template the atlas is resampled through ``T_eA o T_ie``
  onto the volume's registration grid and correlated with the volume over its body (voxels
  above ``body_threshold`` HU with the in-slice holes, i.e. the lungs, filled) where the warped
  atlas is defined (inside the atlas's field of view: a template whose composition maps part of
  the body outside the atlas is not charged for the atlas's missing slices). Ties go to the
  lowest template index. Dense outputs (atlas image, labels, coordinate maps) are computed on
  the volume's own grid, lazily, for the chosen composition only.

Measured (``reports/benchmarks/registration.md``: 40 of the 200 default phantom patients, five
templates, one core): lung Dice of the warped atlas labels 0.93 on full fields of view and 0.90
on fragments (0.90 / 0.87 without the Demons stage); mean landmark error 5 mm (full) and 9 mm
(fragments) at 7.5 x 7.5 x 8 mm voxels, pleural effusions being the main failure (the atlas
lungs then fill the pleural space); 0.72 s per full volume and 0.44 s per fragment on one
core for five templates, 0.15 s for one. On these phantoms the templates differ only by smooth
deformations of one anatomy, so choosing among five adds little over one template once the
Demons stage runs (Dice 0.930 vs 0.928); with the affine stage only it adds ~0.01.

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

Pickling. :class:`TemplateSet` and :class:`Normalization` pickle; displacement fields are
rounded to float32 values when they are made, so they travel as float32 arrays without loss,
images travel as int16 / uint8 when that is lossless, and the cached coarse images are dropped
and rebuilt on demand: a template set of five templates at the demo scale pickles to ~7 MB
and can be shipped to Dask workers, or rebuilt in each worker from the same inputs with the
same result.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from medclust.cohort import load_cohort

log = logging.getLogger(__name__)

LUNG_LABELS = (2, 3)  # right and left lung in the routine_ct phantom's labelmaps

_LANDMARK_COLUMN = re.compile(r"^lm_(?P<name>.+)_(?P<axis>[xyz])$")


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


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RegistrationSettings:
    """Parameters of every registration of a :class:`TemplateSet` (see the module docstring)."""

    nonlinear: bool = True
    seed: int = 0
    registration_spacing_mm: float = 12.0  # volume -> template registrations and Eq. (1)
    template_spacing_mm: float = 8.0  # template -> atlas registrations (done once)
    affine_iterations: int = 25
    template_affine_iterations: int = 100
    nonlinear_iterations: int = 15
    template_nonlinear_iterations: int = 50
    field_sigma_vox: float = 1.5  # Gaussian regularisation of the Demons field (grid voxels)
    intensity_window: tuple[float, float] = (-1000.0, 500.0)  # HU clip before registration
    body_threshold: float = -400.0  # HU; the body (with its lungs filled in) is where NCC counts
    search_margin: float = 0.25  # share of the volume's length it may stick out of a template
    sampling_fraction: float = 0.4  # volume -> template metric: random share, seeded by seed
    n_threads: int = 1

    def __post_init__(self) -> None:
        def bad(name: str, msg: str) -> ValueError:
            return ValueError(f"TemplateSet: {name} {msg}, got {getattr(self, name)!r}")

        for name in ("registration_spacing_mm", "template_spacing_mm", "field_sigma_vox"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise bad(name, "must be a positive number")
        for name in (
            "affine_iterations",
            "template_affine_iterations",
            "nonlinear_iterations",
            "template_nonlinear_iterations",
            "n_threads",
            "seed",
        ):
            value = getattr(self, name)
            low = 1 if name == "n_threads" else 0
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise bad(name, f"must be an integer >= {low}")
        if not isinstance(self.nonlinear, bool | np.bool_):
            raise bad("nonlinear", "must be True or False")
        lo_hi = np.asarray(self.intensity_window, float)
        if lo_hi.shape != (2,) or not np.all(np.isfinite(lo_hi)) or not lo_hi[0] < lo_hi[1]:
            raise bad("intensity_window", "must be (low, high) with low < high")
        if not 0.0 < float(self.sampling_fraction) <= 1.0:
            raise bad("sampling_fraction", "must be in (0, 1]")
        if not 0.0 <= float(self.search_margin) <= 1.0:
            raise bad("search_margin", "must be in [0, 1]")


# --------------------------------------------------------------------------- coarse grids


@dataclass(frozen=True, eq=False)
class _Prepared:
    """An image clipped, smoothed and resampled to an isotropic registration grid, with the
    body mask of that grid (numpy, axes x, y, z)."""

    image: sitk.Image
    array: np.ndarray
    body: np.ndarray


def _prepare(image: Image3D, spacing_mm: float, settings: RegistrationSettings) -> _Prepared:
    lo, hi = settings.intensity_window
    values = np.clip(np.asarray(image.array, np.float32), lo, hi)
    shape = np.asarray(image.shape)
    native = np.asarray(image.spacing)
    target = np.maximum(float(spacing_mm), native)
    # the coarse grid spans exactly the first to the last voxel centre, so nothing is padded
    size = np.ceil((shape - 1) * native / target).astype(int) + 1
    coarse = np.where(size > 1, (shape - 1) * native / np.maximum(size - 1, 1), native)
    sigma_mm = 0.5 * np.sqrt(np.maximum(coarse**2 - native**2, 0.0))  # anti-aliasing
    smooth = ndi.gaussian_filter(values, sigma_mm / native, mode="nearest", truncate=3.0)
    source = sitk.GetImageFromArray(np.ascontiguousarray(smooth.transpose(2, 1, 0)))
    _set_geometry(source, image.spacing, image.affine)
    direction = image.affine[:3, :3] / native[None, :]
    grid_affine = np.eye(4)
    grid_affine[:3, :3] = direction * coarse[None, :]
    grid_affine[:3, 3] = image.affine[:3, 3]
    reference = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    _set_geometry(reference, coarse, grid_affine)
    identity = sitk.Transform(3, sitk.sitkIdentity)
    out = _resample(source, reference, identity, lo, settings.n_threads)
    array = _to_numpy(out)
    return _Prepared(image=out, array=array, body=_body_mask(array, settings.body_threshold))


def _body_mask(array: np.ndarray, threshold: float) -> np.ndarray:
    """Voxels above ``threshold`` with the holes of every axial slice (lungs, airways) filled."""
    above = array > threshold
    body = np.zeros_like(above)
    for k in range(above.shape[2]):
        body[:, :, k] = ndi.binary_fill_holes(above[:, :, k])
    if body.sum() < 8:  # nothing body-like (e.g. not CT): correlate over the whole grid
        body[...] = True
    return body


def _resample(
    image: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform,
    default: float,
    n_threads: int = 1,
    interpolator: int = sitk.sitkLinear,
) -> sitk.Image:
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(reference)
    f.SetTransform(transform)
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(float(default))
    f.SetNumberOfThreads(int(n_threads))
    return f.Execute(image)


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


# --------------------------------------------------------------------------- registration


def _grid_centre(image: sitk.Image) -> np.ndarray:
    size = np.asarray(image.GetSize(), float)
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))


def _grid_corners(image: sitk.Image) -> np.ndarray:
    size = np.asarray(image.GetSize()) - 1
    idx = np.array(np.meshgrid(*[[0, n] for n in size], indexing="ij")).reshape(3, -1).T
    return np.array([image.TransformContinuousIndexToPhysicalPoint(i.tolist()) for i in idx])


def _body_centroid(prep: _Prepared) -> np.ndarray:
    idx = np.argwhere(prep.body).mean(axis=0)
    return np.asarray(prep.image.TransformContinuousIndexToPhysicalPoint(idx.tolist()))


def _position_search(
    fixed: _Prepared, moving: _Prepared, settings: RegistrationSettings
) -> np.ndarray:
    """Translation (mm, fixed -> moving) of the initial position estimate: body centroids
    in-plane, exhaustive NCC search along the fixed image's slice axis (half-slice steps)."""
    axis = np.asarray(fixed.image.GetDirection(), float).reshape(3, 3)[:, 2]
    step_z = fixed.image.GetSpacing()[2]
    nz = fixed.array.shape[2]
    delta = _body_centroid(moving) - _body_centroid(fixed)
    in_plane = delta - (delta @ axis) * axis
    origin = np.asarray(fixed.image.GetOrigin())
    a_f = origin @ axis
    b_f = a_f + (nz - 1) * step_z
    proj = _grid_corners(moving.image) @ axis
    a_m, b_m = proj.min(), proj.max()
    margin = settings.search_margin * (b_f - a_f)
    lo, hi = a_m - a_f - margin, b_m - b_f + margin
    if hi < lo:  # the volume is longer than the template: centre it, search the margin
        centre = 0.5 * (a_m + b_m) - 0.5 * (a_f + b_f)
        lo, hi = centre - margin, centre + margin
    half = step_z / 2.0
    n_offsets = int(np.floor((hi - lo) / half)) + 1
    # one resampling of the moving image onto the fixed grid, extended along the slice axis
    # with half-slice steps; window k of every second slice is the placement lo + k * half
    extended = sitk.Image(
        [fixed.array.shape[0], fixed.array.shape[1], n_offsets + 2 * (nz - 1)], sitk.sitkFloat32
    )
    spacing = list(fixed.image.GetSpacing())
    extended.SetSpacing([spacing[0], spacing[1], half])
    extended.SetDirection(fixed.image.GetDirection())
    extended.SetOrigin((origin + in_plane + lo * axis).tolist())
    shifted = _to_numpy(
        _resample(
            moving.image,
            extended,
            sitk.Transform(3, sitk.sitkIdentity),
            settings.intensity_window[0],
            settings.n_threads,
        )
    )
    windows = np.arange(n_offsets)[:, None] + 2 * np.arange(nz)[None, :]
    candidates = np.moveaxis(shifted[:, :, windows], 2, 0)[:, fixed.body]  # (K, n_body)
    target = fixed.array[fixed.body].astype(float)
    target = target - target.mean()
    candidates = candidates - candidates.mean(axis=1, keepdims=True)
    norms = np.sqrt((candidates**2).sum(axis=1) * (target**2).sum())
    scores = np.where(norms > 0, candidates @ target / np.where(norms > 0, norms, 1.0), -np.inf)
    best = int(np.argmax(scores))
    return in_plane + (lo + best * half) * axis


def _centred_affine(transform: sitk.Transform, centre: np.ndarray) -> sitk.AffineTransform:
    """An AffineTransform equal to ``transform`` (affine) with its centre at ``centre``."""
    offset = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    cols = [np.asarray(transform.TransformPoint(tuple(e))) - offset for e in np.eye(3)]
    matrix = np.stack(cols, axis=1)
    out = sitk.AffineTransform(3)
    out.SetCenter(centre.tolist())
    out.SetMatrix(matrix.ravel().tolist())
    out.SetTranslation((offset + matrix @ centre - centre).tolist())
    return out


def _landmark_affine(
    fixed_points: np.ndarray, moving_points: np.ndarray, centre: np.ndarray
) -> sitk.AffineTransform:
    """Least-squares affine through landmark pairs (fixed -> moving), centred on ``centre``."""
    init = sitk.LandmarkBasedTransformInitializer(
        sitk.AffineTransform(3),
        [float(v) for v in fixed_points.ravel()],
        [float(v) for v in moving_points.ravel()],
    )
    return _centred_affine(init, centre)


def _registration(
    fixed: _Prepared, settings: RegistrationSettings, sampling: float
) -> sitk.ImageRegistrationMethod:
    """Correlation metric over every voxel of the fixed grid, or over a seeded random share
    ``sampling`` of them given as a fixed-image mask (ITK's own RANDOM/REGULAR sampling jitters
    the points with a generator that a seed does not make reproducible run to run)."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(settings.n_threads)
    reg.SetMetricAsCorrelation()
    reg.SetMetricSamplingStrategy(reg.NONE)
    if sampling < 1.0:
        rng = np.random.default_rng(np.random.SeedSequence([int(settings.seed), 0x5A4]))
        keep = rng.random(fixed.array.shape) < sampling
        mask = sitk.GetImageFromArray(np.ascontiguousarray(keep.transpose(2, 1, 0), np.uint8))
        mask.CopyInformation(fixed.image)
        reg.SetMetricFixedMask(mask)
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


def _register_affine(
    fixed: _Prepared,
    moving: _Prepared,
    initial: sitk.AffineTransform,
    iterations: int,
    sampling: float,
    settings: RegistrationSettings,
) -> sitk.AffineTransform:
    affine = sitk.AffineTransform(initial)
    if iterations == 0:
        return affine
    reg = _registration(fixed, settings, sampling)
    # gradient descent whose every step moves the image by at most a quarter of a grid voxel;
    # parameter scales from the physical shift each parameter causes (matrix entries ~ r**2)
    reg.SetOptimizerAsGradientDescent(
        learningRate=1.0,
        numberOfIterations=int(iterations),
        convergenceMinimumValue=1e-6,
        convergenceWindowSize=5,
        estimateLearningRate=reg.EachIteration,
        maximumStepSizeInPhysicalUnits=0.25 * float(min(fixed.image.GetSpacing())),
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(affine, inPlace=True)
    reg.Execute(fixed.image, moving.image)
    return affine


def _register_demons(
    fixed: _Prepared,
    moving: _Prepared,
    affine: sitk.Transform,
    iterations: int,
    settings: RegistrationSettings,
) -> sitk.DisplacementFieldTransform | None:
    """Displacement field on the fixed grid matching the fixed image to the affinely
    resampled moving image (fast symmetric-forces Demons)."""
    if iterations == 0:
        return None
    air = settings.intensity_window[0]
    warped = _resample(moving.image, fixed.image, affine, air, settings.n_threads)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfThreads(settings.n_threads)
    demons.SetNumberOfIterations(int(iterations))
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(float(settings.field_sigma_vox))
    demons.SetSmoothUpdateField(False)
    field_image = demons.Execute(fixed.image, warped)
    # rounded to float32 values so that a pickle can store it as float32 without loss
    values = sitk.GetArrayFromImage(field_image).astype(np.float32)
    return _field_transform(
        values, field_image.GetOrigin(), field_image.GetSpacing(), field_image.GetDirection()
    )


def _field_transform(
    values: np.ndarray, origin, spacing, direction
) -> sitk.DisplacementFieldTransform:
    image = sitk.GetImageFromArray(values.astype(np.float64), isVector=True)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return sitk.DisplacementFieldTransform(image)


def _pack(transform: sitk.Transform) -> tuple:
    """Picklable, compact form of a transform: displacement fields as float32 arrays."""
    if transform.GetTransformEnum() == sitk.sitkDisplacementField:
        image = sitk.DisplacementFieldTransform(transform).GetDisplacementField()
        values = sitk.GetArrayFromImage(image).astype(np.float32)
        return ("field", values, image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return ("transform", transform)


def _unpack(packed: tuple) -> sitk.Transform:
    if packed[0] == "field":
        return _field_transform(*packed[1:])
    return packed[1]


def _register(
    fixed: _Prepared,
    moving: _Prepared,
    initial: sitk.AffineTransform,
    affine_iterations: int,
    nonlinear_iterations: int,
    sampling: float,
    settings: RegistrationSettings,
) -> list[sitk.Transform]:
    """Affine then (optionally) Demons; the transform list maps fixed -> moving as
    ``CompositeTransform(list)`` (the last entry is applied first)."""
    affine = _register_affine(fixed, moving, initial, affine_iterations, sampling, settings)
    parts: list[sitk.Transform] = [affine]
    if settings.nonlinear:
        demons = _register_demons(fixed, moving, affine, nonlinear_iterations, settings)
        if demons is not None:
            parts.append(demons)
    return parts


def _composite(parts: Sequence[sitk.Transform]) -> sitk.CompositeTransform:
    return sitk.CompositeTransform([sitk.Transform(t) for t in parts])


# --------------------------------------------------------------------------- landmarks


def read_landmarks(clinical, case_id: str) -> dict[str, np.ndarray]:
    """Landmarks ``{name: (x, y, z) mm}`` of one case from ``lm_<name>_x/_y/_z`` columns of a
    clinical table (as the ``routine_ct_atlas`` phantom writes them); NaN rows are skipped."""
    frame = clinical.set_index("case_id") if "case_id" in clinical.columns else clinical
    if case_id not in frame.index:
        raise KeyError(f"read_landmarks: no case {case_id!r} in the clinical table")
    row = frame.loc[case_id]
    names = sorted(
        {m["name"] for c in frame.columns if (m := _LANDMARK_COLUMN.match(str(c))) is not None}
    )
    out = {}
    for name in names:
        cols = [f"lm_{name}_{axis}" for axis in "xyz"]
        if all(c in frame.columns for c in cols):
            pos = np.array([row[c] for c in cols], float)
            if np.all(np.isfinite(pos)):
                out[name] = pos
    return out


def _landmark_pairs(
    fixed: Mapping[str, Sequence[float]] | np.ndarray,
    moving: Mapping[str, Sequence[float]] | np.ndarray,
    where: str,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if isinstance(fixed, Mapping) != isinstance(moving, Mapping):
        raise ValueError(f"{where}: landmarks must both be mappings name -> xyz or both arrays")
    if isinstance(fixed, Mapping):
        names = [n for n in fixed if n in moving]
        f = _as_points([fixed[n] for n in names], where) if names else np.zeros((0, 3))
        m = _as_points([moving[n] for n in names], where) if names else np.zeros((0, 3))
    else:
        f, m = _as_points(fixed, where), _as_points(moving, where)
        if f.shape != m.shape:
            raise ValueError(
                f"{where}: template and atlas landmark arrays differ in shape {f.shape} vs "
                f"{m.shape}"
            )
        names = [str(i) for i in range(len(f))]
    if len(f) < 4:
        raise ValueError(
            f"{where}: need >= 4 landmarks common to the template and the atlas for an affine "
            f"initialisation, got {len(f)}"
        )
    centred = f - f.mean(axis=0)
    if np.linalg.matrix_rank(centred, tol=1e-6 * max(1.0, float(np.abs(centred).max()))) < 3:
        raise ValueError(f"{where}: landmarks are coplanar; an affine needs them spread in 3-D")
    return f, m, names


# --------------------------------------------------------------------------- results


@dataclass(eq=False)
class Normalization:
    """The chosen map of one volume to the atlas (Eq. (1)) and the NCC of every candidate.

    ``parts`` are the chosen composition's transforms, ``[*T_eA, *T_ie]``; :attr:`transform`
    composes them into one map volume mm -> atlas mm (``T_eA o T_ie`` of template
    ``template_index``). Dense results are computed on the volume's own grid on first use and
    cached (the cache is not pickled).
    """

    template_index: int
    ncc: float
    ncc_all: list[float]
    parts: list[sitk.Transform] = field(repr=False)
    volume_shape: tuple[int, int, int] = field(repr=False)
    volume_affine: np.ndarray = field(repr=False)
    atlas: Image3D = field(repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def transform(self) -> sitk.CompositeTransform:
        """The map volume mm -> atlas mm as one SimpleITK transform."""
        if "transform" not in self._cache:
            self._cache["transform"] = _composite(self.parts)
        return self._cache["transform"]

    def __getstate__(self) -> dict:
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_cache"}
        state["parts"] = [_pack(t) for t in self.parts]
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["parts"] = [_unpack(p) for p in state["parts"]]
        self.__dict__.update(state, _cache={})

    def _reference(self) -> sitk.Image:
        ref = sitk.Image([int(n) for n in self.volume_shape], sitk.sitkFloat32)
        spacing = np.linalg.norm(self.volume_affine[:3, :3], axis=0)
        _set_geometry(ref, spacing, self.volume_affine)
        return ref

    def _point_map(self) -> np.ndarray:
        """Atlas mm of every voxel centre of the volume, shape (x, y, z, 3)."""
        if "points" not in self._cache:
            f = sitk.TransformToDisplacementFieldFilter()
            f.SetReferenceImage(self._reference())
            f.SetOutputPixelType(sitk.sitkVectorFloat64)
            f.SetNumberOfThreads(1)
            disp = _to_numpy(f.Execute(self.transform))
            idx = np.stack(np.meshgrid(*[np.arange(n) for n in self.volume_shape], indexing="ij"))
            mm = np.einsum("ij,jxyz->xyzi", self.volume_affine[:3, :3], idx)
            self._cache["points"] = mm + self.volume_affine[:3, 3] + disp
        return self._cache["points"]

    def to_atlas_mm(self, points_vox: np.ndarray) -> np.ndarray:
        """Atlas mm (n, 3) of volume voxel indices (n, 3) in the array's (x, y, z) order.

        Points inside the volume's grid are interpolated (trilinearly; exact at integer
        indices) in the dense map of voxel centres; points outside it go through the
        transform one by one.
        """
        pts = _as_points(points_vox, "points_vox")
        out = np.empty_like(pts)
        upper = np.asarray(self.volume_shape) - 1
        inside = np.all((pts >= 0) & (pts <= upper), axis=1)
        if inside.any():
            dense = self._point_map()
            coords = pts[inside].T
            out[inside] = np.stack(
                [
                    ndi.map_coordinates(dense[..., c], coords, order=1, mode="nearest")
                    for c in range(3)
                ],
                axis=1,
            )
        if (~inside).any():
            mm = pts[~inside] @ self.volume_affine[:3, :3].T + self.volume_affine[:3, 3]
            out[~inside] = [self.transform.TransformPoint(tuple(p)) for p in mm]
        return out

    def atlas_labels(self) -> np.ndarray:
        """Atlas labelmap resampled (nearest neighbour) onto the volume grid, axes (x, y, z)."""
        if "labels" not in self._cache:
            if self.atlas.labelmap is None:
                raise ValueError("Normalization: the atlas has no labelmap")
            warped = _resample(
                self.atlas.to_sitk(labels=True),
                self._reference(),
                self.transform,
                0,
                1,
                sitk.sitkNearestNeighbor,
            )
            self._cache["labels"] = _to_numpy(warped).astype(self.atlas.labelmap.dtype)
        return self._cache["labels"]

    def atlas_image(self) -> np.ndarray:
        """Atlas image resampled (linearly) onto the volume grid, axes (x, y, z), float32;
        outside the atlas the atlas's minimum (air for CT)."""
        if "image" not in self._cache:
            warped = _resample(
                self.atlas.to_sitk(),
                self._reference(),
                self.transform,
                float(self.atlas.array.min()),
                1,
            )
            self._cache["image"] = _to_numpy(warped).astype(np.float32)
        return self._cache["image"]


def lung_mask(normalization: Normalization, lung_labels: Sequence[int] = LUNG_LABELS) -> np.ndarray:
    """Boolean mask of the volume's voxels that the warped atlas labels as lung."""
    labels = normalization.atlas_labels()
    lung_labels = [int(v) for v in np.atleast_1d(lung_labels)]
    if not np.isin(normalization.atlas.labelmap, lung_labels).any():
        raise ValueError(f"lung_mask: the atlas labelmap has none of lung_labels {lung_labels}")
    return np.isin(labels, lung_labels)


# --------------------------------------------------------------------------- template set


class TemplateSet:
    """An atlas, templates registered to it once, and the normalisation of new volumes through
    them (Fig. 2 and Eq. (1) of the study-05 paper). Build with :meth:`build` or
    :meth:`from_cohort`."""

    def __init__(
        self,
        atlas: Image3D,
        templates: list[Image3D],
        template_to_atlas: list[list[sitk.Transform]],
        settings: RegistrationSettings,
        landmark_error_mm: list[float] | None = None,
    ) -> None:
        self.atlas = atlas
        self.templates = list(templates)
        self.template_to_atlas = template_to_atlas
        self.settings = settings
        self.landmark_error_mm = landmark_error_mm or [float("nan")] * len(templates)
        self._prepared: dict = {}

    def __len__(self) -> int:
        return len(self.templates)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_prepared"] = {}  # coarse images are rebuilt on demand
        state["template_to_atlas"] = [[_pack(t) for t in parts] for parts in self.template_to_atlas]
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["template_to_atlas"] = [
            [_unpack(p) for p in parts] for parts in state["template_to_atlas"]
        ]
        self.__dict__.update(state)

    def _prep(self, key: tuple[str, int], spacing_mm: float) -> _Prepared:
        which, index = key
        cache_key = (which, index, float(spacing_mm))
        if cache_key not in self._prepared:
            image = self.atlas if which == "atlas" else self.templates[index]
            self._prepared[cache_key] = _prepare(image, spacing_mm, self.settings)
        return self._prepared[cache_key]

    @classmethod
    def build(
        cls,
        atlas: Image3D,
        templates: list[Image3D],
        *,
        atlas_landmarks: Mapping[str, Sequence[float]] | np.ndarray | None = None,
        template_landmarks: Sequence[Mapping[str, Sequence[float]] | np.ndarray | None]
        | None = None,
        nonlinear: bool = True,
        seed: int = 0,
        **settings,
    ) -> TemplateSet:
        """Register every template to the atlas once (``T_eA``).

        With landmarks (``atlas_landmarks`` and one entry per template, a mapping name -> xyz
        mm or an (n, 3) array in the same order; ``None`` entries fall back) the initial
        transform is the least-squares affine through the landmark pairs; otherwise it is the
        position search of :meth:`normalize`. Then affine and (``nonlinear``) Demons on the
        ``template_spacing_mm`` grid. Further keyword arguments are the fields of
        :class:`RegistrationSettings`.
        """
        unknown = sorted(set(settings) - {f.name for f in fields(RegistrationSettings)})
        if unknown:
            raise TypeError(
                f"TemplateSet.build: unknown setting(s) {unknown}; known: "
                f"{sorted(f.name for f in fields(RegistrationSettings))}"
            )
        config = RegistrationSettings(nonlinear=nonlinear, seed=seed, **settings)
        if not isinstance(atlas, Image3D):
            raise TypeError(f"TemplateSet.build: atlas must be an Image3D, got {type(atlas)}")
        if atlas.labelmap is None or not np.any(atlas.labelmap):
            raise ValueError("TemplateSet.build: the atlas labelmap is missing or empty")
        templates = list(templates)
        if not templates:
            raise ValueError("TemplateSet.build: templates is empty; give at least one template")
        for i, t in enumerate(templates):
            if not isinstance(t, Image3D):
                raise TypeError(f"TemplateSet.build: templates[{i}] must be an Image3D")
        if template_landmarks is not None:
            if atlas_landmarks is None:
                raise ValueError(
                    "TemplateSet.build: template_landmarks given without atlas_landmarks"
                )
            if len(template_landmarks) != len(templates):
                raise ValueError(
                    f"TemplateSet.build: template_landmarks has {len(template_landmarks)} "
                    f"entries for {len(templates)} templates"
                )
        out = cls(atlas, templates, [], config)
        with itk_threads(config.n_threads):
            atlas_prep = out._prep(("atlas", 0), config.template_spacing_mm)
            errors = []
            for i in range(len(templates)):
                start = time.perf_counter()
                fixed = out._prep(("template", i), config.template_spacing_mm)
                lm = None if template_landmarks is None else template_landmarks[i]
                pairs = None
                if lm is not None:
                    pairs = _landmark_pairs(lm, atlas_landmarks, f"template_landmarks[{i}]")
                    initial = _landmark_affine(pairs[0], pairs[1], _grid_centre(fixed.image))
                else:
                    shift = _position_search(fixed, atlas_prep, config)
                    initial = _centred_affine(
                        sitk.TranslationTransform(3, shift.tolist()), _grid_centre(fixed.image)
                    )
                parts = _register(
                    fixed,
                    atlas_prep,
                    initial,
                    config.template_affine_iterations,
                    config.template_nonlinear_iterations,
                    1.0,  # once per template: every voxel counts
                    config,
                )
                out.template_to_atlas.append(parts)
                err = float("nan")
                if pairs is not None:
                    comp = _composite(parts)
                    mapped = np.array([comp.TransformPoint(tuple(p)) for p in pairs[0]])
                    err = float(np.linalg.norm(mapped - pairs[1], axis=1).mean())
                errors.append(err)
                log.info(
                    "template %d -> atlas registered in %.2f s (landmark error %.1f mm)",
                    i,
                    time.perf_counter() - start,
                    err,
                )
        out.landmark_error_mm = errors
        return out

    @classmethod
    def from_cohort(cls, cohort, *, use_landmarks: bool = True, **kwargs) -> TemplateSet:
        """Build from an atlas cohort folder (or loaded :class:`medclust.cohort.Cohort`) whose
        ``clinical.csv`` has a ``role`` column (one ``atlas``, the rest ``template``) and,
        optionally, ``lm_<name>_x/_y/_z`` landmark columns (as ``routine_ct_atlas`` writes)."""
        if isinstance(cohort, str | Path):
            cohort = load_cohort(cohort)
        clinical = cohort.clinical.reset_index()
        if "role" not in clinical.columns:
            raise ValueError(f"{cohort.root}: clinical.csv has no 'role' column (atlas/template)")
        roles = dict(zip(clinical["case_id"], clinical["role"], strict=True))
        atlas_ids = [c for c in cohort.case_ids if roles.get(c) == "atlas"]
        template_ids = [c for c in cohort.case_ids if roles.get(c) == "template"]
        if len(atlas_ids) != 1:
            raise ValueError(
                f"{cohort.root}: need exactly one case with role 'atlas', got {len(atlas_ids)}"
            )
        atlas = Image3D.from_volume(cohort.load(atlas_ids[0]))
        templates = [Image3D.from_volume(cohort.load(c)) for c in template_ids]
        if use_landmarks and any(_LANDMARK_COLUMN.match(str(c)) for c in clinical.columns):
            kwargs.setdefault("atlas_landmarks", read_landmarks(clinical, atlas_ids[0]))
            kwargs.setdefault(
                "template_landmarks", [read_landmarks(clinical, c) for c in template_ids]
            )
        return cls.build(atlas, templates, **kwargs)

    def normalize(
        self, volume: Image3D, *, template_indices: Sequence[int] | None = None
    ) -> Normalization:
        """Register ``volume`` to every template (or to ``template_indices``), compose with
        each ``T_eA`` and return the composition whose warped atlas correlates best with the
        volume over its body (Eq. (1)); ``ncc_all`` lists the NCC per template considered."""
        if not isinstance(volume, Image3D):
            raise TypeError(f"normalize: volume must be an Image3D, got {type(volume).__name__}")
        indices = list(range(len(self))) if template_indices is None else list(template_indices)
        if not indices or any(not 0 <= int(i) < len(self) for i in indices):
            raise ValueError(
                f"normalize: template_indices must be non-empty indices in 0..{len(self) - 1}, "
                f"got {template_indices!r}"
            )
        with itk_threads(self.settings.n_threads):
            config = self.settings
            spacing = config.registration_spacing_mm
            fixed = _prepare(volume, spacing, config)
            atlas_prep = self._prep(("atlas", 0), spacing)
            centre = _grid_centre(fixed.image)
            scores, candidates = [], []
            for i in indices:
                moving = self._prep(("template", int(i)), spacing)
                shift = _position_search(fixed, moving, config)
                initial = _centred_affine(sitk.TranslationTransform(3, shift.tolist()), centre)
                parts = _register(
                    fixed,
                    moving,
                    initial,
                    config.affine_iterations,
                    config.nonlinear_iterations,
                    config.sampling_fraction,
                    config,
                )
                chain = [*self.template_to_atlas[int(i)], *parts]
                composite = _composite(chain)
                # NaN outside the atlas: Eq. (1) compares the images where both are defined
                warped = _to_numpy(
                    _resample(atlas_prep.image, fixed.image, composite, np.nan, config.n_threads)
                )
                overlap = fixed.body & np.isfinite(warped)
                scores.append(ncc(fixed.array, warped, overlap) if overlap.sum() >= 8 else -1.0)
                candidates.append(chain)
        best = int(np.argmax(scores))
        log.debug(
            "normalize: NCC per template %s -> template %d", np.round(scores, 4), indices[best]
        )
        return Normalization(
            template_index=int(indices[best]),
            ncc=float(scores[best]),
            ncc_all=[float(s) for s in scores],
            parts=candidates[best],
            volume_shape=volume.shape,
            volume_affine=volume.affine.copy(),
            atlas=self.atlas,
        )
