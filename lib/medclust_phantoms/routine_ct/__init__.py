"""Routine chest CT phantom: a population of low-resolution thorax CT volumes with latent
disease phenotypes, rendered findings and free-text radiology reports (the cohort of the
study-05 paper, /work/shared/papers/004_8f822e2a6a11f707.txt: 7,812 routine lung CT volumes of
one hospital, clustered on visual features after spatial normalisation, with the clusters
linked to terms that an NLP pipeline with negation detection extracts from the radiology
reports; 5,886 of the 7,812 cases had a report).

Canonical thorax. One chest-CT anatomy in canonical physical coordinates (mm, origin at the
centre of the thorax; x from the patient's right to left, y anterior to posterior, z inferior
to superior; :data:`ANATOMY` holds its constants and :func:`canonical_tissue` evaluates it at
any points): body outline (superellipse, wider at the shoulders) with a subcutaneous fat rim,
chest-wall and paraspinal muscle, ribs and sternum, two lungs with lobes (right upper, middle,
lower; left upper, lower; oblique and horizontal fissures as planes), trachea, main and lobar
bronchi, heart (rotated ellipsoid in pericardial fat), aorta (ascending, arch, descending),
pulmonary arteries, oesophagus, thoracic spine (vertebral bodies with discs, canal, posterior
elements, slight kyphosis), diaphragm domes (right higher) and below them the liver dome,
stomach (with a gas bubble) and spleen.

Patients. Each patient is the canonical thorax under a per-patient random affine (scale
+-10 % with slight anisotropy, rotation of a few degrees, translation ~1 cm) and a smooth
nonlinear deformation (a sum of six random plane waves, wavelength 160-360 mm, RMS displacement
``U(0.4, 1) * deformation_mm``, peaks up to ~1.5 cm at the default, Lipschitz-bounded so the
map stays invertible). Image voxels are pulled back to canonical coordinates
(:meth:`Geometry.to_canonical`) where the anatomy is evaluated, then painted in HU (with a
dependent density gradient and vessel-like texture in the lungs), blurred slightly (Gaussian,
0.45-0.75 voxel) and given white Gaussian scanner noise (sd ``U(*noise_hu)`` HU, 15-40 HU at the
default). The field of view along z is the whole thorax for most cases; a share
``fragment_fraction`` (25 % at the default) are fragments: 35-65 % of the slices, covering the
upper or the lower part of the thorax (so the number of slices differs between cases).

Latent phenotypes and findings. Phenotypes (:data:`PHENOTYPES`) are assigned in exact
proportions ``phenotype_weights`` (largest remainders, shuffled); each finding of
:data:`FINDINGS` is then present with probability :data:`FINDING_PROBABILITY` [phenotype]
(findings also occur at low rates outside their phenotype; ``normal`` cases mostly have none:
~70 %). Rendered findings, each visible where it lies:

=================  =========================================================================
emphysema          low-attenuation regions (-990 HU before noise, i.e. < -950 HU) in 8-35 %
                   of the lung, upper-lobe predominant
nodule             1-3 solid spheres (~30 HU, partial volume by 4^3 supersampling) of 5-12 mm,
                   or for lung cancer one of 14-25 mm plus small ones, in a chosen lobe
pleural_effusion   fluid (~15 HU, labelmap label 10) filling the dependent (posterior, basal)
                   pleural space of one or both sides, replacing (compressing) the lung
consolidation      dense (-60..35 HU) patchy to lobar region of one lobe, optional air
                   bronchograms
fibrosis           subpleural, basal reticular pattern (voxel-scale mix of ~-250 HU lines,
                   ~-940 HU honeycomb cysts and -680 HU parenchyma)
ground_glass       hazy patches (~-600 HU): diffuse, basal, perihilar or dependent
cardiomegaly       heart enlarged by 15-40 % (grows up and sideways from the diaphragm; the
                   lungs lose the volume)
atelectasis        small dense (-20..40 HU) band in the dependent lung within 15-30 mm above
                   the diaphragm, at one or both bases
=================  =========================================================================

``lymphadenopathy``, ``hiatal_hernia`` and ``atherosclerosis`` are true findings that the
report may mention but the image does not show.

Reports. About ``report_fraction`` of the cases (5,886 / 7,812 at the default, exact count,
shuffled) have a free-text report (``CaseData.report``), written from the true findings with
the phrase tables of this module: sections EXAMINATION / CLINICAL HISTORY / COMPARISON /
FINDINGS / IMPRESSION, structured or prose style, synonyms and modifiers (mild, small,
bilateral, right-sided, sizes in mm, lobes), negations of absent findings ("No pleural
effusion.", "There is no evidence of pneumothorax or consolidation.", "... without
lymphadenopathy"), distractor terms (pneumothorax, pericardial effusion), normal statements,
findings the image does not show, present findings outside a fragment's field of view
(mentioned half of the time) and missed findings (present, visible, not mentioned, rate
``miss_rate``). A finding is never negated when present and never mentioned positively when
absent.

Ground truth. ``labelmap`` (uint8, :data:`LABELS`): the true organ labels in the patient's
space (after the deformation, cropped to its field of view), the reference for judging
registration (Dice of warped atlas lung masks); no mask is written (a routine cohort has none).
``clinical.csv`` holds ``case_id``, ``phenotype``, ``phenotype_id``, ``finding_<name>`` (true
presence), ``visible_<name>`` (present and at least one voxel of it inside the field of view;
for a nodule every voxel the sphere touches counts, so a 5-mm nodule at 7.5-mm voxels is
"visible" with little contrast; always 0 for the findings that are not rendered),
``mentioned_<name>`` (the report mentions it
positively), ``has_report``, ``fov`` (full/upper/lower), ``z_start_mm`` / ``z_end_mm`` (canonical
z of the centre of the first and last slice, i.e. the field of view in canonical space),
``n_slices``, ``age``, ``sex`` and the nuisance draws ``scale``, ``rotation_deg``,
``deformation_mm`` (RMS displacement) and ``noise_hu``.

Coordinates. Images are written by :func:`medclust.cohort.write_cohort`, whose affine is
``diag(spacing)`` without offset: voxel index ``(i, j, k)`` lies at physical ``(i, j, k) *
spacing`` mm. A full-FOV grid of shape ``n`` is centred on the canonical origin before the
patient transform: patient coordinates relative to the grid centre are ``q = index * spacing -
(n - 1) / 2 * spacing`` and :meth:`Geometry.to_canonical` maps ``q`` to canonical mm. A
fragment is a slab of slices ``k0 .. k0 + m`` of that full grid, re-indexed from 0.

Generation is seeded and bit-reproducible: case ``i`` draws from its own
``np.random.SeedSequence([seed, 0x0C7], spawn_key=(i,))`` (one child stream per purpose:
metadata, geometry, lung texture, noise, report, and per finding its details and its texture,
so switching one finding on or off changes the image only within the blur kernel of that
finding and of the organs it displaces, see :meth:`PatientPlan.with_findings`); cohort-level
assignments (phenotypes, fields of view, which cases have a report) come from
``SeedSequence([seed, 0x0C7, k])``; images are stored as int16 HU and labelmaps as uint8.

Modules. :mod:`.population` (phenotypes, findings and their probabilities, :data:`DEFAULTS`),
:mod:`.anatomy` (the canonical thorax), :mod:`.patient` (per-patient transform, random streams,
:func:`plan_patient`), :mod:`.render` (HU, findings, scanner model: :func:`render_patient`),
:mod:`.reports` (phrase tables, :func:`compose_report`) and :mod:`.cohort` (parameter checks,
cohort-level assignments, :func:`generate`); this package re-exports what the other generators
and the tests use.
"""

