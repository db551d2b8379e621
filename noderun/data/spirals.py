"""Table 2's data: noisy 2-D spirals observed at irregular times (Chen et al. 2018, 5.1).

Two families, each a dataset (dataset=NAME):

- `spirals` (the default): the family of torchdiffeq's examples/latent_ode.py (`generate_spiral2d`), the
  only public generator, from the paper's authors' group. Two fixed curves on a grid of n_grid times
  over [0, t_end_pi·π]: counter-clockwise r = a + b·t centred at (+centre, 0), clockwise
  r = a + b·cw_scale/(t_end + 1 − t) centred at (−centre, 0). Each trajectory is a window of n_points
  consecutive grid points starting at a uniformly drawn index, followed by the n_points grid points
  after it (the prediction target); the start is drawn in [n_points, n_grid − 2·n_points] so that those
  exist (the example draws in [n_points, n_grid − n_points) and has no target after the window).
- `spirals_archimedean`: noderun's earlier family, r = a + bθ, θ = θ₀ + t, sampled at 2 × n_points equally
  spaced times of which the first n_points cover `turns` turns; θ₀ random; clockwise ones mirrored.

Both: half the spirals counter-clockwise, half clockwise; Gaussian noise of std noise_std on every
point (the targets after the window are compared against the noiseless curve); each trajectory keeps
n_obs of its n_points window points, drawn without replacement (irregular times, sorted); times are
counted from the window's start (the dynamics do not depend on time); a seeded test_fraction of the
spirals is held out for testing; val_size more spirals, drawn after those, are for validation (the
epoch a run reports is chosen on them, never on the test spirals). Everything is drawn from the run's seed.
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
    """The generated data: shared times, the size of the observation window, the train and test splits
    and the validation split (None when dataset.val_size is 0)."""

    times: torch.Tensor
    n_points: int
    train: SpiralSplit
    test: SpiralSplit
    val: SpiralSplit | None = None

    def to(self, device: torch.device) -> "Spirals":
        """Return the data with every tensor on device."""
        return Spirals(self.times.to(device), self.n_points, self.train.to(device), self.test.to(device),
                       None if self.val is None else self.val.to(device))


def _check_common(d: DictConfig) -> None:
    """Raise UserError naming the first dataset.* value shared by both families that cannot make spirals."""
    whole = {"n_spirals": 2, "n_points": 2, "n_obs": 1, "val_size": 0}
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
    if not float(d.noise_std) >= 0:
        raise UserError(f"dataset.noise_std={d.noise_std} is invalid; use a number >= 0")


def validate_spiral_settings(d: DictConfig) -> None:
    """Raise UserError naming the first dataset.* value that cannot make spirals of d.name's family."""
    if d.name not in FAMILIES:
        raise UserError(f"dataset.name={d.name} is invalid; choose one of: {', '.join(FAMILIES)}")
    _check_common(d)
    if d.name == "spirals":
        if not isinstance(d.get("n_grid"), int) or d.n_grid < 3 * d.n_points:
            raise UserError(f"dataset.n_grid={d.get('n_grid')} is invalid; use a whole number >= 3 x dataset.n_points "
                            f"= {3 * d.n_points} (a window of n_points starts at index n_points or later and "
                            f"n_points more follow it)")
        if not isinstance(d.get("train_starts_to_end"), bool):
            raise UserError(f"dataset.train_starts_to_end={d.get('train_starts_to_end')} is invalid; use true or false")
        checks = {"t_end_pi": (0, False), "a": (0, True), "b": (0, False), "cw_scale": (0, False), "centre": (0, True)}
    else:
        checks = {"a": (0, True), "b": (0, False), "turns": (0, False)}
    for key, (low, inclusive) in checks.items():
        value = float(d[key])
        if not (value >= low if inclusive else value > low):
            raise UserError(f"dataset.{key}={d[key]} is invalid; use a number {'>=' if inclusive else '>'} {low}")


def _observed(clean: torch.Tensor, clockwise: torch.Tensor, n_points: int, d: DictConfig,
              generator: torch.Generator) -> SpiralSplit:
    """Return the trajectories with noise added and each one's observed window points drawn. (NaN
    points, past the end of the example's grid, stay NaN: no model reads them.)"""
    noisy = clean + float(d.noise_std) * torch.randn(clean.shape, generator=generator)
    observed = torch.stack([torch.randperm(n_points, generator=generator)[: int(d.n_obs)].sort().values
                            for _ in range(len(clean))])
    return SpiralSplit(clean, noisy, observed, clockwise)


def _spirals(every: SpiralSplit, val: SpiralSplit | None, times: torch.Tensor, n_points: int, d: DictConfig) -> Spirals:
    """Return the data: the first test_fraction of `every` the test split, the rest the training split."""
    n, n_test = len(every), _test_count(d)
    return Spirals(times, n_points, every.subset(torch.arange(n_test, n)), every.subset(torch.arange(n_test)), val)


def _test_count(d: DictConfig) -> int:
    return round(float(d.test_fraction) * int(d.n_spirals))


