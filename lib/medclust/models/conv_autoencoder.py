"""The convolutional autoencoder of the cDCN (Perkonigg et al., Sec. 2).

The network alone, without the clustering: :class:`ConvAutoencoder` (encoder, linear latent
layer, mirrored decoder) and :class:`Upsample2x`, the decoder's nearest-neighbour upsampling.
:class:`medclust.models.dcn.DCN` trains it with the DCN objective.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from medclust.models.common import as_image_batch


class Upsample2x(nn.Module):
    """Nearest-neighbour upsampling by 2, the same values as ``nn.Upsample(scale_factor=2)``.

    Written as a broadcast + reshape because torch's CPU ``upsample_nearest2d`` kernel is several
    times slower for these shapes (it was a third of a training step); the backward is a plain
    sum, deterministic on every device.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder of Perkonigg et al., Sec. 2.

    Encoder: three 3x3 convolutions (padding 1) with ``channels`` = (50, 20, 10) feature maps,
    each followed by ReLU and 2x2 max-pooling (32 -> 16 -> 8 -> 4 px), flattened
    (10 * 4 * 4 = 160) and mapped linearly to the ``latent_dim`` = 20 dimensional latent space.
    The latent layer is linear, as in DCN, so the k-means term acts on an unconstrained space.

    Decoder, the mirror image ("upsampling followed by a convolutional layer in the reversed
    order"): linear 20 -> 160 with ReLU, reshape to 10 x 4 x 4, then three times nearest
    upsampling x2 followed by a 3x3 convolution (10 -> 20 -> 50 -> 1 maps), with ReLU between
    and a linear output layer (the inputs are z-scored intensities, not in [0, 1]).

    ``in_px`` must be divisible by 8. ``forward`` returns ``(latent, reconstruction)``.

    Weights and encoder inputs are kept channels-last (NHWC): on CPU the 50-map convolution and
    its max-pooling run about twice as fast in that layout (0.46 -> 0.24 ms per 32-px window at
    batch 256, 2 cores); the values are those of the NCHW layout up to float rounding.
    """

    def __init__(
        self, in_px: int = 32, latent_dim: int = 20, channels: tuple[int, ...] = (50, 20, 10)
    ) -> None:
        super().__init__()
        if in_px % 8 or in_px < 8:
            raise ValueError(f"in_px must be a positive multiple of 8, got {in_px}")
        self.in_px, self.latent_dim, self.channels = int(in_px), int(latent_dim), tuple(channels)
        c1, c2, c3 = self.channels
        self.bottleneck = (c3, in_px // 8, in_px // 8)
        flat = c3 * (in_px // 8) ** 2
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(flat, latent_dim),
        )  # fmt: skip
        self.decoder_fc = nn.Sequential(nn.Linear(latent_dim, flat), nn.ReLU())
        self.decoder = nn.Sequential(
            Upsample2x(), nn.Conv2d(c3, c2, 3, padding=1), nn.ReLU(),
            Upsample2x(), nn.Conv2d(c2, c1, 3, padding=1), nn.ReLU(),
            Upsample2x(), nn.Conv2d(c1, 1, 3, padding=1),
        )  # fmt: skip
        self.to(memory_format=torch.channels_last)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.contiguous(memory_format=torch.channels_last))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.decoder_fc(z).view(-1, *self.bottleneck))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return z, self.decode(z)

    @staticmethod
    def as_input(X: Any) -> np.ndarray:
        """Input check for this network: image patches (:func:`as_image_batch`)."""
        return as_image_batch(X)
