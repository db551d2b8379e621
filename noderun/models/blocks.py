"""Building blocks shared by the MNIST models of Table 1 (the reference example's architecture)."""

from __future__ import annotations

import torch
from torch import nn

from noderun.errors import UserError

CHANNELS = 64


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(32, channels) groups, as in the reference."""
    return nn.GroupNorm(min(32, channels), channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: GN, ReLU, 3×3 conv, GN, ReLU, 3×3 conv, plus shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(x))
        # The shortcut starts from the pre-activated input when it has to change shape.
        shortcut = self.downsample(out) if self.downsample is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.norm2(out)))
        return out + shortcut


DOWNSAMPLING = ("conv", "res")


def checked_downsampling(method: object) -> str:
    """Return `method` if it names a downsampling front end, else raise UserError listing them."""
    if method not in DOWNSAMPLING:
        raise UserError(f"model.downsampling={method!r} is invalid; choose one of: {', '.join(DOWNSAMPLING)}")
    return str(method)


def downsampling(method: str) -> nn.Sequential:
    """Return the 1×28×28 → 64×7×7 front end: 'conv' (strided convolutions) or 'res' (ResBlocks)."""
    if method == "conv":
        return nn.Sequential(
            nn.Conv2d(1, CHANNELS, 3, 1),
            group_norm(CHANNELS), nn.ReLU(inplace=True),
            nn.Conv2d(CHANNELS, CHANNELS, 4, 2, 1),
            group_norm(CHANNELS), nn.ReLU(inplace=True),
            nn.Conv2d(CHANNELS, CHANNELS, 4, 2, 1),
        )
    if method == "res":
        def strided_block() -> ResBlock:
            shortcut = nn.Conv2d(CHANNELS, CHANNELS, 1, 2, bias=False)
            return ResBlock(CHANNELS, CHANNELS, stride=2, downsample=shortcut)

        return nn.Sequential(nn.Conv2d(1, CHANNELS, 3, 1), strided_block(), strided_block())
    raise ValueError(f"unknown downsampling {method!r}")


def classifier_head(num_classes: int = 10) -> nn.Sequential:
    """Return GN, ReLU, global average pool, Linear(64 → classes)."""
    return nn.Sequential(
        group_norm(CHANNELS), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS, num_classes),
    )
