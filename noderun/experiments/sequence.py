"""`noderun model=NAME` for a Table-2 model (dataset=spirals): time-series models trained with Adam
on the observed points of the training spirals (noderun.data.spirals).

What is predicted from what: each test trajectory's n_obs observed points (inside the observation
window, its first n_points times) are the model's only input; it then predicts the n_points times
after the window. `test_rmse`, the Table 2 number, is the root mean square difference between those
predictions and the noiseless spiral, over both coordinates, every predicted time and every test
trajectory. Also recorded: the same at the observed points (reconstruction; for the RNN its
one-step-ahead predictions of observations 2..n) and, for the latent ODE, at the window's unobserved
times (interpolation). A run reports these at the epoch whose prediction beyond the window erred least
on the validation spirals (`val_rmse`, against their noisy points), or at its last epoch when
dataset.val_size is 0; metrics.csv has every epoch's.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Iterator

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn

from noderun.data.batches import epoch_generator, shuffled_batch_indices
from noderun.data.spirals import SpiralSplit, Spirals, make_spirals
from noderun.errors import UserError
from noderun.experiments.common import selected_row
from noderun.run.recorder import RunRecorder
from noderun.measure import NFECounter, peak_memory_mb, reset_peak_memory, wait_for
from noderun.models import MODELS, build_model, count_parameters
from noderun.models.reference import REFERENCES
from noderun.models.sequence import OBJECTIVES, gather_times, training_note
from noderun.records import PREDICTIONS_FILE
from noderun.solvers import solver_spec
from noderun.regularize import regularize, regularize_fields, regularizer_spec
from noderun.train import training_steps

log = logging.getLogger("noderun")

def observations(split: SpiralSplit, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the observed noisy points (B×n×2) and their times (B×n)."""
    return gather_times(split.noisy, split.observed), times[split.observed]


def batches(split: SpiralSplit, batch_size: int, generator: torch.Generator) -> Iterator[SpiralSplit]:
    """Yield shuffled batches of trajectories."""
    for index in shuffled_batch_indices(len(split), batch_size, generator, split.clean.device):
        yield split.subset(index)


def training_targets(batch: SpiralSplit, n_points: int, objective: str) -> torch.Tensor | None:
    """Return the noisy points after the window that the objective supervises (B×n_points×2, NaN past
    the grid's end), or None for the window objective."""
    return batch.noisy[:, n_points:] if objective == "extrapolate" else None


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: Spirals, batch_size: int,
                    passes: int, seed: int, epoch: int, counter: NFECounter, objective: str) -> dict[str, float]:
    """Run one epoch of `passes` passes over the training spirals (each shuffled by its own seeded
    generator, so a resumed run draws the same batches), each loss the objective's; return the mean
    loss and NFE per iteration. Raises TrainingFailure on a loss that is not finite."""
    every = (batch for p in range(passes) for batch in
             batches(data.train, batch_size, epoch_generator(seed, (epoch - 1) * passes + p + 1)))

    def loss_of(batch: SpiralSplit) -> tuple[torch.Tensor, None]:
        x, t = observations(batch, data.times)
        return model.loss(x, t, batch.observed, data.times, data.n_points,
                          training_targets(batch, data.n_points, objective)), None

    steps = list(training_steps(model, optimizer, every, loss_of, counter, hint="try a smaller trainer.lr"))
    return {"train_loss": sum(s.loss for s in steps) / len(steps),
            "nfe_forward": sum(s.nfe_forward for s in steps) / len(steps),
            "nfe_backward": sum(s.nfe_backward for s in steps) / len(steps),
            "penalty": sum(s.penalty for s in steps) / len(steps),
            "nfe_regularizer": sum(s.nfe_regularizer for s in steps) / len(steps)}


@torch.no_grad()
def predict_split(model: nn.Module, split: SpiralSplit, data: Spirals, batch_size: int) -> torch.Tensor:
    """Return the model's predictions at every time for every trajectory of split (N×2n_points×2)."""
    model.eval()
    parts = []
    for start in range(0, len(split), batch_size):
        batch = split.subset(torch.arange(start, min(start + batch_size, len(split)), device=split.clean.device))
        parts.append(model.predict(*observations(batch, data.times), batch.observed, data.times, data.n_points))
    model.train()
    return torch.cat(parts)


def epoch_lr(lr: float, final: float, epoch: int, epochs: int) -> float:
    """Return the learning rate of an epoch (1-based): lr decayed exponentially to final·lr at the last epoch."""
    return lr * final ** ((epoch - 1) / max(epochs - 1, 1))


