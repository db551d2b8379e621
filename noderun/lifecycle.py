"""One run lifecycle for every experiment: where it writes, what it resumes, how it ends.

`run_experiment` takes a composed config and the experiment registry and returns the process's exit
code. Whatever the experiment, the run directory then holds one summary.json schema (status, reason,
key config, versions, timings, and the experiment's own numbers), metrics.csv where there are epochs,
and checkpoints written whole or not at all. A signal ends the run as `interrupted` (exit 130), a
failure as `failed` (exit 1), a mistake as one line (exit 2); none of them damages a record already
written, because every write happens with signals deferred and lands by an atomic rename.
"""

from __future__ import annotations

import errno
import logging
import os
import platform
import signal
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pandas as pd
import torch
import torchdiffeq
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from noderun.config import check_config
from noderun.data import DATASETS, datasets_of_kind
from noderun.errors import UserError
from noderun.records import (BEST_CHECKPOINT, LAST_CHECKPOINT, LOCK_FILE, LOG_FILE, RUN_LINK_FILE, SUMMARY_FILE,
                             BrokenRecord, config_as_today, directory_entries, find_previous_run, has_key,
                             linked_run_dir, load_checkpoint, read_summary, run_key, save_checkpoint,
                             without_keys, write_metrics, write_run_link, write_summary, write_text_atomically)
from noderun.safeio import DISK_FULL, UnsafeFile, open_append, printable, read_text
from noderun.train import TrainingFailure

log = logging.getLogger("noderun")

EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
# Config keys that say where things are kept or how they are shown, not what is computed: left out of
# the run key, so they may differ between a run and its resumption.
NOT_IN_KEY = ("resume", "caption", "tags", "note", "paths", "device", "threads", "trainer.progress", "trainer.measure_step",
              "dataset.root", "dataset.sources", "dataset.download_timeout_s")


@dataclass(frozen=True)
class ExperimentEntry:
    """One experiment of the registry: `run(cfg, recorder)` does its work; `kinds` are the kinds of
    dataset it takes (noderun.data.DATASETS; empty: it uses none); `trains` says whether it checkpoints and so resumes from its last epoch (one
    that does not is redone by resume=true unless it completed)."""

    run: Callable[[DictConfig, "RunRecorder"], None]
    kinds: tuple[str, ...] = ()
    trains: bool = False


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised in the main thread between writes."""


_deferring = 0
_pending: int | None = None


def _on_signal(signum: int, frame: Any) -> None:
    """Raise Interrupted now, or, inside a write (`signals_deferred`), once the write is done.

    Python runs signal handlers in the main thread between bytecodes, whichever thread the process
    got the signal on; deferring here (not with pthread_sigmask, which only masks the main thread)
    keeps the handler from raising inside torch.save.
    """
    global _pending
    if _deferring:
        _pending = signum
        return
    raise Interrupted(f"received signal {signum}")


@contextmanager
def signals_deferred(deliver: bool = True) -> Iterator[None]:
    """Hold SIGTERM/SIGINT back while the block runs; afterwards raise Interrupted for one that came
    (unless `deliver` is false: the run is ending anyway)."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            if deliver:
                raise Interrupted(f"received signal {signum}")


@contextmanager
def signal_handlers() -> Iterator[None]:
    """Route SIGTERM and SIGINT through `_on_signal` while the block runs, then put back what was there
    (main thread only; in a launcher's worker thread the launcher's handling stays)."""
    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _on_signal)
    except ValueError:
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def key_config(cfg: DictConfig) -> dict[str, Any]:
    """Return the part of the config that determines a run's results (hashed into its run key)."""
    return without_keys(OmegaConf.to_container(cfg, resolve=True), NOT_IN_KEY)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def differing_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Return the dotted keys whose values differ between an earlier run's key config (read as today's
    config would write it: noderun.records.config_as_today) and this run's."""
    a, b = _flat(config_as_today(old)), _flat(dict(new))
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


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


