"""Pieces shared by the torch estimators (cDCN, CAE, DEC/DCEC, JULE, DeepCluster)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

#: Samples per forward pass in inference (transform / predict / k-means initialisation).
INFER_BATCH = 2048

_numerics_depth = 0


@contextlib.contextmanager
def torch_numerics() -> Iterator[None]:
    """Deterministic kernels and flush-to-zero denormals for the duration of a fit/transform.

    * ``torch.use_deterministic_algorithms(True, warn_only=True)``: ``warn_only`` because some
      CUDA kernels have no deterministic variant; every CPU kernel used here is deterministic.
      On CUDA also deterministic cuDNN kernels and cuBLAS's fixed workspace
      (``CUBLAS_WORKSPACE_CONFIG``, set unless the environment sets it; it must be set before the
      first cuBLAS call of the process to take effect).
    * ``torch.set_flush_denormal(True)``: early in training, while the reconstruction sits on its
      initial plateau, the backward pass produces denormal floats, which made CPU epochs up to
      70 times slower; flushing them to zero changes the losses only in far decimals. torch has
      no getter for this flag, so it is switched back off afterwards (torch's default).

    Both settings are process-global, so concurrent fits in threads would see each other's.
    Re-entrant: only the outermost use sets and restores them.
    """
    global _numerics_depth
    if _numerics_depth:
        _numerics_depth += 1
        try:
            yield
        finally:
            _numerics_depth -= 1
        return
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    prev_cudnn_det = torch.backends.cudnn.deterministic
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    flushed = torch.set_flush_denormal(True)
    _numerics_depth = 1
    try:
        yield
    finally:
        _numerics_depth = 0
        if flushed:
            torch.set_flush_denormal(False)
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
        torch.backends.cudnn.deterministic = prev_cudnn_det


def as_image_batch(X: Any) -> np.ndarray:
    arr = np.asarray(X, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] != 1 or arr.shape[2] != arr.shape[3]:
        raise ValueError(f"X must have shape (n, px, px) or (n, 1, px, px), got {np.shape(X)}")
    if arr.shape[2] % 8:
        raise ValueError(f"patch size must be a multiple of 8 pixels, got {arr.shape[2]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("X contains NaN or infinite values")
    return np.ascontiguousarray(arr)
