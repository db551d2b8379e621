"""noderun-report in-process over run directories built by hand: Tables 1 and 2 from good runs, and
every kind of broken or hostile run file listed in not_completed.txt instead of stopping the report.
No subprocess, no MNIST: each test takes well under a second or two."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
from omegaconf import OmegaConf

from noderun.data.cubic import make_cubic_data
from noderun.models import MODELS
from noderun.plotting import seeds as plotting_seeds
from noderun.plotting import tasks as plotting_tasks
from noderun.records import PREDICTIONS_FILE
from noderun.report import figures as report_figures
from noderun.report.cli import build_report, main
from noderun.report.collect import collect_runs

PACKAGE = Path(__file__).resolve().parents[1] / "noderun"
ODE = {"rknet", "odenet", "latent_ode"}


# ---- run directories as noderun writes them ------------------------------------------------------------


def train_config(model: str, seed: int) -> dict:
    """A training run's .hydra/config.yaml (the composed config, as Hydra saves it)."""
    return {"task": "train", "ckpt": None, "seed": seed, "device": "auto", "resume": False, "threads": None,
            "deterministic": True, "speed": {"rk_stages": True}, "paths": {"output_root": "outputs"},
            "solver": {"method": "dopri5", "rtol": 0.001, "atol": 0.001, "step_size": None,
                       "adjoint_norm": "default", "max_num_steps": None},
            "dataset": {"name": "mnist", "root": "/data", "train_size": 256, "val_size": 128, "test_size": 256,
                        "augment": False, "crop_padding": 4},
            "trainer": {"epochs": 2, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0,
                        "lr_decay_fractions": [0.375, 0.625, 0.875], "lr_decay_factor": 0.1,
                        "eval_batch_size": 256, "progress": False, "measure_step": True},
            "model": {"name": model, **({"downsampling": "conv", "t1": 1.0, "adjoint": True} if model in ODE else {})}}


def train_summary(model: str, seed: int, test_error: float, epochs: int = 2) -> dict:
    """A completed training run's summary.json, with the keys noderun.run writes."""
    ode = model in ODE
    return {"task": "train", "model": model, "solver": "dopri5" if ode else None, "rtol": 0.001 if ode else None,
            "atol": 0.001 if ode else None, "step_size": None, "adjoint": ode,
            "adjoint_norm": "default" if ode else None,
            "downsampling": "conv", "seed": seed, "dataset": "mnist", "train_size": 256, "val_size": 128,
            "test_size": 256, "device": "cpu", "torch_version": "2.4.0", "python_version": "3.11.7",
            "params": 208266 if ode else 238510, "epochs": epochs, "epochs_done": epochs, "best_epoch": epochs,
            "selected_by": "val_acc", "test_error": test_error, "val_error": test_error + 0.5,
            "final_test_error": test_error, "nfe_forward": 26.0 + seed if ode else 0.0,
            "nfe_backward": 32.0 + seed if ode else 0.0, "nfe_forward_eval": 26.0 if ode else 0.0,
            "train_time_s": 12.0 + seed, "peak_memory_mb": 500.0 + 10 * seed, "peak_memory_kind": "cpu_max_rss",
            "saved_mb": 3.5, "flops_per_step": 1.2e9, "achieved_gflops": 2.0, "status": "completed",
            "reason": None, "run_key": f"{model}{seed}", "overrides": [f"model={model}", f"seed={seed}"],
            "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00"}


def metrics_rows(epochs: int, ode: bool, final_acc: float) -> list[dict]:
    """metrics.csv's rows, one per epoch, with the columns a training run writes."""
    return [{"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "train_acc": final_acc - 0.01 * (epochs - e),
             "val_acc": final_acc, "test_acc": final_acc - 0.005 * (epochs - e), "nfe_forward": 26.0 if ode else 0.0,
             "nfe_backward": 32.0 if ode else 0.0, "nfe_forward_eval": 26.0 if ode else 0.0,
             "test_forward_s": 0.05, "epoch_time_s": 6.0, "eval_time_s": 1.0, "peak_memory_mb": 500.0,
             "saved_mb": 3.5, "flops_per_step": 1.2e9} for e in range(1, epochs + 1)]


def write_run(run_dir: Path, summary: dict, metrics: list[dict] | None, config: dict) -> Path:
    """Write summary.json, metrics.csv and .hydra/config.yaml into run_dir; return run_dir."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if metrics is not None:
        pd.DataFrame(metrics).to_csv(run_dir / "metrics.csv", index=False)
    OmegaConf.save(OmegaConf.create(config), run_dir / ".hydra" / "config.yaml")
    return run_dir


def train_run(root: Path, name: str, model: str, seed: int, test_error: float) -> Path:
    """A completed two-epoch training run under root/name."""
    return write_run(root / name, train_summary(model, seed, test_error), metrics_rows(2, model in ODE,
                     1 - test_error / 100), train_config(model, seed))


def sequence_summary(model: str, seed: int, n_obs: int, rmse: float) -> dict:
    """A completed Table-2 run's summary.json, with the keys the time-series experiment writes."""
    ode = model == "latent_ode"
    return {"task": "timeseries", "status": "completed", "reason": None, "device": "cpu", "torch_threads": 1,
            "seed": seed, "dataset": "spirals", "torch_version": "2.4.0", "python_version": "3.11.7",
            "files": ["metrics.csv", "last.pt", PREDICTIONS_FILE], "time_s": 3.0, "model": model, "n_obs": n_obs,
            "n_points": 100, "train_size": 32, "test_size": 8, "params": 3000 if ode else 2500,
            "solver": "dopri5" if ode else None, "rtol": 0.001 if ode else None, "atol": 0.001 if ode else None,
            "adjoint": False if ode else None, "peak_memory_kind": "cpu_max_rss", "epochs_done": 2,
            "train_time_s": 2.0, "test_rmse": rmse, "test_rmse_observed": rmse / 2,
            "test_rmse_unobserved": rmse / 3 if ode else None, "nfe_forward": 30.0 if ode else 0.0,
            "nfe_backward": 0.0, "nfe_forward_eval": 30.0 if ode else 0.0, "train_loss": 1.5,
            "peak_memory_mb": 300.0, "key_config": {"model": {"name": model}},
            "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00"}


