"""The report's figures of tasks among the runs: Figure 3(a)-(c) from tolerance tasks, and Table 2's
test spirals from the time-series runs (the drawing itself is noderun.plotting's)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from noderun.models.sequence import training_note
from noderun.plotting.registry import model_label, model_rank
from noderun.plotting.spirals import one_spiral_figure, rmse_curve_figure, spiral_figure
from noderun.plotting.tasks import figure3_abc
from noderun.report.collect import RunSet
from noderun.report.table2 import table2_runs

# Test spirals drawn per model, whatever a predictions file holds: one column each.
MAX_SPIRALS = 16


def tolerance_task_figures(run_set: RunSet, out_dir: Path) -> list[Path]:
    """Figure 3(a)-(c) over every completed tolerance task among the runs (their tolerance.csv),
    one series per task, labelled with the run its checkpoint came from."""
    tables = []
    for task in run_set.of_task("tolerance"):
        table = run_set.tables.get(task["run_dir"])
        if table is None:
            continue
        source = Path(task["ckpt"]).parent.name if task.get("ckpt") else Path(task["run_dir"]).name
        model = task.get("model")
        tables.append((f"{model_label(model)} {source}" if model else source, model, table))
    return figure3_abc(tables, out_dir) if tables else []


def _spirals_shown(table: pd.DataFrame) -> pd.DataFrame:
    """Return the rows of the first MAX_SPIRALS test spirals (trajectory numbers 0, 1, ...)."""
    return table[table["trajectory"].isin(range(MAX_SPIRALS))]


def table2_figures(run_set: RunSet, out_dir: Path) -> list[Path]:
    """Draw, per observed-point count, the first test spirals of each model's lowest seed with its
    reconstruction and extrapolation (spirals_nobs{N}.png/.pdf); for the fewest observed points, the
    first test spiral with each model side by side (figure8.png/.pdf, the paper's Figure 8); every run's
    test RMSE per epoch, its reported epoch marked (table2_convergence.png/.pdf); return the files written."""
    runs = table2_runs(run_set)
    paths: list[Path] = []
    if runs.empty:
        return paths
    # Runs from before trainer.objective trained on the window.
    objectives = runs["objective"].fillna("window") if "objective" in runs else pd.Series("window", index=runs.index)
    note = training_note(sorted(set(objectives)))
    for n_obs, group in runs.groupby("n_obs"):
        lowest_first = group.sort_values("seed", na_position="last", kind="stable") if "seed" in group else group
        chosen = lowest_first.drop_duplicates("model").sort_values("model", key=lambda models: models.map(model_rank))
        tables, rmses = {}, {}
        for _, run in chosen.iterrows():
            table = run_set.tables.get(run["run_dir"])
            if table is not None and not _spirals_shown(table).empty:
                tables[run["model"]] = _spirals_shown(table)
                rmses[run["model"]] = run["test_rmse"]
        if tables:
            paths += spiral_figure(tables, int(n_obs), rmses, out_dir, name=f"spirals_nobs{int(n_obs)}", note=note)
            # groupby sorts the counts: the first one drawn is the fewest, the paper's Figure 8 case. The
            # lowest seed is drawn for every model only when they share it, and so the same test spiral.
            if not any(p.stem == "figure8" for p in paths) and ("seed" not in chosen or chosen["seed"].nunique() == 1):
                paths += one_spiral_figure(tables, int(n_obs), rmses, out_dir, note=note)
    curves = [(run["model"], int(run["n_obs"]), run_set.curves[run["run_dir"]], run.get("best_epoch"))
              for _, run in runs.sort_values("model", key=lambda m: m.map(model_rank), kind="stable").iterrows()
              if run["run_dir"] in run_set.curves]
    if curves:
        paths += rmse_curve_figure(curves, out_dir, note=note)
    return paths
