"""The run directory's contract, shared by the experiments that write it and the report that reads it:
file names, atomic writes, and loading that never executes anything from disk."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from noderun.safeio import DISK_FULL, MAX_DOCUMENT_BYTES, UnsafeFile, load_json, open_overwrite, open_regular

# Columns that measure the machine rather than the computation; they differ between identical runs.
TIMING_COLUMNS = ("test_forward_s", "epoch_time_s", "eval_time_s", "peak_memory_mb")
SUMMARY_FILE = "summary.json"
RUN_LINK_FILE = "run_link.json"
METRICS_FILE = "metrics.csv"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
LOCK_FILE = ".noderun.lock"
LOG_FILE = "noderun.log"
CONFIG_DIR = ".hydra"
# Table 2 runs: a few test spirals in long form (truth, observations, predictions), for figures.
PREDICTIONS_FILE = "spiral_predictions.csv"
# A summary larger than this is not one noderun wrote.
MAX_SUMMARY_BYTES = MAX_DOCUMENT_BYTES


class BrokenRecord(Exception):
    """A file of a run directory that cannot be read as what it should be; the message names it."""


def _replace_atomically(path: Path, write) -> None:
    """Call write(tmp_path), then move tmp_path over path, so path is always whole; a failed write
    leaves no temporary file behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except FileExistsError:
        raise  # a file of that name is not this write's: it stays
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None:  # a failed write() names no file: name the one it was for
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """Replace path's content with text in one step."""
    write_bytes_atomically(path, text.encode())


def write_bytes_atomically(path: Path, data: bytes | memoryview) -> None:
    """Replace path's content with data in one step (a symbolic link there is replaced, not followed)."""
    def write(tmp: Path) -> None:
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    _replace_atomically(path, write)


def flat_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """Return a plain config as {dotted key: value} (lists kept as single values)."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flat_config(value, f"{prefix}{key}."))
    return flat


def metrics_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Return the columns of a metrics table: every key of the rows, in the order they first appear."""
    return list(dict.fromkeys(key for row in rows for key in row))


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Write metrics.csv with one row per finished epoch."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=metrics_columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(run_dir / METRICS_FILE, buffer.getvalue())


def write_summary(run_dir: Path, summary: dict[str, Any], in_place_when_full: bool = False) -> None:
    """Write summary.json. `in_place_when_full`: when the disk has no room for the new copy, rewrite the
    file in place instead (the space it frees is what it takes), so that a run ended by a full disk
    still says so; not atomic, so only for a run's last word."""
    text = json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n"
    try:
        write_text_atomically(run_dir / SUMMARY_FILE, text)
    except OSError as err:
        if not (in_place_when_full and err.errno in DISK_FULL):
            raise
        try:
            with open_overwrite(run_dir / SUMMARY_FILE) as handle:
                handle.truncate(0)
                handle.write(text.encode())
                handle.flush()
                os.fsync(handle.fileno())
        except UnsafeFile:
            raise err from None


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Return the run's summary.json as a dict, or raise BrokenRecord naming the file and what is wrong."""
    path = run_dir / SUMMARY_FILE
    try:
        summary = load_json(path, MAX_SUMMARY_BYTES)
    except UnsafeFile as err:
        raise BrokenRecord(str(err)) from None
    if not isinstance(summary, dict):
        raise BrokenRecord(f"{path} holds a {type(summary).__name__}, not a noderun summary")
    return summary


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save a checkpoint so that a crash mid-write leaves the previous file in place."""
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory first: a failed write (a full disk) then says so as an OSError
    write_bytes_atomically(path, buffer.getbuffer())


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Return a checkpoint's state, loaded with weights_only=True: only tensors, numbers, strings and
    plain containers come back, and nothing in the file runs. Raise BrokenRecord naming the file when it
    is truncated, not a checkpoint, or holds anything else."""
    try:
        with open_regular(path) as handle:  # a FIFO or a device would block or never end the load
            state = torch.load(handle, map_location=device, weights_only=True)
    except UnsafeFile as err:
        raise BrokenRecord(str(err)) from None
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():  # torch's refusal of a pickle that would construct objects
            raise BrokenRecord(f"{path} holds objects other than tensors and plain values; refused, as loading "
                               f"it could run code") from None
        raise BrokenRecord(f"{path} is truncated or not a checkpoint (UnpicklingError); it cannot be loaded") from None
    except Exception as err:  # truncated zip, wrong format
        raise BrokenRecord(f"{path} is truncated or not a checkpoint ({type(err).__name__}); it cannot be "
                           f"loaded") from None
    if not isinstance(state, dict):
        raise BrokenRecord(f"{path} holds a {type(state).__name__}, not a noderun checkpoint")
    return state


def write_run_link(run_dir: Path, target: Path) -> None:
    """Record in run_dir that its run lives on in target (a resumed or already completed run)."""
    write_text_atomically(run_dir / RUN_LINK_FILE, json.dumps({"run_dir": str(target.resolve())}) + "\n")


def linked_run_dir(run_dir: Path) -> Path | None:
    """Return the run directory run_dir's run_link.json points to, if it has a readable one."""
    try:
        target = load_json(run_dir / RUN_LINK_FILE)["run_dir"]
    except (UnsafeFile, KeyError, TypeError):
        return None
    return Path(target) if isinstance(target, str) else None


