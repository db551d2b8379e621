"""`noderun experiment=gradcheck`: the adjoint method's gradients against direct backpropagation
through the same solver, for the same ODE-Net weights and one real batch."""

from __future__ import annotations

import logging
import math
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn

from noderun.errors import UserError
from noderun.run.recorder import RunRecorder
from noderun.measure import NFECounter, relative_error
from noderun.models import DOWNSAMPLING, ODE_NET, build_model
from noderun.solvers import SolverSpec, task_solver
from noderun.experiments.common import task_settings, training_batch

log = logging.getLogger("noderun")

CSV_FILE = "gradcheck.csv"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
OVERALL = "all"  # the `parameter` of the row over every parameter tensor together


def case_spec(cfg: DictConfig, case: DictConfig) -> SolverSpec:
    """Return the validated solver of one case: an adaptive method at rtol = atol = tol, or a fixed
    grid with step_size; on the run's solve path where it has the method (noderun.solvers.task_solver)."""
    tol = case.get("tol", 1e-3)
    return task_solver(cfg, case.method, tol, tol, case.get("step_size"))


def checked_settings(cfg: DictConfig) -> tuple[list[tuple[str, SolverSpec]], torch.dtype, int, str]:
    """Return ([(case name, solver)], dtype, batch_size, downsampling) of the run's gradcheck settings,
    or raise UserError."""
    settings = task_settings(cfg)
    if settings.dtype not in DTYPES:
        raise UserError(f"gradcheck.dtype={settings.dtype!r} is invalid; choose one of: {', '.join(DTYPES)}")
    if settings.downsampling not in DOWNSAMPLING:
        raise UserError(f"gradcheck.downsampling={settings.downsampling!r} is invalid; choose one of: "
                        f"{', '.join(DOWNSAMPLING)}")
    cases = [(str(case.name), case_spec(cfg, case)) for case in settings.cases]
    if not cases:
        raise UserError("gradcheck.cases is empty; give at least one {name, method, tol or step_size}")
    return cases, DTYPES[settings.dtype], settings.batch_size, str(settings.downsampling)


def gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], int, int]:
    """Return the cross-entropy loss's gradient for every parameter by name, and NFE forward and backward."""
    counter = NFECounter(model)
    counter.take()
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(images), labels)
    nfe_forward = counter.take()
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}, nfe_forward, counter.take()


def case_rows(name: str, spec: SolverSpec, weights: dict[str, torch.Tensor], images: torch.Tensor,
              labels: torch.Tensor, downsampling: str) -> list[dict[str, Any]]:
    """Return one row per parameter tensor and one over all of them: the adjoint's gradient against
    backpropagation through the solver's operations, from the same weights and batch."""
    grads = {}
    for adjoint in (True, False):
        model = build_model({"name": ODE_NET, "downsampling": downsampling, "adjoint": adjoint}, spec).to(images.device, images.dtype)
        model.load_state_dict(weights)
        grads[adjoint] = gradients(model, images, labels)
    (adjoint, nfe_f, nfe_b), (backprop, nfe_f_bp, _) = grads[True], grads[False]
    common = {"case": name, "method": spec.method, "solver_path": spec.path,
              "tol": None if spec.fixed_grid else spec.rtol,
              "step_size": spec.step_size if spec.fixed_grid else None, "dtype": str(images.dtype).removeprefix("torch."),
              "nfe_forward": nfe_f, "nfe_backward_adjoint": nfe_b, "nfe_forward_backprop": nfe_f_bp}
    rows = [{**common, "parameter": p, "numel": backprop[p].numel(), "grad_norm": float(backprop[p].double().norm()),
             "rel_error": relative_error([adjoint[p]], [backprop[p]])} for p in backprop]
    everything = [{**common, "parameter": OVERALL, "numel": sum(r["numel"] for r in rows),
                   "grad_norm": math.sqrt(sum(r["grad_norm"] ** 2 for r in rows)),
                   "rel_error": relative_error(list(adjoint.values()), list(backprop.values()))}]
    return everything + rows


def run(cfg: DictConfig, rec: RunRecorder) -> None:
    """Write gradcheck.csv (per case: the overall row, then one per parameter tensor) and its figure."""
    run_dir, device, summary = rec.run_dir, rec.device, rec.summary
    from noderun.plotting.tasks import gradcheck_figure  # matplotlib only once there is something to draw

    cases, dtype, batch_size, downsampling = checked_settings(cfg)
    images, labels = training_batch(cfg, batch_size, device)
    torch.manual_seed(cfg.seed)
    weights = build_model({"name": ODE_NET, "downsampling": downsampling}, SolverSpec()).to(dtype).state_dict()
    rows = []
    for name, spec in cases:
        rows += case_rows(name, spec, weights, images.to(dtype), labels, downsampling)
        log.info("gradcheck %s (%s): relative error of the adjoint's gradient %.3g", name, spec.method,
                 next(r["rel_error"] for r in rows if r["case"] == name and r["parameter"] == OVERALL))
    table = pd.DataFrame(rows)
    rec.write_file(CSV_FILE, table)
    rec.add_files(*(p.name for p in gradcheck_figure(table, run_dir)))
    overall = table[table["parameter"] == OVERALL]
    summary.update(dtype=str(dtype).removeprefix("torch."), batch_size=len(labels), downsampling=downsampling,
                   solver_path={name: spec.path for name, spec in cases},
                   rel_error=dict(zip(overall["case"], overall["rel_error"])))
