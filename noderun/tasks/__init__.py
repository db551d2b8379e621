"""Measurement tasks: `noderun experiment=memory|gradcheck|tolerance` measures what the paper claims
instead of training a model. Each writes a CSV, a figure and a summary.json into its run directory."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from noderun.errors import UserError
from noderun.tasks import gradcheck, memory, solver_accuracy, tolerance
from noderun.tasks.common import TaskWork, run_recorded

TASKS: dict[str, TaskWork] = {"memory": memory.measure, "gradcheck": gradcheck.measure,
                              "tolerance": tolerance.measure, "solver_accuracy": solver_accuracy.measure}


def run_task(cfg: DictConfig, run_dir: Path) -> int:
    """Run the task cfg.task names in run_dir and return the process exit code (2 for a mistake such
    as an unknown task, said in one line)."""
    def work(cfg, run_dir, device, summary) -> None:
        if cfg.task not in TASKS:
            raise UserError(f"unknown task {cfg.task!r}; choose one of: train, {', '.join(TASKS)}")
        TASKS[cfg.task](cfg, run_dir, device, summary)

    return run_recorded(cfg, run_dir, work)
