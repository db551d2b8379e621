"""Tasks other than training a Table-1 model: `noderun experiment=memory|gradcheck|tolerance` measures
what the paper claims, `solver_accuracy`, `cubic` and `ecg` redo seed documents' experiments, and
`timeseries` (set by model=latent_ode or model=rnn) trains Table 2's models. Each writes CSVs, figures
and a summary.json into its run directory."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from noderun.errors import UserError
from noderun.run import IMAGE_DATASETS
from noderun.tasks import cubic, ecg, gradcheck, memory, solver_accuracy, timeseries, tolerance
from noderun.tasks.common import TaskWork, run_recorded

TASKS: dict[str, TaskWork] = {"memory": memory.measure, "gradcheck": gradcheck.measure,
                              "tolerance": tolerance.measure, "solver_accuracy": solver_accuracy.measure,
                              "cubic": cubic.measure, "ecg": ecg.measure,
                              "timeseries": timeseries.measure}
# The datasets of tasks that do not take MNIST batches.
TASK_DATASETS: dict[str, tuple[str, ...]] = {"cubic": ("cubic",), "ecg": ("ecg",), "timeseries": ("spirals",)}


def run_task(cfg: DictConfig, run_dir: Path) -> int:
    """Run the task cfg.task names in run_dir and return the process exit code (2 for a mistake such
    as an unknown task, said in one line)."""
    def work(cfg, run_dir, device, summary) -> None:
        if cfg.task not in TASKS:
            raise UserError(f"unknown task {cfg.task!r}; choose one of: train, {', '.join(TASKS)}")
        TASKS[cfg.task](cfg, run_dir, device, summary)

    return run_recorded(cfg, run_dir, work, TASK_DATASETS.get(str(cfg.task), IMAGE_DATASETS))
