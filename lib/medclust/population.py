"""Per-volume local features of a routine CT population, extracted in parallel with Dask.

Study 05 (population clustering of 7,812 routine lung CT volumes,
/work/shared/papers/004_8f822e2a6a11f707.txt, Sec. 2 "Identification of clusters" and Fig. 1a):
every volume is spatially normalised to a reference atlas through the best of several
templates (Eq. (1), :mod:`medclust.registration`), then local features are extracted "at
corresponding anatomical regions": densely sampled Haralick texture (item 1) and 3D SIFT
keypoints (item 2), each with its position in the atlas space (item 3, the input of the
spatio-visual vocabularies of :mod:`medclust.features.bovw`), restricted to the lung ("we
restrict the area of interest to the lung, so that only features extracted in the lung are
used", Sec. 3).

:func:`extract_volume` does one volume:

1. normalise: ``TemplateSet.normalize`` picks the template of maximal NCC (Eq. (1));
2. lung mask: the atlas lung labels (``lung_labels``) mapped onto the volume's grid;
3. dense Haralick (:func:`medclust.features.glcm.dense_haralick`) inside the lung mask: HU
   clipped to ``[hu_min, hu_max]`` and binned into ``haralick_levels`` bins of equal width (IBSI
   fixed bin size with one range for the whole cohort), windows of ``haralick_window_mm`` on a
   grid of ``haralick_step_mm``, Haralick's f1-f13 of the 13-direction merged GLCM;
4. 3D SIFT (:class:`medclust.features.sift3d.SIFT3D`) on the whole image with HU mapped from
   ``[hu_min, hu_max]``, keypoints kept within ``sift_mask_margin_mm`` of the lung mask (nodules
   and effusions lie on the lung boundary), at most ``max_keypoints``, strongest first;
5. atlas positions (mm) of the Haralick window centres and of the keypoints.

The micro/macro split of the keypoints (<= 2 cm diameter) happens in the vocabulary step
(:func:`medclust.features.bovw.local_features`) from the stored ``sift_diameter_mm``.

Scale of the demo cohort. The routine_ct phantom has 7.5 x 7.5 x 8 mm voxels (the paper's
volumes: <= 3 mm slices, registered at 2 mm). :class:`SIFT3D`'s default first scale (1.6
voxels = 12 mm) gives keypoints of >= ~60 mm diameter, i.e. no microSIFT words at all. The
default ``sift_sigma0_mm = 4.0`` (just above the 3.75 mm blur an input of 7.5 mm voxels already
has) gives keypoints down to ~17 mm diameter: on the demo cohort about three quarters of the
keypoints near the lungs are micro (<= 20 mm) and a quarter macro
(``benchmarks/population_benchmark.py`` reports the share). On a cohort with finer voxels the
same value just starts the scale space finer.

:func:`extract_cohort` runs :func:`extract_volume` over a cohort: serially, on a local Dask
cluster (:class:`distributed.LocalCluster`, processes with ``threads_per_worker`` threads each)
or on a running scheduler (``Client(address)``; the workers must see the same file system).
The :class:`~medclust.registration.TemplateSet` is built once, in the calling process, and
scattered to every worker once (``Client.scatter(..., broadcast=True)``). Each case is loaded,
processed and written by its task: one compressed ``<case_id>.npz`` per case (zip entries
without time stamps, so equal features give equal bytes, and written under a temporary name
then renamed) and, once every case is done, ``index.csv``. Every task runs with BLAS/OpenMP
limited to one thread, as Dask's workers are, so all three modes give identical files. A case
that fails stops the run with :class:`CaseExtractionError` naming the case.

Command line (the DVC stage of study 05)::

    python -m medclust.population --cohort data/routine_ct --atlas data/routine_ct_atlas \\
        --out features/routine_ct --params params.yaml --section population_features \\
        [--scheduler ADDR | --serial] [--workers N]
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
import time
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from medclust.cohort import Cohort, Volume, load_cohort
from medclust.features.bovw import MICRO_MAX_DIAMETER_MM
from medclust.features.glcm import HARALICK_FEATURES, dense_haralick
from medclust.features.sift3d import SIFT3D
from medclust.outputs import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

#: Parameters of :func:`extract_volume` and their defaults (the ``population_features`` block
#: of params.yaml holds a subset of these names).
DEFAULTS: dict[str, Any] = {
    "haralick_window_mm": 30.0,  # window edge: 5 x 5 x 3 voxels at 7.5 x 7.5 x 8 mm
    "haralick_step_mm": 15.0,  # grid step of the window centres
    "haralick_levels": 56,  # grey levels over [hu_min, hu_max]: 25 HU bins (IBSI's CT choice)
    "hu_min": -1000.0,
    "hu_max": 400.0,
    "sift_sigma0_mm": 4.0,  # first scale of the SIFT scale space (module docstring)
    "sift_contrast_threshold": 0.02,  # |DoG| threshold for HU mapped from [hu_min, hu_max]
    "sift_mask_margin_mm": 10.0,  # keypoints within this distance of the lung mask count
    "max_keypoints": 400,  # strongest keypoints kept per volume
    "lung_labels": (2, 3),  # atlas labels of the lungs (routine_ct: right and left lung)
    "n_templates": 5,  # templates of the atlas cohort used (the first n); 0 = all
    "nonlinear": True,  # non-linear registration after the affine one
    "registration_seed": 0,  # seeds the random metric sampling of the registrations
}

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


class CaseExtractionError(RuntimeError):
    """Feature extraction of one case failed; the message starts with the case id."""


# --------------------------------------------------------------------------- parameters


def _fail(name: str, msg: str, value: Any) -> ValueError:
    return ValueError(f"parameter {name} {msg}, got {value!r}")


def _number(p: Mapping, name: str, minimum: float | None = None, strict: bool = True) -> float:
    value = p[name]
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise _fail(name, "must be a number", value)
    v = float(value)
    if not math.isfinite(v):
        raise _fail(name, "must be finite", value)
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise _fail(name, f"must be {'>' if strict else '>='} {minimum:g}", value)
    return v


def _integer(p: Mapping, name: str, minimum: int) -> int:
    value = p[name]
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise _fail(name, f"must be an integer >= {minimum}", value)
    return int(value)


def validate_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULTS` updated by ``params``, every value checked. Raises ``ValueError``
    naming the parameter (an unknown name, a wrong type or a value out of range)."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    out = {
        "haralick_window_mm": _number(p, "haralick_window_mm", 0.0),
        "haralick_step_mm": _number(p, "haralick_step_mm", 0.0),
        "haralick_levels": _integer(p, "haralick_levels", 2),
        "hu_min": _number(p, "hu_min"),
        "hu_max": _number(p, "hu_max"),
        "sift_sigma0_mm": _number(p, "sift_sigma0_mm", 0.0),
        "sift_contrast_threshold": _number(p, "sift_contrast_threshold", 0.0, strict=False),
        "sift_mask_margin_mm": _number(p, "sift_mask_margin_mm", 0.0, strict=False),
        "max_keypoints": _integer(p, "max_keypoints", 1),
        "n_templates": _integer(p, "n_templates", 0),
        "registration_seed": _integer(p, "registration_seed", 0),
    }
    if out["hu_max"] <= out["hu_min"]:
        raise _fail("hu_max", f"must exceed hu_min={out['hu_min']:g}", p["hu_max"])
    labels = p["lung_labels"]
    if (
        isinstance(labels, str | bytes)
        or not isinstance(labels, Sequence | np.ndarray)
        or len(labels) == 0
        or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in labels
        )
    ):
        raise _fail("lung_labels", "must be a non-empty list of positive integer labels", labels)
    out["lung_labels"] = tuple(int(v) for v in labels)
    if not isinstance(p["nonlinear"], bool | np.bool_):
        raise _fail("nonlinear", "must be true or false", p["nonlinear"])
    out["nonlinear"] = bool(p["nonlinear"])
    return out


def read_params(path: str | Path, section: str) -> dict[str, Any]:
    """The validated parameters of block ``section`` of a params.yaml file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: params file is missing")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict) or section not in doc:
        raise ValueError(f"{path}: no block {section!r}")
    block = doc[section]
    if not isinstance(block, dict):
        raise ValueError(f"{path}: block {section!r} must be a mapping of parameters")
    try:
        return validate_params(block)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- one volume