def predictions(trajectories: int = 2) -> pd.DataFrame:
    """A spiral_predictions.csv: truth, observations and predictions of a few test spirals."""
    rows = []
    for i in range(trajectories):
        for k in range(8):
            t = 0.1 * k
            rows.append({"trajectory": i, "k": k, "t": t, "in_window": k < 4, "observed": k in (0, 2, 3),
                         "clockwise": bool(i % 2), "true_x": math.cos(t), "true_y": math.sin(t), "noisy_x": math.cos(t),
                         "noisy_y": math.sin(t), "pred_x": math.cos(t) + 0.1 if k != 1 else math.nan,
                         "pred_y": math.sin(t)})
    return pd.DataFrame(rows)


def sequence_run(root: Path, name: str, model: str, seed: int, n_obs: int, rmse: float) -> Path:
    """A completed Table-2 run under root/name, with its spiral predictions."""
    config = {"task": "timeseries", "seed": seed, "threads": 1, "dataset": {"name": "spirals", "n_obs": n_obs},
              "model": {"name": model, "cell": "gru", "adjoint": False, "plot_spirals": 2}}
    metrics = [{"epoch": e, "train_loss": 1.5, "nfe_forward": 30.0, "nfe_backward": 0.0, "nfe_forward_eval": 30.0,
                "test_rmse": rmse, "test_rmse_observed": rmse / 2, "test_rmse_unobserved": None,
                "epoch_time_s": 1.0, "peak_memory_mb": 300.0} for e in (1, 2)]
    run_dir = write_run(root / name, sequence_summary(model, seed, n_obs, rmse), None, config)
    pd.DataFrame(metrics).to_csv(run_dir / "metrics.csv", index=False)
    predictions().to_csv(run_dir / PREDICTIONS_FILE, index=False)
    return run_dir


def report_on(root: Path) -> tuple[str, Path]:
    """Build the report over root into root/report; return the printed text and the folder."""
    text, _ = build_report([root], root / "report")
    return text, root / "report"


def not_completed(out: Path) -> list[str]:
    """Return the lines of the report's not_completed.txt."""
    return (out / "not_completed.txt").read_text().splitlines()


# ---- Table 1 from good runs ------------------------------------------------------------------------------


@pytest.fixture
def good_table1(tmp_path) -> Path:
    """Two ODE-Net seeds and one MLP run."""
    train_run(tmp_path, "0", "odenet", 0, 0.80)
    train_run(tmp_path, "1", "odenet", 1, 1.20)
    train_run(tmp_path, "2", "mlp", 0, 2.50)
    return tmp_path


def test_table1_holds_means_over_seeds_in_the_registry_order_with_the_papers_figures(good_table1):
    text, out = report_on(good_table1)
    table = pd.read_csv(out / "table1.csv")
    assert table["model"].tolist() == [MODELS["mlp"].label, MODELS["odenet"].label]  # the registry's row order
    odenet = table.set_index("model").loc[MODELS["odenet"].label]
    assert odenet["seeds"] == 2
    assert odenet["test_error_mean"] == pytest.approx(1.0)
    assert odenet["test_error_std"] == pytest.approx(statistics.stdev([0.8, 1.2]), abs=1e-4)
    assert odenet["nfe_forward"] == pytest.approx(26.5) and odenet["nfe_backward"] == pytest.approx(32.5)
    assert odenet["train_time_per_epoch_s"] == pytest.approx((12 / 2 + 13 / 2) / 2)
    assert odenet["paper_test_error"] == MODELS["odenet"].paper["test_error"]
    mlp = table.set_index("model").loc[MODELS["mlp"].label]
    assert math.isnan(mlp["nfe_forward"]) and mlp["paper_test_error"] == MODELS["mlp"].paper["test_error"]
    assert not_completed(out) == []
    assert "3 completed, 0 failed, 0 interrupted, 0 running, 0 unreadable" in text
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "nfe_forward_per_epoch.pdf").exists()


def test_summary_lists_and_objects_are_left_out_of_the_tables(good_table1):
    summary_path = good_table1 / "0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary.update(key_config={"model": {"name": "odenet"}}, files=["metrics.csv", "last.pt"])
    summary_path.write_text(json.dumps(summary))
    _, out = report_on(good_table1)
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 3 and not {"key_config", "files", "overrides"} & set(runs.columns)
    assert pd.read_csv(out / "table1.csv").set_index("model").loc[MODELS["odenet"].label, "seeds"] == 2