def _capabilities(before: object, now: str) -> str:
    """Return the capabilities a resumed run's sittings used, in order ("AVX512+AVX2"): a run continued
    under other kernels than it began with is no longer one capability's numbers, and says so."""
    seen = str(before).split("+") if isinstance(before, str) and before else []
    return "+".join(seen if seen and seen[-1] == now else [*seen, now])


def _labels_kept(before: dict, now: dict) -> dict[str, Any]:
    """Return a resumed run's tags and note: the earlier sittings' tags with this command's added, and
    this command's note, or the earlier one where this command gives none."""
    earlier = [t for t in before.get("tags") or [] if isinstance(t, str)]
    return {"tags": earlier + [t for t in now["tags"] if t not in earlier],
            "note": now["note"] if now["note"] is not None else before.get("note")}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunLock:
    """A lock file in a run directory: one process at a time runs it.

    The lock appears with its holder already written in it (a hard link to a complete file, which
    fails if a lock exists), so no other process ever reads it half-written. A lock whose process is
    gone from this machine is taken over; one held on another machine (a cluster node) cannot be
    checked from here, so the refusal names the file to delete once that process is known to be gone.
    Two processes may find the same stale lock: each moves the lock file aside (one atomic rename) and
    deletes it only if it is still the stale one it judged, so that neither deletes the lock the other
    has just taken; the loser puts that lock back.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.mine = f"{socket.gethostname()} {os.getpid()}\n"
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise UserError naming the process that holds it and the lock file."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise UserError(f"{self.path} is not a lock file noderun made (it is a directory, link or other "
                            f"file); remove it once no noderun process runs {self.path.parent}")
        draft = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
        draft.write_text(self.mine)
        try:
            for _ in range(3):
                try:
                    os.link(draft, self.path)
                except FileExistsError:
                    stale = self._read()
                    holder = self._live_holder(stale)
                    if holder:
                        raise UserError(f"{self.path.parent.resolve()} is being run by process {holder} (lock file "
                                        f"{self.path.resolve()}); wait for it to end, or delete the lock file if "
                                        f"that process is gone") from None
                    self.remove_if_still(stale)
                    continue
                self.held = True
                return
        finally:
            draft.unlink(missing_ok=True)
        raise UserError(f"could not take the lock {self.path}; other processes keep taking it")

    def _read(self) -> str | None:
        """Return the lock file's text (None when it is gone or unreadable)."""
        try:
            return read_text(self.path, 4096, follow=False)
        except UnsafeFile:
            return None

    def remove_if_still(self, stale: str | None) -> None:
        """Delete the lock file if it still holds `stale` (what this process judged stale); a lock that
        another process took meanwhile is put back where it was."""
        aside = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.stale")
        try:
            os.rename(self.path, aside)  # atomic: of two processes, one moves the file, the other finds none
        except FileNotFoundError:
            return
        try:
            if read_text(aside, 4096, follow=False) != stale:
                os.link(aside, self.path)  # not the stale lock: another process's, so it goes back
        except (OSError, UnsafeFile):
            pass  # a third process took the free name meanwhile: the lock there is its own
        finally:
            aside.unlink(missing_ok=True)

    def _live_holder(self, text: str | None) -> str | None:
        """Return who holds a lock with this text if that process may still be running, else None."""
        try:
            host, pid = (text or "").split()
            pid_number = int(pid)
        except ValueError:
            return None  # garbage: no noderun process wrote it
        if host != socket.gethostname():
            return f"{pid} on {host}"
        try:
            os.kill(pid_number, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def release(self) -> None:
        """Remove the lock if this process holds it (and it is still this process's)."""
        if self.held:
            try:
                if read_text(self.path, 4096, follow=False) == self.mine:
                    self.path.unlink()
            except (OSError, UnsafeFile):
                pass
            self.held = False


class RunRecorder:
    """What an experiment writes through: the run's directory, summary, metrics rows and checkpoints.

    Every write is atomic (a temporary file renamed over the old one) and happens with signals
    deferred, and a checkpoint is written before the row it stands behind, so metrics.csv never lists
    an epoch that cannot be resumed from.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, summary: dict[str, Any], device: torch.device,
                 state: dict[str, Any] | None = None):
        self.cfg = cfg
        self.run_dir = run_dir
        self.summary = summary
        self.device = device
        self.rows: list[dict[str, Any]] = list(state.get("rows", [])) if state else []
        self._state = state
        self.wrote = False  # whether this process has written into the run directory yet

    def restored(self) -> dict[str, Any] | None:
        """Return the state the experiment saved with its last checkpoint when this run resumes, else None;
        when resuming, also put torch's random number generators back as they were at that checkpoint (a
        latent ODE samples from them), so the run goes on exactly as an uninterrupted one would. Call it
        once, after building the model."""
        if self._state and "rng_cpu" in self._state:
            with self._refusing_a_misfit():
                torch.set_rng_state(self._state["rng_cpu"])
                if self._state.get("rng_cuda") is not None and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(self._state["rng_cuda"])
        return self._state

    def restore(self, **modules: Any) -> bool:
        """Load the last checkpoint's state into each named module or optimizer (model=..., optimizer=...)
        and the random number generators (see `restored`) when this run resumes; return whether it did.
        A checkpoint whose state does not fit is refused with one line naming it (UserError), before
        anything is written into the run directory."""
        state = self.restored()
        if not state:
            return False
        with self._refusing_a_misfit():
            for name, module in modules.items():
                module.load_state_dict(state[name])
        return True

    def restore_best(self, **modules: Any) -> None:
        """Load best.pt's state (the reported epoch's) into each named module; a broken file or a state
        that does not fit is refused with one line naming it (UserError)."""
        path = self.run_dir / BEST_CHECKPOINT
        try:
            state = load_checkpoint(path, self.device)
        except (BrokenRecord, FileNotFoundError) as err:
            raise UserError(f"cannot read the reported epoch's weights: {err}") from None
        with self._refusing_a_misfit(path, "cannot read the reported epoch's weights"):
            for name, module in modules.items():
                module.load_state_dict(state[name])

    @contextmanager
    def _refusing_a_misfit(self, path: Path | None = None, doing: str = "cannot resume") -> Iterator[None]:
        try:
            yield
        except Exception as err:  # a planted or foreign checkpoint: missing keys, wrong shapes or types
            raise UserError(f"{doing}: {path or self.run_dir / LAST_CHECKPOINT} does not fit this run "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})") from None

    def _full_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Return `state` with what every checkpoint carries: the rows so far, the run's key config and
        torch's random number generators."""
        return {**state, "rows": self.rows, "run_key": self.summary["run_key"], "key_config": self.summary["key_config"],
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def update(self, **fields: Any) -> None:
        """Add the experiment's own numbers to summary.json and write it."""
        self.summary.update(fields)
        self.wrote = True
        with signals_deferred():
            write_summary(self.run_dir, self.summary)

    def record_epoch(self, row: dict[str, Any], state: dict[str, Any], best: bool = False, **fields: Any) -> None:
        """Append an epoch's metrics row and save `state` (what the experiment needs to go on from
        here: tensors, numbers, strings and plain containers only) as last.pt, and as best.pt when
        `best`; then rewrite metrics.csv and the summary with `fields`."""
        self.rows.append(row)
        full = self._full_state(state)
        self.wrote = True
        with signals_deferred():
            if best:
                save_checkpoint(self.run_dir / BEST_CHECKPOINT, {**full, "optimizer": None})
            save_checkpoint(self.run_dir / LAST_CHECKPOINT, full)
            write_metrics(self.run_dir, self.rows)
            self.summary.update(epochs_done=row.get("epoch", len(self.rows)), **fields)
            write_summary(self.run_dir, self.summary)

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Save `state` as last.pt without a metrics row (progress inside an experiment that has no epochs)."""
        self.wrote = True
        with signals_deferred():
            save_checkpoint(self.run_dir / LAST_CHECKPOINT, self._full_state(state))

    def write_file(self, name: str, content: str | pd.DataFrame) -> Path:
        """Write a text file or a table (CSV) into the run directory in one step and list it in the summary."""
        path = self.run_dir / name
        text = content.to_csv(index=False) if isinstance(content, pd.DataFrame) else content
        self.wrote = True
        with signals_deferred():
            write_text_atomically(path, text)
        self.add_files(name)
        return path

    def add_files(self, *names: str) -> None:
        """List files the experiment wrote itself (figures) in the summary."""
        self.summary["files"] += [n for n in names if n not in self.summary["files"]]


def _resolved_key_config(cfg: DictConfig) -> dict[str, Any]:
    """Return key_config(cfg), or raise UserError for an interpolation that does not resolve (a model's
    setting that refers to a key of another dataset than the one chosen)."""
    try:
        return key_config(cfg)
    except OmegaConfBaseException as err:
        raise UserError(f"the config does not resolve: {str(err).splitlines()[0]} (a setting refers to a key "
                        f"the chosen groups do not have)") from None


def _resumes(cfg: DictConfig) -> bool:
    """Return whether the run was asked to continue the newest run of its config (resume=true)."""
    return cfg.resume is True or cfg.resume == "true"


def _held_run(cfg: DictConfig, run_dir: Path) -> bool:
    """Return whether run_dir already holds a run that this one is to continue (resume=true, or resume=DIR
    naming run_dir itself); False for an empty or new directory. Raise UserError, changing nothing, for
    a directory that holds a run without resume, or files noderun did not write."""
    try:
        entries = directory_entries(run_dir)
    except OSError as err:
        raise UserError(f"cannot list the run directory {run_dir} ({err.strerror or err}); choose another "
                        f"directory with hydra.run.dir=DIR") from None
    if not entries:
        return False
    if SUMMARY_FILE not in entries and RUN_LINK_FILE not in entries:
        raise UserError(f"{run_dir} holds files noderun did not write ({', '.join(entries[:4])}"
                        f"{', ...' if len(entries) > 4 else ''}); choose another directory (hydra.run.dir=DIR, "
                        f"or leave it out for a new one)")
    names_itself = cfg.resume not in (True, False, None, "true", "false") and \
        Path(str(cfg.resume)).expanduser().resolve() == run_dir.resolve()
    if not (_resumes(cfg) or names_itself):
        raise UserError(f"{run_dir} already holds a run; continue it with resume=true, or choose another "
                        f"directory (hydra.run.dir=DIR or hydra.sweep.dir=DIR, or leave it out for a new one)")
    return True


def _resume_target(cfg: DictConfig, run_dir: Path, key: str, key_cfg: dict[str, Any],
                   held: bool) -> tuple[Path | None, dict | None]:
    """Return (the earlier run directory to continue in, its summary), or (None, None) to start afresh.

    resume=true continues the run run_dir itself holds (`held`: a fixed hydra.run.dir or a sweep's job
    directory), refused in one line when it is another config's; failing that, the newest run with the
    same run key under paths.output_root. resume=DIR takes that run if its key config is this one's
    (refused in one line naming the keys that differ: even trainer.epochs, since the learning rate's
    decay points are fractions of the run)."""
    if cfg.resume in (False, None, "false"):
        return None, None
    if held:
        return _own_run(run_dir, key, key_cfg)
    if _resumes(cfg):
        previous = find_previous_run(Path(str(cfg.paths.output_root)), key, exclude=run_dir)
        return (previous, _previous_summary(previous)) if previous else (None, None)
    path = Path(str(cfg.resume)).expanduser()
    if not (path / SUMMARY_FILE).is_file():
        raise UserError(f"resume={cfg.resume}: no run directory there (no {SUMMARY_FILE}); pass resume=true to find "
                        f"the run with this config, or the path of a run directory")
    summary = _previous_summary(path)
    _refuse_another_config(path, summary, key_cfg, f"resume={path} refused")
    return path, summary


def _own_run(run_dir: Path, key: str, key_cfg: dict[str, Any]) -> tuple[Path, dict]:
    """Return the run run_dir holds (or the one its run_link.json points to) and its summary, if it is of
    this config; else raise UserError naming the directory and the keys that differ."""
    own = run_dir
    if not (run_dir / SUMMARY_FILE).exists():
        own = linked_run_dir(run_dir)
        if own is None or not (own / SUMMARY_FILE).is_file():
            raise UserError(f"{run_dir / RUN_LINK_FILE} is unreadable or points to no run; choose another "
                            f"directory (hydra.run.dir=DIR, or leave it out for a new one)")
    summary = _previous_summary(own)
    if not has_key(summary, key):
        _refuse_another_config(own, summary, key_cfg, f"{own} holds a run of another config")
    return own, summary


def _refuse_another_config(path: Path, summary: dict[str, Any], key_cfg: dict[str, Any], what: str) -> None:
    """Raise UserError when the run at path was made with another key config, naming the keys that differ."""
    differ = differing_keys(summary["key_config"], key_cfg)
    if differ:
        raise UserError(f"{what}: that run was made with a different config ({', '.join(differ[:8])}"
                        f"{', ...' if len(differ) > 8 else ''}); resume it with the config it was made with, "
                        f"or choose another directory")


def _previous_summary(run_dir: Path) -> dict[str, Any]:
    """Return an earlier run's summary, or raise UserError naming the file when it cannot be read."""
    try:
        summary = read_summary(run_dir)
    except BrokenRecord as err:
        raise UserError(f"cannot resume {run_dir}: {err}") from None
    expected = {"key_config": dict, "resumed": list, "epochs_done": int}
    wrong = [k for k, kind in expected.items() if not isinstance(summary.get(k), kind) or isinstance(summary.get(k), bool)]
    if wrong:
        raise UserError(f"cannot resume {run_dir}: {run_dir / SUMMARY_FILE} is not one noderun wrote "
                        f"({', '.join(wrong)} missing or of the wrong type)")
    return summary


def _restored_state(run_dir: Path, key_cfg: dict[str, Any], device: torch.device) -> dict | None:
    """Return the state in run_dir's last.pt (None when it has none), or raise UserError naming a broken
    or foreign checkpoint; the run's own records are left as they are."""
    path = run_dir / LAST_CHECKPOINT
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path, device)
    except BrokenRecord as err:
        intact = run_dir / BEST_CHECKPOINT
        hint = ""
        if intact.exists():
            try:
                load_checkpoint(intact, torch.device("cpu"))
                hint = f"; {intact.name} is intact (its weights, without the optimizer, can be evaluated)"
            except BrokenRecord:
                pass
        raise UserError(f"cannot resume: {err}{hint}") from None
    differ = differing_keys(state.get("key_config") if isinstance(state.get("key_config"), dict) else {}, key_cfg)
    if differ:
        raise UserError(f"cannot resume: {path} belongs to another config ({', '.join(differ[:8])})")
    trainer = key_cfg.get("trainer")
    problem = _rows_problem(state.get("rows"), trainer.get("epochs") if isinstance(trainer, dict) else None)
    if problem:
        raise UserError(f"cannot resume: {path} is not one noderun wrote for this run ({problem})")
    return state


