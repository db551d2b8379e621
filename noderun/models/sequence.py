"""What Table 2's two time-series models share: the recurrent cell, and the Gaussian likelihood."""

from __future__ import annotations

import math

import torch
from torch import nn

from noderun.errors import UserError

CELLS = ("rnn", "gru")


def recurrent_cell(kind: str, inputs: int, hidden: int) -> nn.Module:
    """Return a tanh RNN cell (the paper's "RNN") or a GRU cell."""
    if kind not in CELLS:
        raise UserError(f"model.cell={kind!r} is invalid; choose one of: {', '.join(CELLS)}")
    return nn.RNNCell(inputs, hidden) if kind == "rnn" else nn.GRUCell(inputs, hidden)


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Return log N(x; mean, exp(log_var)) elementwise."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 / log_var.exp())


def gather_times(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Return values (B×T×D) at the per-trajectory time indices (B×n): B×n×D."""
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
