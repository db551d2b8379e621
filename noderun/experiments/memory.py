"""`noderun experiment=memory`: memory against depth for ResNet, RK-Net and ODE-Net (Table 1's memory
column: O(L), O(L̃) and O(1)), measured on one training step of one real batch at each depth."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn

from noderun.errors import UserError
from noderun.run.recorder import RunRecorder
from noderun.measure import NFECounter, SavedTensorBytes, peak_memory_mb, reset_peak_memory, wait_for
from noderun.models import DOWNSAMPLING, MODELS, build_model, models_of_table
from noderun.solvers import FIXED_GRID_METHODS, SolverSpec, task_solver
from noderun.experiments.common import task_settings, training_batch

log = logging.getLogger("noderun")

CSV_FILE = "memory.csv"


def checked_settings(cfg: DictConfig) -> tuple[list[int], SolverSpec, int, str]:
    """Return (steps, solver, batch_size, downsampling) of the run's memory settings (typed by
    noderun.schema.MemorySettings), or raise UserError for a value its type allows and the task does not.
    The solver is memory.method at one step on [0, 1], on the run's solve path where it has the method
    (noderun.solvers.task_solver); model_of_depth divides that step."""
    settings = task_settings(cfg)
    steps = list(settings.steps)
    if not steps or not all(isinstance(n, int) and n >= 1 for n in steps):
        raise UserError(f"memory.steps={steps} is invalid; use a list of whole numbers >= 1, e.g. [1,2,4,8]")
    if settings.method not in FIXED_GRID_METHODS:
        raise UserError(f"memory.method={settings.method!r} is invalid; depth needs a fixed grid: choose one of: "
                        f"{', '.join(FIXED_GRID_METHODS)}")
    if settings.downsampling not in DOWNSAMPLING:
        raise UserError(f"memory.downsampling={settings.downsampling!r} is invalid; choose one of: "
                        f"{', '.join(DOWNSAMPLING)}")
    solver = task_solver(cfg, str(settings.method), step_size=1.0)
    return sorted(set(steps)), solver, settings.batch_size, str(settings.downsampling)


def checked_models(settings: DictConfig) -> list[str]:
    """Return the settings' models (Table-1 models: their depth is residual blocks or solver steps), or raise UserError."""
    deep = models_of_table(1)
    names = list(settings.get("models") or [])
    if not names or any(name not in deep for name in names):
        raise UserError(f"memory.models={names} is invalid; choose from: {', '.join(deep)}")
    return names


def model_of_depth(name: str, depth: int, solver: SolverSpec, downsampling: str) -> nn.Module:
    """Return the model with `depth` steps of the solver on [0, 1] (models with an ODE block) or `depth`
    residual blocks (the others), all with the same downsampling and head."""
    if MODELS[name].is_ode:
        return build_model({"name": name, "downsampling": downsampling}, dataclasses.replace(solver, step_size=1 / depth))
    return build_model({"name": name, "downsampling": downsampling, "blocks": depth}, SolverSpec())


def step_memory(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """Return what one training step (forward, loss, backward) of the model holds and costs: the MiB
    saved for the backward pass, the CUDA allocator's peak MiB during the step (NaN on the CPU), NFE
    forward and backward, and wall seconds."""
    counter = NFECounter(model)
    counter.take()
    reset_peak_memory(device)
    start = time.perf_counter()
    with SavedTensorBytes() as saved:
        loss = nn.functional.cross_entropy(model(images), labels)
    nfe_forward = counter.take()
    loss.backward()
    wait_for(device)
    return {"saved_mb": round(saved.mib, 4),
            "cuda_peak_mb": round(peak_memory_mb(device), 1) if device.type == "cuda" else math.nan,
            "nfe_forward": nfe_forward, "nfe_backward": counter.take(),
            "step_time_s": round(time.perf_counter() - start, 4)}


def run(cfg: DictConfig, rec: RunRecorder) -> None:
    """Write memory.csv (one row per model and depth) and the memory-against-depth figure."""
    run_dir, device, summary = rec.run_dir, rec.device, rec.summary
    from noderun.plotting.tasks import memory_figure  # matplotlib only once there is something to draw

    steps, solver, batch_size, downsampling = checked_settings(cfg)
    method = solver.method
    models = checked_models(task_settings(cfg))
    images, labels = training_batch(cfg, batch_size, device)
    for name in models:  # untimed: one-off setup (kernels for the batch's shapes) is charged to no depth
        step_memory(model_of_depth(name, steps[0], solver, downsampling).to(device), images, labels, device)
    rows = []
    for depth in steps:
        for name in models:
            torch.manual_seed(cfg.seed)
            model = model_of_depth(name, depth, solver, downsampling).to(device).train()
            row = {"model": name, "depth": depth, "method": method if MODELS[name].is_ode else None,
                   "batch_size": len(labels), **step_memory(model, images, labels, device)}
            log.info("memory: %s depth %d: %.2f MiB saved, NFE %d/%d, %.2f s", name, depth, row["saved_mb"],
                     row["nfe_forward"], row["nfe_backward"], row["step_time_s"])
            rows.append(row)
            del model
    table = pd.DataFrame(rows)
    rec.write_file(CSV_FILE, table)
    rec.add_files(*(p.name for p in memory_figure(table, run_dir)))
    summary.update(method=method, solver_path=solver.path, batch_size=len(labels), downsampling=downsampling,
                   steps=steps,
                   saved_mb={name: dict(zip(map(str, group["depth"]), group["saved_mb"]))
                             for name, group in table.groupby("model", sort=False)})