def test_runs_from_before_and_after_speed_rk_stages_was_retired_share_a_row_unless_their_path_differs(tmp_path):
    """An older run's config has speed.rk_stages and no solver.path (it solved on torchdiffeq): read as
    today's config would say it, it differs from a torchdiffeq run of today in nothing, and from a run
    on the device path in solver.path alone."""
    train_run(tmp_path, "old", "odenet", 0, 0.80)  # train_config: speed.rk_stages, no solver.path
    today = train_config("odenet", 1)
    del today["speed"]
    today["solver"]["path"] = "torchdiffeq"
    write_run(tmp_path / "today", train_summary("odenet", 1, 1.20), metrics_rows(2, True, 0.988), today)
    runs = collect_runs([tmp_path])
    assert runs.varying == [] and "config.speed.rk_stages" not in runs.runs.columns
    assert set(runs.runs["config.solver.path"]) == {"torchdiffeq"}
    device = {**today, "solver": {**today["solver"], "path": "device"}}
    write_run(tmp_path / "device", train_summary("odenet", 2, 1.0), metrics_rows(2, True, 0.99), device)
    assert collect_runs([tmp_path]).varying == ["config.solver.path"]


def test_a_failed_run_is_listed_on_one_line_with_its_reason_and_left_out(good_table1):
    reason = "loss became nan;\ntry a smaller lr\x1b[2J"  # two lines and a terminal escape
    failed = train_summary("odenet", 2, 0.5) | {"status": "failed", "reason": reason, "test_error": None}
    write_run(good_table1 / "3", failed, None, train_config("odenet", 2))
    text, out = report_on(good_table1)
    (line,) = not_completed(out)
    assert line.startswith(f"{good_table1 / '3'}: failed (loss became nan; try a smaller lr")
    assert "\x1b" not in line and "\x1b" not in text
    assert pd.read_csv(out / "table1.csv").set_index("model").loc[MODELS["odenet"].label, "seeds"] == 2
    assert "3 completed, 1 failed" in text


def test_table1_memory_is_saved_for_backward_with_the_devices_peak_beside_it_under_its_kind(good_table1):
    _, out = report_on(good_table1)
    assert pd.read_csv(out / "table1.csv")["saved_mb"].tolist() == [3.5, 3.5]
    header = (out / "table1.md").read_text().splitlines()[0]
    assert "| saved for backward (MiB) | peak RSS MiB (process, CPU) |" in header
    edit_json("summary.json", lambda s: s.update(peak_memory_kind="cuda_max_allocated"))(good_table1 / "0")
    edit_json("summary.json", lambda s: s.pop("saved_mb"))(good_table1 / "2")  # an older run
    _, out = report_on(good_table1)
    lines = (out / "table1.md").read_text().splitlines()
    assert "| saved for backward (MiB) | peak MiB (mixed: RSS, CUDA) |" in lines[0]
    assert "| - | 500 (RSS) |" in lines[2] and "| 3.5 | 505 (RSS+CUDA) |" in lines[3]


def wide_table1_runs(root: Path) -> Path:
    """Two seeds of every Table-1 model, their table as wide as a real one gets: the ODE models with
    three-digit NFE, every model with four-digit seconds per epoch and hundreds of MiB saved."""
    for model in (name for name, entry in MODELS.items() if entry.table == 1):
        for seed in (0, 1):
            wide = {"train_time_s": 3000.0, "saved_mb": 215.25,
                    **({"nfe_forward": 128.0, "nfe_backward": 196.0} if model in ODE else {})}
            edit_json("summary.json", lambda s: s.update(wide))(train_run(root, f"{model}{seed}", model, seed,
                                                                          0.5 + seed))
    return root


def tabular_lines(tex: str) -> list[str]:
    """Return the rows of table1.tex between \\midrule and \\bottomrule, each without its comment."""
    body = tex[tex.index(r"\midrule") + len(r"\midrule"):tex.index(r"\bottomrule")]
    return [line.split(r"\\")[0].strip() for line in body.strip().splitlines()]


def test_table1_tex_is_the_papers_layout_with_escaped_text_and_rounded_numbers(good_table1):
    _, out = report_on(good_table1)
    tex = (out / "table1.tex").read_text()
    assert tex.startswith("%") and r"\usepackage{booktabs}" in tex.splitlines()[1]
    assert r"Model & \% (paper) & M & MiB & s/epoch & F/B \\" in tex
    odenet = MODELS["odenet"].paper["test_error"]
    std = statistics.stdev([0.8, 1.2])
    assert tabular_lines(tex) == [
        rf"{MODELS['mlp'].label} & 2.50 ({MODELS['mlp'].paper['test_error']:.2f}) & 0.24 & 3.5 & 6.0 & --",
        rf"{MODELS['odenet'].label} & 1.00$\pm${std:.2f} ({odenet:.2f}) & 0.21 & 3.5 & 6.2 & 26/32"]
    assert tex.count(r"\\ % 2 seeds") == 1 and tex.count(r"\\ % 1 seed") == 1
    wide = tabular_lines((report_on(wide_table1_runs(good_table1.parent / "wide"))[1] / "table1.tex").read_text())
    assert next(line for line in wide if line.startswith(MODELS["odenet"].label + " &")) \
        .split(" & ")[2:] == ["0.21", "215", "1500", "128/196"]


