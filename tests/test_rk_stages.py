"""noderun's Runge-Kutta stage arithmetic computes what torchdiffeq's does: the same solution, the
same gradients, the same number of function evaluations; it is installed only when asked for
(importing changes nothing), and `speed.rk_stages=false` switches it off."""

from __future__ import annotations

import csv
import importlib.util
import sys
from types import ModuleType

import pytest
import torch
from torchdiffeq._impl import rk_common

import noderun.rk_stages
import noderun.solvers
from conftest import SMALL, run_noderun, single_error_line, single_run_dir
from noderun.errors import UserError
from noderun.measure import NFECounter
from noderun.models import build_model
from noderun.rk_stages import noderun_stages_enabled, stage_arithmetic, use_noderun_stages
from noderun.solvers import SolverSpec

Solver = rk_common.RKAdaptiveStepsizeODESolver


@pytest.fixture(autouse=True)
def torchdiffeq_own_functions():
    """Start and leave each test with torchdiffeq's own functions in place; yield them."""
    use_noderun_stages(False)
    yield rk_common._runge_kutta_step, Solver._interp_fit
    use_noderun_stages(False)


def solve_and_differentiate(method: str, adjoint: bool, noderun_stages: bool):
    """Return (output, parameter gradients, NFE forward, NFE backward) of a float64 ODE-Net on fixed inputs."""
    images = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    torch.manual_seed(1)
    model = build_model({"name": "odenet", "adjoint": adjoint}, SolverSpec(method, 1e-4, 1e-4)).double()
    counter = NFECounter(model)
    use_noderun_stages(noderun_stages)
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


def test_switching_on_installs_dispatchers_and_off_restores_torchdiffeqs_own(torchdiffeq_own_functions):
    own_step, own_interp_fit = torchdiffeq_own_functions
    use_noderun_stages(True)
    use_noderun_stages(True)  # twice: still one layer, so one False restores the originals
    assert noderun_stages_enabled()
    assert rk_common._runge_kutta_step is not own_step and Solver._interp_fit is not own_interp_fit
    assert rk_common._runge_kutta_step.__wrapped__ is own_step
    use_noderun_stages(False)
    assert not noderun_stages_enabled()
    assert rk_common._runge_kutta_step is own_step and Solver._interp_fit is own_interp_fit


def torchdiffeqs_own_code(function) -> bool:
    """Return whether `function` is torchdiffeq's own (a dispatcher copies its name and module, not its code)."""
    return function.__code__.co_filename == rk_common.__file__


def imported_afresh(module: ModuleType) -> ModuleType:
    """Return a new module object made by running `module`'s file as importing does.

    Unlike importlib.reload it leaves sys.modules' module alone, so classes other tests hold (SolverSpec)
    stay the ones later code sees. The copy is listed under its own name only while it runs (dataclasses
    look their module up there).
    """
    name = f"{module.__name__}_afresh"
    fresh = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, module.__file__))
    sys.modules[name] = fresh
    try:
        fresh.__spec__.loader.exec_module(fresh)
    finally:
        del sys.modules[name]
    return fresh


def test_importing_rk_stages_and_solvers_leaves_torchdiffeq_untouched(torchdiffeq_own_functions):
    own_step, own_interp_fit = torchdiffeq_own_functions
    assert torchdiffeqs_own_code(own_step) and torchdiffeqs_own_code(own_interp_fit)
    imported_afresh(noderun.rk_stages)
    imported_afresh(noderun.solvers)
    assert rk_common._runge_kutta_step is own_step
    assert Solver._interp_fit is own_interp_fit
    assert not noderun_stages_enabled()


def test_reimporting_while_switched_on_still_restores_torchdiffeqs_own(torchdiffeq_own_functions):
    own_step, own_interp_fit = torchdiffeq_own_functions
    use_noderun_stages(True)
    imported_afresh(noderun.rk_stages).use_noderun_stages(False)
    assert rk_common._runge_kutta_step is own_step and Solver._interp_fit is own_interp_fit


def test_stage_arithmetic_installs_inside_the_block_and_restores_the_previous_choice():
    with stage_arithmetic(True):
        assert noderun_stages_enabled()
        with stage_arithmetic(False):
            assert not noderun_stages_enabled()
        assert noderun_stages_enabled()
    assert not noderun_stages_enabled()


def test_a_torchdiffeq_without_the_private_step_fails_on_switching_on_naming_its_version(monkeypatch):
    monkeypatch.delattr(rk_common, "_runge_kutta_step")
    monkeypatch.setattr("torchdiffeq.__version__", "9.9.9")
    with pytest.raises(UserError, match=r"torchdiffeq 9\.9\.9 .*speed\.rk_stages=false"):
        use_noderun_stages(True)
    use_noderun_stages(False)  # switching off still works: nothing to restore
    assert not hasattr(rk_common, "_runge_kutta_step")


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_value_that_is_not_true_or_false_gets_one_line(mnist_root, tmp_path):
    result = run_noderun(["speed.rk_stages=maybe"], mnist_root, tmp_path)
    assert single_error_line(result) == "noderun: error: speed.rk_stages='maybe' is invalid; use true or false"
