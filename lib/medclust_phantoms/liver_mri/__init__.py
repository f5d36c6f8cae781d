"""Liver MRI phantom: T1-weighted-like abdominal volumes whose liver texture mosaic predicts
steatosis grade (the cohort of Perkonigg et al., deep clustering of liver MRI patches).

Each case is a small 3D volume (array axes x, y, z; axial slices along the last axis; x runs
from the patient's right to left as in a radiological display, y from anterior to posterior,
z from inferior to superior) stored as int16 in arbitrary MR units (background ~0, liver
~800, subcutaneous fat ~1450). It holds

* a body outline (irregular ellipse) with a bright subcutaneous fat rim, a muscle wall,
  viscera with visceral-fat and gas patches, spine, aorta, spleen and kidneys;
* a liver: a smooth irregular blob (right lobe plus a smaller left lobe) in the right upper
  abdomen whose size, shape and position vary per case and which is present on most slices;
* two dark branching vessel trees inside the liver (portal veins from the hilum, hepatic
  veins from the dome);
* a smooth multiplicative bias field and Rician noise (magnitude of complex Gaussian noise).

Ground truth. The liver parenchyma is a mosaic of texture classes (the labelmap; 0 outside the
liver, every liver voxel has a class):

====  ===================  ==========================================================
  1   homogeneous          flat parenchyma
  2   fine_fat             voxel-scale bright speckle (fine fat droplets)
  3   coarse_fat           sparse bright blobs 3-6 mm across (coarse fat)
  4   perivascular         darker granular band around the vessels
  5   vessel               vessel lumen (dark)
  6   mottled              smooth bright/dark patches a few mm across (grade-unrelated)
  7   striated             fine wavy parallel striation (grade-unrelated)
====  ===================  ==========================================================

Classes 1, 2, 3, 6 and 7 tile the parenchyma as the argmax of smoothed random fields (region
size ~10-40 mm, set by ``region_scale_mm``) biased to per-case target proportions; class 4 is a
band of spatially varying width around the lumen (class 5). A latent per-case severity
(``grade / 3`` plus Gaussian jitter) raises the proportions of classes 2 and 3 and the band
width of class 4, so a case's signature of class proportions predicts its grade well but not
perfectly; classes 6 and 7 vary per case independently of grade. Fat raises the mean intensity
only slightly (and the perivascular band lowers it), so mean liver intensity alone is a weak
predictor. ``difficulty`` (0..1) jointly lowers texture contrast and grade-signal strength and
raises severity jitter, noise and the bias field.

``clinical.csv`` holds ``case_id``, ``grade`` (0-3), ``steatosis`` (low for 0-1, high for 2-3),
``frac_<class>`` (the true fraction of liver voxels of each class, from the labelmap) and two
nuisance variables (``age``, ``sex``) drawn independently of grade.

Generation is seeded and bit-reproducible: each case draws from its own
``np.random.SeedSequence(seed).spawn(n_cases)[i]`` stream and everything is cast to integers
before it is written.

Modules. :mod:`.design` (classes, defaults, parameter checks, grade counts, per-case draws),
:mod:`.anatomy` (vessels, texture mosaic, organs) and :mod:`.cohort` (rendering,
:func:`generate`); this package re-exports what the tests use.
"""

from __future__ import annotations

from medclust_phantoms.liver_mri.cohort import (
    case_grades,
    generate,
)
from medclust_phantoms.liver_mri.design import (
    CLASSES,
    DEFAULTS,
    GRADE_CLASSES,
    NAME,
    UNRELATED_CLASSES,
    grade_counts_for,
    validate_params,
)

__all__ = [
    "CLASSES",
    "DEFAULTS",
    "GRADE_CLASSES",
    "NAME",
    "UNRELATED_CLASSES",
    "case_grades",
    "generate",
    "grade_counts_for",
    "validate_params",
]
