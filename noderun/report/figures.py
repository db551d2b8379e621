"""The report's figures: the training runs' accuracy and NFE curves and Figure 3's panels across
tolerances, each as PNG and PDF; and write_figures, which draws every figure the runs allow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from noderun.plotting import save_figure  # importing the package selects the file-only backend
from noderun.plotting.registry import is_ode_model, model_colour, model_label, model_rank
from noderun.report.collect import RunSet
from noderun.report.flows import figure4, figure5
from noderun.report.task_figures import table2_figures, tolerance_task_figures
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _curve_groups(run_set: RunSet) -> list[tuple[str, str, list[pd.DataFrame]]]:
    """Return (model, label, [metrics of each seed]) per table row, in the paper's model order."""
    done = run_set.completed
    if done.empty:  # only tasks (Table 2's runs, measurements): no training curves
        return []
    keys = ["model", *run_set.varying]
    groups = []
    for values, group in done.groupby(keys, dropna=False, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        model = values[0]
        extra = [f"{k.removeprefix('config.').split('.')[-1]}={v}" for k, v in zip(run_set.varying, values[1:]) if not pd.isna(v)]
        label = " ".join([model_label(model), *extra])
        metrics = [m for m in map(run_set.tables.get, group["run_dir"]) if m is not None and len(m)]
        if metrics:
            groups.append((model, label, metrics))
    return sorted(groups, key=lambda g: (model_rank(g[0]), g[1]))


def _mean_band(ax, frames: list[pd.DataFrame], column: str, scale: float, color: str, label: str, style: str = "-"):
    """Plot the mean over seeds of a per-epoch column with a band from the lowest to the highest seed."""
    epochs = min(len(f) for f in frames)
    values = np.stack([f[column].to_numpy(dtype=float)[:epochs] * scale for f in frames])
    x = np.arange(1, epochs + 1)
    ax.plot(x, values.mean(0), style, color=color, label=label, marker="o" if epochs < 10 else None, ms=3)
    if len(frames) > 1:
        ax.fill_between(x, values.min(0), values.max(0), color=color, alpha=0.2, linewidth=0)


def _epochs(groups: list[tuple[str, str, list[pd.DataFrame]]]) -> int:
    """Return the most epochs that every seed of some row reached (what the longest curve spans)."""
    return max(min(len(f) for f in frames) for _, _, frames in groups)


def _curves(ax, groups: list[tuple[str, str, list[pd.DataFrame]]], column: str, scale: float) -> None:
    """Plot each row's per-epoch column against the epoch, one colour per model, on integer epoch
    ticks; neighbouring rows get different line styles, so that curves lying on each other (two
    models' equal NFE, two settings of one model) still show."""
    for i, (model, label, frames) in enumerate(groups):
        _mean_band(ax, frames, column, scale, model_colour(model, i), label, ["-", "--", ":", "-."][i % 4])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _single_epoch_dots(ax, groups: list[tuple[str, str, list[pd.DataFrame]]], column: str, scale: float,
                       digits: int) -> None:
    """Plot each row's value after its one epoch as a labelled dot, rows side by side, with a bar from
    the lowest to the highest seed: a curve of one point per row says nothing against an epoch axis."""
    for i, (model, label, frames) in enumerate(groups):
        values = np.array([f[column].iloc[0] * scale for f in frames], dtype=float)
        mean = values.mean()
        ax.errorbar([i], [mean], yerr=[[mean - values.min()], [values.max() - mean]], fmt="o", ms=6, capsize=4,
                    color=model_colour(model, i), label=label)
        ax.annotate(f"{mean:.{digits}f}", (i, mean), xytext=(8, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xticks(range(len(groups)), [label for _, label, _ in groups], rotation=30 if len(groups) > 5 else 0,
                  fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_xlabel("after the only epoch")
    ax.margins(y=0.15)


def _per_epoch_panel(ax, groups: list[tuple[str, str, list[pd.DataFrame]]], column: str, scale: float,
                     digits: int) -> None:
    """Draw a per-epoch column of every row: curves against the epoch, or dots by row where no row
    has a second epoch (the quick preset's one epoch), which its tick labels name."""
    if _epochs(groups) == 1:
        _single_epoch_dots(ax, groups, column, scale, digits)
    else:
        _curves(ax, groups, column, scale)
    ax.grid(alpha=0.3)


def _legend_of_curves(ax, groups: list[tuple[str, str, list[pd.DataFrame]]]) -> None:
    """Add a legend where the panel holds curves; dots by row are named by their ticks."""
    if _epochs(groups) > 1:
        ax.legend(fontsize=8)


def _seed_note(groups: list[tuple[str, str, list[pd.DataFrame]]]) -> str:
    """Return what a figure's points and bands are, for its title."""
    shape = "bar" if _epochs(groups) == 1 else "band"
    return f"mean over seeds; {shape}: lowest to highest seed"


def accuracy_figure(run_set: RunSet, out_dir: Path) -> list[Path]:
    """Train and test accuracy per epoch, one panel each: mean over seeds, band = min..max; after a
    single epoch, one dot per row instead."""
    groups = _curve_groups(run_set)
    if not groups:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, column, title in zip(axes, ("train_acc", "test_acc"),
                                 ("training accuracy (on the training batches)", "test accuracy")):
        _per_epoch_panel(ax, groups, column, 100, 2)
        ax.set(title=title, ylabel="accuracy (%)")
    _legend_of_curves(axes[1], groups)  # one legend for both panels
    fig.suptitle(_seed_note(groups), fontsize=9)
    return save_figure(fig, out_dir, "accuracy")


def nfe_epoch_figure(run_set: RunSet, out_dir: Path) -> list[Path]:
    """Figure 3(d): forward NFE per training batch against epoch, for models with an ODE block; beside
    it, where the runs recorded it, the forward NFE per test batch after each epoch (never regularised)."""
    groups = [g for g in _curve_groups(run_set) if is_ode_model(g[0])]
    if not groups:
        return []
    evaluated = all("nfe_forward_eval" in f for _, _, frames in groups for f in frames)
    fig, axes = plt.subplots(1, 2 if evaluated else 1, figsize=(11 if evaluated else 6, 4.2), squeeze=False)
    panels = [("nfe_forward", "NFE forward during training (Fig. 3d)", "NFE forward (mean per training batch)"),
              ("nfe_forward_eval", "NFE forward at evaluation, after each epoch", "NFE forward (mean per test batch)")]
    for ax, (column, title, ylabel) in zip(axes[0], panels):
        _per_epoch_panel(ax, groups, column, 1, 1)
        ax.set(title=title, ylabel=ylabel)
    _legend_of_curves(axes[0][-1], groups)
    fig.suptitle(_seed_note(groups), fontsize=9)
    return save_figure(fig, out_dir, "nfe_forward_per_epoch")


def nfe_backward_figure(run_set: RunSet, out_dir: Path) -> list[Path]:
    """Figure 3(c): backward against forward NFE, one point per epoch, for adjoint runs."""
    groups = [g for g in _curve_groups(run_set) if is_ode_model(g[0])]
    points = [(model, label, pd.concat(frames)) for model, label, frames in groups]
    points = [(m, lab, f[f["nfe_backward"] > 0]) for m, lab, f in points]
    points = [p for p in points if len(p[2])]
    if not points:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    top = max(max(f["nfe_forward"].max(), f["nfe_backward"].max()) for _, _, f in points) * 1.1
    for i, (model, label, frame) in enumerate(points):
        ax.scatter(frame["nfe_forward"], frame["nfe_backward"], s=14, color=model_colour(model, i), label=label, alpha=0.8)
    ax.plot([0, top], [0, top], color="black", lw=0.8, ls="--", label="NFE-B = NFE-F")
    ax.plot([0, top], [0, top / 2], color="black", lw=0.8, ls=":", label="NFE-B = NFE-F / 2 (paper)")
    ax.set(title="Backward vs forward NFE (Fig. 3c)", xlabel="NFE forward (mean per batch, one point per epoch)",
           ylabel="NFE backward (adjoint, mean per batch)", xlim=(0, top), ylim=(0, top))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir, "nfe_backward_vs_forward")


def tolerance_figures(run_set: RunSet, out_dir: Path) -> list[Path]:
    """Figures 3(a) and 3(b) from runs that differ in tolerance: NFE against test error and against
    time per evaluation forward pass, one point per run (final epoch)."""
    done = run_set.completed
    tolerance_keys = [k for k in run_set.varying if k in ("config.solver.rtol", "config.solver.atol")]
    done = done[done["model"].map(is_ode_model)] if tolerance_keys else done.iloc[0:0]
    if done.empty:
        return []
    rows = []
    for _, run in done.iterrows():
        metrics = run_set.tables.get(run["run_dir"])
        if metrics is not None and len(metrics):
            last = metrics.iloc[-1]
            per_batch = last.get("test_forward_s", np.nan)
            rows.append((run["model"], run.get("rtol"), last["nfe_forward_eval"], 100 * (1 - last["test_acc"]), per_batch))
    if not rows:
        return []
    frame = pd.DataFrame(rows, columns=["model", "rtol", "nfe", "test_error", "forward_s"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (model, group) in enumerate(frame.groupby("model")):
        color = model_colour(model, i)
        axes[0].scatter(group["nfe"], group["test_error"], color=color, label=model_label(model))
        axes[1].scatter(group["nfe"], 1000 * group["forward_s"], color=color, label=model_label(model))
        for _, r in group.iterrows():
            tol = "tol -" if pd.isna(r["rtol"]) else f"tol {r['rtol']:g}"
            axes[0].annotate(tol, (r["nfe"], r["test_error"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes[0].set(title="NFE vs test error across tolerances (cf. Fig. 3a)", xlabel="NFE forward (evaluation, per batch)",
                ylabel="test error (%)")
    axes[1].set(title="NFE vs time per forward pass (Fig. 3b)", xlabel="NFE forward (evaluation, per batch)",
                ylabel="wall time per test-batch forward pass (ms)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out_dir, "tolerance_nfe")


def write_figures(run_set: RunSet, out_dir: Path) -> list[Path]:
    """Draw every figure the runs allow; return the files written."""
    paths: list[Path] = []
    for draw in (accuracy_figure, nfe_epoch_figure, nfe_backward_figure, tolerance_figures, tolerance_task_figures,
                 table2_figures, figure4, figure5):
        paths += draw(run_set, out_dir)
    return paths
