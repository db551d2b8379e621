"""One run lifecycle for every experiment: where it writes, what it resumes, how it ends.

`run_experiment` takes a composed config and the experiment registry and returns the process's exit
code. Whatever the experiment, the run directory then holds a summary.json with the same fields (status,
reason, key config, versions, timings), the experiment's own numbers by its task's schema
(noderun.records.SUMMARY_SCHEMAS), metrics.csv where there are epochs,
and checkpoints written whole or not at all. A signal ends the run as `interrupted` (exit 130), a
failure as `failed` (exit 1), a mistake as one line (exit 2); none of them damages a record already
written, because every write happens with signals deferred and lands by an atomic rename.
"""

from __future__ import annotations

import errno
import logging
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torchdiffeq
from omegaconf import DictConfig, OmegaConf

from noderun.checks import check_config
from noderun.data import DATASETS, datasets_of_kind
from noderun.errors import UserError
from noderun.loggers import RunLoggers
from noderun.records import (LOG_FILE, SUMMARY_FILE, summary_problem, write_run_link, write_summary,
                             write_text_atomically)
from noderun.run.identity import resolved_key_config, run_key
from noderun.run.lock import RunLock
from noderun.run.logfile import log_also_to, log_to_file
from noderun.run.recorder import RunRecorder
from noderun.run.resume import capabilities, held_run, labels_kept, restored_state, resume_target
from noderun.run.signals import signal_handlers, signals_deferred
from noderun.safeio import DISK_FULL, UnsafeFile, printable, read_text
from noderun.train import TrainingFailure

log = logging.getLogger("noderun")

EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class ExperimentEntry:
    """One experiment of the registry: `run(cfg, recorder)` does its work; `kinds` are the kinds of
    dataset it takes (noderun.data.DATASETS; empty: it uses none); `trains` says whether it checkpoints
    and so resumes from its last epoch (one that does not is redone by resume=true unless it completed)."""

    run: Callable[[DictConfig, "RunRecorder"], None]
    kinds: tuple[str, ...] = ()
    trains: bool = False


def check_dataset(cfg: DictConfig, entry: ExperimentEntry) -> None:
    """Raise UserError unless the run's dataset is one the experiment takes, naming those it does."""
    name = OmegaConf.select(cfg, "dataset.name")
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if entry.kinds and DATASETS[name].kind not in entry.kinds:
        takes = datasets_of_kind(*entry.kinds)
        raise UserError(f"dataset={name} cannot be used with task={cfg.task} (model={OmegaConf.select(cfg, 'model.name')}); "
                        f"it takes dataset={' or dataset='.join(takes)}")


def choose_device(name: str) -> torch.device:
    """Return the torch device for device=auto|cpu|cuda[:N]."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def configure_torch(cfg: DictConfig, threads: int | None) -> None:
    """Set torch's intra-op threads (None: torch's default) and whether cuDNN may choose its fastest,
    nondeterministic convolutions (`deterministic=false`; the same seed gave RK-Net losses 2.330114
    and 2.330013 on an H100 without it)."""
    if threads:
        torch.set_num_threads(threads)
    deterministic = bool(cfg.get("deterministic", True))
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def initial_summary(cfg: DictConfig, key: str | None, key_cfg: dict[str, Any] | None,
                    overrides: list[str]) -> dict[str, Any]:
    """Return the fields every run's summary.json has; the experiment adds its own numbers."""
    return {
        "task": str(cfg.task), "status": "running", "reason": None,
        "seed": cfg.seed, "dataset": OmegaConf.select(cfg, "dataset.name"),
        "tags": [str(t) for t in cfg.get("tags") or []], "note": cfg.get("note"),
        "device": None, "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__, "torchdiffeq_version": torchdiffeq.__version__,
        "python_version": platform.python_version(), **cpu_fields(),
        "epochs": OmegaConf.select(cfg, "trainer.epochs"), "epochs_done": 0,
        "time_s": None, "files": [],
        "run_key": key, "key_config": key_cfg, "overrides": overrides,
        "started": _now(), "finished": None, "resumed": [],
    }


