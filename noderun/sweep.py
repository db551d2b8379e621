"""Hydra callback that ends every sweep with a one-screen summary of its runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from noderun.summary_table import find_runs, markdown_table, not_completed, summary_rows


class SweepSummary(Callback):
    """Prints and writes (summary.md in the sweep folder) a table of the sweep's runs; exits non-zero
    when any run did not complete."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        runs, unreadable = find_runs([sweep_dir])
        completed = sum(r.get("status") == "completed" for r in runs)
        problems = not_completed(runs) + [f"{d}: {why}" for d, why in unreadable]
        text = "\n".join(filter(None, [
            f"sweep {sweep_dir}: {completed} completed, {len(problems)} not completed",
            markdown_table(summary_rows(runs)),
            *problems,
        ]))
        print("\n" + text)
        if sweep_dir.exists():
            (sweep_dir / "summary.md").write_text(text + "\n")
        if problems:
            sys.exit(1)
