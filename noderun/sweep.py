"""Hydra callback that ends every sweep with its report: a one-screen table, files and figures."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    """Runs noderun-report on the sweep's folder (writing SWEEP/report/) and prints its table; exits
    non-zero when any run did not complete."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from noderun.errors import UserError
        from noderun.report.cli import build_report, not_completed_lines, print_to_pipe
        from noderun.safeio import printable

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            text, run_set = build_report([sweep_dir], sweep_dir / "report")
        except LookupError as err:
            print(f"noderun: error: {printable(str(err))}", file=sys.stderr)
            sys.exit(1)
        except UserError as err:
            print(f"noderun: error: {printable(str(err))}", file=sys.stderr)
            sys.exit(2)
        print_to_pipe("\n" + text)
        if not_completed_lines(run_set):
            sys.exit(1)
