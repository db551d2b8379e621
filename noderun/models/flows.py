"""Section 4's normalizing flows on the plane: the planar flow of depth K (Rezende and Mohamed 2015) and
the continuous normalizing flow (CNF) of width M, dz/dt = sum_n sigma_n(t) u_n(t) tanh(w_n(t) . z + b_n(t)), whose
log-density changes by minus the trace of the dynamics' Jacobian (the paper's Theorem 1).

Both map between the base variable (standard normal) and the data both ways, each map returning the
log-determinant of its Jacobian: `to_data(z)` and `to_noise(x)`. A planar flow's layers are explicit one
way (`trained_direction`) and solved for by bisection the other; a CNF solves its ODE either way."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from noderun.solvers import SolveStats, SolverSpec, integrate

TO_DATA, TO_NOISE = "to_data", "to_noise"
TRACES = ("exact", "hutchinson")


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """Return log N(z; 0, I) of each row of z."""
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class PlanarLayer(nn.Module):
    """One planar unit, f(z) = z + u' tanh(w . z + b), with u' the u that keeps f invertible
    (w . u' >= -1, Rezende and Mohamed's appendix A)."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(dim) * 0.1)
        self.u = nn.Parameter(torch.randn(dim) * 0.1)
        self.b = nn.Parameter(torch.zeros(()))

    def _u_hat(self) -> torch.Tensor:
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / (self.w @ self.w).clamp_min(1e-12)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return f(z) and log |det df/dz| for each row."""
        u = self._u_hat()
        h = torch.tanh(z @ self.w + self.b)
        log_det = torch.log((1 + (1 - h**2) * (self.w @ u)).abs().clamp_min(1e-12))
        return z + h[:, None] * u, log_det

    def inverse(self, y: torch.Tensor, iterations: int = 100) -> torch.Tensor:
        """Return the z with f(z) = y: a = w . z solves w . y = a + (w . u') tanh(a + b), increasing in a
        and within |w . u'| of w . y, found by bisection."""
        u, target = self._u_hat(), y @ self.w
        c = self.w @ u
        low, high = target - c.abs() - 1e-6, target + c.abs() + 1e-6
        for _ in range(iterations):
            middle = (low + high) / 2
            above = middle + c * torch.tanh(middle + self.b) > target
            low, high = torch.where(above, low, middle), torch.where(above, middle, high)
        a = (low + high) / 2
        return y - torch.tanh(a + self.b)[:, None] * u


class Flow(nn.Module):
    """A flow between the base variable (noise, t = 0) and the data (t = 1): `transform(z, direction,
    fraction)` maps along the stretch [0, fraction] of that path either way, returning the log-determinant
    of the map's Jacobian; to_data and to_noise are the whole way."""

    def transform(self, z: torch.Tensor, direction: str, fraction: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def to_data(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the data the base samples z map to, and log |det d(data)/dz|."""
        return self.transform(z, TO_DATA)

    def to_noise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the base variable data x map to, and log |det dz/dx|."""
        return self.transform(x, TO_NOISE)


class PlanarFlow(Flow):
    """K planar layers. Explicit, with exact log-determinants, in `trained_direction` (to_data for
    density matching, where samples are drawn and scored; to_noise for maximum likelihood, where data
    are scored); the other direction inverts each layer by bisection."""

    def __init__(self, depth: int, dim: int = 2, trained_direction: str = TO_DATA):
        super().__init__()
        self.layers = nn.ModuleList(PlanarLayer(dim) for _ in range(depth))
        self.trained_direction = trained_direction

    def _portion(self, fraction: float) -> list[PlanarLayer]:
        """Return the layers of the stretch [0, fraction] of the path from noise (0) to data (1), in
        their explicit order: the first ones when they run to the data, the last ones when to the noise."""
        k = round(fraction * len(self.layers))
        layers = list(self.layers)
        return layers[:k] if self.trained_direction == TO_DATA else layers[len(layers) - k:]

    @staticmethod
    def _explicit(z: torch.Tensor, layers: list[PlanarLayer]) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = torch.zeros(len(z), dtype=z.dtype, device=z.device)
        for layer in layers:
            z, step = layer(z)
            log_det = log_det + step
        return z, log_det

    def transform(self, z: torch.Tensor, direction: str, fraction: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Map z along the stretch [0, fraction] of the path from noise to data (to_data: from the noise
        to where the path is at `fraction`; to_noise: back from there); return it and the
        log-determinant of that map's Jacobian."""
        layers = self._portion(fraction)
        if direction == self.trained_direction:
            return self._explicit(z, layers)
        y = z
        for layer in reversed(layers):
            y = layer.inverse(y)
        _, log_det = self._explicit(y, layers)
        return y, -log_det


class TimePlanarField(nn.Module):
    """The CNF's dynamics, f(z, t) = sum_n sigma_n(t) u_n(t) tanh(w_n(t) . z + b_n(t)): M planar units whose
    parameters are functions of t (a hypernetwork of t) and each gated by sigma_n(t) in (0, 1), which
    learns when its unit applies (the paper's time-dependent dynamics and gating, section 4)."""

    def __init__(self, width: int, dim: int = 2, hidden: int = 32):
        super().__init__()
        self.width, self.dim = width, dim
        self.hyper = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                   nn.Linear(hidden, width * (2 * dim + 2)))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        params = self.hyper(t.reshape(1, 1).to(z))[0]
        m, d = self.width, self.dim
        w, u = params[:m * d].reshape(m, d), params[m * d:2 * m * d].reshape(m, d)
        b, gate = params[2 * m * d:2 * m * d + m], torch.sigmoid(params[2 * m * d + m:])
        return (torch.tanh(z @ w.T + b) * gate) @ u


def exact_trace(f: torch.Tensor, z: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Return the trace of df/dz for each row, one gradient per dimension (cheap in 2-D)."""
    dims = z.shape[1]
    return sum(torch.autograd.grad(f[:, i].sum(), z, create_graph=create_graph, retain_graph=create_graph or i < dims - 1)[0][:, i]
               for i in range(dims))


def hutchinson_trace(f: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Return Hutchinson's estimate e^T (df/dz) e of the trace for each row (e: one noise vector per row,
    held for the whole solve), from one vector-Jacobian product: unbiased, O(1) in the dimension."""
    return (torch.autograd.grad((f * noise).sum(), z, create_graph=create_graph)[0] * noise).sum(1)


class DensityDynamics(nn.Module):
    """The state (z, l) of a CNF's solve: dz/dt = f(z, t), dl/dt = tr(df/dz), so that l grows by the
    log-determinant of the map from the start of the solve (the instantaneous change of variables)."""

    def __init__(self, field: nn.Module, trace: str):
        super().__init__()
        self.field, self.trace = field, trace
        self.noise: torch.Tensor | None = None  # Hutchinson's vectors of the current solve

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        differentiable = torch.is_grad_enabled()  # training: the trace's own graph is kept
        with torch.enable_grad():
            z = state[:, :-1]
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.field(t, z)
            if self.trace == "exact":
                trace = exact_trace(f, z, differentiable)
            else:
                trace = hutchinson_trace(f, z, self.noise, differentiable)
        derivative = torch.cat([f, trace[:, None]], 1)
        return derivative if differentiable else derivative.detach()


class CNF(Flow):
    """A continuous normalizing flow of width M on [0, 1]: noise at t = 0, data at t = 1; every solve
    by the run's solver (backpropagation through it, or the adjoint), its evaluations and steps counted
    in `solve_stats`."""

    def __init__(self, width: int, solver: SolverSpec, adjoint: bool = False, trace: str = "exact",
                 hyper_hidden: int = 32, dim: int = 2):
        super().__init__()
        self.dynamics = DensityDynamics(TimePlanarField(width, dim, hyper_hidden), trace)
        self.solver, self.adjoint, self.solve_stats = solver, adjoint, SolveStats()

    def transform(self, z: torch.Tensor, direction: str, fraction: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Map z along [0, fraction] of the flow's time (to_data: from the noise at t = 0 to t = fraction;
        to_noise: back from t = fraction to 0); return it and the log-determinant of that map."""
        if fraction == 0:
            return z, torch.zeros(len(z), dtype=z.dtype, device=z.device)
        span = (0.0, float(fraction)) if direction == TO_DATA else (float(fraction), 0.0)
        if self.dynamics.trace == "hutchinson":
            self.dynamics.noise = torch.randint(0, 2, z.shape, device=z.device).to(z.dtype) * 2 - 1
        start = torch.cat([z, torch.zeros(len(z), 1, dtype=z.dtype, device=z.device)], 1)
        times = torch.tensor(span, dtype=z.dtype, device=z.device)
        end = integrate(self.dynamics, start, times, self.solver, self.adjoint, host_times=span,
                        stats=self.solve_stats)[-1]
        return end[:, :-1], end[:, -1]


def build_planar(cfg: Mapping[str, Any], solver: SolverSpec) -> PlanarFlow:
    """Return a planar flow of depth model.units, explicit in model.direction (set by the task: to_data
    for density matching, to_noise for maximum likelihood)."""
    return PlanarFlow(int(cfg["units"]), trained_direction=str(cfg.get("direction", TO_DATA)))


def build_cnf(cfg: Mapping[str, Any], solver: SolverSpec) -> CNF:
    """Return a CNF of width model.units, its trace exact or Hutchinson's (model.trace)."""
    return CNF(int(cfg["units"]), solver, bool(cfg["adjoint"]), str(cfg["trace"]), int(cfg["hyper_hidden"]))
