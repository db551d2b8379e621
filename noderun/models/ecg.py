"""The tutorial's (shared/seeds/002, section 6) heartbeat classifiers on 1-D signals, built alike so
that they compare: three convolutional layers with ReLU, then six residual blocks (ResNet) or one ODE
block whose dynamics see the time (ODE-Net), then one linear layer on the flattened features. No
normalisation: the tutorial names none."""

from __future__ import annotations

import torch
from torch import nn

from noderun.models.ode_block import ODEBlock
from noderun.solvers import SolverSpec

ECG_MODELS = ("resnet", "odenet")


def stem(channels: int) -> nn.Sequential:
    """Return the three first layers: 1 → channels, then two stride-2 layers (187 → 47 samples)."""
    return nn.Sequential(nn.Conv1d(1, channels, 5, padding=2), nn.ReLU(),
                         nn.Conv1d(channels, channels, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv1d(channels, channels, 5, stride=2, padding=2), nn.ReLU())


class ResidualBlock1d(nn.Module):
    """relu(h + conv(relu(conv(h))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(h + self.conv2(torch.relu(self.conv1(h))))


class TimeConvDynamics(nn.Module):
    """f(t, h) = conv([t, relu(h)]): a 1-D convolution that sees the time as an extra input channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels + 1, channels, 3, padding=1)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        time_channel = t.to(h.dtype).expand(h.shape[0], 1, h.shape[2])
        return self.conv(torch.cat([time_channel, torch.relu(h)], dim=1))


def build_ecg_model(name: str, solver: SolverSpec, channels: int = 32, blocks: int = 6, num_classes: int = 5,
                    signal_length: int = 187, adjoint: bool = True) -> nn.Sequential:
    """Return the tutorial's 1-D `resnet` (six residual blocks) or `odenet` (one ODE block on [0, 1])."""
    if name == "resnet":
        middle = nn.Sequential(*[ResidualBlock1d(channels) for _ in range(blocks)])
    else:
        middle = ODEBlock(TimeConvDynamics(channels), solver, adjoint=adjoint)
    length = signal_length
    for _ in range(2):  # the stem's two stride-2 convolutions (kernel 5, padding 2)
        length = (length - 1) // 2 + 1
    return nn.Sequential(stem(channels), middle, nn.Flatten(), nn.Linear(channels * length, num_classes))
