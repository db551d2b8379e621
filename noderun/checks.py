"""The values a run can use, checked on a composed config: each value its schema's rule refuses, infinite
numbers, tags and note, the device, the solver with the model, and the dataset's folder; each mistake one
UserError line naming the bad value and what would be valid. The command's pre-check (noderun.config)
runs them on every job before anything starts, and every run again (noderun.run.lifecycle)."""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from noderun import schema
from noderun.command import is_group, shown_value
from noderun.errors import UserError
from noderun.loggers import check_backends
from noderun.safeio import unusable_folder_reason

DEVICES = ("auto", "cpu", "cuda", "cuda:N")


def plain_config(config: DictConfig) -> dict:
    """Return a config as plain containers, unresolved, without its hydra node."""
    plain = OmegaConf.to_container(config, resolve=False)
    plain.pop("hydra", None)
    return plain


def unknown_key_message(plain: dict, key: str) -> str | None:
    """Return the unknown-key line for `key` if the config does not define it, else None."""
    node: Any = plain
    path: list[str] = []
    for part in key.split("."):
        if not isinstance(node, dict):
            return f"unknown key {key}; {'.'.join(path)} is a single value, not a group of keys"
        if part not in node:
            where = ".".join(path) or "the config"
            return f"unknown key {key}; {where} has: {', '.join(map(str, node))}"
        node, path = node[part], path + [part]
    return None


def check_read(config: DictConfig, overrides: list[Override]) -> None:
    """Raise UserError for a setting or group choice of the command line (`overrides`) that the config's
    task does not read (schema.TASK_READS): it would be accepted, ignored, and make another run."""
    task = str(config.task)
    for override in overrides:
        key = override.key_or_group
        if not (schema.reads_whole(task, key) if is_group(override) else schema.reads(task, key)):
            raise UserError(f"{override.input_line}: task {task} does not read {key} (it reads "
                            f"{', '.join(schema.TASK_READS[task])}, besides seed, device and the like); leave it out")


def _require(ok: bool, key: str, value: Any, valid: str) -> None:
    if not ok:
        raise UserError(f"{key}={shown_value(value)} is invalid; use {valid}")


def _check_numbers(cfg: DictConfig) -> None:
    """Raise UserError for a value its schema's rule refuses, and for any infinite or NaN number."""
    problem = schema.rule_problem(cfg)
    if problem:
        key, value, rule = problem
        raise UserError(f"{key}={shown_value(value)} is invalid; use {rule.valid()}")
    _check_finite(plain_config(cfg))  # an interpolation copies a key checked itself


