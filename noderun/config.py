"""What a noderun command may ask for. Every key's type is the schema's (noderun.schema, registered in
Hydra's ConfigStore), so Hydra's own composition refuses an unknown key or a value of the wrong type.
`checked_overrides` composes each job of a command through Hydra's public API before anything starts
and `check_config` checks the values a run reads (ranges, device, solver, folders), in that pre-check
and again in every run: each mistake becomes one UserError line naming the bad value and what would be
valid. The YAML files are the one place defaults live."""

from __future__ import annotations

import argparse
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from noderun import schema
from noderun.errors import UserError
from noderun.loggers import check_backends
from noderun.safeio import unusable_folder_reason

CONF_DIR = Path(__file__).resolve().parent / "conf"
GROUPS = ("model", "solver", "dataset", "trainer", "task", "experiment", "logger")
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
# Launchers whose jobs run on this machine; any other (slurm) runs them elsewhere, where this
# machine's CUDA devices and folders say nothing about the job's.
_LOCAL_LAUNCHERS = ("basic", "joblib", "local", "submitit_local")
_SWEEP_FUNCTIONS = (ValueType.GLOB_CHOICE_SWEEP, ValueType.RANGE_SWEEP, ValueType.INTERVAL_SWEEP)


def _table_models(table: int) -> str:
    """Return the registry's models of the paper's table `table`, comma-separated as a sweep's values:
    `${table_models:1}` in a preset sweeps every Table-1 model, so a model added to MODELS appears in
    every Table-1 preset without a preset naming it."""
    from noderun.models import models_of_table  # imports torch: only when a preset asks

    return ",".join(models_of_table(int(table)))


# Registered on import: the command's pre-check, Hydra's sweeper and every job import this module.
OmegaConf.register_new_resolver("table_models", _table_models, replace=True)


# --- the command line -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """A noderun command line as Hydra's own argument parser reads it."""

    overrides: tuple[str, ...]
    multirun: bool = False
    shows_only: bool = False  # --help, --cfg, --info, ...: nothing runs
    own_config: bool = False  # another config name or folder, or a rerun: noderun/conf is not what runs


# Hydra's own options, as `--hydra-help` documents them (Hydra 1.3): a flag, or how many values it takes.
_HYDRA_FLAGS = (("--help", "-h"), ("--hydra-help",), ("--resolve",), ("--run", "-r"), ("--multirun", "-m"),
                ("--shell-completion", "-sc"))
_HYDRA_VALUES = (("--package", "-p"), ("--config-path", "-cp"), ("--config-name", "-cn"), ("--config-dir", "-cd"),
                 ("--experimental-rerun",))
_INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def _hydra_options() -> argparse.ArgumentParser:
    """Return a parser of Hydra's documented command-line options and the overrides after them, so that
    noderun reads a command line as Hydra will (`--version` is handled before it)."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)  # an ArgumentError, not usage text
    for names in _HYDRA_FLAGS:
        parser.add_argument(*names, action="store_true")
    for names in _HYDRA_VALUES:
        parser.add_argument(*names)
    parser.add_argument("--cfg", "-c", choices=["job", "hydra", "all"])
    parser.add_argument("--info", "-i", nargs="?", const="all", choices=_INFO_CHOICES)
    parser.add_argument("overrides", nargs="*")
    return parser


def parsed_command(args: list[str]) -> Command:
    """Return the command line `args` (without the program name) read as Hydra reads it; raise
    UserError, in one line, for options Hydra would refuse."""
    if "--version" in args:
        return Command((), shows_only=True)
    parser = _hydra_options()
    try:
        known, extra = parser.parse_known_args(args)
    except argparse.ArgumentError as err:
        raise UserError(f"{err}; see noderun --help") from None
    if extra:
        # argparse takes the overrides as one run of arguments: an option between them ends it.
        hint = "options such as -m go before or after the key=value overrides, not between them" \
            if any(not a.startswith("-") for a in extra) else "see noderun --help"
        raise UserError(f"unrecognized arguments: {' '.join(extra)}; {hint}")
    return Command(tuple(known.overrides), known.multirun,
                   shows_only=bool(known.help or known.hydra_help or known.cfg or known.info or known.shell_completion),
                   own_config=bool(known.config_path or known.config_name or known.config_dir
                                   or known.experimental_rerun))


def parsed_override(text: str) -> Override:
    """Return one override parsed by Hydra's grammar, or raise UserError saying how to write it."""
    try:
        override = OverridesParser.create().parse_override(text)
    except HydraException as err:
        raise UserError(f"cannot read {text!r} ({str(err).splitlines()[0]}); write key=value, quoting a value "
                        f"with special characters, e.g. dataset.root='~/data'") from None
    if not override.key_or_group:
        raise UserError(f"cannot read {text!r}: no key before '='; write key=value, e.g. seed=1")
    return override