def test_table1_tex_names_the_settings_that_tell_rows_apart_escaped(good_table1):
    edit_text(".hydra/config.yaml", lambda t: t.replace("method: dopri5", "method: explicit_adams"))(good_table1 / "1")
    _, out = report_on(good_table1)
    tex = (out / "table1.tex").read_text()
    rows = tabular_lines(tex)
    assert [row.split(" & ")[0] for row in rows] == [MODELS["mlp"].label,
                                                     rf"{MODELS['odenet'].label} (dopri5)",
                                                     rf"{MODELS['odenet'].label} (explicit\_adams)"]
    assert "% In parentheses after a model: solver.method." in tex
    assert not re.search(r"(?<!\\)[_%#&]|±", "".join(row.replace(" & ", "") for row in rows))


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed: table1.tex not compiled")
def test_table1_tex_compiles_and_fits_one_column_of_a_two_column_paper(tmp_path):
    _, out = report_on(wide_table1_runs(tmp_path / "runs"))
    shutil.copy(out / "table1.tex", tmp_path / "table1.tex")
    (tmp_path / "paper.tex").write_text("\n".join([
        r"\documentclass{article}", r"\usepackage{booktabs}", r"\begin{document}", r"\input{table1.tex}",
        r"\sbox0{\input{table1.tex}}\typeout{TABLE WIDTH: \the\wd0}", r"\end{document}"]))
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert result.returncode == 0, log[-3000:]
    width = float(re.search(r"TABLE WIDTH: ([\d.]+)pt", log).group(1))
    assert width <= 242, f"table1.tex is {width}pt wide, more than 3.35 in"
    assert "Overfull" not in log


@pytest.fixture
def report_drawn(monkeypatch) -> list:
    """Collect the figures the report would save, instead of writing them."""
    figures: list = []
    monkeypatch.setattr(report_figures, "save_figure", lambda fig, out_dir, name: figures.append(fig) or [])
    return figures


@pytest.mark.parametrize("epochs", [1, 2, 12])
def test_accuracy_figure_reads_well_at_any_number_of_epochs(report_drawn, tmp_path, epochs):
    for seed, (model, error) in enumerate((("mlp", 2.5), ("odenet", 1.0))):
        write_run(tmp_path / model, train_summary(model, seed, error, epochs),
                  metrics_rows(epochs, model in ODE, 1 - error / 100), train_config(model, seed))
    report_figures.accuracy_figure(collect_runs([tmp_path]), tmp_path)
    test_panel = report_drawn[0].axes[1]
    ticks = [t.get_text() for t in test_panel.get_xticklabels()]
    if epochs == 1:  # one dot per model, named on the axis, its value written beside it
        assert ticks == [MODELS["mlp"].label, MODELS["odenet"].label]
        assert [t.get_text() for t in test_panel.texts] == ["97.50", "99.00"]
    else:  # curves against whole epochs
        assert all(float(t).is_integer() for t in test_panel.get_xticks() if 1 <= t <= epochs)
        assert test_panel.get_legend() is not None and test_panel.get_xlabel() == "epoch"


def test_solver_accuracy_panels_keep_their_titles_to_themselves(drawn, tmp_path):
    times = pd.Series([0.0, 0.5, 1.0])
    table = pd.DataFrame([{"method": m, "nfe": n, "max_abs_error": e} for m in ("euler", "dopri5")
                          for n, e in ((10, 1.0), (100, 1e-3))])
    plotting_tasks.solver_accuracy_figure((times, times), times, {"euler, h = 0.5": times}, table, tmp_path)
    fig = drawn[0]
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    left, right = fig.axes
    assert left.title.get_window_extent(renderer).x1 < right.get_tightbbox(renderer).x0


# ---- every kind of broken Table-1 run beside a good one -------------------------------------------------


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Return a breaker that calls change(object) on the JSON object in run_dir/name and writes it back."""
    def breaker(run_dir: Path) -> None:
        value = json.loads((run_dir / name).read_text())
        change(value)
        (run_dir / name).write_text(json.dumps(value))
    return breaker


def write(name: str, content: str | bytes) -> Callable[[Path], None]:
    """Return a breaker that replaces run_dir/name with content."""
    def breaker(run_dir: Path) -> None:
        path = run_dir / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return breaker


def edit_text(name: str, change: Callable[[str], str]) -> Callable[[Path], None]:
    """Return a breaker that replaces the text of run_dir/name with change(text)."""
    def breaker(run_dir: Path) -> None:
        (run_dir / name).write_text(change((run_dir / name).read_text()))
    return breaker


def metrics_cell(column: str, value: str) -> Callable[[Path], None]:
    """Return a breaker that puts value into the last row's cell of column in metrics.csv."""
    def breaker(run_dir: Path) -> None:
        frame = pd.read_csv(run_dir / "metrics.csv", dtype=str)
        frame.loc[len(frame) - 1, column] = value
        frame.to_csv(run_dir / "metrics.csv", index=False)
    return breaker


def remove(name: str) -> Callable[[Path], None]:
    """Return a breaker that deletes run_dir/name."""
    return lambda run_dir: (run_dir / name).unlink()


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9))