def cpu_fields() -> dict[str, str | None]:
    """Return the CPU capability torch's kernels were chosen for (AVX512, AVX2, ...) and the CPU's model
    name where the system says it. The same seed gives the same numbers only on the same software and
    capability: float32 convolutions round differently under AVX512 and AVX2 kernels, and a training run
    amplifies that within a few hundred steps (docs/records.md)."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": _cpu_model()}


def _cpu_model() -> str | None:
    """Return the CPU's model name from /proc/cpuinfo (Linux), else platform's; None when neither says."""
    try:
        for line in read_text("/proc/cpuinfo").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and value.strip():
                return value.strip()
    except UnsafeFile:  # no /proc (not Linux), or a cpuinfo past the size limit
        pass
    return platform.processor() or None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_experiment(cfg: DictConfig, run_dir: Path, experiments: Mapping[str, ExperimentEntry],
                   overrides: list[str], threads: int | None = None,
                   config_files: Mapping[str, str] | None = None) -> int:
    """Run the experiment cfg.task names in run_dir (or in the run it resumes); return the exit code.

    `config_files` (relative path: text; the CLI passes Hydra's .hydra/ files) are written into run_dir
    when it is a new directory. A directory that already holds a run is continued only on resume and is
    otherwise refused with nothing in it changed (noderun writes only files it made)."""
    # Filled in once the config is known to resolve; a mistake found before that is still recorded.
    summary = initial_summary(cfg, None, None, overrides)
    target = run_dir
    fresh = False  # whether run_dir is a new directory, this run's own to write
    lock: RunLock | None = None
    running: RunRecorder | None = None
    extra_log: list[logging.Handler] = []

    def work() -> int:
        nonlocal target, lock, running, fresh
        held = held_run(cfg, run_dir)
        if not held:
            fresh = True
            extra_log.append(log_also_to(run_dir / LOG_FILE))
            with signals_deferred():
                for name, text in (config_files or {}).items():
                    (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
                    write_text_atomically(run_dir / name, text)
        entry = experiments.get(str(cfg.task))
        if entry is None:
            raise UserError(f"unknown task {cfg.task!r}; choose one of: {', '.join(experiments)}")
        check_config(cfg)
        check_dataset(cfg, entry)
        key_cfg = resolved_key_config(cfg)
        key = run_key(key_cfg)
        summary.update(run_key=key, key_config=key_cfg)
        configure_torch(cfg, threads)
        summary["torch_threads"] = torch.get_num_threads()
        device = choose_device(str(cfg.device))
        previous, previous_summary = resume_target(cfg, run_dir, key, key_cfg, held)
        if previous is not None:
            if fresh:
                write_run_link(run_dir, previous)  # so a sweep's report still finds the run it stands for
            if previous_summary.get("status") == "completed":
                log.info("resume: this run already completed in %s; nothing to do", previous)
                return EXIT_OK
            target = previous
        lock = RunLock(target)
        lock.acquire()
        state = None
        if previous is not None and entry.trains:
            state = restored_state(previous, key_cfg, device)
        if previous is not None:
            extra_log.append(log_also_to(previous / LOG_FILE))  # refused for a link: before anything changes
            for leftover in previous.glob(".*.tmp"):  # a killed process's half-written files
                leftover.unlink(missing_ok=True)
            # The experiment's own numbers so far carry over: a run killed after its last epoch's record
            # resumes with no epoch left to do and must still end with them.
            summary.update({k: v for k, v in previous_summary.items() if k not in summary},
                           epochs_done=len(state["rows"]) if state else 0, started=previous_summary.get("started"),
                           time_s=previous_summary.get("time_s"),
                           resumed=[*previous_summary.get("resumed", []), _now()],
                           **labels_kept(previous_summary, summary),
                           cpu_capability=capabilities(previous_summary.get("cpu_capability"),
                                                        summary["cpu_capability"]))
            if "+" in summary["cpu_capability"]:
                log.warning("resume: this run's sittings ran on CPU capabilities %s; its numbers are no longer "
                            "those of one capability", summary["cpu_capability"])
            log.info("resume: continuing the run in %s%s", previous,
                     f" from epoch {len(state['rows'])}" if state else " from the start")
        summary["device"] = str(device)
        recorder = RunRecorder(cfg, target, summary, device, state)
        recorder.loggers = RunLoggers(cfg, target, key_cfg, summary)
        if previous is None:
            with signals_deferred():
                write_summary(target, summary)
        # A resumed run's record is first rewritten once the experiment has taken its checkpoint's state
        # (RunRecorder.restore): a checkpoint that does not fit is refused with the record as it was.
        running = recorder
        return _timed(entry, cfg, recorder)

    def finish(status: str, reason: str | None, code: int, user_error: bool = False) -> int:
        # A refusal before the run started writes nothing into a directory that held a run already: an
        # earlier run's record stays as it was.
        writes = (fresh and target == run_dir) or (running is not None and running.wrote)
        record_end(target, summary if writes else {}, status, reason, user_error)
        if running is not None and running.loggers is not None:
            running.loggers.end(summary, target, status)
        return code

    try:
        with signal_handlers():
            return run_guarded(work, finish, started=lambda: running is not None and running.wrote)
    finally:
        if lock is not None:
            lock.release()
        for handler in extra_log:
            logging.getLogger().removeHandler(handler)
            handler.close()


def _timed(entry: ExperimentEntry, cfg: DictConfig, recorder: RunRecorder) -> int:
    """Run the experiment, then record it completed with its wall time."""
    start, before = time.perf_counter(), recorder.summary.get("time_s") or 0  # before: earlier sittings'
    entry.run(cfg, recorder)
    recorder.summary["time_s"] = round(before + time.perf_counter() - start, 2)
    # The report reads a completed run by its task's schema: a summary that breaks it is noderun's own
    # bug, and the run fails saying so rather than completing unreadable.
    problem = summary_problem({**recorder.summary, "status": "completed"})
    if problem:
        raise RuntimeError(f"the run's summary breaks its task's schema (noderun.records.SUMMARY_SCHEMAS): {problem}")
    record_end(recorder.run_dir, recorder.summary, "completed", None)
    if recorder.loggers is not None:
        recorder.loggers.end(recorder.summary, recorder.run_dir, "completed")
    log.info("%s completed in %.1f s; written to %s", cfg.task, recorder.summary["time_s"], recorder.run_dir)
    return EXIT_OK


def run_guarded(work: Callable[[], int], finish: Callable[..., int], started: Callable[[], bool] = lambda: True) -> int:
    """Return work()'s exit code; when it raises, return finish(status, reason, code, user_error=...)'s.

    A UserError is the user's mistake (exit 2), and so is a file that cannot be written before the run
    has `started` writing its records (a full disk, a read-only folder: one line naming it); a full disk
    later fails the run with a reason that says so. A TrainingFailure, or any other error (a solver's,
    the library's: its traceback goes to the log file), is a failure (exit 1); Ctrl-C or SIGTERM an
    interruption (exit 130).
    """
    try:
        return work()
    except UserError as err:
        return finish("failed", str(err), EXIT_USER_ERROR, user_error=True)
    except TrainingFailure as err:
        return finish("failed", str(err), EXIT_FAILED)
    except KeyboardInterrupt as err:
        return finish("interrupted", str(err) or "interrupted by the user", EXIT_INTERRUPTED)
    except Exception as err:  # a solver's or the library's own error: record it, don't lose the run
        log_to_file(logging.ERROR, "run failed", exc_info=True)
        if not (isinstance(err, OSError) and err.errno in _WRITE_REFUSED):
            return finish("failed", f"{type(err).__name__}: {err}", EXIT_FAILED)
        if not started():
            return finish("failed", f"{_os_problem(err)}; {_os_remedy(err)}", EXIT_USER_ERROR, user_error=True)
        return finish("failed", _os_problem(err), EXIT_FAILED)


# A file operation refused by the machine rather than failed by noderun: a full disk, a read-only or
# forbidden folder. Before a run has written its records, that is the user's to fix (one line, exit 2).
_WRITE_REFUSED = (*DISK_FULL, errno.EROFS, errno.EACCES, errno.EPERM)


def _os_problem(err: OSError) -> str:
    """Return what a failed file operation means, naming the file; a full disk is called one."""
    where = f" {err.filename}" if err.filename else ""
    if err.errno in DISK_FULL:
        return f"the disk is full: cannot write{where} ({err.strerror or err})"
    return f"cannot write{where} ({err.strerror or err})"


def _os_remedy(err: OSError) -> str:
    """Return what to do about a file that could not be written before the run started."""
    if err.errno in DISK_FULL:
        return "free some space, or choose another folder with paths.output_root=DIR"
    return "make its folder writable (a run is continued where it was made), or run in another folder"


def record_end(run_dir: Path, summary: dict[str, Any], status: str, reason: str | None,
               user_error: bool = False) -> None:
    """Say in one line on stderr why a run ended short of completion (the log keeps the details), and
    write its status, reason and end time into its summary.json (when it has one to write)."""
    if reason:
        # one line of printable text: a reason may quote what a hostile file holds
        print(f"noderun: {'error' if user_error else status}: {printable(reason)}", file=sys.stderr)
        log_to_file(logging.INFO, f"run {status}: {reason}")
    if not summary:
        return
    summary.update(status=status, reason=reason, finished=_now())
    try:
        with signals_deferred(deliver=False):
            write_summary(run_dir, summary, in_place_when_full=True)
    except OSError as err:
        if err.errno not in DISK_FULL or "disk is full" not in (reason or ""):  # else the line above said it
            print(f"noderun: error: could not write {run_dir / SUMMARY_FILE}: {err}", file=sys.stderr)


