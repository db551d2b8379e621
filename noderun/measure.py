"""Measurements a run records besides accuracy: function evaluations and peak memory."""

from __future__ import annotations

import resource
import sys

import torch
from torch import nn

from noderun.models.odenet import ConvDynamics


class NFECounter:
    """Reads and resets the evaluation counters of a model's ODE dynamics.

    The dynamics count every call of their forward. Reading right after the forward pass gives
    the forward NFE; reading again after loss.backward() gives the adjoint's backward NFE (zero
    when gradients come by backpropagation through the solver, which re-evaluates nothing).
    """

    def __init__(self, model: nn.Module):
        self.dynamics = [m for m in model.modules() if isinstance(m, ConvDynamics)]

    def take(self) -> int:
        """Return the evaluations since the last take and reset the counters."""
        total = sum(d.nfe for d in self.dynamics)
        for d in self.dynamics:
            d.nfe = 0
        return total


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window on CUDA (the CPU's resident-set peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Return peak memory in MiB: on CUDA the allocator's peak of allocated tensor memory since the
    last reset; on the CPU the process's peak resident set size since it started."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)