def _rows_problem(rows: Any, epochs: Any) -> str | None:
    """Return what is wrong with a checkpoint's metrics rows, or None: they must be a list of flat rows of
    plain values, no more than the run's epochs, numbered 1, 2, ... where they carry an epoch."""
    if not isinstance(rows, list):
        return f"its rows are {type(rows).__name__}, not a list"
    if isinstance(epochs, int) and len(rows) > epochs:
        return f"{len(rows)} rows for a run of {epochs} epochs"
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not all(isinstance(k, str) for k in row):
            return f"row {number} is a {type(row).__name__}, not a metrics row"
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in row.values()):
            return f"row {number} holds values other than numbers and text"
        if "epoch" in row and (isinstance(row["epoch"], bool) or row["epoch"] != number):
            return f"row {number} is numbered epoch {row['epoch']!r}"
    return None


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
        held = _held_run(cfg, run_dir)
        if not held:
            fresh = True
            extra_log.append(_log_also_to(run_dir / LOG_FILE))
            with signals_deferred():
                for name, text in (config_files or {}).items():
                    (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
                    write_text_atomically(run_dir / name, text)
        entry = experiments.get(str(cfg.task))
        if entry is None:
            raise UserError(f"unknown task {cfg.task!r}; choose one of: {', '.join(experiments)}")
        check_config(cfg)
        check_dataset(cfg, entry)
        key_cfg = _resolved_key_config(cfg)
        key = run_key(key_cfg)
        summary.update(run_key=key, key_config=key_cfg)
        configure_torch(cfg, threads)
        summary["torch_threads"] = torch.get_num_threads()
        device = choose_device(str(cfg.device))
        previous, previous_summary = _resume_target(cfg, run_dir, key, key_cfg, held)
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
            state = _restored_state(previous, key_cfg, device)
        if previous is not None:
            extra_log.append(_log_also_to(previous / LOG_FILE))  # refused for a link: before anything changes
            for leftover in previous.glob(".*.tmp"):  # a killed process's half-written files
                leftover.unlink(missing_ok=True)
            # The experiment's own numbers so far carry over: a run killed after its last epoch's record
            # resumes with no epoch left to do and must still end with them.
            summary.update({k: v for k, v in previous_summary.items() if k not in summary},
                           epochs_done=len(state["rows"]) if state else 0, started=previous_summary.get("started"),
                           time_s=previous_summary.get("time_s"),
                           resumed=[*previous_summary.get("resumed", []), _now()],
                           **_labels_kept(previous_summary, summary),
                           cpu_capability=_capabilities(previous_summary.get("cpu_capability"),
                                                        summary["cpu_capability"]))
            if "+" in summary["cpu_capability"]:
                log.warning("resume: this run's sittings ran on CPU capabilities %s; its numbers are no longer "
                            "those of one capability", summary["cpu_capability"])
            log.info("resume: continuing the run in %s%s", previous,
                     f" from epoch {len(state['rows'])}" if state else " from the start")
        summary["device"] = str(device)
        recorder = RunRecorder(cfg, target, summary, device, state)
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
    record_end(recorder.run_dir, recorder.summary, "completed", None)
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


class _RunLog(logging.StreamHandler):
    """A run's noderun.log, appended to; never through a symbolic link (safeio.open_append). A write that
    fails (a full disk) is dropped silently: the terminal gets the run's one line anyway."""

    def __init__(self, path: Path):
        try:
            stream = open_append(path)
        except UnsafeFile as err:
            raise UserError(f"cannot write the run's log: {err}") from None
        super().__init__(stream)

    def handleError(self, record: logging.LogRecord) -> None:
        pass

    def close(self) -> None:
        try:
            self.stream.close()
        except OSError:
            pass
        super().close()


def _log_also_to(path: Path) -> logging.Handler:
    """Append this process's log to a run directory's log (a resumed run's log then tells its whole
    story), formatted as the terminal's; return the handler added."""
    handler = _RunLog(path)
    for existing in logging.getLogger().handlers:
        if existing.formatter is not None:
            handler.setFormatter(existing.formatter)
    logging.getLogger().addHandler(handler)
    return handler


def log_to_file(level: int, message: str, exc_info: bool = False) -> None:
    """Log to the run's log file only: the terminal already got its one line."""
    record = log.makeRecord(log.name, level, __file__, 0, message, (), sys.exc_info() if exc_info else None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, (logging.FileHandler, _RunLog)):
            handler.handle(record)
