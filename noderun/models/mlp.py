"""The Table-1 MLP: one hidden layer of 300 units (784-300-10)."""

from typing import Any, Mapping

from torch import nn


def build_mlp(hidden: int = 300, num_classes: int = 10) -> nn.Sequential:
    """Return an MLP over flattened 28×28 images with one ReLU hidden layer."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))


def build(cfg: Mapping[str, Any], solver: Any = None) -> nn.Sequential:
    """Return the registry's MLP (its config block has no settings; it has no solver)."""
    return build_mlp()
