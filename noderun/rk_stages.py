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

Importing this module changes nothing. `use_noderun_stages(True)`, called when a run starts
(config key `speed.rk_stages`), installs noderun's step into torchdiffeq; `use_noderun_stages(False)`
puts torchdiffeq's own functions back. torchdiffeq looks its step function up at each step, so the
choice covers every adaptive RK solve that follows, the adjoint's backward solve included.

These are torchdiffeq's private functions (checked against 0.2.5, the version pyproject.toml pins):
a release that renames them makes `use_noderun_stages(True)` fail with a message, not the import.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from noderun.errors import UserError

try:  # torchdiffeq's private modules: a release may move them, and then only switching on may fail
    from torchdiffeq._impl import rk_common
    from torchdiffeq._impl.interp import _interp_fit as fit_interpolant
    from torchdiffeq._impl.misc import Perturb
except ImportError:
    rk_common = fit_interpolant = Perturb = None

_STEP = "_runge_kutta_step"      # a function of module rk_common
_INTERP_FIT = "_interp_fit"      # a method of rk_common.RKAdaptiveStepsizeODESolver


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


def _is_dispatcher(function) -> bool:
    return getattr(function, "noderun_dispatcher", False)


def _replaced_places() -> list[tuple[object, str]]:
    """Return (owner, attribute name) of each torchdiffeq function noderun replaces (owner None when
    this torchdiffeq has no such module or class)."""
    solver_class = getattr(rk_common, "RKAdaptiveStepsizeODESolver", None)
    return [(rk_common, _STEP), (solver_class, _INTERP_FIT)]


def _torchdiffeq_version() -> str:
    try:
        import torchdiffeq
    except ImportError:
        return "(not importable)"
    return getattr(torchdiffeq, "__version__", "(unknown version)")


def _check_torchdiffeq() -> None:
    """Raise UserError, naming the installed torchdiffeq's version, when it lacks what is replaced or used here."""
    found = [getattr(owner, name, None) for owner, name in _replaced_places()]
    if fit_interpolant is None or Perturb is None or None in found:
        raise UserError(f"noderun's Runge-Kutta stage arithmetic does not fit the installed torchdiffeq "
                        f"{_torchdiffeq_version()} (its private {_STEP} or {_INTERP_FIT} is missing; noderun "
                        f"is tested with 0.2.5); run with speed.rk_stages=false to use torchdiffeq's own")


def _step_dispatcher(own_step: Callable) -> Callable:
    @functools.wraps(own_step)  # keeps torchdiffeq's function as __wrapped__, for putting it back
    def dispatch_step(*args, **kwargs):
        return runge_kutta_step(*args, **kwargs)

    dispatch_step.noderun_dispatcher = True
    return dispatch_step


def _interp_fit_dispatcher(own_interp_fit: Callable) -> Callable:
    @functools.wraps(own_interp_fit)
    def dispatch_interp_fit(solver, y0, y1, k, dt):
        # A list of stages comes from noderun's step; a tensor would mean torchdiffeq's own step ran,
        # and only torchdiffeq's fit reads that layout.
        if isinstance(k, list):
            return interp_fit(solver, y0, y1, k, dt)
        return own_interp_fit(solver, y0, y1, k, dt)

    dispatch_interp_fit.noderun_dispatcher = True
    return dispatch_interp_fit


_DISPATCHERS = {_STEP: _step_dispatcher, _INTERP_FIT: _interp_fit_dispatcher}


def use_noderun_stages(enabled: bool) -> None:
    """Install noderun's stage arithmetic into torchdiffeq's adaptive RK solvers (True) or put
    torchdiffeq's own functions back (False), for the steps that follow.

    Raises UserError when enabling and the installed torchdiffeq lacks the functions replaced here.
    """
    if enabled:
        _check_torchdiffeq()
    for owner, name in _replaced_places():
        current = getattr(owner, name, None)
        if enabled and not _is_dispatcher(current):
            setattr(owner, name, _DISPATCHERS[name](current))
        elif not enabled and _is_dispatcher(current):
            setattr(owner, name, current.__wrapped__)


def noderun_stages_enabled() -> bool:
    """Return whether adaptive RK steps use noderun's stage arithmetic (its step is installed)."""
    return _is_dispatcher(getattr(rk_common, _STEP, None))


@contextmanager
def stage_arithmetic(enabled: bool) -> Iterator[None]:
    """Use noderun's stage arithmetic (installing it) or torchdiffeq's inside the block, then restore
    the previous choice."""
    previous = noderun_stages_enabled()
    use_noderun_stages(enabled)
    try:
        yield
    finally:
        use_noderun_stages(previous)
