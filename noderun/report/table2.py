"""Table 2 from a set of runs: latent ODE against RNN, test RMSE beyond the observation window by
number of observed points, mean ± std over seeds, the paper's figures beside ours."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from noderun.plotting.registry import model_label, model_rank
from noderun.report.collect import RunSet, varying_config_keys
from noderun.report.paper import paper_rmse
from noderun.report.table import column_mean, markdown, sample_std
from noderun.report.tex import latex

# What else a row is told apart by, so that runs with other solvers or sizes, or that chose their reported
# epoch otherwise, are not averaged together; besides these, every config key that differs between runs
# of a model (dataset.noise_std, trainer.lr...), but the columns' dataset.n_obs.
ROW_KEYS = ("model", "solver", "rtol", "adjoint", "n_points", "train_size", "selected_by")
COLUMN_KEY = "config.dataset.n_obs"


def table2_runs(run_set: RunSet) -> pd.DataFrame:
    """Return the completed time-series runs' summaries as a table (empty when there are none)."""
    runs = [t for t in run_set.tasks if t.get("task") == "timeseries" and t.get("status") == "completed"]
    return pd.DataFrame(runs)


def table2(run_set: RunSet) -> pd.DataFrame:
    """Return one row per model setting and n_obs: seeds, RMSE mean and sample std, the paper's RMSE,
    NFE, training time and peak memory (means over the seeds)."""
    runs = table2_runs(run_set)
    if runs.empty:
        return runs
    # Runs from before validation spirals reported their last epoch.
    runs["selected_by"] = runs["selected_by"].fillna("last_epoch") if "selected_by" in runs else "last_epoch"
    keys = [k for k in ROW_KEYS if k in runs.columns] + [k for k in varying_config_keys(runs) if k != COLUMN_KEY]
    rows = []
    for _, group in runs.groupby([*keys, "n_obs"], dropna=False, sort=False):
        first = group.iloc[0]
        model, n_obs = first["model"], int(first["n_obs"])
        rows.append({**{k.removeprefix("config."): first[k] for k in keys}, "n_obs": n_obs, "seeds": len(group),
                     "rmse_mean": float(group["test_rmse"].mean()), "rmse_std": sample_std(group["test_rmse"]),
                     "paper_rmse": paper_rmse(model, n_obs) if first["n_points"] == 100 else math.nan,
                     "rmse_observed": column_mean(group, "test_rmse_observed"),
                     "nfe_forward": float(group["nfe_forward"].mean()), "nfe_backward": float(group["nfe_backward"].mean()),
                     "train_time_s": float(group["train_time_s"].mean()), "peak_memory_mb": float(group["peak_memory_mb"].mean()),
                     "params": int(first["params"])})
    table = pd.DataFrame(rows)
    table = table.assign(_rank=table["model"].map(model_rank)).sort_values(["_rank", "n_obs"], kind="stable")
    return table.drop(columns="_rank").reset_index(drop=True)


SELECTION_NOTES = {"val_rmse": "each run's at the epoch whose prediction beyond the window erred least on its "
                               "validation spirals",
                   "last_epoch": "each run's at its last epoch"}


def _row_label(row: pd.Series, setting_columns: list[str]) -> str:
    label = model_label(row["model"])
    extra = [f"{c}={row[c]}" for c in setting_columns if not pd.isna(row[c])]
    return label + (f" ({', '.join(extra)})" if extra else "")


def _cell(row: pd.Series) -> str:
    ours = f"{row['rmse_mean']:.4f}" + ("" if math.isnan(row["rmse_std"]) else f" ± {row['rmse_std']:.4f}")
    paper = "-" if math.isnan(row["paper_rmse"]) else f"{row['paper_rmse']:.4f}"
    return f"{ours} (paper {paper}; {row['seeds']} seeds)"


def display_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """Return the paper's layout: one row per model setting, one column per observed-point count."""
    # table2() puts a row's setting columns (what its runs were grouped by) before n_obs.
    keys = table.columns[1:table.columns.get_loc("n_obs")]
    settings = [c for c in keys if table[c].astype(str).nunique() > 1]
    counts = sorted(table["n_obs"].unique())
    rows: dict[str, dict[str, str]] = {}
    for _, r in table.iterrows():
        label = _row_label(r, settings)
        row = rows.setdefault(label, {"model": label, **{f"{n} / {r['n_points']}": "-" for n in counts}})
        row[f"{r['n_obs']} / {r['n_points']}"] = _cell(r)
    return list(rows.values())


def write_table2(table: pd.DataFrame, out_dir: Path) -> str:
    """Write table2.csv (numbers, one row per setting and n_obs), table2.md and table2.tex (the
    paper's layout); return the Markdown."""
    table.round(6).to_csv(out_dir / "table2.csv", index=False)
    rows = display_rows(table)
    selections = sorted(set(table["selected_by"]), reverse=True)
    note = ("Test RMSE against the noiseless spirals at the 100 times after the observation window "
            f"({'; or '.join(SELECTION_NOTES[s] for s in selections)}; mean ± sample std over seeds), the "
            "paper's Table 2 beside each.")
    text = note + "\n\n" + markdown(rows)
    (out_dir / "table2.md").write_text(text + "\n")
    (out_dir / "table2.tex").write_text(latex(rows))
    return text
