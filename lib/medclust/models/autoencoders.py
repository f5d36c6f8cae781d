"""Any autoencoder into any clustering head (as ClustPy's ``neural_network=``).

The heads (:class:`~medclust.models.dec.DEC`, :class:`~medclust.models.dec.DCEC` and IDEC,
:class:`~medclust.models.dcn.DCN`) accept as ``pretrained`` any ``torch.nn.Module`` with two
methods, ``encode(x) -> z`` (the embedding, ``(n, d)``) and ``decode(z) -> x_hat`` (``x``'s
shape): the thesis' :class:`~medclust.models.cae.CAE`, the cDCN's
:class:`~medclust.models.conv_autoencoder.ConvAutoencoder`, :class:`MLPAutoencoder` or a
user's network. A module may also say how its input is checked with an ``as_input(X)``
method (the CAE and the cDCN's network check image sizes); :func:`network_input` falls back to
:func:`as_batch`, which suits any of them. :func:`check_autoencoder` is the interface check;
:func:`encode`, :func:`reconstruct` and :func:`reconstruction_mse` the batched inference and
:func:`pretrain` the pretraining they share (reconstruction MSE, Adam, counted in optimiser
steps, best-validation weights kept).

:class:`MLPAutoencoder` is the fully connected autoencoder of DEC (Xie, Girshick and Farhadi,
ICML 2016, Sec. 4.3: ``d-500-500-2000-10``, ReLU, linear embedding and output) that IDEC and
DCN use (ClustPy 0.0.3's default network has the same sizes with LeakyReLU).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medclust.models.base import batched
from medclust.models.common import INFER_BATCH, torch_numerics

log = logging.getLogger(__name__)


def check_autoencoder(module: Any, name: str = "pretrained") -> nn.Module:
    """``module`` if it is an ``nn.Module`` with callable ``encode`` and ``decode``; else
    ``TypeError`` naming ``name``."""
    ok = isinstance(module, nn.Module) and all(
        callable(getattr(module, m, None)) for m in ("encode", "decode")
    )
    if not ok:
        raise TypeError(
            f"{name} must be an autoencoder: a torch.nn.Module with encode(x) and decode(z) "
            f"methods, got {type(module).__name__}"
        )
    return module


def as_batch(X: Any) -> np.ndarray:
    """``X`` as a C-contiguous float32 array of at least 2 dimensions (samples first), finite;
    ``ValueError`` otherwise."""
    arr = np.asarray(X, dtype=np.float32)
    if arr.ndim < 2 or len(arr) == 0:
        raise ValueError(f"X must be a non-empty array of samples, got shape {np.shape(X)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("X contains NaN or infinite values")
    return np.ascontiguousarray(arr)


def network_input(module: nn.Module, X: Any) -> np.ndarray:
    """``X`` checked as ``module``'s input: its ``as_input`` when it has one, else
    :func:`as_batch`."""
    return getattr(module, "as_input", as_batch)(X)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside, back in its previous mode outside."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def encode(model: nn.Module, X: np.ndarray) -> np.ndarray:
    """Embeddings of ``X`` by ``model.encode`` (eval mode, batches on the model's device)."""
    with eval_mode(model):
        return batched(model.encode, X, device=_device(model))


def reconstruct(model: nn.Module, X: np.ndarray) -> np.ndarray:
    """``decode(encode(X))`` shaped like ``X``, float32 (eval mode, batches)."""
    with eval_mode(model):
        return batched(
            lambda x: model.decode(model.encode(x)).reshape(x.shape), X, device=_device(model)
        )


def reconstruction_mse(model: nn.Module, X: np.ndarray) -> float:
    """Mean squared error per element of :func:`reconstruct` against ``X`` (per pixel for
    images: the "MSE error" of the thesis' Tables 3.4-3.6, Keras' ``mse``); NaN for no
    samples."""
    if len(X) == 0:
        return float("nan")
    total = 0.0
    for a in range(0, len(X), INFER_BATCH):
        xb = X[a : a + INFER_BATCH]
        total += float(((reconstruct(model, xb).astype(np.float64) - xb) ** 2).sum())
    return total / X.size


class MLPAutoencoder(nn.Module):
    """Fully connected autoencoder ``dims[0] - ... - dims[-1]`` and its mirror image.

    ReLU after every layer except the embedding and the output, which are linear (DEC, Xie et
    al. 2016, Sec. 4.3; the default ``dims = (d, 500, 500, 2000, 10)`` is theirs). Inputs of
    any shape ``(n, ...)`` are flattened; ``decode`` returns ``(n, dims[0])``.
    """

    def __init__(self, dims: Sequence[int] = (64, 500, 500, 2000, 10)) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        if len(dims) < 2 or min(dims) < 1:
            raise ValueError(f"dims must be at least 2 positive layer sizes, got {dims}")
        self.dims = tuple(dims)
        self.encoder = self._stack(dims)
        self.decoder = self._stack(dims[::-1])

    @staticmethod
    def _stack(dims: Sequence[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if k < len(dims) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.reshape(len(x), -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return z, self.decode(z)


def epoch_order(seed: int, phase: int, epoch: int, n: int) -> np.ndarray:
    """Sample order of one pass over the data, derived from ``(seed, phase, epoch)`` alone."""
    return np.random.default_rng([int(seed), phase, epoch]).permutation(n)


def pretrain(
    model: nn.Module,
    X: np.ndarray,
    X_val: np.ndarray | None = None,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    verbose: bool = False,
) -> dict:
    """Train ``model`` (in place, on its device) to reconstruct ``X``: ``steps`` Adam steps on
    the per-element MSE, minibatches of ``batch_size`` in a fresh order every epoch
    (:func:`epoch_order` ``(seed, 0, epoch)``; the last epoch may be partial).

    With ``X_val`` its MSE is measured after every epoch and the model ends on the weights of
    the best one. Returns the history: per epoch ``"step"`` (steps done), ``"train"`` (mean
    minibatch MSE during the epoch) and ``"val"`` (empty without ``X_val``), and the scalars
    ``"best_step"`` (the step whose weights the model holds) and ``"best_val"`` (NaN without
    ``X_val``).
    """
    device = next(model.parameters()).device
    Xt = torch.from_numpy(np.ascontiguousarray(X)).to(device)
    Xv = X_val if X_val is not None and len(X_val) else None
    opt = torch.optim.Adam(model.parameters(), lr=float(lr))
    hist: dict[str, Any] = {"step": [], "train": [], "val": []}
    n, bs = len(Xt), int(batch_size)
    best_val, best_state, best_step = float("inf"), None, int(steps)
    step = epoch = 0
    bar = tqdm(total=int(steps), desc="pretrain", disable=not verbose)
    with torch_numerics():
        while step < steps:
            model.train()
            order = torch.from_numpy(epoch_order(seed, 0, epoch, n)).to(device)
            total, seen = 0.0, 0
            for a in range(0, n, bs):
                if step == steps:
                    break
                xb = Xt[order[a : a + bs]]
                loss = ((model.decode(model.encode(xb)).reshape(xb.shape) - xb) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(xb)
                seen += len(xb)
                step += 1
                bar.update(1)
            epoch += 1
            hist["step"].append(step)
            hist["train"].append(total / seen)
            val = float("nan")
            if Xv is not None:
                val = reconstruction_mse(model, Xv)
                hist["val"].append(val)
                if val < best_val:
                    best_val, best_step = val, step
                    best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(train=f"{hist['train'][-1]:.5f}", val=f"{val:.5f}")
            log.info("pretrain epoch %d (step %d/%d): train mse %.6f, val mse %.6f",
                     epoch, step, steps, hist["train"][-1], val)  # fmt: skip
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
        log.info("pretrain: keeping the weights of step %d (val mse %.6f)", best_step, best_val)
    hist["best_step"] = best_step
    hist["best_val"] = best_val if best_state is not None else float("nan")
    model.eval()
    return hist