def walk_folders(root: Path, problems: list[tuple[str, str]] | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """Yield (folder, its subfolders, its files) for root and every folder below it, symbolic links to
    folders not followed; a folder that cannot be listed (no permission, a path longer than the system
    allows) is passed over and, where `problems` is given, appended to it with the reason."""
    def passed_over(err: OSError) -> None:
        if problems is not None:
            problems.append((str(err.filename or root), f"cannot be listed ({err.strerror or err})"))

    for folder, subfolders, files in os.walk(root, onerror=passed_over):
        yield Path(folder), subfolders, files


def directory_entries(folder: Path) -> list[str]:
    """Return the names in a folder, sorted ([] when it does not exist); raise OSError when it cannot be
    listed."""
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []


# --- what a summary.json holds, by task: the writer (the run lifecycle, as a run completes) and the
# report's reader both check a summary against this, so the two cannot drift apart ----------------------

STATUSES = ("completed", "failed", "interrupted", "running")
TEXT, NUMBER, COUNT = "text", "a number", "a whole number >= 1"


@dataclass(frozen=True)
class SummarySchema:
    """The fields a task's summary.json holds besides those every run has (the lifecycle's): `recorded`
    from the start, `completed` added once the run completes (what the report's tables read), and
    `optional` ones, of their kind where a completed run gives them."""

    recorded: Mapping[str, str] = field(default_factory=dict)
    completed: Mapping[str, str] = field(default_factory=dict)
    optional: Mapping[str, str] = field(default_factory=dict)


# A training run records its model from the start; a time-series run only once its data are made, so a
# run that failed before then has none. A task not named here adds nothing the report checks.
SUMMARY_SCHEMAS: dict[str, SummarySchema] = {
    "train": SummarySchema(
        recorded={"model": TEXT},
        completed={"test_error": NUMBER, "params": COUNT, "epochs_done": COUNT, "train_time_s": NUMBER,
                   "peak_memory_mb": NUMBER},
        optional={"nfe_forward": NUMBER, "nfe_backward": NUMBER, "rtol": NUMBER}),
    "timeseries": SummarySchema(
        completed={"model": TEXT, "n_obs": COUNT, "n_points": COUNT, "test_rmse": NUMBER, "params": COUNT,
                   "nfe_forward": NUMBER, "nfe_backward": NUMBER, "train_time_s": NUMBER, "peak_memory_mb": NUMBER},
        optional={"test_rmse_observed": NUMBER, "seed": NUMBER, "rtol": NUMBER}),
    "tolerance": SummarySchema(optional={"ckpt": TEXT, "model": TEXT}),
    "cnf_density": SummarySchema(
        completed={"model": TEXT, "units": COUNT, "target": TEXT, "kl": NUMBER, "kl_se": NUMBER, "params": COUNT,
                   "nfe_forward": NUMBER, "nfe_backward": NUMBER, "nfe_forward_eval": NUMBER,
                   "train_time_s": NUMBER, "iterations": COUNT}),
    "cnf_mle": SummarySchema(
        completed={"model": TEXT, "units": COUNT, "dataset": TEXT, "test_nll": NUMBER, "test_nll_se": NUMBER,
                   "params": COUNT, "nfe_forward": NUMBER, "nfe_backward": NUMBER, "nfe_forward_eval": NUMBER,
                   "train_time_s": NUMBER, "iterations": COUNT}),
}


def is_kind(value: object, kind: str) -> bool:
    """Return whether value is of the kind (booleans are no numbers, infinities no measurements)."""
    if kind == TEXT:
        return isinstance(value, str) and bool(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == COUNT:
        return isinstance(value, int) and value >= 1
    return math.isfinite(value)


def shown(value: object, limit: int = 40) -> str:
    """Return value as a short one-line repr, for a reason."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def task_of(summary: Mapping[str, Any]) -> Any:
    """Return a summary's task (runs from before tasks were recorded trained a model: "train")."""
    return summary.get("task", "train")


def summary_problem(summary: dict) -> str | None:
    """Return what makes a summary break its task's schema (SUMMARY_SCHEMAS), in a few words, or None."""
    task = task_of(summary)
    if not isinstance(task, str):
        return f"summary.json: 'task' is {shown(task)}, not text"
    if "status" not in summary:
        return "summary.json lacks 'status'"
    status = summary["status"]
    if not isinstance(status, str) or status not in STATUSES:
        return f"summary.json: 'status' is {shown(status)}, not one of {', '.join(STATUSES)}"
    schema, completed = SUMMARY_SCHEMAS.get(task, SummarySchema()), status == "completed"
    for key, kind in {**schema.recorded, **(schema.completed if completed else {})}.items():
        if summary.get(key) is None:
            return f"summary.json lacks {key!r} ({status} {task} runs record it)"
        if not is_kind(summary[key], kind):
            return f"summary.json: {key!r} is {shown(summary[key])}, not {kind}"
    for key, kind in (schema.optional if completed else {}).items():
        if summary.get(key) is not None and not is_kind(summary[key], kind):
            return f"summary.json: {key!r} is {shown(summary[key])}, not {kind}"
    return None
