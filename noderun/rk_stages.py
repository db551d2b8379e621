"""Runge-Kutta stage arithmetic for torchdiffeq's adaptive RK solvers (dopri5, dopri8, bosh3, ...).

torchdiffeq keeps a step's stage derivatives k_1..k_s in one tensor with the stage as its *last*
dimension and forms each combination y0 + dt * sum_j b_ij k_j as a broadcast product summed over
that dimension. Every write of a stage and every combination then walks memory with a stride of s
elements; on a CPU that arithmetic took about a quarter of an ODE-Net training step (profile in
README, *Performance*). Here the stages are kept as separate tensors and each combination is a
chain of fused multiply-adds (`torch.addcmul`), each reading one stage contiguously: about 8x
faster than the strided form for an ODE-Net's state on this CPU.

The steps taken are the same: same tableau, same stage times, same error estimate and
interpolation, so the solver accepts and rejects the same steps (up to float rounding in the last
bits of a sum). Gradients flow through these operations as through torchdiffeq's, so backpropagating
through the solver works unchanged.

`use_noderun_stages(False)` (config key `speed.rk_stages=false`) restores torchdiffeq's own
arithmetic; the choice is read when a step is taken, so it covers the adjoint's backward solve too.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torchdiffeq._impl import rk_common
from torchdiffeq._impl.interp import _interp_fit as fit_interpolant
from torchdiffeq._impl.misc import Perturb

_TORCHDIFFEQ_STEP = rk_common._runge_kutta_step
_TORCHDIFFEQ_INTERP_FIT = rk_common.RKAdaptiveStepsizeODESolver._interp_fit
_enabled = True


def linear_combination(base: torch.Tensor | None, stages: list[torch.Tensor],
                       coefficients: torch.Tensor) -> torch.Tensor:
    """Return base + sum_j coefficients[j] * stages[j] (base None: just the sum), one fused
    multiply-add per stage."""
    total = base
    for stage, coefficient in zip(stages, coefficients.unbind()):
        total = stage * coefficient if total is None else torch.addcmul(total, stage, coefficient)
    return total


def runge_kutta_step(func, y0: torch.Tensor, f0: torch.Tensor, t0: torch.Tensor, dt: torch.Tensor,
                     t1: torch.Tensor, tableau) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """Take one explicit Runge-Kutta step: return (y1, f1, y1_error, stages).

    The contract of torchdiffeq's `_runge_kutta_step`, except that the stages come back as a list of
    tensors (consumed only by `interp_fit` below).
    """
    t_dtype = y0.abs().dtype
    t0, dt, t1 = t0.to(t_dtype), dt.to(t_dtype), t1.to(t_dtype)
    stages = [f0]
    y_stage = y0
    for alpha, beta in zip(tableau.alpha, tableau.beta):
        if alpha == 1.0:
            # As torchdiffeq: the last stage is evaluated just before t1, in case of a discontinuity there.
            t_stage, perturb = t1, Perturb.PREV
        else:
            t_stage, perturb = t0 + alpha * dt, Perturb.NONE
        y_stage = linear_combination(y0, stages, beta * dt)
        stages.append(func(t_stage, y_stage, perturb=perturb))
    first_same_as_last = tableau.c_sol[-1] == 0 and (tableau.c_sol[:-1] == tableau.beta[-1]).all()
    y1 = y_stage if first_same_as_last else linear_combination(y0, stages, dt * tableau.c_sol)
    y1_error = linear_combination(None, stages, dt * tableau.c_error)
    return y1, stages[-1], y1_error, stages


def interp_fit(solver, y0: torch.Tensor, y1: torch.Tensor, stages: list, dt: torch.Tensor) -> list:
    """Return the step's interpolating polynomial, as torchdiffeq's `_interp_fit` does, from a stage list."""
    dt = dt.type_as(y0)
    y_mid = linear_combination(y0, stages, dt * solver.mid)
    return fit_interpolant(y0, y1, y_mid, stages[0], stages[-1], dt)


def _dispatch_step(*args, **kwargs):
    return (runge_kutta_step if _enabled else _TORCHDIFFEQ_STEP)(*args, **kwargs)


def _dispatch_interp_fit(solver, y0, y1, k, dt):
    # A list means the step above was noderun's; a tensor, torchdiffeq's.
    if isinstance(k, list):
        return interp_fit(solver, y0, y1, k, dt)
    return _TORCHDIFFEQ_INTERP_FIT(solver, y0, y1, k, dt)


def use_noderun_stages(enabled: bool) -> None:
    """Choose noderun's stage arithmetic (True) or torchdiffeq's own (False) for the steps that follow."""
    global _enabled
    _enabled = bool(enabled)


def noderun_stages_enabled() -> bool:
    """Return whether adaptive RK steps use noderun's stage arithmetic."""
    return _enabled


@contextmanager
def stage_arithmetic(enabled: bool) -> Iterator[None]:
    """Use noderun's stage arithmetic (or not) inside the block, then restore the previous choice."""
    previous = _enabled
    use_noderun_stages(enabled)
    try:
        yield
    finally:
        use_noderun_stages(previous)


# torchdiffeq looks the step function up in its module at each step, so replacing the module
# attribute reaches every adaptive RK solver; the dispatchers keep torchdiffeq's code one switch away.
rk_common._runge_kutta_step = _dispatch_step
rk_common.RKAdaptiveStepsizeODESolver._interp_fit = _dispatch_interp_fit
