"""Cohorts: a folder in the Medical Segmentation Decathlon / nnU-Net style.

Layout (paths in ``dataset.json`` are relative to the cohort folder)::

    <cohort>/dataset.json   name, description, modality, labels {id: name}, spacing_note,
                            cases: [{id, image, mask?, labelmap?, report?}]
    <cohort>/clinical.csv   one row per case, column ``case_id`` first
    <cohort>/images/*.nii.gz  masks/*.nii.gz  labelmaps/*.nii.gz  reports/*.txt

Arrays are returned in the voxel order stored in the NIfTI file (x, y, z); axial slices run
along the last axis. Voxel spacing (mm) comes from the header zooms.

``load_cohort`` validates the whole cohort before any study work starts and raises
:class:`CohortError` naming the file and the problem. ``write_cohort`` writes a cohort
atomically and bit-reproducibly (integer voxels, gzip without timestamps), which is what the
phantom generators use so that ``make data`` reproduces the hash in ``data.dvc``.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medclust.outputs import default_mode

log = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"
CLINICAL_CSV = "clinical.csv"
CASE_ID = "case_id"
_REQUIRED_KEYS = ("name", "modality", "cases")
_VOLUME_KINDS = ("image", "mask", "labelmap")
_SUBDIR = {"image": "images", "mask": "masks", "labelmap": "labelmaps", "report": "reports"}


class CohortError(ValueError):
    """A cohort folder that cannot be used as it is; the message names the file and problem."""


@dataclass(frozen=True)
class Volume:
    """One case's voxels: ``image`` as float32, ``mask``/``labelmap`` as integer arrays."""

    case_id: str
    image: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    mask: np.ndarray | None = None
    labelmap: np.ndarray | None = None


@dataclass(frozen=True)
class Case:
    id: str
    image: Path
    mask: Path | None = None
    labelmap: Path | None = None
    report: Path | None = None

    def read_report(self) -> str | None:
        return None if self.report is None else self.report.read_text(encoding="utf-8")


@dataclass
class Cohort:
    root: Path
    name: str
    modality: str
    description: str
    labels: dict[int, str]
    cases: list[Case]
    clinical: pd.DataFrame
    spacing_note: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    @property
    def case_ids(self) -> list[str]:
        return [c.id for c in self.cases]

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.id == case_id:
                return c
        raise KeyError(f"{self.root / DATASET_JSON}: no case {case_id!r}")

    def load(self, case_id: str) -> Volume:
        """Read one case's image (float32) and, where present, its mask and labelmap."""
        case = self.case(case_id)
        img = _read_nifti(case.image)
        spacing = tuple(float(z) for z in img.header.get_zooms()[: img.ndim])
        arrays = {
            kind: np.asarray(_read_nifti(path).dataobj).astype(np.int32)
            for kind in ("mask", "labelmap")
            if (path := getattr(case, kind)) is not None
        }
        return Volume(
            case_id=case.id,
            image=np.asarray(img.dataobj, dtype=np.float32),
            spacing=spacing,
            affine=img.affine,
            **arrays,
        )

    def volumes(self) -> Iterator[Volume]:
        for c in self.cases:
            yield self.load(c.id)

    def label_values(self, column: str, param: str = "label_column") -> pd.Series:
        """``clinical[column]`` (one value per case, in case order), checked before any work:
        the column exists and no case leaves it blank; errors name the file, the param and
        the cases."""
        path = self.root / CLINICAL_CSV
        if column not in self.clinical.columns:
            raise CohortError(
                f"{path}: no column {column!r} ({param}={column!r}); "
                f"columns: {list(self.clinical.columns)}"
            )
        values = self.clinical[column]
        blank = values.isna() | values.astype(str).str.strip().eq("")
        if blank.any():
            cases = list(values.index[blank])
            more = f" and {len(cases) - 10} more" if len(cases) > 10 else ""
            raise CohortError(
                f"{path}: column {column!r} ({param}) is blank for {len(cases)} case(s): "
                f"{', '.join(map(str, cases[:10]))}{more}"
            )
        return values


# --------------------------------------------------------------------------- reading


