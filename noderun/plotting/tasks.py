"""Figures of the measurement experiments: memory against depth, the adjoint's gradient error,
Figure 3(a)-(c) across solver tolerances and the solvers' accuracy; each as PNG and PDF, one colour
per model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from noderun.plotting import save_figure  # importing the package selects the file-only backend
from noderun.plotting.registry import is_ode_model, model_colour, model_label
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: E402


def _depth_meaning(model: str, rows: pd.DataFrame) -> str:
    """Return what depth counts for a model in memory.csv, for its legend. Read from the rows: only
    the adjoint evaluates the dynamics again in the backward pass (NFE backward above zero)."""
    if not is_ode_model(model):
        return "residual blocks"
    return "solver steps, adjoint" if (rows["nfe_backward"] > 0).any() else "solver steps, backprop through them"


def memory_figure(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Memory of one training step against depth, one line per model (memory.csv's rows): the MiB
    saved for the backward pass and, where measured (CUDA), the allocator's peak."""
    panels = [("saved_mb", "saved for the backward pass (MiB)")]
    if table["cuda_peak_mb"].notna().any():
        panels.append(("cuda_peak_mb", "CUDA allocator peak during the step (MiB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 4.4), squeeze=False)
    for ax, (column, label) in zip(axes[0], panels):
        for index, (model, group) in enumerate(table.groupby("model", sort=False)):
            ax.plot(group["depth"], group[column], "o-", color=model_colour(model, index), ms=4,
                    label=f"{model_label(model)} ({_depth_meaning(model, group)})")
        # Linear axes: linear growth shows as a straight line, constant memory as a flat one.
        ax.set(xlim=(0, None), ylim=(0, None), xlabel="depth n (solver steps on [0, 1], or residual blocks)", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    method, batch = table["method"].dropna().iloc[0], table["batch_size"].iloc[0]
    fig.suptitle(f"Memory of one training step against depth ({method}, batch of {batch})", fontsize=10)
    return save_figure(fig, out_dir, "memory")


def gradcheck_figure(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Relative error of the adjoint's gradient against backpropagation, per parameter tensor (points)
    and over all of them (dashed line), one colour per solver case. Tensors whose two gradients agree
    exactly (the head's, after the ODE block) sit on a floor below the smallest non-zero error."""
    tensors = table[table["parameter"] != "all"]
    nonzero = tensors["rel_error"][tensors["rel_error"] > 0]
    floor = nonzero.min() / 10 if len(nonzero) else 1e-16
    fig, ax = plt.subplots(figsize=(9, 5))
    names = []
    for i, (case, group) in enumerate(table.groupby("case", sort=False)):
        color = plt.cm.tab10((i + 4) % 10)  # past the model colours, which mean models elsewhere
        overall = group[group["parameter"] == "all"]["rel_error"].iloc[0]
        per_tensor = group[group["parameter"] != "all"]
        names = list(per_tensor["parameter"])
        x, errors = np.arange(len(per_tensor)), per_tensor["rel_error"].to_numpy()
        exact = errors == 0
        ax.semilogy(x[~exact], errors[~exact], "o", ms=4, color=color,
                    label=f"{case} ({group['method'].iloc[0]}): overall {overall:.2g}")
        ax.semilogy(x[exact], np.full(exact.sum(), floor), "x", ms=5, color=color)
        ax.axhline(overall, color=color, ls="--", lw=0.8)
    ax.plot([], [], "x", color="gray", label="exactly equal (drawn at the floor)")
    ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=6)
    ax.set(title="Adjoint gradients against backpropagation through the same solver",
           xlabel="parameter tensor", ylabel="relative error ||g_adj - g_bp|| / ||g_bp||")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir, "gradcheck")


def figure3_abc(tables: list[tuple[str, str, pd.DataFrame]], out_dir: Path) -> list[Path]:
    """Figure 3(a)-(c) from tolerance.csv tables, given as (label, model, table): NFE forward against
    the ODE block's numerical error and against time per forward pass, and NFE backward against
    NFE forward, one point per tolerance."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    top = 1.1 * max(max(t["nfe_forward_train"].max(), t["nfe_backward"].max()) for _, _, t in tables)
    for i, (label, model, table) in enumerate(tables):
        style = {"color": model_colour(model, i), "marker": ["o", "s", "^", "D"][i % 4],
                 "ms": 4, "label": label}
        axes[0].loglog(table["nfe_forward_error_batch"], table["block_error"], **style)
        axes[1].plot(table["nfe_forward"], 1000 * table["forward_s"], ls="none", **style)
        axes[2].plot(table["nfe_forward_train"], table["nfe_backward"], ls="none", **style)
        for _, row in table.iterrows():
            axes[0].annotate(f"{row['tol']:g}", (row["nfe_forward_error_batch"], row["block_error"]), fontsize=6,
                             xytext=(3, 3), textcoords="offset points")
    axes[2].plot([0, top], [0, top / 2], color="black", lw=0.8, ls=":", label="NFE-B = NFE-F / 2 (paper)")
    # Plain numbers on the log NFE axis; matplotlib's minor labels (3x10^1 ...) overlap.
    axes[0].xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axes[0].xaxis.set_major_formatter(ScalarFormatter())
    axes[0].xaxis.set_minor_formatter(NullFormatter())
    axes[0].set(title="(a) NFE forward vs numerical error", xlabel="NFE forward (one test batch)",
                ylabel="relative error of the ODE block's output")
    axes[1].set(title="(b) NFE forward vs time", xlabel="NFE forward (mean per test batch)",
                ylabel="wall time per forward pass of a test batch (ms)")
    axes[2].set(title="(c) NFE forward vs NFE backward", xlabel="NFE forward (one training batch)",
                ylabel="NFE backward (adjoint, same batch)", xlim=(0, top), ylim=(0, top))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Statistics of a trained ODE-Net across solver tolerances (labels in (a): tolerance)", fontsize=10)
    return save_figure(fig, out_dir, "figure3_tolerance")


# The test equation and its solution as the figure writes them (matplotlib's mathtext).
TEST_EQUATION = r"$y' = y - \frac{1}{2} e^{t/2} \sin 5t + 5 e^{t/2} \cos 5t$, $y(0) = 0$"
EXACT_SOLUTION = r"exact: $y = e^{t/2} \sin 5t$"


def solver_accuracy_figure(exact: tuple, times, curves: dict, table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Left: chosen solvers' solutions at `times` against the exact one, given as (fine times, values)
    (the seed document's Figure 2). Right: maximum error against NFE for every solver and step size
    or tolerance, its legend outside the panel (a dozen solvers would hide the lines)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.5, 4.6), width_ratios=(1, 1.15))
    left.plot(*exact, color="black", lw=2, label=EXACT_SOLUTION)
    for i, (label, solution) in enumerate(curves.items()):
        left.plot(times, solution, "o--", ms=2.5, color=plt.cm.tab10((i + 4) % 10), lw=1, label=label)
    # Two short lines: the equation on one line ran into the right panel.
    left.set(title=f"Solutions of the test equation\n{TEST_EQUATION}", xlabel="t", ylabel="y(t)")
    left.legend(fontsize=7)
    for i, (method, group) in enumerate(table.groupby("method", sort=False)):
        right.loglog(group["nfe"], group["max_abs_error"].clip(lower=1e-17), "o-", ms=4,
                     color=plt.cm.tab20(i % 20), label=method)
    # A diverged solver (explicit_adams at large steps reaches 1e14) would flatten every other line.
    right.set_ylim(top=min(right.get_ylim()[1], 1e3))
    right.set(title="Accuracy against cost\n(points: step sizes or tolerances)", xlabel="NFE",
              ylabel="max. absolute error on the output grid (cut at 1e3)")
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return save_figure(fig, out_dir, "solver_accuracy")
