"""Table 2's reference predictors, which need no training: they give the scale of every RMSE in the
table. Each predicts the times after the observation window from a spiral's observed points alone."""

from __future__ import annotations

import math

import torch


def persistence(x: torch.Tensor, t: torch.Tensor, ahead: torch.Tensor) -> torch.Tensor:
    """Return the last observed point (x: B×n×2 at times t: B×n) held at every one of the times `ahead`
    (F): B×F×2."""
    return x[:, -1:].expand(-1, len(ahead), -1).clone()


def velocity_points(n_obs: int) -> int:
    """Return how many of the last observations the constant-velocity line is fitted to: a quarter of
    them (at least 2, so that there is a velocity; all of them when fewer). A quarter spans about a
    quarter of the window whatever n_obs is, so the noise on the velocity does not grow as the
    observations get closer together."""
    return min(n_obs, max(2, math.ceil(n_obs / 4)))


def constant_velocity(x: torch.Tensor, t: torch.Tensor, ahead: torch.Tensor) -> torch.Tensor:
    """Return the least-squares straight line x = a + b·t through the last velocity_points(n)
    observations, carried on to the times `ahead` (F): B×F×2. One observation: held (no velocity)."""
    k = velocity_points(x.shape[1])
    if k < 2:
        return persistence(x, t, ahead)
    xs, ts = x[:, -k:], t[:, -k:]
    t_mean, x_mean = ts.mean(1, keepdim=True), xs.mean(1)
    dt = ts - t_mean
    slope = (dt.unsqueeze(-1) * (xs - x_mean.unsqueeze(1))).sum(1) / (dt**2).sum(1, keepdim=True)
    return x_mean.unsqueeze(1) + slope.unsqueeze(1) * (ahead.view(1, -1, 1) - t_mean.unsqueeze(-1))


# Name in the report (its key in a run's summary: NAME_rmse) -> predictor.
REFERENCES = {"persistence": persistence, "constant_velocity": constant_velocity}
