"""Table 1: one MNIST classifier (any registry model of table 1) trained with SGD, evaluated after every
epoch on the validation and test splits, its test error taken at the epoch of best validation accuracy."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from noderun.solvers import solver_spec
from noderun.data.batches import epoch_generator, training_batches
from noderun.data.image_data import ImageData
from noderun.errors import UserError
from noderun.experiments.common import load_data, selected_row
from noderun.run.recorder import RunRecorder
from noderun.measure import NFECounter, peak_memory_mb, reset_peak_memory
from noderun.models import MODELS, build_model, count_parameters
from noderun.models.ode_block import compile_dynamics
from noderun.regularize import regularize, regularize_fields, regularizer_spec
from noderun.train import TrainStats, evaluate, lr_at_epoch, train_epoch

log = logging.getLogger("noderun")


def run(cfg: DictConfig, rec: RunRecorder) -> None:
    """Train the run's classifier for trainer.epochs, recording every epoch (resuming from the last one
    recorded when the run is resumed)."""
    t, device = cfg.trainer, rec.device
    entry = MODELS.get(cfg.model.name)
    if entry is None or entry.table != 1:
        raise UserError(f"model={cfg.model.name} is not a Table-1 classifier; choose one of: "
                        f"{', '.join(n for n, e in MODELS.items() if e.table == 1)}")
    solver = solver_spec(cfg)
    regularizer = regularizer_spec(t, solver)  # a bad value refused before the data are loaded
    data = load_data(cfg, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, solver).to(device)
    if _compiled(cfg):
        compile_dynamics(model)
    regularized = regularize(model, regularizer)
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    rec.restore(model=model, optimizer=optimizer)
    rec.update(**_model_fields(cfg, entry.is_ode), **regularize_fields(regularizer, regularized),
               params=count_parameters(model), train_size=len(data.train),
               val_size=len(data.val) if data.val is not None else 0, test_size=len(data.test),
               data_source=data.source,
               peak_memory_kind="cuda_max_allocated" if device.type == "cuda" else "cpu_max_rss")
    log.info("model %s: %d parameters (%.3f M); data %s from %s: %d train, %d val, %d test; device %s",
             cfg.model.name, rec.summary["params"], rec.summary["params"] / 1e6, cfg.dataset.name, data.source,
             len(data.train), rec.summary["val_size"], len(data.test), device)
    counter = NFECounter(model)
    num_batches = -(-len(data.train) // t.batch_size)
    padding = cfg.dataset.crop_padding if cfg.dataset.augment else 0
    for epoch in range(len(rec.rows), t.epochs):
        lr = lr_at_epoch(t.lr, epoch, t.epochs, t.lr_decay_fractions, t.lr_decay_factor, t.lr_decay_min_epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        reset_peak_memory(device)
        batches = training_batches(data.train, t.batch_size, epoch_generator(cfg.seed, epoch), padding)
        stats = train_epoch(model, optimizer, batches, num_batches, counter, f"epoch {epoch + 1}/{t.epochs}",
                            bool(t.progress), bool(t.get("measure_step", True)))
        row = _epoch_row(cfg, model, data, counter, epoch, lr, stats, device)
        best = selected_row([*rec.rows, row], "val_acc", larger_is_better=True)
        rec.record_epoch(row, {"model": model.state_dict(), "optimizer": optimizer.state_dict()},
                         best=best is row, **_summary_fields([*rec.rows, row], best, len(data.train), t.batch_size))
    if rec.summary.get("test_error") is not None:
        log.info("test error %.2f%% at best epoch %s (by %s)", rec.summary["test_error"], rec.summary["best_epoch"],
                 rec.summary["selected_by"])


def _model_fields(cfg: DictConfig, is_ode: bool) -> dict[str, Any]:
    """Return the summary's description of the model and (for ODE models) its solver."""
    s = cfg.solver
    return {"model": cfg.model.name, "solver": s.method if is_ode else None,
            "rtol": s.rtol if is_ode else None, "atol": s.atol if is_ode else None,
            "step_size": s.get("step_size") if is_ode else None,
            "adjoint": bool(cfg.model.get("adjoint", False)) if is_ode else False,
            "adjoint_norm": s.get("adjoint_norm") if is_ode else None,
            "solver_path": s.get("path", "torchdiffeq") if is_ode else None,
            "compiled": _compiled(cfg) if is_ode else None,
            "downsampling": cfg.model.get("downsampling")}


