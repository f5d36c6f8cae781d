"""Seeding, determinism and device choice for every study.

``seed_everything`` seeds Python, NumPy and torch and switches torch to deterministic
algorithms (``sub_seed`` gives a run's second and further streams), so the same params and seed give the same numbers on CPU. ``select_device``
turns the ``device`` param ("auto", "cpu", "cuda", "cuda:1") into a ``torch.device``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from contextlib import contextmanager

import numpy as np

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = True) -> np.random.Generator:
    """Seed python, numpy and torch; return a numpy Generator for the caller's own draws."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (third-party code may draw from the global state)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic matmuls on CUDA
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return np.random.default_rng(seed)


def sub_seed(seed: int, offset: int = 0) -> int:
    """The seed of stream ``offset`` of a run with ``seed``: ``seed`` itself for the main
    stream (0), else drawn from ``numpy.random.SeedSequence([seed, offset])``, so a second
    stream of seed 0 is not the main stream of seed 1 (as ``seed + offset`` would be)."""
    if offset == 0:
        return int(seed)
    # 32 bits: torch, NumPy and scikit-learn's random_state (< 2**32) all take it
    return int(np.random.SeedSequence([int(seed), int(offset)]).generate_state(1)[0])


def select_device(device: str = "auto"):
    """``"auto"`` is CUDA when available, else CPU; an explicit CUDA request without a GPU
    is an error rather than a silent fall-back."""
    import torch

    if not isinstance(device, str):
        raise ValueError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {device!r}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"invalid device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but no CUDA device is available")
    log.info("device: %s", device)
    return torch.device(device)


@contextmanager
def timed(results: dict, key: str = "runtime_s"):
    """Adds the wall-clock seconds of the block to ``results[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        results[key] = results.get(key, 0.0) + time.perf_counter() - start
