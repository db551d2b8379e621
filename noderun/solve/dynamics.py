"""How the device-path solvers call the dynamics, and tell step callbacks about each step.

The conventions are torchdiffeq's, so that both solvers evaluate the dynamics at the same times
with the same states: the time is passed in the state's dtype; a stage that ends a step is
evaluated at the float just before the step's end (in case the dynamics jump there); and a solve
backwards in time integrates f'(s, y) = -f(-s, y) forwards in s = -t.
"""

from __future__ import annotations

from typing import Callable

import torch

# What a step callback of the device path may be given: its arguments are tensors, never read.
STEP_STARTED = "callback_step"            # (t0, y0, dt) as a step starts, as torchdiffeq calls it
STEP_DECIDED = "callback_step_decided"    # (t0, y0, dt, accepted): `accepted` a 0-d bool tensor


class Evaluator:
    """Calls func(t, y) the way torchdiffeq's solvers do, in a solve forwards or (`reverse`)
    backwards in time, and passes each step to the callbacks func defines (`suffix` "_adjoint" for
    the adjoint's backward solve)."""

    def __init__(self, func: Callable, reverse: bool = False, callbacks_of: object = None, suffix: str = ""):
        self.func = func
        self.reverse = reverse
        owner = func if callbacks_of is None else callbacks_of
        self._started = getattr(owner, STEP_STARTED + suffix, None)
        self._decided = getattr(owner, STEP_DECIDED + suffix, None)

    def __call__(self, t: torch.Tensor, y: torch.Tensor, just_before: bool = False) -> torch.Tensor:
        t = t.to(y.dtype)
        if just_before:
            t = torch.nextafter(t, t - 1)
        if self.reverse:
            return -self.func(-t, y)
        return self.func(t, y)

    def step_started(self, t0, y0, dt) -> None:
        """Tell the step-start callback, if any, the step's start (in the caller's time, as torchdiffeq
        does), state and size; no tensor is read."""
        if self._started is not None:
            self._started(-t0 if self.reverse else t0, y0, dt)

    def step_decided(self, t0, y0, dt, accepted: torch.Tensor) -> None:
        """Tell the decision callback, if any, whether the step was accepted, as a device tensor."""
        if self._decided is not None:
            self._decided(-t0 if self.reverse else t0, y0, dt, accepted)


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root mean square of a tensor's entries (torchdiffeq's default error norm)."""
    return x.pow(2).mean().sqrt()
