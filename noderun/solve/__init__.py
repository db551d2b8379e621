"""noderun's device-side solve path (config `solver.path=device`): Runge-Kutta solves whose step
control never branches on tensor values in Python, so that the host reads at most one value a step
(adaptive methods: whether to step again) and none on a fixed grid, forwards and in the adjoint's
backward solve. It follows torchdiffeq 0.2.5's algorithms, so that on the same inputs it takes the
same steps (tests compare them); noderun.solvers chooses between the two paths.
"""

from noderun.solve.adjoint import adjoint_solve
from noderun.solve.problem import METHODS, Problem, forward_solve

__all__ = ["METHODS", "Problem", "adjoint_solve", "forward_solve"]
