"""`noderun experiment=cubic`: the tutorial's (shared/seeds/002, section 5) toy regression of
h(x) = x^3 + 0.1 x from a few noisy points, a ResNet against an ODE-Net, each trained by plain
full-batch gradient descent on the mean squared error.

Three studies, each a set of fits:
- main: both models on the dataset's training points, at their own learning rates (Figures 6-8);
- lr_sweep: each model at each learning rate of its sweep on the same points (Figures 11-12);
- random_sets: both models on fresh random training sets (Figures 9-10).
The test MSE of a fit is taken on the noiseless target at the dataset's evenly spaced test points.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn

from noderun.data.cubic import RegressionData, make_cubic_data
from noderun.errors import UserError
from noderun.run.recorder import RunRecorder
from noderun.measure import NFECounter
from noderun.train import TrainingFailure, training_steps
from noderun.models.regression import REGRESSION_MODELS, build_regression_model
from noderun.solvers import SolverSpec, solver_spec
from noderun.experiments.common import task_settings

log = logging.getLogger("noderun")

CSV_FILE = "cubic.csv"
# Where a fit's training loss is recorded, in iterations.
LOSS_EVERY = 10


def dataset_for(cfg: DictConfig, seed: int, **overrides) -> RegressionData:
    """Return the cubic data of the run's dataset config drawn from `seed`, with overrides (n_train, low, high)."""
    d = cfg.dataset
    if d.name != "cubic":
        raise UserError(f"task=cubic needs dataset=cubic, not dataset={d.name}; run it as experiment=cubic")
    options = {"n_train": int(d.n_train), "low": float(d.low), "high": float(d.high),
               "noise_std": float(d.noise_std), "n_test": int(d.n_test), **overrides}
    if options["n_train"] < 1 or options["n_test"] < 2 or not options["high"] > options["low"]:
        raise UserError(f"dataset: n_train={options['n_train']}, n_test={options['n_test']}, [low, high] = "
                        f"[{options['low']}, {options['high']}] is invalid; use n_train >= 1, n_test >= 2, high > low")
    return make_cubic_data(seed, **options)


def model_settings(settings: DictConfig, name: str) -> DictConfig:
    """Return a model's block of the task settings (lr, iterations, lr_sweep: typed by
    noderun.schema.CubicFit), its learning-rate sweep checked."""
    block = settings[name]
    for lr in block.lr_sweep:
        if not lr > 0:
            raise UserError(f"cubic.{name}.lr_sweep: learning rate {lr} is invalid; use numbers > 0")
    return block


def fit(name: str, data: RegressionData, lr: float, iterations: int, width: int, solver: SolverSpec,
        adjoint: bool, init_seed: int, device: torch.device) -> tuple[dict[str, Any], list[float], list[float]]:
    """Train one model by full-batch gradient descent; return (its row, predictions on the test
    points, training MSE every LOSS_EVERY iterations).

    A loss that stops being finite, or a solver that gives up, ends the fit as diverged (the
    tutorial reports overflow at large learning rates): its row says so and its test MSE is NaN.
    """
    torch.manual_seed(init_seed)  # the same initial weights for every fit of a model
    model = build_regression_model(name, solver, width, adjoint).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = data.x_train.to(device), data.y_train.to(device)
    losses, nfe_f, nfe_b, reason, done = [], 0, 0, None, 0
    full_batches = ((x, y) for _ in range(iterations))

    def loss_of(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, None]:
        return nn.functional.mse_loss(model(batch[0]), batch[1]), None

    start = time.perf_counter()
    try:
        for iteration, step in enumerate(training_steps(model, optimizer, full_batches, loss_of, NFECounter(model))):
            nfe_f, nfe_b, done = nfe_f + step.nfe_forward, nfe_b + step.nfe_backward, done + 1
            if iteration % LOSS_EVERY == 0 or iteration == iterations - 1:
                losses.append(step.loss)
    except TrainingFailure as failure:
        reason = str(failure)  # the tutorial's divergence at a large lr: its row says so, the run goes on
    except (AssertionError, RuntimeError) as error:  # torchdiffeq: underflow in dt, too many steps
        reason = f"solver gave up at step {done + 1}: {error}"
    elapsed = time.perf_counter() - start
    predictions, test_mse, train_mse = [math.nan] * len(data.x_test), math.nan, math.nan
    if reason is None:
        with torch.no_grad():
            predicted = model(data.x_test.to(device)).cpu()
            train_mse = float(nn.functional.mse_loss(model(x), y))
        predictions = predicted[:, 0].tolist()
        test_mse = float(nn.functional.mse_loss(predicted, data.y_test))
    row = {"model": name, "lr": lr, "iterations": iterations, "iterations_done": done,
           "n_train": len(data.x_train), "train_mse": train_mse, "test_mse": test_mse,
           "nfe_forward": nfe_f / max(done, 1), "nfe_backward": nfe_b / max(done, 1),
           "time_s": round(elapsed, 2), "diverged": reason is not None, "reason": reason}
    return row, predictions, losses


