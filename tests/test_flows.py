"""Section 4's flows: the instantaneous change of variables against analytic values, Hutchinson's estimate
against the exact trace, the planar flow's log-determinant against torch's determinant, sampling and
density evaluation inverse to each other; the targets and samplers; and (slow) both presets' short
forms through the real command and report."""

from __future__ import annotations

import math
import subprocess

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import NODERUN
from noderun.config import checked_overrides
from noderun.data.plane import TARGETS, energy, grid, log_normaliser, sample_splits
from noderun.errors import UserError
from noderun.models.flows import CNF, TO_DATA, TO_NOISE, DensityDynamics, PlanarFlow, PlanarLayer
from noderun.records import read_summary
from noderun.solvers import SolverSpec, integrate, validate_solver


def _solver(path: str = "device", tol: float = 1e-10) -> SolverSpec:
    return validate_solver(SolverSpec(method="dopri5", rtol=tol, atol=tol, path=path))


class LinearField(nn.Module):
    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, t, z):
        return z @ self.a.T


@pytest.mark.parametrize("path", ["device", "torchdiffeq"])
def test_the_log_density_of_a_linear_ode_is_its_analytic_value(path):
    # dz/dt = A z: z(1) = expm(A) z(0), and log p(z(1)) = log p(z(0)) - tr(A) for every starting point
    a = torch.tensor([[0.3, -0.5], [0.2, -0.1]], dtype=torch.float64)
    z0 = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    start = torch.cat([z0, torch.zeros(7, 1, dtype=torch.float64)], 1)
    end = integrate(DensityDynamics(LinearField(a), "exact"), start, torch.tensor([0.0, 1.0], dtype=torch.float64),
                    _solver(path), False, host_times=(0.0, 1.0))[-1]
    assert torch.allclose(end[:, 2], torch.trace(a).expand(7), atol=1e-6, rtol=0)
    assert torch.allclose(end[:, :2], z0 @ torch.linalg.matrix_exp(a).T, atol=1e-6, rtol=0)


def test_hutchinsons_estimate_is_the_exact_trace_on_average():
    torch.manual_seed(0)
    exact = CNF(8, _solver(tol=1e-6)).double()
    estimated = CNF(8, _solver(tol=1e-6), trace="hutchinson").double()
    estimated.load_state_dict(exact.state_dict())
    z = torch.randn(1, 2, dtype=torch.float64)
    with torch.no_grad():
        _, truth = exact.to_data(z)
        _, draws = estimated.to_data(z.repeat(4000, 1))  # one Rademacher vector per row
    error = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - truth[0]) < 3 * error and draws.std() > 0  # unbiased, and not the exact trace


def test_a_planar_layers_log_determinant_is_torchs_determinant():
    layer = PlanarLayer(2).double()
    with torch.no_grad():  # w . u < -1 before the constraint: u' keeps the layer invertible
        layer.w.copy_(torch.tensor([1.5, -0.7]))
        layer.u.copy_(torch.tensor([-2.0, 0.4]))
        layer.b.fill_(0.3)
    z = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, log_det = layer(z)
    jacobians = torch.stack([torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], row) for row in z])
    assert torch.allclose(log_det, torch.linalg.det(jacobians).abs().log(), atol=1e-10)


@pytest.mark.parametrize("direction", [TO_DATA, TO_NOISE])
def test_a_planar_flows_sampling_and_density_are_inverse(direction):
    torch.manual_seed(3)
    flow = PlanarFlow(16, trained_direction=direction).double()
    z = torch.randn(50, 2, dtype=torch.float64)
    x, forth = flow.to_data(z)
    back, log_det = flow.to_noise(x)
    assert torch.allclose(back, z, atol=1e-8) and torch.allclose(forth + log_det, torch.zeros(50, dtype=torch.float64), atol=1e-8)
    half, _ = flow.transform(z, TO_DATA, 0.5)  # part of the way: a state between noise and data
    assert torch.allclose(flow.transform(half, TO_NOISE, 0.5)[0], z, atol=1e-8)


