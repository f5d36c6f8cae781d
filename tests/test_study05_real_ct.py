"""Study 05 on real data: the feature pipeline and the population notebook run unchanged on a
real CT (../shared/data/totalsegmentator_ct_small) with a few hand-written reports. One scan
is cut into six overlapping crops so that there is a population to cluster; the atlas and
templates are the phantom's (routine_ct_atlas), as a user without their own template set would
start. This checks the pipeline on real HU, spacing and free text, not a finding."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import run_notebook
from test_notebooks import SMOKE_POPULATION

from medclust.cohort import CaseData, write_cohort
from medclust.population import DEFAULTS, extract_cohort
from medclust_phantoms import build

REPORTS = [
    "FINDINGS: Mild centrilobular emphysema in both upper lobes. No pleural effusion.",
    "FINDINGS: Small right pleural effusion with adjacent atelectasis. No pneumothorax.",
    None,  # a volume without a report is clustered but not tested
    "IMPRESSION: Emphysema. A 6 mm nodule in the left lower lobe, unchanged.",
    "FINDINGS: No consolidation, effusion or pneumothorax. Heart size normal.",
    "FINDINGS: Bibasilar atelectasis and a small left effusion. Mild emphysema.",
]


@pytest.mark.slow
def test_population_notebook_on_real_ct(shared_data, tmp_path):
    src = shared_data / "totalsegmentator_ct_small"
    ct = nib.load(src / "example_ct_sm.nii.gz")
    image = np.asarray(ct.dataobj).astype(np.int16)
    spacing = tuple(float(s) for s in ct.header.get_zooms()[:3])
    crops = [(0, 0), (0, 12), (12, 0), (12, 12), (24, 0), (24, 12)]
    cases = [
        CaseData(f"ct_{i}", image[x0 : x0 + 96, y0 : y0 + 88, :], spacing, report=REPORTS[i])
        for i, (x0, y0) in enumerate(crops)
    ]
    clinical = pd.DataFrame({"case_id": [c.id for c in cases]})
    cohort = write_cohort(
        tmp_path / "real_ct",
        cases,
        clinical,
        name="real_ct",
        modality="CT",
        description="TotalSegmentator example CT crops with hand-written reports",
    )
    atlas = build("routine_ct_atlas", tmp_path / "atlas", n_templates=2)
    features = tmp_path / "features"
    index = extract_cohort(cohort, atlas, features, {**DEFAULTS, "n_templates": 2}, mode="serial")
    assert list(index.case_id) == [c.id for c in cases]
    report = tmp_path / "report"
    params = {**SMOKE_POPULATION, "k_max": 3, "n_words_haralick": 4}
    run_notebook(
        "05_population_clustering",
        {"cohort": str(cohort), "features_dir": str(features), "report_dir": str(report), **params},
        tmp_path,
    )
    metrics = json.loads((report / "tables" / "metrics_all.json").read_text())
    assert metrics["n_volumes"] == 6 and metrics["n_reports"] == 5
    # no phenotype or finding columns on real data: those scores are left out
    assert "phenotype_nmi" not in metrics and "term_extraction" not in metrics
    assert metrics["n_terms"] >= 1  # emphysema, effusion, atelectasis occur more than once
