"""Table 2's figure (the paper's Figure 8 style): test spirals with their observations, each model's
reconstruction inside the observation window and its extrapolation beyond the last observation."""

from __future__ import annotations

from pathlib import Path

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
                  name: str = "spirals") -> list[Path]:
    """Draw one row per model (tables: its spiral_predictions.csv) and one column per test trajectory;
    write out_dir/name.png and .pdf and return their paths."""
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
    fig.suptitle(f"Test spirals, {n_obs} observed points each: reconstruction (window) and extrapolation (after it)")
    return save_figure(fig, out_dir, name)