BROKEN_TABLE1 = {
    "summary missing": (remove("summary.json"), "summary.json is missing"),
    "summary cut mid-write": (edit_text("summary.json", lambda s: s[:40]),
                              "summary.json is not JSON (JSONDecodeError"),
    "summary is a list": (write("summary.json", "[1, 2]"), "summary.json holds a list, not a noderun summary"),
    "summary is binary": (write("summary.json", bytes(range(256)) * 4),
                          "summary.json is not text (binary data?)"),
    "summary is huge": (write("summary.json", "{" + " " * (2 << 20) + "}"), "summary.json is larger than 1024 KiB"),
    "summary nests deeply": (write("summary.json", "[" * 200_000), "RecursionError"),
    "summary is a folder": (lambda d: ((d / "summary.json").unlink(), (d / "summary.json").mkdir()),
                            "summary.json is a directory, not a regular file"),
    "no status": (edit_json("summary.json", lambda s: s.pop("status")), "lacks 'status'"),
    "unknown status": (edit_json("summary.json", lambda s: s.update(status="done")), "'status' is 'done'"),
    "no model": (edit_json("summary.json", lambda s: s.pop("model")), "lacks 'model'"),
    "no test_error": (edit_json("summary.json", lambda s: s.pop("test_error")), "lacks 'test_error'"),
    "test_error is text": (edit_json("summary.json", lambda s: s.update(test_error="0.9%")),
                           "'test_error' is '0.9%', not a number"),
    "params is a bool": (edit_json("summary.json", lambda s: s.update(params=True)), "'params' is True"),
    "no epochs": (edit_json("summary.json", lambda s: s.update(epochs_done=0)), "'epochs_done' is 0"),
    "nfe is text": (edit_json("summary.json", lambda s: s.update(nfe_forward="many")), "'nfe_forward' is 'many'"),
    "task is a number": (edit_json("summary.json", lambda s: s.update(task=3)), "'task' is 3, not text"),
    "metrics cell is text": (metrics_cell("test_acc", "0.9x"), "'test_acc' holds '0.9x' in data row 2"),
    "metrics cell is infinite": (metrics_cell("nfe_forward", "inf"), "'nfe_forward' holds 'inf'"),
    "metrics column missing": (edit_text("metrics.csv", lambda s: s.replace("train_acc", "accuracy", 1)),
                               "metrics.csv lacks the column train_acc"),
    "metrics empty": (write("metrics.csv", ""), "metrics.csv is not a CSV table"),
    "metrics header only": (edit_text("metrics.csv", lambda s: s.splitlines()[0] + "\n"), "metrics.csv has no rows"),
    "metrics cut mid-row": (edit_text("metrics.csv", lambda s: s[:s.rindex("\n", 0, -1) + 12]),
                            "is empty in data row 2"),
    "metrics lost a row": (edit_text("metrics.csv", lambda s: "\n".join(s.splitlines()[:2]) + "\n"),
                           "metrics.csv has 1 epoch rows where summary.json reports 2 epochs"),
    "metrics too many fields": (edit_text("metrics.csv", lambda s: s + "1,2,3" + ",9" * 20 + "\n"),
                                "metrics.csv is not a CSV table"),
    "metrics binary": (write("metrics.csv", b"\x00\xff\xfe" * 100), "metrics.csv is not text"),
    "metrics missing": (remove("metrics.csv"), "metrics.csv is missing"),
    "config not YAML": (write(".hydra/config.yaml", "model: [odenet\n  seed: {"), "config.yaml is not YAML"),
    "config binary": (write(".hydra/config.yaml", bytes(range(128, 256))), "config.yaml is not text"),
    "config a list": (write(".hydra/config.yaml", "- 1\n- 2\n"), "config.yaml holds a list, not a mapping"),
    "config a scalar": (write(".hydra/config.yaml", "5\n"), "config.yaml is not a config"),
    "config billion laughs": (write(".hydra/config.yaml", BILLION_LAUGHS), "config.yaml uses YAML aliases"),
    "config reference text": (edit_text(".hydra/config.yaml", lambda s: s + "reference:\n  source: x\n  error:\n"
                                        "    odenet: lots\n"), "reference.error.odenet is 'lots', not a number"),
}


@pytest.mark.parametrize("case", list(BROKEN_TABLE1))
def test_a_broken_training_run_is_listed_and_the_report_is_written_from_the_good_one(tmp_path, case):
    breaker, reason = BROKEN_TABLE1[case]
    train_run(tmp_path, "good", "mlp", 0, 2.5)
    broken = train_run(tmp_path, "broken", "odenet", 0, 0.8)
    breaker(broken)
    text, out = report_on(tmp_path)
    table = pd.read_csv(out / "table1.csv")
    assert table["model"].tolist() == [MODELS["mlp"].label] and table["test_error_mean"].tolist() == [2.5]
    (line,) = not_completed(out)
    assert line.startswith(f"{broken}: unreadable (") and reason in line, line
    assert "1 completed, 0 failed, 0 interrupted, 0 running, 1 unreadable" in text
    assert f"{broken}: unreadable" in text  # printed beside the table too
    assert (out / "accuracy.png").exists()


