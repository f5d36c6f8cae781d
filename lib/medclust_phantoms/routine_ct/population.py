"""Who is in the routine chest CT cohort: the latent phenotypes, the findings (rendered or
report-only), how often each phenotype has each finding, its demography, and the generator's
defaults (see :mod:`medclust_phantoms.routine_ct`)."""

from __future__ import annotations

NAME = "routine_ct"

PHENOTYPES: tuple[str, ...] = (
    "normal",
    "copd",
    "heart_failure",
    "pneumonia",
    "fibrotic_ild",
    "lung_cancer",
)
RENDERED_FINDINGS: tuple[str, ...] = (
    "emphysema",
    "nodule",
    "pleural_effusion",
    "consolidation",
    "fibrosis",
    "ground_glass",
    "cardiomegaly",
    "atelectasis",
)
UNRENDERED_FINDINGS: tuple[str, ...] = ("lymphadenopathy", "hiatal_hernia", "atherosclerosis")
FINDINGS: tuple[str, ...] = RENDERED_FINDINGS + UNRENDERED_FINDINGS

DEFAULTS: dict = {
    "seed": 0,
    "n_cases": 200,
    "shape": (48, 48, 40),  # voxels x, y, z of a full field of view
    "spacing": (7.5, 7.5, 8.0),  # mm (field of view 360 x 360 x 320 mm)
    "phenotype_weights": (0.30, 0.18, 0.14, 0.14, 0.10, 0.14),  # order of PHENOTYPES
    "fragment_fraction": 0.25,  # share of cases covering only the upper or lower thorax
    "report_fraction": 0.7535,  # share with a report (paper: 5,886 of 7,812)
    "miss_rate": 0.1,  # present, visible findings that the report does not mention
    "noise_hu": (15.0, 40.0),  # range of the per-case scanner noise sd (HU)
    "deformation_mm": 6.0,  # largest per-case RMS of the nonlinear displacement (mm)
}


# probability of each finding (order of FINDINGS) given the phenotype
# fmt: off
FINDING_PROBABILITY: dict[str, tuple[float, ...]] = {
    #                 emph  nodule effus cons  fibro ggo   cardio atel  lymph hiatal ather
    "normal":        (0.02, 0.05, 0.01, 0.01, 0.01, 0.02, 0.02, 0.04, 0.02, 0.04, 0.08),
    "copd":          (0.90, 0.15, 0.05, 0.08, 0.03, 0.06, 0.10, 0.12, 0.10, 0.08, 0.45),
    "heart_failure": (0.10, 0.06, 0.80, 0.06, 0.03, 0.45, 0.85, 0.35, 0.12, 0.10, 0.55),
    "pneumonia":     (0.06, 0.06, 0.35, 0.92, 0.02, 0.45, 0.08, 0.35, 0.25, 0.05, 0.20),
    "fibrotic_ild":  (0.12, 0.10, 0.05, 0.05, 0.95, 0.55, 0.08, 0.10, 0.35, 0.10, 0.30),
    "lung_cancer":   (0.35, 0.95, 0.25, 0.12, 0.03, 0.06, 0.06, 0.30, 0.55, 0.06, 0.35),
}
# fmt: on
# age (mean, sd) and probability of male sex per phenotype
_DEMOGRAPHY: dict[str, tuple[float, float, float]] = {
    "normal": (48.0, 16.0, 0.48),
    "copd": (66.0, 9.0, 0.60),
    "heart_failure": (72.0, 10.0, 0.52),
    "pneumonia": (58.0, 18.0, 0.52),
    "fibrotic_ild": (67.0, 9.0, 0.65),
    "lung_cancer": (66.0, 9.0, 0.60),
}
