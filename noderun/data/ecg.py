"""The MIT-BIH heartbeat CSV format: 187 signal values per row, then the class (0-4)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from noderun.errors import UserError

SIGNAL_LENGTH = 187
NUM_CLASSES = 5


def _parse_row(row: list[str], path: Path, line: int) -> tuple[list[float], int]:
    if len(row) != SIGNAL_LENGTH + 1:
        raise UserError(f"{path}: row {line} has {len(row)} columns; expected {SIGNAL_LENGTH + 1} "
                        f"({SIGNAL_LENGTH} signal values, then the class 0-{NUM_CLASSES - 1})")
    try:
        values = [float(cell) for cell in row]
    except ValueError:
        bad = next(cell for cell in row if not _is_number(cell))
        raise UserError(f"{path}: row {line} has a cell that is not a number: {bad!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{path}: row {line} has a value that is not finite")
    label = values[-1]
    if label != int(label) or not 0 <= label < NUM_CLASSES:
        raise UserError(f"{path}: row {line} has label {row[-1]!r}; labels must be 0-{NUM_CLASSES - 1}")
    return values[:-1], int(label)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def load_ecg_csv(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (signals N×1×187 float32, labels N int64) from a MIT-BIH heartbeat CSV file.

    A missing file or the first malformed row stops with one line naming the file and the row.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"ECG file {path} does not exist; pass the MIT-BIH heartbeat CSV with dataset.path=FILE")
    signals, labels = [], []
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            values, label = _parse_row(row, path, line)
            signals.append(values)
            labels.append(label)
    if not signals:
        raise UserError(f"ECG file {path} holds no rows")
    return torch.tensor(signals, dtype=torch.float32).unsqueeze(1), torch.tensor(labels, dtype=torch.int64)
