"""Finding runs by their summary.json and printing them as a Table-1-style summary."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from noderun.records import SUMMARY_FILE

MODEL_ORDER = ("mlp", "resnet", "rknet", "odenet")
MODEL_LABELS = {"mlp": "MLP", "resnet": "ResNet", "rknet": "RK-Net", "odenet": "ODE-Net"}
# Chen et al. 2018, Table 1 (test error in percent, parameters in millions).
PAPER_TABLE1 = {
    "mlp": {"test_error": 1.60, "params_m": 0.24},
    "resnet": {"test_error": 0.41, "params_m": 0.60},
    "rknet": {"test_error": 0.47, "params_m": 0.22},
    "odenet": {"test_error": 0.42, "params_m": 0.22},
}


def find_runs(paths: list[Path]) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Return (summaries that could be read, each with its run_dir; [(dir, why)] for unreadable ones)."""
    runs, unreadable = [], []
    for root in paths:
        found = [root / SUMMARY_FILE] if (root / SUMMARY_FILE).exists() else sorted(root.glob(f"**/{SUMMARY_FILE}"))
        for summary_path in found:
            try:
                summary = json.loads(summary_path.read_text())
                if not isinstance(summary, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as err:
                unreadable.append((summary_path.parent, f"unreadable summary.json: {err}"))
                continue
            summary["run_dir"] = str(summary_path.parent)
            runs.append(summary)
    return runs, unreadable


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def summary_rows(runs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Return one row per model of completed runs: test error mean ± std over seeds and the paper's figure."""
    rows = []
    completed = [r for r in runs if r.get("status") == "completed"]
    for model in sorted({r["model"] for r in completed}, key=lambda m: (MODEL_ORDER + (m,)).index(m)):
        group = [r for r in completed if r["model"] == model]
        paper = PAPER_TABLE1.get(model, {})
        rows.append({
            "model": MODEL_LABELS.get(model, model),
            "seeds": str(len(group)),
            "epochs": ",".join(sorted({str(r["epochs_done"]) for r in group})),
            "test error %": _mean_std([r["test_error"] for r in group]),
            "paper %": f"{paper['test_error']:.2f}" if paper else "-",
            "params (M)": f"{group[0]['params'] / 1e6:.3f}",
            "NFE-F": _mean_std([r["nfe_forward"] for r in group]) if group[0].get("solver") else "-",
            "NFE-B": _mean_std([r["nfe_backward"] for r in group]) if group[0].get("solver") else "-",
            "train s/epoch": _mean_std([r["train_time_s"] / r["epochs_done"] for r in group]),
            "peak MB": f"{max(r['peak_memory_mb'] for r in group):.0f}",
        })
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    """Return rows as a Markdown table (empty string when there are none)."""
    if not rows:
        return ""
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row[h] for h in headers) + " |" for row in rows]
    return "\n".join(lines)


def not_completed(runs: list[dict[str, Any]]) -> list[str]:
    """Return one line per run that did not complete, with its status and reason."""
    return [f"{r['run_dir']}: {r.get('status')} ({r.get('reason') or 'no reason recorded'})"
            for r in runs if r.get("status") != "completed"]
