"""`noderun experiment=tolerance ckpt=PATH`: a trained ODE-Net across solver tolerances, the numbers
behind Figure 3(a)-(c): NFE, time per forward pass, test error, numerical error and backward NFE."""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from noderun.data.batches import evaluation_batches
from noderun.data.image_data import ImageData
from noderun.errors import UserError
from noderun.run.recorder import RunRecorder
from noderun.measure import NFECounter, relative_error
from noderun.models import MODELS, ODE_NET
from noderun.models.ode_block import ODEBlock
from noderun.solvers import SolverSpec, integrate, task_solver
from noderun.experiments.common import load_data, task_settings
from noderun.models.trained import model_at, trained_run
from noderun.train import evaluate

log = logging.getLogger("noderun")

CSV_FILE = "tolerance.csv"


def ode_block(model: nn.Module) -> ODEBlock:
    """Return the model's ODE block."""
    return next(m for m in model.modules() if isinstance(m, ODEBlock))


@torch.no_grad()
def block_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Return what the model's ODE block receives for these images (the downsampled features)."""
    captured = []
    handle = ode_block(model).register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        model(images)
    finally:
        handle.remove()
    return captured[0]


@torch.no_grad()
def reference_solution(model: nn.Module, h0: torch.Tensor, spec: SolverSpec) -> torch.Tensor:
    """Return the ODE block's output for h0 solved with spec in float64, a reference for the block's error."""
    block = ode_block(model)
    dynamics = copy.deepcopy(block.dynamics).double()
    return integrate(dynamics, h0.double(), block.times.double(), spec, adjoint=False)[-1]


def tolerance_row(model: nn.Module, data: ImageData, batch_size: int, h0: torch.Tensor, reference: torch.Tensor,
                  train_batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Return one tolerance's measurements: test error and NFE and seconds per forward pass on the test
    set; the ODE block's error on h0 against the reference; NFE forward and backward of one training step."""
    counter = NFECounter(model)
    accuracy, nfe_eval, forward_s = evaluate(model, data.test, batch_size, counter)
    with torch.no_grad():
        counter.take()
        output = ode_block(model)(h0)
        nfe_error = counter.take()
    model.train()
    images, labels = train_batch
    loss = nn.functional.cross_entropy(model(images), labels)
    nfe_train = counter.take()
    loss.backward()
    nfe_backward = counter.take()
    model.eval()
    return {"nfe_forward": round(nfe_eval, 3), "forward_s": round(forward_s, 5),
            "test_error": round(100 * (1 - accuracy), 4), "nfe_forward_error_batch": nfe_error,
            "block_error": relative_error([output], [reference]),
            "block_error_max": float((output.double() - reference).abs().max()),
            "nfe_forward_train": nfe_train, "nfe_backward": nfe_backward}


def checked_settings(cfg: DictConfig) -> tuple[list[SolverSpec], int, SolverSpec]:
    """Return (one solver per tolerance, loosest first; batch_size; reference solver) of the run's
    tolerance settings, or raise UserError. Each solver is on the run's solve path where it has the
    method (noderun.solvers.task_solver)."""
    settings = task_settings(cfg)
    tolerances = list(settings.tolerances)
    if not tolerances:
        raise UserError("tolerance.tolerances is empty; give a list such as [1e-1,1e-3,1e-5]")
    solvers = [task_solver(cfg, settings.method, tol, tol) for tol in tolerances]
    solvers = sorted((dataclasses.replace(s, rtol=float(s.rtol), atol=float(s.atol)) for s in solvers),
                     key=lambda s: s.rtol, reverse=True)
    if solvers[0].fixed_grid:
        raise UserError(f"tolerance.method={settings.method} steps a fixed grid and ignores tolerances; "
                        f"choose an adaptive method such as dopri5")
    if not isinstance(settings.batch_size, int) or settings.batch_size < 1:
        raise UserError(f"tolerance.batch_size={settings.batch_size} is invalid; use a whole number >= 1")
    reference = task_solver(cfg, settings.reference_method, settings.reference_tol, settings.reference_tol)
    return solvers, settings.batch_size, reference


def run(cfg: DictConfig, rec: RunRecorder) -> None:
    """Write tolerance.csv (one row per tolerance, loosest first) and Figure 3(a)-(c)."""
    run_dir, device, summary = rec.run_dir, rec.device, rec.summary
    from noderun.plotting.tasks import figure3_abc  # matplotlib only once there is something to draw

    solvers, batch_size, reference_spec = checked_settings(cfg)
    method = solvers[0].method
    run_cfg, weights, path = trained_run(cfg.ckpt)
    # The trained model's dataset; where the data lives and how much of the test set, from this command.
    dataset = OmegaConf.merge(run_cfg.dataset, {k: cfg.dataset.get(k) for k in ("root", "sources", "test_size")})
    data = load_data(OmegaConf.merge(cfg, {"dataset": dataset}), device)
    error_images = next(evaluation_batches(data.test, batch_size))[0]
    train_images, train_labels = next(evaluation_batches(data.train, batch_size))

    model = model_at(run_cfg, weights, solvers[0], device, path)
    h0 = block_input(model, error_images)
    # Untimed warm-up over the test set: one-off setup (kernels for new shapes) is charged to no tolerance.
    evaluate(model, data.test, batch_size, NFECounter(model))
    reference = reference_solution(model, h0, reference_spec)
    coarser = dataclasses.replace(reference_spec, rtol=reference_spec.rtol * 100, atol=reference_spec.atol * 100)
    reference_check = relative_error([reference_solution(model, h0, coarser)], [reference])
    rows = []
    for solver in solvers:
        tol = solver.rtol
        model = model_at(run_cfg, weights, solver, device, path)
        row = {"tol": tol, "method": method, "batch_size": batch_size,
               **tolerance_row(model, data, batch_size, h0, reference, (train_images, train_labels))}
        log.info("tolerance %g: NFE-F %.1f, %.4f s per forward pass, test error %.2f%%, block error %.3g, "
                 "NFE-B %d", tol, row["nfe_forward"], row["forward_s"], row["test_error"], row["block_error"],
                 row["nfe_backward"])
        rows.append(row)
    table = pd.DataFrame(rows)
    rec.write_file(CSV_FILE, table)
    rec.add_files(*(p.name for p in figure3_abc([(MODELS[ODE_NET].label, ODE_NET, table)], run_dir)))
    summary.update(ckpt=str(path.resolve()), model=run_cfg.model.name, method=method, solver_path=solvers[0].path,
                   batch_size=batch_size, test_size=len(data.test), reference_method=reference_spec.method,
                   reference_tol=reference_spec.rtol, reference_solver_path=reference_spec.path,
                   reference_vs_100x_looser=reference_check)
