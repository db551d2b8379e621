"""Table 2's latent ODE (Chen et al. 2018, 5.1): a recognition RNN run backwards over the observations
gives q(z₀) = N(μ, σ²) for a latent state z₀ at t = 0; an ODE carries z to every time; a decoder maps
z(t) to the observation's mean. Trained by the ELBO with a Gaussian likelihood of fixed std, on the
observed points of the window or (the extrapolate objective) on those and the points after the window."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from noderun.errors import UserError
from noderun.models.sequence import gather_times, gaussian_log_likelihood, masked_log_likelihood, recurrent_cell
from noderun.regularize import Regularizer
from noderun.solvers import SolverSpec, SolveStats, integrate


class LatentDynamics(nn.Module):
    """dz/dt = MLP(z), one hidden layer (ELU)."""

    def __init__(self, latent: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, latent))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class LatentODE(nn.Module):
    """The encoder sees (x, t) of each observation, last first; z₀ is sampled by reparameterisation."""

    def __init__(self, solver: SolverSpec, adjoint: bool = True, obs_dim: int = 2, latent: int = 4,
                 rec_hidden: int = 25, dyn_hidden: int = 20, dec_hidden: int = 20, cell: str = "rnn",
                 obs_std: float = 0.1):
        super().__init__()
        self.encoder = recurrent_cell(cell, obs_dim + 1, rec_hidden)
        self.to_posterior = nn.Linear(rec_hidden, 2 * latent)
        self.dynamics = LatentDynamics(latent, dyn_hidden)
        self.decoder = nn.Sequential(nn.Linear(latent, dec_hidden), nn.ReLU(), nn.Linear(dec_hidden, obs_dim))
        self.solver, self.adjoint = solver, adjoint
        self.solve_stats = SolveStats()  # the evaluations and steps of its solves
        self.regularizer: Regularizer | None = None  # set by noderun.regularize.regularize
        self.obs_log_var = 2 * math.log(obs_std)

    def posterior(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (μ, log σ²) of q(z₀ | observations x (B×n×2) at times t (B×n))."""
        h = x.new_zeros(x.shape[0], self.encoder.hidden_size)
        for i in reversed(range(x.shape[1])):
            h = self.encoder(torch.cat([x[:, i], t[:, i : i + 1]], dim=1), h)
        mean, log_var = self.to_posterior(h).chunk(2, dim=1)
        return mean, log_var

    def decode_path(self, z0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Return the decoded means at every time (B×T×2), integrating z from times[0] = 0."""
        z = integrate(self.dynamics, z0, times, self.solver, adjoint=self.adjoint, stats=self.solve_stats,
                      regularizer=self.regularizer)
        return self.decoder(z.transpose(0, 1))

    def loss(self, x: torch.Tensor, t: torch.Tensor, observed: torch.Tensor, times: torch.Tensor, n_window: int,
             future: torch.Tensor | None = None) -> torch.Tensor:
        """Return the negative ELBO per trajectory, averaged over the batch: observed points x at indices
        `observed` of the window (the first n_window of `times`). With `future` (the noisy points at
        times[n_window:], B×F×2, NaN where there is none) the likelihood also takes those points, decoded
        from the same z₀ (the extrapolate objective); without it, the window's points only."""
        mean, log_var = self.posterior(x, t)
        z0 = mean + (0.5 * log_var).exp() * torch.randn_like(mean)
        path = self.decode_path(z0, times if future is not None else times[:n_window])
        predicted = gather_times(path, observed)
        noise = torch.full_like(predicted, self.obs_log_var)
        log_likelihood = gaussian_log_likelihood(x, predicted, noise).sum((1, 2))
        if future is not None:
            ahead = path[:, n_window:]
            log_likelihood = log_likelihood + masked_log_likelihood(
                future, ahead, torch.full_like(ahead, self.obs_log_var)).sum((1, 2))
        kl = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(1)  # KL(q(z₀) || N(0, I))
        return (kl - log_likelihood).mean()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: torch.Tensor, observed: torch.Tensor, times: torch.Tensor,
                n_window: int) -> torch.Tensor:
        """Return the predicted observation at every one of `times` (B×T×2), from z₀ = μ, inside the
        observation window (its first n_window times) and beyond it alike."""
        mean, _ = self.posterior(x, t)
        return self.decode_path(mean, times)


def build(cfg: Mapping[str, Any], solver: SolverSpec) -> LatentODE:
    """Return the registry's latent ODE from its config block."""
    if not float(cfg["obs_std"]) > 0:
        raise UserError(f"model.obs_std={cfg['obs_std']} is invalid; the likelihood's std must be > 0")
    return LatentODE(solver, adjoint=bool(cfg["adjoint"]), latent=int(cfg["latent"]), rec_hidden=int(cfg["rec_hidden"]),
                     dyn_hidden=int(cfg["dyn_hidden"]), dec_hidden=int(cfg["dec_hidden"]), cell=str(cfg["cell"]),
                     obs_std=float(cfg["obs_std"]))
