"""MedMNIST npz -> cohort: small npz files written here, and the shared files where present."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT

from medclust.cohort import CohortError, load_cohort, nifti_bytes
from medclust.datasets import MedMNISTError, medmnist_cohort
from medclust.datasets.medmnist import CITATION, medmnist_info

COUNTS = {"train": 7, "val": 2, "test": 3}
INFO = medmnist_info()[0]
needs_info = pytest.mark.skipif(not INFO, reason="the medmnist package is not installed")


def write_npz(
    path: Path,
    item_shape: tuple[int, ...],
    *,
    n_classes: int = 2,
    label_shape: str = "column",
    compressed: bool = True,
    fortran: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A small npz in the official layout; returns its arrays. ``label_shape`` is "column"
    ((n, 1)), "flat" ((n,)) or "multi" ((n, 3) of 0/1)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in COUNTS.items():
        images = rng.integers(0, 256, size=(n, *item_shape), dtype=np.uint8)
        arrays[f"{split}_images"] = np.asfortranarray(images) if fortran else images
        labels = np.arange(n, dtype=np.uint8) % n_classes
        if label_shape == "column":
            labels = labels[:, None]
        elif label_shape == "multi":
            labels = rng.integers(0, 2, size=(n, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


def meta(cohort_dir: Path) -> dict:
    return json.loads((cohort_dir / "dataset.json").read_text())


def check_cohort(out: Path, arrays: dict, *, ndim: int, channels: int = 1) -> None:
    """Loads with load_cohort; per-split counts, labels and every image's bytes as in the npz."""
    cohort = load_cohort(out)
    assert len(cohort) == sum(COUNTS.values())
    clinical = cohort.clinical
    assert list(clinical.columns) == ["label", "label_name", "split", "split_index"]
    assert clinical["split"].value_counts().to_dict() == COUNTS
    for split, n in COUNTS.items():
        rows = clinical[clinical["split"] == split]
        assert rows.index.tolist() == [f"{split}_{i:05d}" for i in range(n)]
        assert rows["split_index"].tolist() == list(range(n))
        assert rows["label"].tolist() == arrays[f"{split}_labels"].reshape(-1).tolist()
        for i, case_id in enumerate(rows.index):
            img = nib.load(out / "images" / f"{case_id}.nii.gz")
            data = np.asarray(img.dataobj)
            assert data.dtype == np.uint8
            np.testing.assert_array_equal(data, arrays[f"{split}_images"][i])
            assert img.header.get_zooms() == (1.0,) * data.ndim
    info = meta(out)
    assert info["tensorImageSize"] == f"{ndim}D"
    assert info.get("channels", 1) == channels
    assert info["clinical_label"] == "label"
    assert info["citation"] == CITATION
    assert "no physical spacing" in info["spacing_note"]


# --------------------------------------------------------------------------- synthetic files


def test_2d_grey_unknown_flag_converts_from_the_arrays(tmp_path, caplog):
    npz = tmp_path / "toy2d.npz"
    arrays = write_npz(npz, (6, 5), n_classes=3)
    with caplog.at_level(logging.WARNING):
        out = medmnist_cohort(npz, tmp_path / "cohort")
    assert out == tmp_path / "cohort"
    check_cohort(out, arrays, ndim=2)
    info = meta(out)
    assert info["name"] == "toy2d"
    assert info["classes"] == {"0": "0", "1": "1", "2": "2"}
    assert info["licence"].startswith("CC BY 4.0 (assumed")
    assert info["task"] == "unknown"
    md5 = hashlib.md5(npz.read_bytes()).hexdigest()
    assert info["source"] | {"medmnist_info": None} == {
        "dataset": "MedMNIST v2",
        "flag": "toy2d",
        "file": "toy2d.npz",
        "md5": md5,
        "official_md5": None,
        "md5_matches": None,
        "medmnist_info": None,
    }
    assert "'toy2d' is not a MedMNIST set" in caplog.text
    clinical = load_cohort(out).clinical
    names = clinical["label_name"].astype(str)  # pandas reads "0", "1" back as numbers
    assert names.tolist() == clinical["label"].astype(str).tolist()


