"""Emphysema chest-CT phantom: inspiratory chest CT volumes of smokers whose low-attenuation
pattern follows the six Fleischner Society emphysema subtypes (the cohort of Xie, Jacobs and
van Ginneken, "Deep clustering activation maps for emphysema subtyping", study 03,
/work/shared/papers/002_25c1ddc56cc6b442.txt; there 2000 training and 500 test COPDGene scans
visually scored after Lynch et al., Radiology 277:192-205, 2015).

Each case is a 3D volume (array axes x, y, z: x from the patient's right to left, y from
anterior to posterior, z from inferior to superior, so the upper lobes are at high z) stored
as int16 Hounsfield units. At the demo scale it is coarse (48^3 voxels of 7 mm, a ~34 cm
field of view covering the whole lungs). The body scales with the field of view while the
chest-wall layers and the lesions are sized in mm, so a finer ``spacing`` with a larger
``shape`` gives the same chest with finer detail. It holds

* air outside the body (-1000 HU); a body outline (irregular ellipse) with a subcutaneous fat
  rim (~-100 HU, 6-22 mm), a chest wall of muscle (~45 HU, 12-17 mm) with oblique ribs, the
  spine (vertebral body, canal, posterior elements) and upper-abdominal soft tissue below
  the diaphragm (with a gastric air bubble in some cases);
* a mediastinum between the lungs (soft tissue ~40 HU, anterior fat), the heart resting on
  the diaphragm, ascending/descending aorta with the arch, and the air-filled trachea and
  main bronchi (not part of the lungs);
* two lungs: domed apices in a rib cage that narrows upwards, diaphragmatic domes (the right
  higher) with deep costophrenic recesses, the medial borders set by the mediastinum, heart,
  aorta and spine, and a smooth per-case deformation. Parenchyma ~-850 HU with a
  gravity-dependent gradient (posterior denser, supine scan) and slow regional variation;
  vessel trees (soft-tissue tubes, ~40 HU) branch from each hilum and taper towards the
  periphery.

Rendering: the case is built on a grid ``supersample`` times finer than the output, then
averaged down (partial volume of small vessels and lesions), blurred slightly (Gaussian,
sigma 1-2.5 mm) and given spatially correlated Gaussian scanner noise (per-case sigma drawn
from ``noise_hu``). Emphysematous tissue is nearly air (-992..-978 HU), so it falls below the
-950 HU low-attenuation threshold once a voxel is mostly destroyed.

Ground truth. ``clinical.csv`` ``subtype`` is one of :data:`SUBTYPES` (``subtype_id`` 0-5),
with class frequencies roughly like the visual scores of smokers in COPDGene (about a third
without visible emphysema and fewer cases at each higher grade; approximate, set by
``subtype_fractions``); every class is present in each split when it holds at least six
cases. Each case draws a latent severity ``subtype_id + N(0, severity_sd)`` (kept within
0.9 of its class), so neighbouring classes overlap; the severity sets the extent
(:func:`extent_for_severity`), lesion size, upper-zone weighting, panlobular share and
hyperexpansion. Emphysema fraction of the lung (labelmap) at the defaults, median and
range, and what the pattern looks like:

=====================  =================  ==================================================
absent                 0                  no emphysema at all
trace                  0.3% (0.07-0.9%)   a few small centrilobular lucencies, strongly
                                          upper-zone predominant
mild                   1.8% (0.2-7%)      scattered small centrilobular lucencies,
                                          upper-lobe predominant
moderate               10% (3-17%)        many small lucencies, upper-lobe predominant
confluent              24% (12-34%)       larger lucencies coalescing into regions (30% of
                                          the upper half), slight hyperexpansion
advanced_destructive   38% (29-44%)       panlobular destruction of large regions, less
                                          zonal, hyperexpanded lungs (low flat diaphragm,
                                          barrel chest, narrow heart), pruned and distorted
                                          vessels
=====================  =================  ==================================================

Lesions are blobs grown around random seeds (seed density ``exp(g * (h - 1))`` at relative
lung height ``h``, ``g`` ~3.5 for the centrilobular classes, falling to ~1.3 for advanced
destructive) with the threshold set so that the lesions fill the case's target extent: as
the extent rises the blobs merge, which is what makes confluent emphysema confluent.
Independently of the subtype, about 30% of the cases with emphysema also have paraseptal
(subpleural) lesions (0.3-1.2% of the lung, seeded in the outer 7 mm of the lung,
upper-zone weighted; ``paraseptal`` column), the second cluster the paper's activation maps
show. Case ``i`` has the same anatomy and nuisance draws whatever its subtype
(:func:`make_case`), only the disease differs.

Outputs per case: ``image`` (int16 HU), ``mask`` (uint8, 1 = lung: both lungs with their
vessels and emphysema, not the trachea or main bronchi; a coarse voxel is lung when at least
half of it is; the two largest connected components) and ``labelmap`` (uint8 emphysema map,
:data:`LABELS`: 0 no emphysema, 1 centrilobular, 2 panlobular, 3 paraseptal; a voxel is
emphysematous when destroyed lung fills at least half of it and at least 3/4 of it is lung,
so pleural partial-volume voxels whose attenuation cannot show the destruction stay 0;
always inside the mask). ``clinical.csv`` holds ``case_id``, ``subtype``, ``subtype_id``,
``split`` (train/test), ``severity`` (the latent severity), ``laa950`` (percentage of mask
voxels below -950 HU in the written image: the standard densitometric emphysema index,
which counts noise and misses partial-volume lesions; medians at the defaults 0.02, 0.2, 1,
5, 12 and 26% from absent to advanced destructive), ``emphysema_fraction`` (fraction 0-1 of
mask voxels with a non-zero labelmap), ``paraseptal`` (0/1), ``lung_volume_ml`` (from the
mask) and the nuisance variables ``age``, ``sex`` and ``noise_hu`` (the case's scanner noise
sigma), drawn independently of the subtype.

Generation is seeded and bit-reproducible: case ``i`` draws from its own
``np.random.SeedSequence(seed).spawn(n_train + n_test)[i]`` stream (split into design,
anatomy, lesion and rendering sub-streams), the subtype assignment from
``SeedSequence([seed, 0xE3F])``, and everything is cast to integers before it is written.

Modules. :mod:`.design` (subtypes, defaults, parameter checks, subtype assignment and each
case's disease design), :mod:`.thorax` (the anatomy and the vessel tree on the fine grid) and
:mod:`.cohort` (the lesions, :func:`make_case`, :func:`generate`); this package re-exports
what the tests use.
"""

from __future__ import annotations

from medclust_phantoms.emphysema_ct.cohort import PhantomCase, generate, make_case
from medclust_phantoms.emphysema_ct.design import (
    DEFAULTS,
    LABELS,
    NAME,
    SPLITS,
    SUBTYPES,
    case_subtypes,
    extent_for_severity,
    subtype_counts,
    validate_params,
)

__all__ = [
    "DEFAULTS",
    "LABELS",
    "NAME",
    "SPLITS",
    "SUBTYPES",
    "PhantomCase",
    "case_subtypes",
    "extent_for_severity",
    "generate",
    "make_case",
    "subtype_counts",
    "validate_params",
]
