"""`noderun experiment=cnf_density` and `experiment=cnf_mle`: section 4's flows (the paper's Figures 4 and 5).

- Density matching (task cnf_density): a flow's samples x of the base noise are scored against a target
  exp(-U) by KL(q||p) = E_q[log q(x) + U(x)] + log Z; the loss is that expectation over a batch.
- Maximum likelihood (task cnf_mle): a flow is fitted to training samples by their mean negative
  log-likelihood and scored on held-out test samples.

Both train with noderun's one loop (noderun.train.training_steps), evaluate every `trainer.eval_every`
steps into metrics.csv with a checkpoint (a resumed run goes on from there), and write the tables its
figures draw from: density_grid.csv (density matching: the model's and the target's log-density on a grid)
and flow_states.csv (maximum likelihood: samples and densities at each figure time, noise to data)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from noderun.data.plane import TARGETS, energy, grid, log_normaliser, sample_splits
from noderun.errors import UserError
from noderun.experiments.common import task_settings
from noderun.measure import NFECounter
from noderun.models import model_entry
from noderun.models.flows import TO_DATA, TO_NOISE, TRACES, standard_normal_log_density
from noderun.run.recorder import RunRecorder
from noderun.solvers import solver_spec
from noderun.train import TrainingFailure, training_steps

log = logging.getLogger("noderun")

DENSITY_GRID_FILE = "density_grid.csv"
FLOW_STATES_FILE = "flow_states.csv"
OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
# Evaluation batches: bounded memory for the CNF's solves on many points at once.
EVAL_BATCH = 5000


@dataclass
class Objective:
    """What one of the two tasks trains and scores: a batch per step, its loss, the evaluation (its name
    and a function of the model returning (value, standard error)), the flow's explicit direction, and
    the files its figures draw from."""

    direction: str
    batch: Callable[[], torch.Tensor]
    loss_of: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    metric: str
    evaluate: Callable[[nn.Module], tuple[float, float]]
    figure_files: Callable[[nn.Module, RunRecorder], None]
    summary: dict[str, Any]
    eval_points: int  # points each evaluation maps (in batches of EVAL_BATCH, one solve each)


def log_density(model: nn.Module, x: torch.Tensor, fraction: float = 1.0) -> torch.Tensor:
    """Return the flow's log-density at each row of x, at `fraction` of its path from the noise (1: the
    data): log N(z) + log |det dz/dx|, z the noise x maps back to."""
    z, log_det = model.transform(x, TO_NOISE, fraction)
    return standard_normal_log_density(z) + log_det


def samples_with_log_density(model: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the data the base samples z map to and the flow's log-density there."""
    x, log_det = model.to_data(z)
    return x, standard_normal_log_density(z) - log_det


