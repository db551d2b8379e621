"""Finding run directories and reading them into one set of runs. This is the only module of the
report that reads a run directory: a run whose files cannot be used is listed with the reason, and
the tables and figures work on what was read and checked here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from noderun.plotting.registry import is_ode_model
from noderun.records import (METRICS_FILE, NUMBER, PREDICTIONS_FILE, RUN_LINK_FILE, SUMMARY_FILE, BrokenRecord,
                             flat_config, is_kind, linked_run_dir, read_summary, shown, summary_problem, task_of,
                             walk_folders)
from noderun.safeio import printable
from noderun.run.identity import config_as_today, is_setting
from noderun.report.files import CONFIG_FILE, BrokenRun, CsvSpec, read_csv_table, read_run_config

# A preset's `reference:` block: a seed document's own figures, read by the table, never a row key.
REFERENCE_PREFIX = "config.reference."
# A preset's one-line `caption:` (what its table is, such as a budget rather than the paper's
# protocol), printed above Table 1; never a row key.
CAPTION_COLUMN = "config.caption"
REFERENCE_NUMBERS = ("reference.error.", "reference.train_time_s.")
# Config keys that mean nothing for models without an ODE block.
ODE_ONLY_PREFIXES = ("solver.", "model.adjoint", "model.t1")

# The CSV files the figures draw from, as each must be to be drawn.
METRICS = CsvSpec(METRICS_FILE, full=("epoch", "train_acc", "test_acc", "nfe_forward", "nfe_backward",
                                      "nfe_forward_eval"), numeric=("test_forward_s",))
TOLERANCE = CsvSpec("tolerance.csv", full=("tol", "nfe_forward", "forward_s", "nfe_forward_train", "nfe_backward",
                                           "nfe_forward_error_batch"), numeric=("block_error",))
PREDICTIONS = CsvSpec(PREDICTIONS_FILE, full=("trajectory", "true_x", "true_y", "noisy_x", "noisy_y"),
                      numeric=("pred_x", "pred_y"), flags=("observed", "in_window"))
# Section 4's flows: a density-matching run's densities on a grid; a maximum-likelihood run's samples
# (log_q empty) and densities at each figure time.
DENSITY_GRID = CsvSpec("density_grid.csv", full=("x", "y", "log_q", "log_p"))
FLOW_STATES = CsvSpec("flow_states.csv", full=("t", "x", "y"), numeric=("log_q",))
# A time-series run's test RMSE per epoch (Table 2's convergence figure).
SEQUENCE_METRICS = CsvSpec(METRICS_FILE, full=("epoch",), numeric=("test_rmse",))


@dataclass(frozen=True)
class RunKind:
    """How the report reads one task's runs. `table1_row`: a run is one of Table 1's (RunSet.runs),
    else one of the tasks (RunSet.tasks); `config_columns`: its config becomes `config.` columns, which
    tell its table's settings apart (Table 1's runs always, others once completed); `figure_table`: the
    CSV a completed run's figures draw from, and whether every completed run has one (`always`: the
    spiral predictions came later than Table 2's first runs, which are drawn without); `curve`: a
    completed run's per-epoch CSV for a convergence figure."""

    table1_row: bool = False
    config_columns: bool = False
    figure_table: CsvSpec | None = None
    always: bool = False
    curve: CsvSpec | None = None


# How the report reads each task's runs, keyed like noderun.experiments.EXPERIMENTS; a task not named
# here is listed with its status and summary only.
RUN_KINDS: dict[str, RunKind] = {
    "train": RunKind(table1_row=True, config_columns=True, figure_table=METRICS, always=True),
    "timeseries": RunKind(config_columns=True, figure_table=PREDICTIONS, curve=SEQUENCE_METRICS),
    "tolerance": RunKind(figure_table=TOLERANCE, always=True),
    "cnf_density": RunKind(figure_table=DENSITY_GRID, always=True),
    "cnf_mle": RunKind(figure_table=FLOW_STATES, always=True),
}