def _read_nifti(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise CohortError(f"{path}: file is missing")
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise CohortError(f"{path}: not a readable NIfTI file ({exc})") from exc


def _read_voxels(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = _read_nifti(path)
    try:
        data = np.asarray(img.dataobj)
    except Exception as exc:  # truncated gzip streams fail only when the voxels are read
        raise CohortError(f"{path}: not a readable NIfTI file ({exc})") from exc
    return data, img


def _case_path(root: Path, entry: dict, kind: str, where: str) -> Path | None:
    rel = entry.get(kind)
    if rel is None:
        return None
    if not isinstance(rel, str) or not rel:
        raise CohortError(f"{where}: {kind!r} must be a relative path string, got {rel!r}")
    return root / rel


def _parse_dataset(root: Path) -> dict:
    path = root / DATASET_JSON
    if not root.is_dir():
        raise CohortError(f"{root}: cohort folder is missing")
    if not path.is_file():
        raise CohortError(f"{path}: file is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CohortError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CohortError(f"{path}: must hold a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise CohortError(f"{path}: missing key(s) {', '.join(missing)}")
    if not isinstance(meta["cases"], list) or not meta["cases"]:
        raise CohortError(f"{path}: 'cases' must be a non-empty list")
    return meta


def _parse_clinical(root: Path, case_ids: list[str]) -> pd.DataFrame:
    path = root / CLINICAL_CSV
    if not path.is_file():
        raise CohortError(f"{path}: file is missing")
    try:
        clinical = pd.read_csv(path, dtype={CASE_ID: str})
    except Exception as exc:
        raise CohortError(f"{path}: not a readable CSV file ({exc})") from exc
    if CASE_ID not in clinical.columns:
        raise CohortError(f"{path}: no {CASE_ID!r} column (columns: {list(clinical.columns)})")
    dup = clinical[CASE_ID][clinical[CASE_ID].duplicated()].tolist()
    if dup:
        raise CohortError(f"{path}: duplicate case ids {dup[:5]}")
    in_csv, in_json = set(clinical[CASE_ID]), set(case_ids)
    if in_csv - in_json:
        extra = sorted(in_csv - in_json)[:5]
        raise CohortError(f"{path}: case ids not in {DATASET_JSON}: {extra}")
    if in_json - in_csv:
        missing = sorted(in_json - in_csv)[:5]
        raise CohortError(f"{path}: case ids of {DATASET_JSON} missing here: {missing}")
    return clinical.set_index(CASE_ID).loc[case_ids]


def _check_case(
    case: Case, ndim: int, require: tuple[str, ...], check_voxels: bool, channels: int = 1
) -> None:
    for kind in require:
        if getattr(case, kind) is None:
            raise CohortError(f"case {case.id!r}: no {kind} given in {DATASET_JSON}")
    if case.report is not None and not case.report.is_file():
        raise CohortError(f"{case.report}: file is missing")
    if not check_voxels:
        for kind in _VOLUME_KINDS:
            if (path := getattr(case, kind)) is not None:
                _read_nifti(path)
        return
    image, img = _read_voxels(case.image)
    if channels > 1:  # colour: one extra trailing axis of `channels` values
        if image.ndim != ndim + 1 or image.shape[-1] != channels:
            raise CohortError(
                f"{case.image}: expected a {ndim}D image with {channels} channels (last axis), "
                f"got shape {image.shape}"
            )
    elif image.ndim != ndim:
        raise CohortError(
            f"{case.image}: expected a {ndim}D image, got {image.ndim}D of shape {image.shape}"
        )
    spatial = image.shape[:ndim]
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise CohortError(f"{case.image}: {bad} NaN/inf voxel(s)")
    for kind in ("mask", "labelmap"):
        path = getattr(case, kind)
        if path is None:
            continue
        data, other = _read_voxels(path)
        if data.shape != spatial:
            raise CohortError(
                f"{path}: {kind} shape {data.shape} does not match image shape {spatial} "
                f"({case.image.name})"
            )
        if not np.allclose(other.affine, img.affine, atol=1e-3):
            raise CohortError(f"{path}: {kind} affine does not match the image affine")
        if not np.isfinite(data).all():
            raise CohortError(f"{path}: NaN/inf voxel(s) in {kind}")
        if kind == "mask" and not np.any(data):
            raise CohortError(f"{path}: mask is empty (no foreground voxel)")


def load_cohort(
    root: str | Path,
    *,
    ndim: int | None = None,
    require: Iterable[str] = (),
    check_voxels: bool = True,
) -> Cohort:
    """Read and validate a cohort folder.

    ``require`` lists the per-case entries a study needs (``"mask"``, ``"labelmap"``,
    ``"report"``); ``ndim`` the image dimensionality a study needs (default: what
    ``tensorImageSize`` in ``dataset.json`` says, else 3). Every file is opened (and with
    ``check_voxels`` every voxel checked) before this returns, so a bad case fails here
    rather than halfway through a study. A ``dataset.json`` with ``"channels": C`` (C > 1,
    e.g. RGB) holds images with one extra trailing axis of size C.
    """
    root = Path(root)
    meta = _parse_dataset(root)
    where = root / DATASET_JSON
    cases: list[Case] = []
    for i, entry in enumerate(meta["cases"]):
        if not isinstance(entry, dict) or "id" not in entry or "image" not in entry:
            raise CohortError(f"{where}: case #{i} needs at least 'id' and 'image'")
        cid = str(entry["id"])
        paths = {k: _case_path(root, entry, k, f"{where} case {cid!r}") for k in _SUBDIR}
        cases.append(Case(id=cid, **paths))
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise CohortError(f"{where}: duplicate case ids {dup}")
    clinical = _parse_clinical(root, ids)
    if ndim is None:
        size = str(meta.get("tensorImageSize", "3D"))
        if size not in ("2D", "3D"):
            raise CohortError(f"{where}: tensorImageSize must be '2D' or '3D', got {size!r}")
        ndim = int(size[0])
    channels = meta.get("channels", 1)
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise CohortError(f"{where}: channels must be a positive integer, got {channels!r}")
    require = tuple(require)
    for case in cases:
        _check_case(case, ndim, require, check_voxels, channels)
    labels = {int(k): str(v) for k, v in meta.get("labels", {}).items()}
    known = set(_REQUIRED_KEYS) | {"description", "labels", "spacing_note", "tensorImageSize"}
    return Cohort(
        root=root,
        name=str(meta["name"]),
        modality=str(meta["modality"]),
        description=str(meta.get("description", "")),
        labels=labels,
        cases=cases,
        clinical=clinical,
        spacing_note=str(meta.get("spacing_note", "")),
        extra={k: v for k, v in meta.items() if k not in known},
    )


def find_cohorts(data_dir: str | Path) -> list[Path]:
    """Every sub-folder of ``data_dir`` that holds a ``dataset.json``, sorted by name."""
    return sorted(p.parent for p in Path(data_dir).glob(f"*/{DATASET_JSON}"))


# --------------------------------------------------------------------------- writing


def nifti_bytes(array: np.ndarray, spacing: Iterable[float]) -> bytes:
    """Gzipped NIfTI-1 bytes that depend only on the voxels and spacing (no timestamp)."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        raise TypeError(
            "store integers on disk (e.g. int16 HU, uint8 masks) for bit-reproducibility"
        )
    spacing = [float(s) for s in spacing]
    affine = np.diag([*spacing[:3], *([1.0] * (3 - len(spacing[:3]))), 1.0])
    img = nib.Nifti1Image(array, affine)
    img.header.set_zooms(tuple(spacing[: array.ndim]))
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


@dataclass
class CaseData:
    """One case as a phantom generator produces it, before it is written."""

    id: str
    image: np.ndarray
    spacing: tuple[float, ...]
    mask: np.ndarray | None = None
    labelmap: np.ndarray | None = None
    report: str | None = None


def write_cohort(
    root: str | Path,
    cases: Iterable[CaseData],
    clinical: pd.DataFrame,
    *,
    name: str,
    modality: str,
    description: str,
    labels: dict[int, str] | None = None,
    spacing_note: str = "",
    **extra,
) -> Path:
    """Write a cohort folder atomically: everything goes to a sibling temp folder first,
    which replaces ``root`` only once complete. ``clinical`` needs a ``case_id`` column.
    With ``channels=C`` (C > 1, passed on into ``dataset.json``) every image carries one
    extra trailing axis of C values (e.g. RGB), not counted in ``tensorImageSize``."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        tmp.chmod(default_mode(directory=True))  # mkdtemp makes it private
        entries, dims = [], set()
        channel_axis = int(extra.get("channels", 1)) > 1
        for case in cases:
            dims.add(np.ndim(case.image) - channel_axis)
            entry = {"id": case.id}
            for kind in (*_VOLUME_KINDS, "report"):
                value = getattr(case, kind)
                if value is None:
                    continue
                suffix = ".txt" if kind == "report" else ".nii.gz"
                rel = f"{_SUBDIR[kind]}/{case.id}{suffix}"
                (tmp / _SUBDIR[kind]).mkdir(exist_ok=True)
                data = (
                    value.encode("utf-8") if kind == "report" else nifti_bytes(value, case.spacing)
                )
                (tmp / rel).write_bytes(data)
                entry[kind] = rel
            entries.append(entry)
        if len(dims) != 1 or not dims <= {2, 3}:
            raise ValueError(
                f"cohort {name!r}: images must all be 2D or all 3D, got {sorted(dims)}D"
            )
        meta = {
            "name": name,
            "description": description,
            "modality": modality,
            "labels": {str(k): v for k, v in (labels or {}).items()},
            "spacing_note": spacing_note,
            "tensorImageSize": f"{dims.pop()}D",
            **extra,
            "cases": entries,
        }
        (tmp / DATASET_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if CASE_ID not in clinical.columns:
            raise ValueError(f"clinical table needs a {CASE_ID!r} column")
        clinical.to_csv(tmp / CLINICAL_CSV, index=False, lineterminator="\n")
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote cohort %s (%d cases)", root, len(entries))
    return root
