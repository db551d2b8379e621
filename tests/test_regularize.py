"""Regularised dynamics (trainer.regularize, noderun/regularize.py) in-process: each penalty's value on a
case worked out by hand, the step the error-estimate penalty repeats, its evaluations counted apart from
the model's, evaluation never regularised, weight 0 changing nothing to the last bit, training with it
changing the weights, and the config's values checked."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import composed, synthetic_split
from noderun.data.batches import epoch_generator, training_batches
from noderun.errors import UserError
from noderun.measure import NFECounter
from noderun.models import build_model
from noderun.regularize import (Regularizer, RegularizerSpec, StepCapture, regularize, regularizer_spec,
                                regularizers_of, step_error_penalty, take_penalty)
from noderun.solve.tableaux import ADAPTIVE
from noderun.run.identity import key_config, run_key
from noderun.schema import rule_problem
from noderun.solvers import SolverSpec, integrate
from noderun.train import train_epoch


class TimeSquared(nn.Module):
    """dy/dt = t², whatever y."""

    def forward(self, t, y):
        return torch.ones_like(y) * t.to(y.dtype) ** 2


class Linear(nn.Module):
    """dy/dt = a·y, with `a` a parameter."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, t, y):
        return self.a * y


def test_the_error_estimate_penalty_of_a_bogacki_shampine_step_is_the_one_worked_by_hand():
    # One bosh3 step of size h from (0, 0) on dy/dt = t²: stages 0, h²/4, 9h²/16, h² at t = 0, h/2, 3h/4, h.
    # The 3rd-order solution h(h²/4 / 3 + 4/9 · 9h²/16) = h³/3 is exact; the embedded 2nd-order one
    # h(1/4 · h²/4 + 1/3 · 9h²/16 + 1/8 · h²) = 3h³/8; the error estimate their difference, -h³/24.
    h, rtol, atol = 0.5, 1e-3, 1e-4
    penalty, evaluations = step_error_penalty(TimeSquared(), ADAPTIVE["bosh3"], torch.tensor(0.0, dtype=torch.float64),
                                              torch.zeros(1, dtype=torch.float64), torch.tensor(h, dtype=torch.float64),
                                              rtol, atol)
    ratio = (h**3 / 24) / (atol + rtol * h**3 / 3)  # the step control's |error| / (atol + rtol·max(|y0|, |y1|))
    assert float(penalty) == pytest.approx(ratio * h, rel=1e-9)
    assert evaluations == 4  # the first stage and three more (the last is first-same-as-last)


def test_the_kinetic_penalty_of_linear_dynamics_is_its_integral_worked_by_hand():
    # y = y0·e^{at}: ∫₀¹ (a·y)² dt = a·y0²·(e^{2a} - 1) / 2 per entry; the penalty is its mean over entries
    # and examples, times the weight.
    a, weight = -0.7, 0.3
    y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
    regularizer = Regularizer(RegularizerSpec("kinetic", weight))
    solution = integrate(Linear(a), y0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                         SolverSpec("dopri5", rtol=1e-10, atol=1e-10), adjoint=False, regularizer=regularizer)
    penalty, evaluations = regularizer.take()
    by_hand = weight * a * (y0**2).mean().item() * (math.exp(2 * a) - 1) / 2
    assert penalty.item() == pytest.approx(by_hand, rel=1e-8)
    assert evaluations == 0  # the model's own evaluations compute it
    assert solution.shape == (2, 2, 2) and torch.allclose(solution[-1], y0 * math.exp(a), rtol=1e-8)
    assert regularizer.take() == (None, 0)  # taken once


@pytest.mark.parametrize("path", ["device", "torchdiffeq"])
def test_the_error_estimate_repeats_the_accepted_step_covering_the_drawn_time(path):
    # The penalty must be that of the one accepted step whose interval holds t_r, on both solve paths.
    torch.manual_seed(3)
    func, y0 = Linear(-2.0), torch.ones(4, 3, dtype=torch.float64)
    spec = SolverSpec("dopri5", rtol=1e-6, atol=1e-6, path=path)
    accepted: list[tuple[float, float]] = []

    class Recorded(StepCapture):
        def _keep(self, t0, y0, dt, accepted_now):
            if bool(accepted_now):
                accepted.append((float(t0), float(dt)))
            super()._keep(t0, y0, dt, accepted_now)

    capture = Recorded(func, 0.61)
    integrate(capture, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), spec, adjoint=True)
    covering = [(t0, dt) for t0, dt in accepted if t0 <= 0.61 < t0 + dt]
    assert len(accepted) > 3 and len(covering) == 1
    t0, start, dt = capture.start
    assert (float(t0), float(dt)) == pytest.approx(covering[0])
    assert torch.allclose(start, y0 * math.exp(-2.0 * float(t0)), rtol=1e-5)  # the solution at the step's start


