"""Table 2's training objectives (trainer.objective: window | extrapolate), the reference predictors that
need no training (persistence, constant velocity), and how the report names both: every number here is
worked out by hand on a toy."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from noderun.data.spirals import SpiralSplit, Spirals
from noderun.experiments.sequence import reference_errors, training_targets
from noderun.models import build_model
from noderun.models.sequence import gaussian_log_likelihood
from noderun.models.reference import constant_velocity, persistence, velocity_points
from noderun.report.collect import RunSet
from noderun.report.table2 import table2, write_table2
from noderun.solvers import SolverSpec

LOG_2PI = math.log(2 * math.pi)

# A window of 4 times, then 3 after it, the last past the grid's end (NaN, as a training spiral's is).
TIMES = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
N_WINDOW = 4
OBSERVED = torch.tensor([[0, 2, 3]])
X = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]]])  # the observed points, at times 0, 2, 3
FUTURE = torch.tensor([[[4.0, 1.0], [5.0, 2.0], [float("nan"), float("nan")]]])


def _constant_latent_ode(value: tuple[float, float], obs_std: float):
    """Return a latent ODE whose every prediction is `value`: encoder output and dynamics zero, posterior
    N(0, I) (so its KL term is 0), decoder the constant."""
    model = build_model({"name": "latent_ode", "latent": 4, "rec_hidden": 5, "dyn_hidden": 3, "dec_hidden": 3,
                         "cell": "rnn", "obs_std": obs_std, "adjoint": False}, SolverSpec())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.decoder[-1].bias.copy_(torch.tensor(value))
    return model


def _constant_rnn(value: tuple[float, float], gap: bool):
    """Return an RNN whose every prediction is N(value, 1): all weights zero, the head's bias the mean
    (and log-variance 0)."""
    model = build_model({"name": "rnn_gap" if gap else "rnn", "hidden": 5, "cell": "rnn"}, SolverSpec())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head.bias.copy_(torch.tensor([*value, 0.0, 0.0]))
    return model


def _nll(points: list[tuple[float, float]], mean: tuple[float, float], std: float) -> float:
    """Return the Gaussian negative log-likelihood of the points, by hand."""
    return sum(0.5 * (LOG_2PI + 2 * math.log(std) + (p[d] - mean[d]) ** 2 / std**2) for p in points for d in (0, 1))


def test_the_latent_odes_window_objective_takes_the_observed_points_and_extrapolate_adds_those_after():
    model = _constant_latent_ode((2.0, 1.0), obs_std=0.5)
    window = float(model.loss(X, TIMES[OBSERVED], OBSERVED, TIMES, N_WINDOW).detach())
    extrapolate = float(model.loss(X, TIMES[OBSERVED], OBSERVED, TIMES, N_WINDOW, FUTURE).detach())
    observed = [(1.0, 0.0), (2.0, 0.0), (3.0, 1.0)]
    assert window == pytest.approx(_nll(observed, (2.0, 1.0), 0.5), rel=1e-6)
    # The two points after the window inside the grid enter; the one past its end (NaN) does not.
    assert extrapolate == pytest.approx(_nll(observed + [(4.0, 1.0), (5.0, 2.0)], (2.0, 1.0), 0.5), rel=1e-6)


def test_the_rnns_extrapolate_objective_adds_its_roll_out_after_the_window_masked_past_the_grid():
    for gap in (False, True):
        model = _constant_rnn((3.0, 0.0), gap)
        window = float(model.loss(X, TIMES[OBSERVED], OBSERVED, TIMES, N_WINDOW).detach())
        extrapolate = float(model.loss(X, TIMES[OBSERVED], OBSERVED, TIMES, N_WINDOW, FUTURE).detach())
        # Window: observations 2..n, each predicted from those before; extrapolate: also the two
        # predicted times inside the grid.
        assert window == pytest.approx(_nll([(2.0, 0.0), (3.0, 1.0)], (3.0, 0.0), 1.0), rel=1e-6)
        assert extrapolate == pytest.approx(_nll([(2.0, 0.0), (3.0, 1.0), (4.0, 1.0), (5.0, 2.0)], (3.0, 0.0), 1.0),
                                            rel=1e-6)


def test_the_rnn_is_trained_after_the_window_one_time_at_a_time_fed_the_point_before_and_no_nan_reaches_a_gradient():
    torch.manual_seed(0)
    model = build_model({"name": "rnn_gap", "hidden": 5, "cell": "rnn"}, SolverSpec())
    window = model.loss(X, TIMES[OBSERVED], OBSERVED, TIMES, N_WINDOW)
    # By hand: read the observations, then step to times 4, 5, 6 (gaps 1, 1, 1), fed the last observation,
    # then the points at 4 and 5; the point at 6 is past the grid's end and is not scored.
    with torch.no_grad():
        h = torch.zeros(1, 5)
        for i in range(2):
            _, _, h = model.step(X[:, i], TIMES[OBSERVED][:, i + 1] - TIMES[OBSERVED][:, i], h)
        ahead, fed = 0.0, [X[:, -1], FUTURE[:, 0], FUTURE[:, 1]]
        for k in range(2):
            mean, log_var, h = model.step(fed[k], torch.ones(1), h)
            ahead -= float(gaussian_log_likelihood(FUTURE[:, k], mean, log_var).sum())
    model.zero_grad()
    loss = model.loss(X, TIMES[OBSERVED], OBSERVED, TIMES, N_WINDOW, FUTURE)
    assert float(loss.detach()) == pytest.approx(float(window.detach()) + ahead, rel=1e-5)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_only_the_extrapolate_objective_reads_a_training_spirals_points_after_the_window():
    noisy = torch.arange(2 * 7 * 2, dtype=torch.float32).view(2, 7, 2)
    batch = SpiralSplit(noisy, noisy, torch.tensor([[0, 1], [1, 3]]), torch.tensor([False, True]))
    assert training_targets(batch, 4, "window") is None
    assert torch.equal(training_targets(batch, 4, "extrapolate"), noisy[:, 4:])


def test_persistence_holds_the_last_observation_and_constant_velocity_carries_on_the_fitted_line():
    t = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    # x moves +1 a unit of time, y = 2 but for noise of ±0.5 on the last two observations.
    x = torch.stack([t[0], torch.tensor([2.0, 2, 2, 2, 2, 2, 2.5, 1.5])], dim=1).unsqueeze(0)
    ahead = torch.tensor([8.0, 10.0])
    assert torch.equal(persistence(x, t, ahead), torch.tensor([[[7.0, 1.5], [7.0, 1.5]]]))
    # A quarter of 8 observations: the last 2 (times 6, 7), the line through (6, 2.5) and (7, 1.5):
    # x = t, y = 2.5 - (t - 6).
    assert velocity_points(8) == 2 and velocity_points(30) == 8 and velocity_points(100) == 25
    assert velocity_points(1) == 1
    assert torch.allclose(constant_velocity(x, t, ahead), torch.tensor([[[8.0, 0.5], [10.0, -1.5]]]))
    # Three points on a line: least squares recovers it exactly.
    line = torch.tensor([[[0.0, 1.0], [2.0, 2.0], [4.0, 3.0]]])
    assert torch.allclose(constant_velocity(line, torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([3.0])),
                          torch.tensor([[[6.0, 4.0]]]))
    assert torch.equal(constant_velocity(line[:, :1], torch.tensor([[0.0]]), ahead), line[:, :1].expand(1, 2, 2))


def test_reference_errors_are_the_rmse_of_the_held_point_on_the_test_spirals_after_the_window():
    # Two test spirals, a window of 2 times then 2 after; each observes one point.
    clean = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 3.0], [1.0, 4.0]],
                          [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])
    test = SpiralSplit(clean, clean, torch.tensor([[1], [0]]), torch.tensor([False, True]))
    data = Spirals(torch.arange(4.0), 2, test, test)
    errors = reference_errors(data)
    # Persistence holds (1, 0) and (0, 0): squared errors 9, 16 | 0, 1 over 8 coordinates.
    assert errors["persistence_rmse"] == pytest.approx(math.sqrt(26 / 8))
    assert errors["persistence_rmse_spiral_mean"] == pytest.approx((math.sqrt(25 / 4) + math.sqrt(1 / 4)) / 2)
    # One observation: no velocity, constant velocity holds the point too.
    assert errors["constant_velocity_rmse"] == pytest.approx(errors["persistence_rmse"])


def _summary(model: str, n_obs: int, seed: int, rmse: float, persistence_rmse: float, objective: str | None) -> dict:
    return {"task": "timeseries", "status": "completed", "run_dir": f"/runs/{model}-{n_obs}-{seed}", "model": model,
            "seed": seed, "n_obs": n_obs, "n_points": 100, "train_size": 800, "selected_by": "val_rmse",
            "test_rmse": rmse, "test_rmse_spiral_mean": rmse - 0.01, "test_rmse_observed": 0.1, "nfe_forward": 0.0,
            "nfe_backward": 0.0, "train_time_s": 1.0, "peak_memory_mb": 1.0, "params": 10,
            "persistence_rmse": persistence_rmse, "persistence_rmse_spiral_mean": persistence_rmse - 0.1,
            "constant_velocity_rmse": persistence_rmse + 1, "constant_velocity_rmse_spiral_mean": persistence_rmse,
            **({"objective": objective} if objective else {})}


def test_the_report_names_the_objective_and_convention_and_prints_the_references_under_the_models(tmp_path):
    # Two seeds at n = 30: the time-gap RNN above persistence, the latent ODE below it.
    tasks = [_summary(model, 30, seed, rmse, persistence_rmse, "extrapolate")
             for seed, persistence_rmse in ((0, 2.0), (1, 3.0))
             for model, rmse in (("rnn_gap", 2.6), ("latent_ode", 0.2 + seed / 10))]
    table = table2(RunSet(runs=pd.DataFrame(), tasks=tasks))
    assert list(table["model"]) == ["rnn_gap", "latent_ode", "persistence", "constant_velocity"]
    rows = table.set_index("model")
    # Each seed's references counted once, not once per model.
    assert rows.loc["persistence", "seeds"] == 2 and rows.loc["persistence", "rmse_mean"] == pytest.approx(2.5)
    assert rows.loc["persistence", "rmse_std"] == pytest.approx(math.sqrt(0.5))
    assert rows.loc["constant_velocity", "rmse_mean"] == pytest.approx(3.5)
    assert rows.loc["persistence", "rmse_spiral_mean"] == pytest.approx(2.4)
    assert rows.loc["latent_ode", "rmse_spiral_mean"] == pytest.approx(0.24)
    assert not rows.loc["rnn_gap", "below_persistence"] and rows.loc["latent_ode", "below_persistence"]
    text = write_table2(table, tmp_path)
    for name in ("table2.md", "table2.tex"):
        written = (tmp_path / name).read_text()
        assert "objective extrapolate" in written and "RMSE pooled over all test points" in written, name
        assert "RNN (time gap): NOT below persistence at n = 30" in written.replace(" (objective extrapolate)", "")
    lines = text.splitlines()
    order = [next(i for i, line in enumerate(lines) if line.startswith(f"| {label}"))
             for label in ("RNN (time gap) (objective extrapolate)", "Latent ODE (objective extrapolate)",
                           "Persistence (no training)", "Constant velocity (no training)")]
    assert order == sorted(order)
    assert "Latent ODE (objective extrapolate): below persistence at every n" in text
    assert "2.6000 ± 0.0000 (paper -; 2 seeds; NOT below persistence)" in text
    assert "2.5000 ± 0.7071 (2 seeds)" in text
    assert set(pd.read_csv(tmp_path / "table2.csv")["objective"].dropna()) == {"extrapolate"}


def test_runs_from_before_the_objective_key_are_reported_as_window_and_never_averaged_with_extrapolate(tmp_path):
    tasks = [_summary("latent_ode", 30, 0, 0.4, 2.0, None), _summary("latent_ode", 30, 1, 0.2, 2.0, "extrapolate")]
    table = table2(RunSet(runs=pd.DataFrame(), tasks=tasks))
    trained = table[table["model"] == "latent_ode"].set_index("objective")
    assert trained.loc["window", "rmse_mean"] == 0.4 and trained.loc["extrapolate", "rmse_mean"] == 0.2
    text = write_table2(table, tmp_path)
    assert "Latent ODE (objective extrapolate)" in text and "Latent ODE (objective window)" in text
    assert "objective window: the loss on each training spiral's observed window points only" in text
