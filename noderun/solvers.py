"""Solver choice and integration: the one place that calls torchdiffeq or noderun's device path.

Model code holds a SolverSpec and calls `integrate`; which solve path (`SolverSpec.path`: torchdiffeq,
or noderun.solve's device-side step control), entry point, options and adjoint options that means is
decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

from noderun import solve
from noderun.errors import UserError
from noderun.regularize import Regularizer

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


def solver_spec(cfg: Any) -> SolverSpec:
    """Return the validated solver of a run's config (its `solver` group; UserError naming a bad value).
    The group's types are the schema's (noderun.schema), so only the values are checked here."""
    s = cfg.solver
    return validate_solver(SolverSpec(method=s.method, rtol=s.rtol, atol=s.atol, step_size=s.get("step_size"),
                                      adjoint_norm=s.get("adjoint_norm", "default"),
                                      scipy_method=s.get("scipy_method"), max_num_steps=s.get("max_num_steps"),
                                      path=s.get("path", "torchdiffeq")))


def task_solver(cfg: Any, method: str, rtol: float = 1e-3, atol: float = 1e-3,
                step_size: float | None = None) -> SolverSpec:
    """Return the validated solver a measurement task (tolerance, gradcheck, memory, solver_accuracy)
    builds for a method, tolerances and step size of its own settings, on the run's solve path
    (`solver.path`) where that path has the method, else on torchdiffeq's: the device path has only
    some methods, and a task that compares many runs the others there. UserError for a bad value."""
    path = cfg.solver.get("path") if "solver" in cfg else None
    if path == "device":  # SolverSpec's default path: the device path where it has the method
        path = None
    return validate_solver(SolverSpec(method=method, rtol=rtol, atol=atol, step_size=step_size, path=path))


DIRECTIONS = ("forward", "backward")
_STEP_STARTED, _ACCEPTED, _REJECTED = "callback_step", "callback_accept_step", "callback_reject_step"
# The device path (noderun.solve) cannot say on the host whether it accepted a step without reading the
# decision: it passes the decision on as a device tensor, to this callback, after callback_step.
_DECIDED = "callback_step_decided"


@dataclass
class StepCounts:
    """Steps counted so far, by direction, as SolveStats holds them: taking one reads no tensor value
    (the device path's decisions stay a device tensor, summed, until `accepted` is asked for)."""

    started: dict[str, int]
    host_accepted: dict[str, int]
    host_rejected: dict[str, int]
    decided: dict[str, int | torch.Tensor]  # device decisions accepted (a tensor once there is one)
    decisions: dict[str, int]  # device decisions made

    def accepted(self, since: StepCounts | None = None) -> dict[str, int]:
        """Return the steps accepted by direction (since the counts `since`); reads the device sums."""
        return {d: self._accepted(d) - (since._accepted(d) if since else 0) for d in DIRECTIONS}

    def rejected(self, since: StepCounts | None = None) -> dict[str, int]:
        """Return the steps rejected by direction (since the counts `since`); reads the device sums."""
        return {d: self._rejected(d) - (since._rejected(d) if since else 0) for d in DIRECTIONS}

    def _accepted(self, d: str) -> int:
        return self.host_accepted[d] + int(self.decided[d])

    def _rejected(self, d: str) -> int:
        return self.host_rejected[d] + self.decisions[d] - int(self.decided[d])


class SolveStats:
    """What the solves of one ODE have cost: evaluations of its dynamics and solver steps accepted and
    rejected, each in the forward solve and in the adjoint's backward solve ("forward", "backward"; with
    backpropagation through the solver nothing is evaluated backwards).

    `integrate(..., stats=)` fills it, also later, while autograd runs an adjoint's backward solve: a
    model holds one for each ODE it solves (`solve_stats_of` finds them) and passes it to every solve.
    Evaluations and host-side step counts are Python numbers; the device path's step decisions are
    summed on the device and read only when asked for (`counts().accepted()`), so counting reads no
    tensor value. The SciPy wrapper reports no steps (0)."""

    def __init__(self) -> None:
        self.evaluations = dict.fromkeys(DIRECTIONS, 0)
        self._steps = StepCounts(*(dict.fromkeys(DIRECTIONS, 0) for _ in range(5)))
        # Called with the direction as each step starts (noderun.measure.SolverSteps marks host reads by them).
        self.step_listeners: list[Callable[[str], None]] = []

    def take_evaluations(self) -> dict[str, int]:
        """Return the evaluations by direction since the last take, and count afresh."""
        taken, self.evaluations = self.evaluations, dict.fromkeys(DIRECTIONS, 0)
        return taken

    def counts(self) -> StepCounts:
        """Return the steps counted so far (a copy; no tensor value is read)."""
        c = self._steps
        return StepCounts(dict(c.started), dict(c.host_accepted), dict(c.host_rejected), dict(c.decided),
                          dict(c.decisions))

    def callbacks(self, spec: SolverSpec, func: object) -> Iterator[tuple[str, Callable]]:
        """Yield (name, callback) for each step callback the spec's solver calls, forwards and in the
        adjoint's backward solve: each counts into these statistics, then calls func's own callback of
        that name where it has one (a user's, or a test's)."""
        names: tuple[str, ...] = ()
        if spec.method != "scipy_solver":  # torchdiffeq warns of a callback its solver never calls
            names = (_STEP_STARTED,) if spec.fixed_grid else \
                (_STEP_STARTED, _DECIDED) if spec.path == "device" else (_STEP_STARTED, _ACCEPTED, _REJECTED)
        for name in names:
            for suffix, direction in (("", "forward"), ("_adjoint", "backward")):
                yield name + suffix, self._counter(name, direction, spec.fixed_grid, getattr(func, name + suffix, None))

    def _counter(self, name: str, direction: str, fixed_grid: bool, own: Callable | None) -> Callable:
        c = self._steps

        def count(t0, y0, dt, *decision) -> None:
            if name == _STEP_STARTED:
                c.started[direction] += 1
                c.host_accepted[direction] += int(fixed_grid)  # a fixed-grid step is always taken
                for listener in self.step_listeners:
                    listener(direction)
            elif name == _DECIDED:
                c.decided[direction] = decision[0].detach() + c.decided[direction]
                c.decisions[direction] += 1
            elif name == _ACCEPTED:
                c.host_accepted[direction] += 1
            else:
                c.host_rejected[direction] += 1
            if own is not None:
                own(t0, y0, dt, *decision)

        return count


class _Counted(nn.Module):
    """The dynamics as a solve sees them: each evaluation counted into a SolveStats, as forward or, for
    the adjoint, backward (its backward solve evaluates with gradients on, its forward solve without),
    and the solver's step callbacks counting steps. Its parameters are the dynamics' own."""

    def __init__(self, func: nn.Module, stats: SolveStats, spec: SolverSpec, adjoint: bool):
        super().__init__()
        self.func, self.stats, self.adjoint = func, stats, adjoint
        for name, callback in stats.callbacks(spec, func):
            setattr(self, name, callback)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.stats.evaluations["backward" if self.adjoint and torch.is_grad_enabled() else "forward"] += 1
        return self.func(t, y)


def solve_stats_of(model: nn.Module) -> list[SolveStats]:
    """Return the SolveStats of each ODE the model solves (the modules holding one as `solve_stats`)."""
    return [m.solve_stats for m in model.modules() if isinstance(getattr(m, "solve_stats", None), SolveStats)]


def integrate(func: nn.Module, y0: torch.Tensor, times: torch.Tensor, spec: SolverSpec, adjoint: bool,
              host_times: Sequence[float] | None = None, stats: SolveStats | None = None,
              regularizer: Regularizer | None = None) -> torch.Tensor:
    """Solve dy/dt = func(t, y) from y0 at `times`; gradients by the adjoint method when `adjoint`.

    `host_times`: the same times as Python floats, when the caller knows them; the device path then
    reads nothing back from the device to lay its grid or tell the direction of time (without them it
    copies `times` to the host once a solve). torchdiffeq's path does not use them. `stats`: where the
    solve counts its evaluations and steps (also those of the adjoint's backward solve, later).
    `regularizer`: where a training solve (gradients on) adds its penalty (noderun.regularize); the
    solution returned is the model's either way."""
    if regularizer is not None and torch.is_grad_enabled():
        host = tuple(host_times) if host_times is not None else tuple(times.tolist())
        func, y0, finish = regularizer.prepare(func, y0, host, spec.rtol, spec.atol, spec.method)
        return finish(integrate(func, y0, times, spec, adjoint, host_times, stats))
    if stats is not None:
        func = _Counted(func, stats, spec, adjoint)
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