def test_yaml_in_a_config_is_never_executed(tmp_path):
    train_run(tmp_path, "good", "mlp", 0, 2.5)
    broken = train_run(tmp_path, "broken", "odenet", 0, 0.8)
    marker = tmp_path / "executed"
    (broken / ".hydra" / "config.yaml").write_text(f"a: !!python/object/apply:os.system ['touch {marker}']\n")
    _, out = report_on(tmp_path)
    assert not marker.exists()
    assert "config.yaml is not YAML (could not determine a constructor" in not_completed(out)[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_summary_that_is_a_pipe_is_listed_without_blocking(tmp_path):
    train_run(tmp_path, "good", "mlp", 0, 2.5)
    broken = train_run(tmp_path, "broken", "odenet", 0, 0.8)
    (broken / "summary.json").unlink()
    os.mkfifo(broken / "summary.json")
    _, out = report_on(tmp_path)
    assert "summary.json is a FIFO (named pipe), not a regular file" in not_completed(out)[0]


def test_a_run_without_a_config_still_counts(tmp_path):
    """hydra.output_subdir=null leaves no .hydra folder; the run is read without config keys."""
    train_run(tmp_path, "good", "mlp", 0, 2.5)
    shutil.rmtree(train_run(tmp_path, "other", "odenet", 0, 0.8) / ".hydra")
    _, out = report_on(tmp_path)
    assert pd.read_csv(out / "table1.csv")["seeds"].tolist() == [1, 1] and not_completed(out) == []


# ---- run links ---------------------------------------------------------------------------------------------


def test_a_run_link_counts_its_run_once_and_a_dead_link_is_listed(tmp_path):
    first = tmp_path / "first"
    target = train_run(first, "0", "odenet", 0, 0.8)
    train_run(first, "1", "mlp", 0, 2.5)
    again = tmp_path / "again"
    for name, link in (("0", {"run_dir": str(target)}), ("1", {"run_dir": str(tmp_path / "gone")}), ("2", "{not json")):
        (again / name).mkdir(parents=True)
        (again / name / "run_link.json").write_text(link if isinstance(link, str) else json.dumps(link))
    text, out = report_on(tmp_path)
    table = pd.read_csv(out / "table1.csv").set_index("model")
    assert table.loc[MODELS["odenet"].label, "seeds"] == 1  # found directly and by the link: once
    lines = not_completed(out)
    assert lines == [f"{again / '1'}: unreadable (run_link.json points to '{tmp_path / 'gone'}', which holds no "
                     "summary.json)",
                     f"{again / '2'}: unreadable (run_link.json is unreadable or names no run directory)"]
    assert "2 completed, 0 failed, 0 interrupted, 0 running, 2 unreadable" in text


# ---- Table 2 -----------------------------------------------------------------------------------------------


@pytest.fixture
def good_table2(tmp_path) -> Path:
    sequence_run(tmp_path, "0", "latent_ode", 0, 30, 0.20)
    sequence_run(tmp_path, "1", "latent_ode", 1, 30, 0.30)
    sequence_run(tmp_path, "2", "rnn", 0, 30, 0.50)
    return tmp_path


def test_table2_holds_both_models_beside_the_papers_rmse(good_table2):
    text, out = report_on(good_table2)
    table = pd.read_csv(out / "table2.csv").set_index("model")
    assert list(table.index) == ["rnn", "latent_ode"]  # the registry's order
    assert table.loc["latent_ode", "seeds"] == 2 and table.loc["latent_ode", "rmse_mean"] == pytest.approx(0.25)
    assert table.loc["latent_ode", "rmse_std"] == pytest.approx(statistics.stdev([0.2, 0.3]), abs=1e-6)
    assert table.loc["latent_ode", "paper_rmse"] == MODELS["latent_ode"].paper[30]
    assert table.loc["rnn", "rmse_mean"] == pytest.approx(0.5)
    assert table.loc["rnn", "paper_rmse"] == MODELS["rnn"].paper[30]
    assert MODELS["latent_ode"].label in text and not_completed(out) == []
    assert (out / "spirals_nobs30.png").stat().st_size > 0
    # The paper's Figure 8 (one test spiral, the models side by side) and every run's RMSE per epoch.
    assert (out / "figure8.png").stat().st_size > 0 and (out / "table2_convergence.png").stat().st_size > 0
    # These runs' summaries are as before validation spirals: each reported its last epoch.
    assert "each run's at its last epoch" in text and "validation" not in text


def test_table2_keeps_runs_of_other_settings_apart(good_table2):
    """A noise sweep (dataset.noise_std 0.0 and 0.3 at one seed) is two rows, not one of '2 seeds'."""
    for name, noise in (("3", 0.0), ("4", 0.3)):
        run_dir = sequence_run(good_table2, name, "rnn", 0, 30, 1.0 + noise)
        config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        config.dataset.noise_std = noise
        OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    text, out = report_on(good_table2)
    rnn = pd.read_csv(out / "table2.csv").query("model == 'rnn'")
    assert sorted(zip(rnn["dataset.noise_std"].fillna(-1), rnn.seeds, rnn.rmse_mean.round(6))) == \
        [(-1, 1, 0.5), (0.0, 1, 1.0), (0.3, 1, 1.3)]  # run "2" has no noise_std in its config
    assert "dataset.noise_std=0.3" in text and "dataset.noise_std=0.0" in text
    runs = pd.read_csv(out / "runs.csv")  # each run's numbers, with the config values that vary (only those)
    assert len(runs) == 5 and "config.dataset.noise_std" in runs and "config.dataset.name" not in runs


def test_table2_says_how_each_run_chose_its_epoch_and_never_averages_two_ways(good_table2):
    for name in ("0", "1"):
        edit_json("summary.json", lambda s: s.update(selected_by="val_rmse", best_epoch=1))(good_table2 / name)
    sequence_run(good_table2, "3", "latent_ode", 2, 30, 0.9)  # a last-epoch run beside them
    text, out = report_on(good_table2)
    table = pd.read_csv(out / "table2.csv")
    ode = table[table.model == "latent_ode"].set_index("selected_by")
    assert ode.loc["val_rmse", "seeds"] == 2 and ode.loc["val_rmse", "rmse_mean"] == pytest.approx(0.25)
    assert ode.loc["last_epoch", "seeds"] == 1 and ode.loc["last_epoch", "rmse_mean"] == pytest.approx(0.9)
    assert "erred least on its validation spirals" in text and "each run's at its last epoch" in text
    assert "selected_by=val_rmse" in text and "selected_by=last_epoch" in text  # the rows say which is which


BROKEN_TABLE2 = {
    "no n_obs": (edit_json("summary.json", lambda s: s.pop("n_obs")), "lacks 'n_obs'"),
    "n_obs is text": (edit_json("summary.json", lambda s: s.update(n_obs="30")), "'n_obs' is '30'"),
    "no test_rmse": (edit_json("summary.json", lambda s: s.update(test_rmse=None)), "lacks 'test_rmse'"),
    "predictions flag is text": (edit_text(PREDICTIONS_FILE, lambda s: s.replace("True", "maybe", 1)),
                                 "column 'in_window' holds 'maybe'"),
    "predictions lack a column": (edit_text(PREDICTIONS_FILE, lambda s: s.replace("true_x", "x", 1)),
                                  "lacks the column true_x"),
}


@pytest.mark.parametrize("case", list(BROKEN_TABLE2))
def test_a_broken_table2_run_is_listed_and_table2_is_written_from_the_good_ones(good_table2, case):
    breaker, reason = BROKEN_TABLE2[case]
    broken = sequence_run(good_table2, "3", "rnn", 1, 30, 0.9)
    breaker(broken)
    text, out = report_on(good_table2)
    table = pd.read_csv(out / "table2.csv").set_index("model")
    assert table.loc["rnn", "seeds"] == 1 and table.loc["rnn", "rmse_mean"] == pytest.approx(0.5)
    assert table.loc["latent_ode", "seeds"] == 2
    (line,) = not_completed(out)
    assert line.startswith(f"{broken}: unreadable (") and reason in line, line
    assert "3 completed, 0 failed, 0 interrupted, 0 running, 1 unreadable" in text


def test_a_failed_table2_run_without_n_obs_is_listed_as_failed(good_table2):
    summary = {k: v for k, v in sequence_summary("rnn", 1, 30, 0.9).items() if k not in ("n_obs", "model", "test_rmse")}
    write_run(good_table2 / "3", summary | {"status": "failed", "reason": "dataset.n_obs=101 is invalid"}, None, {})
    text, out = report_on(good_table2)
    assert not_completed(out) == [f"{good_table2 / '3'}: failed (dataset.n_obs=101 is invalid)"]
    assert "3 completed, 1 failed" in text and pd.read_csv(out / "table2.csv")["seeds"].sum() == 3


# ---- the command -------------------------------------------------------------------------------------------


def test_a_folder_without_runs_gets_one_line_and_exit_code_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path)])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "no runs found" in err


