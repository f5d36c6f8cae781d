"""The routine chest CT cohort as a whole: parameter checks, the cohort-level assignments
(phenotypes, fields of view, reports in exact proportions) and :func:`generate`, which renders
every case and writes the cohort folder."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medclust.cohort import CaseData, write_cohort
from medclust_phantoms.params import fail, integer, merged, number, numbers, recorded
from medclust_phantoms.routine_ct.anatomy import LABELS
from medclust_phantoms.routine_ct.patient import _TAG, plan_patient
from medclust_phantoms.routine_ct.population import (
    DEFAULTS,
    FINDINGS,
    NAME,
    PHENOTYPES,
    RENDERED_FINDINGS,
)
from medclust_phantoms.routine_ct.render import render_patient
from medclust_phantoms.routine_ct.reports import compose_report

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- parameters


def validate_params(params: dict) -> dict:
    """Merge ``params`` into :data:`DEFAULTS` and check every value; raise ``ValueError`` (or
    ``TypeError`` for an unknown name) naming the offending parameter."""
    p = merged(NAME, DEFAULTS, params)
    out = {
        "seed": integer(NAME, p, "seed", 0),
        "n_cases": integer(NAME, p, "n_cases", 1),
        "shape": numbers(NAME, p, "shape", 3, int, 1),
        "spacing": numbers(NAME, p, "spacing", 3, float, 0.0),
        "phenotype_weights": numbers(NAME, p, "phenotype_weights", len(PHENOTYPES), float, 0.0),
        "fragment_fraction": number(NAME, p, "fragment_fraction", 0.0, 1.0),
        "report_fraction": number(NAME, p, "report_fraction", 0.0, 1.0),
        "miss_rate": number(NAME, p, "miss_rate", 0.0, 1.0),
        "noise_hu": numbers(NAME, p, "noise_hu", 2, float, 0.0),
        "deformation_mm": number(NAME, p, "deformation_mm", 0.0, 20.0),
    }
    check_grid(NAME, out["shape"], out["spacing"], p)
    if sum(out["phenotype_weights"]) <= 0:
        raise fail(NAME, "phenotype_weights", "must have a positive sum", p["phenotype_weights"])
    lo, hi = out["noise_hu"]
    if not lo <= hi <= 200.0:
        raise fail(
            NAME, "noise_hu", "must be (low, high) with 0 <= low <= high <= 200", p["noise_hu"]
        )
    return out


def check_grid(generator: str, shape: tuple, spacing: tuple, raw: dict) -> None:
    """A full-FOV grid must have at least 16 x 16 x 12 voxels (at most 512 per side) and
    cover 280-600 mm in x and y and 240-600 mm in z (the thorax is ~300 x 230 x 290 mm)."""
    if min(shape[:2]) < 16 or shape[2] < 12 or max(shape) > 512:
        raise fail(
            generator, "shape", "must be 16..512 voxels in x, y and 12..512 in z", raw["shape"]
        )
    if min(spacing) <= 0:
        raise fail(generator, "spacing", "must be positive", raw["spacing"])
    fov = [n * s for n, s in zip(shape, spacing, strict=True)]
    if not (280.0 <= min(fov[:2]) and max(fov[:2]) <= 600.0 and 240.0 <= fov[2] <= 600.0):
        raise fail(
            generator,
            "spacing",
            "times shape (the field of view) must cover 280-600 mm in x, y and 240-600 mm in z",
            (raw["shape"], raw["spacing"]),
        )


def exact_counts(n: int, weights: Sequence[float]) -> np.ndarray:
    """``n`` split in proportion to ``weights`` by largest remainders (ties to the first)."""
    w = np.asarray(weights, float)
    raw = w / w.sum() * n
    counts = np.floor(raw + 1e-9).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return counts


def cohort_assignments(
    seed: int,
    n_cases: int,
    phenotype_weights: Sequence[float],
    fragment_fraction: float,
    report_fraction: float,
) -> tuple[list[str], list[str], np.ndarray]:
    """Phenotype, field of view and report presence of every case: exact proportions
    (largest remainders), each shuffled by its own stream of ``seed``."""

    def shuffled(k: int, values: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG, k]))
        return rng.permutation(values)

    phenos = np.repeat(np.arange(len(PHENOTYPES)), exact_counts(n_cases, phenotype_weights))
    f = fragment_fraction
    fov_counts = exact_counts(n_cases, (1.0 - f, f / 2.0, f / 2.0))
    fovs = np.repeat(np.array(["full", "upper", "lower"]), fov_counts)
    r = report_fraction
    reports = np.repeat(np.array([True, False]), exact_counts(n_cases, (r, 1.0 - r)))
    return (
        [PHENOTYPES[int(k)] for k in shuffled(1, phenos)],
        [str(v) for v in shuffled(2, fovs)],
        shuffled(3, reports),
    )


# --------------------------------------------------------------------------- cohort


def generate(root: str | Path, **params) -> Path:
    """Write the routine chest CT phantom cohort to ``root`` (see the module docstring).

    Every case is rendered in a first pass (visibility of the findings decides the report,
    and both go into ``clinical.csv``), kept zlib-compressed in memory, and written by
    :func:`medclust.cohort.write_cohort`.
    """
    p = validate_params(params)
    shape, spacing = p["shape"], p["spacing"]
    phenotypes, fovs, has_report = cohort_assignments(
        p["seed"],
        p["n_cases"],
        p["phenotype_weights"],
        p["fragment_fraction"],
        p["report_fraction"],
    )
    rows, stored = [], []
    for i in range(p["n_cases"]):
        plan = plan_patient(
            p["seed"],
            i,
            phenotypes[i],
            fovs[i],
            noise_hu=p["noise_hu"],
            deformation_mm=p["deformation_mm"],
        )
        out = render_patient(plan, shape, spacing)
        report, mentioned = None, frozenset()
        if has_report[i]:
            report, mentioned = compose_report(plan, out.visible, out.nodule_lobes, p["miss_rate"])
        row = {
            "case_id": plan.case_id,
            "phenotype": plan.phenotype,
            "phenotype_id": PHENOTYPES.index(plan.phenotype),
        }
        row.update({f"finding_{f}": int(f in plan.present) for f in FINDINGS})
        row.update({f"visible_{f}": int(out.visible[f]) for f in FINDINGS})
        row.update({f"mentioned_{f}": int(f in mentioned) for f in FINDINGS})
        row.update(
            {
                "has_report": int(report is not None),
                "fov": plan.fov,
                "z_start_mm": round(out.z_range_mm[0], 1),
                "z_end_mm": round(out.z_range_mm[1], 1),
                "n_slices": int(out.image.shape[2]),
                "age": plan.age,
                "sex": plan.sex,
                "scale": round(plan.geometry.scale, 4),
                "rotation_deg": round(plan.geometry.rotation_deg, 2),
                "deformation_mm": round(plan.geometry.deformation_rms_mm, 2),
                "noise_hu": round(plan.noise_hu, 1),
            }
        )
        rows.append(row)
        stored.append(
            (
                out.image.shape,
                zlib.compress(out.image.tobytes(), 1),
                zlib.compress(out.labelmap.tobytes(), 1),
                report,
            )
        )
        log.debug("rendered %s (%s, %s FOV)", plan.case_id, plan.phenotype, plan.fov)
    clinical = pd.DataFrame(rows)

    def cases() -> Iterator[CaseData]:
        for k, row in enumerate(rows):
            vol_shape, image, labelmap, report = stored[k]
            stored[k] = None
            yield CaseData(
                id=row["case_id"],
                image=np.frombuffer(zlib.decompress(image), np.int16).reshape(vol_shape),
                spacing=spacing,
                labelmap=np.frombuffer(zlib.decompress(labelmap), np.uint8).reshape(vol_shape),
                report=report,
            )

    description = (
        "Phantom routine chest CT (int16 HU) of a population with latent phenotypes "
        f"({', '.join(PHENOTYPES)}): a canonical thorax under per-patient affine and smooth "
        "nonlinear deformations, full or fragmentary fields of view in z, scanner noise and "
        "blur; rendered findings (emphysema, nodules, pleural effusion, consolidation, "
        "fibrosis, ground-glass opacities, cardiomegaly, atelectasis) and free-text radiology "
        "reports with synonyms, modifiers and negations for ~75 % of the cases."
    )
    return write_cohort(
        root,
        cases(),
        clinical,
        name=NAME,
        modality="CT",
        description=description,
        labels=dict(LABELS),
        spacing_note=(
            f"voxel spacing {spacing[0]} x {spacing[1]} x {spacing[2]} mm; axial slices along "
            "the last axis (x right->left, y anterior->posterior, z inferior->superior); "
            "fragments have fewer slices; affine diag(spacing), no offset"
        ),
        clinical_label="phenotype",
        findings=list(FINDINGS),
        rendered_findings=list(RENDERED_FINDINGS),
        phenotypes=list(PHENOTYPES),
        ground_truth=(
            "clinical.csv: phenotype (latent), finding_<name> (true presence), "
            "visible_<name> (present and inside the field of view), mentioned_<name> "
            "(reported positively); labelmap: true organ labels after the patient's "
            "deformation, cropped to its field of view (reference for registration)"
        ),
        generator_params=recorded(p),
    )
