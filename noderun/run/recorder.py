"""RunRecorder: what an experiment writes through (summary, metrics rows, checkpoints, files)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
from omegaconf import DictConfig

from noderun.errors import UserError
from noderun.loggers import RunLoggers
from noderun.records import (BEST_CHECKPOINT, LAST_CHECKPOINT, BrokenRecord, load_checkpoint, save_checkpoint,
                             write_metrics, write_summary, write_text_atomically)
from noderun.run.signals import signals_deferred


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
        self.loggers: RunLoggers | None = None  # live views (logger group), mirroring what is recorded

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
        if self.loggers is not None:  # after the records: a logger never holds them up or changes them
            self.loggers.epoch(row)

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
