"""Study 02 on real data: the JULE-3D notebook runs unchanged on a real CT volume with a
threshold given as a param and organ labels as the labelmap (../shared/data/
totalsegmentator_ct_small; no clinical threshold or annotated-slice columns)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import run_notebook
from test_notebooks import SMOKE_JULE3D

from medclust.cohort import CaseData, write_cohort


@pytest.mark.slow
def test_jule3d_notebook_on_real_ct(shared_data, tmp_path):
    src = shared_data / "totalsegmentator_ct_small"
    ct = nib.load(src / "example_ct_sm.nii.gz")
    image = np.asarray(ct.dataobj).astype(np.int16)
    organs = np.asarray(nib.load(src / "example_seg.nii.gz").dataobj).astype(np.uint8)
    spacing = tuple(float(s) for s in ct.header.get_zooms()[:3])
    case = CaseData("ct_0", image, spacing, labelmap=organs)
    clinical = pd.DataFrame({"case_id": ["ct_0"]})
    cohort = write_cohort(
        tmp_path / "real_ct",
        [case],
        clinical,
        name="real_ct",
        modality="CT",
        description="TotalSegmentator example CT with its organ labels",
    )
    report = tmp_path / "report"
    params = {**SMOKE_JULE3D, "threshold": -300, "stride": 5}
    run_notebook(
        "02_jule3d_segmentation",
        {"cohort": str(cohort), "report_dir": str(report), **params},
        tmp_path,
    )
    metrics = json.loads((report / "tables" / "metrics_all.json").read_text())
    assert metrics["n_specimens"] == 1
    # organ labels score the body (HU > -300) segmentation: NMI is defined and in [0, 1]
    nmi = metrics["nmi_full_volume"]
    assert set(nmi) >= {"jule", "kmeans_intensity", "multi_otsu"}
    assert all(0.0 <= v <= 1.0 for v in nmi.values())
