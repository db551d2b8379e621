"""The `noderun` console command: checks the command line (noderun.config), then runs the app."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import tempfile
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from noderun.command import CONF_DIR, parsed_command
from noderun.config import checked_overrides
from noderun.errors import UserError
from noderun.parallel import threads_per_job
from noderun.plugins import load_plugins
from noderun.safeio import DISK_FULL, printable

# noderun's hydra/launcher/joblib.yaml sets its own defaults (2 jobs) on the joblib plugin's schema of the
# same name; Hydra merges the two as intended, but warns of the naming three times a sweep and once in every
# joblib worker. Filtered on import, as the workers import this module to run their jobs.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/joblib' is validated against ConfigStore schema")
# Plugins register their models and their configs' types before any config is composed: here, on import,
# as every job process of a sweep (joblib, submitit) imports this module to run its job; main() says a
# plugin that fails to load in one line.
try:
    load_plugins()
except UserError as _plugin_error:
    PLUGIN_ERROR: UserError | None = _plugin_error
else:
    PLUGIN_ERROR = None
_OUTPUT_OVERRIDE = re.compile(r"^(paths\.output_root|hydra\.run\.dir|hydra\.sweep\.dir)=(.+)$")
# Less free space than this under the output folder is a full disk: a run could not write its first
# records (a 2-epoch Table 2 run of 20 spirals wrote 290 KiB, measured with du: checkpoints, predictions,
# figures).
MIN_FREE_BYTES = 256 << 10
# Where noderun writes a run's resolved config, Hydra's config and the overrides (Hydra's own place).
CONFIG_SUBDIR = ".hydra"  # noderun.records.CONFIG_DIR, named here without importing torch
# Hydra would write .hydra/ and open noderun.log in a job's directory before noderun could see whether
# that directory already holds a run; noderun writes both itself instead (noderun.run.lifecycle).
_HYDRA_WRITES_NOTHING = ("hydra.output_subdir=null", "~hydra.job_logging.handlers.file",
                         "hydra.job_logging.root.handlers=[console]")


def check_output_dirs(args: list[str]) -> None:
    """Raise UserError unless the folder runs will be written under can be created and written."""
    targets = [m.group(2) for m in map(_OUTPUT_OVERRIDE.match, args) if m] or ["outputs"]
    for target in targets:
        # Hydra interpolations (${now:...}) are filled in later; check the fixed part before them.
        base = Path(target.split("${")[0] or ".").expanduser()
        try:
            base.mkdir(parents=True, exist_ok=True)
            # A uniquely named probe, so that commands started together don't remove each other's.
            with tempfile.NamedTemporaryFile(dir=base, prefix=".noderun-write-probe-") as probe:
                probe.write(b"\0" * 4096)
                probe.flush()
                os.fsync(probe.fileno())
            stats = os.statvfs(base)
        except OSError as err:
            full = "the disk is full: " if err.errno in DISK_FULL else ""
            raise UserError(f"{full}cannot write runs under {str(base)!r} ({err.strerror or err}); choose a writable "
                            f"folder with paths.output_root=DIR") from None
        free = stats.f_bavail * stats.f_frsize
        if free < MIN_FREE_BYTES:
            raise UserError(f"the disk is full: {free // 1024} KiB free under {str(base)!r}; free some space or "
                            f"choose another folder with paths.output_root=DIR")


def check_sweep_dir(args: list[str]) -> None:
    """Raise UserError, before Hydra writes into it, when a sweep's fixed folder (hydra.sweep.dir=DIR)
    already holds anything and the command does not resume it."""
    fixed = [m.group(2) for m in map(_OUTPUT_OVERRIDE.match, args) if m and m.group(1) == "hydra.sweep.dir"]
    if not fixed or "${" in fixed[-1] or any(a in ("resume=true", "resume=True") for a in args):
        return
    folder = Path(fixed[-1]).expanduser()
    try:
        holds = folder.is_dir() and any(folder.iterdir())
    except OSError:
        holds = True
    if holds:
        raise UserError(f"hydra.sweep.dir={fixed[-1]} already holds a sweep; continue it with resume=true, or "
                        f"choose another directory (or leave hydra.sweep.dir out for a new one)")


def _noderun_writes(args: list[str]) -> list[str]:
    """Return the overrides that leave writing into a job's directory to noderun, unless the command
    chooses Hydra's output folder or logging itself."""
    if any(a.lstrip("+~").startswith(("hydra.output_subdir", "hydra/job_logging", "hydra.job_logging")) for a in args):
        return []
    return list(_HYDRA_WRITES_NOTHING)


def _config_files(cfg: DictConfig, hydra_cfg: DictConfig) -> dict[str, str]:
    """Return the files Hydra writes into a job's .hydra/ (when noderun writes them instead), by path."""
    if hydra_cfg.output_subdir is not None or "hydra.output_subdir=null" not in hydra_cfg.overrides.hydra:
        return {}
    hydra_node = OmegaConf.to_container(hydra_cfg, resolve=False)
    hydra_node["output_subdir"] = CONFIG_SUBDIR
    return {f"{CONFIG_SUBDIR}/config.yaml": OmegaConf.to_yaml(cfg),
            f"{CONFIG_SUBDIR}/hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_node}),
            f"{CONFIG_SUBDIR}/overrides.yaml": OmegaConf.to_yaml(list(hydra_cfg.overrides.task))}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> int:
    # torch is imported only once a run really starts
    from noderun.experiments import EXPERIMENTS
    from noderun.run.lifecycle import EXIT_INTERRUPTED, EXIT_OK, run_experiment

    hydra_cfg = HydraConfig.get()
    threads = threads_per_job(cfg.get("threads"), hydra_cfg.get("launcher"))
    run_dir = Path(hydra_cfg.runtime.output_dir)
    code = run_experiment(cfg, run_dir, EXPERIMENTS, overrides=list(hydra_cfg.overrides.task), threads=threads,
                          config_files=_config_files(cfg, hydra_cfg))
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
            if PLUGIN_ERROR is not None:
                raise PLUGIN_ERROR
            sweep = checked_overrides(args)
            command = parsed_command(args)
            if not command.shows_only:
                check_output_dirs(list(command.overrides))
                if sweep:
                    check_sweep_dir(list(command.overrides))
        except UserError as err:
            print(f"noderun: error: {printable(str(err))}", file=sys.stderr)
            sys.exit(2)
        if not (command.shows_only or command.own_config):
            sys.argv += _noderun_writes(list(command.overrides))
        # A log line that cannot be written (`noderun ... | head -1`, a full disk) is dropped, not
        # reported with a traceback: the run's own records say how it ended.
        logging.raiseExceptions = False
        _app()
    except KeyboardInterrupt:
        print("noderun: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        _stdout_flushed()


def _stdout_flushed() -> None:
    """Flush stdout; into a pipe its reader has closed, point it at nothing so Python's own flush at
    exit says nothing either."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"received signal {signum}")


if __name__ == "__main__":
    main()
