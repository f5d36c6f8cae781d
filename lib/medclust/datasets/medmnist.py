"""MedMNIST npz files as medclust cohorts.

MedMNIST v2 (Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D
biomedical image classification", Scientific Data 10:41, 2023) and MedMNIST+ publish each of
their 18 sets as one ``<flag>.npz`` (28 px) or ``<flag>_<size>.npz`` (64, 128, 224 px) holding
``{train,val,test}_images`` (uint8; 2D grey ``(n, H, W)``, 2D colour ``(n, H, W, 3)``, 3D
``(n, D, H, W)``) and ``{train,val,test}_labels`` (``(n, 1)``, or ``(n, 14)`` for the
multi-label ChestMNIST). :func:`medmnist_cohort` writes one NIfTI per image, ``clinical.csv``
with the label and the official split, and a ``dataset.json`` naming source and licence.

Class names, task, description, licence and official MD5 come from ``INFO`` of the ``medmnist``
package (``medmnist/info.py``) where it is installed; it is read as data, without importing
the package (whose ``__init__`` imports torch and creates ``~/.medmnist``). Nothing is ever
downloaded.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import logging
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medclust.cohort import DATASET_JSON, CaseData, write_cohort

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MULTI_LABEL_TASK = "multi-label, binary-class"
CITATION = (
    "Yang J, Shi R, Wei D, Liu Z, Zhao L, Ke B, Pfister H, Ni B. MedMNIST v2 - A large-scale "
    "lightweight benchmark for 2D and 3D biomedical image classification. Scientific Data "
    "10:41, 2023. doi:10.1038/s41597-022-01721-8"
)
ASSUMED_LICENCE = "CC BY 4.0 (assumed: the flag is not in medmnist's INFO; check the source)"

#: Imaging modality of each MedMNIST flag (MedMNIST v2 paper, Table 1).
MODALITY = {
    "pathmnist": "pathology (colon, H&E)",
    "chestmnist": "chest X-ray",
    "dermamnist": "dermatoscope",
    "octmnist": "retinal OCT",
    "pneumoniamnist": "chest X-ray",
    "retinamnist": "fundus camera",
    "breastmnist": "breast ultrasound",
    "bloodmnist": "blood cell microscopy",
    "tissuemnist": "kidney cortex microscopy",
    "organamnist": "abdominal CT (axial slices)",
    "organcmnist": "abdominal CT (coronal slices)",
    "organsmnist": "abdominal CT (sagittal slices)",
    "organmnist3d": "abdominal CT",
    "nodulemnist3d": "chest CT",
    "adrenalmnist3d": "abdominal CT",
    "fracturemnist3d": "chest CT",
    "vesselmnist3d": "brain MRA",
    "synapsemnist3d": "electron microscopy",
}


class MedMNISTError(ValueError):
    """An npz file that cannot be converted; the message names the file and the problem."""


# --------------------------------------------------------------------------- medmnist package


@functools.cache
def medmnist_info() -> tuple[dict, str | None]:
    """``(INFO, version)`` of the installed ``medmnist`` package, or ``({}, None)``.

    ``INFO`` and ``__version__`` are literals in ``medmnist/info.py`` (medmnist 3.0.2), read
    with :func:`ast.literal_eval`; should that layout change, the module is imported instead.
    """
    spec = importlib.util.find_spec("medmnist")  # finds, does not import, a top-level package
    if spec is None or not spec.submodule_search_locations:
        return {}, None
    try:
        source = Path(spec.submodule_search_locations[0], "info.py").read_text(encoding="utf-8")
        found = {}
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name) and target.id in ("INFO", "__version__"):
                    found[target.id] = ast.literal_eval(node.value)
        return dict(found["INFO"]), found.get("__version__")
    except (OSError, SyntaxError, ValueError, KeyError):
        try:
            from medmnist.info import INFO, __version__
        except Exception:  # a broken install: convert from the arrays alone
            log.warning("medmnist is installed but its INFO could not be read")
            return {}, None
        return dict(INFO), __version__


def default_root() -> Path:
    """medmnist's download folder: ``medmnist.info.DEFAULT_ROOT`` where medmnist is already
    imported, else ``~/.medmnist`` (the same rule, ``medmnist.info.get_default_root``),
    read from ``HOME`` at every call."""
    root = getattr(sys.modules.get("medmnist.info"), "DEFAULT_ROOT", None)
    return Path(root) if root else Path(os.path.expanduser("~")) / ".medmnist"


def _download_hint(flag: str, size: int | None) -> str:
    """The medmnist call that downloads the set into its folder (an example if the flag is
    unknown)."""
    cls = medmnist_info()[0].get(flag, {}).get("python_class")
    size_arg = f", size={size}" if size else ""
    call = f"medmnist.{cls or 'BreastMNIST'}(split='train', download=True{size_arg})"
    return f'{"" if cls else "e.g. "}python -c "import medmnist; {call}"'


def find_npz(npz: str | Path) -> Path:
    """The npz file: ``npz`` itself where it exists, else a bare name (``breastmnist``,
    ``breastmnist.npz``, ``adrenalmnist3d_64``) in :func:`default_root`. Never downloads."""
    given = Path(npz)
    if given.is_file():
        return given
    if given.exists():
        raise MedMNISTError(f"{given}: not a file (expected a MedMNIST .npz file)")
    looked = [given.resolve()]
    if given.name == str(npz):  # a bare name: look in medmnist's folder as well
        file_name = given.name if given.suffix == ".npz" else f"{given.name}.npz"
        for name in dict.fromkeys([file_name, file_name.lower()]):
            candidate = default_root() / name
            if candidate.is_file():
                return candidate
            looked.append(candidate)
    flag, size = _flag_and_size(Path(looked[-1]).stem)
    raise FileNotFoundError(
        f"{npz}: MedMNIST file not found; looked in {', '.join(map(str, looked))}. "
        f"medclust never downloads: fetch it with {_download_hint(flag, size)} "
        f"(it lands in {default_root()}) or pass the file's path"
    )


def _flag_and_size(stem: str) -> tuple[str, int | None]:
    """``adrenalmnist3d_64`` -> ``("adrenalmnist3d", 64)``; ``breastmnist`` -> ``(.., None)``."""
    match = re.fullmatch(r"(.+?)_(\d+)", stem.lower())
    return (match[1], int(match[2])) if match else (stem.lower(), None)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- reading the npz


@dataclass(frozen=True)
class _Member:
    """One ``.npy`` array of the npz: its shape and dtype, read from the header alone."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _read_header(zf: zipfile.ZipFile, key: str) -> _Member | None:
    with zf.open(f"{key}.npy") as f:
        reader = _HEADER_READERS.get(np.lib.format.read_magic(f))
        if reader is None:
            return None
        shape, fortran, dtype = reader(f)
    return _Member(tuple(shape), np.dtype(dtype), fortran)


