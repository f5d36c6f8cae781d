"""Small linear algebra for the phantom generators without BLAS or LAPACK.

Why: a generator's output is integers (HU, labels, masks), and ``data.dvc`` pins their bytes.
``a @ b``, ``np.dot``, ``np.tensordot``, ``np.linalg.norm`` of a vector and every
``np.linalg`` solver call BLAS/LAPACK kernels that the CPU picks at run time (OpenBLAS's
Haswell, SkylakeX, Zen, ... kernels sum in different orders), so their last bits differ
between machines; a value that then meets a rounding, a threshold or an ``argmax`` tie can
come out different, and so can every random draw after a rejection loop that it feeds.

Every function here is built from element-wise IEEE operations (``+ - * /`` and ``sqrt``,
which are correctly rounded on every x86-64 SIMD path) in a fixed order, so its result is the
same bits on any machine. The generators only need 3-vectors, 3 x 3 and 4 x 4 matrices and
contractions over a handful of terms, where this costs nothing measurable.
"""

from __future__ import annotations

import math

import numpy as np


def contract(a, b) -> np.ndarray:
    """``np.tensordot(a, b, axes=1)`` without BLAS: the last axis of ``a`` against the first
    axis of ``b``, summed left to right. Covers ``matrix @ matrix``, ``matrix @ points``
    (points as columns, ``(k, N)``), ``vector . vector`` and weights against a stack."""
    a = np.asarray(a)
    b = np.asarray(b)
    k = a.shape[-1]
    if b.shape[0] != k:
        raise ValueError(f"contract: shapes {a.shape} and {b.shape} do not align")
    out = np.multiply.outer(a[..., 0], b[0])
    for j in range(1, k):
        out = out + np.multiply.outer(a[..., j], b[j])
    return out


def dot(a, b, axis: int = -1) -> np.ndarray:
    """Inner product of ``a`` and ``b`` along ``axis`` (broadcast), summed in index order."""
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    a, b = np.moveaxis(a, axis, 0), np.moveaxis(b, axis, 0)
    out = a[0] * b[0]
    for j in range(1, a.shape[0]):
        out = out + a[j] * b[j]
    return out


def norm(v, axis: int = -1) -> np.ndarray:
    """Euclidean length along ``axis`` (``np.linalg.norm`` of a vector calls BLAS ``nrm2``)."""
    return np.sqrt(dot(v, v, axis))


def unit(v, axis: int = -1, eps: float = 0.0) -> np.ndarray:
    """``v`` scaled to unit length along ``axis`` (lengths below ``eps`` are taken as ``eps``)."""
    v = np.asarray(v, float)
    length = np.expand_dims(norm(v, axis), axis)
    return v / (np.maximum(length, eps) if eps > 0 else length)


def cross(a, b) -> np.ndarray:
    """Cross product of two 3-vectors."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.array(
        [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
    )


def det3(m) -> float:
    """Determinant of a 3 x 3 matrix (cofactor expansion along the first row)."""
    m = np.asarray(m, float)
    return float(
        m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1])
        - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
        + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0])
    )


def inv3(m) -> np.ndarray:
    """Inverse of a non-singular 3 x 3 matrix: adjugate over determinant."""
    m = np.asarray(m, float)
    det = det3(m)
    if det == 0.0 or not np.isfinite(det):
        raise np.linalg.LinAlgError("inv3: singular matrix")
    adj = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            r = [k for k in range(3) if k != j]
            c = [k for k in range(3) if k != i]
            minor = m[r[0], c[0]] * m[r[1], c[1]] - m[r[0], c[1]] * m[r[1], c[0]]
            adj[i, j] = minor if (i + j) % 2 == 0 else -minor
    return adj / det


def inv_affine(affine) -> np.ndarray:
    """Inverse of a 4 x 4 affine ``[[A, t], [0, 1]]``: ``[[A^-1, -A^-1 t], [0, 1]]``."""
    affine = np.asarray(affine, float)
    if affine.shape != (4, 4) or not np.array_equal(affine[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"inv_affine: not a 4 x 4 affine matrix: {affine.tolist()}")
    out = np.eye(4)
    out[:3, :3] = inv3(affine[:3, :3])
    out[:3, 3] = -contract(out[:3, :3], affine[:3, 3])
    return out


def rotation_xyz(angles_rad) -> np.ndarray:
    """``Rz @ Ry @ Rx`` of rotations about x, y and z by ``angles_rad`` (radians)."""
    (cx, sx), (cy, sy), (cz, sz) = ((math.cos(a), math.sin(a)) for a in map(float, angles_rad))
    mx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    my = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    mz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return contract(contract(mz, my), mx)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix uniformly distributed over SO(3): the matrix of a uniformly random
    unit quaternion (a normalised 4-d Gaussian vector)."""
    w, x, y, z = unit(rng.standard_normal(4))
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def polar_rotation(m, iterations: int = 40) -> np.ndarray:
    """Rotation factor ``R`` of the polar decomposition ``m = R S`` of a non-singular 3 x 3
    matrix with positive determinant, by the Newton iteration ``R <- (R + R^-T) / 2`` (a
    fixed number of steps, so the result does not depend on a convergence test)."""
    r = np.asarray(m, float)
    for _ in range(iterations):
        r = 0.5 * (r + inv3(r).T)
    return r
