"""`speed.compile`: the ODE-Net's and RK-Net's dynamics run their field (time channel, convolutions,
GroupNorm, ReLU) through torch.compile, while the evaluation count stays outside the compiled part.

Unit tier: the compile machinery with torch.compile's `eager` backend (Dynamo captures the graphs, no
code generation: a second or two), on both solve paths. Slow tier: the inductor backend (C++ code from
gcc, about 20 s a graph on the 2-core CPU) against the uncompiled model, and a training run."""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from conftest import SMALL, composed, dynamics_of, read_metrics
from noderun.experiments.classify import _model_fields
from noderun.measure import relative_error
from noderun.models import build_model
from noderun.models.ode_block import compile_dynamics
from noderun.records import read_summary
from noderun.solvers import SolverSpec, solve_stats_of

PATHS = ("device", "torchdiffeq")
# (model, solver): the ODE-Net with dopri5 and the adjoint, the RK-Net with rk4, as their configs choose.
MODELS = (("odenet", "dopri5"), ("rknet", "rk4"))


# Every test here: one torch thread (conftest).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles afresh (Dynamo's cache would otherwise reuse an earlier test's graphs, of
    another backend too)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def built(name: str, method: str, path: str, dtype: torch.dtype = torch.float32, **solver) -> torch.nn.Module:
    """Return the model from seed 0 with the method (rk4 at step 0.25) on the solve path."""
    torch.manual_seed(0)
    step = {"step_size": 0.25} if method == "rk4" else {}
    return build_model({"name": name}, SolverSpec(method, path=path, **step, **solver)).to(dtype)


def images(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(dtype)


def step(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], int, int]:
    """Return one training step's logits, parameter gradients, NFE forward and NFE backward."""
    (stats,) = solve_stats_of(model)
    stats.take_evaluations()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    logits.pow(2).sum().backward()
    taken = stats.take_evaluations()
    return logits.detach(), [p.grad for p in model.parameters()], taken["forward"], taken["backward"]


def compiled_twin(model: torch.nn.Module, backend: str) -> torch.nn.Module:
    twin = copy.deepcopy(model)
    assert compile_dynamics(twin, backend) == 1
    return twin


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name, method", MODELS)
def test_the_compiled_field_counts_every_evaluation_and_computes_what_the_field_does(name, method, path):
    """Dynamo (eager backend) captures the field; the count, outside it, is exact, and `nfe` is no
    guard: further steps capture no further graphs."""
    model = built(name, method, path)
    twin = compiled_twin(model, "eager")
    before = counters["stats"]["unique_graphs"]
    logits, grads, forward, backward = step(model, images())
    twin_logits, twin_grads, twin_forward, twin_backward = step(twin, images())
    assert counters["stats"]["unique_graphs"] > before  # it did run compiled
    assert (twin_forward, twin_backward) == (forward, backward) and forward > 0
    assert relative_error([twin_logits], [logits]) < 1e-6 and relative_error(twin_grads, grads) < 1e-6
    graphs = counters["stats"]["unique_graphs"]
    assert step(twin, images())[2:] == (forward, backward)
    assert counters["stats"]["unique_graphs"] == graphs


def test_compiling_touches_only_the_table1_ode_dynamics_and_a_copy_runs_its_own_weights():
    assert compile_dynamics(build_model({"name": "resnet"}, SolverSpec())) == 0
    model = built("odenet", "rk4", "device")
    twin = compiled_twin(model, "eager")
    copied = copy.deepcopy(twin)  # the compiled function takes the module as an argument, not captured
    with torch.no_grad():
        for p in copied.parameters():
            p.mul_(0.5)
        assert not torch.allclose(copied(images()), twin(images()))
        assert torch.allclose(twin(images()), model(images()))


def test_the_config_key_is_recorded_and_off_by_default():
    assert _model_fields(composed([]), is_ode=True)["compiled"] is False
    assert _model_fields(composed(["speed.compile=true"]), is_ode=True)["compiled"] is True
    assert _model_fields(composed(["speed.compile=true", "model=resnet"]), is_ode=False)["compiled"] is None