def _members(path: Path) -> dict[str, _Member | None]:
    """The six arrays' headers (None where the npy version is unknown to the header reader),
    checked to be present; errors name the file and what is missing."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n.removesuffix(".npy") for n in zf.namelist()}
            keys = [f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")]
            missing = [k for k in keys if k not in names]
            if missing:
                raise MedMNISTError(
                    f"{path}: not a MedMNIST npz: no {', '.join(missing)} "
                    f"(it holds {', '.join(sorted(names)) or 'nothing'})"
                )
            return {key: _read_header(zf, key) for key in keys}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        if isinstance(exc, MedMNISTError):
            raise
        raise MedMNISTError(f"{path}: not a readable npz file ({exc})") from exc


def _load_array(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise MedMNISTError(f"{path}: {key} is not a readable array ({exc})") from exc


def _iter_images(path: Path, member: _Member | None, key: str) -> Iterator[np.ndarray]:
    """The images of one split one at a time, streamed from the zip (a 224 px set does not
    fit in memory at once); arrays the header reader cannot stream are loaded whole."""
    if member is None or member.fortran:
        yield from _load_array(path, key)
        return
    n, item_shape = member.shape[0], member.shape[1:]
    nbytes = int(np.prod(item_shape)) * member.dtype.itemsize
    i = 0
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
            _HEADER_READERS[np.lib.format.read_magic(f)](f)  # skip the header
            for i in range(n):
                buf = f.read(nbytes)
                if len(buf) != nbytes:
                    raise MedMNISTError(f"{path}: {key} is truncated at image {i} of {n}")
                yield np.frombuffer(buf, dtype=member.dtype).reshape(item_shape)
            f.read()  # to the end, where zipfile checks the CRC
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise MedMNISTError(f"{path}: {key} is corrupt (at image {i} of {n}: {exc})") from exc


@dataclass(frozen=True)
class _Layout:
    """What the arrays hold: 2D or 3D, colour channels, per-split counts and labels."""

    members: dict[str, _Member | None]
    ndim: int
    channels: int
    image_shape: tuple[int, ...]
    counts: dict[str, int]
    labels: dict[str, np.ndarray]


def _image_layout(path: Path, members: dict, flag_is_3d: bool) -> tuple[int, int, tuple, dict]:
    """``(ndim, channels, image shape, count per split)`` of the images, checked."""
    shapes, dtypes = {}, {}
    for split in SPLITS:
        key = f"{split}_images"
        member = members[key] or _load_array(path, key)  # an npy version without a reader
        shapes[split], dtypes[split] = tuple(member.shape), np.dtype(member.dtype)
    bad = {s: str(d) for s, d in dtypes.items() if d.kind not in "iu"}
    if bad:
        raise MedMNISTError(f"{path}: images must be integers (MedMNIST stores uint8), got {bad}")
    per_image = {shape[1:] for shape in shapes.values()}
    if len(per_image) != 1:
        raise MedMNISTError(
            f"{path}: image shapes differ between splits: "
            + ", ".join(f"{s}_images {shapes[s]}" for s in SPLITS)
        )
    image_shape = per_image.pop()
    counts = {split: shape[0] for split, shape in shapes.items()}
    if len(image_shape) == 2:
        return 2, 1, image_shape, counts
    if len(image_shape) == 3 and image_shape[-1] == 3 and not flag_is_3d:
        return 2, 3, image_shape, counts
    if len(image_shape) == 3:
        return 3, 1, image_shape, counts
    raise MedMNISTError(
        f"{path}: train_images of shape {shapes['train']}: expected (n, H, W), (n, H, W, 3) "
        "or (n, D, H, W)"
    )


def _labels(path: Path, counts: dict[str, int], task: str | None) -> dict[str, np.ndarray]:
    """One integer label per image; multi-label sets (ChestMNIST) are refused, by INFO's task
    or by the labels' shape ``(n, k)`` with ``k > 1``."""
    labels = {}
    for split in SPLITS:
        key = f"{split}_labels"
        array = _load_array(path, key)
        if (array.ndim == 2 and array.shape[1] > 1) or task == MULTI_LABEL_TASK:
            raise MedMNISTError(
                f"{path}: a multi-label set ({key} of shape {array.shape}"
                + (f", task {task!r}" if task else "")
                + "): a medclust cohort holds one label per case; convert a single-label set"
            )
        if array.ndim not in (1, 2) or array.shape[0] != counts[split]:
            raise MedMNISTError(
                f"{path}: {key} of shape {array.shape} does not fit {counts[split]} images "
                "(expected (n,) or (n, 1))"
            )
        if array.dtype.kind not in "iu":
            raise MedMNISTError(f"{path}: {key} must hold integers, got {array.dtype}")
        labels[split] = array.reshape(-1).astype(np.int64)
    return labels


