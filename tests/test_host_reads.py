"""Host reads of tensor values in torchdiffeq's solves, counted on the CPU (noderun.measure.HostReads).

On a GPU each read is a host-device synchronisation. The solve-path work aims at no more than one
read per step for adaptive methods and none for fixed grids, forward and in the adjoint's backward
solve; these tests pin down the counter and what torchdiffeq 0.2.5 reads today, the figures that
path must beat. `host_reads_per_step` (noderun.measure) measures a model; tests/test_device_solve.py
calls it the same way on noderun's device path (solver.path=device) and asserts the targets.
"""

from __future__ import annotations

import dataclasses

import pytest

from conftest import dynamics_of
import torch

from noderun.measure import HostReads, SolverSteps, host_reads_per_step
from noderun.models import build_model
from noderun.solvers import SolverSpec


# Every test here: one torch thread (conftest).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def odenet(spec: SolverSpec, adjoint: bool = True) -> torch.nn.Module:
    """Return the Table-1 ODE-Net architecture with the given solver on torchdiffeq's solve path (what
    this file measures, whichever path SolverSpec would choose), built from seed 0."""
    torch.manual_seed(0)
    return build_model({"name": "odenet", "downsampling": "conv", "adjoint": adjoint},
                       dataclasses.replace(spec, path="torchdiffeq"))


def batch(n: int = 2) -> torch.Tensor:
    """Return n seeded random 28x28 images."""
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_each_scalar_read_counts_once_and_arithmetic_counts_nothing():
    x = torch.tensor([1.5, -2.0])
    reads_of = {}
    for name, read in {"item": lambda: x[0].item(), "bool": lambda: bool(x[0] > 0), "int": lambda: int(x[0]),
                       "float": lambda: float(x[0]), "if": lambda: 1 if x[1] < 0 else 0,
                       "max of 0-d tensors": lambda: max(x[0], x[1])}.items():
        with HostReads() as reads:
            read()
        reads_of[name] = (reads.count, dict(reads.by_op))
    # Measured in torch 2.14: bool(t) reaches the dispatcher only as _local_scalar_dense (is_nonzero
    # is decomposed above it), so each of these is exactly one read of that operator.
    assert reads_of == {name: (1, {"_local_scalar_dense": 1}) for name in reads_of}
    with HostReads() as reads:
        y = (x * 2 + 1).relu().sum() / x.abs().max()
        z = torch.where(x > 0, x, y)[torch.tensor([1, 0])]  # indexing by integers: size known from the index
    assert reads.count == 0 and reads.by_op == {} and z.shape == (2,)


def test_value_dependent_shapes_and_tensor_comparisons_count_and_counts_accumulate():
    x = torch.tensor([1.5, -2.0, 0.0])
    counter = HostReads()
    with counter:
        x.nonzero()
        x[x > 0]  # a boolean mask: on CUDA its true entries are counted on the host
        x[torch.tensor([0, 2])] = 1.0  # integer indices: nothing to read
    with counter:
        torch.equal(x, x)
        x.unique()
        x[x < 0] = torch.tensor(0.0)
    assert counter.count == 5
    assert counter.by_op == {"nonzero": 1, "index": 1, "equal": 1, "_unique2": 1, "index_put_": 1}


def test_step_counting_adds_no_reads_and_agrees_with_the_nfe():
    spec = SolverSpec("dopri5", rtol=1e-3, atol=1e-3)
    images = batch()
    plain = odenet(spec)
    with HostReads() as forward:
        loss = torch.nn.functional.cross_entropy(plain(images), torch.zeros(2, dtype=torch.long))
    with HostReads() as backward:
        loss.backward()
    model = odenet(spec)
    measured = host_reads_per_step(model, images)
    assert (measured["reads_forward"], measured["reads_backward"]) == (forward.count, backward.count)
    for direction in ("forward", "backward"):
        steps = measured[f"steps_{direction}"]
        assert steps == measured[f"accepted_{direction}"] + measured[f"rejected_{direction}"] > 0
        # dopri5 evaluates f at the start and once more to choose the first step, then 6 times a step
        # (its last stage is the next step's first).
        assert measured[f"nfe_{direction}"] == 2 + 6 * steps
    # The callbacks are gone afterwards.
    assert not any(hasattr(d, "callback_step") or hasattr(d, "callback_step_adjoint") for d in dynamics_of(model))


