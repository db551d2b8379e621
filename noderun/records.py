"""What a run leaves in its directory: metrics.csv, summary.json and checkpoints, all written atomically."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

METRICS_COLUMNS = (
    "epoch", "lr", "train_loss", "train_acc", "val_acc", "test_acc", "nfe_forward", "nfe_backward",
    "nfe_forward_eval", "test_forward_s", "epoch_time_s", "eval_time_s", "peak_memory_mb", "saved_mb",
    "flops_per_step",
)
# Columns that measure the machine rather than the computation; they differ between identical runs.
TIMING_COLUMNS = ("test_forward_s", "epoch_time_s", "eval_time_s", "peak_memory_mb")
SUMMARY_FILE = "summary.json"
RUN_LINK_FILE = "run_link.json"
METRICS_FILE = "metrics.csv"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
# Table 2 runs: a few test spirals in long form (truth, observations, predictions), for figures.
PREDICTIONS_FILE = "spiral_predictions.csv"


def _replace_atomically(path: Path, write) -> None:
    """Call write(tmp_path), then move tmp_path over path, so path is always whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_text_atomically(path: Path, text: str) -> None:
    """Replace path's content with text in one step."""
    def write(tmp: Path) -> None:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    _replace_atomically(path, write)


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Write metrics.csv with one row per finished epoch."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(run_dir / METRICS_FILE, buffer.getvalue())


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write summary.json."""
    write_text_atomically(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=False) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Return the run's summary.json as a dict (raises OSError or ValueError when unreadable)."""
    return json.loads((run_dir / SUMMARY_FILE).read_text())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save a checkpoint so that a crash mid-write leaves the previous file in place."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())

    _replace_atomically(path, write)


def run_key(config: dict[str, Any]) -> str:
    """Return a short hash identifying a run's computation, for finding it again on resume."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_run_link(run_dir: Path, target: Path) -> None:
    """Record in run_dir that its run lives on in target (a resumed or already completed run)."""
    write_text_atomically(run_dir / RUN_LINK_FILE, json.dumps({"run_dir": str(target.resolve())}) + "\n")


def linked_run_dir(run_dir: Path) -> Path | None:
    """Return the run directory run_dir's run_link.json points to, if it has a readable one."""
    try:
        return Path(json.loads((run_dir / RUN_LINK_FILE).read_text())["run_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_previous_run(output_root: Path, key: str, exclude: Path) -> Path | None:
    """Return the newest run directory under output_root whose summary carries `key`, if any."""
    candidates = []
    for summary_path in output_root.glob(f"**/{SUMMARY_FILE}"):
        run_dir = summary_path.parent
        if run_dir.resolve() == exclude.resolve():
            continue
        try:
            if read_summary(run_dir).get("run_key") == key:
                candidates.append((summary_path.stat().st_mtime, run_dir))
        except (OSError, ValueError):
            continue
    return max(candidates)[1] if candidates else None
