"""Table 1 from a set of runs: mean ± std over seeds per model and per varying config value."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from noderun.plotting.registry import is_ode_model, model_label, model_rank
from noderun.safeio import printable
from noderun.report.collect import CAPTION_COLUMN, REFERENCE_PREFIX, RunSet, kind_of, varying_config_keys
from noderun.report.paper import paper_table1
from noderun.report.table1_tex import paper_layout

NUMERIC_COLUMNS = ("test_error_mean", "test_error_std", "params_m", "nfe_forward", "nfe_backward", "nfe_forward_eval",
                   "train_time_per_epoch_s", "saved_mb", "peak_memory_mb", "paper_test_error", "diff_test_error",
                   "paper_params_m", "train_time_s")
# Text columns of a row that are no config value.
TEXT_COLUMNS = ("model", "seeds", "peak_memory_kind", "paper_memory", "paper_time")
# What each peak_memory_kind in summary.json measures, as a column header says it.
PEAK_HEADERS = {"cuda_max_allocated": "peak MiB (CUDA allocator)", "cpu_max_rss": "peak RSS MiB (process, CPU)"}
# The kind's short name beside each peak when a table's runs mix kinds.
PEAK_SHORT = {"cuda_max_allocated": "CUDA", "cpu_max_rss": "RSS"}
SAVED_HEADER = "saved for backward (MiB)"
# What a preset's `reference:` block (a seed document's own figures) puts beside ours.
REFERENCE_COLUMNS = ("reference_error", "reference_train_time_s", "reference_source")


def preset_reference(run: pd.Series, model: str) -> dict[str, object]:
    """Return the seed document's figures for this model from a run's `reference:` config block (set
    by presets such as odenet_vs_resnet and table1_rk4), or {} when it has none."""
    error = run.get(f"{REFERENCE_PREFIX}error.{model}")
    if error is None or pd.isna(error):
        return {}
    time_s = run.get(f"{REFERENCE_PREFIX}train_time_s.{model}")
    source, kind = (run.get(f"{REFERENCE_PREFIX}{key}", "?") for key in ("source", "error_kind"))
    return {"reference_error": float(error),
            "reference_train_time_s": math.nan if time_s is None or pd.isna(time_s) else float(time_s),
            "reference_source": f"{source}: {kind}"}


def sample_std(values: pd.Series) -> float:
    """Return the sample standard deviation (n - 1), NaN for a single value."""
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def column_mean(runs: pd.DataFrame, column: str) -> float:
    """Return the mean of a column that runs may leave null or out (NaN when none has a number)."""
    return float(pd.to_numeric(runs[column], errors="coerce").mean()) if column in runs else math.nan


def peak_kind(runs: pd.DataFrame) -> str:
    """Return the runs' peak_memory_kind, kinds joined by '+' where they differ ('?' where none says)."""
    kinds = runs["peak_memory_kind"].dropna().astype(str) if "peak_memory_kind" in runs else pd.Series(dtype=str)
    return "+".join(sorted(kinds.unique())) or "?"