def plan(cfg: DictConfig, settings: DictConfig) -> list[dict[str, Any]]:
    """Return every fit to make: study, model, learning rate, data seed and the data itself."""
    blocks = {name: model_settings(settings, name) for name in REGRESSION_MODELS}
    main = dataset_for(cfg, int(cfg.seed))
    fits = [{"study": "main", "model": name, "lr": float(b.lr), "data_seed": int(cfg.seed), "data": main}
            for name, b in blocks.items()]
    for name, b in blocks.items():
        fits += [{"study": "lr_sweep", "model": name, "lr": float(lr), "data_seed": int(cfg.seed), "data": main}
                 for lr in b.lr_sweep]
    sets = settings.random_sets
    for k in range(int(sets.count)):
        seed = int(cfg.seed) + 1 + k  # never the main set's seed
        data = dataset_for(cfg, seed, n_train=int(sets.n_train), low=float(sets.low), high=float(sets.high))
        fits += [{"study": "random_sets", "model": name, "lr": float(b.lr), "data_seed": seed, "data": data}
                 for name, b in blocks.items()]
    return fits


def run_fits(cfg: DictConfig, settings: DictConfig, rec: RunRecorder) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Make every fit of the plan; return (one row per fit, predictions, training losses), joined by fit.

    A sweep's fit at a model's own learning rate on the main data is the main fit: it is made once.
    Each fit made is checkpointed, so a resumed run makes only the fits it had not finished.
    """
    solver, width, adjoint = solver_spec(cfg), int(settings.width), bool(settings.adjoint)
    rows, curves, losses = [], [], []
    saved = (rec.restored() or {}).get("made", [])
    made = {(m, lr, seed): (row, predictions, loss) for m, lr, seed, row, predictions, loss in saved}
    for number, item in enumerate(plan(cfg, settings)):
        key = (item["model"], item["lr"], item["data_seed"])
        if key not in made:
            iterations = int(settings[item["model"]].iterations)
            made[key] = fit(item["model"], item["data"], item["lr"], iterations, width, solver, adjoint,
                            int(cfg.seed), rec.device)
            rec.checkpoint({"made": [[*k, *v] for k, v in made.items()]})
            row = made[key][0]
            log.info("cubic %s %s lr %g data %d: test MSE %.4g, %.1f s%s", item["study"], item["model"], item["lr"],
                     item["data_seed"], row["test_mse"], row["time_s"], f" ({row['reason']})" if row["reason"] else "")
        row, predictions, loss = made[key]
        rows.append({"fit": number, "study": item["study"], "data_seed": item["data_seed"], **row})
        curves += [{"fit": number, "x": float(x), "prediction": p}
                   for x, p in zip(item["data"].x_test[:, 0], predictions)]
        losses += [{"fit": number, "iteration": i * LOSS_EVERY, "train_mse": value} for i, value in enumerate(loss)]
    return pd.DataFrame(rows), pd.DataFrame(curves), pd.DataFrame(losses)


def markdown_table(fits: pd.DataFrame, seed_document: DictConfig) -> str:
    """Return the main fits' test MSE beside the tutorial's, and each study's test MSE by model and lr."""
    lines = ["Test MSE on the noiseless target at the test points (main fits), ours beside the tutorial's:", "",
             "| model | lr | iterations | test MSE (ours) | test MSE (tutorial) | NFE-F | NFE-B | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in fits[fits["study"] == "main"].iterrows():
        theirs = seed_document.get(f"{r['model']}_test_mse")
        lines.append(f"| {r['model']} | {r['lr']:g} | {r['iterations']} | {r['test_mse']:.3f} | "
                     f"{'' if theirs is None else f'{theirs:g}'} | {r['nfe_forward']:.1f} | {r['nfe_backward']:.1f} | "
                     f"{r['time_s']:.1f} |")
    sweep = fits[fits["study"] == "lr_sweep"]
    lines += ["", "Learning-rate sweep (same training points):", "", "| model | lr | test MSE | diverged |",
              "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['lr']:g} | {r['test_mse']:.3f} | {r['reason'] or 'no'} |" for _, r in sweep.iterrows()]
    sets = fits[fits["study"] == "random_sets"]
    if len(sets):
        lines += ["", f"Random training sets ({sets['n_train'].iloc[0]} points each): test MSE mean ± std over "
                  f"{sets['data_seed'].nunique()} sets", "", "| model | mean | std | min | max |", "|---|---|---|---|---|"]
        for model, group in sets.groupby("model", sort=False):
            mse = group["test_mse"]
            lines.append(f"| {model} | {mse.mean():.3f} | {mse.std():.3f} | {mse.min():.3f} | {mse.max():.3f} |")
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig, rec: RunRecorder) -> None:
    """Write cubic.csv (one row per fit), cubic_curves.csv, cubic_loss.csv, cubic.md and the figures."""
    from noderun.plotting.seeds import cubic_figures  # matplotlib only once needed

    settings = task_settings(cfg)
    fits, curves, losses = run_fits(cfg, settings, rec)
    rec.write_file(CSV_FILE, fits)
    rec.write_file("cubic_curves.csv", curves)
    rec.write_file("cubic_loss.csv", losses)
    rec.write_file("cubic.md", markdown_table(fits, settings.seed_document))
    main = dataset_for(cfg, int(cfg.seed))
    rec.add_files(*(p.name for p in cubic_figures(fits, curves, losses, main, rec.run_dir)))
    for _, r in fits[fits["study"] == "main"].iterrows():
        rec.summary[f"{r['model']}_test_mse"] = r["test_mse"]
    rec.summary["seed_document"] = {k: float(v) for k, v in settings.seed_document.items()}