def group_options(group: str, folders: Iterable[Path] = ()) -> list[str]:
    """Return the config names available in a config group: noderun's, and those of the config folders
    put on Hydra's search path (a plugin's model YAML, say)."""
    return sorted({p.stem for folder in (CONF_DIR, *folders) for p in (Path(folder) / group).glob("*.yaml")})


def searched_folders(overrides: Iterable[Override]) -> list[Path] | None:
    """Return the config folders the command puts on Hydra's search path (hydra.searchpath=[file://DIR]),
    or None where one is not a folder (pkg://...): its group options are then Hydra's to check."""
    folders = []
    for entry in _hydra_choice(list(overrides), "hydra.searchpath") or []:
        scheme, _, where = str(entry).partition("://")
        if scheme != "file":
            return None
        folders.append(Path(where))
    return folders


def _is_group(override: Override) -> bool:
    return override.key_or_group in GROUPS


def _values(override: Override) -> list[Override] | None:
    """Return the single-value overrides an override stands for (one per value of a sweep), or None
    for a sweep function (range, interval, glob), whose values are left to Hydra."""
    if override.value_type in _SWEEP_FUNCTIONS:
        return None
    if not override.is_sweep_override():
        return [override]
    return [parsed_override(f"{override.get_key_element()}={value}") for value in override.sweep_string_iterator()]


