"""Study 03 on real data: the DeepCluster notebook runs unchanged on real CT with a lung mask
from TotalSegmentator's lobe labels (10-14) of ../shared/data/totalsegmentator_ct_small. One
scan is cut into eight overlapping crops through the lung bases so that there are scans to
cluster; the subtypes are placeholders (no emphysema map): this checks the pipeline on real
HU, spacing and masks, not a subtyping."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import run_notebook
from test_notebooks import SMOKE_DEEPCLUSTER

from medclust.cohort import CaseData, write_cohort


@pytest.mark.slow
def test_deepcluster_notebook_on_real_ct(shared_data, tmp_path):
    src = shared_data / "totalsegmentator_ct_small"
    ct = nib.load(src / "example_ct_sm.nii.gz")
    image = np.asarray(ct.dataobj).astype(np.int16)
    seg = np.asarray(nib.load(src / "example_seg.nii.gz").dataobj)
    lungs = ((seg >= 10) & (seg <= 14)).astype(np.uint8)
    spacing = tuple(float(s) for s in ct.header.get_zooms()[:3])
    crops = [(x0, y0) for x0 in (0, 8, 16, 24) for y0 in (0, 12)]
    cases = [
        CaseData(
            f"ct_{i}",
            image[x0 : x0 + 96, y0 : y0 + 88, 14:30],
            spacing,
            mask=lungs[x0 : x0 + 96, y0 : y0 + 88, 14:30],
        )
        for i, (x0, y0) in enumerate(crops)
    ]
    assert all(c.mask.sum() > 0 for c in cases)
    clinical = pd.DataFrame(
        {
            "case_id": [c.id for c in cases],
            "subtype": ["absent", "mild"] * 4,
            "split": ["train"] * 6 + ["test"] * 2,
        }
    )
    cohort = write_cohort(
        tmp_path / "real_ct",
        cases,
        clinical,
        name="real_ct",
        modality="CT",
        description="TotalSegmentator example CT, lung lobes as mask",
    )
    report = tmp_path / "report"
    run_notebook(
        "03_deepcluster_dcam",
        {
            "cohort": str(cohort),
            "report_dir": str(report),
            **SMOKE_DEEPCLUSTER,
            "n_clusters": 2,
            "severity_column": "",  # a real cohort has no latent severity: no ceiling row
        },
        tmp_path,
    )
    metrics = json.loads((report / "tables" / "metrics_all.json").read_text())
    assert metrics["n_train"] == 6 and metrics["n_test"] == 2
    assert "dcam_auc" not in metrics  # no ground-truth emphysema map on real data
    # every row of Table 1 but the ceiling, which needs the phantom's latent severity
    assert set(metrics["acc"]) == {
        "one_cluster", "classical", "untrained", "baseline", "proposed", "supervised"
    }  # fmt: skip
