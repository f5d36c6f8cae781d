"""Study 04 on real data: the real CT and MR of ../shared/data/totalsegmentator_ct_small as a
two-modality 3D cohort, sliced into 2D images by the notebook (no split column: case-level split)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import run_notebook
from test_notebooks import SMOKE_CAE_DEC

from medclust.cohort import CaseData, write_cohort
from medclust.studies import cae_dec as study


@pytest.mark.slow
def test_cae_dec_notebook_on_real_ct_and_mr(shared_data, tmp_path):
    src = shared_data / "totalsegmentator_ct_small"
    cases, modality = [], []
    for name, image_file, seg_file in [
        ("ct", "example_ct_sm.nii.gz", "example_seg.nii.gz"),
        ("mr", "example_mr_sm.nii.gz", "example_seg_mr.nii.gz"),
    ]:
        img = nib.load(src / image_file)
        image = np.asarray(img.dataobj).astype(np.int16)
        body = (np.asarray(nib.load(src / seg_file).dataobj) > 0).astype(np.uint8)
        spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
        depth = image.shape[2]
        # three slabs per scan, so a case-level 70:10:20 split leaves a test case per modality
        for i, (a, b) in enumerate(
            [(0, depth // 3), (depth // 3, 2 * depth // 3), (2 * depth // 3, depth)]
        ):
            cases.append(CaseData(f"{name}_{i}", image[:, :, a:b], spacing, mask=body[:, :, a:b]))
            modality.append(name.upper())
    clinical = pd.DataFrame({"case_id": [c.id for c in cases], "modality": modality})
    cohort = write_cohort(
        tmp_path / "real",
        cases,
        clinical,
        name="real",
        modality="CT+MR",
        description="TotalSegmentator example CT and MR",
    )
    report = tmp_path / "report"
    run_notebook(
        "04_cae_dec_dcec",
        {"cohort": str(cohort), "report_dir": str(report), **SMOKE_CAE_DEC},
        tmp_path,
    )
    metrics = json.loads((report / "tables" / "metrics_all.json").read_text())
    assert metrics["n_test"] > 0 and metrics["n_train"] > metrics["n_test"]
    assert set(metrics["acc"]) == set(study.ORDER)