def table1(run_set: RunSet) -> pd.DataFrame:
    """Return one row per model and combination of varying config values, in the paper's model order.

    Means are over the completed runs of a row (its seeds); std is the sample standard deviation
    (n - 1), empty for a single run. Time is training seconds per epoch. Memory is the mean of the runs'
    saved_mb (what autograd keeps for the backward pass of one training step: Table 1's memory, NaN
    for runs that did not measure it) and, beside it, of their peak_memory_mb, whose meaning
    depends on the device (peak_memory_kind).
    """
    done = run_set.completed
    if done.empty:
        return pd.DataFrame()
    keys = ["model", *run_set.varying]
    rows = []
    for _, group in done.groupby(keys, dropna=False, sort=False):
        model = group["model"].iloc[0]
        paper = paper_table1(model)
        ode = is_ode_model(model)
        row = {"model": model_label(model)}
        row.update({k.removeprefix("config."): group[k].iloc[0] for k in run_set.varying})
        row.update({
            "seeds": len(group),
            "test_error_mean": float(group["test_error"].mean()),
            "test_error_std": sample_std(group["test_error"]),
            "params_m": float(group["params"].mean()) / 1e6,
            "nfe_forward": column_mean(group, "nfe_forward") if ode else math.nan,
            "nfe_backward": column_mean(group, "nfe_backward") if ode else math.nan,
            # per test batch after the last epoch: the model's solve alone (evaluation is never regularised)
            "nfe_forward_eval": column_mean(group, "nfe_forward_eval") if ode else math.nan,
            "train_time_per_epoch_s": float((group["train_time_s"] / group["epochs_done"]).mean()),
            "train_time_s": float(group["train_time_s"].mean()),
            "saved_mb": column_mean(group, "saved_mb"),
            "peak_memory_mb": float(group["peak_memory_mb"].mean()),
            "peak_memory_kind": peak_kind(group),
            "paper_test_error": paper.get("test_error", math.nan),
            "diff_test_error": float(group["test_error"].mean()) - paper.get("test_error", math.nan),
            "paper_params_m": paper.get("params_m", math.nan),
            "paper_memory": paper.get("memory", "-"),
            "paper_time": paper.get("time", "-"),
            "_rank": model_rank(model),
            **preset_reference(group.iloc[0], model),
        })
        rows.append(row)
    table = pd.DataFrame(rows)
    sort_keys = ["_rank", *[k.removeprefix("config.") for k in run_set.varying]]
    table = table.sort_values(sort_keys, key=lambda col: col if col.name == "_rank" else col.astype(str), kind="stable")
    return table.drop(columns="_rank").reset_index(drop=True)


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def config_columns(table: pd.DataFrame) -> list[str]:
    """Return the table's columns that hold a config value telling its rows apart."""
    return [c for c in table.columns if c not in (*NUMERIC_COLUMNS, *TEXT_COLUMNS, *REFERENCE_COLUMNS)]


def peak_kinds(table: pd.DataFrame) -> list[str]:
    """Return every peak_memory_kind among the table's rows, sorted."""
    return sorted(set("+".join(table["peak_memory_kind"]).split("+")))


def peak_header(kinds: list[str]) -> str:
    """Return the peak memory column's header, which says what the device's peak measures."""
    if len(kinds) > 1:
        return "peak MiB (mixed: " + ", ".join(PEAK_SHORT.get(k, k) for k in kinds) + ")"
    return PEAK_HEADERS.get(kinds[0], f"peak MiB ({kinds[0]})")


def peak_cell(row: pd.Series, mixed: bool) -> str:
    """Return a row's peak memory, with its kind beside it where the table's runs mix kinds."""
    kind = "+".join(PEAK_SHORT.get(k, k) for k in row["peak_memory_kind"].split("+"))
    return _fmt(row["peak_memory_mb"], 0) + (f" ({kind})" if mixed else "")


