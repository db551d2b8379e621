"""How many torch threads each run of a parallel sweep may use."""

from __future__ import annotations

import os

from omegaconf import DictConfig


def threads_per_job(requested: object, launcher: DictConfig | None) -> int | None:
    """Return the torch intra-op threads for one run: `requested` if set; under the joblib launcher,
    the cores divided among its n_jobs, so jobs x threads never exceeds the cores; under submitit,
    the cpus_per_task it asked the scheduler for; otherwise None (torch's own choice). A `requested`
    that is not a whole number >= 1 gives None: noderun.checks.check_config refuses it in one line."""
    if requested is not None:
        valid = isinstance(requested, int) and not isinstance(requested, bool) and requested >= 1
        return requested if valid else None
    if launcher is None:
        return None
    target = str(launcher.get("_target_", ""))
    cores = os.cpu_count() or 1
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs") or -1)
        # joblib reads negative n_jobs as cores + 1 + n_jobs (-1: all cores).
        jobs = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
        return max(1, cores // jobs)
    if "submitit_launcher" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    return None
