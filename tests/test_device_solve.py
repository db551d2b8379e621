"""noderun's device solve path (noderun.solve, `solver.path=device`) against torchdiffeq, the reference:
the same steps (each step's start, size and decision), the same NFE, float64 solutions equal to 1e-10
and adjoint gradients equal to 1e-8 (relative), for dopri5, bosh3 and rk4, forward and adjoint; and
its host reads (noderun.measure.HostReads, on the CPU): one a step for adaptive methods, none on a
fixed grid, in the forward solve and in the adjoint's backward solve."""

from __future__ import annotations

import pytest

from conftest import dynamics_of
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from noderun import solve
from noderun.command import CONF_DIR
from noderun.solvers import solver_spec
from noderun.errors import UserError
from noderun.experiments import gradcheck, memory, solver_accuracy, tolerance
from noderun.experiments.classify import _model_fields
from noderun.measure import host_reads_per_step
from noderun.models import build_model
from noderun.models.ode_block import ODEBlock
from noderun.solvers import SolveStats, SolverSpec, default_path, integrate, solve_stats_of, validate_solver

CASES = [("dopri5", {}), ("bosh3", {}), ("rk4", {"step_size": 0.15}),
         ("euler", {"step_size": 0.15}), ("midpoint", {"step_size": 0.15})]


