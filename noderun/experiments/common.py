"""What several experiments share: their settings block, real MNIST batches on the run's device, and the
choice of the epoch a run reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from noderun.data.batches import to_float
from noderun.data.image_data import ImageData, load_image_data
from noderun.errors import UserError


def task_settings(cfg: DictConfig) -> DictConfig:
    """Return the config block named after the task (memory: ..., say), or raise UserError when
    the task is run without the preset that defines it."""
    settings = cfg.get(cfg.task)
    if not isinstance(settings, DictConfig):
        raise UserError(f"task={cfg.task} needs its settings block '{cfg.task}:'; run it as "
                        f"experiment={cfg.task}")
    return settings


def load_data(cfg: DictConfig, device: torch.device) -> ImageData:
    """Return the run's image data with every split on `device`."""
    d = cfg.dataset
    data = load_image_data(d.name, Path(str(d.root)).expanduser(), val_size=d.val_size,
                           train_size=d.get("train_size"), test_size=d.get("test_size"),
                           sources=tuple(d.get("sources") or ()))
    data.train, data.test = data.train.to(device), data.test.to(device)
    data.val = data.val.to(device) if data.val is not None else None
    return data


def training_batch(cfg: DictConfig, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the first `size` images (floats in [0, 1]) and labels of the run's training split."""
    data = load_data(OmegaConf.merge(cfg, {"dataset": {"train_size": size, "test_size": 1}}), device)
    return to_float(data.train.images), data.train.labels


def selected_row(rows: list[dict[str, Any]], metric: str, larger_is_better: bool) -> dict[str, Any]:
    """Return the metrics row of the epoch a run reports: the best by the validation `metric` (the first
    of equals; rows without a value rank last), or the last row when no row has one (no validation
    split), so that no reported number is chosen by looking at the test set."""
    scored = [r for r in rows if r.get(metric) is not None]
    if not scored:
        return rows[-1]
    sign = 1 if larger_is_better else -1
    return max(scored, key=lambda r: (sign * r[metric], -r["epoch"]))
