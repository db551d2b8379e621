"""What every ODE model shares: dynamics that count their evaluations, and the block that integrates them."""

from __future__ import annotations

import torch
from torch import nn

from noderun.solvers import SolverSpec, integrate


class CountedDynamics(nn.Module):
    """Base of every dynamics f(t, h) in noderun: a subclass adds 1 to `nfe` in each forward call,
    which is how forward and adjoint-backward evaluations are counted (noderun.measure.NFECounter)."""

    def __init__(self) -> None:
        super().__init__()
        self.nfe = 0


class ODEBlock(nn.Module):
    """Integrates its dynamics from t=0 to t=t1 and returns the state at t1."""

    def __init__(self, dynamics: CountedDynamics, solver: SolverSpec, t1: float = 1.0, adjoint: bool = True):
        super().__init__()
        self.dynamics = dynamics
        self.solver = solver
        self.adjoint = adjoint
        self.register_buffer("times", torch.tensor([0.0, t1]), persistent=False)
        # The same times as Python floats: noderun's device solve path then reads nothing back from the device.
        self.host_times = (0.0, float(t1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return integrate(self.dynamics, h, self.times, self.solver, adjoint=self.adjoint, host_times=self.host_times)[-1]
