"""Table 2 (latent ODE against RNN on spirals): the spirals, the real `noderun` sweep with its report,
and the one-line refusals of models and datasets that do not go together."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import run_noderun, single_error_line
from noderun.data.spirals import make_spirals
from noderun.records import read_summary

SPIRALS = {"name": "spirals", "n_spirals": 40, "n_points": 100, "n_obs": 30, "test_fraction": 0.1,
           "noise_std": 0.1, "a": 0.5, "b": 0.2, "turns": 0.5}


def test_spirals_turn_both_ways_and_are_observed_at_irregular_times():
    d = OmegaConf.create(SPIRALS)
    data = make_spirals(d, seed=3)
    assert (len(data.train), len(data.test)) == (36, 4) and len(data.times) == 200
    every = torch.cat([data.train.clean, data.test.clean])
    clockwise = torch.cat([data.train.clockwise, data.test.clockwise])
    assert int(clockwise.sum()) == 20
    # The sign of the cross product of successive points says which way a curve turns.
    step = every[:, 1:] - every[:, :-1]
    cross = every[:, :-1, 0] * step[..., 1] - every[:, :-1, 1] * step[..., 0]
    assert ((cross < 0).all(1) == clockwise).all() and ((cross > 0).all(1) == ~clockwise).all()
    observed = data.train.observed
    assert observed.shape == (36, 30) and (observed.diff(dim=1) > 0).all() and int(observed.max()) < 100
    assert len({tuple(row.tolist()) for row in observed}) == 36  # each trajectory its own times
    noise = torch.cat([data.train.noisy - data.train.clean])
    assert abs(float(noise.std()) - 0.1) < 0.01
    again = make_spirals(d, seed=3)
    assert torch.equal(again.test.noisy, data.test.noisy)
    assert not torch.equal(make_spirals(d, seed=4).test.noisy, data.test.noisy)


TINY = ["dataset.n_spirals=40", "dataset.test_fraction=0.1", "trainer.epochs=2", "trainer.batch_size=12",
        "hydra.sweeper.params.seed=0"]


@pytest.mark.slow
def test_table2_quick_reports_both_models_beside_the_paper(tmp_path):
    result = run_noderun(["experiment=table2_quick", *TINY], tmp_path / "no-mnist-needed", tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = next((tmp_path / "outputs" / "multirun").iterdir())
    table = pd.read_csv(sweep / "report" / "table2.csv")
    assert sorted(zip(table.model, table.n_obs)) == sorted((m, n) for m in ("latent_ode", "rnn") for n in (30, 50, 100))
    assert (table.seeds == 1).all() and table.rmse_mean.gt(0).all()
    assert table.set_index(["model", "n_obs"]).loc[("latent_ode", 30), "paper_rmse"] == 0.1642
    text = (sweep / "report" / "table2.md").read_text()
    assert "0.3937" in text and "0.1346" in text and "Latent ODE" in text and "RNN" in text
    assert "Latent ODE" in result.stdout  # the sweep ends by printing the table
    for n_obs in (30, 50, 100):
        assert (sweep / "report" / f"spirals_nobs{n_obs}.png").stat().st_size > 20_000
    for summary_path in sweep.glob("*/summary.json"):
        run_dir = summary_path.parent
        summary = read_summary(run_dir)
        assert summary["status"] == "completed" and summary["task"] == "timeseries"
        metrics = pd.read_csv(run_dir / "metrics.csv")
        assert list(metrics.epoch) == [1, 2] and metrics.train_loss.notna().all()
        if summary["model"] == "latent_ode":
            assert summary["nfe_forward"] > 0  # interpolation error exists where points went unobserved
            assert (summary["test_rmse_unobserved"] is None) == (summary["n_obs"] == 100)
        else:
            assert summary["nfe_forward"] == 0 and summary["test_rmse_unobserved"] is None
        # All 4 test spirals are in the predictions file, so the Table 2 number can be recomputed
        # from it: the noiseless spiral against the predictions at the 100 times after the window.
        points = pd.read_csv(run_dir / "spiral_predictions.csv")
        assert points.groupby("trajectory")["observed"].sum().eq(summary["n_obs"]).all()
        assert not points[points.observed].in_window.eq(False).any()
        beyond = points[~points.in_window]
        assert len(beyond) == 4 * 100 and beyond.pred_x.notna().all()
        recomputed = math.sqrt((((beyond.pred_x - beyond.true_x) ** 2 + (beyond.pred_y - beyond.true_y) ** 2) / 2).mean())
        assert abs(recomputed - summary["test_rmse"]) < 1e-4 * max(1.0, recomputed)


@pytest.mark.parametrize("overrides, named", [
    (["model=latent_ode", "dataset=mnist"], ("dataset=mnist", "dataset=spirals")),
    (["model=odenet", "dataset=spirals"], ("dataset=spirals", "dataset=mnist")),
    (["model=rnn", "dataset.n_obs=101"], ("dataset.n_obs=101", "100")),
])
def test_sequence_models_and_spirals_refuse_each_others_partners_in_one_line(noderun_main, overrides, named):
    line = single_error_line(noderun_main(overrides))
    assert all(word in line for word in named), line