def test_the_command_exits_0_and_prints_the_table_beside_broken_runs(tmp_path, capsys):
    train_run(tmp_path, "good", "mlp", 0, 2.5)
    broken = train_run(tmp_path, "broken", "odenet", 0, 0.8)
    (broken / "summary.json").write_text('{"model": "odenet"}')
    main([str(tmp_path), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert f"| {MODELS['mlp'].label} | 1 |" in printed
    assert f"{broken}: unreadable (summary.json lacks 'status')" in printed


# ---- the plotting leaf: labels and legends from the registry and the data ------------------------------


@pytest.fixture
def drawn(monkeypatch) -> list:
    """Collect the figures the plotting modules would save, instead of writing them."""
    figures: list = []
    for module in (plotting_tasks, plotting_seeds):
        monkeypatch.setattr(module, "save_figure", lambda fig, out_dir, name: figures.append(fig) or [])
    return figures


def test_memory_legend_says_what_depth_counts_from_the_rows(drawn, tmp_path):
    rows = [{"model": model, "depth": depth, "method": None if model == "resnet" else "rk4", "batch_size": 32,
             "saved_mb": float(depth), "cuda_peak_mb": math.nan, "nfe_forward": 4 * depth,
             "nfe_backward": 4 * depth if model == "odenet" else 0, "step_time_s": 0.1}
            for depth in (1, 2) for model in ("resnet", "rknet", "odenet")]
    plotting_tasks.memory_figure(pd.DataFrame(rows), tmp_path)
    labels = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    assert labels == [f"{MODELS['resnet'].label} (residual blocks)",
                      f"{MODELS['rknet'].label} (solver steps, backprop through them)",
                      f"{MODELS['odenet'].label} (solver steps, adjoint)"]


def test_cubic_panels_are_the_fitted_models_with_their_registry_labels(drawn, tmp_path):
    data = make_cubic_data(0, n_test=5)
    fits = pd.DataFrame([{"fit": i, "study": "main", "model": model, "lr": 0.01, "diverged": False, "test_mse": 0.5}
                         for i, model in enumerate(("odenet", "resnet"))])
    curves = pd.DataFrame([{"fit": i, "x": float(x), "prediction": float(x)}
                           for i in (0, 1) for x in data.x_test[:, 0]])
    plotting_seeds.cubic_figures(fits, curves, pd.DataFrame(), data, tmp_path)
    titles = [ax.get_title() for ax in drawn[0].axes]
    assert titles == [MODELS["odenet"].label, MODELS["resnet"].label, "Comparison"]


# ---- the import direction and the registry ---------------------------------------------------------------


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """Return (module, whether imported inside a function) for every import in a source file."""
    tree = ast.parse(path.read_text())
    nested = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in nested) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in nested))
    return found


