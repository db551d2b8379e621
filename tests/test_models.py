"""Model architectures against the reference and the paper, solver configs, and exact NFE counting, on
real torchdiffeq."""

from __future__ import annotations

import pytest
import torch

from conftest import CONF_DIR, TABLE1_MODELS, composed
from noderun.errors import UserError
from noderun.measure import NFECounter
from noderun.models import MODELS, build_model, count_parameters
from noderun.solvers import FIXED_GRID_METHODS, METHODS, SolverSpec, validate_solver

# Counts of the reference example's models (REFERENCE.md), for each downsampling it offers.
REFERENCE_COUNTS = {("mlp", "conv"): 238_510, ("resnet", "res"): 601_482, ("resnet", "conv"): 576_778,
                    ("odenet", "conv"): 208_266, ("odenet", "res"): 232_970, ("rknet", "conv"): 208_266}
# How far a default model's count may be from Table 1's (given to two decimals, in millions): 5 %, except
# for the ODE models, whose reference architecture allows none within 5 %: 'conv' downsampling gives
# 208,266 (5.3 % under 0.22 M) and 'res' 232,970 (5.9 % over), so 6 % there.
TABLE1_TOLERANCE = {"mlp": 0.05, "resnet": 0.05, "rknet": 0.06, "odenet": 0.06}


@pytest.mark.parametrize("name, downsampling", list(REFERENCE_COUNTS))
def test_parameter_counts_match_the_reference(name, downsampling):
    model = build_model({"name": name, "downsampling": downsampling}, SolverSpec("rk4", step_size=0.5))
    assert count_parameters(model) == REFERENCE_COUNTS[(name, downsampling)]
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("name", [m for m in TABLE1_MODELS if "params_m" in MODELS[m].paper])
def test_default_models_have_table1s_parameter_counts(name):
    cfg = composed([f"model={name}"])  # the model a user gets without choosing anything else
    built = count_parameters(build_model(cfg.model, SolverSpec("rk4", step_size=0.5)))
    paper = MODELS[name].paper["params_m"] * 1e6
    assert abs(built / paper - 1) <= TABLE1_TOLERANCE[name], (built, paper)


@pytest.mark.parametrize("downsampling", ["conv", "res"])
def test_the_ablation_is_the_odenet_without_its_ode_block(downsampling):
    # The same downsampling and head, parameter for parameter; only the ODE block's are missing.
    odenet = build_model({"name": "odenet", "downsampling": downsampling}, SolverSpec())
    ablation = build_model({"name": "downsample_head", "downsampling": downsampling}, SolverSpec())
    assert count_parameters(ablation) == count_parameters(odenet) - count_parameters(odenet[1])
    weights = odenet.state_dict()
    ablation.load_state_dict({k: v for k, v in weights.items() if k.startswith("0.")}
                             | {"1." + k[2:]: v for k, v in weights.items() if k.startswith("2.")})
    images = torch.rand(4, 1, 28, 28)
    assert torch.equal(ablation(images), odenet[2](odenet[0](images)))
    assert composed(["model=downsample_head"]).model.downsampling == "conv"


def test_every_torchdiffeq_method_has_a_solver_config():
    assert sorted(p.stem for p in (CONF_DIR / "solver").glob("*.yaml")) == sorted(METHODS)


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
    assert _train_step(build_model({"name": "rknet"}, spec)) == (evals_per_step * steps, 0)
    # The adjoint solves the augmented system backwards on the same grid.
    odenet = build_model({"name": "odenet", "adjoint": True}, spec)
    assert _train_step(odenet) == (evals_per_step * steps, evals_per_step * steps)


def test_adaptive_nfe_counts_are_positive_and_split_by_phase():
    forward, backward = _train_step(build_model({"name": "odenet"}, SolverSpec("dopri5", 1e-3, 1e-3)))
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
    with pytest.raises(UserError):
        validate_solver(bad)


TABLE1_PRESETS = ("table1", "table1_quick", "table1_rk4", "quick", "table1_hour")


@pytest.mark.parametrize("preset", TABLE1_PRESETS)
def test_every_table1_preset_sweeps_the_registrys_table1_models(preset):
    params = composed([f"experiment={preset}"], hydra_config=True).hydra.sweeper.params
    assert params.model == ",".join(TABLE1_MODELS) == "mlp,resnet,rknet,odenet,downsample_head"


def test_a_model_added_to_the_registry_appears_in_every_table1_preset(monkeypatch):
    # One registry line is all a preset needs: the sweep's values are read from MODELS when composed.
    monkeypatch.setitem(MODELS, "tiny", MODELS["mlp"])
    for preset in TABLE1_PRESETS:
        params = composed([f"experiment={preset}"], hydra_config=True).hydra.sweeper.params
        assert params.model.split(",") == [*TABLE1_MODELS, "tiny"]
    assert "${table_models:1}" in (CONF_DIR / "experiment" / "table1.yaml").read_text()
