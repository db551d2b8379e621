"""Figures of the seed documents' own experiments, drawn as those documents draw them: the tutorial's
toy regression (fitted curves, random training sets, learning-rate sweeps) and its ECG confusion
matrices. Each as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from noderun.data.cubic import RegressionData, cubic_target
from noderun.plotting import save_figure  # importing the package selects the file-only backend
from noderun.plotting.registry import model_colour, model_label
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

TARGET_STYLE = {"color": "#1f3fbf", "lw": 2, "label": "target h(x) = x³ + 0.1x"}


def _target_and_points(ax, data: RegressionData | None, x: np.ndarray) -> None:
    ax.plot(x, cubic_target(pd.Series(x)).to_numpy(), **TARGET_STYLE)
    if data is not None:
        ax.plot(data.x_train[:, 0], data.y_train[:, 0], "o", color="#8e44ad", ms=5, label="training points")


def _fit_curve(curves: pd.DataFrame, fit: int) -> tuple[np.ndarray, np.ndarray]:
    curve = curves[curves["fit"] == fit]
    return curve["x"].to_numpy(), curve["prediction"].to_numpy()


def _fit_label(row: pd.Series, text: str) -> str:
    return f"{text}: diverged" if row["diverged"] else f"{text}: test MSE {row['test_mse']:.3g}"


def _models(fits: pd.DataFrame) -> list[str]:
    """Return the models the fits are of, in the order they were fitted."""
    return list(fits["model"].unique())


def cubic_fit_figure(fits: pd.DataFrame, curves: pd.DataFrame, data: RegressionData, out_dir: Path) -> list[Path]:
    """The tutorial's Figures 6-8: each model (ResNet, ODE-Net) fitted to the training points over the
    target, one panel each, and all of them in a last panel."""
    main = fits[fits["study"] == "main"]
    models = _models(main)
    panels = [([m], model_label(m)) for m in models] + [(models, "Comparison")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.4), sharey=True, squeeze=False)
    axes = axes[0]
    x = curves[curves["fit"] == main["fit"].iloc[0]]["x"].to_numpy()
    for ax, (shown, title) in zip(axes, panels):
        _target_and_points(ax, data, x)
        for _, row in main[main["model"].isin(shown)].iterrows():
            ax.plot(*_fit_curve(curves, row["fit"]), color=model_colour(row["model"], models.index(row["model"])),
                    lw=1.6, label=_fit_label(row, f"{model_label(row['model'])} (lr {row['lr']:g})"))
        ax.set(title=title, xlabel="x")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("y")
    return save_figure(fig, out_dir, "cubic_fit")


def cubic_random_sets_figure(fits: pd.DataFrame, curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The tutorial's Figures 9-10: each model trained on several random training sets, one curve each."""
    sets = fits[fits["study"] == "random_sets"]
    models = _models(sets)
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.4), sharey=True, squeeze=False)
    for index, (ax, model) in enumerate(zip(axes[0], models)):
        rows = sets[sets["model"] == model]
        x = curves[curves["fit"] == rows["fit"].iloc[0]]["x"].to_numpy()
        _target_and_points(ax, None, x)
        for i, (_, row) in enumerate(rows.iterrows()):
            ax.plot(*_fit_curve(curves, row["fit"]), color=model_colour(model, index), lw=1, alpha=0.8,
                    label=f"{model_label(model)}s on {len(rows)} random sets" if i == 0 else None)
        mse = rows["test_mse"]
        ax.set(title=f"{model_label(model)}: {len(rows)} sets of {rows['n_train'].iloc[0]} points; "
                     f"test MSE {mse.mean():.3g} ± {mse.std():.2g}", xlabel="x")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("y")
    return save_figure(fig, out_dir, "cubic_random_sets")


