"""Table 2's data: noisy 2-D Archimedean spirals, observed at irregular times (Chen et al. 2018, 5.1).

Each spiral r = a + bθ is sampled at 2 × n_points equally spaced times t_k = k·dt, θ = θ₀ + k·dθ:
the first n_points form the observation window, from which each trajectory keeps n_obs points drawn
without replacement (irregular times); the n_points after it are the times to predict (the paper's
"100 time points extending beyond those used for training"). Half the spirals turn counter-clockwise,
half clockwise (the mirror image); θ₀, the start along the curve, is random. Everything is drawn
from the run's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from noderun.errors import UserError


@dataclass
class SpiralSplit:
    """Trajectories of one split. times: 2·n_points shared times; clean and noisy: N×2n_points×2;
    observed: N×n_obs sorted indices into the window; clockwise: N booleans."""

    clean: torch.Tensor
    noisy: torch.Tensor
    observed: torch.Tensor
    clockwise: torch.Tensor

    def __len__(self) -> int:
        return len(self.clean)

    def to(self, device: torch.device) -> "SpiralSplit":
        """Return the split with every tensor on device."""
        return SpiralSplit(*(t.to(device) for t in (self.clean, self.noisy, self.observed, self.clockwise)))

    def subset(self, index: torch.Tensor) -> "SpiralSplit":
        """Return the trajectories at index."""
        return SpiralSplit(self.clean[index], self.noisy[index], self.observed[index], self.clockwise[index])


@dataclass
class Spirals:
    """The generated data: shared times, the size of the observation window, train and test splits."""

    times: torch.Tensor
    n_points: int
    train: SpiralSplit
    test: SpiralSplit

    @property
    def window(self) -> torch.Tensor:
        """Return the observation window's times (the first n_points)."""
        return self.times[: self.n_points]


def validate_spiral_settings(d: DictConfig) -> None:
    """Raise UserError naming the first dataset.* value that cannot make spirals."""
    whole = {"n_spirals": 2, "n_points": 2, "n_obs": 1}
    for key, low in whole.items():
        value = d.get(key)
        if not isinstance(value, int) or value < low:
            raise UserError(f"dataset.{key}={value} is invalid; use a whole number >= {low}")
    if d.n_obs > d.n_points:
        raise UserError(f"dataset.n_obs={d.n_obs} is invalid; at most dataset.n_points={d.n_points} points "
                        f"can be observed (the paper uses 30, 50 or 100 of 100)")
    if not 0 < float(d.test_fraction) < 1 or round(d.test_fraction * d.n_spirals) < 1 or \
            round(d.test_fraction * d.n_spirals) >= d.n_spirals:
        raise UserError(f"dataset.test_fraction={d.test_fraction} is invalid; use a number between 0 and 1 that "
                        f"leaves both splits at least one of the {d.n_spirals} spirals")
    for key in ("noise_std", "a"):
        if not float(d[key]) >= 0:
            raise UserError(f"dataset.{key}={d[key]} is invalid; use a number >= 0")
    for key in ("b", "turns"):
        if not float(d[key]) > 0:
            raise UserError(f"dataset.{key}={d[key]} is invalid; use a number > 0")


def make_spirals(d: DictConfig, seed: int) -> Spirals:
    """Return the spirals dataset.* describes, drawn from seed; the test split is the last
    round(test_fraction · n_spirals) trajectories of a seeded shuffle."""
    validate_spiral_settings(d)
    generator = torch.Generator().manual_seed(seed)
    n, n_points = int(d.n_spirals), int(d.n_points)
    # The window covers `turns` turns of the curve; dθ/dt = 1, so time and angle advance together.
    dtheta = 2 * math.pi * float(d.turns) / (n_points - 1)
    times = torch.arange(2 * n_points, dtype=torch.float32) * dtheta
    start = torch.rand(n, 1, generator=generator) * 2 * math.pi
    theta = start + times
    radius = float(d.a) + float(d.b) * theta
    clockwise = torch.arange(n) % 2 == 1
    sign = torch.where(clockwise, -1.0, 1.0).unsqueeze(1)
    clean = torch.stack([radius * torch.cos(theta), sign * radius * torch.sin(theta)], dim=-1)
    noisy = clean + float(d.noise_std) * torch.randn(clean.shape, generator=generator)
    observed = torch.stack([torch.randperm(n_points, generator=generator)[: int(d.n_obs)].sort().values
                            for _ in range(n)])
    order = torch.randperm(n, generator=generator)
    n_test = round(float(d.test_fraction) * n)
    every = SpiralSplit(clean, noisy, observed, clockwise)
    return Spirals(times, n_points, every.subset(order[n_test:]), every.subset(order[:n_test]))
