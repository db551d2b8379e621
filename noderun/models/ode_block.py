"""What every ODE model shares: dynamics whose field may be compiled, and the block that integrates them
(its solves' statistics, evaluations and steps, in `solve_stats`; its regulariser, if any, in `regularizer`)."""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Callable

import torch
from torch import nn

from noderun.regularize import Regularizer
from noderun.solvers import SolverSpec, SolveStats, integrate


class FieldDynamics(nn.Module):
    """Dynamics whose arithmetic is `field(t, h)`, which `forward` runs as it is or compiled
    (`compile_dynamics`, config key speed.compile). `compile_backend`: None (run the field as it is) or
    the torch.compile backend that runs it. Evaluations are counted by the solve (SolveStats), outside
    any compiled graph."""

    def __init__(self) -> None:
        super().__init__()
        self.compile_backend: str | None = None

    def field(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.compile_backend is None:
            return self.field(t, h)
        return _compiled_field(self.compile_backend)(self, t, h)


def _field(dynamics: FieldDynamics, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return dynamics.field(t, h)


@functools.cache
def _compiled_field(backend: str) -> Callable[[FieldDynamics, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return `_field` compiled with the backend, made once for every dynamics: the module is an argument
    of the compiled function, not captured by it, so a copy of a model (copy.deepcopy) runs its own weights."""
    if backend == "inductor":
        _inductor_cache_per_capability()
    return torch.compile(_field, backend=backend)


def _inductor_cache_per_capability() -> None:
    """Point torch.compile's on-disk kernel cache at a folder of this CPU capability's own (under the
    user's TORCHINDUCTOR_CACHE_DIR, or the system's temporary folder). Why: torch 2.14's inductor cache
    does not tell ATen's CPU capabilities apart, and a kernel compiled under AVX512 and reused under
    ATEN_CPU_CAPABILITY=avx2 returned NaN and garbage without an error (measured 2026-12-06 on an AMD
    EPYC: tests/test_compile.py failed with the shared cache and passed with a fresh one)."""
    capability = f"noderun-{torch.backends.cpu.get_cpu_capability().lower()}"
    base = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "torchinductor")
    if os.path.basename(os.path.normpath(base)) != capability:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(base, capability)


def compile_dynamics(model: nn.Module, backend: str | None = "inductor") -> int:
    """Run the field of each of the model's FieldDynamics through torch.compile with `backend` (None:
    uncompiled again); return how many there are (0: the model has none, e.g. ResNet or the latent ODE).
    Compiling happens at the first evaluation of each new input shape, dtype and grad mode."""
    dynamics = [m for m in model.modules() if isinstance(m, FieldDynamics)]
    for d in dynamics:
        d.compile_backend = backend
    return len(dynamics)


class ODEBlock(nn.Module):
    """Integrates its dynamics from t=0 to t=t1 and returns the state at t1; `solve_stats` counts the
    solves' evaluations and steps (noderun.solvers.SolveStats)."""

    def __init__(self, dynamics: nn.Module, solver: SolverSpec, t1: float = 1.0, adjoint: bool = True):
        super().__init__()
        self.dynamics = dynamics
        self.solve_stats = SolveStats()
        # noderun.regularize.regularize sets it for a regularised training run
        self.regularizer: Regularizer | None = None
        self.solver = solver
        self.adjoint = adjoint
        self.register_buffer("times", torch.tensor([0.0, t1]), persistent=False)
        # The same times as Python floats: noderun's device solve path then reads nothing back from the device.
        self.host_times = (0.0, float(t1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return integrate(self.dynamics, h, self.times, self.solver, adjoint=self.adjoint, host_times=self.host_times,
                         stats=self.solve_stats, regularizer=self.regularizer)[-1]
