"""Butcher tableaux of the adaptive Runge-Kutta methods the device path offers, as Python floats.

As Python floats the coefficients cost no device memory and no host read: torchdiffeq keeps its
tableau in device tensors, so its `alpha == 1` test for each stage reads a value back from the
device. The coefficients, the embedded error weights and the mid-point weights of the dense output
are those torchdiffeq 0.2.5 uses (Dormand-Prince with Shampine's error estimate and mid-point;
Bogacki-Shampine), so both solvers take the same steps; tests compare them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta pair: stage times `alpha`, stage weights `beta` (row i combines the
    first i + 1 stages), solution weights `c_sol`, error weights `c_error` (solution minus embedded),
    mid-point weights `c_mid` of the 4th-order interpolant, and `order`, the step-size update's
    exponent 1/order (torchdiffeq's convention)."""

    order: int
    alpha: tuple[float, ...]
    beta: tuple[tuple[float, ...], ...]
    c_sol: tuple[float, ...]
    c_error: tuple[float, ...]
    c_mid: tuple[float, ...]

    @property
    def first_same_as_last(self) -> bool:
        """Whether the last stage is evaluated at the step's solution (then y1 needs no combination
        of its own and the next step's first stage is this step's last)."""
        return self.c_sol[-1] == 0 and self.c_sol[:-1] == self.beta[-1]


def _difference(solution: tuple[float, ...], embedded: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(s - e for s, e in zip(solution, embedded))


_DOPRI5_SOLUTION = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DOPRI5_EMBEDDED = (1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60)

DOPRI5 = Tableau(
    order=5,
    alpha=(1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    beta=((1 / 5,),
          (3 / 40, 9 / 40),
          (44 / 45, -56 / 15, 32 / 9),
          (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
          (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
          _DOPRI5_SOLUTION[:-1]),
    c_sol=_DOPRI5_SOLUTION,
    c_error=_difference(_DOPRI5_SOLUTION, _DOPRI5_EMBEDDED),
    c_mid=(6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
           187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2),
)

_BOSH3_SOLUTION = (2 / 9, 1 / 3, 4 / 9, 0.0)
_BOSH3_EMBEDDED = (7 / 24, 1 / 4, 1 / 3, 1 / 8)

BOSH3 = Tableau(
    order=3,
    alpha=(1 / 2, 3 / 4, 1.0),
    beta=((1 / 2,), (0.0, 3 / 4), _BOSH3_SOLUTION[:-1]),
    c_sol=_BOSH3_SOLUTION,
    c_error=_difference(_BOSH3_SOLUTION, _BOSH3_EMBEDDED),
    c_mid=(0.0, 0.5, 0.0, 0.0),
)

ADAPTIVE = {"dopri5": DOPRI5, "bosh3": BOSH3}