@pytest.mark.parametrize("package, allowed", [
    # the report tells runs' settings apart by the run's identity (noderun.run.identity), as resume does, and
    # loads the plugins (noderun.plugins) whose models it may have to name
    ("report", ("noderun.report", "noderun.plotting", "noderun.records", "noderun.models", "noderun.errors",
                "noderun.safeio", "noderun.run.identity", "noderun.plugins")),
    ("plotting", ("noderun.plotting", "noderun.records", "noderun.models", "noderun.data", "noderun.errors")),
])
def test_the_report_and_plotting_import_nothing_upstream_and_nothing_inside_functions(package, allowed):
    paths = sorted((PACKAGE / package).glob("*.py"))
    assert len(paths) >= 4
    for path in paths:
        for module, in_function in imports_of(path):
            assert not in_function, f"{path.name} imports {module} inside a function"
            assert not module.startswith("noderun") or module.startswith(allowed), f"{path.name} imports {module}"


def test_no_model_name_is_written_into_the_report_or_plotting():
    names = "|".join(map(re.escape, MODELS))
    paths = sorted(PACKAGE.glob("report/*.py")) + sorted(PACKAGE.glob("plotting/*.py"))
    assert len(paths) >= 8
    for path in paths:
        assert not re.search(rf"[\"']({names})[\"']", path.read_text()), path


def test_a_presets_caption_heads_table1_on_one_printable_line_with_what_the_runs_trained(tmp_path):
    for name, model, seed, error in (("0", "mlp", 0, 10.0), ("1", "odenet", 0, 4.0), ("2", "odenet", 1, 5.0)):
        config = train_config(model, seed) | {"caption": "A budget,\n  not the\x1b[2J protocol."}
        write_run(tmp_path / name, train_summary(model, seed, error), metrics_rows(2, model in ODE, 0.9), config)
    text, out = report_on(tmp_path)
    line = "A budget, not the [2J protocol. Each run: 2 epochs of 256 training images, batch 64, lr 0.1."
    assert f"{line}\n\n| model" in text and (out / "table1.md").read_text().startswith(f"{line}\n\n| model")
    assert "caption" not in pd.read_csv(out / "table1.csv").columns  # no column of its own
    train_run(tmp_path, "3", "odenet", 2, 4.5)  # a run without the preset's caption: the table has none
    text, out = report_on(tmp_path)
    assert "protocol" not in text and (out / "table1.md").read_text().startswith("| model")


def test_a_caption_lists_each_models_epochs_where_a_preset_gives_models_their_own(tmp_path):
    # table1_hour trains the MLP for 20 epochs and the others for 2 (experiment_model/): the caption says so.
    for name, model, epochs in (("0", "mlp", 20), ("1", "odenet", 2), ("2", "resnet", 2)):
        config = train_config(model, 0) | {"caption": "A budget."}
        config["trainer"] = config["trainer"] | {"epochs": epochs}
        write_run(tmp_path / name, train_summary(model, 0, 3.0, epochs), metrics_rows(epochs, model in ODE, 0.9), config)
    text, _ = report_on(tmp_path)
    line = ("A budget. Each run: epochs of 256 training images, batch 64, lr 0.1; epochs: MLP 20, ResNet 2, "
            "ODE-Net 2.")
    assert f"{line}\n\n| model" in text, text


def test_the_report_selects_runs_by_tags_and_lists_each_runs_tags(tmp_path):
    for name, seed, tags in (("a", 0, ["paper"]), ("b", 1, ["paper", "v2"]), ("c", 2, [])):
        run_dir = train_run(tmp_path, name, "odenet", seed, 1.0 + seed)
        summary = json.loads((run_dir / "summary.json").read_text())
        summary.update(tags=tags, note=f"run {name}")
        (run_dir / "summary.json").write_text(json.dumps(summary))
        config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        config.tags, config.note = tags, f"run {name}"  # labels differ between the runs: still one row
        OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    assert set(collect_runs([tmp_path], ("paper",)).runs.run_dir) == {str(tmp_path / "a"), str(tmp_path / "b")}
    assert list(collect_runs([tmp_path], ("paper", "v2")).runs.run_dir) == [str(tmp_path / "b")]
    text, _ = build_report([tmp_path], tmp_path / "report", ("paper",))
    assert "2 completed, 0 failed, 0 interrupted, 0 running, 0 unreadable tagged paper" in text
    runs = pd.read_csv(tmp_path / "report" / "runs.csv", keep_default_na=False)
    assert dict(zip(runs.run_dir, runs.tags)) == {str(tmp_path / "a"): "paper", str(tmp_path / "b"): "paper;v2"}
    assert set(runs.note) == {"run a", "run b"}
    assert pd.read_csv(tmp_path / "report" / "table1.csv").seeds.tolist() == [2]
    with pytest.raises(LookupError, match="no runs tagged nothere"):
        build_report([tmp_path], tmp_path / "elsewhere", ("nothere",))


def test_the_report_finds_its_readers_and_tables_by_registries_keyed_like_the_experiments():
    from noderun.experiments import EXPERIMENTS
    from noderun.report.cli import TABLES
    from noderun.report.collect import RUN_KINDS

    assert set(TABLES) <= set(EXPERIMENTS) and set(RUN_KINDS) <= set(EXPERIMENTS)
    # no branch on a task's name anywhere in the report: comparisons with a task's name are the registries'
    compared = re.compile(r"""[=!]=\s*["'](%s)["']""" % "|".join(EXPERIMENTS))
    for path in sorted((PACKAGE / "report").glob("*.py")):
        assert not compared.search(path.read_text()), path.name
