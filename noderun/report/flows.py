"""Section 4's flows from a set of runs: density matching's table (KL by target, model and capacity) with
Figure 4's grid of densities, and maximum likelihood's table (test negative log-likelihood by data set
and model) with Figure 5's samples and densities from the noise (t = 0) to the data (t = 1). Each table
says where the CNF is below the planar flow, as the paper's figures show it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from noderun.plotting import save_figure  # importing the package selects the file-only backend
from noderun.plotting.registry import is_ode_model, model_label, model_rank
from noderun.report.collect import RunSet
from noderun.report.table import markdown, sample_std
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

DENSITY, LIKELIHOOD = "cnf_density", "cnf_mle"
# What tells two rows of each table apart, besides the model and its capacity.
SETTING = {DENSITY: "target", LIKELIHOOD: "dataset"}
METRIC = {DENSITY: "kl", LIKELIHOOD: "test_nll"}
METRIC_NOTE = {DENSITY: "KL(q||p) in nats, from the model's own samples (the target normalised on a grid)",
               LIKELIHOOD: "negative log-likelihood of the held-out test samples, nats per sample"}


def flow_table(run_set: RunSet, task: str) -> pd.DataFrame:
    """Return one row per setting, model and capacity (units): the metric's mean and sample std over
    seeds, the evaluation NFE-F per solve, NFE-F and NFE-B per training step, the training time and
    the iterations, from the completed runs of the task."""
    runs = pd.DataFrame(run_set.of_task(task, completed=True))
    if runs.empty:
        return runs
    metric, setting = METRIC[task], SETTING[task]
    rows = []
    for (where, model, units), group in runs.groupby([setting, "model", "units"], sort=False):
        values = pd.to_numeric(group[metric])
        rows.append({setting: where, "model": model, "units": int(units), "seeds": len(group),
                     f"{metric}_mean": float(values.mean()), f"{metric}_std": sample_std(values),
                     "nfe_forward_eval": float(pd.to_numeric(group["nfe_forward_eval"]).mean()),
                     "nfe_forward": float(pd.to_numeric(group["nfe_forward"]).mean()),
                     "nfe_backward": float(pd.to_numeric(group["nfe_backward"]).mean()),
                     "train_time_s": float(pd.to_numeric(group["train_time_s"]).mean()),
                     "iterations": int(pd.to_numeric(group["iterations"]).max())})
    table = pd.DataFrame(rows)
    return table.sort_values([setting, "units", "model"], key=lambda c: c.map(model_rank) if c.name == "model" else c,
                             kind="stable").reset_index(drop=True)


def verdicts(table: pd.DataFrame, task: str) -> list[str]:
    """Return a line per setting, capacity and pair of a continuous flow (an ODE model: the CNF) and a
    discrete one (the planar flow): whether the continuous flow's metric is below (the paper's claim)."""
    metric, setting = METRIC[task], SETTING[task]
    lines = []
    for (where, units), group in table.groupby([setting, "units"], sort=False):
        by_model = group.set_index("model")[f"{metric}_mean"]
        for continuous in (m for m in by_model.index if is_ode_model(m)):
            for discrete in (m for m in by_model.index if not is_ode_model(m)):
                below = by_model[continuous] < by_model[discrete]
                lines.append(f"{where}, {units} units: {model_label(continuous)} {by_model[continuous]:.3f} "
                             f"{'below' if below else 'NOT below'} {model_label(discrete)} {by_model[discrete]:.3f}")
    return lines


def _display(table: pd.DataFrame, task: str) -> list[dict[str, str]]:
    metric, setting = METRIC[task], SETTING[task]
    return [{setting: str(row[setting]), "model": model_label(row["model"]),
             "K or M": str(row["units"]),
             metric: f"{row[f'{metric}_mean']:.3f}" + ("" if math.isnan(row[f"{metric}_std"])
                                                       else f" ± {row[f'{metric}_std']:.3f}"),
             "seeds": str(row["seeds"]), "NFE-F eval": f"{row['nfe_forward_eval']:.1f}",
             "NFE-F / NFE-B train": f"{row['nfe_forward']:.1f} / {row['nfe_backward']:.1f}",
             "iterations": str(row["iterations"]), "train time (s)": f"{row['train_time_s']:.1f}"}
            for _, row in table.iterrows()]


def _write(table: pd.DataFrame, task: str, out_dir: Path) -> str:
    """Write TASK.csv and TASK.md; return the Markdown."""
    table.round(6).to_csv(out_dir / f"{task}.csv", index=False)
    note = (f"{'Density matching' if task == DENSITY else 'Maximum likelihood'} (section 4): {METRIC_NOTE[task]}; "
            "mean ± sample std over seeds; K: the planar flow's depth, M: the CNF's width (matched capacity at "
            "equal numbers); NFE-F eval: evaluations per solve at the final evaluation; train time on the run's "
            "device, evaluations excluded.")
    lines = verdicts(table, task)
    text = note + "\n\n" + markdown(_display(table, task)) + ("\n\n" + "\n".join(lines) if lines else "")
    (out_dir / f"{task}.md").write_text(text + "\n")
    return text


def density_text(run_set: RunSet, out_dir: Path) -> str | None:
    """Write density matching's table from the runs and return its text, or None without completed runs."""
    table = flow_table(run_set, DENSITY)
    return None if table.empty else _write(table, DENSITY, out_dir)


