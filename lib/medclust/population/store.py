"""The files of the feature stage: one compressed ``<case_id>.npz`` per case whose bytes depend
only on its features, ``index.csv`` (one row per case), and reading them back."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medclust.features.bovw import MICRO_MAX_DIAMETER_MM

#: Columns of ``index.csv`` (one row per case, cohort order).
INDEX_COLUMNS = (
    "case_id",
    "file",
    "n_haralick",
    "n_sift",
    "n_micro_sift",
    "n_macro_sift",
    "template_index",
    "ncc",
    "lung_dice",
    "lung_voxels",
)
INDEX_CSV = "index.csv"
#: Arrays of every per-case file (and of the dict :func:`extract_volume` returns).
ARRAY_KEYS = (
    "haralick",
    "haralick_pos",
    "haralick_vox",
    "sift",
    "sift_pos",
    "sift_vox",
    "sift_diameter_mm",
    "spacing",
    "ncc_all",
)
SCALAR_KEYS = ("case_id", "template_index", "ncc", "lung_dice", "lung_voxels")


def npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    """A compressed ``.npz`` (readable by :func:`numpy.load`) whose bytes depend only on the
    arrays: zip entries carry a fixed date, unlike :func:`numpy.savez_compressed`'s."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def case_file(case_id: str) -> str:
    return f"{case_id}.npz"


def index_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    diam = np.asarray(rec["sift_diameter_mm"])
    n_micro = int((diam <= MICRO_MAX_DIAMETER_MM).sum())
    return {
        "case_id": rec["case_id"],
        "file": case_file(rec["case_id"]),
        "n_haralick": int(len(rec["haralick"])),
        "n_sift": int(len(diam)),
        "n_micro_sift": n_micro,
        "n_macro_sift": int(len(diam)) - n_micro,
        "template_index": int(rec["template_index"]),
        "ncc": float(rec["ncc"]),
        "lung_dice": float(rec["lung_dice"]),
        "lung_voxels": int(rec["lung_voxels"]),
    }


def load_features(out_dir: str | Path) -> list[dict[str, Any]]:
    """Read back the per-case records written by :func:`extract_cohort`, in index order (the
    keys of :func:`extract_volume`; scalars as Python values)."""
    out_dir = Path(out_dir)
    index_path = out_dir / INDEX_CSV
    if not index_path.is_file():
        raise ValueError(f"{index_path}: index is missing (run extract_cohort first)")
    index = pd.read_csv(index_path, dtype={"case_id": str})
    records = []
    for case_id, name in zip(index["case_id"], index["file"], strict=True):
        path = out_dir / name
        if not path.is_file():
            raise ValueError(f"{path}: feature file of case {case_id!r} is missing")
        with np.load(path, allow_pickle=False) as data:
            rec = {k: data[k] for k in data.files}
        for key in SCALAR_KEYS:
            rec[key] = rec[key].item()
        records.append(rec)
    return records