def _registration():
    # Imported on use: the registration module wraps SimpleITK, which only this step needs.
    from medclust import registration

    return registration


def hu_levels(image: np.ndarray, mask: np.ndarray, hu_min: float, hu_max: float, n_levels: int):
    """Grey levels ``1..n_levels`` inside ``mask`` (0 outside): bins of width
    ``(hu_max - hu_min) / n_levels`` from ``hu_min``, intensities outside the range clipped into
    the first or last bin (IBSI "fixed bin size" with one range for the whole cohort)."""
    width = (hu_max - hu_min) / n_levels
    binned = np.floor((np.asarray(image, np.float64) - hu_min) / width).astype(np.int64) + 1
    return np.where(mask, np.clip(binned, 1, n_levels), 0).astype(np.int32)


def _near_mask(mask: np.ndarray, spacing: Sequence[float], margin_mm: float) -> np.ndarray:
    if margin_mm <= 0 or not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask, sampling=tuple(spacing)) <= margin_mm


def extract_volume(volume: Any, template_set: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """Local features of one volume with their atlas positions (module docstring, steps 1-5).

    Parameters
    ----------
    volume : :class:`medclust.cohort.Volume` (or a ``registration.Image3D``): the image in HU,
        its spacing and, optionally, a labelmap (used only to report the lung Dice).
    template_set : a built :class:`medclust.registration.TemplateSet`.
    params : parameters (names of :data:`DEFAULTS`; validated here).

    Returns
    -------
    dict of plain numpy values:

    * ``haralick`` (n, 13) float64 -- Haralick f1-f13 (:data:`HARALICK_FEATURES`) of the windows
      centred at ``haralick_vox`` (n, 3) int voxel indices, whose atlas positions (mm) are
      ``haralick_pos`` (n, 3); windows without a voxel pair in the lung are dropped;
    * ``sift`` (m, 160) float32 descriptors of the keypoints at ``sift_vox`` (m, 3) float voxel
      coordinates, atlas positions ``sift_pos`` (m, 3) mm and ``sift_diameter_mm`` (m,);
    * ``spacing`` (3,), ``template_index`` (int), ``ncc`` (float, of the chosen template),
      ``ncc_all`` (E,), ``lung_voxels`` (int, size of the lung mask) and ``lung_dice`` (float,
      Dice of the lung mask against the labelmap's ``lung_labels``, 1 when both are empty;
      NaN without a labelmap);
    * ``case_id`` (str, "" when the volume has none).
    """
    p = validate_params(params)
    reg = _registration()
    image3d = volume if isinstance(volume, reg.Image3D) else reg.Image3D.from_volume(volume)
    image = np.asarray(image3d.array, dtype=np.float32)
    spacing = tuple(float(s) for s in image3d.spacing)
    labelmap = getattr(image3d, "labelmap", None)
    case_id = str(getattr(volume, "case_id", "") or "")

    norm = template_set.normalize(image3d)
    lung = np.asarray(reg.lung_mask(norm, lung_labels=p["lung_labels"]), dtype=bool)
    if not lung.any():
        log.warning("%s: the atlas lung mask is empty on this volume: no local features", case_id)

    # Dense Haralick inside the lung (study 05, Sec. 2, "Feature Extraction" 1).
    n_feat = len(HARALICK_FEATURES)
    centres, values = np.empty((0, 3), np.int64), np.empty((0, n_feat))
    if lung.any():
        levels = hu_levels(image, lung, p["hu_min"], p["hu_max"], p["haralick_levels"])
        centres, values = dense_haralick(
            levels,
            lung,
            spacing,
            window_mm=p["haralick_window_mm"],
            step_mm=p["haralick_step_mm"],
            n_levels=p["haralick_levels"],
        )
        defined = ~np.isnan(values).any(axis=1)
        centres, values = centres[defined], values[defined]

    # 3D SIFT near the lung (item 2); diameters decide micro/macro in the vocabulary step.
    sift = SIFT3D(
        sigma0_mm=p["sift_sigma0_mm"],
        contrast_threshold=p["sift_contrast_threshold"],
        max_keypoints=p["max_keypoints"],
        intensity_range=(p["hu_min"], p["hu_max"]),
    )
    near = _near_mask(lung, spacing, p["sift_mask_margin_mm"])
    if near.any():
        keypoints, descriptors = sift.detect_and_describe(image, spacing, mask=near)
        sift_vox = keypoints[["x", "y", "z"]].to_numpy(dtype=np.float64)
        diameters = keypoints["diameter_mm"].to_numpy(dtype=np.float64)
    else:
        sift_vox, diameters = np.empty((0, 3)), np.empty(0)
        descriptors = np.zeros((0, sift.descriptor_length), np.float32)

    def atlas_mm(points: np.ndarray) -> np.ndarray:
        if len(points) == 0:
            return np.empty((0, 3))
        return np.asarray(norm.to_atlas_mm(np.asarray(points, np.float64)), dtype=np.float64)

    true_lung = None if labelmap is None else np.isin(np.asarray(labelmap), p["lung_labels"])
    return {
        "case_id": case_id,
        "haralick": values.astype(np.float64),
        "haralick_pos": atlas_mm(centres),
        "haralick_vox": centres.astype(np.int64),
        "sift": np.asarray(descriptors, dtype=np.float32),
        "sift_pos": atlas_mm(sift_vox),
        "sift_vox": sift_vox,
        "sift_diameter_mm": diameters,
        "spacing": np.asarray(spacing, dtype=np.float64),
        "template_index": int(norm.template_index),
        "ncc": float(norm.ncc),
        "ncc_all": np.asarray(norm.ncc_all, dtype=np.float64),
        "lung_voxels": int(lung.sum()),
        "lung_dice": float("nan") if true_lung is None else reg.dice(lung, true_lung),
    }


# --------------------------------------------------------------------------- files


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


def _index_row(rec: Mapping[str, Any]) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- cohort


def build_template_set(atlas_root: str | Path, params: Mapping[str, Any]):
    """The :class:`~medclust.registration.TemplateSet` of an atlas cohort (study 05, Fig. 2):
    the case of role ``atlas`` (clinical.csv) and the first ``n_templates`` cases of role
    ``template`` (all when 0), as :mod:`medclust_phantoms.routine_ct_atlas` writes them. Each
    template is registered to the atlas once, initialised by its landmarks where clinical.csv
    has ``lm_<name>_x/_y/_z`` columns (the paper's "manually annotated landmarks"), affine then
    (``nonlinear``) non-linear."""
    p = validate_params(params)
    reg = _registration()
    cohort = load_cohort(atlas_root, ndim=3)
    clinical = cohort.clinical
    if "role" not in clinical.columns:
        raise ValueError(f"{atlas_root}: clinical.csv has no 'role' column (atlas/template)")
    roles = clinical["role"].astype(str)
    atlas_ids = [c for c in cohort.case_ids if roles[c] == "atlas"]
    template_ids = [c for c in cohort.case_ids if roles[c] == "template"]
    if len(atlas_ids) != 1:
        raise ValueError(f"{atlas_root}: needs exactly one case of role 'atlas', got {atlas_ids}")
    if p["n_templates"]:
        if p["n_templates"] > len(template_ids):
            raise ValueError(
                f"parameter n_templates={p['n_templates']} exceeds the {len(template_ids)} "
                f"templates of {atlas_root}"
            )
        template_ids = template_ids[: p["n_templates"]]
    if not template_ids:
        raise ValueError(f"{atlas_root}: no case of role 'template'")
    landmarks = {}
    if any(str(c).startswith("lm_") for c in clinical.columns):
        table = clinical.reset_index()
        landmarks = {
            "atlas_landmarks": reg.read_landmarks(table, atlas_ids[0]),
            "template_landmarks": [reg.read_landmarks(table, t) for t in template_ids],
        }
    start = time.perf_counter()
    template_set = reg.TemplateSet.build(
        reg.Image3D.from_volume(cohort.load(atlas_ids[0])),
        [reg.Image3D.from_volume(cohort.load(t)) for t in template_ids],
        nonlinear=p["nonlinear"],
        seed=p["registration_seed"],
        **landmarks,
    )
    log.info(
        "template set: atlas + %d templates (%s) built in %.1f s",
        len(template_ids),
        "landmark-initialised" if landmarks else "no landmarks",
        time.perf_counter() - start,
    )
    return template_set


def _load_case(cohort: Cohort, case_id: str) -> Volume:
    return cohort.load(case_id)


def _extract_case(
    cohort: Cohort, case_id: str, template_set: Any, params: Mapping[str, Any], out_dir: str
) -> dict[str, Any]:
    """One task: load, extract (one BLAS/OpenMP thread), write the npz; returns its index row."""
    from threadpoolctl import threadpool_limits

    try:
        start = time.perf_counter()
        with threadpool_limits(limits=1):
            rec = extract_volume(_load_case(cohort, case_id), template_set, params)
        rec["case_id"] = case_id
        atomic_write_bytes(
            Path(out_dir) / case_file(case_id),
            npz_bytes({k: rec[k] for k in (*SCALAR_KEYS, *ARRAY_KEYS)}),
        )
        row = _index_row(rec)
        log.debug("%s: %.2f s", case_id, time.perf_counter() - start)
        return row
    except CaseExtractionError:
        raise
    except Exception as exc:
        raise CaseExtractionError(f"case {case_id!r}: {type(exc).__name__}: {exc}") from exc


def _progress(iterable, total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, unit="volume")


def _run_serial(cohort, case_ids, template_set, params, out_dir, progress) -> dict[str, dict]:
    rows = {}
    for case_id in _progress(case_ids, len(case_ids), progress, "features (serial)"):
        rows[case_id] = _extract_case(cohort, case_id, template_set, params, str(out_dir))
    return rows


def _run_dask(client, cohort, case_ids, template_set, params, out_dir, progress) -> dict:
    from distributed import as_completed

    # Once per worker: the template set and the cohort table travel to every worker once.
    shared_ts = client.scatter(template_set, broadcast=True, hash=False)
    shared_cohort = client.scatter(cohort, broadcast=True, hash=False)
    run = uuid.uuid4().hex[:8]
    futures = {
        client.submit(
            _extract_case,
            shared_cohort,
            case_id,
            shared_ts,
            params,
            str(out_dir),
            key=f"medclust-features-{run}-{case_id}",
            pure=False,
        ): case_id
        for case_id in case_ids
    }
    rows = {}
    try:
        done = as_completed(list(futures))
        for future in _progress(done, len(futures), progress, "features (dask)"):
            case_id = futures[future]
            try:
                rows[case_id] = future.result()
            except CaseExtractionError:
                raise
            except Exception as exc:  # e.g. a worker that died on this case
                raise CaseExtractionError(f"case {case_id!r}: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        client.cancel(list(futures))
        raise
    return rows


def extract_cohort(
    cohort_root: str | Path,
    atlas_root: str | Path,
    out_dir: str | Path,
    params: Mapping[str, Any] | None = None,
    mode: str = "local",
    n_workers: int = 2,
    threads_per_worker: int = 1,
    progress: bool = True,
    template_set: Any = None,
    case_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """:func:`extract_volume` for every case of a cohort; writes ``out_dir/<case_id>.npz`` and
    ``out_dir/index.csv`` (:data:`INDEX_COLUMNS`) and returns the index.

    ``mode``: ``"serial"`` (a plain loop in this process), ``"local"`` (a
    :class:`distributed.LocalCluster` of ``n_workers`` processes with ``threads_per_worker``
    threads, closed afterwards) or a scheduler address such as ``"tcp://10.0.0.5:8786"``
    (``distributed.Client(address)``; its workers must read the cohort and write ``out_dir``
    at the same paths). All three give identical files. ``template_set``: a prebuilt
    :class:`~medclust.registration.TemplateSet` (default: built from ``atlas_root`` with
    :func:`build_template_set`). ``case_ids``: a subset of the cohort's cases (default: all, in
    cohort order). Raises :class:`CaseExtractionError` naming the first case that fails (the
    index is then not written).
    """
    p = validate_params(params)
    if not isinstance(mode, str) or not mode:
        raise ValueError(f"mode must be 'serial', 'local' or a scheduler address, got {mode!r}")
    for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    # Absolute paths: the tasks may run in worker processes with another working directory.
    cohort = load_cohort(Path(cohort_root).resolve(), ndim=3)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if template_set is None:
        template_set = build_template_set(atlas_root, p)
    if case_ids is None:
        case_ids = cohort.case_ids
    else:
        case_ids = [str(c) for c in case_ids]
        missing = sorted(set(case_ids) - set(cohort.case_ids))
        if missing or not case_ids:
            raise ValueError(f"case_ids must be cases of {cohort_root}, unknown: {missing[:5]}")
    start = time.perf_counter()
    if mode == "serial":
        rows = _run_serial(cohort, case_ids, template_set, p, out_dir, progress)
    else:
        from distributed import Client, LocalCluster

        if mode == "local":
            with (
                LocalCluster(
                    n_workers=int(n_workers),
                    threads_per_worker=int(threads_per_worker),
                    processes=True,
                    dashboard_address="127.0.0.1:0",  # a free port: no clash with other clusters
                    silence_logs=logging.WARNING,
                ) as cluster,
                Client(cluster) as client,
            ):
                rows = _run_dask(client, cohort, case_ids, template_set, p, out_dir, progress)
        else:
            with Client(mode) as client:
                rows = _run_dask(client, cohort, case_ids, template_set, p, out_dir, progress)
    index = pd.DataFrame([rows[c] for c in case_ids], columns=list(INDEX_COLUMNS))
    atomic_write_text(out_dir / INDEX_CSV, index.to_csv(index=False, lineterminator="\n"))
    elapsed = time.perf_counter() - start
    log.info(
        "features of %d volumes in %.1f s (%.1f volumes/min, mode %s) -> %s",
        len(case_ids),
        elapsed,
        60.0 * len(case_ids) / max(elapsed, 1e-9),
        mode,
        out_dir,
    )
    return index


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medclust.population",
        description="Per-volume local features (dense Haralick, 3D SIFT, atlas positions) of "
        "a routine CT cohort after multi-template normalisation (study 05).",
    )
    parser.add_argument("--cohort", required=True, help="cohort folder (dataset.json)")
    parser.add_argument("--atlas", required=True, help="atlas + templates cohort folder")
    parser.add_argument("--out", required=True, help="output folder for <case>.npz + index.csv")
    parser.add_argument("--params", default="params.yaml", help="params file (YAML)")
    parser.add_argument("--section", default="population_features", help="block of --params")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler")
    where.add_argument("--serial", action="store_true", help="no dask: a plain loop")
    parser.add_argument("--workers", type=int, default=2, help="local dask workers (default 2)")
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import distributed  # noqa: F401  (configures its loggers on import; quieten them after)

    logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        params = read_params(args.params, args.section)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    mode = "serial" if args.serial else (args.scheduler or "local")
    try:
        extract_cohort(
            args.cohort,
            args.atlas,
            args.out,
            params,
            mode=mode,
            n_workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            progress=not args.no_progress,
        )
    except (OSError, ValueError) as exc:  # CohortError is a ValueError: it names the file
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    # Run through the importable module, so that dask pickles the task functions by reference
    # to medclust.population rather than to __main__.
    from medclust import population as _population

    sys.exit(_population.main())