def likelihood_text(run_set: RunSet, out_dir: Path) -> str | None:
    """Write maximum likelihood's table from the runs and return its text, or None without completed runs."""
    table = flow_table(run_set, LIKELIHOOD)
    return None if table.empty else _write(table, LIKELIHOOD, out_dir)


def _capacity(model: str) -> str:
    """Return the letter of a flow's capacity: M, the width of a continuous flow; K, a discrete one's depth."""
    return "M" if is_ode_model(model) else "K"


def _first_seed_runs(run_set: RunSet, task: str) -> dict[tuple, dict]:
    """Return, per (setting, model, units), the completed run of the lowest seed that has its figure table."""
    chosen: dict[tuple, dict] = {}
    for run in run_set.of_task(task, completed=True):
        if run["run_dir"] not in run_set.tables:
            continue
        key = (run[SETTING[task]], run["model"], int(run["units"]))
        if key not in chosen or run.get("seed", 0) < chosen[key].get("seed", 0):
            chosen[key] = run
    return chosen


def _density_image(ax, table: pd.DataFrame, column: str) -> None:
    """Draw exp(column) of a grid table (x varying fastest) as an image over its square."""
    side = int(round(math.sqrt(len(table))))
    values = np.exp(table[column].to_numpy(dtype=float)).reshape(side, side)
    limit = float(table["x"].abs().max()) * (side / (side - 1)) if side > 1 else 1.0
    ax.imshow(values, origin="lower", extent=(-limit, limit, -limit, limit), cmap="viridis")
    ax.set_xticks([])
    ax.set_yticks([])


def figure4(run_set: RunSet, out_dir: Path) -> list[Path]:
    """Figure 4's layout: a row per target; its density, then the planar flows by depth K and the CNFs by
    width M (each the lowest seed's run)."""
    runs = _first_seed_runs(run_set, DENSITY)
    if not runs:
        return []
    targets = sorted({key[0] for key in runs})
    columns = sorted({key[1:] for key in runs}, key=lambda k: (model_rank(k[0]), k[1]))
    fig, axes = plt.subplots(len(targets), len(columns) + 1, figsize=(1.9 * (len(columns) + 1), 1.9 * len(targets)),
                             squeeze=False)
    for i, target in enumerate(targets):
        shown_target = False
        for j, (model, units) in enumerate(columns, start=1):
            ax = axes[i][j]
            run = runs.get((target, model, units))
            if run is None:
                ax.axis("off")
                continue
            grid_table = run_set.tables[run["run_dir"]]
            _density_image(ax, grid_table, "log_q")
            ax.set_title(f"{_capacity(model)} = {units}" if i == 0 else "", fontsize=8)
            ax.set_xlabel(f"{model_label(model)}, KL {float(run['kl']):.2f}", fontsize=7)
            if not shown_target:
                _density_image(axes[i][0], grid_table, "log_p")
                axes[i][0].set_ylabel(target, fontsize=9)
                shown_target = True
        axes[i][0].set_title("target" if i == 0 else "", fontsize=8)
    fig.suptitle("Density matching (section 4, Figure 4's layout): planar flows (K) against CNFs (M)", fontsize=9)
    return save_figure(fig, out_dir, "figure4")


def figure5(run_set: RunSet, out_dir: Path) -> list[Path]:
    """Figure 5's layout: per data set and model (the lowest seed's run of its largest capacity), a row of
    samples and a row of densities at each figure time, from the noise (t = 0) to the data (t = 1)."""
    runs = _first_seed_runs(run_set, LIKELIHOOD)
    largest: dict[tuple, dict] = {}
    for (dataset, model, units), run in runs.items():
        if (dataset, model) not in largest or units > int(largest[(dataset, model)]["units"]):
            largest[(dataset, model)] = run
    if not largest:
        return []
    keys = sorted(largest, key=lambda k: (k[0], model_rank(k[1])))
    times = sorted(set(run_set.tables[largest[keys[0]]["run_dir"]]["t"]))
    fig, axes = plt.subplots(2 * len(keys), len(times), figsize=(1.8 * len(times), 1.8 * 2 * len(keys)), squeeze=False)
    for i, (dataset, model) in enumerate(keys):
        run = largest[(dataset, model)]
        states = run_set.tables[run["run_dir"]]
        for j, t in enumerate(times):
            at = states[states["t"] == t]
            samples, density = at[at["log_q"].isna()], at[at["log_q"].notna()]
            ax = axes[2 * i][j]
            ax.scatter(samples["x"], samples["y"], s=0.5, color="#1f77b4")
            limit = float(density["x"].abs().max()) if len(density) else 4.0
            ax.set(xlim=(-limit, limit), ylim=(-limit, limit), xticks=[], yticks=[])
            ax.set_aspect("equal")
            ax.set_title(f"t = {t:g}" if i == 0 else "", fontsize=8)
            if len(density):
                _density_image(axes[2 * i + 1][j], density, "log_q")
        label = f"{model_label(model)} ({_capacity(model)} = {run['units']})\n{dataset}"
        axes[2 * i][0].set_ylabel(f"{label}\nsamples", fontsize=7)
        axes[2 * i + 1][0].set_ylabel(f"{label}\ndensity", fontsize=7)
    fig.suptitle("Maximum likelihood (section 4, Figure 5's layout): noise (t = 0) to data (t = 1)", fontsize=9)
    return save_figure(fig, out_dir, "figure5")
