"""The backbone of the torch estimators (cDCN, CAE, DEC/DCEC, JULE, DeepCluster).

:class:`TorchEstimator` owns what every one of them does the same way:

* **device**: the ``device`` param ("auto", "cpu", "cuda", "cuda:N") becomes ``device_`` through
  :func:`medclust.runtime.select_device`, so a bad value is refused with one message everywhere;
* **randomness**: :meth:`_seeded` forks torch's global RNG, seeds it with ``seed`` (a second
  stream with :func:`medclust.runtime.sub_seed`) and restores it afterwards, so a fit neither
  depends on nor changes what the caller drew before; numpy draws come from ``np.random.default_rng(seed)``;
* **numerics**: deterministic kernels and flushed denormals for the duration of a fit or an
  inference pass (:func:`medclust.models.common.torch_numerics`);
* **batched inference**: :func:`batched` (and :meth:`_batched`) runs a function over a numpy array in slices of
  ``batch`` rows without gradients and stacks the results.

Hyper-parameters are keyword-only, named alike across estimators (``seed``, ``device``,
``verbose``, ``epochs``), and checked declaratively (:mod:`medclust.validation`) in ``fit``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator

from medclust.models.common import INFER_BATCH, torch_numerics
from medclust.runtime import select_device, sub_seed
from medclust.validation import Int, Options, validate

#: Constraints every torch estimator shares; subclasses extend them with ``{**BASE, ...}``.
BASE_CONSTRAINTS = {"seed": Int(0), "device": Options(str), "verbose": Options(bool)}


class TorchEstimator(BaseEstimator):
    """Base class: device choice, seeded RNG, deterministic numerics and batched inference."""

    _constraints: dict = BASE_CONSTRAINTS

    def _validate_params(self) -> None:
        validate(self, self._constraints)

    def _select_device(self) -> torch.device:
        self.device_ = select_device(self.device)
        return self.device_

    @contextlib.contextmanager
    def _seeded(self, offset: int = 0) -> Iterator[None]:
        """torch's global RNG seeded with :func:`~medclust.runtime.sub_seed` ``(seed,
        offset)`` inside, restored outside."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sub_seed(self.seed, offset))
            yield

    def _batched(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        X: np.ndarray,
        batch: int = INFER_BATCH,
        device: torch.device | None = None,
    ) -> np.ndarray:
        """:func:`batched` on ``device_`` unless another ``device`` is given."""
        return batched(fn, X, batch, device if device is not None else self.device_)


def batched(
    fn: Callable[[torch.Tensor], torch.Tensor],
    X: np.ndarray,
    batch: int = INFER_BATCH,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """``fn`` over ``X`` in slices of ``batch`` rows on ``device`` (no gradients, deterministic
    numerics), stacked as numpy."""
    out = []
    with torch.no_grad(), torch_numerics():
        for a in range(0, len(X), batch):
            out.append(
                fn(torch.from_numpy(np.ascontiguousarray(X[a : a + batch])).to(device))
                .cpu()
                .numpy()
            )
    if not out:
        raise ValueError("no samples to run the network on")
    return np.concatenate(out)
