"""The model registry (noderun.models.MODELS) as figures and tables look it up: by a model name read
from data, which may name no registered model. Such a name is shown as it is, in a spare colour,
after the registered ones."""

from __future__ import annotations

import matplotlib

from noderun.models import MODELS


def model_label(name: str) -> str:
    """Return the model's display name (the name itself for an unregistered model)."""
    return MODELS[name].label if name in MODELS else str(name)


def model_colour(name: str, index: int = 0):
    """Return the model's colour in every figure; an unregistered model gets tab10's entry `index`."""
    return MODELS[name].colour if name in MODELS else matplotlib.colormaps["tab10"](index % 10)


def is_ode_model(name: str) -> bool:
    """Return whether the model has an ODE block (so its solver settings and NFE mean something)."""
    return name in MODELS and MODELS[name].is_ode


def model_rank(name: str) -> int:
    """Return the model's position in the paper's row order (the registry's order; unregistered last)."""
    order = list(MODELS)
    return order.index(name) if name in order else len(order)
