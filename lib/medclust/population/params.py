"""The parameters of the feature stage: :data:`DEFAULTS` for :func:`extract_volume`, and the
``population_features`` block of params.yaml, which also names the stage's folders
(:data:`PATH_KEYS`: the cohort, the atlas cohort and the output folder)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclust.validation import check_int, check_number

#: Parameters of :func:`extract_volume` and their defaults (the ``population_features`` block
#: of params.yaml holds a subset of these names, besides :data:`PATH_KEYS`).
DEFAULTS: dict[str, Any] = {
    "haralick_window_mm": 30.0,  # window edge: 5 x 5 x 3 voxels at 7.5 x 7.5 x 8 mm
    "haralick_step_mm": 15.0,  # grid step of the window centres
    "haralick_levels": 56,  # grey levels over [hu_min, hu_max]: 25 HU bins (IBSI's CT choice)
    "hu_min": -1000.0,
    "hu_max": 400.0,
    "sift_sigma0_mm": 4.0,  # first scale of the SIFT scale space (medclust.population.extract)
    "sift_contrast_threshold": 0.02,  # |DoG| threshold for HU mapped from [hu_min, hu_max]
    "sift_mask_margin_mm": 10.0,  # keypoints within this distance of the lung mask count
    "max_keypoints": 400,  # strongest keypoints kept per volume
    "lung_labels": (2, 3),  # atlas labels of the lungs (routine_ct: right and left lung)
    "n_templates": 5,  # templates of the atlas cohort used (the first n); 0 = all
    "nonlinear": True,  # non-linear registration after the affine one
    "registration_seed": 0,  # seeds the random metric sampling of the registrations
}

#: Folders of the stage, keys of the params block besides :data:`DEFAULTS`' names: the cohort
#: (``--cohort``), the atlas + templates cohort (``--atlas``) and the output (``--out``).
PATH_KEYS = ("cohort", "atlas", "out")


def _fail(name: str, msg: str, value: Any) -> ValueError:
    return ValueError(f"parameter {name} {msg}, got {value!r}")


def validate_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULTS` updated by ``params``, every value checked. Raises ``ValueError``
    naming the parameter (an unknown name, a wrong type or a value out of range)."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **params}

    def number(name: str, low: float = -np.inf, strict: bool = True) -> float:
        return check_number(f"parameter {name}", p[name], low, low_open=strict)

    def integer(name: str, minimum: int) -> int:
        return check_int(f"parameter {name}", p[name], minimum)

    out = {
        "haralick_window_mm": number("haralick_window_mm", 0.0),
        "haralick_step_mm": number("haralick_step_mm", 0.0),
        "haralick_levels": integer("haralick_levels", 2),
        "hu_min": number("hu_min"),
        "hu_max": number("hu_max"),
        "sift_sigma0_mm": number("sift_sigma0_mm", 0.0),
        "sift_contrast_threshold": number("sift_contrast_threshold", 0.0, strict=False),
        "sift_mask_margin_mm": number("sift_mask_margin_mm", 0.0, strict=False),
        "max_keypoints": integer("max_keypoints", 1),
        "n_templates": integer("n_templates", 0),
        "registration_seed": integer("registration_seed", 0),
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


def read_section(path: str | Path, section: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Block ``section`` of a params.yaml file as ``(paths, params)``: the folders it names
    (the :data:`PATH_KEYS` it has, each a non-empty string) and its validated parameters
    (:func:`validate_params`). Errors name the file, the block and the key."""
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
    paths = {key: block[key] for key in PATH_KEYS if key in block}
    for key, value in paths.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}: {section}.{key} must be a folder path, got {value!r}")
    try:
        params = validate_params({k: v for k, v in block.items() if k not in PATH_KEYS})
    except ValueError as exc:
        raise ValueError(f"{path}: {section}: {exc}") from None
    return paths, params


def read_params(path: str | Path, section: str) -> dict[str, Any]:
    """The validated parameters of block ``section`` of a params.yaml file (without its
    folders; :func:`read_section` gives both)."""
    return read_section(path, section)[1]
