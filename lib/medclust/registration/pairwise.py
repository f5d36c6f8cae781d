"""One image registered to another: coarse isotropic grids, the initial position search, the
affine and the Demons stages (the ``T_ie`` and ``T_eA`` of :mod:`medclust.registration`).

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from medclust.registration.image import Image3D, _set_geometry, _to_numpy

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
