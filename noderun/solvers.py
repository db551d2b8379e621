"""Solver choice and integration: the one place that calls torchdiffeq or noderun's device path.

Model code holds a SolverSpec and calls `integrate`; which solve path (`SolverSpec.path`: torchdiffeq,
or noderun.solve's device-side step control), entry point, options and adjoint options that means is
decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

from noderun import solve
from noderun.errors import UserError

METHODS = tuple(sorted(SOLVERS))
FIXED_GRID_METHODS = tuple(m for m in METHODS if issubclass(SOLVERS[m], FixedGridODESolver))
ADJOINT_NORMS = ("default", "seminorm")
# torchdiffeq's solvers, or noderun's device-side step control (noderun.solve: the same steps, at most
# one host read a step) for the methods it has.
PATHS = ("torchdiffeq", "device")
DEVICE_METHODS = solve.METHODS


def default_path(method: str) -> str:
    """Return the solve path a method takes unless one is asked for: noderun's device path where it
    has the method (as the solver configs say), torchdiffeq's solvers for the others."""
    return "device" if method in DEVICE_METHODS else "torchdiffeq"


@dataclass(frozen=True)
class SolverSpec:
    """A torchdiffeq method with its tolerances (adaptive methods) or step size (fixed-grid ones), and
    the solve path that runs it (`path`: torchdiffeq's solvers, or noderun's device-side loop; left
    out, `default_path(method)`: the device path where it has the method). A path given explicitly is
    kept as given, so that validate_solver refuses `device` for a method it lacks."""

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    step_size: float | None = None
    adjoint_norm: str = "default"
    scipy_method: str | None = None
    max_num_steps: int | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.path is None:
            object.__setattr__(self, "path", default_path(self.method))

    @property
    def fixed_grid(self) -> bool:
        """Whether the method steps on a fixed grid (tolerances then play no part)."""
        return self.method in FIXED_GRID_METHODS

    def options(self) -> dict:
        """Return the `options` dict torchdiffeq's odeint takes for this spec."""
        if self.fixed_grid:
            return {"step_size": self.step_size} if self.step_size is not None else {}
        if self.method == "scipy_solver":
            return {"solver": self.scipy_method or "RK45"}
        return {"max_num_steps": self.max_num_steps} if self.max_num_steps else {}

    def adjoint_options(self) -> dict:
        """Return the adjoint's options: the forward's, plus the seminorm when asked for."""
        options = self.options()
        if self.adjoint_norm == "seminorm":
            options["norm"] = "seminorm"
        return options


def validate_solver(spec: SolverSpec) -> SolverSpec:
    """Return spec unchanged, or raise UserError naming the first bad value and the valid ones."""
    if spec.method not in METHODS:
        raise UserError(f"unknown solver {spec.method!r}; choose one of: {', '.join(METHODS)}")
    for key in ("rtol", "atol"):
        value = getattr(spec, key)
        if not isinstance(value, (int, float)) or not value > 0:
            raise UserError(f"solver.{key}={value} is invalid; tolerances must be numbers > 0, e.g. 1e-3")
    if spec.step_size is not None and not spec.step_size > 0:
        raise UserError(f"solver.step_size={spec.step_size} is invalid; use a number > 0 or null")
    if spec.max_num_steps is not None and not spec.max_num_steps >= 1:
        raise UserError(f"solver.max_num_steps={spec.max_num_steps} is invalid; use a whole number >= 1 or null")
    if spec.adjoint_norm not in ADJOINT_NORMS:
        raise UserError(f"solver.adjoint_norm={spec.adjoint_norm!r} is invalid; choose one of: {', '.join(ADJOINT_NORMS)}")
    if spec.path not in PATHS:
        raise UserError(f"solver.path={spec.path!r} is invalid; choose one of: {', '.join(PATHS)}")
    if spec.path == "device" and spec.method not in DEVICE_METHODS:
        raise UserError(f"solver.path=device has no {spec.method!r}; choose solver.path=torchdiffeq or one of: "
                        f"{', '.join(DEVICE_METHODS)}")
    if spec.method == "scipy_solver":
        try:
            import scipy  # noqa: F401
        except ImportError:
            raise UserError("solver=scipy_solver needs SciPy; install it with 'pip install scipy'") from None
    return spec


def integrate(func: nn.Module, y0: torch.Tensor, times: torch.Tensor, spec: SolverSpec, adjoint: bool,
              host_times: Sequence[float] | None = None) -> torch.Tensor:
    """Solve dy/dt = func(t, y) from y0 at `times`; gradients by the adjoint method when `adjoint`.

    `host_times`: the same times as Python floats, when the caller knows them; the device path then
    reads nothing back from the device to lay its grid or tell the direction of time (without them it
    copies `times` to the host once a solve). torchdiffeq's path does not use them."""
    if spec.path == "device":
        problem = solve.Problem(spec.method, spec.rtol, spec.atol, spec.step_size, spec.max_num_steps)
        if adjoint:
            return solve.adjoint_solve(problem, func, y0, times, seminorm=spec.adjoint_norm == "seminorm",
                                       host_times=host_times)
        return solve.forward_solve(problem, func, y0, times, host_times)
    if adjoint:
        return odeint_adjoint(func, y0, times, rtol=spec.rtol, atol=spec.atol, method=spec.method,
                              options=spec.options(), adjoint_options=spec.adjoint_options())
    return odeint(func, y0, times, rtol=spec.rtol, atol=spec.atol, method=spec.method, options=spec.options())