@pytest.mark.slow
def test_one_inductor_compiled_evaluation_and_its_vector_jacobian_product_match_the_field():
    (dynamics,) = dynamics_of(built("odenet", "dopri5", "device"))
    twin = copy.deepcopy(dynamics)
    twin.compile_backend = "inductor"
    cotangent = torch.randn(4, 64, 7, 7, generator=torch.Generator().manual_seed(1))
    results = []
    for d in (dynamics, twin):
        t = torch.tensor(0.3, requires_grad=True)
        h = torch.randn(4, 64, 7, 7, generator=torch.Generator().manual_seed(2), requires_grad=True)
        out = d(t, h)
        results.append([out.detach(), *torch.autograd.grad(out, (t, h, *d.parameters()), cotangent)])
    (out, *vjp), (twin_out, *twin_vjp) = results
    assert relative_error([twin_out], [out]) < 1e-5
    for a, b in zip(twin_vjp, vjp):  # t, h and each parameter
        assert relative_error([a], [b]) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_inductor_compiled_models_match_uncompiled_ones(path):
    """rk4 (RK-Net backpropagating through it, ODE-Net with the adjoint): logits and gradients to 1e-5,
    the same NFE. dopri5 with the adjoint: logits to 1e-5 and the same NFE in float32; its gradients
    equal to 1e-8 in float64. In float32 compiled rounding moves the adjoint's step sizes a little (the
    same number of steps): measured, the gradients then differ by 3 %, where each is 6.7-6.8 % from
    the exact gradient (dopri5 at 1e-8 in float64) at rtol = atol = 1e-3."""
    for name, adjoint in (("rknet", False), ("odenet", True)):
        model = built(name, "rk4", path)
        logits, grads, *nfe = step(model, images())
        twin_logits, twin_grads, *twin_nfe = step(compiled_twin(model, "inductor"), images())
        assert twin_nfe == nfe and nfe[1] == (16 if adjoint else 0)
        assert relative_error([twin_logits], [logits]) < 1e-5 and relative_error(twin_grads, grads) < 1e-5
    model = built("odenet", "dopri5", path)
    logits, grads, *nfe = step(model, images())
    twin_logits, twin_grads, *twin_nfe = step(compiled_twin(model, "inductor"), images())
    assert twin_nfe == nfe and relative_error([twin_logits], [logits]) < 1e-5
    assert relative_error(twin_grads, grads) < 0.1
    model = built("odenet", "dopri5", path, torch.float64)
    logits, grads, *nfe = step(model, images(torch.float64))
    twin_logits, twin_grads, *twin_nfe = step(compiled_twin(model, "inductor"), images(torch.float64))
    assert twin_nfe == nfe and relative_error([twin_logits], [logits]) < 1e-10
    assert relative_error(twin_grads, grads) < 1e-8


@pytest.mark.slow
def test_a_training_run_with_speed_compile_counts_as_one_without(noderun_main, mnist_root, tmp_path):
    overrides = ["model=rknet", *SMALL, "trainer.batch_size=32", "trainer.eval_batch_size=128", "threads=1"]
    metrics = {}
    for setting in ("false", "true"):
        result = noderun_main([*overrides, f"speed.compile={setting}", f"paths.output_root=out_{setting}"],
                              mnist_root)
        assert result.returncode == 0, result.stderr
        (run_dir,) = (tmp_path / f"out_{setting}" / "runs").iterdir()
        assert read_summary(run_dir)["compiled"] is (setting == "true")
        metrics[setting] = read_metrics(run_dir)
    for column in ("nfe_forward", "nfe_backward", "nfe_forward_eval"):
        assert [r[column] for r in metrics["true"]] == [r[column] for r in metrics["false"]]
    assert float(metrics["true"][0]["test_acc"]) == pytest.approx(float(metrics["false"][0]["test_acc"]), abs=0.01)
