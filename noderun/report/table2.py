"""Table 2 from a set of runs: latent ODE against RNN, test RMSE beyond the observation window by
number of observed points, mean ± std over seeds, the paper's figures beside ours, and under the models
the reference predictors that need no training (persistence, constant velocity) on the same test
spirals. Every output names the training objective and the RMSE convention."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from noderun.models.reference import REFERENCES
from noderun.models.sequence import OBJECTIVES, RMSE_CONVENTION
from noderun.plotting.registry import model_label, model_rank
from noderun.report.collect import RunSet, varying_config_keys
from noderun.report.paper import paper_rmse
from noderun.report.table import column_mean, markdown, sample_std
from noderun.report.tex import latex

# The task (noderun.experiments) whose runs Table 2 reads.
TASK = "timeseries"
# What else a row is told apart by, so that runs with other solvers or sizes, or that chose their reported
# epoch otherwise, are not averaged together; besides these, every config key that differs between runs
# of a model (dataset.noise_std, trainer.lr...), but the columns' dataset.n_obs.
ROW_KEYS = ("model", "objective", "solver", "rtol", "adjoint", "n_points", "train_size", "selected_by")
COLUMN_KEY = "config.dataset.n_obs"
# The summary's `objective` is the row key (runs from before trainer.objective trained on the window).
OBJECTIVE_CONFIG = "config.trainer.objective"
REFERENCE_LABELS = {"persistence": "Persistence (no training)", "constant_velocity": "Constant velocity (no training)"}
REFERENCE_NOTE = ("persistence holds the last observed point; constant velocity carries on the least-squares "
                  "line through the last quarter of the observations (at least 2)")


def reference_rows(runs: pd.DataFrame) -> list[dict]:
    """Return one row per reference predictor, data setting and n_obs: the mean ± sample std over seeds
    of the test RMSE each run recorded for it on its test spirals (the same for every model of a seed,
    so each seed is counted once)."""
    data_keys = ["n_points"] + [k for k in varying_config_keys(runs) if k.startswith("config.dataset.") and k != COLUMN_KEY]
    rows = []
    for name in REFERENCES:
        if f"{name}_rmse" not in runs:
            continue
        present = runs[pd.to_numeric(runs[f"{name}_rmse"], errors="coerce").notna()]
        for _, group in present.groupby([*data_keys, "n_obs"], dropna=False, sort=False):
            once = group.drop_duplicates("seed") if "seed" in group else group
            values = pd.to_numeric(once[f"{name}_rmse"])
            rows.append({"model": name, **{k.removeprefix("config."): once.iloc[0][k] for k in data_keys},
                         "n_obs": int(once.iloc[0]["n_obs"]), "seeds": len(once), "rmse_mean": float(values.mean()),
                         "rmse_std": sample_std(values), "rmse_spiral_mean": column_mean(once, f"{name}_rmse_spiral_mean"),
                         "paper_rmse": math.nan})
    return rows


def _rank(model: str) -> int:
    """Return a row's place: the models in the paper's order, then the reference predictors."""
    return 1000 + list(REFERENCES).index(model) if model in REFERENCES else model_rank(model)


def table2_runs(run_set: RunSet) -> pd.DataFrame:
    """Return the completed time-series runs' summaries as a table (empty when there are none)."""
    return pd.DataFrame(run_set.of_task(TASK, completed=True))


def table2(run_set: RunSet) -> pd.DataFrame:
    """Return one row per model setting and n_obs: seeds, RMSE mean and sample std, the paper's RMSE,
    NFE, training time and peak memory (means over the seeds)."""
    runs = table2_runs(run_set)
    if runs.empty:
        return runs
    # Runs from before validation spirals reported their last epoch.
    runs["selected_by"] = runs["selected_by"].fillna("last_epoch") if "selected_by" in runs else "last_epoch"
    runs["objective"] = runs["objective"].fillna("window") if "objective" in runs else "window"
    keys = [k for k in ROW_KEYS if k in runs.columns] + \
        [k for k in varying_config_keys(runs) if k not in (COLUMN_KEY, OBJECTIVE_CONFIG)]
    rows = []
    for _, group in runs.groupby([*keys, "n_obs"], dropna=False, sort=False):
        first = group.iloc[0]
        model, n_obs = first["model"], int(first["n_obs"])
        rows.append({**{k.removeprefix("config."): first[k] for k in keys}, "n_obs": n_obs, "seeds": len(group),
                     "rmse_mean": float(group["test_rmse"].mean()), "rmse_std": sample_std(group["test_rmse"]),
                     "rmse_spiral_mean": column_mean(group, "test_rmse_spiral_mean"),
                     "paper_rmse": paper_rmse(model, n_obs) if first["n_points"] == 100 else math.nan,
                     "persistence_rmse": column_mean(group, "persistence_rmse"),
                     "rmse_observed": column_mean(group, "test_rmse_observed"),
                     "nfe_forward": float(group["nfe_forward"].mean()), "nfe_backward": float(group["nfe_backward"].mean()),
                     "train_time_s": float(group["train_time_s"].mean()), "peak_memory_mb": float(group["peak_memory_mb"].mean()),
                     "params": int(first["params"])})
    table = pd.DataFrame(rows)
    # Below persistence: the model's mean under that of the same seeds' persistence (unknown for runs that
    # did not record it).
    table["below_persistence"] = [None if math.isnan(p) else bool(m < p)
                                  for m, p in zip(table["rmse_mean"], table["persistence_rmse"])]
    table = pd.concat([table, pd.DataFrame(reference_rows(runs))], ignore_index=True)
    table = table.astype({"train_size": "Int64", "params": "Int64"}, errors="ignore")
    table = table.assign(_rank=table["model"].map(_rank)).sort_values(["_rank", "n_obs"], kind="stable")
    return table.drop(columns="_rank").reset_index(drop=True)