def _compiled(cfg: DictConfig) -> bool:
    """Return whether the run compiles its model's dynamics (speed.compile; absent: no)."""
    return bool(OmegaConf.select(cfg, "speed.compile", default=False))


def _epoch_row(cfg: DictConfig, model, data: ImageData, counter: NFECounter, epoch: int, lr: float,
               stats: TrainStats, device: torch.device) -> dict[str, Any]:
    """Return an epoch's metrics.csv row: training means, validation and test accuracy, NFE, time, memory."""
    start = time.perf_counter()
    batch = cfg.trainer.eval_batch_size
    val_acc = evaluate(model, data.val, batch, counter)[0] if data.val is not None else None
    test_acc, nfe_eval, test_forward_s = evaluate(model, data.test, batch, counter)
    row = {
        "epoch": epoch + 1, "lr": lr, "train_loss": round(stats.loss, 6),
        "train_loss_end": round(stats.loss_end, 6), "train_acc": round(stats.accuracy, 6),
        "val_acc": None if val_acc is None else round(val_acc, 6), "test_acc": round(test_acc, 6),
        "nfe_forward": round(stats.nfe_forward, 4), "nfe_backward": round(stats.nfe_backward, 4),
        "nfe_forward_eval": round(nfe_eval, 4), "penalty": round(stats.penalty, 6),
        "nfe_regularizer": round(stats.nfe_regularizer, 4), "test_forward_s": round(test_forward_s, 5),
        "epoch_time_s": round(stats.time_s, 3),
        "eval_time_s": round(time.perf_counter() - start, 3), "peak_memory_mb": round(peak_memory_mb(device), 1),
        "saved_mb": round(stats.saved_bytes / 2**20, 3) if stats.flops else None,
        "flops_per_step": stats.flops or None,
    }
    log.info("epoch %d: lr %.4g loss %.4f train acc %.4f val acc %s test acc %.4f NFE-F %.1f NFE-B %.1f "
             "time %.1fs + eval %.1fs", row["epoch"], lr, stats.loss, stats.accuracy,
             "-" if val_acc is None else f"{val_acc:.4f}", test_acc, stats.nfe_forward, stats.nfe_backward,
             stats.time_s, row["eval_time_s"])
    return row


def _summary_fields(rows: list[dict[str, Any]], best: dict[str, Any], train_size: int, batch_size: int) -> dict[str, Any]:
    """Return the summary's results after the epochs in rows."""
    last = rows[-1]
    return {
        "best_epoch": best["epoch"], "selected_by": "val_acc" if best["val_acc"] is not None else "last_epoch",
        "test_error": round(100 * (1 - best["test_acc"]), 4),
        "val_error": None if best["val_acc"] is None else round(100 * (1 - best["val_acc"]), 4),
        "final_test_error": round(100 * (1 - last["test_acc"]), 4),
        "nfe_forward": last["nfe_forward"], "nfe_backward": last["nfe_backward"],
        "nfe_forward_eval": last["nfe_forward_eval"], "nfe_regularizer": last.get("nfe_regularizer"),
        "train_time_s": round(sum(r["epoch_time_s"] for r in rows), 3),
        "peak_memory_mb": max(r["peak_memory_mb"] for r in rows),
        "saved_mb": last.get("saved_mb"), "flops_per_step": last.get("flops_per_step"),
        "achieved_gflops": _achieved_gflops(last, train_size, batch_size),
    }


def _achieved_gflops(row: dict[str, Any], train_size: int, batch_size: int) -> float | None:
    """Return an epoch's FLOPs per second of training in GFLOP/s: its first step's FLOPs times its
    steps over its training time. Exact for fixed grids up to a smaller last batch; with adaptive
    solvers other steps' FLOPs differ with their NFE, so it is an estimate there."""
    if not row.get("flops_per_step") or not row["epoch_time_s"]:
        return None
    steps = -(-train_size // batch_size)
    return round(row["flops_per_step"] * steps / row["epoch_time_s"] / 1e9, 3)
