"""Feature networks of Xie, Jacobs and van Ginneken, "Deep clustering activation maps for
emphysema subtyping" (MIDL 2021 short paper), Sec. 2.

* :class:`UNet3D` -- the proposed feature network ``f_theta``: a 3D U-Net (Cicek, Abdulkadir,
  Lienkamp, Brox and Ronneberger, "3D U-Net: learning dense volumetric segmentation from sparse
  annotation", MICCAI 2016) with three down-sampling levels (two 3x3x3 convolutions and a 2x2x2
  max-pooling each), two more convolutions that double the filters, and three up-sampling levels
  (trilinear interpolation x2, then two 3x3x3 convolutions "to reduce the interpolation
  artifacts"), with the skip connections of Cicek et al. concatenated before the convolutions.
  Its output, the *dense features*, has the spatial shape of the input.
* :class:`Encoder3D` -- the paper's baseline: "a 3D-UNet without up-sampling layers", with "one
  more down-sampling layer and more filters" to compensate for the parameters of the removed
  up-sampling path. Its output is the low-resolution feature map of the deepest level.

Every convolution is 3x3x3, stride 1, zero padding 1 (the paper's), followed by a normalisation
and a ReLU. Filters double at each level (Cicek et al.): level ``l`` has ``base_filters * 2**l``
filters, the two convolutions after the last pooling ``base_filters * 2**levels``.

Normalisation: GroupNorm (Wu and He, "Group Normalization", ECCV 2018) by default. The batches
of 3D volumes are small (a few CT scans per step; the paper does not say), and batch-norm
statistics of two to eight volumes are noisy; DeepCluster also extracts the features for k-means
with the network in eval mode, where batch norm would switch to running averages that lag a
network which changes every step. GroupNorm normalises each sample on its own, so training and
eval mode compute the same function and no result depends on the batch composition. Groups:
at most 8, at least 4 channels per group (one group -- layer norm -- below 8 channels), so the
per-channel mean (e.g. the overall density of a lung) is not erased as instance norm
(one channel per group) would erase it. ``norm="batch"`` or ``"instance"`` are available for
comparison.

Parameter counts (GroupNorm, one input channel; :func:`count_parameters`), with the baseline
width chosen by :func:`matched_encoder_filters`::

    UNet3D(base_filters=4)     91,788     Encoder3D(base_filters=3)    124,812
    UNet3D(base_filters=8)    365,880     Encoder3D(base_filters=5)    345,990
    UNet3D(base_filters=16) 1,460,976     Encoder3D(base_filters=10) 1,381,830

With filters doubling per level, the *extra* level of the baseline (8b -> 16b filters) already
holds more weights than the whole up-sampling path (the encoder has about 13,800 b^2 weights,
the U-Net 5,700 b^2), so matching the count takes a *smaller* base width for the encoder; its
deepest layers and its output still have more filters than the U-Net's (16 x 5 = 80 against
8 x 8 = 64 at the bottom for ``base_filters=8``, and 80 against 8 output features).
:func:`matched_encoder_filters` picks the encoder width whose count is closest to the U-Net's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medclust.validation import Options, check_int

_NORMS = ("group", "batch", "instance")


def group_count(channels: int) -> int:
    """GroupNorm groups for ``channels``: the largest divisor ``g <= 8`` of ``channels`` that
    leaves at least 4 channels per group (1 when there is none)."""
    return max([g for g in range(1, 9) if channels % g == 0 and channels // g >= 4] or [1])


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    return nn.BatchNorm3d(channels)


class ConvBlock3D(nn.Sequential):
    """Two (3x3x3 convolution, stride 1, zero padding 1 -> normalisation -> ReLU) layers."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "group") -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, padding=1),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class _DownPath(nn.Module):
    """``levels`` x (ConvBlock3D, 2x2x2 max-pool), then the ConvBlock3D that doubles the filters.
    Returns the bottom features and the skip features (before each pooling)."""

    def __init__(self, in_channels: int, base_filters: int, levels: int, norm: str) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.base_filters = check_int("base_filters", base_filters)
        self.levels = check_int("levels", levels)
        self.norm = Options(*_NORMS).check("norm", norm)
        widths = [base_filters * 2**level for level in range(levels + 1)]
        self.down = nn.ModuleList(
            ConvBlock3D(c_in, c_out, norm)
            for c_in, c_out in zip([in_channels, *widths[:-2]], widths[:-1], strict=True)
        )
        self.bottom = ConvBlock3D(widths[-2], widths[-1], norm)
        self.pool = nn.MaxPool3d(2)
        self.widths = widths

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"input must have shape (N, {self.in_channels}, D, H, W), got {tuple(x.shape)}"
            )
        if min(x.shape[2:]) < 2**self.levels:
            raise ValueError(
                f"every spatial size must be >= 2**levels = {2**self.levels} for {self.levels} "
                f"poolings, got {tuple(x.shape[2:])}"
            )

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.check_input(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        return self.bottom(x), skips


class UNet3D(nn.Module):
    """The feature network ``f_theta`` of Xie et al., Sec. 2: a 3D U-Net (Cicek et al. 2016).

    ``levels`` down-sampling levels (ConvBlock3D with ``base_filters * 2**l`` filters, then 2x2x2
    max-pooling), one ConvBlock3D with ``base_filters * 2**levels`` filters, then ``levels``
    up-sampling levels: trilinear interpolation to the size of the matching skip connection
    (x2, or the odd size a floor-pooling came from), concatenation with the skip (Cicek et al.),
    ConvBlock3D back to ``base_filters * 2**l`` filters.

    ``forward(x)``: ``(N, in_channels, D, H, W)`` -> dense features
    ``(N, out_channels, D, H, W)`` with ``out_channels = base_filters``; every spatial size must
    be at least ``2**levels``.
    """

    def __init__(
        self, in_channels: int = 1, base_filters: int = 8, levels: int = 3, norm: str = "group"
    ) -> None:
        super().__init__()
        self.encoder = _DownPath(in_channels, base_filters, levels, norm)
        widths = self.encoder.widths
        self.up = nn.ModuleList(
            ConvBlock3D(widths[level + 1] + widths[level], widths[level], norm)
            for level in reversed(range(levels))
        )
        self.in_channels, self.base_filters, self.levels = in_channels, base_filters, levels
        self.norm = norm
        self.out_channels = widths[0]
        #: Output resolution relative to the input (dense features: 1).
        self.downsampling = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.encoder.run(x)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = block(torch.cat([skip, x], dim=1))
        return x


class Encoder3D(nn.Module):
    """The baseline feature network of Xie et al., Sec. 2: the down-sampling path of
    :class:`UNet3D` only, with one more level (``levels = 4``) and its own width (see
    :func:`matched_encoder_filters` and the module docstring for the parameter counts).

    ``forward(x)``: ``(N, in_channels, D, H, W)`` -> ``(N, out_channels, D // 2**levels, ...)``
    (floor at each pooling), ``out_channels = base_filters * 2**levels``.
    """

    def __init__(
        self, in_channels: int = 1, base_filters: int = 5, levels: int = 4, norm: str = "group"
    ) -> None:
        super().__init__()
        self.encoder = _DownPath(in_channels, base_filters, levels, norm)
        self.in_channels, self.base_filters, self.levels = in_channels, base_filters, levels
        self.norm = norm
        self.out_channels = self.encoder.widths[-1]
        #: Nominal output resolution relative to the input (floor division at each pooling).
        self.downsampling = 2**levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.run(x)[0]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def matched_encoder_filters(
    unet_base_filters: int = 8,
    unet_levels: int = 3,
    encoder_levels: int = 4,
    in_channels: int = 1,
    norm: str = "group",
) -> int:
    """Width of the baseline :class:`Encoder3D` whose parameter count is closest to that of
    ``UNet3D(in_channels, unet_base_filters, unet_levels)`` (Xie et al., Sec. 2: the baseline
    "compensated for the reduced number of parameters"); ties go to the wider encoder.

    The networks are built on the ``meta`` device: no memory, and torch's random stream is
    not touched.
    """
    with torch.device("meta"):
        target = count_parameters(UNet3D(in_channels, unet_base_filters, unet_levels, norm))
        counts = {}
        width = 1
        while not counts or counts[width - 1] < target:
            counts[width] = count_parameters(Encoder3D(in_channels, width, encoder_levels, norm))
            width += 1
    return min(counts, key=lambda w: (abs(counts[w] - target), -w))
