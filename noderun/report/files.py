"""Reading the config and CSV files of a run directory as the report must: any of them may be
missing, truncated, garbage or hostile. Each reader returns plain data or raises BrokenRun saying
which file is wrong and how, in a few words. Nothing here executes code from a file: CSV and YAML
only (the YAML through OmegaConf's safe loader), never pickle or torch.load."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Far above what noderun writes (a config is a few KiB, a metrics.csv of 160 epochs some 30 KiB),
# and low enough that a huge or endless file cannot stall the report or fill its memory. (summary.json
# is read by noderun.records.read_summary, which has its own limit.)
MAX_YAML_BYTES = 1 << 20
MAX_CSV_BYTES = 64 << 20
CONFIG_FILE = Path(".hydra") / "config.yaml"


class BrokenRun(Exception):
    """A run whose files the report cannot use; the message says which file and what is wrong."""


@dataclass(frozen=True)
class CsvSpec:
    """What a CSV file of a run must hold: numeric columns filled in every row (`full`), numeric
    columns that may be empty (`numeric`) and True/False columns (`flags`). Other columns are kept
    as they are read."""

    name: str
    full: tuple[str, ...]
    numeric: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()


def _bytes_of(path: Path, limit: int) -> bytes:
    """Return the file's bytes; raise BrokenRun when it is missing, not a regular file or over limit."""
    name = path.name
    if not path.is_file():  # a directory, a FIFO or a device would block or mislead the reader
        raise BrokenRun(f"{name} is missing" if not path.exists() else f"{name} is not a regular file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as err:
        raise BrokenRun(f"cannot read {name} ({err.strerror or err})") from None
    if len(data) > limit:
        raise BrokenRun(f"{name} is larger than {limit // 1024} KiB, far more than noderun writes")
    return data


def _text_of(path: Path, limit: int) -> str:
    """Return the file as UTF-8 text (see _bytes_of); binary garbage raises BrokenRun."""
    try:
        return _bytes_of(path, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise BrokenRun(f"{path.name} is not text (binary data?)") from None


def _without_aliases(text: str, name: str) -> None:
    """Raise BrokenRun for YAML with anchors and aliases: noderun never writes them, and a few nested
    aliases expand to billions of nodes (the 'billion laughs')."""
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise BrokenRun(f"{name} uses YAML aliases, which noderun never writes")
    except yaml.YAMLError as err:
        raise BrokenRun(f"{name} is not YAML ({' '.join(str(err).split())})") from None


def read_run_config(run_dir: Path) -> dict | None:
    """Return the run's resolved config (.hydra/config.yaml) as plain dicts and lists, without
    resolving interpolations; None when the run has none (hydra.output_subdir=null)."""
    path = run_dir / CONFIG_FILE
    if not path.exists() and not path.is_symlink():
        return None
    text = _text_of(path, MAX_YAML_BYTES)
    _without_aliases(text, "config.yaml")
    try:
        config = OmegaConf.to_container(OmegaConf.load(io.StringIO(text)), resolve=False)
    except (OmegaConfBaseException, yaml.YAMLError, OSError, ValueError, TypeError) as err:  # OSError: a bare scalar
        raise BrokenRun(f"config.yaml is not a config ({' '.join(str(err).split())})") from None
    if not isinstance(config, dict):
        raise BrokenRun(f"config.yaml holds a {type(config).__name__}, not a mapping")
    return config


def _numbers(frame: pd.DataFrame, column: str, name: str, full: bool) -> pd.Series:
    """Return the column as floats; raise BrokenRun for a cell that is no number or is infinite, or
    for an empty cell where `full`."""
    values = pd.to_numeric(frame[column], errors="coerce")
    blank = frame[column].isna() | frame[column].str.strip().str.lower().eq("nan")  # how csv writes a None/NaN
    bad = (values.isna() & ~blank) | values.isin([math.inf, -math.inf])
    if full:
        bad |= blank
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        cell = frame[column].iloc[row]
        what = "is empty" if pd.isna(cell) else f"holds {str(cell)[:30]!r}"
        raise BrokenRun(f"{name}: column {column!r} {what} in data row {row + 1}, where a number must be")
    return values.astype(float)


def _flags(frame: pd.DataFrame, column: str, name: str) -> pd.Series:
    """Return the True/False column as booleans; raise BrokenRun for any other cell."""
    text = frame[column].astype(str).str.strip().str.lower()
    bad = ~text.isin(["true", "false"])
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise BrokenRun(f"{name}: column {column!r} holds {str(frame[column].iloc[row])[:30]!r} in data row "
                        f"{row + 1}, where True or False must be")
    return text == "true"


def read_csv_table(run_dir: Path, spec: CsvSpec) -> pd.DataFrame:
    """Return the run's CSV file `spec.name`, its numeric columns as floats and flags as booleans;
    raise BrokenRun when it is missing, empty, cut short or holds something else where they must be."""
    text = _text_of(run_dir / spec.name, MAX_CSV_BYTES)
    try:  # every cell read as text first: the checks below say which cell is wrong
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise BrokenRun(f"{spec.name} is not a CSV table ({' '.join(str(err).split())[:120]})") from None
    missing = [c for c in (*spec.full, *spec.flags) if c not in frame.columns]
    if missing:
        raise BrokenRun(f"{spec.name} lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)}")
    if frame.empty:
        raise BrokenRun(f"{spec.name} has no rows")
    for column in spec.full:
        frame[column] = _numbers(frame, column, spec.name, full=True)
    for column in (c for c in spec.numeric if c in frame.columns):
        frame[column] = _numbers(frame, column, spec.name, full=False)
    for column in spec.flags:
        frame[column] = _flags(frame, column, spec.name)
    return frame
