"""Model architectures, solver configs and exact NFE counting, on real torchdiffeq."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from noderun.measure import NFECounter
from noderun.models import build_model, count_parameters
from noderun.solvers import FIXED_GRID_METHODS, METHODS, SolverSpec, validate_solver
from noderun.train import lr_at_epoch

CONF = Path(__file__).resolve().parent.parent / "conf"
# Counts of the reference example's models (REFERENCE.md), and Table 1's rounded figures.
REFERENCE_COUNTS = {("mlp", "conv"): 238_510, ("resnet", "res"): 601_482, ("resnet", "conv"): 576_778,
                    ("odenet", "conv"): 208_266, ("odenet", "res"): 232_970, ("rknet", "conv"): 208_266}


@pytest.mark.parametrize("name, downsampling", list(REFERENCE_COUNTS))
def test_parameter_counts_match_the_reference(name, downsampling):
    model = build_model(name, SolverSpec(), downsampling)
    assert count_parameters(model) == REFERENCE_COUNTS[(name, downsampling)]
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_default_models_are_within_five_percent_of_table1_where_the_reference_allows():
    # MLP 0.24 M and ResNet 0.60 M are met; the reference ODE-Net ('conv') has 0.208 M against the
    # paper's 0.22 M (5.3% under), which no downsampling choice of the reference brings within 5%.
    assert abs(REFERENCE_COUNTS[("mlp", "conv")] / 0.24e6 - 1) < 0.05
    assert abs(REFERENCE_COUNTS[("resnet", "res")] / 0.60e6 - 1) < 0.05
    assert abs(REFERENCE_COUNTS[("odenet", "conv")] / 0.22e6 - 1) < 0.06


def test_every_torchdiffeq_method_has_a_solver_config():
    assert sorted(p.stem for p in (CONF / "solver").glob("*.yaml")) == sorted(METHODS)


def _train_step(model):
    counter = NFECounter(model)
    counter.take()
    logits = model(torch.rand(4, 1, 28, 28))
    forward = counter.take()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    return forward, counter.take()


@pytest.mark.parametrize("method, step_size, evals_per_step", [("rk4", 0.25, 4), ("euler", 0.1, 1), ("midpoint", 0.5, 2)])
def test_fixed_grid_nfe_is_exact_forward_and_backward(method, step_size, evals_per_step):
    steps = round(1 / step_size)
    spec = SolverSpec(method=method, step_size=step_size)
    assert _train_step(build_model("rknet", spec)) == (evals_per_step * steps, 0)
    # The adjoint solves the augmented system backwards on the same grid.
    assert _train_step(build_model("odenet", spec, adjoint=True)) == (evals_per_step * steps, evals_per_step * steps)


def test_adaptive_nfe_counts_are_positive_and_split_by_phase():
    forward, backward = _train_step(build_model("odenet", SolverSpec("dopri5", 1e-3, 1e-3)))
    # dopri5 makes 6 new evaluations per step plus 2 to choose the first step.
    assert forward >= 8 and (forward - 2) % 6 == 0
    assert backward >= 8 and (backward - 2) % 6 == 0


def test_seminorm_is_passed_to_the_adjoint_only():
    spec = SolverSpec("dopri5", adjoint_norm="seminorm")
    assert spec.options() == {} and spec.adjoint_options() == {"norm": "seminorm"}
    fixed = SolverSpec("rk4", step_size=0.25, adjoint_norm="seminorm")
    assert fixed.adjoint_options() == {"step_size": 0.25, "norm": "seminorm"}
    assert "rk4" in FIXED_GRID_METHODS and "dopri5" not in FIXED_GRID_METHODS


@pytest.mark.parametrize("bad", [SolverSpec(rtol=0), SolverSpec(atol=-1e-3), SolverSpec(method="rk5"),
                                 SolverSpec(adjoint_norm="l2"), SolverSpec("rk4", step_size=0)])
def test_invalid_solver_values_are_refused(bad):
    from noderun.errors import UserError

    with pytest.raises(UserError):
        validate_solver(bad)


def test_learning_rate_schedule_keeps_the_reference_decay_points():
    fractions = (0.375, 0.625, 0.875)
    lrs = [lr_at_epoch(0.1, e, 160, fractions, 0.1) for e in range(160)]
    assert lrs[59] == pytest.approx(0.1) and lrs[60] == pytest.approx(0.01)
    assert lrs[99] == pytest.approx(0.01) and lrs[100] == pytest.approx(0.001)
    assert lrs[140] == pytest.approx(1e-4) and lrs[159] == pytest.approx(1e-4)
    short = [lr_at_epoch(0.1, e, 16, fractions, 0.1) for e in range(16)]
    assert short[5] == pytest.approx(0.1) and short[6] == pytest.approx(0.01) and short[14] == pytest.approx(1e-4)
