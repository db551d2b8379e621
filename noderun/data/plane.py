"""Section 4's data on the plane: the target densities of density matching, given by the energy functions
of Rezende and Mohamed (2015, table 1: p(z) proportional to exp(-U(z))), confined to the box they are
drawn in and normalised on a grid; and
the samples of maximum likelihood, two circles and two moons (seeded, with held-out test samples)."""

from __future__ import annotations

import math
from typing import Callable

import torch

# The grid the targets are normalised on, and the one figures draw densities on: [-LIMIT, LIMIT]^2.
LIMIT = 4.0


def _w1(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * z[:, 0] / 4)


def _w2(z: torch.Tensor) -> torch.Tensor:
    return 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)


def _w3(z: torch.Tensor) -> torch.Tensor:
    return 3 * torch.sigmoid((z[:, 0] - 1) / 0.3)


def _log_sum_exp(*terms: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(torch.stack(terms), 0)


def energy_u1(z: torch.Tensor) -> torch.Tensor:
    """A ring split in two along the first axis."""
    ring = 0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2
    return ring - _log_sum_exp(-0.5 * ((z[:, 0] - 2) / 0.6) ** 2, -0.5 * ((z[:, 0] + 2) / 0.6) ** 2)


def energy_u2(z: torch.Tensor) -> torch.Tensor:
    """A sine wave."""
    return 0.5 * ((z[:, 1] - _w1(z)) / 0.4) ** 2


def energy_u3(z: torch.Tensor) -> torch.Tensor:
    """A sine wave split in two where a bump pulls half of it down."""
    return -_log_sum_exp(-0.5 * ((z[:, 1] - _w1(z)) / 0.35) ** 2, -0.5 * ((z[:, 1] - _w1(z) + _w2(z)) / 0.35) ** 2)


def energy_u4(z: torch.Tensor) -> torch.Tensor:
    """A sine wave split in two by a step."""
    return -_log_sum_exp(-0.5 * ((z[:, 1] - _w1(z)) / 0.4) ** 2, -0.5 * ((z[:, 1] - _w1(z) + _w3(z)) / 0.35) ** 2)


_ENERGIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "u1": energy_u1, "u2": energy_u2, "u3": energy_u3, "u4": energy_u4}
# The wave energies (u2-u4) hold infinite mass along the first axis, so that no density matches them and
# the loss falls without bound as q spreads; as drawn (on [-4, 4]^2) each target is confined by a soft
# wall beyond |z_1| = LIMIT, of this width; u1's mass is inside anyway.
WALL_WIDTH = 0.2
TARGETS = tuple(_ENERGIES)


def energy(target: str, z: torch.Tensor) -> torch.Tensor:
    """Return U(z) of a target (u1-u4) for each row of z: its density is proportional to exp(-U)."""
    wall = 0.5 * (torch.relu(z[:, 0].abs() - LIMIT) / WALL_WIDTH) ** 2
    return _ENERGIES[target](z) + wall


def grid(points: int, limit: float = LIMIT, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Return the centres of a points x points grid of cells over [-limit, limit]^2 (rows: x varies
    fastest), as a (points^2, 2) tensor."""
    edge = torch.linspace(-limit, limit, points + 1, dtype=dtype)
    centres = (edge[1:] + edge[:-1]) / 2
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], 1)


def log_normaliser(target: str, points: int = 800, limit: float = 8.0) -> float:
    """Return log Z = log of the integral of exp(-U) over the plane, by the midpoint rule on a fine grid
    (every target's mass lies well inside [-8, 8]^2): KL(q||p) = E_q[log q + U] + log Z."""
    cells = grid(points, limit)
    area = (2 * limit / points) ** 2
    return float(torch.logsumexp(-energy(target, cells), 0) + math.log(area))


def two_circles(n: int, generator: torch.Generator, noise: float = 0.08, scale: float = 3.0) -> torch.Tensor:
    """Return n points on two concentric circles (radii 1 and 0.5, half each) with Gaussian noise,
    scaled by `scale` (FFJORD's toy set's proportions)."""
    inner = torch.arange(n) % 2 == 1
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * 2 * math.pi
    radius = torch.where(inner, 0.5, 1.0)
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
    return (points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)) * scale


def two_moons(n: int, generator: torch.Generator, noise: float = 0.1) -> torch.Tensor:
    """Return n points on two interleaved half circles (half each) with Gaussian noise, mapped by
    x -> 2x + (-1, -0.2) so that they sit around the origin (FFJORD's toy set's placement)."""
    lower = torch.arange(n) % 2 == 1
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
    upper_points = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    lower_points = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], 1)
    points = torch.where(lower[:, None], lower_points, upper_points)
    points = points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return points * 2 + torch.tensor([-1.0, -0.2], dtype=torch.float64)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"two_circles": two_circles, "two_moons": two_moons}


def sample_splits(name: str, n_train: int, n_test: int, seed: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (training, test) samples of a set, both drawn from `seed` (the test samples after the
    training ones, so that they are never the same points)."""
    generator = torch.Generator().manual_seed(seed)
    points = SAMPLERS[name](n_train + n_test, generator, noise)
    order = torch.randperm(n_train + n_test, generator=generator)
    points = points[order]
    return points[:n_train], points[n_train:]
