"""Head modalities phantom: 2D axial head images of three modalities (CT, T1 MRI, FDG PET)
built from real anatomy, whose ground truth is the modality (the dataset of the thesis on
DEC/DCEC clustering of medical images, /work/shared/papers/003_3f35964316a5ac54.txt, Sec. 3.1:
128 x 128 grey-scale head images, 354 CT, 354 MRI, 283 PET, split 70:10:20, co-registered to
a common atlas and normalised in intensity).

Anatomy. The brain is the MNI152 ICBM 2009a template shipped inside nilearn (grey- and
white-matter maps from ``nilearn.datasets.load_mni152_gm_template`` /
``load_mni152_wm_template``, the brain outline from ``load_mni152_template``; package data, no
download). The template is skull-stripped, so the rest of the head is built around it once
(cached per process): a smooth intracranial envelope (the brain outline, sulci filled) and its
signed distance map. Per case the layers outside the envelope are, outward: a CSF gap, the
skull (inner table, diploe, outer table), a galea/muscle layer (thicker over the temporal
fossa), subcutaneous fat, skin and air, with per-subject, spatially varying thicknesses.
Intracranial CSF is what the GM and WM maps leave of the envelope (ventricles, sulci).

Each case is one subject, imaged as after the thesis' preprocessing: "All the images were
coregistered to a common atlas in order to reduce variability" (Sec. 3.1). So every slice is
taken at one atlas level (MNI z drawn uniformly from ``slice_range_mm``, by default 22-28 mm:
the lateral ventricles, with the few-mm through-plane residual of a registration) and carries
only the residual of an affine registration (in-plane rotation sd 1 degree, shift sd 1.5 mm,
log-scale sd 0.015, tilt sd 1 degree: a few mm at the skull), plus a random smooth nonlinear
deformation (in-plane and through-plane): the subject's anatomy, which an affine registration
does not remove. The tissue fractions of every pixel (partial volume included) are sampled from
the cached 3D maps, so no per-case resampling of the template volume is needed.

Modality physics (array axes x, y: x from the subject's left to right, y posterior to
anterior, MNI/RAS orientation; stored in physical units, see "Intensities"):

* CT (Hounsfield units, int16): air -1000, skull tables ~+950..+1900 HU (lower with
  ``difficulty``), diploe ~0.35-0.5 of that,
  scalp fat ~-90, soft tissue ~+45, grey matter ~40, white matter ~30 (low GM/WM contrast),
  CSF ~5; sharp point spread and spatially correlated Gaussian noise.
* MRI (T1-weighted, arbitrary units, int16, WM ~1000 x a per-scan receiver gain): WM > GM >
  CSF, dark cortical bone, bright scalp fat and marrow (diploe); a smooth multiplicative bias
  field and Rician noise (magnitude of complex Gaussian noise).
* PET (FDG-like, SUV x 1000, int16): grey-matter uptake well above white matter, low
  uptake in CSF, faint scalp/muscle uptake, the skull invisible; low resolution (Gaussian
  PSF, FWHM 6-8 mm plus 4 mm x ``difficulty``) and Poisson counting noise.

``difficulty`` (0..1) jointly lowers the modality-distinguishing contrast (CT bone density,
MRI T1 weighting and fat brightness, PET grey/white ratio; more scalp uptake in PET) and
raises noise, PET blur, MRI bias field, per-tissue intensity jitter and the nonlinear
deformation; it does not change the residual misregistration. No parameter is set from a
clustering method's score. At the defaults the modalities are easy to tell apart once
registered: k-means (3 clusters, n_init=10) on the normalised pixels of the 694 training images
labels the 199 test images with accuracy 0.995; per pixel, the validation images differ from
the training mean image by an MSE of 0.028 and from their PCA-3 reconstruction by 0.014 (the
thesis' CAE reached 0.0024 on its data, Fig. 3.4).

Intensities. Images are stored raw, in the physical units above (no display window); the
thesis normalised every image in intensity before training;
:func:`medclust.intensity.rescale_percentiles` does that
(per-image percentile min-max to [0, 1]) and is what a study notebook should apply before
clustering. Clustering the un-normalised values is trivial (CT air is -1000).

Outputs per case: ``image`` (int16), ``mask`` (uint8, intracranial region: brain + CSF inside
the skull) and ``labelmap`` (uint8 tissue classes, :data:`LABELS`, each pixel's dominant
tissue). ``clinical.csv`` holds ``case_id``, ``modality`` (CT/MRI/PET, the ground truth),
``split`` (train/val/test, stratified by modality; the thesis states a 70:10:20 ratio, which
this follows, although its Table 3.1 counts, e.g. CT 213/35/106, do not), ``subject``, ``slice_mm`` (MNI z of the
slice centre) and the nuisance draws ``rotation_deg``, ``scale`` and ``tilt_deg``.

Generation is seeded and bit-reproducible: case ``i`` of modality ``m`` draws from its own
``np.random.SeedSequence(seed, spawn_key=(m, i))`` stream (independent of the counts), the
splits from ``SeedSequence([seed, 0x5B1, m])`` and everything is cast to integers before it is
written.

Modules. :mod:`.design` (modalities, splits, defaults, parameter checks, difficulty terms),
:mod:`.anatomy` (head template, subject geometry, tissue fractions) and :mod:`.cohort`
(rendering per modality, :func:`make_case`, :func:`generate`); this package re-exports what the
tests use.
"""

from __future__ import annotations

from medclust_phantoms.head_modalities.anatomy import (
    head_model,
)
from medclust_phantoms.head_modalities.cohort import (
    generate,
    make_case,
)
from medclust_phantoms.head_modalities.design import (
    DEFAULTS,
    LABELS,
    MASK_LABELS,
    MODALITIES,
    NAME,
    SPLITS,
    assign_splits,
    split_counts,
    validate_params,
)

__all__ = [
    "DEFAULTS",
    "LABELS",
    "MASK_LABELS",
    "MODALITIES",
    "NAME",
    "SPLITS",
    "assign_splits",
    "generate",
    "head_model",
    "make_case",
    "split_counts",
    "validate_params",
]