@pytest.mark.parametrize("method", ["kinetic", "error_estimate"])
def test_the_regularisers_evaluations_are_counted_apart_and_evaluation_is_never_regularised(method):
    torch.manual_seed(0)
    model = build_model({"name": "odenet"}, SolverSpec("dopri5"))
    images = torch.rand(8, 1, 28, 28)
    counter = NFECounter(model)
    plain_forward = model(images)
    plain_nfe = counter.take()
    assert regularize(model, RegularizerSpec(method, 1.0)) == 1
    regularized_forward = model(images)
    penalty, evaluations = take_penalty(regularizers_of(model))
    assert penalty is not None and penalty.requires_grad and float(penalty.detach()) > 0
    if method == "error_estimate":  # one extra dopri5 step (7 evaluations), not the model's
        assert evaluations == 7 and counter.take() == plain_nfe
        assert torch.equal(regularized_forward, plain_forward)
    else:
        assert evaluations == 0 and counter.take() > 0
    with torch.no_grad():  # evaluation: the model's solve alone
        assert torch.equal(model(images), plain_forward) and counter.take() == plain_nfe
    assert take_penalty(regularizers_of(model)) == (None, 0)


def _trained(spec: RegularizerSpec, steps: int = 3):
    torch.manual_seed(0)
    model = build_model({"name": "odenet"}, SolverSpec("dopri5"))
    regularize(model, spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    split = synthetic_split(16 * steps, seed=1)
    stats = train_epoch(model, optimizer, training_batches(split, 16, epoch_generator(0, 0)), steps,
                        NFECounter(model), "epoch", progress=False, measure=False)
    return model, stats


def test_weight_zero_trains_exactly_as_without_and_a_weight_changes_the_weights():
    plain, plain_stats = _trained(RegularizerSpec("none", 0.0))
    for method in ("kinetic", "error_estimate"):
        zero, zero_stats = _trained(RegularizerSpec(method, 0.0))
        assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), zero.state_dict().values()))
        assert (zero_stats.loss, zero_stats.nfe_forward, zero_stats.penalty) == (plain_stats.loss, plain_stats.nfe_forward, 0.0)
        weighted, stats = _trained(RegularizerSpec(method, 1.0))
        assert stats.penalty > 0 and stats.nfe_regularizer == (7.0 if method == "error_estimate" else 0.0)
        assert not torch.equal(weighted.state_dict()["1.dynamics.conv2.conv.weight"],
                               plain.state_dict()["1.dynamics.conv2.conv.weight"])


def test_only_adaptive_solves_are_regularised():
    spec = RegularizerSpec("kinetic", 1.0)
    assert regularize(build_model({"name": "odenet"}, SolverSpec("rk4", step_size=0.5)), spec) == 0
    for name in ("mlp", "resnet", "downsample_head"):
        assert regularize(build_model({"name": name}, SolverSpec("dopri5")), spec) == 0
    assert regularize(build_model({"name": "rknet"}, SolverSpec("bosh3")), spec) == 1
    assert regularize(build_model({"name": "odenet"}, SolverSpec("dopri5")), RegularizerSpec("kinetic", 0.0)) == 0


@pytest.mark.parametrize("trainer, solver, named", [
    ({"regularize": {"method": "kinetik", "weight": 1.0}}, SolverSpec("dopri5"), "trainer.regularize.method='kinetik'"),
    ({"regularize": {"method": "error_estimate", "weight": 1.0}}, SolverSpec("fehlberg2"), "solver=fehlberg2"),
])
def test_bad_regularizer_settings_are_refused_naming_the_value_and_the_valid_ones(trainer, solver, named):
    with pytest.raises(UserError) as refused:
        regularizer_spec(trainer, solver)
    assert named in str(refused.value) and "choose one of" in str(refused.value)


def test_both_trainers_default_to_no_regulariser_and_type_its_keys():
    for overrides in ([], ["experiment=timeseries"]):
        trainer = composed(overrides).trainer
        assert dict(trainer.regularize) == {"method": "none", "weight": 0.0}
        assert not regularizer_spec(trainer, SolverSpec()).active
    key, value, rule = rule_problem(composed(["trainer.regularize.weight=-1"]))
    assert (key, value, rule.valid()) == ("trainer.regularize.weight", -1, "a number >= 0")


def test_a_regulariser_that_cannot_act_leaves_the_run_key_the_unregularised_ones():
    # A preset that regularises every model of its sweep (table1_hour) makes the MLP, ResNet, ablation and
    # rk4 RK-Net runs that compute what unregularised ones do: resume and the report take them as those.
    kinetic = ["trainer.regularize.method=kinetic", "trainer.regularize.weight=1"]
    for model, acts in (("mlp", False), ("resnet", False), ("downsample_head", False), ("rknet", False),
                        ("odenet", True)):
        plain, regularized = (run_key(key_config(composed([f"model={model}", *extra]))) for extra in ([], kinetic))
        assert (plain != regularized) == acts, model
    assert run_key(key_config(composed(["model=rknet", "solver=dopri5", *kinetic]))) != \
        run_key(key_config(composed(["model=rknet", "solver=dopri5"])))
    assert run_key(key_config(composed(["model=odenet", "trainer.regularize.method=kinetic"]))) == \
        run_key(key_config(composed(["model=odenet"])))  # weight 0