def _check_finite(node: Any, prefix: str = "") -> None:
    """Raise UserError for any number in the config that is infinite or NaN, or a whole number too large
    for torch (64 bits): no setting takes one."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for value in node:
            _check_finite(value, prefix)
    elif isinstance(node, float) and not math.isfinite(node):
        raise UserError(f"{prefix[:-1]}={node} is invalid; use a finite number")
    elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > schema.LARGEST_WHOLE:
        raise UserError(f"{prefix[:-1]}={node} is invalid; use a whole number from {-schema.LARGEST_WHOLE} to {schema.LARGEST_WHOLE}")


# A tag: a name to select runs by (noderun-report --tags), safe in a CSV cell, a file name and a shell.
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}")
MAX_TAGS, MAX_NOTE = 32, 300



def _check_labels(cfg: DictConfig) -> None:
    """Raise UserError for tags that are not a list of names, or a note that is not one line of text."""
    tags = cfg.get("tags")
    valid = (f"a list of at most {MAX_TAGS} names of letters, digits and _ . : + - (e.g. tags=[paper,baseline])")
    _require(isinstance(tags, (list, ListConfig)) and len(tags) <= MAX_TAGS, "tags", tags, valid)
    for tag in tags:
        _require(isinstance(tag, str) and bool(_TAG.fullmatch(tag)), "tags", tags, valid)
    note = cfg.get("note")
    _require(note is None or (isinstance(note, str) and len(note) <= MAX_NOTE and note.isprintable()), "note", note,
             f"one line of at most {MAX_NOTE} printable characters, or null")


def _check_device(device: str, here: bool) -> None:
    """Raise UserError when CUDA (device=cuda or cuda:N, already a valid name) is asked for on a
    machine that has not got it."""
    if device in ("auto", "cpu") or not here:
        return
    import torch  # only when CUDA is asked for

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if count == 0:
        raise UserError(f"device={device} was asked for but no CUDA device is available; use device=cpu or auto")
    if index >= count:
        raise UserError(f"device={device} was asked for but this machine has {count} CUDA device(s), "
                        f"cuda:0 to cuda:{count - 1}; choose one of those, or device=cuda")


# How a model of each of the paper's tables is run, for the line refusing it in another table's task.
_HOW_TO_RUN = {1: "noderun model={name} (task=train, the default), or experiment=quick or table1 for the table",
               2: "noderun experiment=timeseries model={name} for one run, experiment=table2 for the table",
               4: "noderun experiment=cnf_density or cnf_mle (section 4's flows), model={name}"}


def _check_model_and_solver(cfg: DictConfig) -> None:
    from noderun.models import model_entry, models_of_table  # imports torch and every model
    from noderun.solvers import solver_spec

    spec = solver_spec(cfg)
    entry = model_entry(str(cfg.model.name))
    table = schema.TASK_TABLE.get(str(cfg.task))
    if table is not None and entry.table != table:
        how = _HOW_TO_RUN.get(entry.table, "its own task (task=NAME)").format(name=cfg.model.name)
        raise UserError(f"model={cfg.model.name} is a Table-{entry.table} model, which task={cfg.task} does not "
                        f"train (it trains model={', '.join(models_of_table(table))}); run it with {how}")
    # Models without an `adjoint` key (the RK-Net) always backpropagate through the solver's operations.
    if spec.method == "scipy_solver" and entry.is_ode and not cfg.model.get("adjoint", False):
        raise UserError(f"solver=scipy_solver gives no gradients to backpropagate through (model={cfg.model.name}); "
                        f"use it with a model that takes model.adjoint=true, or choose a torchdiffeq solver")


def _check_dataset_root(cfg: DictConfig) -> None:
    if "root" not in cfg.dataset:
        return
    root = cfg.dataset.root
    reason = unusable_folder_reason(Path(str(root)).expanduser())
    if reason:
        raise UserError(f"dataset.root={shown_value(str(root))} is not a usable folder ({reason}); point it at a folder "
                        f"noderun can create and write")


def check_without_torch(cfg: DictConfig, here: bool) -> None:
    """The checks of check_config that need neither torch nor the models (fast to fail)."""
    _check_numbers(cfg)
    _check_labels(cfg)
    if cfg.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", str(cfg.device)):
        raise UserError(f"device={shown_value(cfg.device)} is invalid; choose one of: {', '.join(DEVICES)}")
    if here:  # a cluster job checks its own machine's folders and packages when it starts
        _check_dataset_root(cfg)
        check_backends(OmegaConf.select(cfg, "logger.backends", default=[]))


@contextmanager
def config_errors_in_one_line() -> Iterator[None]:
    """Turn OmegaConf's errors (an interpolation that cannot be resolved) into a one-line UserError."""
    try:
        yield
    except OmegaConfBaseException as err:
        raise UserError(f"the config cannot be read: {str(err).splitlines()[0]}") from None


def check_config(cfg: DictConfig, here: bool = True) -> None:
    """Raise UserError, in one line, for the first value in a composed config that no run can use,
    naming what would be valid: the trainer's numbers, seed, threads, dataset sizes, true/false
    settings, device, solver (and scipy_solver only with the adjoint), model name and dataset.root.
    `here`: whether the run happens on this machine; a cluster job's CUDA devices and folders are
    checked by the job itself. Which datasets a task takes is not checked here."""
    with config_errors_in_one_line():
        check_without_torch(cfg, here)
        _check_device(cfg.device, here)
        _check_model_and_solver(cfg)
