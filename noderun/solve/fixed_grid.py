"""A fixed-grid Runge-Kutta solve with no host reads at all.

The grid, the stage times and the output interpolation weights depend only on the output times and
the step size, and they are computed with the same operations as torchdiffeq 0.2.5's fixed-grid
solvers, in the times' dtype (hence the same floats): on the host from the times as Python floats, for
the loop's decisions, and on the device from the times tensor, for the stage times the dynamics get
(so nothing is copied either way). The loop then has nothing to decide on the device: torchdiffeq's
`t1 >= t[j]` test for each output time, a host read a step, becomes a comparison of host floats.
"""

from __future__ import annotations

from typing import Callable

import torch

from noderun.solve.dynamics import Evaluator

_THIRD = 1 / 3

# Each method's increment y1 - y0 from its stage times (on the device) and dt (a host float), in
# torchdiffeq's order of operations, so that the same floats come out.


def _euler(evaluate, times, y0, dt):
    return dt * evaluate(times[0], y0)


def _midpoint(evaluate, times, y0, dt):
    f0 = evaluate(times[0], y0)
    return dt * evaluate(times[1], y0 + f0 * (0.5 * dt))


def _rk4(evaluate, times, y0, dt):
    # torchdiffeq's 'rk4' is the 3/8 rule (its rk4_alt_step_func), in the same order of operations.
    k1 = evaluate(times[0], y0)
    k2 = evaluate(times[1], y0 + dt * k1 * _THIRD)
    k3 = evaluate(times[2], y0 + dt * (k2 - k1 * _THIRD))
    k4 = evaluate(times[3], y0 + dt * (k1 - k2 + k3))
    return (k1 + 3 * (k2 + k3) + k4) * dt * 0.125


def _stage_times(method: str, t0: torch.Tensor, dt: torch.Tensor, t1: torch.Tensor) -> list[torch.Tensor]:
    # torchdiffeq's stage times, in the grid's dtype, for every step at once (elementwise, so the same floats).
    if method == "euler":
        return [t0]
    if method == "midpoint":
        return [t0, t0 + 0.5 * dt]
    return [t0, t0 + dt * _THIRD, t0 + dt * (2 * _THIRD), t1]


STEPS: dict[str, Callable] = {"euler": _euler, "midpoint": _midpoint, "rk4": _rk4}


def grid(times: torch.Tensor, count: int | None, step_size: float | None) -> torch.Tensor:
    """Return torchdiffeq's grid for increasing output times, on their device: the times themselves
    without a step size, else the `count` points t0, t0 + h, ... with the last moved onto the last time."""
    if step_size is None:
        return times
    points = torch.arange(0, count, dtype=times.dtype, device=times.device) * step_size + times[0]
    points[-1] = times[-1]
    return points


def grid_size(times: torch.Tensor, step_size: float) -> int:
    """Return how many points torchdiffeq's grid has, from host times, in their dtype."""
    return int(torch.ceil((times[-1] - times[0]) / step_size + 1).tolist())


def solve_fixed_grid(evaluate: Evaluator, y0: torch.Tensor, times: torch.Tensor, host: tuple[float, ...],
                     method: str, step_size: float | None) -> torch.Tensor:
    """Return the solution at the output times (`times` on the device, the same values `host` as
    floats, strictly increasing), stacked along a new first dimension; an output time between grid
    points is interpolated linearly, as torchdiffeq does. Reads nothing from the device: the grid is
    laid twice with the same operations, on the host for the loop's decisions and on the device for
    the stage times."""
    host_times = torch.tensor(host, dtype=times.dtype)
    count = grid_size(host_times, step_size) if step_size is not None else None
    host_grid, device_grid = grid(host_times, count, step_size), grid(times, count, step_size)
    starts, ends = host_grid[:-1], host_grid[1:]
    steps = ends - starts
    stage_times = torch.stack(_stage_times(method, device_grid[:-1], device_grid[1:] - device_grid[:-1],
                                           device_grid[1:]), dim=1).to(y0.dtype)
    step, targets = STEPS[method], list(host)
    solution, j, y = [y0], 1, y0
    for i, (t0, dt, t1) in enumerate(zip(starts.tolist(), steps.tolist(), ends.tolist())):
        evaluate.step_started(stage_times[i, 0], y, dt)
        y1 = y + step(evaluate, stage_times[i], y, dt)
        while j < len(targets) and t1 >= targets[j]:
            if targets[j] == t0:
                solution.append(y)
            elif targets[j] == t1:
                solution.append(y1)
            else:
                solution.append(y + ((host_times[j] - starts[i]) / steps[i]).tolist() * (y1 - y))
            j += 1
        y = y1
    return torch.stack(solution)
