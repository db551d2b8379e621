"""An adaptive explicit Runge-Kutta solve whose step control stays on the device.

The algorithm is torchdiffeq 0.2.5's (rk_common.RKAdaptiveStepsizeODESolver), so that on the same
inputs it evaluates the dynamics at the same times and accepts the same steps: the first step by
Hairer, Norsett & Wanner's heuristic, the error ratio as the norm of error / (atol + rtol *
max(|y0|, |y1|)), acceptance at ratio <= 1, the next step dt * min(10, max(0.9 / ratio^(1/order),
0.2 after a rejection, 1 after an acceptance)), steps that may pass an output time, whose value is
then interpolated (4th order, from the step's mid-point). What differs is where decisions are taken:
torchdiffeq branches in Python on tensor values, about 18 host reads a step; here every decision is a
`torch.where` on the device and the loop reads one small integer a step: whether to take another step
(the state has not reached the output time), to stop, or to fail (dt underflowed or the state is not
finite, torchdiffeq's asserts). On a GPU that is one synchronisation a step instead of ~18.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from noderun.solve.dynamics import Evaluator
from noderun.solve.tableaux import Tableau

# torchdiffeq's step-size controller.
SAFETY, INCREASE_LIMIT, DECREASE_LIMIT = 0.9, 10.0, 0.2
# The loop's one read a step: what to do next.
_STOP, _STEP, _FAIL = 0, 1, 2

Norm = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _State:
    y: torch.Tensor   # the solution at t
    f: torch.Tensor   # the dynamics at (t, y): the next step's first stage
    t: torch.Tensor   # time (float64 or wider)
    dt: torch.Tensor  # the next step's size


@dataclass
class _Step:
    """A step taken from t0 to t1: what its interpolant is fitted from."""

    t0: torch.Tensor
    t1: torch.Tensor
    y0: torch.Tensor
    y1: torch.Tensor
    stages: list
    dt: torch.Tensor
    coefficients: list | None = None


def combine(base: torch.Tensor | None, stages: list, weights: tuple[float, ...], dt: torch.Tensor) -> torch.Tensor:
    """Return base + dt * sum_j weights[j] * stages[j] (base None: without it), one fused
    multiply-add per nonzero weight."""
    total = base
    for weight, stage in zip(weights, stages):
        if weight != 0:
            total = stage * (dt * weight) if total is None else torch.addcmul(total, stage, dt, value=weight)
    return total


def initial_step(evaluate: Evaluator, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor, order: int,
                 rtol: float, atol: float, norm: Norm) -> torch.Tensor:
    """Return the first step's size for a method of this order (Hairer, Norsett & Wanner, II.4;
    torchdiffeq's exponent 1/order, its `order - 1 + 1`), as torchdiffeq chooses it,
    with its branches as `torch.where` (the branch not taken is computed on safe inputs, so that its
    gradient is not NaN). Costs one evaluation of the dynamics."""
    scale = atol + y0.abs() * rtol
    d0 = norm(y0 / scale).abs()
    d1 = norm(f0 / scale).abs()
    small = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = torch.where(small, 1e-6, 0.01 * d0 / torch.where(small, 1.0, d1)).abs()
    f1 = evaluate(t0 + h0, y0 + h0 * f0)
    d2 = (norm((f1 - f0) / scale) / h0).abs()
    flat = (d1 <= 1e-15) & (d2 <= 1e-15)
    largest = torch.where(flat, 1.0, torch.maximum(d1, d2))
    h1 = torch.where(flat, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / largest) ** (1.0 / order)).abs()
    return torch.minimum(100 * h0, h1).to(t0.dtype)


def runge_kutta_step(evaluate: Evaluator, tableau: Tableau, y0: torch.Tensor, f0: torch.Tensor,
                     t0: torch.Tensor, dt: torch.Tensor, t1: torch.Tensor) -> tuple:
    """Return (y1, f1, error estimate, stages) of one step; times in the state's dtype, as torchdiffeq."""
    t0, dt, t1 = t0.to(y0.dtype), dt.to(y0.dtype), t1.to(y0.dtype)
    stages, y = [f0], y0
    for alpha, beta in zip(tableau.alpha, tableau.beta):
        y = combine(y0, stages, beta, dt)
        if alpha == 1.0:
            stages.append(evaluate(t1, y, just_before=True))
        else:
            stages.append(evaluate(t0 + alpha * dt, y))
    y1 = y if tableau.first_same_as_last else combine(y0, stages, tableau.c_sol, dt)
    return y1, stages[-1], combine(None, stages, tableau.c_error, dt), stages


def error_ratio(error: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, rtol: float, atol: float,
                norm: Norm) -> torch.Tensor:
    """Return norm(error / (atol + rtol * max(|y0|, |y1|))): at most 1 for an acceptable step."""
    return norm(error / (atol + rtol * torch.maximum(y0.abs(), y1.abs()))).abs()


