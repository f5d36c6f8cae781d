"""Liver MRI phantom: T1-weighted abdominal volumes of steatosis cases built from the paper's
description of its data and from MRI physics (the cohort of Perkonigg et al., deep clustering of
liver MRI patches).

The paper: "multi-center data of T1-weighted MRI volumes of 70 NASH patients" with biopsy grades
0/1/2/3 (n = 1/20/32/17); "in T1-weighted MRIs, other than in e.g. MRI-PDFF, the steatosis grade
is not directly quantifiable"; the biopsy is "limited to a single position in the liver",
against "heterogeneity in the liver"; two of the predictive clusters "focus on regions around
vessels". Voxels 1.5 x 1.5 x 5 mm.

Each case is a 3D volume (array axes x, y, z; axial slices along the last axis; x from the
patient's right to left, y anterior to posterior, z inferior to superior) stored as int16 in
arbitrary MR units. It holds a body outline with subcutaneous fat and muscle, viscera, spine,
aorta, spleen and kidneys, and a liver (right and left lobe, shape and position per case) with a
portal tree from the hilum and a hepatic-vein tree from the dome.

The liver (:mod:`.design` holds every constant with its source):

* **Fat.** Each case's biopsy-site proton density fat fraction (PDFF) is drawn within its
  grade's PDFF interval (cut-offs 6.4 / 17.4 / 22.1 %, Tang et al. 2013 as tabulated in the
  paper's ref. [4]). A smooth segmental field spreads it over the liver, so the whole liver's
  fat differs from the biopsy's. Where the parenchyma is steatotic (grade >= 1), fat is spared in
  geographic areas and in a rim along the vessels (the focal and perivascular patterns of
  Hamer et al. 2006). Every voxel varies by a voxel-scale log-normal factor.
* **Signal.** A 3D spoiled gradient echo at 1.5 T, in-phase echo: a parenchyma voxel of PDFF
  ``f`` gives ``(1 - f) + f r`` times the fat-free liver signal, with ``r`` the fat-to-water
  signal ratio of the case's TR and flip angle (T1 586 / 343 ms); the lumen is unenhanced blood
  (T1 1200 ms). Fat brightens the liver by only a few percent (r ~ 1.25-1.55).
* **Not quantifiable.** Each case has its own TR, flip angle and receiver gain (multi-centre,
  arbitrary units), a smooth multiplicative bias field and Rician noise; ``difficulty`` (0..1)
  sets the noise level and the bias amplitude.

Ground truth. The labelmap gives every liver voxel a class (0 outside the liver):

====  ====================  ================================================================
  1   parenchyma            diffuse parenchyma, at any fat level
  2   sparing_faint         geographic fat sparing, surrounding PDFF of grade 1 (6.4-17.4 %)
  3   sparing_marked        geographic fat sparing, surrounding PDFF of grade >= 2
  4   perivascular_faint    spared rim along a vessel, grade-1 surroundings
  5   perivascular_marked   spared rim along a vessel, grade >= 2 surroundings
  6   vessel_wall           the same rim in lean liver (nothing to spare)
  7   vessel                lumen
====  ====================  ================================================================

The diffuse fat changes the brightness of the whole parenchyma, which the gain hides, not its
pattern: it is one class. The patterns that fat makes visible are the spared areas, whose
contrast grows with the fat around them. ``clinical.csv`` holds ``case_id``, ``grade`` (0-3),
``steatosis`` (low for 0-1, high for 2-3), ``frac_<class>`` (the true fraction of liver voxels of
each class), ``pdff_biopsy`` and ``pdff_liver`` (the biopsy-site and the mean parenchyma PDFF, %)
and two nuisance variables (``age``, ``sex``) drawn independently of grade.

Generation is seeded and bit-reproducible: each case draws from its own
``np.random.SeedSequence(seed).spawn(n_cases)[i]`` stream, PDFF is rounded to 1e-4 % and the
image is cast to integers before it is written.

Modules. :mod:`.design` (classes, physical constants, defaults, parameter checks, grade counts,
per-case draws), :mod:`.anatomy` (organs, vessels, fat map) and :mod:`.cohort` (rendering,
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