def cubic_lr_sweep_figure(fits: pd.DataFrame, curves: pd.DataFrame, losses: pd.DataFrame, data: RegressionData,
                          out_dir: Path) -> list[Path]:
    """The tutorial's Figures 11-12: per model, the fits at each learning rate (top) and their
    training MSE against iteration (bottom, log scale)."""
    sweep = fits[fits["study"] == "lr_sweep"]
    models = _models(sweep)
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8.5), squeeze=False)
    for column, model in enumerate(models):
        top, bottom = axes[0][column], axes[1][column]
        rows = sweep[sweep["model"] == model]
        x = curves[curves["fit"] == rows["fit"].iloc[0]]["x"].to_numpy()
        _target_and_points(top, data, x)
        for i, (_, row) in enumerate(rows.iterrows()):
            color = plt.cm.viridis(i / max(len(rows) - 1, 1))
            label = _fit_label(row, f"lr {row['lr']:g}")
            if not row["diverged"]:
                top.plot(*_fit_curve(curves, row["fit"]), color=color, lw=1.4, label=label)
            loss = losses[losses["fit"] == row["fit"]]
            bottom.semilogy(loss["iteration"], loss["train_mse"], color=color, lw=1.2, label=label)
        top.set(title=f"{model_label(model)} at each learning rate", xlabel="x", ylabel="y")
        bottom.set(title=f"{model_label(model)}: training MSE", xlabel="iteration (full-batch gradient step)",
                   ylabel="training MSE")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return save_figure(fig, out_dir, "cubic_lr_sweep")


def cubic_figures(fits: pd.DataFrame, curves: pd.DataFrame, losses: pd.DataFrame, data: RegressionData,
                  out_dir: Path) -> list[Path]:
    """Every cubic figure there are fits for: fitted curves, random sets, learning-rate sweeps."""
    paths = cubic_fit_figure(fits, curves, data, out_dir)
    if (fits["study"] == "random_sets").any():
        paths += cubic_random_sets_figure(fits, curves, out_dir)
    if (fits["study"] == "lr_sweep").any():
        paths += cubic_lr_sweep_figure(fits, curves, losses, data, out_dir)
    return paths


def ecg_loss_figure(metrics: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The tutorial's Figures 13-14: training and test cross entropy per epoch, one panel per model."""
    names = list(metrics["model"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False, sharey=True)
    for index, (ax, name) in enumerate(zip(axes[0], names)):
        rows = metrics[metrics["model"] == name]
        ax.plot(rows["epoch"], rows["train_loss"], "o-", ms=3, color=model_colour(name, index), label="training loss")
        ax.plot(rows["epoch"], rows["test_loss"], "s--", ms=3, color="black", label="test loss")
        last = rows.iloc[-1]
        ax.set(title=f"{model_label(name)}: test accuracy {100 * last['test_accuracy']:.2f} % after "
                     f"{last['epoch']} epochs", xlabel="epoch", ylabel="cross entropy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out_dir, "ecg_loss")


def _confusion_panel(ax, matrix: np.ndarray, title: str) -> None:
    # Colour by row share: the classes differ in size by a factor of 100 and raw counts would show class 0 alone.
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if share[i, j] > 0.6 else "black")
    ax.set(title=title, xlabel="predicted class", ylabel="true class", xticks=range(len(matrix)), yticks=range(len(matrix)))


def ecg_confusion_figure(matrices: dict, seed_document, out_dir: Path) -> list[Path]:
    """Confusion matrices, ours (top) and the tutorial's (bottom), one column per model; counts written
    in the cells, colour by the share of the true class."""
    names = list(matrices)
    fig, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 8.4), squeeze=False)
    for column, name in enumerate(names):
        _confusion_panel(axes[0][column], np.asarray(matrices[name]), f"{model_label(name)}, ours")
        theirs = seed_document.get(name)
        if theirs is not None:
            _confusion_panel(axes[1][column], np.asarray([list(r) for r in theirs.confusion]),
                             f"{model_label(name)}, the tutorial's")
        else:
            axes[1][column].axis("off")
    return save_figure(fig, out_dir, "ecg_confusion")


def ecg_figures(metrics: pd.DataFrame, matrices: dict, seed_document, out_dir: Path) -> list[Path]:
    """The ECG task's figures there is data for: losses per epoch, confusion matrices."""
    paths = ecg_loss_figure(metrics, out_dir) if len(metrics) else []
    if matrices:
        paths += ecg_confusion_figure({n: m.numpy() for n, m in matrices.items()}, seed_document, out_dir)
    return paths
