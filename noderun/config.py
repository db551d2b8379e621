"""What a noderun command may ask for, checked before anything starts (`checked_overrides`): each job
it stands for is composed through Hydra's public API, where the schema's types (noderun.schema) refuse
an unknown key or a wrong type; what its task does not read is refused; its values are checked
(noderun.checks). The command line is read by noderun.command; the YAMLs are the one place defaults live."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from noderun import schema
from noderun.checks import (check_config, check_read, check_without_torch, config_errors_in_one_line, plain_config,
                            unknown_key_message)
from noderun.command import (CONF_DIR, SWEEP_FUNCTIONS, check_group_choices, expanded_overrides, hydra_choice,
                             is_group, parsed_command, parsed_override, preset_sweeps, runs_here, shown_value)
from noderun.errors import UserError


def _table_models(table: int) -> str:
    """Return the registry's models of the paper's table `table`, comma-separated as a sweep's values:
    `${table_models:1}` in a preset sweeps every Table-1 model, so a model added to MODELS appears in
    every Table-1 preset without a preset naming it."""
    from noderun.models import models_of_table  # imports torch: only when a preset asks

    return ",".join(models_of_table(int(table)))


# Registered on import: the command's pre-check, Hydra's sweeper and every job import this module.
OmegaConf.register_new_resolver("table_models", _table_models, replace=True)


@dataclass(frozen=True)
class _Job:
    """One run the command stands for: its config-group choices and its single-value overrides."""

    groups: tuple[Override, ...]
    values: tuple[Override, ...]

    def with_value(self, value: Override) -> _Job:
        """Return this job with `value` in place of its own for that group or key."""
        key, own = value.key_or_group, ("groups" if is_group(value) else "values")
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


def _jobs(overrides: list[Override], multirun: bool, composer: _Composer) -> tuple[list[_Job], bool]:
    """Return the jobs to check (the command's first values, each further swept value in turn, and
    each value a preset's own sweep gives) and whether the command runs as a sweep (-m, or hydra.mode
    MULTIRUN on the command line or in its preset)."""
    mode = hydra_choice(overrides, "hydra.mode")
    own = [o for o in overrides if not o.is_hydra_override()]
    if not multirun and mode is None:
        # A preset may make the command a sweep (hydra.mode: MULTIRUN): only its base config says.
        groups = tuple(o for o in own if is_group(o) and not o.is_sweep_override())
        mode = OmegaConf.select(composer.reference(groups), "hydra.mode")
    multirun = multirun or str(mode).endswith("MULTIRUN")
    expanded = expanded_overrides(own, multirun)
    base = _Job(tuple(values[0] for values in expanded if is_group(values[0])),
                tuple(values[0] for values in expanded if not is_group(values[0])))
    reference = composer.reference(base.groups)
    preset = preset_sweeps(reference, {o.key_or_group for o in own})
    # A group choice the base config already has (a preset sweeping over the default model too) adds nothing.
    chosen = OmegaConf.select(reference, "hydra.runtime.choices") or {}
    others = [v for values in expanded for v in values[1:]] + [v for values in preset for v in values]
    jobs = [base, *(base.with_value(v) for v in others if not (is_group(v) and chosen.get(v.key_or_group) == v.value()))]
    return jobs, multirun or len(jobs) > 1


def _job_config(job: _Job, composer: _Composer) -> DictConfig:
    """Return the job's config as Hydra composes it, or raise UserError for its first mistake: a key the
    schema lacks (listing the keys there), + on a key that exists, a value of the wrong type."""
    reference = composer.reference(job.groups)
    plain = plain_config(reference)
    for override in job.values:
        message = unknown_key_message(plain, override.key_or_group)
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
            raise UserError(f"{key}={shown_value(value)} is invalid; use {schema.valid_values(reference, key)}") from None
        raise UserError(f"{' '.join(o.input_line for o in job.values)} cannot be set "
                        f"({str(cause).splitlines()[0]})") from None


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
    """Raise UserError when a key the command sets, or sweeps by a function (range, interval), is missing
    from the sweep's base config: Hydra composes that without the swept choices (`-m model=A,B
    dataset.n_spirals=40`, both Table-2 models, sets n_spirals on the default dataset, which has none)
    and refuses it in five lines."""
    own = [o for o in overrides if not o.is_hydra_override()]
    fixed = [o for o in own if not o.is_sweep_override()]
    base = _Job(tuple(o for o in fixed if is_group(o)), tuple(o for o in fixed if not is_group(o)))
    try:
        plain = plain_config(_job_config(base, composer))
        for override in own:
            if override.value_type in SWEEP_FUNCTIONS and not is_group(override):
                message = unknown_key_message(plain, override.key_or_group)
                if message:
                    raise UserError(message)
    except UserError as err:
        raise UserError(f"{err} (in the sweep's base config, which Hydra composes before the swept choices: "
                        f"choose the group these keys belong to on the command line too, e.g. dataset=spirals)") from None


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
        jobs, multirun = _jobs(overrides, command.multirun, composer)
        if multirun:
            _check_sweep_base(overrides, composer)
        configs = []
        own = {o.key_or_group for o in overrides if not o.is_hydra_override()} - {"experiment"}
        for job in jobs:
            with _naming_the_job(job, jobs[0]):
                configs.append(_job_config(job, composer))
                check_read(configs[-1], [o for o in job.groups + job.values if o.key_or_group in own])
    here = runs_here(overrides)
    # Every job's checks that need no torch first: a mistake is said in a fraction of a second.
    for job, config in zip(jobs, configs):
        with _naming_the_job(job, jobs[0]), config_errors_in_one_line():
            check_without_torch(config, here)
    for job, config in zip(jobs, configs):
        with _naming_the_job(job, jobs[0]):
            check_config(config, here=here)
    return multirun
