"""The real `noderun` command in a subprocess: every model trains, records are complete, runs are
reproducible and resumable, and user mistakes get one clear line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time

import pytest
import torch

from conftest import NODERUN, SMALL, error_lines, run_noderun, single_run_dir
from noderun.records import METRICS_COLUMNS, TIMING_COLUMNS

SUMMARY_FIELDS = {"model", "solver", "rtol", "atol", "seed", "dataset", "device", "torch_version",
                  "torchdiffeq_version", "params", "epochs", "best_epoch", "test_error", "final_test_error",
                  "nfe_forward", "nfe_backward", "train_time_s", "peak_memory_mb", "status", "reason"}


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def without_timings(rows):
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


@pytest.mark.parametrize("model, extra, params, nfe", [
    ("mlp", [], 238_510, (0.0, 0.0)),
    ("resnet", [], 601_482, (0.0, 0.0)),
    ("rknet", [], 208_266, (16.0, 0.0)),  # rk4, step 0.25 on [0, 1]: 4 steps of 4 evaluations
    ("odenet", ["solver=rk4"], 208_266, (16.0, 16.0)),
    ("odenet", ["solver.adjoint_norm=seminorm"], 208_266, None),
])
def test_each_model_trains_and_leaves_a_complete_run_directory(mnist_root, tmp_path, model, extra, params, nfe):
    result = run_noderun([f"model={model}", *extra, *SMALL], mnist_root, tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = single_run_dir(tmp_path)
    for name in (".hydra/config.yaml", "metrics.csv", "summary.json", "last.pt", "best.pt", "noderun.log"):
        assert (run_dir / name).exists(), name
    rows = read_metrics(run_dir)
    assert list(rows[0]) == list(METRICS_COLUMNS) and len(rows) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_FIELDS <= set(summary)
    assert summary["status"] == "completed" and summary["reason"] is None
    assert summary["params"] == params and f"{params} parameters" in (run_dir / "noderun.log").read_text()
    assert summary["best_epoch"] == 1 and summary["selected_by"] == "val_acc"
    assert summary["test_error"] == pytest.approx(100 * (1 - float(rows[0]["test_acc"])))
    if nfe is not None:
        assert (summary["nfe_forward"], summary["nfe_backward"]) == nfe
    else:  # adaptive solver with the adjoint: both phases evaluate the dynamics
        assert summary["nfe_forward"] > 0 and summary["nfe_backward"] > 0
    checkpoint = torch.load(run_dir / "last.pt", weights_only=False)
    assert checkpoint["epoch"] == 1 and len(checkpoint["records"]) == 1


def test_same_config_and_seed_give_the_same_metrics(mnist_root, tmp_path):
    args = ["model=rknet", "solver.step_size=0.5", *SMALL, "trainer.epochs=2"]
    first, second = tmp_path / "a", tmp_path / "b"
    for cwd in (first, second):
        cwd.mkdir()
        assert run_noderun(args, mnist_root, cwd).returncode == 0
    assert without_timings(read_metrics(single_run_dir(first))) == without_timings(read_metrics(single_run_dir(second)))
    other = tmp_path / "c"
    other.mkdir()
    assert run_noderun([*args, "seed=1"], mnist_root, other).returncode == 0
    assert read_metrics(single_run_dir(other))[0]["train_loss"] != read_metrics(single_run_dir(first))[0]["train_loss"]


def _start(args, data_root, cwd):
    env = {**os.environ, "NODERUN_DATA_DIR": str(data_root)}
    return subprocess.Popen([NODERUN, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_epochs(cwd, count, process, timeout=300):
    """Wait until some run under cwd has `count` rows in metrics.csv; return its directory."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for metrics in (cwd / "outputs").glob("runs/*/metrics.csv"):
            if len(metrics.read_text().splitlines()) - 1 >= count:
                return metrics.parent
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    raise AssertionError("run did not reach the epoch in time")


RESUMABLE = ["model=resnet", "dataset.train_size=384", "dataset.val_size=64", "dataset.test_size=64",
             "trainer.batch_size=32", "trainer.epochs=3", "trainer.eval_batch_size=64"]


def test_run_killed_mid_epoch_resumes_to_the_same_metrics(mnist_root, tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    assert run_noderun(RESUMABLE, mnist_root, reference).returncode == 0
    expected = without_timings(read_metrics(single_run_dir(reference)))

    killed = tmp_path / "killed"
    killed.mkdir()
    process = _start(RESUMABLE, mnist_root, killed)
    run_dir = _wait_for_epochs(killed, 1, process)
    time.sleep(0.3)  # into the second epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    rows_at_kill = len(read_metrics(run_dir))
    assert rows_at_kill < 3, "the run finished before it could be killed"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"

    result = run_noderun([*RESUMABLE, "resume=true"], mnist_root, killed)
    assert result.returncode == 0, result.stderr
    assert f"restored epoch {rows_at_kill}" in (run_dir / "noderun.log").read_text()
    assert without_timings(read_metrics(run_dir)) == expected
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"

    # Resuming a completed run trains nothing and leaves its records alone.
    before = (run_dir / "metrics.csv").read_text()
    again = run_noderun([*RESUMABLE, "resume=true"], mnist_root, killed)
    assert again.returncode == 0 and "already completed" in again.stdout + again.stderr
    assert (run_dir / "metrics.csv").read_text() == before


def test_sigterm_records_an_interrupted_run(mnist_root, tmp_path):
    process = _start(RESUMABLE, mnist_root, tmp_path)
    run_dir = _wait_for_epochs(tmp_path, 1, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary["epochs_done"] < 3:
        assert summary["status"] == "interrupted" and "signal" in summary["reason"]
    assert (run_dir / "last.pt").exists() and len(read_metrics(run_dir)) >= 1


@pytest.mark.parametrize("args, words", [
    (["model=transformer"], ["transformer", "mlp, odenet, resnet, rknet"]),
    (["solver=rk5"], ["rk5", "dopri5", "euler"]),
    (["solver.rtol=0"], ["solver.rtol=0", "> 0"]),
    (["solver.atol=-1e-3"], ["solver.atol=-0.001", "> 0"]),
    (["trainer.epochs=0"], ["trainer.epochs=0", ">= 1"]),
    (["paths.output_root=/proc/version/runs"], ["/proc/version/runs", "paths.output_root"]),
])
def test_user_mistakes_get_one_line_naming_the_value(mnist_root, tmp_path, args, words):
    result = run_noderun(["model=mlp", *SMALL, *args] if not args[0].startswith("model=") else [*args, *SMALL],
                         mnist_root, tmp_path)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("noderun: error:") and "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("args, reason", [
    (["model=mlp", "trainer.lr=1e12"], "loss became"),
    (["model=odenet", "solver.max_num_steps=1"], "max_num_steps exceeded"),
])
def test_training_failure_is_recorded_with_its_reason(mnist_root, tmp_path, args, reason):
    result = run_noderun([*args, *SMALL], mnist_root, tmp_path)
    assert result.returncode == 1
    assert len(error_lines(result)) == 1 and reason in result.stderr
    summary = json.loads((single_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "failed" and reason in summary["reason"]


def test_sweep_prints_a_summary_table(mnist_root, tmp_path):
    result = run_noderun(["-m", "model=mlp,rknet", *SMALL], mnist_root, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 completed, 0 failed" in result.stdout
    assert "| MLP |" in result.stdout and "| RK-Net |" in result.stdout
    assert len(list((tmp_path / "outputs" / "multirun").glob("*/*/summary.json"))) == 2


def test_noderun_finds_its_configs_from_any_directory(tmp_path):
    result = subprocess.run([NODERUN, "--cfg", "job", "model=rknet"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and "method: rk4" in result.stdout
