"""The logger group (noderun.loggers): what a run logs, read back with the loggers' own readers
(TensorBoard's event-file reader, MLflow's client on the SQLite store), against the run's own
metrics.csv, config and figures; a logger's failure never fails or changes a run; a missing extra is
one line. Skipped, with the reason, where an extra is not installed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conftest import composed, job_dirs, read_metrics, run_noderun, sweep_dirs, without_timings
from noderun.errors import UserError
from noderun.experiments import EXPERIMENTS
from noderun.loggers import LOGGERS, PACKAGES, check_backends, flat_params
from noderun.records import read_summary
from noderun.run.lifecycle import EXIT_OK, run_experiment

TINY_RNN = ["experiment=timeseries", "model=rnn", "dataset.n_spirals=20", "trainer.batch_size=10", "trainer.epochs=3", "threads=1"]


def run_in_process(tmp_path: Path, name: str, extra: list[str]) -> Path:
    """Run a tiny Table 2 RNN (no download: spirals are generated) through the run lifecycle; return its
    run directory, under tmp_path/outputs (where the MLflow store is by default)."""
    overrides = [*TINY_RNN, f"paths.output_root={tmp_path / 'outputs'}", *extra]
    cfg = composed(overrides)
    run_dir = tmp_path / "outputs" / name
    run_dir.mkdir(parents=True)
    assert run_experiment(cfg, run_dir, EXPERIMENTS, overrides=overrides, threads=1) == EXIT_OK
    return run_dir


def numeric_columns(run_dir: Path) -> list[str]:
    """Return the metrics.csv columns that hold a finite number in every row (what a logger plots)."""
    import numpy as np
    import pandas as pd

    numbers = pd.read_csv(run_dir / "metrics.csv").select_dtypes("number")
    return [c for c in numbers if np.isfinite(numbers[c]).all()]


@pytest.mark.slow  # MLflow's and TensorBoard's imports and store: seconds the unit tier keeps under 90 s
def test_tensorboard_holds_every_metrics_column_per_epoch_the_hparams_and_the_figures(tmp_path, restored_process_state):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install -e '.[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = run_in_process(tmp_path, "tb", ["logger=tensorboard"])
    rows, summary = read_metrics(run_dir), read_summary(run_dir)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    columns = numeric_columns(run_dir)
    assert {"train_loss", "test_rmse", "val_rmse"} <= set(columns) <= set(events.Tags()["scalars"])
    for column in columns:
        logged = [(e.step, e.value) for e in events.Scalars(column)]
        assert logged == [(int(r["epoch"]), pytest.approx(float(r[column]), rel=1e-6, abs=1e-12)) for r in rows], column
    assert "spirals" in events.Tags()["images"]  # the run's figure, as an image
    hparams = EventAccumulator(str(run_dir / "tensorboard" / "hparams"))
    hparams.Reload()
    assert hparams.Scalars("final/test_rmse")[0].value == pytest.approx(summary["test_rmse"], rel=1e-6)


@pytest.mark.slow  # MLflow's and TensorBoard's imports and store: seconds the unit tier keeps under 90 s
def test_mlflow_holds_the_config_as_params_the_metrics_per_epoch_and_the_figures(tmp_path, restored_process_state):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install -e '.[mlflow]')")
    from mlflow.tracking import MlflowClient

    run_dir = run_in_process(tmp_path, "ml", ["logger=mlflow"])
    rows, summary = read_metrics(run_dir), read_summary(run_dir)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("noderun").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "ml"
    assert run.data.params == {k: str(v) for k, v in flat_params(summary["key_config"]).items()}
    for column in numeric_columns(run_dir):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, column))
        assert history == [(int(r["epoch"]), pytest.approx(float(r[column]), rel=1e-12)) for r in rows], column
    assert {"spirals.png", "summary.json", "metrics.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_logger_that_raises_leaves_the_run_completed_with_the_same_records_and_one_warning(
        tmp_path, restored_process_state, monkeypatch, caplog):
    class Broken:
        def __init__(self, *args):
            pass

        def epoch(self, row, step):
            raise RuntimeError("the logging service is down")

        def close(self):
            raise AssertionError("a closed logger was used")

    monkeypatch.setitem(LOGGERS, "broken", Broken)
    plain = run_in_process(tmp_path, "plain", [])
    with caplog.at_level(logging.WARNING, logger="noderun"):
        logged = run_in_process(tmp_path, "broken", ["logger.backends=[broken]"])
    assert read_summary(logged)["status"] == "completed"
    assert without_timings(read_metrics(logged)) == without_timings(read_metrics(plain))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "logger broken failed" in warnings[0] and "logging service is down" in warnings[0]


def test_a_logger_whose_extra_is_missing_is_one_line_naming_the_install_command(monkeypatch):
    monkeypatch.setitem(PACKAGES, "tensorboard", ("noderun_no_such_package", "tensorboard"))
    with pytest.raises(UserError, match=r"logger tensorboard needs .*pip install -e '\.\[tensorboard\]'"):
        check_backends(["tensorboard"])
    with pytest.raises(UserError, match="unknown logger backend 'wandb'"):
        check_backends(["wandb"])
    assert check_backends([]) == []


@pytest.mark.slow
def test_a_sweeps_jobs_are_runs_of_one_group_in_both_loggers(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient

    # Two jobs at once on a new store (the race is between the jobs that find no store): before the store
    # was created under a lock, one job of four (two at a time) lost its MLflow run to MLflow's migration.
    result = run_noderun(["-m", *TINY_RNN, "seed=0,1", "logger=many", "hydra/launcher=joblib"], tmp_path, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stdout + result.stderr
    (sweep,) = sweep_dirs(tmp_path)
    assert all(list((job / "tensorboard").glob("events.out.tfevents.*")) for job in job_dirs(sweep))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(f"sweep {sweep.name}").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"{sweep.name}/{job}" for job in range(2)]
    assert {r.data.params["seed"] for r in runs} == {"0", "1"}
    assert all(r.info.status == "FINISHED" for r in runs)
