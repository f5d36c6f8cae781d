"""Convolutional autoencoder (CAE) of Quarenghi's thesis, Sec. 2.1 / 3.2 and Table 3.2.

The thesis' CAE is the one of DCEC (Guo, Liu, Zhu and Yin, "Deep Clustering with Convolutional
Autoencoders", ICONIP 2017, Sec. 2.1 and Fig. 1, and the authors' reference code
github.com/XifengGuo/DCEC) with the strides adapted to 128 x 128 inputs (Table 3.2)::

    input   1 x 128 x 128
    conv1   16 x 32 x 32    5x5, stride 4        416 params
    conv2   32 x  8 x  8    5x5, stride 4      12832
    conv3   32 x  4 x  4    3x3, stride 2       9248
    flatten 512
    embed   d (default 3)   linear              1539  (512 d + d)
    linear  512                                 2048  (d 512 + 512)
    reshape 32 x 4 x 4
    deconv3 32 x  8 x  8    3x3, stride 2       9248
    deconv2 16 x 32 x 32    5x5, stride 4      12816
    deconv1  1 x 128 x 128  5x5, stride 4        401

What the thesis leaves open is taken from DCEC's reference code: ReLU after every convolution,
transposed convolution and after the decoder's linear layer; a *linear* embedding layer (the
clustering layer acts on an unconstrained space) and a linear output layer. No batch norm and no
dropout (thesis, Sec. 2.1: "we don't utilize any regularization layer"). Padding (it does not
change the parameter counts, only the output sizes and the pixel alignment): every convolution
pads 1 pixel on each side and every transposed convolution is its exact adjoint (``padding=1``,
``output_padding=1``), which gives the sizes of Table 3.2 and lets every input pixel reach the
embedding. Keras' ``padding="same"`` of the reference code pads the same total (1 pixel per
layer) but all of it after the image, a shift of at most one pixel.

Pretraining (thesis Sec. 2.1, Eq. 2.1-2.2, and Sec. 2.3.3 "we first pretrain the CAE by setting
gamma = 0") minimises the mean squared error per pixel with Adam. The thesis gives neither the
number of epochs, the batch size nor the learning rate; the defaults of :class:`CAEEmbedding`
say where theirs come from.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from medclust.models.autoencoders import encode, pretrain, reconstruct, reconstruction_mse
from medclust.models.base import BASE_CONSTRAINTS, TorchEstimator
from medclust.models.common import as_image_batch
from medclust.validation import Int, Real, check_int

log = logging.getLogger(__name__)

#: Table 3.2 of the thesis for embedding dimension 3: (layer, output shape, parameters).
TABLE_3_2: tuple[tuple[str, tuple[int, ...], int], ...] = (
    ("conv1", (16, 32, 32), 416),
    ("conv2", (32, 8, 8), 12832),
    ("conv3", (32, 4, 4), 9248),
    ("flatten", (512,), 0),
    ("embedding", (3,), 1539),
    ("linear", (512,), 2048),
    ("reshape", (32, 4, 4), 0),
    ("deconv3", (32, 8, 8), 9248),
    ("deconv2", (16, 32, 32), 12816),
    ("deconv1", (1, 128, 128), 401),
)


# --------------------------------------------------------------------------- network


class CAE(nn.Module):
    """The convolutional autoencoder of Table 3.2 (see the module docstring for the layers).

    ``in_px`` must be a multiple of 32 (the strides 4, 4, 2); the thesis uses 128, which gives a
    32 x 4 x 4 = 512 bottleneck. ``encoder`` maps ``(n, 1, in_px, in_px)`` to the embedding
    ``(n, embedding_dim)``; ``decoder`` maps it back. ``forward`` returns
    ``(embedding, reconstruction)``.
    """

    def __init__(self, embedding_dim: int = 3, in_px: int = 128) -> None:
        super().__init__()
        if in_px % 32 or in_px < 32:
            raise ValueError(f"in_px must be a positive multiple of 32, got {in_px}")
        self.embedding_dim, self.in_px = check_int("embedding_dim", embedding_dim), int(in_px)
        self.bottleneck = (32, in_px // 32, in_px // 32)
        flat = 32 * (in_px // 32) ** 2
        self.encoder = nn.Sequential()
        self.encoder.add_module("conv1", nn.Conv2d(1, 16, 5, stride=4, padding=1))
        self.encoder.add_module("relu1", nn.ReLU())
        self.encoder.add_module("conv2", nn.Conv2d(16, 32, 5, stride=4, padding=1))
        self.encoder.add_module("relu2", nn.ReLU())
        self.encoder.add_module("conv3", nn.Conv2d(32, 32, 3, stride=2, padding=1))
        self.encoder.add_module("relu3", nn.ReLU())
        self.encoder.add_module("flatten", nn.Flatten())
        self.encoder.add_module("embedding", nn.Linear(flat, self.embedding_dim))
        self.decoder = nn.Sequential()
        self.decoder.add_module("linear", nn.Linear(self.embedding_dim, flat))
        self.decoder.add_module("relu0", nn.ReLU())
        self.decoder.add_module("reshape", nn.Unflatten(1, self.bottleneck))
        self.decoder.add_module(
            "deconv3", nn.ConvTranspose2d(32, 32, 3, stride=2, padding=1, output_padding=1)
        )
        self.decoder.add_module("relu3", nn.ReLU())
        self.decoder.add_module(
            "deconv2", nn.ConvTranspose2d(32, 16, 5, stride=4, padding=1, output_padding=1)
        )
        self.decoder.add_module("relu2", nn.ReLU())
        self.decoder.add_module(
            "deconv1", nn.ConvTranspose2d(16, 1, 5, stride=4, padding=1, output_padding=1)
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return z, self.decode(z)

    @staticmethod
    def as_input(X: Any) -> np.ndarray:
        """Input check for this network: :func:`as_images`."""
        return as_images(X)

    def summary(self) -> list[tuple[str, tuple[int, ...], int]]:
        """Rows ``(layer, output shape without the batch axis, parameters)`` in the order and
        with the names of Table 3.2 (activations left out), from a forward pass of one zero
        image; compare with :data:`TABLE_3_2`."""
        rows = []
        x = torch.zeros(1, 1, self.in_px, self.in_px, device=next(self.parameters()).device)
        with torch.no_grad():
            for seq in (self.encoder, self.decoder):
                for name, layer in seq.named_children():
                    x = layer(x)
                    if not name.startswith("relu"):
                        n_par = sum(p.numel() for p in layer.parameters())
                        rows.append((name, tuple(x.shape[1:]), n_par))
        return rows


# --------------------------------------------------------------------------- helpers


def as_images(X: Any) -> np.ndarray:
    """``X`` as a contiguous float32 array ``(n, 1, px, px)`` with ``px`` a multiple of 32
    (``(n, px, px)`` is accepted too); raises ``ValueError`` otherwise."""
    arr = as_image_batch(X)
    if arr.shape[2] % 32:
        raise ValueError(f"image size must be a multiple of 32 pixels, got {arr.shape[2]}")
    return arr


# --------------------------------------------------------------------------- estimators


class CAEInference(TorchEstimator):
    """What :class:`CAEEmbedding` and the clustering heads of :mod:`medclust.models.dec` share
    to run their network on user input: the input check and reconstructions shaped like the
    input (the batched passes are :mod:`medclust.models.autoencoders`' ``encode`` /
    ``reconstruct``)."""

    def _input(self, X: Any) -> np.ndarray:
        """``X`` as the network's input batch (:func:`as_images` for the CAE)."""
        return as_images(X)

    def _reconstruct_like(self, model: nn.Module, X: Any) -> np.ndarray:
        """Reconstructions of ``X`` by ``model``, shaped like ``X`` (e.g. ``(n, px, px)`` or
        ``(n, 1, px, px)``)."""
        return reconstruct(model, self._input(X)).reshape(np.shape(X))


