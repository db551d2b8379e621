"""Table 2's baselines (Chen et al. 2018, 5.1): an RNN that reads the observations in order and predicts
the next observation's mean and log-variance, trained on the Gaussian negative log-likelihood; beyond
the last observation it feeds back its own predictions. Two versions, as in the paper: the plain RNN
(`rnn`, input the observation only, so it cannot know how far ahead the next one is) and the RNN whose
input is concatenated with the time gap to the next observation (`rnn_gap`)."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch
from torch import nn

from noderun.models.sequence import gaussian_log_likelihood, masked_log_likelihood, recurrent_cell


class SequenceRNN(nn.Module):
    """Input at each step: x_i, and with `time_gap` also t_{i+1} − t_i; output: mean and log-variance of
    x_{i+1}."""

    def __init__(self, obs_dim: int = 2, hidden: int = 25, cell: str = "rnn", time_gap: bool = True):
        super().__init__()
        self.time_gap = time_gap
        self.cell = recurrent_cell(cell, obs_dim + int(time_gap), hidden)
        self.head = nn.Linear(hidden, 2 * obs_dim)

    def step(self, x: torch.Tensor, gap: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (mean, log-variance, new hidden state) after reading x (with the gap to the next time
        when the model takes it; the plain RNN ignores `gap`)."""
        inputs = torch.cat([x, gap.unsqueeze(1)], dim=1) if self.time_gap else x
        h = self.cell(inputs, h)
        mean, log_var = self.head(h).chunk(2, dim=1)
        return mean, log_var, h

    def loss(self, x: torch.Tensor, t: torch.Tensor, observed: torch.Tensor, times: torch.Tensor, n_window: int,
             future: torch.Tensor | None = None) -> torch.Tensor:
        """Return the negative log-likelihood of observations 2..n given those before, summed over a
        trajectory and averaged over the batch (the same normalisation as the latent ODE's ELBO). With
        `future` (the noisy points at times[n_window:], B×F×2, NaN where there is none: the extrapolate
        objective) also that of each of those points, read on from the last observation one time at a
        time as the model rolls out when it predicts (one step per time; the time-gap RNN told the
        gap), each step fed the point before it (teacher forcing; where there is none, past the grid's
        end, its own prediction)."""
        total = x.new_zeros(x.shape[0])
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)
        for i, mean, log_var, h in self._read(x, t):
            total = total - gaussian_log_likelihood(x[:, i], mean, log_var).sum(1)
        if future is not None:
            for k, mean, log_var in self._steps_ahead(x[:, -1], t[:, -1], h, times[n_window:], future):
                total = total - masked_log_likelihood(future[:, k], mean, log_var).sum(1)
        return total.mean()

    def _read(self, x: torch.Tensor, t: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Read the observations in order; yield (i, mean, log-variance, hidden state) of the
        prediction of observation i, for i = 1..n-1."""
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)
        for i in range(x.shape[1] - 1):
            mean, log_var, h = self.step(x[:, i], t[:, i + 1] - t[:, i], h)
            yield i + 1, mean, log_var, h

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: torch.Tensor, observed: torch.Tensor, times: torch.Tensor,
                n_window: int) -> torch.Tensor:
        """Return predictions at `times` (B×T×2): one step ahead at observations 2..n, then its own
        roll-out at times[n_window:], after the observation window, one step per time (the plain RNN
        takes one step per time without being told the gap); NaN where it predicts nothing (the first
        observation, unobserved times inside the window)."""
        out = x.new_full((x.shape[0], len(times), x.shape[2]), float("nan"))
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)  # the state when there is one observation only
        rows = torch.arange(x.shape[0], device=x.device)
        for i, mean, _, h in self._read(x, t):
            out[rows, observed[:, i]] = mean
        return self._roll_out(x[:, -1], t[:, -1], h, times, out, n_window)

    def _steps_ahead(self, last: torch.Tensor, last_time: torch.Tensor, h: torch.Tensor, ahead: torch.Tensor,
                     fed: torch.Tensor | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Step on after the last observation (`last` at `last_time`, hidden state h) to each of the
        times `ahead` (F), one step per time; yield (k, mean, log-variance) of the prediction at
        ahead[k]. Each step reads the point at the time before: `fed[:, k]` (B×F×2) where given and not
        NaN, else the model's own prediction (a roll-out)."""
        previous_time = last_time
        for k in range(len(ahead)):
            mean, log_var, h = self.step(last, ahead[k] - previous_time, h)
            yield k, mean, log_var
            last = mean if fed is None else torch.where(fed[:, k].isfinite(), fed[:, k], mean.detach())
            previous_time = ahead[k].expand_as(last_time)

    def _roll_out(self, last: torch.Tensor, last_time: torch.Tensor, h: torch.Tensor, times: torch.Tensor,
                  out: torch.Tensor, first: int) -> torch.Tensor:
        """Fill out[:, k] for every k from `first` on by feeding back each prediction."""
        for k, mean, _ in self._steps_ahead(last, last_time, h, times[first:]):
            out[:, first + k] = mean
        return out


def build(cfg: Mapping[str, Any], solver: Any = None) -> SequenceRNN:
    """Return the registry's plain RNN (`rnn`, no time input) from its config block (it has no solver)."""
    return SequenceRNN(hidden=int(cfg["hidden"]), cell=str(cfg["cell"]), time_gap=False)


def build_gap(cfg: Mapping[str, Any], solver: Any = None) -> SequenceRNN:
    """Return the registry's time-gap RNN (`rnn_gap`) from its config block (it has no solver)."""
    return SequenceRNN(hidden=int(cfg["hidden"]), cell=str(cfg["cell"]), time_gap=True)