# Every test here: one torch thread (conftest).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TimeMLP(nn.Module):
    """A small dynamics that depends on t, so that stage times matter."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 4))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([y, t.to(y.dtype).expand(y.shape[0], 1)], 1))


class StepLog:
    """Records every step both paths report, read in the callbacks: `started` (direction, t0, dt) as
    steps start, `steps` (direction, t0, dt, accepted) as they are decided (fixed grids decide nothing)."""

    def __init__(self, dynamics: nn.Module, fixed_grid: bool = False):
        self.started: list[tuple[str, float, float]] = []
        self.steps: list[tuple[str, float, float, bool]] = []
        for suffix, direction in (("", "forward"), ("_adjoint", "backward")):
            pending = {}
            setattr(dynamics, "callback_step" + suffix, self._start(pending, direction))
            if fixed_grid:  # torchdiffeq warns of decision callbacks its fixed-grid solvers never call
                continue
            setattr(dynamics, "callback_accept_step" + suffix, self._decide(pending, direction, True))
            setattr(dynamics, "callback_reject_step" + suffix, self._decide(pending, direction, False))
            setattr(dynamics, "callback_step_decided" + suffix,
                    lambda t0, y0, dt, accepted, p=pending, d=direction: self._decide(p, d, bool(accepted))(t0, y0, dt))

    def _start(self, pending: dict, direction: str):
        def start(t0, y0, dt) -> None:
            pending.update(t0=float(t0.detach()), dt=float(dt.detach() if torch.is_tensor(dt) else dt))
            self.started.append((direction, pending["t0"], pending["dt"]))

        return start

    def _decide(self, pending: dict, direction: str, accepted: bool):
        return lambda t0, y0, dt: self.steps.append((direction, pending["t0"], pending["dt"], accepted))


def solve_and_differentiate(method: str, options: dict, path: str, adjoint: bool, times: torch.Tensor):
    """Return (solution, gradients of y0 and the parameters, NFE forward, NFE backward, steps) of one
    float64 solve of TimeMLP from seed 0, loss = sum of squares of the solution after t0."""
    torch.manual_seed(0)
    dynamics = TimeMLP().double()
    y0 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    spec = validate_solver(SolverSpec(method, rtol=1e-6, atol=1e-6, step_size=options.get("step_size"), path=path))
    log = StepLog(dynamics, spec.fixed_grid)
    stats = SolveStats()
    solution = integrate(dynamics, y0, times, spec, adjoint=adjoint, stats=stats)
    nfe_forward = stats.evaluations["forward"]
    solution[1:].pow(2).sum().backward()
    # the backward pass's evaluations are the adjoint's, counted as backward (none by backpropagation)
    assert stats.evaluations["forward"] == nfe_forward > 0 and (stats.evaluations["backward"] > 0) == adjoint
    counted = stats.counts()
    assert counted.started == {d: sum(step[0] == d for step in log.started) for d in ("forward", "backward")}
    if spec.fixed_grid:  # torchdiffeq reports fixed-grid steps through callback_step alone: all are taken
        log.steps = [(*step, True) for step in log.started]
    gradients = [y0.grad] + [p.grad for p in dynamics.parameters()]
    accepted, rejected = counted.accepted(), counted.rejected()
    for d in ("forward", "backward"):  # the statistics' steps are the callbacks' steps
        assert accepted[d] == sum(s[0] == d and s[3] for s in log.steps)
        assert rejected[d] == sum(s[0] == d and not s[3] for s in log.steps)
    return solution.detach(), gradients, nfe_forward, stats.evaluations["backward"], log.steps


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def same_steps(steps: list, reference: list) -> bool:
    """The same steps in the same order and directions, with the same decisions, each step's start and
    size equal to float64 rounding (the stage sums are ordered differently)."""
    return len(steps) == len(reference) and all(
        (d, a) == (d_ref, a_ref) and t0 == pytest.approx(t0_ref, rel=1e-10, abs=1e-12) and dt == pytest.approx(dt_ref, rel=1e-10)
        for (d, t0, dt, a), (d_ref, t0_ref, dt_ref, a_ref) in zip(steps, reference))


@pytest.mark.parametrize("adjoint", [True, False], ids=["adjoint", "backprop"])
@pytest.mark.parametrize("method,options", CASES, ids=[c[0] for c in CASES])
def test_the_same_steps_nfe_solution_and_gradients_as_torchdiffeq(method, options, adjoint):
    times = torch.tensor([0.0, 0.4, 1.3], dtype=torch.float64)
    reference = solve_and_differentiate(method, options, "torchdiffeq", adjoint, times)
    device = solve_and_differentiate(method, options, "device", adjoint, times)
    assert same_steps(device[4], reference[4]) and len(device[4]) >= 3
    assert device[2:4] == reference[2:4]
    assert torch.allclose(device[0], reference[0], rtol=0, atol=1e-10)
    assert max(relative(d, r) for d, r in zip(device[1], reference[1])) < 1e-8


def test_a_grid_of_the_output_times_alone_matches_torchdiffeq():
    """A fixed-grid method without a step size steps from output time to output time."""
    times = torch.tensor([0.0, 0.4, 1.3], dtype=torch.float64)
    reference = solve_and_differentiate("rk4", {}, "torchdiffeq", True, times)
    device = solve_and_differentiate("rk4", {}, "device", True, times)
    assert device[2:4] == reference[2:4] == (8, 8) and same_steps(device[4], reference[4])
    assert torch.allclose(device[0], reference[0], rtol=0, atol=1e-10)


def test_decreasing_times_take_the_same_steps_as_torchdiffeq():
    times = torch.tensor([1.0, 0.2], dtype=torch.float64)
    reference = solve_and_differentiate("dopri5", {}, "torchdiffeq", True, times)
    device = solve_and_differentiate("dopri5", {}, "device", True, times)
    assert device[2:4] == reference[2:4] and same_steps(device[4], reference[4])
    assert torch.allclose(device[0], reference[0], rtol=0, atol=1e-10)
    assert max(relative(d, r) for d, r in zip(device[1], reference[1])) < 1e-8


def odenet(spec: SolverSpec, adjoint: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return build_model({"name": "odenet", "downsampling": "conv", "adjoint": adjoint}, spec)


def images(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_odenet_in_float64_matches_torchdiffeq_with_both_norms():
    """The ODE-Net's convolutional dynamics, adjoint, default norm (a maximum over 13 parts, on the
    device) and seminorm: the same NFE both ways, logits to 1e-10, parameter gradients to 1e-8."""
    for norm in ("default", "seminorm"):
        results = {}
        for path in ("torchdiffeq", "device"):
            model = odenet(SolverSpec("dopri5", adjoint_norm=norm, path=path)).double()
            log = StepLog(dynamics_of(model)[0])
            logits = model(images().double())
            logits.pow(2).sum().backward()
            results[path] = (logits.detach(), [p.grad for p in model.parameters()],
                             solve_stats_of(model)[0].evaluations, log.steps)
        (ref_logits, ref_grads, ref_nfe, ref_steps), (logits, grads, nfe, steps) = results["torchdiffeq"], results["device"]
        assert nfe == ref_nfe and same_steps(steps, ref_steps)
        assert not all(accepted for *_, accepted in steps)  # rejections, decided on the device, compared too
        assert torch.allclose(logits, ref_logits, rtol=0, atol=1e-10)
        assert max(relative(g, r) for g, r in zip(grads, ref_grads)) < 1e-8


@pytest.mark.parametrize("norm", ["default", "seminorm"])
def test_adaptive_reads_once_a_step_forward_and_backward(norm):
    """dopri5 at 1e-3 on the ODE-Net (5 steps forward, 6 backward with 2 rejected): torchdiffeq reads 18
    times a pass of its loop forward and 30 (20 with the seminorm) backward; the device path once a
    step, plus the loop's final test once a solve."""
    measured = host_reads_per_step(odenet(SolverSpec("dopri5", adjoint_norm=norm, path="device")), images())
    reference = host_reads_per_step(odenet(SolverSpec("dopri5", adjoint_norm=norm, path="torchdiffeq")), images())
    for direction in ("forward", "backward"):
        for key in ("nfe", "steps", "accepted", "rejected"):
            assert measured[f"{key}_{direction}"] == reference[f"{key}_{direction}"]
        assert measured[f"loop_reads_per_step_{direction}"] == 1
        assert measured[f"reads_{direction}"] == measured[f"steps_{direction}"] + 1
        assert set(measured[f"reads_by_op_{direction}"]) == {"_local_scalar_dense"}
    assert (measured["steps_forward"], measured["rejected_backward"]) == (5, 2)


