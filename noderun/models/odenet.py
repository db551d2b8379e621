"""ODE-Net and RK-Net: one ODE block between the downsampling and the head.

Both share the architecture; they differ in how gradients are computed (adjoint method or
backpropagation through the solver's operations), which the ODE block's `adjoint` flag selects.
"""

from __future__ import annotations

import torch
from torch import nn

from noderun.models.blocks import CHANNELS, classifier_head, downsampling, group_norm
from noderun.models.ode_block import CountedDynamics, ODEBlock
from noderun.solvers import SolverSpec


class ConcatConv2d(nn.Module):
    """3×3 convolution that sees the time t as an extra constant input channel."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, 3, 1, padding=1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        time_channel = t.to(x.dtype).expand(x.shape[0], 1, x.shape[2], x.shape[3])
        return self.conv(torch.cat([time_channel, x], dim=1))


class ConvDynamics(CountedDynamics):
    """f(t, h): GN, ReLU, conv(t), GN, ReLU, conv(t), GN. Counts its own evaluations in `nfe`."""

    def __init__(self, channels: int = CHANNELS):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = ConcatConv2d(channels, channels)
        self.norm2 = group_norm(channels)
        self.conv2 = ConcatConv2d(channels, channels)
        self.norm3 = group_norm(channels)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = self.conv1(t, torch.relu(self.norm1(h)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


def build_odenet(solver: SolverSpec, downsampling_method: str = "conv", t1: float = 1.0,
                 adjoint: bool = True, num_classes: int = 10) -> nn.Sequential:
    """Return downsampling → ODE block → head; adjoint=False gives the RK-Net."""
    block = ODEBlock(ConvDynamics(), solver, t1=t1, adjoint=adjoint)
    return nn.Sequential(downsampling(downsampling_method), block, classifier_head(num_classes))