def _alternating(n: int) -> torch.Tensor:
    """Return n directions, every second one clockwise (half of a split turns each way)."""
    return torch.arange(n) % 2 == 1


def example_curves(d: DictConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the grid times (n_grid) and the counter-clockwise and clockwise curves on it (n_grid×2 each)."""
    t_end = float(d.t_end_pi) * math.pi
    grid = torch.linspace(0, t_end, int(d.n_grid), dtype=torch.float64)
    r_cc = float(d.a) + float(d.b) * grid
    counter = torch.stack([r_cc * torch.cos(grid) + float(d.centre), r_cc * torch.sin(grid)], dim=1)
    # The clockwise curve runs its angle z backwards from t_end + 1 (the example's "+1" keeps z > 0).
    z = t_end + 1 - grid
    r_cw = float(d.a) + float(d.b) * float(d.cw_scale) / z
    clockwise = torch.stack([r_cw * torch.cos(z) - float(d.centre), r_cw * torch.sin(z)], dim=1)
    return grid, counter, clockwise


def example_spirals(d: DictConfig, seed: int) -> Spirals:
    """Return torchdiffeq's example family (dataset=spirals), drawn from seed. A test spiral's window
    starts in [n_points, n_grid − 2·n_points], so that the n_points grid points after it, its target,
    exist. A training spiral's window starts where the example's do, in [n_points, n_grid − n_points),
    when dataset.train_starts_to_end (else as the test spirals'): the training windows then cover the
    whole curve, the stretch the test targets reach included; past the grid's end its points are NaN.
    The val_size validation spirals are drawn after all of these, as the test ones are (their targets
    exist), so the training and test spirals do not depend on val_size."""
    generator = torch.Generator().manual_seed(seed)
    n, n_points, n_grid, n_test = int(d.n_spirals), int(d.n_points), int(d.n_grid), _test_count(d)
    grid, counter, clock = example_curves(d)
    nan = torch.full((2 * n_points, 2), float("nan"), dtype=grid.dtype)
    counter, clock = torch.cat([counter, nan]), torch.cat([clock, nan])
    test_last = n_grid - 2 * n_points
    train_last = n_grid - n_points - 1 if bool(d.train_starts_to_end) else test_last

    def windows(starts: torch.Tensor, clockwise: torch.Tensor) -> torch.Tensor:
        index = starts.unsqueeze(1) + torch.arange(2 * n_points)
        return torch.where(clockwise.view(-1, 1, 1), clock[index], counter[index]).float()

    starts = torch.cat([torch.randint(n_points, test_last + 1, (n_test,), generator=generator),
                        torch.randint(n_points, train_last + 1, (n - n_test,), generator=generator)])
    clockwise = torch.cat([_alternating(n_test), _alternating(n - n_test)])
    every = _observed(windows(starts, clockwise), clockwise, n_points, d, generator)
    val = None
    if int(d.val_size):
        starts, clockwise = torch.randint(n_points, test_last + 1, (int(d.val_size),), generator=generator), \
            _alternating(int(d.val_size))
        val = _observed(windows(starts, clockwise), clockwise, n_points, d, generator)
    return _spirals(every, val, (grid[: 2 * n_points] - grid[0]).float(), n_points, d)


def archimedean_spirals(d: DictConfig, seed: int) -> Spirals:
    """Return noderun's earlier family (dataset=spirals_archimedean), drawn from seed; the val_size
    validation spirals after the others, as for dataset=spirals."""
    generator = torch.Generator().manual_seed(seed)
    n, n_points = int(d.n_spirals), int(d.n_points)
    # The window covers `turns` turns of the curve; dθ/dt = 1, so time and angle advance together.
    dtheta = 2 * math.pi * float(d.turns) / (n_points - 1)
    times = torch.arange(2 * n_points, dtype=torch.float32) * dtheta

    def curves(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        theta = torch.rand(count, 1, generator=generator) * 2 * math.pi + times
        radius = float(d.a) + float(d.b) * theta
        clockwise = _alternating(count)
        sign = torch.where(clockwise, -1.0, 1.0).unsqueeze(1)
        return torch.stack([radius * torch.cos(theta), sign * radius * torch.sin(theta)], dim=-1), clockwise

    clean, clockwise = curves(n)
    # A seeded shuffle picks the test spirals, so that both splits hold both directions.
    order = torch.randperm(n, generator=generator)
    every = _observed(clean[order], clockwise[order], n_points, d, generator)
    val = _observed(*curves(int(d.val_size)), n_points, d, generator) if int(d.val_size) else None
    return _spirals(every, val, times, n_points, d)


FAMILIES = {"spirals": example_spirals, "spirals_archimedean": archimedean_spirals}


def make_spirals(d: DictConfig, seed: int) -> Spirals:
    """Return the spirals dataset.* describes (its name picks the family), drawn from seed, with
    round(test_fraction · n_spirals) of them held out as the test split, and val_size more as the
    validation split."""
    validate_spiral_settings(d)
    return FAMILIES[str(d.name)](d, seed)