SELECTION_NOTES = {"val_rmse": "each run's at the epoch whose prediction beyond the window erred least on its "
                               "validation spirals",
                   "last_epoch": "each run's at its last epoch"}


def _row_label(row: pd.Series, setting_columns: list[str]) -> str:
    if row["model"] in REFERENCE_LABELS:
        return REFERENCE_LABELS[row["model"]]
    extra = [f"objective {row['objective']}"] + \
        [f"{c}={row[c]}" for c in setting_columns if c != "objective" and not pd.isna(row[c])]
    return f"{model_label(row['model'])} ({', '.join(extra)})"


def _cell(row: pd.Series) -> str:
    ours = f"{row['rmse_mean']:.4f}" + ("" if math.isnan(row["rmse_std"]) else f" ± {row['rmse_std']:.4f}")
    if row["model"] in REFERENCES:
        return f"{ours} ({row['seeds']} seeds)"
    paper = "-" if math.isnan(row["paper_rmse"]) else f"{row['paper_rmse']:.4f}"
    behind = "; NOT below persistence" if row.get("below_persistence") is False else ""
    return f"{ours} (paper {paper}; {row['seeds']} seeds{behind})"


def persistence_verdicts(table: pd.DataFrame) -> list[str]:
    """Return one line per trained model setting: whether its mean is below persistence's at every
    n_obs, naming those where it is not; nothing for settings whose runs recorded no persistence."""
    trained, settings = table[~table["model"].isin(list(REFERENCES))], _settings(table)
    labels = [_row_label(r, settings) for _, r in trained.iterrows()]
    lines = []
    for label, group in trained.groupby(labels, sort=False):
        known = group[group["below_persistence"].notna()]
        if known.empty:
            continue
        behind = [str(n) for n, below in zip(known["n_obs"], known["below_persistence"]) if not below]
        lines.append(f"{label}: " + (f"NOT below persistence at n = {', '.join(behind)}" if behind
                                     else "below persistence at every n"))
    return lines


def _settings(table: pd.DataFrame) -> list[str]:
    """Return the setting columns that tell the trained rows apart (table2() puts what its runs were
    grouped by before n_obs)."""
    trained = table[~table["model"].isin(list(REFERENCES))]
    keys = table.columns[1:table.columns.get_loc("n_obs")]
    return [c for c in keys if trained[c].astype(str).nunique() > 1]


def display_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """Return the paper's layout: one row per model setting, one column per observed-point count."""
    settings = _settings(table)
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
    note = table2_note(table)
    verdicts = persistence_verdicts(table)
    text = note + "\n\n" + markdown(rows) + ("\n\n" + "\n".join(verdicts) if verdicts else "")
    (out_dir / "table2.md").write_text(text + "\n")
    (out_dir / "table2.tex").write_text("".join(f"% {line}\n" for line in [note, *verdicts]) + latex(rows))
    return text


def table2_text(run_set: RunSet, out_dir: Path) -> str | None:
    """Write Table 2's files from the runs and return its text, or None when it has no completed runs."""
    table = table2(run_set)
    return None if table.empty else write_table2(table, out_dir)


def table2_note(table: pd.DataFrame) -> str:
    """Return what the table's numbers are: where the error is measured, the RMSE convention, how each
    run's epoch was chosen, the training objective(s) and the reference rows."""
    trained = table[~table["model"].isin(list(REFERENCES))]
    selections = sorted(set(trained["selected_by"].dropna()), reverse=True)
    objectives = sorted(set(trained["objective"].dropna()))
    trained_with = "; ".join(f"objective {o}: {OBJECTIVES.get(o, 'unknown to this version')}" for o in objectives)
    return ("Test RMSE against the noiseless spirals at the 100 times after the observation window, "
            f"{RMSE_CONVENTION} (both coordinates, all 100 times, all test spirals in one mean; table2.csv's "
            "rmse_spiral_mean: the mean of the spirals' own RMSEs) "
            f"({'; or '.join(SELECTION_NOTES[s] for s in selections)}; mean ± sample std over seeds), the "
            f"paper's Table 2 beside each. Trained with {trained_with}. Under the models, predictors that need "
            f"no training, on the same test spirals: {REFERENCE_NOTE}.")