@torch.no_grad()
def next_step_size(dt: torch.Tensor, ratio: torch.Tensor, order: int) -> torch.Tensor:
    """Return the next step's size after a step of size dt with this error ratio (a ratio of 0 gives
    the increase limit, as 0.9 / 0 is infinite)."""
    ratio = ratio.to(dt.dtype)
    floor = torch.where(ratio < 1, 1.0, DECREASE_LIMIT)
    factor = torch.clamp(torch.maximum(SAFETY / ratio ** (1.0 / order), floor), max=INCREASE_LIMIT)
    return (dt * factor).clamp(min=0)


def _usable(dt: torch.Tensor) -> torch.Tensor:
    # As torchdiffeq: a non-finite step size becomes the minimum step (0), and then fails the underflow test.
    return torch.where(torch.isfinite(dt), dt, 0.0).clamp(min=0)


def _what_next(state: _State, until: torch.Tensor) -> torch.Tensor:
    dt = _usable(state.dt)
    healthy = (state.t + dt > state.t) & torch.isfinite(state.y).all()
    return torch.where(until > state.t, torch.where(healthy, _STEP, _FAIL), _STOP)


def _take_step(evaluate: Evaluator, tableau: Tableau, state: _State, rtol: float, atol: float,
               norm: Norm) -> tuple[_State, _Step]:
    y0, f0, t0, dt = state.y, state.f, state.t, _usable(state.dt)
    evaluate.step_started(t0, y0, dt)
    t1 = t0 + dt
    y1, f1, error, stages = runge_kutta_step(evaluate, tableau, y0, f0, t0, dt, t1)
    ratio = error_ratio(error, y0, y1, rtol, atol, norm)
    accept = (ratio <= 1) | (dt <= 0)
    evaluate.step_decided(t0, y0, dt, accept)
    state = _State(y=torch.where(accept, y1, y0), f=torch.where(accept, f1, f0), t=torch.where(accept, t1, t0),
                   dt=next_step_size(dt, ratio, tableau.order))
    return state, _Step(t0, t1, y0, y1, stages, dt)


def _interpolant(step: _Step, tableau: Tableau) -> list:
    """Return the coefficients [e, d, c, b, a] of the step's 4th-order interpolant in x = (t - t0) / dt."""
    if step.coefficients is None:
        y0, y1, f0, f1 = step.y0, step.y1, step.stages[0], step.stages[-1]
        dt = step.dt.to(y0.dtype)
        y_mid = combine(y0, step.stages, tableau.c_mid, dt)
        a = 2 * dt * (f1 - f0) - 8 * (y1 + y0) + 16 * y_mid
        b = dt * (5 * f0 - 3 * f1) + 18 * y0 + 14 * y1 - 32 * y_mid
        c = dt * (f1 - 4 * f0) - 11 * y0 - 5 * y1 + 16 * y_mid
        step.coefficients = [y0, dt * f0, c, b, a]
    return step.coefficients


def _interpolate(step: _Step, tableau: Tableau, t: torch.Tensor) -> torch.Tensor:
    coefficients = _interpolant(step, tableau)
    x = ((t - step.t0) / (step.t1 - step.t0)).to(coefficients[0].dtype)
    total, power = coefficients[0] + x * coefficients[1], x
    for coefficient in coefficients[2:]:
        power = power * x
        total = total + power * coefficient
    return total


def solve_adaptive(evaluate: Evaluator, y0: torch.Tensor, times: torch.Tensor, tableau: Tableau, rtol: float,
                   atol: float, norm: Norm, max_num_steps: int | None = None) -> torch.Tensor:
    """Return the solution at `times` (strictly increasing, a time dtype at least float64, on y0's
    device), stacked along a new first dimension. One host read a step; raises AssertionError, as
    torchdiffeq does, when dt underflows, the state stops being finite or an output time needs more
    than max_num_steps steps."""
    f0 = evaluate(times[0], y0)
    state = _State(y=y0, f=f0, t=times[0], dt=initial_step(evaluate, times[0], y0, f0, tableau.order,
                                                            rtol, atol, norm))
    limit = max_num_steps if max_num_steps is not None else 2**31 - 1
    solution, last = [y0], None
    for until in times[1:]:
        taken, what = 0, _what_next(state, until)
        # The loop ends only right after an accepted step (a rejected one leaves t where it was), so
        # the last step taken is the one whose interpolant covers `until`.
        while (decision := int(what)) != _STOP:  # the one host read of a step
            if decision == _FAIL:
                raise AssertionError(f"underflow in dt or non-finite values in the state, at step {taken + 1}")
            if taken >= limit:
                raise AssertionError(f"max_num_steps exceeded ({taken}>={limit})")
            state, last = _take_step(evaluate, tableau, state, rtol, atol, norm)
            taken += 1
            what = _what_next(state, until)
        solution.append(_interpolate(last, tableau, until))
    return torch.stack(solution)
