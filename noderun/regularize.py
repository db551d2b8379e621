"""Regularised dynamics: a penalty added to a training loss that steers an ODE towards dynamics an
adaptive solver integrates in fewer steps (config `trainer.regularize`).

- `error_estimate` (Pal, Edelman & Rackauckas, ICML 2023, local regularisation): at a time t_r drawn
  uniformly from the solve's interval, the accepted step that covers t_r is taken once more, from its
  start state, with gradients on; the penalty is that step's error estimate, as the solver's step
  control measures it (RMS of error / (atol + rtol · max(|y0|, |y1|)), at most 1 for an accepted
  step), times the step's size. The start state is held fixed (detached), so the penalty's gradient
  reaches the dynamics' parameters through that one step and the adjoint is unchanged. The step's
  evaluations are the regulariser's, counted apart from the model's.
- `kinetic` (Finlay et al., ICML 2020): ∫ mean(f²) dt over the solve, the mean over the state's
  entries of each example, averaged over the batch; integrated as one extra state entry per example,
  so it costs no extra evaluation (the model's own evaluations compute it).

Regularisation acts only on adaptive solves (a fixed grid's cost does not depend on the dynamics),
only while gradients are on (training steps; evaluation never regularises, so its NFE is the
model's alone), and only at a weight above zero: at weight 0 nothing changes, to the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from noderun.errors import UserError
from noderun.solve.adaptive import error_ratio, runge_kutta_step
from noderun.solve.dynamics import Evaluator, rms_norm
from noderun.solve.tableaux import ADAPTIVE

METHODS = ("none", "error_estimate", "kinetic")
# The methods with an error estimate the error_estimate penalty can take (the device path's tableaux).
ESTIMATING_METHODS = tuple(sorted(ADAPTIVE))


@dataclass(frozen=True)
class RegularizerSpec:
    """The penalty's method (one of METHODS) and its weight in the loss."""

    method: str = "none"
    weight: float = 0.0

    @property
    def active(self) -> bool:
        """Whether a penalty is computed at all (a method, at a weight above zero)."""
        return self.method != "none" and self.weight > 0