def test_fixed_grid_rk4_reads_today():
    """rk4 at step 0.25 (4 steps) and 0.125 (8 steps) on [0, 1]: the counts depend on no tensor's value,
    so they are exact. Measured with torchdiffeq 0.2.5."""
    images = batch()
    by_step_size = {h: host_reads_per_step(odenet(SolverSpec("rk4", step_size=h)), images) for h in (0.25, 0.125)}
    four, eight = by_step_size[0.25], by_step_size[0.125]
    assert [r[f"steps_{d}"] for r in (four, eight) for d in ("forward", "backward")] == [4, 4, 8, 8]
    assert four["nfe_forward"] == four["nfe_backward"] == 16
    # Adjoint, 4 steps: 15 reads forward (3.75 a step), 13 in the backward solve (3.25 a step). Each
    # pass of the loop reads once (its `t1 >= t[j]` test for an output time); the rest is per solve:
    # input checks, the grid's `.item()` and asserts, the interpolation's `t == t0`, `t == t1`.
    assert (four["reads_forward"], four["reads_backward"]) == (15, 13)
    assert four["loop_reads_per_step_forward"] == four["loop_reads_per_step_backward"] == 1
    # Four more steps, four more reads, in each direction.
    assert (eight["reads_forward"], eight["reads_backward"]) == (19, 17)
    assert all(v == "_local_scalar_dense" for r in (four, eight) for d in ("forward", "backward")
               for v in r[f"reads_by_op_{d}"])

    # The RK-Net (backpropagation through the solver) reads as the adjoint's forward solve does, less
    # the adjoint's own input checks (12 against 15), and its backward pass reads nothing.
    rknet = host_reads_per_step(odenet(SolverSpec("rk4", step_size=0.25), adjoint=False), images)
    assert (rknet["reads_forward"], rknet["steps_forward"], rknet["loop_reads_per_step_forward"]) == (12, 4, 1)
    assert (rknet["reads_backward"], rknet["nfe_backward"], rknet["steps_backward"]) == (0, 0, 0)


def test_dopri5_reads_at_least_once_per_step_today():
    """dopri5 at rtol = atol = 1e-3, adjoint with the default norm and with the seminorm. Measured with
    torchdiffeq 0.2.5 on this batch: 5 steps forward (104 reads), 6 backward (4 accepted, 2 rejected;
    228 reads with the default norm, 138 with the seminorm)."""
    images = batch()
    default = host_reads_per_step(odenet(SolverSpec("dopri5", rtol=1e-3, atol=1e-3)), images)
    seminorm = host_reads_per_step(odenet(SolverSpec("dopri5", rtol=1e-3, atol=1e-3, adjoint_norm="seminorm")), images)
    for measured in (default, seminorm):
        for direction in ("forward", "backward"):
            assert measured[f"steps_{direction}"] >= 2
            assert measured[f"reads_{direction}"] >= measured[f"accepted_{direction}"]
            assert measured[f"reads_{direction}"] > measured[f"steps_{direction}"]
            # One adaptive solve per direction: torchdiffeq checks step_t/jump_t for repeats by unique().
            assert measured[f"reads_by_op_{direction}"]["_unique2"] == 1
        # 18 reads a pass of the forward loop: the while test, the max_num_steps assert, isfinite(dt),
        # the underflow and finite-state asserts, alpha == 1 for each of the 6 stages, the tableau's
        # first-same-as-last test (2), dt against max_step and min_step, accept or reject, and
        # _optimal_step_size's error_ratio == 0 and < 1. Its norm of one tensor reads nothing.
        assert measured["loop_reads_per_step_forward"] == 18
    # The backward loop reads the same and, in each error norm, the Python max over its parts: the
    # default norm takes max(|t|, ||y||, ||adj_y||, max over each parameter's norm), P - 1 + 3
    # comparisons for P parameter tensors (the ODE-Net's dynamics have 10); the seminorm drops the
    # parameters: 2.
    parameters = len(list(dynamics_of(odenet(SolverSpec()))[0].parameters()))
    assert parameters == 10
    assert default["loop_reads_per_step_backward"] == 18 + parameters + 2
    assert seminorm["loop_reads_per_step_backward"] == 18 + 2
    assert default["reads_backward"] > seminorm["reads_backward"]


def test_solver_steps_count_steps_without_a_read_counter():
    model = odenet(SolverSpec("rk4", step_size=0.5), adjoint=False)
    with SolverSteps(model) as steps:
        model(batch())
    assert steps.steps == steps.accepted == {"forward": 2, "backward": 0}
    assert steps.rejected == {"forward": 0, "backward": 0}
    assert steps.loop_reads_per_step("forward") is None