@dataclass
class RunSet:
    """Every run found: the readable training runs as a table, the unreadable ones with the reason, the
    measurement tasks (time series, memory, gradcheck, tolerance...), which are no part of Table 1, and
    the CSV table each completed run's figures draw from."""

    runs: pd.DataFrame
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)  # each task's summary.json (scalars), with its run_dir
    varying: list[str] = field(default_factory=list)  # config keys that differ between completed runs
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # by run_dir: metrics.csv, tolerance.csv...
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)  # by run_dir: a time-series run's metrics.csv

    @property
    def completed(self) -> pd.DataFrame:
        """Return the runs whose status is completed."""
        return self.runs[self.runs["status"] == "completed"] if len(self.runs) else self.runs

    def of_task(self, task: str, completed: bool = False) -> list[dict]:
        """Return the task records of one task (a key of RUN_KINDS), only the completed ones if asked."""
        return [t for t in self.tasks if t.get("task") == task and (not completed or t.get("status") == "completed")]


def _is_file(path: Path) -> bool:
    """Return whether path is a regular file; False also for names the system refuses."""
    try:
        return path.is_file()
    except (OSError, ValueError):  # too long a name, a NUL byte in a linked path
        return False


def _identity(path: Path) -> Path:
    """Return the path with symbolic links resolved where they can be, to find a run only once."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop
        return path.absolute()


def _marked_dirs(root: Path, passed_over: list[tuple[str, str]]) -> tuple[list[Path], list[Path], list[Path]]:
    """Return the directories below root (root included) that hold a summary.json; those that hold
    a run_link.json instead; and those that hold neither but a run's config or metrics.csv (a run
    that died before it wrote its summary), each list sorted. Folders that cannot be listed (no
    permission, a path longer than the system allows) are appended to `passed_over` with the reason."""
    runs, links, orphans = [], [], []
    for here, subfolders, files in walk_folders(root, passed_over):  # links to folders are not followed
        if SUMMARY_FILE in files or SUMMARY_FILE in subfolders:  # a folder so named is a broken run
            runs.append(here)
        elif RUN_LINK_FILE in files:
            links.append(here)
        elif METRICS_FILE in files or (CONFIG_FILE.parent.name in subfolders and _is_file(here / CONFIG_FILE)):
            orphans.append(here)
    return sorted(runs), sorted(links), sorted(orphans)


def _follow(link_dir: Path) -> tuple[Path | None, str | None]:
    """Return the run a run_link.json points to, or None and why it leads nowhere."""
    target = linked_run_dir(link_dir)
    if target is None:
        return None, f"{RUN_LINK_FILE} is unreadable or names no run directory"
    if not _is_file(target / SUMMARY_FILE):
        return None, f"{RUN_LINK_FILE} points to {shown(str(target), 200)}, which holds no {SUMMARY_FILE}"
    return target, None


def find_run_dirs(paths: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Return every directory at or below the paths that holds a summary.json, and every run a
    run_link.json below them points to (a sweep re-run with resume=true), each once, in order; and,
    with the reason, the run links that lead nowhere and the run directories without a summary."""
    found: list[Path] = []
    seen: set[Path] = set()
    broken: list[tuple[str, str]] = []
    for root in paths:
        if (root / SUMMARY_FILE).exists():
            candidates = [root]
        else:
            candidates, links, orphans = _marked_dirs(root, broken)
            for link_dir in links:
                target, why = _follow(link_dir)
                candidates += [target] if target is not None else []
                broken += [(str(link_dir), why)] if why else []
            broken += [(str(d), f"{SUMMARY_FILE} is missing") for d in orphans]
        for candidate in candidates:  # a run reached twice (directly and by a link) counts once
            if _identity(candidate) not in seen:
                seen.add(_identity(candidate))
                found.append(candidate)
    return found, broken


def _flat_config(config: dict, model: str) -> dict[str, object]:
    """Return the config as dotted keys, without those that cannot tell two runs' computations apart
    (noderun.run.identity.is_setting, the keys the run key leaves out, the seed) and, for a model without
    an ODE block, its solver's."""
    return {printable(key): _cell(json.dumps(value) if isinstance(value, list) else value)
            for key, value in flat_config(config).items()
            if is_setting(key) and (is_ode_model(model) or not key.startswith(ODE_ONLY_PREFIXES))}


def _config_columns(run_dir: Path, model: str) -> dict[str, object]:
    """Return the run's config as `config.`-prefixed columns ({} for a run without one)."""
    config = read_run_config(run_dir)
    # An older run's config as today's would say it (keys retired or added since), so that only real
    # differences between runs become row keys.
    flat = _flat_config(config_as_today(config), model) if config is not None else {}
    for key, value in flat.items():
        if key.startswith(REFERENCE_NUMBERS) and value is not None and not is_kind(value, NUMBER):
            raise BrokenRun(f"config.yaml: {key} is {shown(value)}, not a number")
    return {f"config.{key}": value for key, value in flat.items()}


