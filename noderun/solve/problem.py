"""A solve of the device path: the method and its settings, the output times, and the one function
that runs it forwards or backwards in time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from noderun.solve.adaptive import Norm, solve_adaptive
from noderun.solve.dynamics import Evaluator, rms_norm
from noderun.solve.fixed_grid import STEPS, solve_fixed_grid
from noderun.solve.tableaux import ADAPTIVE

METHODS = tuple(sorted([*ADAPTIVE, *STEPS]))


@dataclass(frozen=True)
class OutputTimes:
    """Strictly increasing output times twice: `tensor` on the state's device, for the arithmetic, and
    `host`, the same values as Python floats, for the decisions the host takes from them (a fixed
    grid's steps, which output time falls in which step)."""

    tensor: torch.Tensor
    host: tuple[float, ...]

    def interval_backwards(self, i: int) -> "OutputTimes":
        """Return the times from output i back to output i - 1, negated (so increasing)."""
        return OutputTimes(-self.tensor[i - 1 : i + 1].flip(0), (-self.host[i], -self.host[i - 1]))


def output_times(times: torch.Tensor, host: Sequence[float] | None = None) -> tuple[OutputTimes, bool]:
    """Return the output times in increasing order, and whether they were given decreasing (the solve
    then runs backwards in time). `host`: the same times as Python floats, when the caller knows them
    (they are rounded to the tensor's dtype here); without them the tensor is copied to the host, on a
    GPU one synchronisation a solve."""
    if times.ndim != 1 or len(times) < 2:
        raise ValueError(f"the output times must be a 1-D tensor of at least 2 times, got shape {tuple(times.shape)}")
    values = torch.tensor(host, dtype=times.dtype).tolist() if host is not None else times.tolist()
    if len(values) != len(times):
        raise ValueError(f"{len(values)} host times were given for {len(times)} output times")
    reverse = values[0] > values[1]
    if reverse:
        times, values = -times, [-v for v in values]
    if not all(b > a for a, b in zip(values, values[1:])):
        raise ValueError("the output times must be strictly increasing or strictly decreasing")
    return OutputTimes(times.detach(), tuple(values)), reverse


@dataclass(frozen=True)
class Problem:
    """How to solve: `method` (one of METHODS), tolerances (adaptive methods), step size (fixed grids;
    None: step from output time to output time) and the most steps per output time (None: no limit)."""

    method: str
    rtol: float = 1e-3
    atol: float = 1e-3
    step_size: float | None = None
    max_num_steps: int | None = None

    def solve(self, evaluate: Evaluator, y0: torch.Tensor, times: OutputTimes, norm: Norm = rms_norm) -> torch.Tensor:
        """Return the solution at the (increasing) output times, stacked along a new first dimension
        (to solve backwards, negate the times and give the Evaluator reverse=True)."""
        if self.method in STEPS:
            return solve_fixed_grid(evaluate, y0, times.tensor, times.host, self.method, self.step_size)
        # Adaptive: time in float64 or wider, as torchdiffeq's.
        tensor = times.tensor.to(device=y0.device, dtype=torch.promote_types(torch.float64, y0.dtype))
        return solve_adaptive(evaluate, y0, tensor, ADAPTIVE[self.method], self.rtol, self.atol, norm,
                              self.max_num_steps)


def forward_solve(problem: Problem, func: Callable, y0: torch.Tensor, times: torch.Tensor,
                  host_times: Sequence[float] | None = None) -> torch.Tensor:
    """Solve dy/dt = func(t, y) from y0 at `times`; gradients, if any, by backpropagating through the steps."""
    times, reverse = output_times(times.to(y0.device), host_times)
    return problem.solve(Evaluator(func, reverse=reverse), y0, times)