@pytest.mark.parametrize("adjoint", [False, True])
def test_a_cnfs_sampling_and_density_are_inverse(adjoint):
    torch.manual_seed(4)
    cnf = CNF(8, _solver(tol=1e-9), adjoint=adjoint).double()
    z = torch.randn(50, 2, dtype=torch.float64)
    x, forth = cnf.to_data(z)
    back, log_det = cnf.to_noise(x)
    assert torch.allclose(back, z, atol=1e-6) and torch.allclose(forth + log_det, torch.zeros(50, dtype=torch.float64), atol=1e-6)
    assert cnf.solve_stats.evaluations["forward"] > 0  # counted by integrate, not by the dynamics


def test_the_adjoints_gradients_are_backpropagations():
    torch.manual_seed(5)
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(5)
        cnf = CNF(4, _solver(tol=1e-9), adjoint=adjoint).double()
        x, log_det = cnf.to_data(torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6)))
        (x.pow(2).sum() - log_det.sum()).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in cnf.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-5)  # gradients up to about 6


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_is_a_density_once_normalised(target):
    cells = grid(400, limit=6.0)
    mass = torch.exp(-energy(target, cells) - log_normaliser(target)).sum() * (12 / 400) ** 2
    assert abs(float(mass) - 1) < 1e-3


def test_the_samples_are_seeded_and_the_test_samples_held_out():
    train, test = sample_splits("two_moons", 300, 100, seed=7, noise=0.1)
    again, _ = sample_splits("two_moons", 300, 100, seed=7, noise=0.1)
    other, _ = sample_splits("two_moons", 300, 100, seed=8, noise=0.1)
    assert torch.equal(train, again) and not torch.equal(train, other) and train.shape == (300, 2)
    assert not (torch.cdist(train, test) == 0).any()


@pytest.mark.parametrize("args, named", [
    (["model=cnf"], ("model=cnf", "task=train", "experiment=cnf_density")),
    (["experiment=cnf_density", "model.units=0"], ("model.units=0", "whole number >= 1")),
    (["experiment=cnf_mle", "dataset.target=u1"], ("unknown key dataset.target",)),
])
def test_flow_settings_are_checked_in_one_line(args, named):
    with pytest.raises(UserError) as err:
        checked_overrides(args)
    assert all(word in str(err.value) for word in named), str(err.value)


@pytest.mark.slow
def test_both_presets_short_forms_train_and_are_reported(tmp_path):
    tiny = ["trainer.iterations=20", "trainer.eval_every=10", "model.units=2"]
    for preset, extra in (("cnf_density_quick", ["dataset.target=u1", "cnf_density.eval_samples=500",
                                                  "cnf_density.grid_points=12"]),
                          ("cnf_mle_quick", ["dataset=two_moons", "dataset.n_train=500", "dataset.n_test=200",
                                             "cnf_mle.figure_samples=100", "cnf_mle.grid_points=12"])):
        result = subprocess.run([NODERUN, f"experiment={preset}", *tiny, *extra, f"hydra.sweep.dir={tmp_path / preset}"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        task = preset.removesuffix("_quick")
        metric = "kl" if task == "cnf_density" else "test_nll"
        runs = [d for d in (tmp_path / preset).iterdir() if (d / "summary.json").exists()]
        assert len(runs) == 2  # the planar flow and the CNF
        for run_dir in runs:
            summary = read_summary(run_dir)
            assert summary["status"] == "completed" and summary["task"] == task and summary["iterations"] == 20
            metrics = pd.read_csv(run_dir / "metrics.csv")
            assert list(metrics["iterations"]) == [10, 20] and metrics.iloc[-1][metric] == pytest.approx(summary[metric])
            assert (summary["nfe_forward"] > 0) == (summary["model"] == "cnf")
        report = tmp_path / preset / "report"
        table = (report / f"{task}.md").read_text()
        assert "Planar flow" in table and "CNF" in table and "2 units: CNF" in table
        assert (report / ("figure4.png" if task == "cnf_density" else "figure5.png")).stat().st_size > 0
