"""Table 2's figure (the paper's Figure 8 style): test spirals with their observations, each model's
reconstruction inside the observation window and its extrapolation beyond the last observation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from noderun.plotting import save_figure  # importing the package selects the file-only backend
from noderun.plotting.registry import is_ode_model, model_colour, model_label
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def _draw_trajectory(ax, points: pd.DataFrame, model: str, colour) -> None:
    ax.plot(points.true_x, points.true_y, color="0.75", lw=1, label="true spiral")
    seen = points[points.observed]
    ax.plot(seen.noisy_x, seen.noisy_y, "o", color="k", ms=2.5, label="observations")
    inside, beyond = points[points.in_window], points[~points.in_window]
    # An ODE model's reconstruction is a curve through the window; a model without an ODE block
    # predicts only at the observations (one step ahead), so its reconstruction is drawn as dots.
    ax.plot(inside.pred_x, inside.pred_y, "-" if is_ode_model(model) else ".", color=colour, lw=1.5, ms=3,
            label="reconstruction")
    joined = pd.concat([inside.dropna(subset=["pred_x"]).tail(1), beyond])
    ax.plot(joined.pred_x, joined.pred_y, "--", color=colour, lw=1.5, label="extrapolation")
    end = points[points.in_window].tail(1)
    ax.plot(end.true_x, end.true_y, "|", color="k", ms=10, mew=2, label="end of window")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])


def spiral_figure(tables: dict[str, pd.DataFrame], n_obs: int, rmses: dict[str, float | None], out_dir: Path,
                  name: str = "spirals", note: str = "") -> list[Path]:
    """Draw one row per model (tables: its spiral_predictions.csv) and one column per test trajectory,
    `note` (how the models were trained and scored) under the title; write out_dir/name.png and .pdf and
    return their paths."""
    models = list(tables)
    count = max(int(t.trajectory.max()) + 1 for t in tables.values())
    fig, axes = plt.subplots(len(models), count, figsize=(3.2 * count, 3.3 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        for column in range(count):
            ax = axes[row, column]
            points = tables[model][tables[model].trajectory == column]
            if points.empty:
                ax.axis("off")
                continue
            _draw_trajectory(ax, points, model, model_colour(model, row))
            if column == 0:
                rmse = rmses.get(model)
                ax.set_ylabel(f"{model_label(model)}\nRMSE beyond window "
                              + (f"{rmse:.4f}" if rmse is not None else "-"))
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(f"Test spirals, {n_obs} observed points each: reconstruction (window) and extrapolation (after it)"
                 + (f"\n{note}" if note else ""))
    return save_figure(fig, out_dir, name)


def one_spiral_figure(tables: dict[str, pd.DataFrame], n_obs: int, rmses: dict[str, float | None], out_dir: Path,
                      name: str = "figure8", trajectory: int = 0, note: str = "") -> list[Path]:
    """The paper's Figure 8 layout: one test spiral (the same for every model: tables hold each model's
    spiral_predictions.csv of the same seed), one panel per model side by side, each with the
    observations, the truth, its reconstruction and its extrapolation, `note` under the title; write
    out_dir/name.png/.pdf."""
    models = [m for m in tables if not tables[m][tables[m].trajectory == trajectory].empty]
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.8), squeeze=False)
    for column, model in enumerate(models):
        ax = axes[0, column]
        _draw_trajectory(ax, tables[model][tables[model].trajectory == trajectory], model, model_colour(model, column))
        rmse = rmses.get(model)
        ax.set_title(f"{model_label(model)}\nRMSE beyond window (all test spirals) "
                     + (f"{rmse:.3f}" if rmse is not None else "-"), fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(f"One test spiral, {n_obs} observed points of the window" + (f"\n{note}" if note else ""), fontsize=9)
    return save_figure(fig, out_dir, name)


def rmse_curve_figure(curves: list[tuple[str, int, pd.DataFrame, Any]], out_dir: Path,
                      name: str = "table2_convergence", note: str = "") -> list[Path]:
    """Test RMSE beyond the window against epoch: one panel per observed-point count, one line per run
    (model colour; curves holds (model, n_obs, metrics.csv, reported epoch or None) per run), a dot at
    the epoch the run reports, `note` as the title; write out_dir/name.png/.pdf."""
    counts = sorted({curve[1] for curve in curves})
    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 3.6), squeeze=False, sharey=True)
    for column, n_obs in enumerate(counts):
        ax, labelled = axes[0, column], set()
        for index, (model, n, metrics, best) in enumerate(curves):
            if n != n_obs:
                continue
            colour = model_colour(model, index)
            ax.plot(metrics.epoch, metrics.test_rmse, color=colour, lw=1,
                    label=None if model in labelled else model_label(model))
            reported = metrics[metrics.epoch == best] if best is not None and not pd.isna(best) else metrics.iloc[:0]
            ax.plot(reported.epoch, reported.test_rmse, "o", color=colour, ms=3)
            labelled.add(model)
        ax.set_yscale("log")
        ax.set_title(f"{n_obs} observed points", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("test RMSE beyond the window")
    axes[0, 0].legend(fontsize=8, title="dot: epoch reported", title_fontsize=7)
    if note:
        fig.suptitle(note, fontsize=9)
    return save_figure(fig, out_dir, name)
