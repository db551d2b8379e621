"""The tutorial's toy regression: h(x) = x^3 + 0.1 x observed with N(0, 1) noise."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RegressionData:
    """Training points (noisy) and test points (the noiseless target on a grid), each N×1."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def cubic_target(x: torch.Tensor) -> torch.Tensor:
    """Return h(x) = x^3 + 0.1 x."""
    return x**3 + 0.1 * x


def make_cubic_data(seed: int, n_train: int = 10, low: float = -2.5, high: float = 2.5,
                    noise_std: float = 1.0, n_test: int = 100) -> RegressionData:
    """Draw n_train points uniformly on [low, high] with noisy targets, from the run's seed; the test
    set is the noiseless target on n_test evenly spaced points of the same interval (the tutorial
    measures its out-of-sample error on the plotted curve)."""
    generator = torch.Generator().manual_seed(seed)
    x_train = low + (high - low) * torch.rand(n_train, 1, generator=generator)
    y_train = cubic_target(x_train) + noise_std * torch.randn(n_train, 1, generator=generator)
    x_test = torch.linspace(low, high, n_test).unsqueeze(1)
    return RegressionData(x_train, y_train, x_test, cubic_target(x_test))
