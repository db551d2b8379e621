"""What every measurement task shares: its summary.json, its CSV, one real batch, and how it ends."""

from __future__ import annotations

import logging
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import torchdiffeq
from omegaconf import DictConfig, OmegaConf

from noderun.data.batches import to_float
from noderun.errors import UserError
from noderun.records import write_summary, write_text_atomically
from noderun.run import (EXIT_OK, IMAGE_DATASETS, choose_device, install_sigterm_handler, load_data, record_end, run_guarded,
                         validate_config)

log = logging.getLogger("noderun")

# What a task does in its run directory, given its config, the device and the summary to fill in.
TaskWork = Callable[[DictConfig, Path, torch.device, dict[str, Any]], None]


def task_settings(cfg: DictConfig) -> DictConfig:
    """Return the config block named after the task (memory: ..., say), or raise UserError when
    the task is run without the preset that defines it."""
    settings = cfg.get(cfg.task)
    if not isinstance(settings, DictConfig):
        raise UserError(f"task={cfg.task} needs its settings block '{cfg.task}:'; run it as "
                        f"experiment={cfg.task}")
    return settings


def initial_summary(cfg: DictConfig) -> dict[str, Any]:
    """Return a task's summary.json before it runs; `task` tells the report it is not a training run."""
    return {
        "task": str(cfg.task), "status": "running", "reason": None,
        "device": None, "torch_threads": torch.get_num_threads(), "seed": cfg.seed,
        "dataset": cfg.dataset.name, "torch_version": torch.__version__,
        "torchdiffeq_version": torchdiffeq.__version__, "python_version": platform.python_version(),
        "files": [], "time_s": None,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "finished": None,
    }


def run_recorded(cfg: DictConfig, run_dir: Path, work: TaskWork, datasets: tuple[str, ...] = IMAGE_DATASETS) -> int:
    """Run work in run_dir with the same record and endings as a training run; return the exit code.
    `datasets` are those the task can take (MNIST's by default).

    summary.json says `running` from the start and, at the end, `completed`, or `failed` or
    `interrupted` with the reason, which is also the one line on stderr.
    """
    summary = initial_summary(cfg)

    def body() -> int:
        install_sigterm_handler()
        validate_config(cfg, datasets)
        device = choose_device(str(cfg.device))
        summary["device"] = str(device)
        write_summary(run_dir, summary)
        start = time.perf_counter()
        work(cfg, run_dir, device, summary)
        summary["time_s"] = round(time.perf_counter() - start, 1)
        return finish("completed", None, EXIT_OK)

    def finish(status: str, reason: str | None, code: int, user_error: bool = False) -> int:
        record_end(run_dir, summary, status, reason, user_error)
        if status == "completed":
            log.info("task %s completed in %.1f s; written to %s", cfg.task, summary["time_s"], run_dir)
        return code

    return run_guarded(body, finish)


def write_table(run_dir: Path, name: str, table: pd.DataFrame, summary: dict[str, Any]) -> Path:
    """Write table as run_dir/name in one step, list it in the summary's files, and return its path."""
    path = run_dir / name
    write_text_atomically(path, table.to_csv(index=False))
    summary["files"].append(name)
    return path


def training_batch(cfg: DictConfig, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the first `size` images (floats in [0, 1]) and labels of the run's training split."""
    data = load_data(OmegaConf.merge(cfg, {"dataset": {"train_size": size, "test_size": 1}}), device)
    return to_float(data.train.images), data.train.labels