class Regularizer:
    """The regulariser of one ODE a model solves (held beside its SolveStats as `regularizer`):
    `integrate` hands it each solve that runs with gradients on; it sums the weighted penalties of
    those solves and the evaluations it spent itself until they are taken."""

    def __init__(self, spec: RegularizerSpec):
        self.spec = spec
        self._penalty: torch.Tensor | None = None
        self.evaluations = 0

    def take(self) -> tuple[torch.Tensor | None, int]:
        """Return (the weighted penalty since the last take, or None; the regulariser's evaluations
        since then) and start afresh."""
        taken = (self._penalty, self.evaluations)
        self._penalty, self.evaluations = None, 0
        return taken

    def _add(self, penalty: torch.Tensor) -> None:
        weighted = self.spec.weight * penalty
        self._penalty = weighted if self._penalty is None else self._penalty + weighted

    def prepare(self, func: nn.Module, y0: torch.Tensor, host_times: tuple[float, ...], rtol: float, atol: float,
                method: str) -> tuple[nn.Module, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """Return (the dynamics to solve, their initial state, the function that turns their solution
        into the model's and adds this solve's penalty) for a solve at increasing `host_times`."""
        if self.spec.method == "kinetic":
            dynamics = KineticDynamics(func, y0.shape)

            def finish(solution: torch.Tensor) -> torch.Tensor:
                self._add(solution[-1, :, -1].mean())
                return solution[..., :-1].reshape(solution.shape[0], *y0.shape)

            return dynamics, torch.cat([y0.reshape(len(y0), -1), y0.new_zeros(len(y0), 1)], dim=1), finish
        capture = StepCapture(func, _uniform_time(host_times))

        def finish_estimate(solution: torch.Tensor) -> torch.Tensor:
            if capture.start is not None:
                t0, start, dt = capture.start
                penalty, evaluations = step_error_penalty(func, ADAPTIVE[method], t0, start, dt, rtol, atol)
                self._add(penalty)
                self.evaluations += evaluations
            return solution

        return capture, y0, finish_estimate


def _uniform_time(host_times: tuple[float, ...]) -> float:
    """Return a time drawn uniformly from [first, last) output time (torch's global generator, so that
    a run's seed fixes it)."""
    first, last = host_times[0], host_times[-1]
    return first + (last - first) * float(torch.rand(()))


class KineticDynamics(nn.Module):
    """The dynamics with one more state entry per example, d/dt of which is the mean of f² over the
    example's entries: the state is (batch, entries + 1), the last column the kinetic energy so far."""

    def __init__(self, func: nn.Module, shape: torch.Size):
        super().__init__()
        self.func, self.shape = func, tuple(shape)

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        f = self.func(t, state[:, :-1].reshape(self.shape)).reshape(len(state), -1)
        return torch.cat([f, f.pow(2).mean(1, keepdim=True)], dim=1)


class StepCapture(nn.Module):
    """The dynamics unchanged, plus step callbacks that keep (start time, start state, size) of the
    accepted step covering time `t_r`, as device tensors chosen by torch.where (no host read): from
    the device path's decision callback, or torchdiffeq's accepted-step callback."""

    def __init__(self, func: nn.Module, t_r: float):
        super().__init__()
        self.func, self.t_r = func, t_r
        self.start: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.func(t, y)

    def callback_step_decided(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor, accepted: torch.Tensor) -> None:
        self._keep(t0, y0, dt, accepted)

    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self._keep(t0, y0, dt, torch.ones((), dtype=torch.bool, device=y0.device))

    def _keep(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor, accepted: torch.Tensor) -> None:
        t0, dt, y0 = t0.detach(), dt.detach(), y0.detach()
        covers = accepted & (t0 <= self.t_r) & (self.t_r < t0 + dt)
        if self.start is None:  # the first step starts at the first output time, so it covers t_r or precedes it
            self.start = (t0, y0, dt)
        kept_t0, kept_y0, kept_dt = self.start
        self.start = (torch.where(covers, t0, kept_t0), torch.where(covers, y0, kept_y0),
                      torch.where(covers, dt, kept_dt))


def step_error_penalty(func: Callable, tableau, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor,
                       rtol: float, atol: float) -> tuple[torch.Tensor, int]:
    """Return (the error estimate of one step of `tableau` from (t0, y0) of size dt, as the step
    control's ratio, times dt; the evaluations it took). Gradients reach func's parameters."""
    evaluate = Evaluator(func)
    with torch.enable_grad():
        f0 = evaluate(t0, y0)
        y1, _, error, _ = runge_kutta_step(evaluate, tableau, y0, f0, t0, dt, t0 + dt)
        ratio = error_ratio(error, y0, y1, rtol, atol, rms_norm)
    return ratio * dt.to(ratio.dtype), 1 + len(tableau.alpha)


def adaptive(solver: Any) -> bool:
    """Return whether a solver (a noderun.solvers.SolverSpec, which imports this module) chooses its own
    steps, so that regularised dynamics can cost fewer (SciPy's solvers are left out: their steps are
    not noderun's to repeat)."""
    return not solver.fixed_grid and solver.method != "scipy_solver"


def acts(spec: RegularizerSpec, solver: Any) -> bool:
    """Return whether `spec` regularises an ODE solved by `solver` (a SolverSpec): the one rule that
    both the models (regularize) and the run key (noderun.run.identity) follow."""
    return spec.active and adaptive(solver)


def regularizer_spec(trainer: Mapping[str, Any], solver: Any) -> RegularizerSpec:
    """Return the regulariser a run's trainer block asks for (`regularize: {method, weight}`) for runs
    on `solver` (a SolverSpec), or raise UserError naming a bad value and the valid ones."""
    block = trainer.get("regularize") or {}
    spec = RegularizerSpec(str(block.get("method", "none")), float(block.get("weight", 0.0)))
    if spec.method not in METHODS:
        raise UserError(f"trainer.regularize.method={spec.method!r} is invalid; choose one of: {', '.join(METHODS)}")
    if spec.active and spec.method == "error_estimate" and adaptive(solver) and solver.method not in ESTIMATING_METHODS:
        raise UserError(f"trainer.regularize.method=error_estimate needs a solver whose error estimate noderun can "
                        f"take again; solver={solver.method} is not one; choose one of: {', '.join(ESTIMATING_METHODS)}")
    return spec


def regularizers_of(model: nn.Module) -> list[Regularizer]:
    """Return the regularisers of the ODEs a model solves (those its solving modules hold)."""
    return [m.regularizer for m in model.modules() if isinstance(getattr(m, "regularizer", None), Regularizer)]


def regularize(model: nn.Module, spec: RegularizerSpec) -> int:
    """Give each module of the model that solves an ODE with an adaptive solver (its `regularizer`
    slot) a Regularizer of `spec`, or none when the spec is inactive; return how many it gave."""
    given = 0
    for module in model.modules():
        if hasattr(module, "regularizer") and hasattr(module, "solver"):
            module.regularizer = Regularizer(spec) if acts(spec, module.solver) else None
            given += module.regularizer is not None
    return given


def regularize_fields(spec: RegularizerSpec, regularized: int) -> dict[str, Any]:
    """Return what a run's summary says of its regularisation: the method and weight where the
    regulariser acts on one of its solves (`regularized`, as `regularize` returned), else none and 0."""
    acting = spec if regularized else RegularizerSpec()
    return {"regularize": acting.method, "regularize_weight": acting.weight}


def take_penalty(regularizers: list[Regularizer]) -> tuple[torch.Tensor | None, int]:
    """Return (the weighted penalties the regularisers hold, summed, or None; their evaluations) and
    start them afresh."""
    total, evaluations = None, 0
    for regularizer in regularizers:
        penalty, spent = regularizer.take()
        evaluations += spent
        if penalty is not None:
            total = penalty if total is None else total + penalty
    return total, evaluations