def _read_layout(path: Path, info: dict) -> _Layout:
    members = _members(path)
    flag_is_3d = str(info.get("python_class", "")).endswith("3D") or (
        not info and _flag_and_size(path.stem)[0].endswith("3d")
    )
    ndim, channels, image_shape, counts = _image_layout(path, members, flag_is_3d)
    labels = _labels(path, counts, info.get("task"))
    return _Layout(members, ndim, channels, image_shape, counts, labels)


# --------------------------------------------------------------------------- writing


def _check_out(out: Path, force: bool) -> None:
    """Refuse to replace anything without ``force``, and with ``force`` anything but a
    cohort folder (so ``--out data --force`` cannot wipe a folder of cohorts)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise FileExistsError(
            f"{out}: folder exists and is not empty; nothing was written. "
            "Choose another folder, or pass --force (force=True) to replace it"
        )
    if not (out / DATASET_JSON).is_file():
        raise FileExistsError(
            f"{out}: not a cohort folder (no {DATASET_JSON}); --force replaces only a cohort "
            "folder, never other files: choose another folder"
        )


def _class_names(path: Path, flag_info: dict, labels: dict[str, np.ndarray]) -> dict[int, str]:
    values = sorted({int(v) for array in labels.values() for v in np.unique(array)})
    if not flag_info:
        return {v: str(v) for v in values}
    names = {int(k): str(v) for k, v in flag_info["label"].items()}
    unknown = [v for v in values if v not in names]
    if unknown:
        raise MedMNISTError(
            f"{path}: label value(s) {unknown} are not classes of {flag_info['python_class']} "
            f"({names})"
        )
    return names


def _cases(path: Path, layout: _Layout, width: int) -> Iterator[CaseData]:
    spacing = (1.0,) * (layout.ndim + (layout.channels > 1))
    for split in SPLITS:
        key = f"{split}_images"
        log.info("%s: converting %d %s images", path.name, layout.counts[split], split)
        for i, image in enumerate(_iter_images(path, layout.members[key], key)):
            yield CaseData(id=f"{split}_{i:0{width}d}", image=image, spacing=spacing)


def medmnist_cohort(
    npz: str | Path, out: str | Path, *, name: str | None = None, force: bool = False
) -> Path:
    """Convert one official MedMNIST npz (any of the 18 sets, 2D or 3D, any size) into a
    medclust cohort in ``out`` and return ``out``.

    ``npz`` is a path, or a bare name looked up in medmnist's folder (:func:`find_npz`).
    Every image becomes ``images/<split>_<index>.nii.gz`` with its integers as stored and
    spacing 1.0 per axis (MedMNIST records no physical spacing); ``clinical.csv`` holds
    ``case_id, label, label_name, split, split_index``. ``name`` defaults to the file's stem.
    An existing non-empty ``out`` is replaced only with ``force`` and only if it is a cohort.
    """
    path = find_npz(npz)
    out = Path(out)
    flag, size_in_name = _flag_and_size(path.stem)
    info, version = medmnist_info()
    flag_info = info.get(flag, {})
    layout = _read_layout(path, flag_info)
    class_names = _class_names(path, flag_info, layout.labels)
    _check_out(out, force)

    size = layout.image_shape[0]
    official_md5 = flag_info.get("MD5" if size == 28 else f"MD5_{size}")
    md5 = _md5(path)
    if not flag_info:
        log.warning(
            "%s: flag %r is not a MedMNIST set known to medmnist %s; converting from the "
            "arrays alone (class names are the label values, licence assumed CC BY 4.0)",
            path,
            flag,
            version or "(not installed)",
        )
    elif official_md5 and md5 != official_md5:
        log.warning(
            "%s: MD5 %s differs from the official %s (a re-saved copy?); converting anyway",
            path,
            md5,
            official_md5,
        )
    for split, expected in flag_info.get("n_samples", {}).items():
        if layout.counts.get(split) != expected:
            log.warning(
                "%s: %d %s images, the official set has %d",
                path,
                layout.counts.get(split),
                split,
                expected,
            )
    if size_in_name is not None and size_in_name != size:
        log.warning("%s: the name says %d px, the images are %d px", path, size_in_name, size)

    width = max(5, len(str(max(layout.counts.values()) - 1)))
    clinical = pd.DataFrame(
        [
            {
                "case_id": f"{split}_{i:0{width}d}",
                "label": int(label),
                "label_name": class_names.get(int(label), str(label)),
                "split": split,
                "split_index": i,
            }
            for split in SPLITS
            for i, label in enumerate(layout.labels[split])
        ]
    )
    shape = " x ".join(map(str, layout.image_shape))
    extra = {"channels": layout.channels} if layout.channels > 1 else {}
    written = write_cohort(
        out,
        _cases(path, layout, width),
        clinical,
        name=name or path.stem,
        modality=MODALITY.get(flag, "unknown (not a MedMNIST flag)"),
        description=flag_info.get(
            "description", f"MedMNIST-format images from {path.name} (flag {flag!r} unknown)"
        ),
        spacing_note=(
            f"MedMNIST records no physical spacing: 1.0 per axis (pixel units, not mm). "
            f"MedMNIST resized the source images to {shape} "
            f"({'colour, RGB on the last axis' if layout.channels > 1 else 'grey'}); "
            "axes as stored in the npz"
        ),
        **extra,
        source={
            "dataset": "MedMNIST v2",
            "flag": flag,
            "file": path.name,
            "md5": md5,
            "official_md5": official_md5,
            "md5_matches": None if official_md5 is None else md5 == official_md5,
            "medmnist_info": f"medmnist {version}" if version else None,
        },
        licence=flag_info.get("license", ASSUMED_LICENCE),
        citation=CITATION,
        classes={str(k): v for k, v in class_names.items()},
        task=flag_info.get("task", "unknown"),
        clinical_label="label",
    )
    log.info("%s -> %s (%d cases)", path, written, len(clinical))
    return written