def _scalars(summary: dict) -> dict[str, object]:
    """Return the summary's single values, text made printable (a newline or a terminal escape in a
    model's name must not reach the terminal, table1.md or runs.csv as it is); lists and objects (files,
    key_config...) make no table cells."""
    return {printable(k): _cell(v) for k, v in summary.items()
            if (v is None or isinstance(v, (str, int, float, bool))) and not k.startswith("config.")}


def _cell(value: object) -> object:
    """Return a value read from a run's files as a table cell: text made printable, anything else as is."""
    return printable(value) if isinstance(value, str) else value


def _figure_table(run_dir: Path, kind: RunKind, summary: dict) -> pd.DataFrame | None:
    """Return the table a completed run's figures draw from, if its kind has one (a Table 1 run's
    metrics.csv with one row per epoch it reports)."""
    spec = kind.figure_table
    if spec is None or (not kind.always and not (run_dir / spec.name).exists()):
        return None
    table = read_csv_table(run_dir, spec)
    if kind.table1_row and len(table) != summary["epochs_done"]:
        raise BrokenRun(f"{spec.name} has {len(table)} epoch rows where summary.json reports "
                        f"{summary['epochs_done']} epochs")
    return table


def _summary(run_dir: Path) -> dict:
    """Return the run's summary.json as a dict; raise BrokenRun when it cannot be one."""
    try:
        return read_summary(run_dir)
    except BrokenRecord as err:
        raise BrokenRun(str(err)) from None


def run_tags(summary: dict) -> list[str]:
    """Return the run's tags (summary.json's `tags`, made printable; none for runs from before tags)."""
    tags = summary.get("tags")
    return [printable(t) for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame | None]:
    """Return a run's record (its summary's single values; for a training or time-series run also its
    config as `config.` columns) and the table its figures draw from (None if none); raise BrokenRun."""
    summary = _summary(run_dir)
    problem = summary_problem(summary)
    if problem:
        raise BrokenRun(problem)
    record = {**_scalars(summary), "tags": ";".join(run_tags(summary)), "run_dir": str(run_dir)}
    kind, completed = kind_of(summary), summary["status"] == "completed"
    if kind.config_columns and (completed or kind.table1_row):
        record.update(_config_columns(run_dir, summary["model"]))
    return record, _figure_table(run_dir, kind, summary) if completed else None


def kind_of(record: dict) -> RunKind:
    """Return how the report reads a run, by its summary's task (runs from before tasks trained)."""
    return RUN_KINDS.get(task_of(record), RunKind())


def collect_runs(paths: list[Path], tags: tuple[str, ...] = ()) -> RunSet:
    """Read every run below the paths into a RunSet; a run that cannot be read is listed, not fatal.
    With tags, only the runs that carry all of them are kept (unreadable ones are still listed: their
    tags cannot be known)."""
    run_dirs, unreadable = find_run_dirs(paths)
    rows, tasks, tables, curves = [], [], {}, {}
    for run_dir in run_dirs:
        try:
            record, table = read_run(run_dir)
            curve = kind_of(record).curve
            if curve is not None and record.get("status") == "completed" and (run_dir / curve.name).exists():
                curves[str(run_dir)] = read_csv_table(run_dir, curve)
        except BrokenRun as err:
            unreadable.append((str(run_dir), str(err)))
            continue
        if not set(tags) <= set(record["tags"].split(";")):
            continue
        (rows if kind_of(record).table1_row else tasks).append(record)
        if table is not None:
            tables[str(run_dir)] = table
    run_set = RunSet(runs=pd.DataFrame(rows), unreadable=unreadable, tasks=tasks, tables=tables, curves=curves)
    run_set.varying = varying_config_keys(run_set.completed)
    return run_set


def varying_config_keys(runs: pd.DataFrame) -> list[str]:
    """Return the config columns whose values differ between runs of the same model.

    Keys that differ only from one model to another (one model's downsampling against another's,
    say) are part of what the model is, and the model is always a row key.
    """
    keys = []
    config_columns = [c for c in runs.columns if c.startswith("config.") and c != "config.model.name"
                      and not c.startswith(REFERENCE_PREFIX) and c != CAPTION_COLUMN]
    for column in config_columns:
        per_model = runs.groupby("model")[column].agg(lambda values: values.astype(str).nunique(dropna=False))
        if (per_model > 1).any():
            keys.append(column)
    return keys
