"""ODE-Net and RK-Net: one ODE block between the downsampling and the head; and the ablation, the
ODE-Net without its ODE block (downsampling and head alone), which shows what the block adds.

The two ODE models share the architecture; they differ in how gradients are computed (adjoint method or
backpropagation through the solver's operations), which the ODE block's `adjoint` flag selects.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from noderun.models.blocks import CHANNELS, checked_downsampling, classifier_head, downsampling, group_norm
from noderun.models.ode_block import FieldDynamics, ODEBlock
from noderun.errors import UserError
from noderun.solvers import SolverSpec


class ConcatConv2d(nn.Module):
    """3×3 convolution that sees the time t as an extra constant input channel."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, 3, 1, padding=1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        time_channel = t.to(x.dtype).expand(x.shape[0], 1, x.shape[2], x.shape[3])
        return self.conv(torch.cat([time_channel, x], dim=1))


class ConvDynamics(FieldDynamics):
    """f(t, h): GN, ReLU, conv(t), GN, ReLU, conv(t), GN; the field may be compiled (speed.compile)."""

    def __init__(self, channels: int = CHANNELS):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = ConcatConv2d(channels, channels)
        self.norm2 = group_norm(channels)
        self.conv2 = ConcatConv2d(channels, channels)
        self.norm3 = group_norm(channels)

    def field(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, torch.relu(self.norm1(h)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


def build_odenet(solver: SolverSpec, downsampling_method: str = "conv", t1: float = 1.0,
                 adjoint: bool = True, num_classes: int = 10) -> nn.Sequential:
    """Return downsampling → ODE block → head; adjoint=False gives the RK-Net."""
    block = ODEBlock(ConvDynamics(), solver, t1=t1, adjoint=adjoint)
    return nn.Sequential(downsampling(downsampling_method), block, classifier_head(num_classes))


def _checked_t1(cfg: Mapping[str, Any]) -> float:
    t1 = cfg.get("t1", 1.0)
    if not isinstance(t1, (int, float)) or not t1 > 0:
        raise UserError(f"model.t1={t1} is invalid; the integration interval [0, t1] needs t1 > 0")
    return float(t1)


def build(cfg: Mapping[str, Any], solver: SolverSpec) -> nn.Sequential:
    """Return the registry's ODE-Net from its config block (`downsampling`, `t1`, `adjoint`)."""
    return build_odenet(solver, checked_downsampling(cfg.get("downsampling", "conv")), _checked_t1(cfg),
                        adjoint=bool(cfg.get("adjoint", True)))


def build_rknet(cfg: Mapping[str, Any], solver: SolverSpec) -> nn.Sequential:
    """Return the registry's RK-Net: the ODE-Net's architecture, backpropagating through the solver."""
    return build_odenet(solver, checked_downsampling(cfg.get("downsampling", "conv")), _checked_t1(cfg), adjoint=False)


def build_without_block(cfg: Mapping[str, Any], solver: SolverSpec | None = None) -> nn.Sequential:
    """Return the ODE-Net without its ODE block: its downsampling straight into its head (it has no
    solver). Its error is what the ODE-Net would reach if its block did nothing: torchdiffeq's tracker
    (issue 32) found it under 0.6 % on MNIST, so a regulariser that shrank the dynamics to nothing
    could look like a win beside the ODE-Net alone."""
    return nn.Sequential(downsampling(checked_downsampling(cfg.get("downsampling", "conv"))), classifier_head())