from __future__ import annotations

from medclust_phantoms.routine_ct.anatomy import (
    ANATOMY,
    LABELS,
    LOBE_CODES,
    LOBES,
    LUNG_LABELS,
    ThoraxAnatomy,
    body_depth,
    canonical_tissue,
    tissue_labels,
)
from medclust_phantoms.routine_ct.cohort import (
    check_grid,
    cohort_assignments,
    exact_counts,
    generate,
    validate_params,
)
from medclust_phantoms.routine_ct.patient import (
    IDENTITY,
    Geometry,
    PatientPlan,
    canonical_coordinates,
    case_id,
    case_streams,
    draw_geometry,
    fov_slab,
    grid_centre,
    grid_points,
    plan_patient,
)
from medclust_phantoms.routine_ct.population import (
    DEFAULTS,
    FINDING_PROBABILITY,
    FINDINGS,
    NAME,
    PHENOTYPES,
    RENDERED_FINDINGS,
    UNRENDERED_FINDINGS,
)
from medclust_phantoms.routine_ct.render import (
    RenderedPatient,
    finish_image,
    render_patient,
    smooth_noise,
    structural_findings,
    tissue_hu,
)
from medclust_phantoms.routine_ct.reports import compose_report

__all__ = [
    "ANATOMY",
    "DEFAULTS",
    "FINDINGS",
    "FINDING_PROBABILITY",
    "IDENTITY",
    "LABELS",
    "LOBES",
    "LOBE_CODES",
    "LUNG_LABELS",
    "NAME",
    "PHENOTYPES",
    "RENDERED_FINDINGS",
    "UNRENDERED_FINDINGS",
    "Geometry",
    "PatientPlan",
    "RenderedPatient",
    "ThoraxAnatomy",
    "body_depth",
    "canonical_coordinates",
    "canonical_tissue",
    "case_id",
    "case_streams",
    "check_grid",
    "cohort_assignments",
    "compose_report",
    "draw_geometry",
    "exact_counts",
    "finish_image",
    "fov_slab",
    "generate",
    "grid_centre",
    "grid_points",
    "plan_patient",
    "render_patient",
    "smooth_noise",
    "structural_findings",
    "tissue_hu",
    "tissue_labels",
    "validate_params",
]
