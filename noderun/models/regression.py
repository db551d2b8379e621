"""The tutorial's (shared/seeds/002) toy-regression models for h(x) = x^3 + 0.1 x: a ResNet with one
20-unit tanh residual layer and its continuous counterpart, an ODE-Net whose dynamics are that layer.

Both lift x to `width` units (linear, tanh), transform them (ResNet: h + tanh(W h) once; ODE-Net:
dh/dt = tanh(W h + b) on [0, 1]) and read the prediction out linearly: a tanh on the output would
bound it to [-1, 1], and the target reaches ±16 on [-2.5, 2.5].
"""

from __future__ import annotations

import torch
from torch import nn

from noderun.models.ode_block import ODEBlock
from noderun.solvers import SolverSpec

REGRESSION_MODELS = ("resnet", "odenet")


class TanhResidual(nn.Module):
    """h + tanh(W h + b): one residual layer, an Euler step of size 1 of the ODE-Net's dynamics."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + torch.tanh(self.linear(h))


class TanhDynamics(nn.Module):
    """f(t, h) = tanh(W h + b), autonomous (the tutorial's dynamics take no time input)."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(h))


def build_regression_model(name: str, solver: SolverSpec, width: int = 20, adjoint: bool = True) -> nn.Sequential:
    """Return the tutorial's 1-in, 1-out `resnet` or `odenet` (see the module's docstring)."""
    middle = TanhResidual(width) if name == "resnet" else ODEBlock(TanhDynamics(width), solver, adjoint=adjoint)
    return nn.Sequential(nn.Linear(1, width), nn.Tanh(), middle, nn.Linear(width, 1))
