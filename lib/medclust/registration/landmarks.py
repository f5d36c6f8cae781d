"""Landmarks: the ``lm_<name>_x/_y/_z`` columns of a clinical table and the least-squares
affine through landmark pairs that initialises a template -> atlas registration (the paper's
"manually annotated landmarks")."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from medclust.registration.image import _as_points
from medclust.registration.pairwise import _centred_affine

_LANDMARK_COLUMN = re.compile(r"^lm_(?P<name>.+)_(?P<axis>[xyz])$")


def _landmark_affine(
    fixed_points: np.ndarray, moving_points: np.ndarray, centre: np.ndarray
) -> sitk.AffineTransform:
    """Least-squares affine through landmark pairs (fixed -> moving), centred on ``centre``."""
    init = sitk.LandmarkBasedTransformInitializer(
        sitk.AffineTransform(3),
        [float(v) for v in fixed_points.ravel()],
        [float(v) for v in moving_points.ravel()],
    )
    return _centred_affine(init, centre)


# --------------------------------------------------------------------------- landmarks


def read_landmarks(clinical, case_id: str) -> dict[str, np.ndarray]:
    """Landmarks ``{name: (x, y, z) mm}`` of one case from ``lm_<name>_x/_y/_z`` columns of a
    clinical table (as the ``routine_ct_atlas`` phantom writes them); NaN rows are skipped."""
    frame = clinical.set_index("case_id") if "case_id" in clinical.columns else clinical
    if case_id not in frame.index:
        raise KeyError(f"read_landmarks: no case {case_id!r} in the clinical table")
    row = frame.loc[case_id]
    names = sorted(
        {m["name"] for c in frame.columns if (m := _LANDMARK_COLUMN.match(str(c))) is not None}
    )
    out = {}
    for name in names:
        cols = [f"lm_{name}_{axis}" for axis in "xyz"]
        if all(c in frame.columns for c in cols):
            pos = np.array([row[c] for c in cols], float)
            if np.all(np.isfinite(pos)):
                out[name] = pos
    return out


def _landmark_pairs(
    fixed: Mapping[str, Sequence[float]] | np.ndarray,
    moving: Mapping[str, Sequence[float]] | np.ndarray,
    where: str,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if isinstance(fixed, Mapping) != isinstance(moving, Mapping):
        raise ValueError(f"{where}: landmarks must both be mappings name -> xyz or both arrays")
    if isinstance(fixed, Mapping):
        names = [n for n in fixed if n in moving]
        f = _as_points([fixed[n] for n in names], where) if names else np.zeros((0, 3))
        m = _as_points([moving[n] for n in names], where) if names else np.zeros((0, 3))
    else:
        f, m = _as_points(fixed, where), _as_points(moving, where)
        if f.shape != m.shape:
            raise ValueError(
                f"{where}: template and atlas landmark arrays differ in shape {f.shape} vs "
                f"{m.shape}"
            )
        names = [str(i) for i in range(len(f))]
    if len(f) < 4:
        raise ValueError(
            f"{where}: need >= 4 landmarks common to the template and the atlas for an affine "
            f"initialisation, got {len(f)}"
        )
    centred = f - f.mean(axis=0)
    if np.linalg.matrix_rank(centred, tol=1e-6 * max(1.0, float(np.abs(centred).max()))) < 3:
        raise ValueError(f"{where}: landmarks are coplanar; an affine needs them spread in 3-D")
    return f, m, names
