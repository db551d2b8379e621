"""Finding run directories and reading them into one table of runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from noderun.records import METRICS_FILE, RUN_LINK_FILE, SUMMARY_FILE, linked_run_dir
from noderun.report.paper import ODE_MODELS

# Config keys that never distinguish one experiment from another (where things live, how they show).
IGNORED_CONFIG_KEYS = ("seed", "resume", "device", "threads", "paths.", "dataset.root", "dataset.sources",
                       "dataset.download_timeout_s", "trainer.progress", "experiment")
# A preset's `reference:` block: a seed document's own figures, read by the table, never a row key.
REFERENCE_PREFIX = "config.reference."
# Config keys that mean nothing for models without an ODE block.
ODE_ONLY_PREFIXES = ("solver.", "model.adjoint", "model.t1")


@dataclass
class RunSet:
    """Every run found: the readable training runs as a table, the unreadable ones with the reason, and
    the measurement tasks (memory, gradcheck, tolerance), which are no part of Table 1."""

    runs: pd.DataFrame
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)  # each task's summary.json, with its run_dir
    varying: list[str] = field(default_factory=list)  # config keys that differ between completed runs

    @property
    def completed(self) -> pd.DataFrame:
        """Return the runs whose status is completed."""
        return self.runs[self.runs["status"] == "completed"] if len(self.runs) else self.runs


def _flat_config(run_dir: Path, model: str) -> dict[str, object]:
    """Return the run's resolved config as dotted keys, with keys that cannot matter left out."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        return {}
    plain = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    flat: dict[str, object] = {}

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}.", value)
        else:
            key = prefix[:-1]
            if key.startswith(IGNORED_CONFIG_KEYS):
                return
            if model not in ODE_MODELS and key.startswith(ODE_ONLY_PREFIXES):
                return
            flat[key] = json.dumps(node) if isinstance(node, list) else node

    walk("", plain)
    return flat


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Return every directory at or below the paths that holds a summary.json, and every run a
    run_link.json below them points to (a sweep re-run with resume=true), each once, in order."""
    found: list[Path] = []
    for root in paths:
        if (root / SUMMARY_FILE).exists():
            candidates = [root]
        else:
            candidates = sorted(p.parent for p in root.glob(f"**/{SUMMARY_FILE}"))
            candidates += [d for d in map(linked_run_dir, sorted(p.parent for p in root.glob(f"**/{RUN_LINK_FILE}")))
                           if d is not None and (d / SUMMARY_FILE).exists()]
        found += [c for c in candidates if c.resolve() not in {f.resolve() for f in found}]
    return found


def collect_runs(paths: list[Path]) -> RunSet:
    """Read every run below the paths into a RunSet; a run that cannot be read is listed, not fatal."""
    rows, unreadable, tasks = [], [], []
    for run_dir in find_run_dirs(paths):
        try:
            summary = json.loads((run_dir / SUMMARY_FILE).read_text())
            if isinstance(summary, dict) and summary.get("task", "train") != "train":
                tasks.append({**summary, "run_dir": str(run_dir)})
                continue
            if not isinstance(summary, dict) or "model" not in summary:
                raise ValueError("not a noderun summary")
            config = _flat_config(run_dir, summary["model"])
        except (OSError, ValueError) as err:
            unreadable.append((str(run_dir), f"unreadable summary.json or config: {err}"))
            continue
        rows.append({**summary, **{f"config.{k}": v for k, v in config.items()}, "run_dir": str(run_dir)})
    runs = pd.DataFrame(rows)
    run_set = RunSet(runs=runs, unreadable=unreadable, tasks=tasks)
    run_set.varying = _varying_config_keys(run_set.completed)
    return run_set


def _varying_config_keys(runs: pd.DataFrame) -> list[str]:
    """Return the config columns whose values differ between runs of the same model.

    Keys that differ only from one model to another (resnet's downsampling against odenet's, say)
    are part of what the model is, and the model is always a row key.
    """
    keys = []
    config_columns = [c for c in runs.columns if c.startswith("config.") and c != "config.model.name"
                      and not c.startswith(REFERENCE_PREFIX)]
    for column in config_columns:
        per_model = runs.groupby("model")[column].agg(lambda values: values.astype(str).nunique(dropna=False))
        if (per_model > 1).any():
            keys.append(column)
    return keys


def read_metrics(run_dir: str) -> pd.DataFrame | None:
    """Return a run's metrics.csv, or None if it has none that can be read."""
    try:
        return pd.read_csv(Path(run_dir) / METRICS_FILE)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None
