"""A run's identity: the run key (a hash of the config that determines its results), the keys left out
of it, earlier runs' configs read as today's, and finding a run by its key. Resume finds and compares
runs by these; the report tells its runs' settings apart by the same keys, so the two never drift."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from noderun.errors import UserError
from noderun.models import MODELS
from noderun.records import SUMMARY_FILE, BrokenRecord, flat_config, read_summary, walk_folders
from noderun.schema import preset_blocks, read_part
from noderun.regularize import RegularizerSpec, acts
from noderun.solvers import SolverSpec

# Config keys that say where things are kept or how they are shown, not what is computed: left out of
# the run key, so they may differ between a run and its resumption.
NOT_IN_KEY = ("resume", "caption", "tags", "note", "paths", "device", "threads", "trainer.progress", "trainer.measure_step",
              "dataset.root", "dataset.sources", "dataset.download_timeout_s", "logger")
# Besides those, what the report never tells runs apart by: the seed (the repeats it averages over) and
# the preset's name (its settings are in the config already). A preset's caption is read by the report
# as the table's caption, so it is not among these.
NOT_A_SETTING = tuple(k for k in NOT_IN_KEY if k != "caption") + ("seed", "experiment")


def is_setting(dotted_key: str) -> bool:
    """Return whether a config key can tell two runs' computations apart for the report (not one of
    NOT_A_SETTING, nor a key inside one of those groups)."""
    return not any(dotted_key == k or dotted_key.startswith(k + ".") for k in NOT_A_SETTING)


# Keys earlier runs recorded that no longer exist. speed.rk_stages (noderun's stage arithmetic patched
# into torchdiffeq's solvers, retired for solver.path=device in issue 19) changed only how float32 sums
# were rounded, not the steps: such a run is resumed and reported as if it had not recorded it.
RETIRED_KEYS = ("speed.rk_stages",)


# Keys added since some runs were made, with the value that computes what those runs did: a run from
# before solver.path solved with torchdiffeq's solvers, one from before speed.compile uncompiled.
ADDED_KEYS = {"solver.path": "torchdiffeq", "speed.compile": False}


# Keys added to the trainers of some tasks only, by task, likewise: a run from before trainer.regularize
# was not regularised.
ADDED_TASK_KEYS = {task: {"trainer.regularize": {"method": "none", "weight": 0.0}} for task in ("train", "timeseries")}


# Keys added to some datasets only, by dataset name, likewise: a spirals run from before dataset.val_size
# had no validation split and reported its last epoch.
ADDED_DATASET_KEYS = {"spirals": {"val_size": 0}, "spirals_archimedean": {"val_size": 0}}


def _group(plain: dict[str, Any], parts: list[str], create: bool = False) -> dict[str, Any] | None:
    """Return the group (dict) the keys `parts` lead to in a plain config, or None where one is missing or
    no group (missing groups created, empty, where `create`)."""
    node: Any = plain
    for part in parts:
        if not isinstance(node, dict):
            return None
        node = node.setdefault(part, {}) if create else node.get(part)
    return node if isinstance(node, dict) else None


def without_keys(plain: dict[str, Any], dotted_keys: Iterable[str], prune: bool = False) -> dict[str, Any]:
    """Remove the dotted keys from a plain config, in place, and return it; `prune`: also each group
    that removal leaves empty."""
    for dotted in dotted_keys:
        parts = dotted.split(".")
        group = _group(plain, parts[:-1])
        if group is None:
            continue
        group.pop(parts[-1], None)
        for depth in range(len(parts) - 1, 0, -1) if prune else ():
            parent = _group(plain, parts[:depth - 1])
            if parent is None or parent.get(parts[depth - 1]) != {}:
                break
            parent.pop(parts[depth - 1])
    return plain


# Keys some models' configs held without reading them, dropped when the configs were typed: a preset set
# model.t1 for every model of its sweep (table1_rk4), and the MLP and ResNet have no time interval.
UNREAD_MODEL_KEYS = {"mlp": ("t1",), "resnet": ("t1",)}


def config_as_today(old: Mapping[str, Any]) -> dict[str, Any]:
    """Return an earlier run's config or key config (plain dicts) as today's config would write it for
    the same computation: without RETIRED_KEYS, and with each of ADDED_KEYS (and of its dataset's
    ADDED_DATASET_KEYS) it lacks set to the value that computes what it did, without the keys its model
    never read (UNREAD_MODEL_KEYS), null preset blocks and keys its task does not read. Resume compares and finds runs by it; noderun-report reads their configs by it."""
    plain = without_keys(copy.deepcopy(dict(old)), RETIRED_KEYS, prune=True)
    for dotted, value in ADDED_KEYS.items():
        *parents, last = dotted.split(".")
        group = _group(plain, parents, create=True)
        if group is not None:
            group.setdefault(last, value)
    for dotted, value in ADDED_TASK_KEYS.get(str(plain.get("task", "train")), {}).items():
        *parents, last = dotted.split(".")
        group = _group(plain, parents)
        if group is not None:
            group.setdefault(last, copy.deepcopy(value))
    dataset, model = plain.get("dataset"), plain.get("model")
    if isinstance(dataset, dict):
        for key, value in ADDED_DATASET_KEYS.get(str(dataset.get("name")), {}).items():
            dataset.setdefault(key, value)
    if isinstance(model, dict):
        for key in UNREAD_MODEL_KEYS.get(str(model.get("name")), ()):
            model.pop(key, None)
    return _computing_part(plain)


def _computing_part(plain: dict[str, Any]) -> dict[str, Any]:
    """Return the part of a plain config its task reads (schema.read_part), without the preset blocks
    (schema.preset_blocks()) that are null: such a block says what its absence said before the configs were
    typed, and a key the task never reads computes nothing, so old and new configs compare alike. A
    regulariser that cannot act is written as none (_idle_regularizer_as_none)."""
    plain = _idle_regularizer_as_none(read_part(plain, str(plain.get("task"))))
    return without_keys(plain, [k for k in preset_blocks() if k in plain and plain[k] is None])


def _idle_regularizer_as_none(plain: dict[str, Any]) -> dict[str, Any]:
    """Return the config with trainer.regularize written as none where it computes nothing (weight 0, or
    a registry model without an adaptive ODE solve: the MLP, ResNet and ablation, the RK-Net on a fixed
    grid, the RNNs; noderun.regularize.regularize gives those no regulariser), so that such a run is
    the unregularised one: resumed as it, and told apart from it by nothing in the report."""
    trainer, model, solver = (plain.get(k) for k in ("trainer", "model", "solver"))
    block = trainer.get("regularize") if isinstance(trainer, dict) else None
    if not isinstance(block, dict) or not isinstance(model, dict) or not isinstance(model.get("name"), str) \
            or model["name"] not in MODELS:
        return plain
    weight = block.get("weight", 0)
    spec = RegularizerSpec(str(block.get("method", "none")), float(weight) if isinstance(weight, (int, float)) else 0.0)
    method = solver.get("method") if isinstance(solver, dict) else None
    if not (MODELS[model["name"]].is_ode and acts(spec, SolverSpec(method=str(method)))):
        plain = {**plain, "trainer": {**trainer, "regularize": {"method": "none", "weight": 0.0}}}
    return plain


def run_key(config: dict[str, Any]) -> str:
    """Return a short hash identifying a run's computation, for finding it again on resume."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_previous_run(output_root: Path, key: str, exclude: Path) -> Path | None:
    """Return the newest run directory under output_root whose summary carries `key`, or whose key config
    read as today's (config_as_today: keys retired or added since) hashes to it, if any (unreadable
    summaries and folders that cannot be listed are passed over)."""
    candidates = []
    for run_dir, _, files in walk_folders(output_root):
        if SUMMARY_FILE not in files or _same_dir(run_dir, exclude):
            continue
        try:
            summary = read_summary(run_dir)
            if has_key(summary, key):
                candidates.append(((run_dir / SUMMARY_FILE).stat().st_mtime, str(run_dir), run_dir))
        except (BrokenRecord, OSError):
            continue
    return max(candidates)[2] if candidates else None