def test_flat_labels_uncompressed_and_fortran_order(tmp_path):
    npz = tmp_path / "toyflat.npz"
    arrays = write_npz(npz, (4, 6), label_shape="flat", compressed=False, fortran=True)
    out = medmnist_cohort(npz, tmp_path / "flat", name="my cohort")
    check_cohort(out, arrays, ndim=2)
    assert meta(out)["name"] == "my cohort"


def test_3d_unknown_flag(tmp_path):
    npz = tmp_path / "toymnist3d_8.npz"
    arrays = write_npz(npz, (3, 4, 3))  # a 3D set: the trailing 3 is not a colour axis
    out = medmnist_cohort(npz, tmp_path / "vol")
    check_cohort(out, arrays, ndim=3)
    assert meta(out)["source"]["flag"] == "toymnist3d"


def test_2d_colour_unknown_flag(tmp_path):
    npz = tmp_path / "toycolour.npz"
    arrays = write_npz(npz, (5, 4, 3))
    out = medmnist_cohort(npz, tmp_path / "rgb")
    check_cohort(out, arrays, ndim=2, channels=3)
    assert load_cohort(out).load("val_00001").image.shape == (5, 4, 3)


@needs_info
def test_known_flag_uses_medmnist_info(tmp_path, caplog):
    npz = tmp_path / "breastmnist.npz"
    arrays = write_npz(npz, (28, 28), label_shape="flat")
    with caplog.at_level(logging.WARNING):
        out = medmnist_cohort(npz, tmp_path / "breast")
    check_cohort(out, arrays, ndim=2)
    info = meta(out)
    assert info["modality"] == "breast ultrasound"
    assert info["description"] == INFO["breastmnist"]["description"]
    assert info["classes"] == INFO["breastmnist"]["label"]
    assert info["task"] == "binary-class" and info["licence"] == "CC BY 4.0"
    assert info["source"]["official_md5"] == INFO["breastmnist"]["MD5"]
    assert info["source"]["md5_matches"] is False
    assert info["source"]["medmnist_info"] == f"medmnist {medmnist_info()[1]}"
    assert "differs from the official" in caplog.text  # a warning, not an error
    names = load_cohort(out).clinical["label_name"]
    assert names.loc["train_00001"] == INFO["breastmnist"]["label"]["1"]


@needs_info
def test_known_colour_and_3d_flags(tmp_path):
    derma = tmp_path / "dermamnist_64.npz"
    arrays = write_npz(derma, (64, 64, 3), n_classes=7)
    out = medmnist_cohort(derma, tmp_path / "derma")
    check_cohort(out, arrays, ndim=2, channels=3)
    info = meta(out)
    assert info["licence"] == "CC BY-NC 4.0" and info["modality"] == "dermatoscope"
    assert info["source"]["official_md5"] == INFO["dermamnist"]["MD5_64"]
    organ = tmp_path / "organmnist3d.npz"
    arrays = write_npz(organ, (3, 3, 3), n_classes=11)  # 3D by its flag, whatever the shape
    out = medmnist_cohort(organ, tmp_path / "organ")
    check_cohort(out, arrays, ndim=3)
    assert meta(out)["modality"] == "abdominal CT"


@needs_info
def test_label_outside_the_official_classes(tmp_path):
    npz = tmp_path / "breastmnist.npz"
    write_npz(npz, (4, 4), n_classes=3)
    with pytest.raises(MedMNISTError, match=r"breastmnist\.npz: label value\(s\) \[2\]"):
        medmnist_cohort(npz, tmp_path / "out")


