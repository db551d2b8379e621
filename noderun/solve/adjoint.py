"""The adjoint method on the device path: the forward solve without a graph, and the gradients from
solving the augmented system [t-adjoint, y, a = dL/dy, dL/dparameters] backwards in time with the
same solver.

It is torchdiffeq 0.2.5's odeint_adjoint (same augmented state, flattened into one vector in the same
order, same first step, same tolerances), so the backward solve takes the same steps. The difference
is the step control's norm: torchdiffeq's default adjoint norm takes a Python `max` over the RMS norms
of the adjoint time, the state, the adjoint state and every parameter's gradient, a host read for
every comparison (12 a norm for the ODE-Net's 10 parameter tensors); here the same maximum is taken
on the device (`torch.stack(...).max()`). The seminorm leaves the parameters' parts out, as torchdiffeq's.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from noderun.solve.dynamics import Evaluator, rms_norm
from noderun.solve.problem import OutputTimes, Problem, output_times


def adjoint_norm(sizes: list[int], seminorm: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return the error norm of the flattened augmented state with parts of these sizes: the maximum
    of |adjoint time|, the RMS norms of y and a and (unless `seminorm`) of each parameter's part."""

    def norm(state: torch.Tensor) -> torch.Tensor:
        t, y, a, *parameters = torch.split(state, sizes)
        parts = [t.abs().reshape(()), rms_norm(y), rms_norm(a)]
        if not seminorm:
            parts += [rms_norm(p) for p in parameters]
        return torch.stack(parts).max()

    return norm


class _AugmentedDynamics:
    """d/dt of the flattened augmented state: [0, f(t, y), -a^T df/dy, -a^T df/dparameters]."""

    def __init__(self, func: Callable, shape: torch.Size, parameters: tuple[torch.Tensor, ...]):
        self.func, self.shape, self.parameters = func, shape, parameters
        self.numel = shape.numel()

    def __call__(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        n = self.numel
        y, a = state[1 : 1 + n].view(self.shape), state[1 + n : 1 + 2 * n].view(self.shape)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            f = self.func(t.detach(), y)
            grads = torch.autograd.grad(f, (y, *self.parameters), -a, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, (y, *self.parameters))]
        return torch.cat([state.new_zeros(1), f.reshape(-1), *(g.reshape(-1) for g in grads)])


class _AdjointSolve(torch.autograd.Function):
    """y0, *parameters -> the solution at the output times; gradients by the adjoint method."""

    @staticmethod
    def forward(ctx, problem: Problem, func: nn.Module, times: OutputTimes, reverse: bool, seminorm: bool,
                y0: torch.Tensor, *parameters: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            solution = problem.solve(Evaluator(func, reverse=reverse), y0, times)
        ctx.problem, ctx.func, ctx.times, ctx.reverse, ctx.seminorm = problem, func, times, reverse, seminorm
        ctx.save_for_backward(solution, *parameters)
        return solution

    @staticmethod
    def backward(ctx, grad_solution: torch.Tensor):
        solution, *parameters = ctx.saved_tensors
        parameters = tuple(parameters)
        shape, n = solution.shape[1:], solution[0].numel()
        sizes = [1, n, n, *(p.numel() for p in parameters)]
        func = ctx.func if not ctx.reverse else (lambda t, y: -ctx.func(-t, y))  # as the forward solve saw it
        # Backwards in the forward solve's time: from each output time to the one before, integrated
        # forwards in s = -t (torchdiffeq negates both the times and the dynamics, and so does this).
        evaluate = Evaluator(_AugmentedDynamics(func, shape, parameters), reverse=True, callbacks_of=ctx.func,
                             suffix="_adjoint")
        norm = adjoint_norm(sizes, ctx.seminorm)
        times = ctx.times
        with torch.no_grad():
            state = torch.cat([solution.new_zeros(1), solution[-1].reshape(-1), grad_solution[-1].reshape(-1),
                               *(torch.zeros_like(p).reshape(-1) for p in parameters)])
            for i in range(len(times.host) - 1, 0, -1):
                state = ctx.problem.solve(evaluate, state, times.interval_backwards(i), norm)[-1]
                # Restart from the forward solution at the earlier output time, with its own loss gradient.
                t, _, a, rest = torch.split(state, [1, n, n, state.numel() - 1 - 2 * n])
                state = torch.cat([t, solution[i - 1].reshape(-1), a + grad_solution[i - 1].reshape(-1), rest])
        _, _, a, *grads = torch.split(state, sizes)
        return (None, None, None, None, None, a.view(shape), *(g.view_as(p) for g, p in zip(grads, parameters)))


def adjoint_solve(problem: Problem, func: nn.Module, y0: torch.Tensor, times: torch.Tensor, seminorm: bool = False,
                  host_times: Sequence[float] | None = None) -> torch.Tensor:
    """Solve dy/dt = func(t, y) from y0 at `times` without keeping a graph; gradients of y0 and of
    func's parameters (those that require them) by the adjoint method. `host_times`: as for
    noderun.solve.forward_solve."""
    times, reverse = output_times(times.to(y0.device), host_times)
    parameters = tuple(p for p in func.parameters() if p.requires_grad)
    return _AdjointSolve.apply(problem, func, times, reverse, seminorm, y0, *parameters)