def has_key(summary: Mapping[str, Any], key: str) -> bool:
    """Return whether a run's summary is of the run key `key` (its own, or its key config's read as today's)."""
    old = summary.get("key_config")
    return summary.get("run_key") == key or (isinstance(old, dict) and run_key(config_as_today(old)) == key)


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def key_config(cfg: DictConfig) -> dict[str, Any]:
    """Return the part of the config that determines a run's results (hashed into its run key): what its
    task reads (schema.TASK_READS), less NOT_IN_KEY and the preset blocks that are null."""
    return _computing_part(without_keys(OmegaConf.to_container(cfg, resolve=True), NOT_IN_KEY))


def differing_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Return the dotted keys whose values differ between an earlier run's key config (read as today's
    config would write it: config_as_today) and this run's."""
    a, b = flat_config(config_as_today(old)), flat_config(dict(new))
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def resolved_key_config(cfg: DictConfig) -> dict[str, Any]:
    """Return key_config(cfg), or raise UserError for an interpolation that does not resolve (a model's
    setting that refers to a key of another dataset than the one chosen)."""
    try:
        return key_config(cfg)
    except OmegaConfBaseException as err:
        raise UserError(f"the config does not resolve: {str(err).splitlines()[0]} (a setting refers to a key "
                        f"the chosen groups do not have)") from None
