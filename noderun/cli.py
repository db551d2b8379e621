"""The `noderun` console command: checks the command line (noderun.config), then runs the app."""

from __future__ import annotations

import re
import signal
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from noderun.config import CONF_DIR, checked_overrides, parsed_command
from noderun.errors import UserError
from noderun.parallel import threads_per_job

_OUTPUT_OVERRIDE = re.compile(r"^(paths\.output_root|hydra\.run\.dir|hydra\.sweep\.dir)=(.+)$")


def check_output_dirs(args: list[str]) -> None:
    """Raise UserError unless the folder runs will be written under can be created and written."""
    targets = [m.group(2) for m in map(_OUTPUT_OVERRIDE.match, args) if m] or ["outputs"]
    for target in targets:
        # Hydra interpolations (${now:...}) are filled in later; check the fixed part before them.
        base = Path(target.split("${")[0] or ".").expanduser()
        try:
            base.mkdir(parents=True, exist_ok=True)
            # A uniquely named probe, so that commands started together don't remove each other's.
            with tempfile.NamedTemporaryFile(dir=base, prefix=".noderun-write-probe-"):
                pass
        except OSError as err:
            raise UserError(f"cannot write runs under {str(base)!r} ({err.strerror or err}); choose a writable "
                            f"folder with paths.output_root=DIR") from None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> int:
    # torch is imported only once a run really starts
    from noderun.experiments import EXPERIMENTS
    from noderun.lifecycle import EXIT_INTERRUPTED, EXIT_OK, run_experiment

    hydra_cfg = HydraConfig.get()
    threads = threads_per_job(cfg.get("threads"), hydra_cfg.get("launcher"))
    run_dir = Path(hydra_cfg.runtime.output_dir)
    code = run_experiment(cfg, run_dir, EXPERIMENTS, overrides=list(hydra_cfg.overrides.task), threads=threads)
    if hydra_cfg.mode == RunMode.MULTIRUN and code != EXIT_INTERRUPTED:
        # In a sweep a failed run is recorded, not raised, so that the other runs and the summary go on;
        # an interrupt (Ctrl-C, SIGTERM) stops the sweep.
        return code
    if code != EXIT_OK:
        sys.exit(code)
    return code


def main() -> None:
    """Entry point of the `noderun` command: a mistake in the command line is said in one line
    (exit 2) before Hydra starts anything."""
    args = sys.argv[1:]
    # Until a run's own lifecycle takes over the signals, SIGTERM ends the command as Ctrl-C does: with
    # one line and exit 130 (nothing has been recorded yet, so there is nothing to mark interrupted).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            checked_overrides(args)
            command = parsed_command(args)
            if not command.shows_only:
                check_output_dirs(list(command.overrides))
        except UserError as err:
            print(f"noderun: error: {err}", file=sys.stderr)
            sys.exit(2)
        _app()
    except KeyboardInterrupt:
        print("noderun: interrupted", file=sys.stderr)
        sys.exit(130)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"received signal {signum}")


if __name__ == "__main__":
    main()
