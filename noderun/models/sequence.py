"""What Table 2's time-series models share: the recurrent cell, the Gaussian likelihood, the training
objectives (trainer.objective) and how their error is scored, as every Table 2 output names them."""

from __future__ import annotations

import math

import torch
from torch import nn

from noderun.errors import UserError

CELLS = ("rnn", "gru")

# trainer.objective -> what the loss supervises on each training spiral. The paper does not say which it
# used; the same group's later code (the latent_ode repository's --extrap mode) trains on the stretch to
# be predicted. Only training spirals' futures are ever read.
OBJECTIVES = {
    "window": "the loss on each training spiral's observed window points only",
    "extrapolate": "the loss on each training spiral's observed window points and its noisy points at the "
                   "times after the window (the stretch that is scored; none past the grid's end)",
}
# How test_rmse pools its errors: every coordinate of every predicted time of every test spiral in one
# mean (test_rmse_spiral_mean is the other convention: the mean of the spirals' own RMSEs).
RMSE_CONVENTION = "RMSE pooled over all test points"


def training_note(objectives: list[str]) -> str:
    """Return the two lines every Table 2 figure carries: the training objective(s), the RMSE convention."""
    named = ", ".join(f"objective {o}" for o in objectives) if objectives else "objective not recorded"
    return f"trained with {named}\n{RMSE_CONVENTION}"


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


def masked_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Return log N(x; mean, exp(log_var)) elementwise, 0 where x is NaN (no point there: past the end of
    the grid). The NaN targets are replaced before the difference, so that no NaN reaches a gradient."""
    present = x.isfinite()
    return torch.where(present, gaussian_log_likelihood(torch.where(present, x, mean.detach()), mean, log_var), 0.0)
