"""Table 2 (latent ODE against RNN on spirals): the spirals, the real `noderun` sweep with its report,
and the one-line refusals of models and datasets that do not go together."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONF_DIR, run_noderun, single_error_line
from noderun.data.spirals import example_curves, make_spirals
from noderun.errors import UserError
from noderun.experiments.common import selected_row
from noderun.experiments.sequence import epoch_lr
from noderun.models import build_model
from noderun.records import read_summary
from noderun.solvers import SolverSpec

ARCHIMEDEAN = {"name": "spirals_archimedean", "n_spirals": 40, "n_points": 100, "n_obs": 30, "test_fraction": 0.1,
               "noise_std": 0.1, "a": 0.5, "b": 0.2, "turns": 0.5, "val_size": 0}
# torchdiffeq's example family as conf/dataset/spirals.yaml has it, made small.
EXAMPLE = {**OmegaConf.to_container(OmegaConf.load(CONF_DIR / "dataset" / "spirals.yaml")), "n_spirals": 80,
           "n_obs": 30, "test_fraction": 0.1}


def _turning(every: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Return the sign of the cross product of successive points about `centre` (N×2): which way each
    curve turns."""
    rel = every - centre.unsqueeze(1)
    step = rel[:, 1:] - rel[:, :-1]
    return torch.sign(rel[:, :-1, 0] * step[..., 1] - rel[:, :-1, 1] * step[..., 0])


def test_archimedean_spirals_turn_both_ways_and_are_observed_at_irregular_times():
    d = OmegaConf.create(ARCHIMEDEAN)
    data = make_spirals(d, seed=3)
    assert (len(data.train), len(data.test)) == (36, 4) and len(data.times) == 200
    every = torch.cat([data.train.clean, data.test.clean])
    clockwise = torch.cat([data.train.clockwise, data.test.clockwise])
    assert int(clockwise.sum()) == 20
    turning = _turning(every, torch.zeros(40, 2))
    assert ((turning < 0).all(1) == clockwise).all() and ((turning > 0).all(1) == ~clockwise).all()
    observed = data.train.observed
    assert observed.shape == (36, 30) and (observed.diff(dim=1) > 0).all() and int(observed.max()) < 100
    assert len({tuple(row.tolist()) for row in observed}) == 36  # each trajectory its own times
    noise = torch.cat([data.train.noisy - data.train.clean])
    assert abs(float(noise.std()) - 0.1) < 0.01
    again = make_spirals(d, seed=3)
    assert torch.equal(again.test.noisy, data.test.noisy)
    assert not torch.equal(make_spirals(d, seed=4).test.noisy, data.test.noisy)