def _shown(value: Any) -> str:
    """Return a value as a message shows it: text quoted, true/false/null as YAML writes them."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


def check_group_choices(overrides: Iterable[Override]) -> None:
    """Raise UserError for a config-group choice that has no config file, listing the valid ones, and
    for a group override written as an addition (+, ++) or with an @package, which noderun never needs."""
    overrides = list(overrides)
    folders = searched_folders(overrides)
    for override in overrides:
        if not _is_group(override) or override.is_delete() or folders is None:
            continue
        if override.is_add() or override.is_force_add() or override.package is not None:
            plain = override.input_line.lstrip("+").replace(f"@{override.package}", "")
            raise UserError(f"{override.input_line}: {override.key_or_group} is a config group noderun already "
                            f"has; write {plain}")
        options = group_options(override.key_or_group, folders)
        for value in _values(override) or ():
            choice = value.value()
            # null too: Hydra 1.3 takes no null group choice (experiment=null ends in a ValueError).
            if choice not in options:
                raise UserError(f"unknown {override.key_or_group} {_shown(choice)}; "
                                f"choose one of: {', '.join(options)}")


# --- composing what each job of the command would run ----------------------------------------------

@dataclass(frozen=True)
class _Job:
    """One run the command stands for: its config-group choices and its single-value overrides."""

    groups: tuple[Override, ...]
    values: tuple[Override, ...]

    def with_value(self, value: Override) -> _Job:
        """Return this job with `value` in place of its own for that group or key."""
        key, own = value.key_or_group, ("groups" if _is_group(value) else "values")
        return replace(self, **{own: tuple(o for o in getattr(self, own) if o.key_or_group != key) + (value,)})


class _Composer:
    """Hydra's composition of noderun's primary config (hydra.compose), each set of overrides once."""

    def __init__(self, searchpath: tuple[Override, ...] = ()) -> None:
        self._cache: dict[tuple[str, ...], DictConfig] = {}
        self._searchpath = searchpath  # the command's hydra.searchpath, in every composition

    def config(self, overrides: Iterable[Override]) -> DictConfig:
        """Return the config those overrides give, with its `hydra` node (the preset's sweep and mode);
        Hydra's errors are raised as they are."""
        import hydra

        lines = tuple(sorted(o.input_line for o in (*self._searchpath, *overrides)))
        if lines not in self._cache:
            self._cache[lines] = hydra.compose("config", overrides=list(lines), return_hydra_config=True)
        return self._cache[lines]

    def reference(self, groups: tuple[Override, ...]) -> DictConfig:
        """Return the config of those group choices alone, or raise UserError saying why it cannot be had."""
        try:
            return self.config(groups)
        except (HydraException, OmegaConfBaseException, ValueError) as err:
            raise UserError(f"cannot compose the config with {' '.join(g.input_line for g in groups) or 'no overrides'}"
                            f": {str(err).splitlines()[0]}") from None


def _expanded(overrides: list[Override], multirun: bool) -> list[list[Override]]:
    """Return the values of each (non-hydra) override that can be enumerated; raise UserError for a
    removal (~key), and for a sweep without -m, which Hydra refuses in several lines."""
    expanded = []
    for override in overrides:
        if override.is_delete():
            key = override.key_or_group
            raise UserError(f"{override.input_line} removes a setting noderun needs; set it instead: {key}=VALUE")
        values = _values(override)
        if (values is None or len(values) > 1) and not multirun:
            raise UserError(f"{override.input_line} gives several values; add -m to run one job per value, "
                            f"or quote it for one text value: {override.key_or_group}='{override.get_value_string()}'")
        if values is not None:
            expanded.append(values)
    return expanded


def _hydra_choice(overrides: list[Override], key: str) -> Any:
    """Return the value a hydra override on the command line sets for `key`, or None."""
    return next((o.value() for o in overrides if o.key_or_group == key), None)


def _preset_sweeps(reference: DictConfig, command_keys: set[str]) -> list[list[Override]]:
    """Return the values of each key an experiment preset sweeps (hydra.sweeper.params) and the
    command line does not set itself (its own value wins in Hydra's sweep)."""
    params = OmegaConf.select(reference, "hydra.sweeper.params") or {}
    sweeps = [_values(parsed_override(f"{key}={values}")) for key, values in params.items() if key not in command_keys]
    return [values for values in sweeps if values]


def _jobs(overrides: list[Override], multirun: bool, composer: _Composer) -> list[_Job]:
    """Return the jobs to check: the command's first values, each further swept value in turn, and
    each value a preset's own sweep gives."""
    mode = _hydra_choice(overrides, "hydra.mode")
    own = [o for o in overrides if not o.is_hydra_override()]
    if not multirun and mode is None:
        # A preset may make the command a sweep (hydra.mode: MULTIRUN): only its base config says.
        groups = tuple(o for o in own if _is_group(o) and not o.is_sweep_override())
        mode = OmegaConf.select(composer.reference(groups), "hydra.mode")
    expanded = _expanded(own, multirun or str(mode).endswith("MULTIRUN"))
    base = _Job(tuple(values[0] for values in expanded if _is_group(values[0])),
                tuple(values[0] for values in expanded if not _is_group(values[0])))
    reference = composer.reference(base.groups)
    preset = _preset_sweeps(reference, {o.key_or_group for o in own})
    # A group choice the base config already has (a preset sweeping over the default model too) adds nothing.
    chosen = OmegaConf.select(reference, "hydra.runtime.choices") or {}
    others = [v for values in expanded for v in values[1:]] + [v for values in preset for v in values]
    return [base, *(base.with_value(v) for v in others
                    if not (_is_group(v) and chosen.get(v.key_or_group) == v.value()))]


# --- keys and types ----------------------------------------------------------------------------------

def _plain(config: DictConfig) -> dict:
    """Return a config as plain containers, unresolved, without its hydra node."""
    plain = OmegaConf.to_container(config, resolve=False)
    plain.pop("hydra", None)
    return plain


def _unknown_key_message(plain: dict, key: str) -> str | None:
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



def _job_config(job: _Job, composer: _Composer) -> DictConfig:
    """Return the job's config as Hydra composes it, or raise UserError for its first mistake: a key the
    schema lacks (listing the keys there), + on a key that exists, a value of the wrong type."""
    reference = composer.reference(job.groups)
    plain = _plain(reference)
    for override in job.values:
        message = _unknown_key_message(plain, override.key_or_group)
        if message:  # + and ++ too, which Hydra would add to a typed config
            raise UserError(message)
        if override.is_add():
            raise UserError(f"{override.input_line} adds a key that already exists; write {override.input_line[1:]}")
    try:
        return composer.config(job.groups + job.values)
    except (HydraException, OmegaConfBaseException) as err:
        cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
        key = getattr(cause, "full_key", None)
        value = next((o.value() for o in job.values if o.key_or_group == key), None)
        if isinstance(cause, ValidationError) and key:
            raise UserError(f"{key}={_shown(value)} is invalid; use {schema.valid_values(reference, key)}") from None
        raise UserError(f"{' '.join(o.input_line for o in job.values)} cannot be set "
                        f"({str(cause).splitlines()[0]})") from None


def _check_sweep_function_keys(overrides: list[Override], reference: DictConfig) -> None:
    """Raise UserError for a key swept by a function (range, interval) that the config does not define."""
    plain = _plain(reference)
    for override in overrides:
        if override.value_type in _SWEEP_FUNCTIONS and not _is_group(override) and not override.is_hydra_override():
            message = _unknown_key_message(plain, override.key_or_group)
            if message:
                raise UserError(message)


@contextmanager
def _naming_the_job(job: _Job, base: _Job) -> Iterator[None]:
    """Add to a UserError the group choices of the sweep's job it comes from, where they are not the
    base's (a preset sweeping over models: which model had no such key)."""
    own = [g.input_line for g in job.groups if g not in base.groups]
    try:
        yield
    except UserError as err:
        if not own:
            raise
        raise UserError(f"{err} (in the sweep's job with {' '.join(own)})") from None


def _check_sweep_base(overrides: list[Override], composer: _Composer) -> None:
    """Raise UserError when a key the command sets is missing from the sweep's base config: Hydra
    composes that without the swept choices (`-m model=A,B dataset.n_spirals=40`, both Table-2 models, sets
    n_spirals on the default dataset, which has none) and refuses it in five lines."""
    own = [o for o in overrides if not o.is_hydra_override() and not o.is_sweep_override()]
    base = _Job(tuple(o for o in own if _is_group(o)), tuple(o for o in own if not _is_group(o)))
    try:
        _job_config(base, composer)
    except UserError as err:
        raise UserError(f"{err} (in the sweep's base config, which Hydra composes before the swept choices: "
                        f"choose the group these keys belong to on the command line too, e.g. dataset=spirals)") from None


def _check_read(job: _Job, config: DictConfig, own: set[str]) -> None:
    """Raise UserError for a setting or group choice of the command line (keys `own`) that the job's task
    does not read (schema.TASK_READS): it would be accepted, ignored, and make another run."""
    task = str(config.task)
    for override in (o for o in job.groups + job.values if o.key_or_group in own):
        key = override.key_or_group
        if not (schema.reads_whole(task, key) if _is_group(override) else schema.reads(task, key)):
            raise UserError(f"{override.input_line}: task {task} does not read {key} (it reads "
                            f"{', '.join(schema.TASK_READS[task])}, besides seed, device and the like); leave it out")


def _runs_here(overrides: list[Override]) -> bool:
    """Return whether the command's jobs run on this machine (not through a cluster launcher)."""
    launcher = _hydra_choice(overrides, "hydra/launcher")
    return launcher is None or launcher in _LOCAL_LAUNCHERS


def checked_overrides(args: list[str]) -> bool:
    """Raise UserError, in one line, for the first thing in the command line `args` (without the
    program name) that noderun cannot run: an unknown key (also when added with + or ++), an unknown
    config-group choice, a value whose type is not its default's, or a value check_config refuses.

    Each job of a sweep is checked on its own: the command's first values, then each further value
    of a swept key (`seed=0,1,2`) in turn, and each value a preset's own sweep gives. Hydra's own
    settings (hydra.*, hydra/...) and sweep functions (range, glob, interval) are left to Hydra. For
    --help, --cfg, --info and the like only the group choices are checked; with another config
    (--config-name, --config-dir, ...) nothing is. Return whether the command is a sweep (-m, or a
    preset's hydra.mode)."""
    import hydra

    command = parsed_command(args)
    if command.own_config:
        return command.multirun
    overrides = [parsed_override(text) for text in command.overrides]
    check_group_choices(overrides)
    if command.shows_only:
        return command.multirun
    composer = _Composer(tuple(o for o in overrides if o.key_or_group == "hydra.searchpath"))
    # Leaving the block clears Hydra's global state again, for @hydra.main.
    with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        jobs = _jobs(overrides, command.multirun, composer)
        if command.multirun:
            _check_sweep_base(overrides, composer)
        _check_sweep_function_keys(overrides, composer.reference(jobs[0].groups))
        configs = []
        own = {o.key_or_group for o in overrides if not o.is_hydra_override()} - {"experiment"}
        for job in jobs:
            with _naming_the_job(job, jobs[0]):
                configs.append(_job_config(job, composer))
                _check_read(job, configs[-1], own)
    here = _runs_here(overrides)
    # Every job's checks that need no torch first: a mistake is said in a fraction of a second.
    for job, config in zip(jobs, configs):
        with _naming_the_job(job, jobs[0]), _config_errors_in_one_line():
            _check_without_torch(config, here)
    for job, config in zip(jobs, configs):
        with _naming_the_job(job, jobs[0]):
            check_config(config, here=here)
    return command.multirun or len(jobs) > 1 or _is_multirun(overrides, composer, jobs[0])


def _is_multirun(overrides: list[Override], composer: _Composer, base: _Job) -> bool:
    """Return whether the command runs as a sweep: hydra.mode=MULTIRUN on it, or in its preset."""
    mode = _hydra_choice(overrides, "hydra.mode") or OmegaConf.select(composer.reference(base.groups), "hydra.mode")
    return str(mode).endswith("MULTIRUN")


# --- values a run needs ------------------------------------------------------------------------------

def _require(ok: bool, key: str, value: Any, valid: str) -> None:
    if not ok:
        raise UserError(f"{key}={_shown(value)} is invalid; use {valid}")


def _check_numbers(cfg: DictConfig) -> None:
    """Raise UserError for a value its schema's rule refuses, and for any infinite or NaN number."""
    problem = schema.rule_problem(cfg)
    if problem:
        key, value, rule = problem
        raise UserError(f"{key}={_shown(value)} is invalid; use {rule.valid()}")
    _check_finite(_plain(cfg))  # an interpolation copies a key checked itself


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


def _check_model_and_solver(cfg: DictConfig) -> None:
    from noderun.models import model_entry  # imports torch and every model
    from noderun.solvers import solver_spec

    spec = solver_spec(cfg)
    entry = model_entry(str(cfg.model.name))
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
        raise UserError(f"dataset.root={_shown(str(root))} is not a usable folder ({reason}); point it at a folder "
                        f"noderun can create and write")


def _check_without_torch(cfg: DictConfig, here: bool) -> None:
    """The checks of check_config that need neither torch nor the models (fast to fail)."""
    _check_numbers(cfg)
    _check_labels(cfg)
    if cfg.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", str(cfg.device)):
        raise UserError(f"device={_shown(cfg.device)} is invalid; choose one of: {', '.join(DEVICES)}")
    if here:  # a cluster job checks its own machine's folders and packages when it starts
        _check_dataset_root(cfg)
        check_backends(OmegaConf.select(cfg, "logger.backends", default=[]))


@contextmanager
def _config_errors_in_one_line() -> Iterator[None]:
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
    with _config_errors_in_one_line():
        _check_without_torch(cfg, here)
        _check_device(cfg.device, here)
        _check_model_and_solver(cfg)
