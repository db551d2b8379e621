"""A noderun command line read as Hydra reads it: its options (Hydra's own, documented ones), its
overrides parsed by Hydra's public grammar (hydra.core.override_parser), the values a swept override
stands for, and the config groups it may choose from (noderun's and those on its search path)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from noderun import schema  # noqa: F401  (registers the configs' types: whatever composes CONF_DIR needs them)
from noderun.errors import UserError

CONF_DIR = Path(__file__).resolve().parent / "conf"
GROUPS = ("model", "solver", "dataset", "trainer", "task", "experiment", "logger")
# Launchers whose jobs run on this machine; any other (slurm) runs them elsewhere, where this
# machine's CUDA devices and folders say nothing about the job's.
_LOCAL_LAUNCHERS = ("basic", "joblib", "local", "submitit_local")
SWEEP_FUNCTIONS = (ValueType.GLOB_CHOICE_SWEEP, ValueType.RANGE_SWEEP, ValueType.INTERVAL_SWEEP)


@dataclass(frozen=True)
class Command:
    """A noderun command line as Hydra's own argument parser reads it."""

    overrides: tuple[str, ...]
    multirun: bool = False
    shows_only: bool = False  # --help, --cfg, --info, ...: nothing runs
    own_config: bool = False  # another config name or folder, or a rerun: noderun/conf is not what runs


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
    for entry in hydra_choice(list(overrides), "hydra.searchpath") or []:
        scheme, _, where = str(entry).partition("://")
        if scheme != "file":
            return None
        folders.append(Path(where))
    return folders


def is_group(override: Override) -> bool:
    return override.key_or_group in GROUPS


def swept_values(override: Override) -> list[Override] | None:
    """Return the single-value overrides an override stands for (one per value of a sweep), or None
    for a sweep function (range, interval, glob), whose values are left to Hydra."""
    if override.value_type in SWEEP_FUNCTIONS:
        return None
    if not override.is_sweep_override():
        return [override]
    return [parsed_override(f"{override.get_key_element()}={value}") for value in override.sweep_string_iterator()]


def shown_value(value: Any) -> str:
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
        if not is_group(override) or override.is_delete() or folders is None:
            continue
        if override.is_add() or override.is_force_add() or override.package is not None:
            plain = override.input_line.lstrip("+").replace(f"@{override.package}", "")
            raise UserError(f"{override.input_line}: {override.key_or_group} is a config group noderun already "
                            f"has; write {plain}")
        options = group_options(override.key_or_group, folders)
        for value in swept_values(override) or ():
            choice = value.value()
            # null too: Hydra 1.3 takes no null group choice (experiment=null ends in a ValueError).
            if choice not in options:
                raise UserError(f"unknown {override.key_or_group} {shown_value(choice)}; "
                                f"choose one of: {', '.join(options)}")


def expanded_overrides(overrides: list[Override], multirun: bool) -> list[list[Override]]:
    """Return the values of each (non-hydra) override that can be enumerated; raise UserError for a
    removal (~key), and for a sweep without -m, which Hydra refuses in several lines."""
    expanded = []
    for override in overrides:
        if override.is_delete():
            key = override.key_or_group
            raise UserError(f"{override.input_line} removes a setting noderun needs; set it instead: {key}=VALUE")
        values = swept_values(override)
        if (values is None or len(values) > 1) and not multirun:
            raise UserError(f"{override.input_line} gives several values; add -m to run one job per value, "
                            f"or quote it for one text value: {override.key_or_group}='{override.get_value_string()}'")
        if values is not None:
            expanded.append(values)
    return expanded


def hydra_choice(overrides: list[Override], key: str) -> Any:
    """Return the value a hydra override on the command line sets for `key`, or None."""
    return next((o.value() for o in overrides if o.key_or_group == key), None)


def runs_here(overrides: list[Override]) -> bool:
    """Return whether the command's jobs run on this machine (not through a cluster launcher)."""
    launcher = hydra_choice(overrides, "hydra/launcher")
    return launcher is None or launcher in _LOCAL_LAUNCHERS


def preset_sweeps(reference: DictConfig, command_keys: set[str]) -> list[list[Override]]:
    """Return the values of each key an experiment preset sweeps (hydra.sweeper.params) and the
    command line does not set itself (its own value wins in Hydra's sweep)."""
    params = OmegaConf.select(reference, "hydra.sweeper.params") or {}
    sweeps = [swept_values(parsed_override(f"{key}={values}")) for key, values in params.items() if key not in command_keys]
    return [values for values in sweeps if values]