class CAEEmbedding(TransformerMixin, CAEInference):
    """Pretrained CAE as an sklearn transformer: images -> embedding (thesis Sec. 2.1, 3.3.1).

    Trains :class:`CAE` on the per-pixel MSE (Eq. 2.2) with Adam, the optimiser of the thesis
    (Sec. 2.2/2.3.3) and of DCEC's pretraining. Each epoch visits every image once in a fresh
    random order (Keras' ``fit`` default, used by DCEC's reference code); the length of the
    pretraining is counted in optimiser steps, so it means the same on any cohort size (the
    last epoch may be partial). With validation images the weights of the epoch with the lowest
    validation MSE are kept (the thesis reports the "lowest values" of its curves, Fig. 3.4,
    and checks for overfitting on them).

    Parameters
    ----------
    embedding_dim : int, default 3
        Size of the embedded layer: 3 in Tables 3.2-3.5, 10 and 30 in Table 3.6.
    steps : int, default 54800
        Adam steps of pretraining. Not given in the thesis; DCEC's reference code pretrains
        200 epochs of batches of 256 on MNIST's 70,000 images (Guo et al. 2017, experimental
        setup; ``pretrain(epochs=200)``): 200 x 274 = 54,800 steps.
    batch_size : int, default 256
        Not given in the thesis; DCEC's (Guo et al. 2017) and DEC's (Xie et al. 2016).
    lr : float, default 1e-3
        Adam learning rate (thesis: Adam, no rate given; 0.001 with beta = (0.9, 0.999) is
        DCEC's, Adam with Keras' defaults).
    seed : int, default 0
        Seeds the weight initialisation (torch's default initialisers, in a forked RNG so the
        caller's stream is untouched) and the per-epoch order
        (``numpy.random.default_rng([seed, 0, epoch])``).
    device : str, default "cpu"
        "cpu", "cuda[:N]" or "auto" (:func:`medclust.runtime.select_device`). Repeat fits are
        bit-identical on the CPU with a fixed number of torch threads.
    verbose : bool, default False
        tqdm progress bar; per-epoch losses always go to the module logger (INFO).

    Attributes
    ----------
    model_ : CAE -- the trained network (eval mode): the best-validation weights when
        ``X_val`` was given, else the last ones.
    history_ : dict of lists, one entry per (possibly partial) epoch -- ``"step"``: optimiser
        steps done at its end; ``"train"``: the mean of the minibatch MSEs seen during it
        (weighted by batch size; Keras' ``loss``); ``"val"``: the MSE of ``X_val`` after it
        (Keras' ``val_loss``; empty without ``X_val``). Fig. 3.4.
    n_iter_ : int -- optimiser steps taken (= ``steps``).
    best_step_ : int -- the step whose weights ``model_`` holds.
    best_val_mse_ : float -- the validation MSE of ``model_`` (NaN without ``X_val``).
    device_ : torch.device
    """

    _constraints = {
        **BASE_CONSTRAINTS,
        "embedding_dim": Int(1),
        "steps": Int(0),
        "batch_size": Int(1),
        "lr": Real(0, low_open=True),
    }

    def __init__(
        self,
        *,
        embedding_dim: int = 3,
        steps: int = 54_800,
        batch_size: int = 256,
        lr: float = 1e-3,
        seed: int = 0,
        device: str = "cpu",
        verbose: bool = False,
    ) -> None:
        self.embedding_dim = embedding_dim
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def fit(self, X: Any, y: Any = None, X_val: Any = None) -> CAEEmbedding:
        """Pretrain the CAE on ``X``; ``X_val`` (optional) is only evaluated, after each epoch,
        to keep the best weights. ``y`` is ignored."""
        Xn = as_images(X)
        Xv = None if X_val is None else as_images(X_val)
        if Xv is not None and Xv.shape[1:] != Xn.shape[1:]:
            raise ValueError(f"X_val images have shape {Xv.shape[1:]}, X has {Xn.shape[1:]}")
        self._validate_params()
        if len(Xn) == 0:
            raise ValueError("X has no images")
        self._select_device()
        with self._seeded():  # the caller's torch random stream is left untouched
            model = CAE(int(self.embedding_dim), Xn.shape[2])
        model.to(self.device_)
        hist = pretrain(
            model, Xn, Xv, steps=int(self.steps), batch_size=int(self.batch_size),
            lr=float(self.lr), seed=int(self.seed), verbose=self.verbose,
        )  # fmt: skip
        self.best_step_, self.best_val_mse_ = hist.pop("best_step"), hist.pop("best_val")
        self.history_ = hist
        self.model_ = model.eval()
        self.n_iter_ = int(self.steps)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Embeddings ``(n, embedding_dim)`` float32 (the embedded layer of Table 3.2)."""
        check_is_fitted(self, "model_")
        return encode(self.model_, as_images(X))

    def reconstruct(self, X: Any) -> np.ndarray:
        """Reconstructions, float32, with the shape of ``X`` (``(n, px, px)`` or
        ``(n, 1, px, px)``), as in Fig. 3.5."""
        check_is_fitted(self, "model_")
        return self._reconstruct_like(self.model_, X)

    def reconstruction_mse(self, X: Any) -> float:
        """Per-pixel MSE of the reconstructions of ``X`` (the "MSE error" of Table 3.4)."""
        check_is_fitted(self, "model_")
        return reconstruction_mse(self.model_, as_images(X))

    def get_model(self) -> CAE:
        """A deep copy of the trained :class:`CAE`."""
        check_is_fitted(self, "model_")
        return copy.deepcopy(self.model_)
