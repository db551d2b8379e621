"""What a summary.json must hold before the report uses it, by kind of run and status; a summary
that lacks a key or holds the wrong kind of value makes its run unreadable, never the report fail."""

from __future__ import annotations

import math

from noderun.safeio import printable  # noqa: F401  (the report's modules take it from here)

STATUSES = ("completed", "failed", "interrupted", "running")
TEXT, NUMBER, COUNT = "text", "a number", "a whole number >= 1"

# Keys a summary of a task must hold, by (task, whether completed): a completed run adds what the
# tables read. A training run records its model from the start; a time-series run only once its
# data are made, so a run that failed before then has none.
REQUIRED: dict[tuple[str, bool], dict[str, str]] = {
    ("train", False): {"model": TEXT},
    ("train", True): {"test_error": NUMBER, "params": COUNT, "epochs_done": COUNT, "train_time_s": NUMBER,
                      "peak_memory_mb": NUMBER},
    ("timeseries", True): {"model": TEXT, "n_obs": COUNT, "n_points": COUNT, "test_rmse": NUMBER,
                           "params": COUNT, "nfe_forward": NUMBER, "nfe_backward": NUMBER,
                           "train_time_s": NUMBER, "peak_memory_mb": NUMBER},
}
# Keys that may be missing or null but, where given, must be of their kind.
OPTIONAL: dict[tuple[str, bool], dict[str, str]] = {
    ("train", True): {"nfe_forward": NUMBER, "nfe_backward": NUMBER, "rtol": NUMBER},
    ("timeseries", True): {"test_rmse_observed": NUMBER, "seed": NUMBER, "rtol": NUMBER},
    ("tolerance", True): {"ckpt": TEXT, "model": TEXT},
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


def _keys(table: dict[tuple[str, bool], dict[str, str]], task: str, completed: bool) -> dict[str, str]:
    """Return the keys a table names for the task, those of completed runs included when completed."""
    return {**table.get((task, False), {}), **(table.get((task, True), {}) if completed else {})}


def summary_problem(summary: dict) -> str | None:
    """Return what makes the summary unusable, in a few words, or None when the report can use it."""
    task = summary.get("task", "train")
    if not isinstance(task, str):
        return f"summary.json: 'task' is {shown(task)}, not text"
    if "status" not in summary:
        return "summary.json lacks 'status'"
    status = summary["status"]
    if not isinstance(status, str) or status not in STATUSES:
        return f"summary.json: 'status' is {shown(status)}, not one of {', '.join(STATUSES)}"
    completed = status == "completed"
    for key, kind in _keys(REQUIRED, task, completed).items():
        if summary.get(key) is None:
            return f"summary.json lacks {key!r} ({status} {task} runs record it)"
        if not is_kind(summary[key], kind):
            return f"summary.json: {key!r} is {shown(summary[key])}, not {kind}"
    for key, kind in _keys(OPTIONAL, task, completed).items():
        if summary.get(key) is not None and not is_kind(summary[key], kind):
            return f"summary.json: {key!r} is {shown(summary[key])}, not {kind}"
    return None