def display_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """Return the table's rows as the strings shown in Markdown."""
    settings = config_columns(table)
    kinds = peak_kinds(table)
    peak, mixed = peak_header(kinds), len(kinds) > 1
    rows = []
    for _, r in table.iterrows():
        error = _fmt(r["test_error_mean"]) + ("" if math.isnan(r["test_error_std"]) else f" ± {_fmt(r['test_error_std'])}")
        row = {"model": r["model"], **{c: "-" if pd.isna(r[c]) else str(r[c]) for c in settings}}
        row.update({
            "seeds": str(r["seeds"]), "test error (%)": error, "paper (%)": _fmt(r["paper_test_error"]),
            "diff (pp)": "-" if math.isnan(r["diff_test_error"]) else f"{r['diff_test_error']:+.2f}",
            "params (M)": _fmt(r["params_m"], 3), "paper params (M)": _fmt(r["paper_params_m"]),
            "NFE-F": _fmt(r["nfe_forward"], 1), "NFE-B": _fmt(r["nfe_backward"], 1),
            "NFE-F eval": _fmt(r["nfe_forward_eval"], 1),
            "train s/epoch": _fmt(r["train_time_per_epoch_s"], 1), SAVED_HEADER: _fmt(r["saved_mb"], 1),
            peak: peak_cell(r, mixed),
            "paper memory": r["paper_memory"], "paper time": r["paper_time"],
        })
        if "reference_error" in table.columns:  # a seed document's preset: its figures beside ours
            known = not pd.isna(r["reference_error"])
            row.update({"seed document error (%)": f"{_fmt(r['reference_error'])} ({r['reference_source']})" if known else "-",
                        "train s (ours, total)": _fmt(r["train_time_s"], 0),
                        "seed document train s": _fmt(r["reference_train_time_s"], 0) if known else "-"})
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    """Return display rows as a Markdown table, each cell one line of printable text with its `|` escaped
    (a cell holds what a run's files hold)."""
    headers = list(rows[0])
    lines = ["| " + " | ".join(map(_md_cell, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(_md_cell(row[h]) for h in headers) + " |" for row in rows])


def _md_cell(text: object) -> str:
    return printable(str(text)).replace("|", "\\|")


def caption(run_set: RunSet) -> str | None:
    """Return the caption the completed runs' preset gives their table (its `caption:` key) followed by
    what the runs trained (epochs, images, batch, lr, read from the runs, so that a preset run with
    other values says so), or None when they have no caption or disagree (runs of different presets
    reported together)."""
    done = run_set.completed
    if CAPTION_COLUMN not in done:
        return None
    given = done[CAPTION_COLUMN].dropna().astype(str)
    captions = given.unique()
    if len(captions) != 1 or len(given) != len(done):
        return None
    text = f"{captions[0]} {_budget(done)}".strip()
    # one line of printable characters whatever the file holds (a terminal escape would act on the terminal)
    return " ".join(printable(text).split())


def _budget(runs: pd.DataFrame) -> str:
    """Return 'Each run: E epoch(s) of N training images, batch B, lr L.' where the runs agree on these;
    where only the epochs differ, and by model alone (a preset's experiment_model settings), the epochs
    of each model follow."""
    columns = ("config.trainer.epochs", "train_size", "config.trainer.batch_size", "config.trainer.lr")
    values = [runs[c].dropna().unique() if c in runs else [] for c in columns]
    if any(len(v) != 1 for v in values[1:]) or not len(values[0]):
        return ""
    try:
        epochs, images, batch, lr = (float(v[0]) for v in values)
    except (TypeError, ValueError):
        return ""
    if len(values[0]) == 1:
        return (f"Each run: {epochs:g} epoch{'s' if epochs != 1 else ''} of {images:,.0f} training images, "
                f"batch {batch:g}, lr {lr:g}.")
    by_model = runs.groupby("model", sort=False)["config.trainer.epochs"].unique()
    if any(len(e) != 1 for e in by_model):
        return ""
    ordered = sorted(by_model.items(), key=lambda item: model_rank(item[0]))
    listed = ", ".join(f"{model_label(m)} {float(e[0]):g}" for m, e in ordered)
    return f"Each run: epochs of {images:,.0f} training images, batch {batch:g}, lr {lr:g}; epochs: {listed}."


def write_table1(table: pd.DataFrame, out_dir: Path, title: str | None = None) -> str:
    """Write table1.csv (numbers), table1.md (every column, below the title when there is one) and
    table1.tex (the paper's columns); return the Markdown text."""
    table.round(4).to_csv(out_dir / "table1.csv", index=False)
    rows = display_rows(table)
    text = markdown(rows) if title is None else f"{title}\n\n{markdown(rows)}"
    (out_dir / "table1.md").write_text(text + "\n")
    (out_dir / "table1.tex").write_text(paper_layout(table, config_columns(table)))
    return text


def table1_text(run_set: RunSet, out_dir: Path) -> str | None:
    """Write Table 1's files from the runs and return its text, or None when it has no completed runs."""
    table = table1(run_set)
    return None if table.empty else write_table1(table, out_dir, caption(run_set))


def _with_varying_config(runs: pd.DataFrame, varying: list[str]) -> pd.DataFrame:
    """Return the runs' summary columns and, of their config columns, the `varying` ones."""
    return runs[[c for c in runs.columns if not c.startswith("config.")] + varying]


def write_runs_csv(run_set: RunSet, out_dir: Path) -> None:
    """Write runs.csv: every summary field of every readable training run (Table 1's and Table 2's time
    series), plus the config values that vary between runs of a model, where there are any; measurement
    tasks have their own files."""
    # besides Table 1's runs, those of the tasks whose records carry their config (Table 2's)
    series = pd.DataFrame([t for t in run_set.tasks if kind_of(t).config_columns])
    frames = [_with_varying_config(f, run_set.varying if f is run_set.runs else varying_config_keys(f))
              for f in (run_set.runs, series) if len(f)]
    if frames:
        runs = pd.concat(frames, ignore_index=True)
        # run_dir is a folder's name as the file system gives it: printable too, as every text cell is
        runs["run_dir"] = runs["run_dir"].map(printable)
        runs.to_csv(out_dir / "runs.csv", index=False)