def _in_batches(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.cat([function(part) for part in x.split(EVAL_BATCH)])


def mean_and_error(values: torch.Tensor) -> tuple[float, float]:
    """Return the mean of values and its standard error."""
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


def density_matching(cfg: DictConfig, settings: DictConfig) -> Objective:
    """Return the objective of task cnf_density on the run's target."""
    target, batch_size = str(cfg.dataset.target), int(cfg.trainer.batch_size)
    if target not in TARGETS:
        raise UserError(f"dataset.target={target!r} is invalid; choose one of: {', '.join(TARGETS)}")
    log_z = log_normaliser(target)

    def loss_of(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
        x, log_q = samples_with_log_density(model, z)
        return (log_q + energy(target, x)).mean()

    def evaluate(model: nn.Module) -> tuple[float, float]:
        z = torch.randn(int(settings.eval_samples), 2)

        def kl_terms(part: torch.Tensor) -> torch.Tensor:
            x, log_q = samples_with_log_density(model, part)
            return log_q + energy(target, x) + log_z

        return mean_and_error(_in_batches(kl_terms, z))

    def figure_files(model: nn.Module, rec: RunRecorder) -> None:
        cells = grid(int(settings.grid_points)).float()
        log_q = _in_batches(lambda part: log_density(model, part), cells)
        log_p = -energy(target, cells) - log_z
        rec.write_file(DENSITY_GRID_FILE, pd.DataFrame({"x": cells[:, 0], "y": cells[:, 1], "log_q": log_q,
                                                        "log_p": log_p}))

    return Objective(TO_DATA, lambda: torch.randn(batch_size, 2), loss_of, "kl", evaluate, figure_files,
                     {"target": target, "log_z": log_z}, int(settings.eval_samples))


def maximum_likelihood(cfg: DictConfig, settings: DictConfig) -> Objective:
    """Return the objective of task cnf_mle on the run's samples."""
    d = cfg.dataset
    train, test = (part.float() for part in sample_splits(str(d.name), int(d.n_train), int(d.n_test),
                                                          int(cfg.seed), float(d.noise)))
    batch_size = int(cfg.trainer.batch_size)

    def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return -log_density(model, x).mean()

    def evaluate(model: nn.Module) -> tuple[float, float]:
        return mean_and_error(-_in_batches(lambda part: log_density(model, part), test))

    def figure_files(model: nn.Module, rec: RunRecorder) -> None:
        rows = []
        z = torch.randn(int(settings.figure_samples), 2)
        cells = grid(int(settings.grid_points)).float()
        for t in settings.figure_times:
            x, _ = model.transform(z, TO_DATA, float(t))
            rows.append(pd.DataFrame({"t": float(t), "x": x[:, 0], "y": x[:, 1], "log_q": math.nan}))
            log_q = log_density(model, cells, float(t))
            rows.append(pd.DataFrame({"t": float(t), "x": cells[:, 0], "y": cells[:, 1], "log_q": log_q}))
        rec.write_file(FLOW_STATES_FILE, pd.concat(rows, ignore_index=True))

    return Objective(TO_NOISE, lambda: train[torch.randint(len(train), (batch_size,))], loss_of, "test_nll",
                     evaluate, figure_files, {"dataset": str(d.name), "n_train": len(train), "n_test": len(test)},
                     len(test))


def _checked(cfg: DictConfig) -> None:
    """Raise UserError for a trainer or model setting these tasks cannot use, naming what would be valid."""
    if cfg.trainer.optimizer not in OPTIMIZERS:
        raise UserError(f"trainer.optimizer={cfg.trainer.optimizer!r} is invalid; choose one of: {', '.join(OPTIMIZERS)}")
    if cfg.model.get("trace", "exact") not in TRACES:
        raise UserError(f"model.trace={cfg.model.trace!r} is invalid; choose one of: {', '.join(TRACES)}")


def run(cfg: DictConfig, rec: RunRecorder) -> None:
    """Train the run's flow on its task's objective, evaluating every trainer.eval_every steps (a resumed
    run goes on from its last evaluation); then write the final evaluation into the summary and the
    tables its figures draw from."""
    _checked(cfg)
    settings, trainer = task_settings(cfg), cfg.trainer
    objective = (density_matching if cfg.task == "cnf_density" else maximum_likelihood)(cfg, settings)
    torch.manual_seed(int(cfg.seed))
    entry = model_entry(str(cfg.model.name))
    model = entry.build({**OmegaConf.to_container(cfg.model), "direction": objective.direction}, solver_spec(cfg))
    optimizer = OPTIMIZERS[str(trainer.optimizer)](model.parameters(), lr=float(trainer.lr),
                                                   weight_decay=float(trainer.weight_decay))
    params = sum(p.numel() for p in model.parameters())
    rec.update(model=str(cfg.model.name), units=int(cfg.model.units), params=params, **objective.summary)
    resumed = rec.restore(model=model, optimizer=optimizer)
    counter, every = NFECounter(model), int(trainer.eval_every)
    evaluations = math.ceil(int(trainer.iterations) / every)
    train_time = float(rec.rows[-1]["train_time_s"]) if resumed and rec.rows else 0.0
    hint = "lower trainer.lr, or choose another solver"

    def batches(first: int, count: int):
        """Yield `count` batches from step `first` on, each with the lr of its step (from the step alone,
        so that a resumed run decays as an uninterrupted one)."""
        for step in range(first, first + count):
            for group in optimizer.param_groups:
                group["lr"] = float(trainer.lr) * float(trainer.lr_final) ** (step / int(trainer.iterations))
            yield objective.batch()

    for epoch in range(len(rec.rows) + 1, evaluations + 1):
        steps_now = min(every, int(trainer.iterations) - (epoch - 1) * every)
        start = time.perf_counter()
        try:
            steps = list(training_steps(model, optimizer, batches((epoch - 1) * every, steps_now),
                                        lambda batch: (objective.loss_of(model, batch), None), counter, hint))
        except (AssertionError, RuntimeError) as error:  # torchdiffeq: underflow in dt, too many steps
            raise TrainingFailure(f"the solver gave up in evaluation {epoch}: {str(error).splitlines()[0]}") from None
        train_time += time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            value, error = objective.evaluate(model)
        nfe_eval = counter.take() / math.ceil(objective.eval_points / EVAL_BATCH)  # per solve
        row = {"epoch": epoch, "iterations": (epoch - 1) * every + steps_now,
               "loss": sum(s.loss for s in steps) / len(steps), objective.metric: value,
               f"{objective.metric}_se": error, "nfe_forward": sum(s.nfe_forward for s in steps) / len(steps),
               "nfe_backward": sum(s.nfe_backward for s in steps) / len(steps), "nfe_forward_eval": nfe_eval,
               "lr": optimizer.param_groups[0]["lr"],
               "train_time_s": round(train_time, 3), "eval_time_s": round(time.perf_counter() - start, 3)}
        log.info("evaluation %d (%d steps): loss %.4f %s %.4f ± %.4f NFE-F %.1f NFE-B %.1f", epoch, row["iterations"],
                 row["loss"], objective.metric, value, error, row["nfe_forward"], row["nfe_backward"])
        rec.record_epoch(row, {"model": model.state_dict(), "optimizer": optimizer.state_dict()},
                         train_time_s=round(train_time, 3))
    last = rec.rows[-1]
    with torch.no_grad():
        objective.figure_files(model, rec)
    counter.take()
    rec.update(**{objective.metric: last[objective.metric], f"{objective.metric}_se": last[f"{objective.metric}_se"],
                  "nfe_forward": last["nfe_forward"], "nfe_backward": last["nfe_backward"],
                  "nfe_forward_eval": last["nfe_forward_eval"], "train_time_s": last["train_time_s"],
                  "iterations": last["iterations"]})
