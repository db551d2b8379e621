"""noderun's Runge-Kutta stage arithmetic computes what torchdiffeq's does: the same solution, the
same gradients, the same number of function evaluations; and `speed.rk_stages=false` switches it off."""

from __future__ import annotations

import csv

import pytest
import torch

from conftest import SMALL, run_noderun, single_error_line, single_run_dir
from noderun.measure import NFECounter
from noderun.models import build_model
from noderun.rk_stages import noderun_stages_enabled, stage_arithmetic
from noderun.solvers import SolverSpec


def solve_and_differentiate(method: str, adjoint: bool, noderun_stages: bool):
    """Return (output, parameter gradients, NFE forward, NFE backward) of a float64 ODE-Net on fixed inputs."""
    images = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    torch.manual_seed(1)
    model = build_model("odenet", SolverSpec(method, 1e-4, 1e-4), adjoint=adjoint).double()
    counter = NFECounter(model)
    with stage_arithmetic(noderun_stages):
        output = model(images)
        nfe_forward = counter.take()
        torch.nn.functional.cross_entropy(output, labels).backward()
        nfe_backward = counter.take()
    return output.detach(), [p.grad for p in model.parameters()], nfe_forward, nfe_backward


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "adaptive_heun"])
@pytest.mark.parametrize("adjoint", [True, False], ids=["adjoint", "backprop"])
def test_same_solution_gradients_and_nfe_as_torchdiffeq(method, adjoint):
    ours = solve_and_differentiate(method, adjoint, noderun_stages=True)
    theirs = solve_and_differentiate(method, adjoint, noderun_stages=False)
    assert ours[2:] == theirs[2:]
    assert ours[2] > 2 and (ours[3] > 0) == adjoint
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-10, atol=1e-12)
    for mine, reference in zip(ours[1], theirs[1]):
        torch.testing.assert_close(mine, reference, rtol=1e-8, atol=1e-12)


def test_stage_arithmetic_choice_is_restored_after_the_block():
    assert noderun_stages_enabled()
    with stage_arithmetic(False):
        assert not noderun_stages_enabled()
    assert noderun_stages_enabled()


def test_switching_it_off_from_the_command_line_gives_the_same_training(mnist_root, tmp_path):
    rows = {}
    for setting in ("true", "false"):
        cwd = tmp_path / setting
        cwd.mkdir()
        result = run_noderun(["model=odenet", *SMALL, f"speed.rk_stages={setting}"], mnist_root, cwd)
        assert result.returncode == 0, result.stderr
        with open(single_run_dir(cwd) / "metrics.csv") as handle:
            rows[setting] = list(csv.DictReader(handle))[0]
    for key in ("nfe_forward", "nfe_backward", "nfe_forward_eval"):
        assert rows["true"][key] == rows["false"][key], key
    # float32: the error estimate is a difference of nearly equal sums, and its rounding reaches the
    # gradients through torchdiffeq's step-size controller (gradients differ by ~0.3 %; float64 above agrees).
    assert float(rows["true"]["train_loss"]) == pytest.approx(float(rows["false"]["train_loss"]), rel=2e-3)


def test_a_value_that_is_not_true_or_false_gets_one_line(mnist_root, tmp_path):
    result = run_noderun(["speed.rk_stages=maybe"], mnist_root, tmp_path)
    assert single_error_line(result) == "noderun: error: speed.rk_stages='maybe' is invalid; use true or false"
