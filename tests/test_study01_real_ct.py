"""Study 01 on real data: the notebook runs unchanged on a cohort without ground-truth labels,
here built from the real CT of ../shared/data/totalsegmentator_ct_small (liver = label 5)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import run_notebook
from test_notebooks import SMOKE_CDCN

from medclust.cohort import CaseData, write_cohort


@pytest.mark.slow
def test_cdcn_notebook_on_real_ct(shared_data, tmp_path):
    src = shared_data / "totalsegmentator_ct_small"
    ct = nib.load(src / "example_ct_sm.nii.gz")
    image = np.asarray(ct.dataobj).astype(np.int16)
    liver = (np.asarray(nib.load(src / "example_seg.nii.gz").dataobj) == 5).astype(np.uint8)
    spacing = tuple(float(s) for s in ct.header.get_zooms()[:3])
    # one real scan cut into four overlapping slabs, so leave-one-out has cases to leave out;
    # the grades are placeholders: this checks the pipeline on real intensities and spacing
    # without a labelmap, not a prediction
    slabs = [(0, 18), (4, 22), (8, 26), (12, 30)]
    cases = [
        CaseData(f"ct_{i}", image[:, :, a:b], spacing, mask=liver[:, :, a:b])
        for i, (a, b) in enumerate(slabs)
    ]
    assert all(c.mask.sum() > 0 for c in cases)
    clinical = pd.DataFrame({"case_id": [c.id for c in cases], "grade": [0, 1, 2, 3]})
    cohort = write_cohort(
        tmp_path / "real_ct",
        cases,
        clinical,
        name="real_ct",
        modality="CT",
        description="TotalSegmentator example CT, liver mask",
    )
    report = tmp_path / "report"
    run_notebook(
        "01_cdcn_texture_signatures",
        {
            "cohort": str(cohort),
            "report_dir": str(report),
            "checkpoint_dir": str(tmp_path / "ckpt"),
            **SMOKE_CDCN,
        },
        tmp_path,
    )
    metrics = json.loads((report / "tables" / "metrics_all.json").read_text())
    assert metrics["n_cases"] == 4 and "texture_nmi" not in metrics
    assert set(metrics["lowhigh"]) == {
        "accuracy",
        "sensitivity",
        "specificity",
        "f1",
        "balanced_accuracy",
        "auc",
    }
    assert "texture_reference_nmi" not in metrics and "ablation_lowhigh" in metrics
