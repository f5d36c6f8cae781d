"""medclust.cohort: loading, and a clear error for every kind of bad input."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_cases, write_tiny_cohort

from medclust.cohort import CohortError, find_cohorts, load_cohort, nifti_bytes, write_cohort


def _edit_dataset(root, fn):
    path = root / "dataset.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _save_float(path, array, affine=None):
    nib.save(
        nib.Nifti1Image(array.astype(np.float32), np.eye(4) if affine is None else affine), path
    )


def test_loads_cases_spacing_and_clinical(tiny_cohort):
    cohort = load_cohort(tiny_cohort, require=("mask", "labelmap", "report"))
    assert cohort.case_ids == ["case_00", "case_01", "case_02"]
    assert list(cohort.clinical.index) == cohort.case_ids
    assert cohort.extra["clinical_label"] == "grade"
    vol = cohort.load("case_01")
    assert vol.image.dtype == np.float32 and vol.image.shape == (12, 10, 4)
    assert vol.spacing == (1.5, 1.5, 5.0)
    assert vol.mask.sum() > 0 and set(np.unique(vol.labelmap)) <= {0, 1, 2}
    assert cohort.case("case_02").read_report() == "Report of case 2."
    assert find_cohorts(tiny_cohort.parent) == [tiny_cohort]


def test_written_files_are_bit_reproducible(tmp_path):
    a = write_tiny_cohort(tmp_path / "a" / "c")
    b = write_tiny_cohort(tmp_path / "b" / "c")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_gzip_header_has_no_timestamp():
    data = nifti_bytes(np.zeros((2, 2, 2), np.int16), (1, 1, 1))
    assert data[4:8] == b"\x00\x00\x00\x00"  # gzip MTIME field
    assert gzip.decompress(data)[:4] == (348).to_bytes(4, "little")


def test_float_voxels_are_refused_on_write():
    with pytest.raises(TypeError, match="integers"):
        nifti_bytes(np.zeros((2, 2, 2), np.float32), (1, 1, 1))


def test_interrupted_write_leaves_nothing_behind(tmp_path):
    root = write_tiny_cohort(tmp_path / "c")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def failing_cases():
        yield from tiny_cases(1, seed=5)
        raise RuntimeError("generator crashed")

    clinical = pd.DataFrame({"case_id": ["case_00"]})
    with pytest.raises(RuntimeError, match="crashed"):
        write_cohort(root, failing_cases(), clinical, name="c", modality="t", description="")
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


# ----------------------------------------------------------------------------- bad input


def test_missing_folder(tmp_path):
    with pytest.raises(CohortError, match="cohort folder is missing"):
        load_cohort(tmp_path / "nope")


def test_missing_dataset_json(tiny_cohort):
    (tiny_cohort / "dataset.json").unlink()
    with pytest.raises(CohortError, match=r"dataset\.json: file is missing"):
        load_cohort(tiny_cohort)


def test_invalid_dataset_json(tiny_cohort):
    (tiny_cohort / "dataset.json").write_text("{not json")
    with pytest.raises(CohortError, match=r"dataset\.json: not valid JSON"):
        load_cohort(tiny_cohort)


def test_dataset_json_missing_keys(tiny_cohort):
    _edit_dataset(tiny_cohort, lambda m: m.pop("modality"))
    with pytest.raises(CohortError, match="missing key.*modality"):
        load_cohort(tiny_cohort)


def test_missing_image_file(tiny_cohort):
    (tiny_cohort / "images" / "case_01.nii.gz").unlink()
    with pytest.raises(CohortError, match=r"images/case_01\.nii\.gz: file is missing"):
        load_cohort(tiny_cohort)


def test_missing_report_file(tiny_cohort):
    (tiny_cohort / "reports" / "case_02.txt").unlink()
    with pytest.raises(CohortError, match=r"reports/case_02\.txt: file is missing"):
        load_cohort(tiny_cohort)


def test_required_mask_absent(tiny_cohort):
    _edit_dataset(tiny_cohort, lambda m: m["cases"][0].pop("mask"))
    with pytest.raises(CohortError, match="case 'case_00': no mask given"):
        load_cohort(tiny_cohort, require=("mask",))


def test_corrupt_nifti(tiny_cohort):
    (tiny_cohort / "images" / "case_00.nii.gz").write_bytes(b"this is not a nifti file")
    with pytest.raises(CohortError, match=r"case_00\.nii\.gz: not a readable NIfTI"):
        load_cohort(tiny_cohort)


def test_truncated_nifti(tiny_cohort):
    path = tiny_cohort / "masks" / "case_01.nii.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CohortError, match=r"masks/case_01\.nii\.gz: not a readable NIfTI"):
        load_cohort(tiny_cohort)


def test_mask_shape_mismatch(tiny_cohort):
    path = tiny_cohort / "masks" / "case_02.nii.gz"
    path.write_bytes(nifti_bytes(np.ones((12, 10, 5), np.uint8), (1.5, 1.5, 5.0)))
    with pytest.raises(
        CohortError, match=r"case_02\.nii\.gz: mask shape \(12, 10, 5\) does not match"
    ):
        load_cohort(tiny_cohort)


def test_mask_affine_mismatch(tiny_cohort):
    path = tiny_cohort / "masks" / "case_00.nii.gz"
    path.write_bytes(nifti_bytes(np.ones((12, 10, 4), np.uint8), (1.0, 1.5, 5.0)))
    with pytest.raises(CohortError, match="mask affine does not match the image affine"):
        load_cohort(tiny_cohort)


def test_labelmap_shape_mismatch(tiny_cohort):
    path = tiny_cohort / "labelmaps" / "case_00.nii.gz"
    path.write_bytes(nifti_bytes(np.ones((3, 3, 3), np.uint8), (1.5, 1.5, 5.0)))
    with pytest.raises(CohortError, match="labelmap shape"):
        load_cohort(tiny_cohort)


def test_empty_mask(tiny_cohort):
    path = tiny_cohort / "masks" / "case_01.nii.gz"
    path.write_bytes(nifti_bytes(np.zeros((12, 10, 4), np.uint8), (1.5, 1.5, 5.0)))
    with pytest.raises(CohortError, match=r"case_01\.nii\.gz: mask is empty"):
        load_cohort(tiny_cohort)


def test_nan_voxels(tiny_cohort):
    image = np.zeros((12, 10, 4), np.float32)
    image[2, 2, 2] = np.nan
    image[3, 3, 3] = np.inf
    affine = np.diag([1.5, 1.5, 5.0, 1.0])
    _save_float(tiny_cohort / "images" / "case_00.nii.gz", image, affine)
    with pytest.raises(CohortError, match=r"case_00\.nii\.gz: 2 NaN/inf voxel"):
        load_cohort(tiny_cohort)


def test_wrong_dimensionality(tiny_cohort):
    _save_float(tiny_cohort / "images" / "case_00.nii.gz", np.zeros((12, 10), np.float32))
    with pytest.raises(CohortError, match=r"case_00\.nii\.gz: expected a 3D image, got 2D"):
        load_cohort(tiny_cohort)


def test_dimensionality_asked_by_the_study(tiny_cohort):
    with pytest.raises(CohortError, match="expected a 2D image, got 3D"):
        load_cohort(tiny_cohort, ndim=2)


def test_missing_clinical_csv(tiny_cohort):
    (tiny_cohort / "clinical.csv").unlink()
    with pytest.raises(CohortError, match=r"clinical\.csv: file is missing"):
        load_cohort(tiny_cohort)


def test_clinical_without_case_id_column(tiny_cohort):
    (tiny_cohort / "clinical.csv").write_text("id,grade\ncase_00,1\n")
    with pytest.raises(CohortError, match="no 'case_id' column"):
        load_cohort(tiny_cohort)


def test_clinical_id_not_in_dataset(tiny_cohort):
    path = tiny_cohort / "clinical.csv"
    path.write_text(path.read_text() + "case_99,1\n")
    with pytest.raises(
        CohortError, match=r"clinical\.csv: case ids not in dataset\.json: \['case_99'\]"
    ):
        load_cohort(tiny_cohort)


def test_dataset_id_missing_from_clinical(tiny_cohort):
    path = tiny_cohort / "clinical.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if not line.startswith("case_01")) + "\n")
    with pytest.raises(CohortError, match=r"case ids of dataset\.json missing here: \['case_01'\]"):
        load_cohort(tiny_cohort)


def test_duplicate_case_ids(tiny_cohort):
    _edit_dataset(tiny_cohort, lambda m: m["cases"].append(dict(m["cases"][0])))
    with pytest.raises(CohortError, match="duplicate case ids"):
        load_cohort(tiny_cohort)


def test_real_ct_from_shared_data(shared_data, tmp_path):
    """A real CT and its organ labels, wrapped as a one-case cohort in the project's format."""
    src = shared_data / "totalsegmentator_ct_small"
    img = nib.load(src / "example_ct_sm.nii.gz")
    seg = np.asarray(nib.load(src / "example_seg.nii.gz").dataobj)
    liver = (seg == 5).astype(np.uint8)
    clinical = pd.DataFrame({"case_id": ["ct0"]})
    from medclust.cohort import CaseData

    case = CaseData(
        "ct0", np.asarray(img.dataobj).astype(np.int16), img.header.get_zooms()[:3], mask=liver
    )
    root = write_cohort(
        tmp_path / "real", [case], clinical, name="real", modality="CT", description=""
    )
    vol = load_cohort(root, require=("mask",)).load("ct0")
    assert vol.image.shape == (122, 101, 30)
    assert np.allclose(vol.spacing, img.header.get_zooms()[:3])
    assert vol.mask.sum() == liver.sum() > 0
