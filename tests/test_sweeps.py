"""Sweeps through Hydra's launchers: failures isolated, summaries counted, resume, no collisions."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from omegaconf import OmegaConf

from conftest import NODERUN, SMALL, run_noderun
from noderun.parallel import threads_per_job

# Eight short runs; the last learning rate makes the loss overflow, a forced failure.
EIGHT_RUNS = ["-m", "model=mlp", "trainer.lr=0.01,0.02,0.03,0.04,0.05,0.06,0.07,1e12", *SMALL]


def sweep_dirs(cwd):
    return sorted((cwd / "outputs" / "multirun").iterdir())


def job_dirs(sweep_dir):
    return sorted(d for d in sweep_dir.iterdir() if d.name.isdigit())


@pytest.mark.parametrize("launcher", ["joblib", "local"])
def test_sweep_survives_a_failure_and_resume_skips_completed_runs(mnist_root, tmp_path, launcher):
    first = run_noderun([*EIGHT_RUNS, f"hydra/launcher={launcher}"], mnist_root, tmp_path)
    assert first.returncode == 1, first.stderr  # non-zero: one run failed
    assert "7 completed, 1 failed, 0 interrupted, 0 running, 0 unreadable" in first.stdout
    (sweep,) = sweep_dirs(tmp_path)
    summaries = {d: json.loads((d / "summary.json").read_text()) for d in job_dirs(sweep)}
    assert sorted(s["status"] for s in summaries.values()) == ["completed"] * 7 + ["failed"]
    failed = next(s for s in summaries.values() if s["status"] == "failed")
    assert "loss became" in failed["reason"]
    completed = [d for d, s in summaries.items() if s["status"] == "completed"]
    before = {d: ((d / "metrics.csv").read_bytes(), (d / "last.pt").stat().st_mtime_ns) for d in completed}

    again = run_noderun([*EIGHT_RUNS, f"hydra/launcher={launcher}", "resume=true"], mnist_root, tmp_path)
    assert again.returncode == 1
    assert "7 completed, 1 failed, 0 interrupted, 0 running, 0 unreadable" in again.stdout
    new_sweep = next(d for d in sweep_dirs(tmp_path) if d != sweep)
    skipped = [d for d in job_dirs(new_sweep) if "already completed" in (d / "noderun.log").read_text()]
    assert len(skipped) == 7
    for d in skipped:  # no training: nothing but the link to the completed run
        assert not (d / "metrics.csv").exists() and not (d / "last.pt").exists()
        assert (d / "run_link.json").exists()
    for d, (metrics, mtime) in before.items():
        assert (d / "metrics.csv").read_bytes() == metrics and (d / "last.pt").stat().st_mtime_ns == mtime


def test_two_sweeps_started_together_never_share_run_directories(mnist_root, tmp_path):
    env = {**os.environ, "NODERUN_DATA_DIR": str(mnist_root)}
    args = [NODERUN, "-m", "model=mlp", "seed=0,1", *SMALL]
    processes = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    sweeps = sweep_dirs(tmp_path)
    assert len(sweeps) == 2
    for sweep in sweeps:
        runs = job_dirs(sweep)
        assert [json.loads((d / "summary.json").read_text())["status"] for d in runs] == ["completed"] * 2
        # each run's log holds exactly one run
        assert all((d / "noderun.log").read_text().count("run completed") == 1 for d in runs)


def test_joblib_jobs_share_the_cores_instead_of_oversubscribing(mnist_root, tmp_path):
    result = run_noderun(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=mlp", "seed=0,1", *SMALL],
                         mnist_root, tmp_path)
    assert result.returncode == 0, result.stderr
    (sweep,) = sweep_dirs(tmp_path)
    threads = [json.loads((d / "summary.json").read_text())["torch_threads"] for d in job_dirs(sweep)]
    assert threads == [max(1, (os.cpu_count() or 1) // 2)] * 2


def test_threads_per_job_rules():
    cores = os.cpu_count() or 1
    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2})
    assert threads_per_job(None, joblib) == max(1, cores // 2)
    assert threads_per_job(3, joblib) == 3
    joblib.n_jobs = -1
    assert threads_per_job(None, joblib) == 1
    slurm = OmegaConf.create({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                              "cpus_per_task": 8})
    assert threads_per_job(None, slurm) == 8
    assert threads_per_job(None, None) is None


@pytest.mark.parametrize("preset, runs", [("table1", 12), ("table1_quick", 12), ("tolerance_sweep", 15)])
def test_presets_define_the_documented_sweeps(tmp_path, preset, runs):
    result = subprocess.run([NODERUN, f"experiment={preset}", "--cfg", "hydra"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    params = OmegaConf.create(result.stdout).hydra.sweeper.params
    count = 1
    for values in params.values():
        count *= len(str(values).split(","))
    assert count == runs
