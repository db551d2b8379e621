"""Sweeps through Hydra's launchers: failures isolated, summaries counted, cores shared, resume skips
completed runs, sweeps started together never collide; and the presets' sweeps as documented."""

from __future__ import annotations

import os
import subprocess

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import CONF_DIR, NODERUN, SMALL, composed, job_dirs, run_noderun, sweep_dirs
from noderun.parallel import threads_per_job
from noderun.records import read_summary

# Three short runs; the last learning rate makes the loss overflow, a forced failure.
FAILING_SWEEP = ["-m", "model=mlp", "trainer.lr=0.01,0.02,1e12", *SMALL]
COUNTS = "2 completed, 1 failed, 0 interrupted, 0 running, 0 unreadable"
# The torch threads of each job: joblib shares the cores among its 2 jobs at a time (its n_jobs in
# conf/hydra/launcher/joblib.yaml); submitit's local launcher gives each job its cpus_per_task (1).
LAUNCHER_THREADS = {"joblib": max(1, (os.cpu_count() or 1) // 2), "local": 1}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "local"])
def test_sweep_survives_a_failure_shares_the_cores_and_resume_skips_completed_runs(mnist_root, tmp_path, launcher):
    first = run_noderun([*FAILING_SWEEP, f"hydra/launcher={launcher}"], mnist_root, tmp_path)
    assert first.returncode == 1, first.stderr  # non-zero: one run failed
    assert COUNTS in first.stdout
    (sweep,) = sweep_dirs(tmp_path)
    summaries = {d: read_summary(d) for d in job_dirs(sweep)}
    assert sorted(s["status"] for s in summaries.values()) == ["completed"] * 2 + ["failed"]
    assert "loss became" in next(s["reason"] for s in summaries.values() if s["status"] == "failed")
    assert {s["torch_threads"] for s in summaries.values()} == {LAUNCHER_THREADS[launcher]}
    completed = [d for d, s in summaries.items() if s["status"] == "completed"]
    before = {d: ((d / "metrics.csv").read_bytes(), (d / "last.pt").stat().st_mtime_ns) for d in completed}

    again = run_noderun([*FAILING_SWEEP, f"hydra/launcher={launcher}", "resume=true"], mnist_root, tmp_path)
    assert again.returncode == 1
    assert COUNTS in again.stdout
    new_sweep = next(d for d in sweep_dirs(tmp_path) if d != sweep)
    skipped = [d for d in job_dirs(new_sweep) if "nothing to do" in (d / "noderun.log").read_text()]
    assert len(skipped) == 2
    for d in skipped:  # no training: nothing but the link to the completed run
        assert not (d / "metrics.csv").exists() and not (d / "last.pt").exists()
        assert (d / "run_link.json").exists()
    for d, (metrics, mtime) in before.items():
        assert (d / "metrics.csv").read_bytes() == metrics and (d / "last.pt").stat().st_mtime_ns == mtime


@pytest.mark.slow
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
        assert [read_summary(d)["status"] for d in runs] == ["completed"] * 2
        # each run's log holds exactly one run
        assert all((d / "noderun.log").read_text().count("train completed") == 1 for d in runs)


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


def sweep_jobs(hydra_cfg) -> list[dict[str, str]]:
    """Return the jobs a composed preset's own sweep stands for, each as {key: value}: its
    hydra.sweeper.params, crossed as the basic sweeper crosses them."""
    jobs: list[dict[str, str]] = [{}]
    for key, values in hydra_cfg.sweeper.params.items():
        jobs = [{**job, key: value.strip()} for job in jobs for value in str(values).split(",")]
    return jobs


@pytest.mark.parametrize("preset, runs", [("table1", 15), ("table1_quick", 15), ("table1_rk4", 15), ("table1_hour", 10),
                                          ("tolerance_sweep", 15), ("table2", 27), ("table2_quick", 9)])
def test_presets_define_the_documented_sweeps(preset, runs):
    hydra_cfg = composed([f"experiment={preset}"], hydra_config=True).hydra
    jobs = sweep_jobs(hydra_cfg)
    # The number of runs the preset's own comment states, and no job twice.
    assert len(jobs) == runs and f"({runs} runs)" in (CONF_DIR / "experiment" / f"{preset}.yaml").read_text()
    assert len({tuple(sorted(job.items())) for job in jobs}) == runs
    assert hydra_cfg.mode == RunMode.MULTIRUN  # a sweep without -m
