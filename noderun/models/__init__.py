"""The models noderun trains, in one registry: `MODELS[name]` says how to build it from its config
block and the run's solver, whether it has an ODE block, how the report names and colours it, and the
paper's own figures for it. Adding a model is one module, one YAML in conf/model and one line here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from noderun.errors import UserError
from noderun.models import flows, latent_ode, mlp, odenet, resnet, rnn
from noderun.models.blocks import DOWNSAMPLING  # noqa: F401  (re-exported for the memory and gradcheck tasks)
from noderun.solvers import SolverSpec

@dataclass(frozen=True)
class ModelEntry:
    """One model: `build(model_cfg, solver)` returns it; `table` is the paper's table it belongs to
    (1: MNIST classifiers, 2: time series on spirals; 4: section 4's flows, which has figures, no table); `is_ode` says whether it has an ODE block (its
    solver settings mean something); `paper` holds the paper's figures for it (Table 1: test_error %,
    params_m, memory, time; Table 2: test RMSE by observed points)."""

    build: Callable[[Mapping[str, Any], SolverSpec], nn.Module]
    table: int
    is_ode: bool
    label: str
    colour: str  # matplotlib tab10 entries: one colour per model in every figure
    paper: dict = field(default_factory=dict)


# Insertion order is the paper's row order.
MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry(mlp.build, 1, False, "MLP", "#7f7f7f",
                      {"test_error": 1.60, "params_m": 0.24, "memory": "-", "time": "-"}),
    "resnet": ModelEntry(resnet.build, 1, False, "ResNet", "#1f77b4",
                         {"test_error": 0.41, "params_m": 0.60, "memory": "O(L)", "time": "O(L)"}),
    "rknet": ModelEntry(odenet.build_rknet, 1, True, "RK-Net", "#ff7f0e",
                        {"test_error": 0.47, "params_m": 0.22, "memory": "O(L̃)", "time": "O(L̃)"}),
    "odenet": ModelEntry(odenet.build, 1, True, "ODE-Net", "#2ca02c",
                         {"test_error": 0.42, "params_m": 0.22, "memory": "O(1)", "time": "O(L̃)"}),
    # The ablation of every Table 1 (not in the paper): the ODE-Net's downsampling and head alone.
    "downsample_head": ModelEntry(odenet.build_without_block, 1, False, "ODE-Net without ODE block", "#bcbd22"),
    # The paper's RNN row; it does not say which of its two RNNs (plain, or with the time gap) that row is.
    "rnn": ModelEntry(rnn.build, 2, False, "RNN", "#d62728", {30: 0.3937, 50: 0.3202, 100: 0.1813}),
    "rnn_gap": ModelEntry(rnn.build_gap, 2, False, "RNN (time gap)", "#e377c2"),
    "latent_ode": ModelEntry(latent_ode.build, 2, True, "Latent ODE", "#9467bd",
                             {30: 0.1642, 50: 0.1502, 100: 0.1346}),
    # Section 4's flows (Figures 4 and 5): no table of numbers in the paper, only figures.
    "planar": ModelEntry(flows.build_planar, 4, False, "Planar flow", "#8c564b"),
    "cnf": ModelEntry(flows.build_cnf, 4, True, "CNF", "#17becf"),
}

# The adjoint ODE-Net of Table 1: the model the tolerance and gradcheck experiments rebuild.
ODE_NET = next(name for name, entry in MODELS.items() if entry.build is odenet.build)


def models_of_table(table: int) -> list[str]:
    """Return the names of the paper table's models, in its row order."""
    return [name for name, entry in MODELS.items() if entry.table == table]


def model_entry(name: str) -> ModelEntry:
    """Return the registry entry of a model, or raise UserError listing the known ones."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(model_cfg: Mapping[str, Any], solver: SolverSpec) -> nn.Module:
    """Return the model a run's `model:` config block describes (its `name` picks the registry entry)."""
    return model_entry(str(model_cfg["name"])).build(model_cfg, solver)


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
