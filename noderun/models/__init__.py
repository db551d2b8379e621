"""Model construction from the run's config: the four Table-1 classifiers."""

from __future__ import annotations

from torch import nn

from noderun.errors import UserError
from noderun.models.mlp import build_mlp
from noderun.models.ode_block import CountedDynamics
from noderun.models.odenet import build_odenet
from noderun.models.resnet import build_resnet
from noderun.solvers import SolverSpec

MODELS = ("mlp", "resnet", "rknet", "odenet")
DOWNSAMPLING = ("conv", "res")


def build_model(name: str, solver: SolverSpec, downsampling: str = "conv", t1: float = 1.0,
                adjoint: bool = True) -> nn.Module:
    """Return the named Table-1 model; rknet is the ODE-Net with backpropagation through the solver."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if downsampling not in DOWNSAMPLING:
        raise UserError(f"model.downsampling={downsampling!r} is invalid; choose one of: {', '.join(DOWNSAMPLING)}")
    if not t1 > 0:
        raise UserError(f"model.t1={t1} is invalid; the integration interval [0, t1] needs t1 > 0")
    if name == "mlp":
        return build_mlp()
    if name == "resnet":
        return build_resnet(downsampling)
    return build_odenet(solver, downsampling, t1=t1, adjoint=adjoint and name == "odenet")


def dynamics_of(model: nn.Module) -> list[CountedDynamics]:
    """Return the model's ODE dynamics modules (empty for models without an ODE block)."""
    return [m for m in model.modules() if isinstance(m, CountedDynamics)]


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
