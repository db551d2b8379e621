"""Resuming a run: which earlier run a command continues, whether its records are noderun's and of this
config, and what its summary carries over. A directory that holds a run is continued only on resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from noderun.errors import UserError
from noderun.records import (BEST_CHECKPOINT, LAST_CHECKPOINT, RUN_LINK_FILE, SUMMARY_FILE, BrokenRecord,
                             directory_entries, linked_run_dir, load_checkpoint, read_summary)
from noderun.run.identity import differing_keys, find_previous_run, has_key


def capabilities(before: object, now: str) -> str:
    """Return the capabilities a resumed run's sittings used, in order ("AVX512+AVX2"): a run continued
    under other kernels than it began with is no longer one capability's numbers, and says so."""
    seen = str(before).split("+") if isinstance(before, str) and before else []
    return "+".join(seen if seen and seen[-1] == now else [*seen, now])


def labels_kept(before: dict, now: dict) -> dict[str, Any]:
    """Return a resumed run's tags and note: the earlier sittings' tags with this command's added, and
    this command's note, or the earlier one where this command gives none."""
    earlier = [t for t in before.get("tags") or [] if isinstance(t, str)]
    return {"tags": earlier + [t for t in now["tags"] if t not in earlier],
            "note": now["note"] if now["note"] is not None else before.get("note")}


def _resumes(cfg: DictConfig) -> bool:
    """Return whether the run was asked to continue the newest run of its config (resume=true)."""
    return cfg.resume is True or cfg.resume == "true"


def held_run(cfg: DictConfig, run_dir: Path) -> bool:
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


def resume_target(cfg: DictConfig, run_dir: Path, key: str, key_cfg: dict[str, Any],
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


def restored_state(run_dir: Path, key_cfg: dict[str, Any], device: torch.device) -> dict | None:
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