@pytest.mark.parametrize("adjoint", [True, False], ids=["adjoint", "backprop"])
def test_fixed_grid_reads_nothing(adjoint):
    """rk4 at step 0.25: no host read at all, forward and backward (torchdiffeq: 15 and 13 with the
    adjoint, 12 and 0 backpropagating through the solver)."""
    measured = host_reads_per_step(odenet(SolverSpec("rk4", step_size=0.25, path="device"), adjoint), images())
    assert (measured["reads_forward"], measured["reads_backward"]) == (0, 0)
    assert (measured["steps_forward"], measured["nfe_forward"]) == (4, 16)
    assert (measured["steps_backward"], measured["nfe_backward"]) == ((4, 16) if adjoint else (0, 0))


def test_step_failures_raise_as_torchdiffeq_does():
    dynamics = TimeMLP().double()
    y0, times = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(AssertionError, match="max_num_steps"):
        integrate(dynamics, y0, times, SolverSpec("dopri5", 1e-9, 1e-9, max_num_steps=2, path="device"), adjoint=False)
    with pytest.raises(AssertionError, match="non-finite"):
        integrate(dynamics, y0 * float("nan"), times, SolverSpec("dopri5", path="device"), adjoint=False)


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_the_config_key_chooses_the_path_and_a_run_records_it():
    assert solver_spec(composed()).path == "device"  # the default where the device path has the method
    assert solver_spec(composed("solver.path=torchdiffeq")).path == "torchdiffeq"
    assert solver_spec(composed("solver=dopri8")).path == "torchdiffeq"
    cfg = composed("model=rknet")
    assert solver_spec(cfg).path == "device" and solver_spec(cfg).method == "rk4"
    assert _model_fields(cfg, is_ode=True)["solver_path"] == "device"
    assert _model_fields(composed("model=resnet"), is_ode=False)["solver_path"] is None


def test_each_solver_config_takes_the_device_path_where_it_has_the_method():
    """Every solver YAML's path is the device path for the methods noderun.solve has and torchdiffeq's
    for the others; SolverSpec without a path chooses the same (an explicit path is kept)."""
    for name in sorted(p.stem for p in (CONF_DIR / "solver").glob("*.yaml")):
        spec = solver_spec(composed(f"solver={name}"))
        assert spec.path == ("device" if spec.method in solve.METHODS else "torchdiffeq"), name
        assert SolverSpec(spec.method).path == spec.path == default_path(spec.method), name
    assert SolverSpec("dopri8", path="device").path == "device"
    assert set(solve.METHODS) == {"dopri5", "bosh3", "rk4", "euler", "midpoint"}


@pytest.mark.parametrize("overrides,message", [
    (["solver.path=gpu"], "solver.path='gpu' is invalid; choose one of: torchdiffeq, device"),
    (["solver=dopri8", "solver.path=device"], "solver.path=device has no 'dopri8'; choose solver.path=torchdiffeq "
                                              "or one of: bosh3, dopri5, euler, midpoint, rk4"),
])
def test_bad_path_values_give_a_one_line_error(overrides, message):
    with pytest.raises(UserError) as error:
        solver_spec(composed(*overrides))
    assert str(error.value) == message and "\n" not in message


@pytest.mark.parametrize("path", ["device", "torchdiffeq"])
def test_each_measurement_task_solves_on_the_configured_path(path):
    """tolerance, gradcheck, memory and solver_accuracy build solvers of their own settings
    (noderun.solvers.task_solver): on the run's solver.path where it has the method, else torchdiffeq's."""
    gradcheck_cases = gradcheck.checked_settings(composed("experiment=gradcheck", f"solver.path={path}"))[0]
    assert [(name, spec.method, spec.path) for name, spec in gradcheck_cases] == \
        [("tight", "dopri5", path), ("loose", "dopri5", path), ("rk4", "rk4", path)]

    solver = memory.checked_settings(composed("experiment=memory", f"solver.path={path}"))[1]
    assert (solver.method, solver.path) == ("rk4", path)
    for name in ("odenet", "rknet"):
        block = next(m for m in memory.model_of_depth(name, 4, solver, "conv").modules() if isinstance(m, ODEBlock))
        assert (block.solver.path, block.solver.step_size) == (path, 0.25)

    solvers, _, reference = tolerance.checked_settings(composed("experiment=tolerance", f"solver.path={path}"))
    assert [s.rtol for s in solvers] == [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7]
    assert {s.path for s in solvers} == {reference.path} == {path}

    specs = solver_accuracy.cases(composed("experiment=solver_accuracy", f"solver.path={path}"))
    assert {s.path for s in specs if s.method in solve.METHODS} == {path}
    assert {s.path for s in specs if s.method not in solve.METHODS} == {"torchdiffeq"}
    assert {s.method for s in specs} >= {"heun3", "dopri8", *solve.METHODS}