def rmse(predicted: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Return the RMSE over both coordinates at the masked (N×T) times where a prediction exists."""
    mask = mask & ~predicted.isnan().any(-1)
    if not mask.any():
        return None
    return float(((predicted - truth)[mask] ** 2).mean().sqrt())


def spiral_mean_rmse(ahead: torch.Tensor, truth: torch.Tensor) -> float:
    """Return the mean over trajectories of each one's RMSE over its predicted times (N×F×2 each): the
    other convention, beside Table 2's RMSE pooled over every point of every trajectory."""
    return float(((ahead - truth) ** 2).mean((1, 2)).sqrt().mean())


def prediction_errors(predicted: torch.Tensor, split: SpiralSplit, n_points: int) -> dict[str, float | None]:
    """Return test RMSE against the noiseless spirals: beyond the window (the Table 2 number, pooled over
    every point; and the mean of the spirals' own RMSEs), at the observed points, and at the window's
    unobserved times."""
    n, total = predicted.shape[:2]
    observed = torch.zeros(n, total, dtype=torch.bool, device=predicted.device)
    observed.scatter_(1, split.observed, True)
    window = torch.arange(total, device=predicted.device) < n_points
    return {"test_rmse": rmse(predicted, split.clean, ~window.expand(n, -1)),
            "test_rmse_spiral_mean": spiral_mean_rmse(predicted[:, n_points:], split.clean[:, n_points:]),
            "test_rmse_observed": rmse(predicted, split.clean, observed),
            "test_rmse_unobserved": rmse(predicted, split.clean, window & ~observed)}


def validation_rmse(model: nn.Module, data: Spirals, batch_size: int) -> float | None:
    """Return the RMSE of the prediction beyond the window on the validation spirals against their noisy
    points (what a researcher without the noiseless curve can measure); None without a validation split."""
    if data.val is None:
        return None
    predicted = predict_split(model, data.val, data, batch_size)
    window = torch.arange(predicted.shape[1], device=predicted.device) < data.n_points
    return rmse(predicted, data.val.noisy, ~window.expand(len(data.val), -1))


def reference_errors(data: Spirals) -> dict[str, float]:
    """Return each reference predictor's (noderun.models.reference) test RMSE beyond the window on the
    test spirals, pooled (NAME_rmse) and as the mean of the spirals' own (NAME_rmse_spiral_mean)."""
    x, t = observations(data.test, data.times)
    truth = data.test.clean[:, data.n_points:]
    errors = {}
    for name, predictor in REFERENCES.items():
        ahead = predictor(x, t, data.times[data.n_points:])
        errors[f"{name}_rmse"] = rmse(ahead, truth, truth[..., 0].isfinite())  # every predicted point
        errors[f"{name}_rmse_spiral_mean"] = spiral_mean_rmse(ahead, truth)
    return errors


def summary_fields(rows: list[dict], best: dict) -> dict:
    """Return the summary's results after the epochs in rows: the test errors at the selected epoch
    (`best`), the last epoch's test RMSE, NFE and loss, time and memory over all epochs."""
    last = rows[-1]
    return {"best_epoch": best["epoch"], "selected_by": "val_rmse" if best.get("val_rmse") is not None else "last_epoch",
            "val_rmse": best.get("val_rmse"),
            **{key: best.get(key) for key in ("test_rmse", "test_rmse_spiral_mean", "test_rmse_observed",
                                               "test_rmse_unobserved")},
            "final_test_rmse": last["test_rmse"],
            **{key: last[key] for key in ("nfe_forward", "nfe_backward", "nfe_forward_eval", "train_loss")},
            "train_time_s": round(sum(r["epoch_time_s"] for r in rows), 2),
            "peak_memory_mb": max(r["peak_memory_mb"] for r in rows)}


def prediction_table(predicted: torch.Tensor, split: SpiralSplit, data: Spirals, count: int) -> pd.DataFrame:
    """Return the first `count` test trajectories in long form for figures: truth, noisy point,
    whether observed, and the prediction at every time."""
    rows = []
    for i in range(min(count, len(split))):
        observed = set(split.observed[i].tolist())
        for k in range(len(data.times)):
            rows.append({"trajectory": i, "k": k, "t": float(data.times[k]), "in_window": k < data.n_points,
                         "observed": k in observed, "clockwise": bool(split.clockwise[i]),
                         "true_x": float(split.clean[i, k, 0]), "true_y": float(split.clean[i, k, 1]),
                         "noisy_x": float(split.noisy[i, k, 0]), "noisy_y": float(split.noisy[i, k, 1]),
                         "pred_x": float(predicted[i, k, 0]), "pred_y": float(predicted[i, k, 1])})
    return pd.DataFrame(rows)


def run(cfg: DictConfig, rec: RunRecorder) -> None:
    """Train the model, recording metrics.csv and a checkpoint after every epoch (resuming from the last
    one recorded when the run is resumed); then write the test RMSEs into the summary, the predictions
    of a few test spirals and their figure."""
    from noderun.plotting.spirals import spiral_figure  # matplotlib only once needed

    t, seed, device = cfg.trainer, int(cfg.seed), rec.device
    entry = MODELS.get(cfg.model.name)
    if entry is None or entry.table != 2:
        raise UserError(f"dataset=spirals takes a Table-2 model; choose one of: "
                        f"{', '.join(n for n, e in MODELS.items() if e.table == 2)}")
    passes = int(t.passes_per_epoch)
    if passes < 1:
        raise UserError(f"trainer.passes_per_epoch={passes} is invalid; use a whole number >= 1")
    if not 0 < float(t.lr_final) <= 1:
        raise UserError(f"trainer.lr_final={t.lr_final} is invalid; use a fraction of trainer.lr in (0, 1] "
                        f"(1: no decay)")
    objective = str(t.get("objective", "window"))
    if objective not in OBJECTIVES:
        raise UserError(f"trainer.objective={objective!r} is invalid; choose one of: {', '.join(OBJECTIVES)}")
    solver = solver_spec(cfg)
    regularizer = regularizer_spec(t, solver)  # a bad value refused before the data are made
    data = make_spirals(cfg.dataset, seed).to(device)
    torch.manual_seed(seed)
    model = build_model(cfg.model, solver).to(device)
    regularized = regularize(model, regularizer)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(t.lr))
    rec.restore(model=model, optimizer=optimizer)
    counter = NFECounter(model)
    ode = entry.is_ode
    rec.update(model=cfg.model.name, n_obs=int(cfg.dataset.n_obs), n_points=data.n_points,
               train_size=len(data.train), val_size=len(data.val) if data.val is not None else 0,
               test_size=len(data.test), params=count_parameters(model), objective=objective,
               rmse_convention="pooled", **reference_errors(data),
               solver=cfg.solver.method if ode else None, rtol=cfg.solver.rtol if ode else None,
               atol=cfg.solver.atol if ode else None, adjoint=bool(cfg.model.adjoint) if ode else None,
               solver_path=solver.path if ode else None, **regularize_fields(regularizer, regularized),
               peak_memory_kind="cuda_max_allocated" if device.type == "cuda" else "cpu_max_rss")
    predicted = None
    for epoch in range(len(rec.rows) + 1, int(t.epochs) + 1):
        # Set from the epoch alone (not a scheduler's state), so a resumed run goes on where it stopped.
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(float(t.lr), float(t.lr_final), epoch, int(t.epochs))
        reset_peak_memory(device)
        start = time.perf_counter()
        stats = train_one_epoch(model, optimizer, data, int(t.batch_size), passes, seed, epoch, counter,
                                objective)
        wait_for(device)
        elapsed = time.perf_counter() - start
        counter.take()
        predicted = predict_split(model, data.test, data, int(t.eval_batch_size))
        errors = prediction_errors(predicted, data.test, data.n_points)
        row = {"epoch": epoch, "iterations": epoch * passes * math.ceil(len(data.train) / int(t.batch_size)),
               "lr": optimizer.param_groups[0]["lr"], **stats,
               "nfe_forward_eval": counter.take() / math.ceil(len(data.test) / int(t.eval_batch_size)),
               "val_rmse": validation_rmse(model, data, int(t.eval_batch_size)),
               **errors, "epoch_time_s": round(elapsed, 3), "peak_memory_mb": round(peak_memory_mb(device), 1)}
        rows = [*rec.rows, row]
        best = selected_row(rows, "val_rmse", larger_is_better=False)
        rec.record_epoch(row, {"model": model.state_dict(), "optimizer": optimizer.state_dict()},
                         best=best is row, **summary_fields(rows, best))
        log.info("%s n_obs=%d epoch %d/%d: loss %.3f, RMSE beyond the window: val %s, test %.4f; NFE-F %.1f, "
                 "NFE-B %.1f, %.1f s", cfg.model.name, cfg.dataset.n_obs, epoch, t.epochs, stats["train_loss"],
                 "-" if row["val_rmse"] is None else f"{row['val_rmse']:.4f}", errors["test_rmse"],
                 stats["nfe_forward"], stats["nfe_backward"], elapsed)
    if rec.summary.get("best_epoch", len(rec.rows)) != len(rec.rows):  # the figures show the reported epoch's predictions
        rec.restore_best(model=model)
        predicted = None
    if predicted is None:  # also: resumed after its last epoch, the predictions come from the restored weights
        predicted = predict_split(model, data.test, data, int(t.eval_batch_size))
    log.info("test RMSE beyond the window %s at epoch %s (selected by %s)", rec.summary.get("test_rmse"),
             rec.summary.get("best_epoch"), rec.summary.get("selected_by"))
    rec.add_files("metrics.csv", "last.pt", "best.pt")
    table = prediction_table(predicted.cpu(), data.test.to(torch.device("cpu")), data, int(cfg.model.plot_spirals))
    rec.write_file(PREDICTIONS_FILE, table)
    rec.add_files(*(p.name for p in spiral_figure({cfg.model.name: table}, int(cfg.dataset.n_obs),
                                                  {cfg.model.name: rec.summary["test_rmse"]}, rec.run_dir,
                                                  note=training_note([objective]))))