def test_multi_label_refused_by_shape(tmp_path):
    npz = tmp_path / "toymulti.npz"
    write_npz(npz, (4, 4), label_shape="multi")
    with pytest.raises(MedMNISTError, match=r"toymulti\.npz: a multi-label set.*\(7, 3\)"):
        medmnist_cohort(npz, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@needs_info
def test_multi_label_refused_by_task(tmp_path):
    npz = tmp_path / "chestmnist.npz"
    write_npz(npz, (4, 4))  # (n, 1) labels, but ChestMNIST's task is multi-label
    with pytest.raises(MedMNISTError, match=r"chestmnist\.npz: a multi-label set.*task"):
        medmnist_cohort(npz, tmp_path / "out")


def test_not_a_medmnist_npz(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(MedMNISTError, match=r"bad\.npz: not a readable npz"):
        medmnist_cohort(bad, tmp_path / "out")
    partial = tmp_path / "partial.npz"
    np.savez(partial, train_images=np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(MedMNISTError, match=r"partial\.npz: not a MedMNIST npz: no train_labels"):
        medmnist_cohort(partial, tmp_path / "out")
    floats = tmp_path / "floats.npz"
    arrays = write_npz(floats, (2, 2))
    np.savez(floats, **{**arrays, "val_images": arrays["val_images"] / 255.0})
    with pytest.raises(MedMNISTError, match=r"floats\.npz: images must be integers"):
        medmnist_cohort(floats, tmp_path / "out")


def test_corrupt_image_data_leaves_nothing_behind(tmp_path):
    npz = tmp_path / "toy.npz"
    write_npz(npz, (40, 40))
    data = bytearray(npz.read_bytes())
    data[2000:2100] = bytes(100)  # inside train_images' compressed data, past its header
    npz.write_bytes(bytes(data))
    with pytest.raises(MedMNISTError, match=r"toy\.npz: train_images is corrupt"):
        medmnist_cohort(npz, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.npz"]


def test_existing_folder_needs_force(tmp_path):
    npz = tmp_path / "toy.npz"
    arrays = write_npz(npz, (4, 4))
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"cohort: folder exists.*--force"):
        medmnist_cohort(npz, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(FileExistsError, match="not a cohort folder"):  # --force spares it too
        medmnist_cohort(npz, out, force=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()  # an empty folder is fine without force
    medmnist_cohort(npz, out)
    with pytest.raises(FileExistsError):
        medmnist_cohort(npz, out)
    arrays = write_npz(npz, (4, 4), seed=1)
    medmnist_cohort(npz, out, force=True)
    check_cohort(out, arrays, ndim=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort", "toy.npz"]  # no temp left


@pytest.fixture
def medmnist_home(tmp_path, monkeypatch) -> Path:
    """HOME in tmp_path (medmnist not imported), cwd elsewhere: ~/.medmnist is tmp's."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delitem(sys.modules, "medmnist.info", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    root = tmp_path / "home" / ".medmnist"
    root.mkdir(parents=True)
    return root


def test_bare_name_found_in_the_medmnist_folder(medmnist_home, tmp_path):
    arrays = write_npz(medmnist_home / "toymnist3d_8.npz", (3, 3, 3))
    for i, name in enumerate(["toymnist3d_8", "toymnist3d_8.npz", "TOYMNIST3D_8"]):
        out = medmnist_cohort(name, tmp_path / f"out{i}")
        check_cohort(out, arrays, ndim=3)
        assert meta(out)["name"] == "toymnist3d_8"


def test_an_imported_medmnist_default_root_is_honoured(medmnist_home, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setitem(
        sys.modules, "medmnist.info", types.SimpleNamespace(DEFAULT_ROOT=str(elsewhere))
    )
    arrays = write_npz(elsewhere / "toy.npz", (4, 4))
    check_cohort(medmnist_cohort("toy", tmp_path / "out"), arrays, ndim=2)


def test_missing_file_names_every_place_and_never_downloads(medmnist_home, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        medmnist_cohort("adrenalmnist3d_64", tmp_path / "out")
    message = str(err.value)
    assert str(tmp_path / "work" / "adrenalmnist3d_64") in message
    assert str(medmnist_home / "adrenalmnist3d_64.npz") in message
    assert "never downloads" in message and "download=True, size=64" in message
    if INFO:
        assert "medmnist.AdrenalMNIST3D(split='train'" in message
    with pytest.raises(FileNotFoundError, match=r"nowhere/breastmnist\.npz: MedMNIST file not"):
        medmnist_cohort("nowhere/breastmnist.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_load_cohort_checks_the_channel_axis(tmp_path):
    out = medmnist_cohort(write_npz_path(tmp_path, (4, 5, 3)), tmp_path / "rgb")
    (out / "images" / "train_00000.nii.gz").write_bytes(
        nifti_bytes(np.zeros((4, 5), np.uint8), (1.0, 1.0))
    )
    with pytest.raises(CohortError, match=r"train_00000\.nii\.gz: expected a 2D image with 3"):
        load_cohort(out)
    info = meta(out)
    (out / "dataset.json").write_text(json.dumps({**info, "channels": "3"}))
    with pytest.raises(CohortError, match="channels must be a positive integer, got '3'"):
        load_cohort(out)


def write_npz_path(tmp_path: Path, item_shape) -> Path:
    npz = tmp_path / "toy.npz"
    write_npz(npz, item_shape)
    return npz


# --------------------------------------------------------------------------- command line


def cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "medclust.datasets", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_cli(tmp_path):
    npz = write_npz_path(tmp_path, (4, 4))
    out = tmp_path / "cohort"
    ok = cli("medmnist", str(npz), "--out", str(out), "--name", "toy cohort", home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(out)
    assert meta(out)["name"] == "toy cohort"
    for args, code, message in [
        (["medmnist", str(npz), "--out", str(out)], 1, f"{out}: folder exists"),
        (["medmnist", "nosuchmnist", "--out", str(tmp_path / "x")], 1, "never downloads"),
        (["medmnist", str(npz)], 2, "the following arguments are required: --out"),
        (["kaggle", str(npz), "--out", str(out)], 2, "invalid choice: 'kaggle'"),
    ]:
        run = cli(*args, home=tmp_path)
        assert run.returncode == code, run.stderr
        last = run.stderr.strip().splitlines()[-1]
        prefix = "python -m medclust.datasets" + (": " if code == 1 else "")  # 2: argparse's
        assert last.startswith(prefix) and ": error: " in last and message in last
        assert "Traceback" not in run.stderr
        if code == 1:
            assert len(run.stderr.strip().splitlines()) == 1
    assert ok.returncode == 0 and (out / "dataset.json").is_file()  # untouched by the refusal
    forced = cli("medmnist", str(npz), "--out", str(out), "--force", home=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert meta(out)["name"] == "toy"


# --------------------------------------------------------------------------- shared files


@pytest.fixture
def medmnist_dir(shared_data) -> Path:
    folder = shared_data / "medmnist"
    if not folder.is_dir():
        pytest.skip(f"no MedMNIST files at {folder}")
    return folder


def test_shared_breastmnist(medmnist_dir, tmp_path):
    npz = medmnist_dir / "breastmnist.npz"
    out = medmnist_cohort(npz, tmp_path / "breastmnist")
    cohort = load_cohort(out)
    assert len(cohort) == 780
    counts = cohort.clinical["split"].value_counts().to_dict()
    assert counts == {"train": 546, "val": 78, "test": 156}
    assert set(cohort.clinical["label"]) == {0, 1}
    info = meta(out)
    assert info["tensorImageSize"] == "2D" and info["source"]["flag"] == "breastmnist"
    with np.load(npz) as arrays:
        for case_id in ("train_00000", "val_00077", "test_00155"):
            split, index = case_id.split("_")
            image = np.asarray(nib.load(out / "images" / f"{case_id}.nii.gz").dataobj)
            np.testing.assert_array_equal(image, arrays[f"{split}_images"][int(index)])
            label = int(arrays[f"{split}_labels"].reshape(-1)[int(index)])
            assert cohort.clinical.loc[case_id, "label"] == label


@pytest.mark.slow
def test_shared_adrenalmnist3d(medmnist_dir, tmp_path):
    npz = medmnist_dir / "adrenalmnist3d.npz"
    out = medmnist_cohort(npz, tmp_path / "adrenal")
    cohort = load_cohort(out)
    assert len(cohort) == 1584
    counts = cohort.clinical["split"].value_counts().to_dict()
    assert counts == {"train": 1188, "val": 98, "test": 298}
    assert cohort.load("test_00297").image.shape == (28, 28, 28)
    info = meta(out)
    assert info["tensorImageSize"] == "3D" and info["modality"] == "abdominal CT"
    if INFO:
        assert info["source"]["md5_matches"] is True
        assert info["classes"] == {"0": "normal", "1": "hyperplasia"}