def test_example_spirals_are_windows_of_torchdiffeqs_two_curves_with_the_next_points_as_target():
    d = OmegaConf.create(EXAMPLE)
    data = make_spirals(d, seed=5)
    grid, counter, clock = example_curves(d)
    assert len(grid) == 1000 and float(grid[-1]) == pytest.approx(6 * math.pi)
    # The example's radii: 0.3 t counter-clockwise about (5, 0), 15 / (6 pi + 1 - t) clockwise about (-5, 0).
    assert float((counter[500] - torch.tensor([5.0, 0.0])).norm()) == pytest.approx(0.3 * float(grid[500]), rel=1e-6)
    assert float((clock[500] - torch.tensor([-5.0, 0.0])).norm()) == \
        pytest.approx(15 / (6 * math.pi + 1 - float(grid[500])), rel=1e-6)
    dt = float(grid[1])
    assert len(data.times) == 200 and torch.allclose(data.times, torch.arange(200) * dt)
    # A test (or validation) spiral is 200 consecutive grid points (window, then target) from a start in [100, 800], so
    # that its target lies inside the grid; a training spiral's window starts anywhere in [100, 900), as
    # the example's do, and what would follow it past the grid's end is NaN.
    starts = {}
    for name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        starts[name] = []
        for i in range(len(split)):
            curve = clock if split.clockwise[i] else counter
            start = int((curve.float() - split.clean[i, 0]).norm(dim=-1).argmin())
            inside = min(200, 1000 - start)
            assert torch.allclose(split.clean[i, :inside], curve[start : start + inside].float(), atol=1e-5)
            assert split.clean[i, inside:].isnan().all() and split.clean[i, :100].isfinite().all()
            starts[name].append(start)
    assert min(starts["test"] + starts["val"]) >= 100 and max(starts["test"] + starts["val"]) <= 800
    assert min(starts["train"]) >= 100 and max(starts["train"]) > 800 and max(starts["train"]) < 900
    every = torch.cat([s.clean[:, :100] for s in (data.train, data.val, data.test)])  # the windows (never NaN)
    clockwise = torch.cat([s.clockwise for s in (data.train, data.val, data.test)])
    assert int(clockwise.sum()) == (80 + 100) // 2  # half of the 80 spirals and of the 100 validation ones
    centre = torch.where(clockwise.unsqueeze(1), torch.tensor([-5.0, 0.0]), torch.tensor([5.0, 0.0]))
    turning = _turning(every, centre)
    assert ((turning < 0).all(1) == clockwise).all() and ((turning > 0).all(1) == ~clockwise).all()
    observed = data.test.observed
    assert observed.shape == (8, 30) and (observed.diff(dim=1) > 0).all() and int(observed.max()) < 100
    noise = data.train.noisy[:, :100] - data.train.clean[:, :100]
    assert abs(float(noise.std()) - 0.1) < 0.01
    assert torch.equal(make_spirals(OmegaConf.create({**EXAMPLE, "noise_std": 0.0}), seed=5).test.noisy,
                       data.test.clean)
    # Without train_starts_to_end the training windows start where the test windows do.
    within = make_spirals(OmegaConf.create({**EXAMPLE, "n_spirals": 400, "train_starts_to_end": False}), seed=5)
    assert within.train.clean.isfinite().all()


def test_validation_spirals_are_held_out_like_the_test_ones_and_leave_the_test_spirals_as_they_were():
    """dataset.val_size spirals are drawn after the others, as the test spirals are (their targets exist):
    the training and test spirals are the same with or without them, so a validation split changes nothing
    but the epoch a run reports."""
    d = OmegaConf.create({**EXAMPLE, "n_spirals": 200, "val_size": 20})
    data, without = make_spirals(d, seed=5), make_spirals(OmegaConf.create({**d, "val_size": 0}), seed=5)
    assert (len(data.train), len(data.val), len(data.test)) == (180, 20, 20) and without.val is None
    for split in ("train", "test"):
        for field in ("clean", "noisy", "observed", "clockwise"):
            assert torch.equal(getattr(getattr(data, split), field).nan_to_num(),
                               getattr(getattr(without, split), field).nan_to_num()), (split, field)
    assert data.val.clean.isfinite().all() and int(data.val.clockwise.sum()) == 10
    assert not torch.equal(data.val.noisy, data.val.clean)  # validation targets are noisy, as observations are


@pytest.mark.parametrize("change, named", [
    ({"val_size": -1}, "dataset.val_size=-1"),
    ({"val_size": 2.5}, "dataset.val_size=2.5"),
    ({"n_grid": 250}, "dataset.n_grid=250"),
    ({"t_end_pi": 0.0}, "dataset.t_end_pi=0.0"),
    ({"noise_std": -0.1}, "dataset.noise_std=-0.1"),
    ({"n_obs": 101}, "dataset.n_obs=101"),
])
def test_spiral_settings_that_cannot_make_spirals_are_refused_by_name(change, named):
    with pytest.raises(UserError, match=re.escape(named)):
        make_spirals(OmegaConf.create({**EXAMPLE, **change}), seed=0)


