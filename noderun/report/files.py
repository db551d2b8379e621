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

from noderun.records import CONFIG_DIR
from noderun.safeio import MAX_DOCUMENT_BYTES, UnsafeFile, parse_yaml, read_text

# Far above what noderun writes (a config is a few KiB, a metrics.csv of 160 epochs some 30 KiB),
# and low enough that a huge or endless file cannot stall the report or fill its memory. (summary.json
# is read by noderun.records.read_summary, which has its own limit.)
MAX_YAML_BYTES = MAX_DOCUMENT_BYTES
MAX_CSV_BYTES = 64 << 20
CONFIG_FILE = Path(CONFIG_DIR) / "config.yaml"


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


def _text_of(path: Path, limit: int) -> str:
    """Return a regular file of at most `limit` bytes as UTF-8 text (noderun.safeio); raise BrokenRun
    naming it when it is missing, not a regular file, over the limit or binary."""
    if not path.exists() and not path.is_symlink():
        raise BrokenRun(f"{path.name} is missing")
    try:
        return read_text(path, limit)
    except UnsafeFile as err:
        raise BrokenRun(str(err).replace(str(path), path.name)) from None


def read_run_config(run_dir: Path) -> dict | None:
    """Return the run's resolved config (.hydra/config.yaml) as plain dicts and lists, without
    resolving interpolations (noderun.safeio's loader: no aliases, at most 1 MiB); None when the run has
    none (hydra.output_subdir=null)."""
    path = run_dir / CONFIG_FILE
    if not path.exists() and not path.is_symlink():
        return None
    try:
        config = parse_yaml(_text_of(path, MAX_YAML_BYTES), "config.yaml")
    except UnsafeFile as err:
        raise BrokenRun(str(err)) from None
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