def _inputs(n_obs: int = 6, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return observations x (B×n×2) at sorted window indices `observed`, their times, and 20 times."""
    generator = torch.Generator().manual_seed(0)
    times = torch.arange(20, dtype=torch.float32) * 0.1
    observed = torch.stack([torch.randperm(10, generator=generator)[:n_obs].sort().values for _ in range(batch)])
    x = torch.randn(batch, n_obs, 2, generator=generator)
    return x, times[observed], observed, times


def test_the_plain_rnn_ignores_the_times_and_the_gap_rnn_and_the_latent_odes_encoder_read_them():
    torch.manual_seed(0)
    x, t, observed, times = _inputs()
    models = {"rnn": build_model({"name": "rnn", "hidden": 25, "cell": "gru"}, SolverSpec()),
              "rnn_gap": build_model({"name": "rnn_gap", "hidden": 25, "cell": "gru"}, SolverSpec()),
              "latent_ode": build_model({"name": "latent_ode", "latent": 4, "rec_hidden": 25, "dyn_hidden": 20,
                                         "dec_hidden": 20, "cell": "gru", "obs_std": 0.1, "adjoint": False},
                                        SolverSpec())}
    stretched = t * 1.5  # the same observations, further apart
    changed = {}
    for name, model in models.items():
        before = model.predict(x, t, observed, times, 10)
        after = model.predict(x, stretched, observed, times, 10)
        assert before.shape == (3, 20, 2) and before[:, 10:].isfinite().all()  # every time after the window
        changed[name] = not torch.allclose(before[:, 10:], after[:, 10:])
    assert changed == {"rnn": False, "rnn_gap": True, "latent_ode": True}
    # The plain RNN's only input is the observation: 2 inputs to its cell, against 3 with the gap.
    assert models["rnn"].cell.input_size == 2 and models["rnn_gap"].cell.input_size == 3


def test_the_reported_epoch_is_the_best_on_validation_and_never_chosen_on_the_test_set():
    rows = [{"epoch": 1, "val_rmse": 0.5, "test_rmse": 0.9}, {"epoch": 2, "val_rmse": 0.3, "test_rmse": 0.7},
            {"epoch": 3, "val_rmse": None, "test_rmse": 0.1}, {"epoch": 4, "val_rmse": 0.3, "test_rmse": 0.2}]
    assert selected_row(rows, "val_rmse", larger_is_better=False)["epoch"] == 2  # the first of equals
    assert selected_row(rows, "val_rmse", larger_is_better=True)["epoch"] == 1
    no_val = [{**r, "val_rmse": None} for r in rows]
    assert selected_row(no_val, "val_rmse", larger_is_better=False) is no_val[-1]  # the last epoch
    old = [{"epoch": 1, "test_rmse": 0.4}, {"epoch": 2, "test_rmse": 0.5}]  # a run from before val_rmse
    assert selected_row(old, "val_rmse", larger_is_better=False) is old[-1]


def test_the_lr_decays_from_lr_to_its_final_fraction_over_the_run():
    assert epoch_lr(0.01, 0.1, 1, 5) == pytest.approx(0.01)
    assert epoch_lr(0.01, 0.1, 5, 5) == pytest.approx(0.001)
    assert epoch_lr(0.01, 0.1, 3, 5) == pytest.approx(0.01 * math.sqrt(0.1))
    assert epoch_lr(0.01, 1.0, 4, 5) == 0.01 and epoch_lr(0.01, 0.1, 1, 1) == 0.01


TINY = ["dataset.n_spirals=40", "dataset.test_fraction=0.1", "trainer.epochs=2", "trainer.passes_per_epoch=1",
        "trainer.batch_size=12", "hydra.sweeper.params.seed=0"]


@pytest.mark.slow
def test_table2_quick_reports_the_three_models_beside_the_paper(tmp_path):
    result = run_noderun(["experiment=table2_quick", *TINY], tmp_path / "no-mnist-needed", tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = next((tmp_path / "outputs" / "multirun").iterdir())
    table = pd.read_csv(sweep / "report" / "table2.csv")
    assert sorted(zip(table.model, table.n_obs)) == sorted((m, n) for m in ("latent_ode", "rnn", "rnn_gap",
                                                                            "persistence", "constant_velocity")
                                                           for n in (30, 50, 100))
    assert (table.seeds == 1).all() and table.rmse_mean.gt(0).all()
    # The preset's objective, on every trained row; the reference rows under the models, each
    # model's verdict against persistence.
    trained = table[table.model.isin(["latent_ode", "rnn", "rnn_gap"])]
    assert set(trained.objective) == {"extrapolate"} and trained.below_persistence.notna().all()
    assert list(table.model[-6:]) == ["persistence"] * 3 + ["constant_velocity"] * 3
    runs = pd.read_csv(sweep / "report" / "runs.csv")  # every run's own numbers
    assert len(runs) == 9 and set(runs.model) == {"rnn", "rnn_gap", "latent_ode"} and runs.test_rmse.gt(0).all()
    assert table.set_index(["model", "n_obs"]).loc[("latent_ode", 30), "paper_rmse"] == 0.1642
    text = (sweep / "report" / "table2.md").read_text()
    assert "0.3937" in text and "0.1346" in text and "Latent ODE" in text and "RNN (time gap)" in text
    assert "objective extrapolate" in text and "Persistence (no training)" in text and "RMSE pooled" in text
    assert "objective extrapolate" in (sweep / "report" / "table2.tex").read_text()
    assert "Latent ODE" in result.stdout  # the sweep ends by printing the table
    for name in ("spirals_nobs30", "spirals_nobs50", "spirals_nobs100", "figure8", "table2_convergence"):
        assert (sweep / "report" / f"{name}.png").stat().st_size > 20_000
    for summary_path in sweep.glob("*/summary.json"):
        run_dir = summary_path.parent
        summary = read_summary(run_dir)
        assert summary["status"] == "completed" and summary["task"] == "timeseries"
        metrics = pd.read_csv(run_dir / "metrics.csv")
        assert list(metrics.epoch) == [1, 2] and metrics.train_loss.notna().all()
        # The reported epoch is the one of least validation RMSE (the 100 validation spirals).
        assert summary["val_size"] == 100 and summary["selected_by"] == "val_rmse"
        best = metrics.loc[metrics.val_rmse.idxmin()]
        assert summary["best_epoch"] == best.epoch and summary["test_rmse"] == pytest.approx(best.test_rmse)
        assert summary["final_test_rmse"] == pytest.approx(metrics.test_rmse.iloc[-1])
        assert summary["objective"] == "extrapolate" and summary["persistence_rmse"] > 0
        if summary["model"] == "latent_ode":
            assert summary["nfe_forward"] > 0 and summary["solver_path"] == "device"  # dopri5's default path
            assert (summary["test_rmse_unobserved"] is None) == (summary["n_obs"] == 100)
        else:
            assert summary["nfe_forward"] == 0 and summary["test_rmse_unobserved"] is None
        # All 4 test spirals are in the predictions file, so the Table 2 number can be recomputed
        # from it: the noiseless spiral against the predictions at the 100 times after the window (made
        # with the reported epoch's weights, best.pt, when that is not the last).
        points = pd.read_csv(run_dir / "spiral_predictions.csv")
        assert points.groupby("trajectory")["observed"].sum().eq(summary["n_obs"]).all()
        assert not points[points.observed].in_window.eq(False).any()
        beyond = points[~points.in_window]
        assert len(beyond) == 4 * 100 and beyond.pred_x.notna().all()
        recomputed = math.sqrt((((beyond.pred_x - beyond.true_x) ** 2 + (beyond.pred_y - beyond.true_y) ** 2) / 2).mean())
        assert abs(recomputed - summary["test_rmse"]) < 1e-4 * max(1.0, recomputed)


@pytest.mark.parametrize("overrides, named", [
    (["experiment=timeseries", "model=latent_ode", "dataset=mnist"], ("dataset=mnist", "dataset=spirals")),
    (["model=odenet", "dataset=spirals"], ("dataset=spirals", "dataset=mnist")),
    (["experiment=timeseries", "model=rnn", "dataset.n_obs=101"], ("dataset.n_obs=101", "100")),
    (["experiment=timeseries", "model=rnn_gap", "trainer.objective=future"], ("trainer.objective='future'", "window, extrapolate")),
    # a model is run by its own table's task, and the line says how
    (["model=latent_ode"], ("model=latent_ode", "task=train", "experiment=timeseries model=latent_ode")),
    (["experiment=timeseries", "model=odenet"], ("model=odenet", "task=timeseries", "rnn, rnn_gap, latent_ode")),
])
def test_sequence_models_and_spirals_refuse_each_others_partners_in_one_line(noderun_main, overrides, named):
    line = single_error_line(noderun_main(overrides))
    assert all(word in line for word in named), line
