"""The MIT-BIH heartbeat CSV format: 187 signal values per row, then the class (0-4)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from noderun.data.idx import data_file
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
    if not path.exists():  # anything else there that is not a regular file is refused by data_file
        raise UserError(f"ECG file {path} does not exist; pass the MIT-BIH heartbeat CSV with dataset.path=FILE")
    signals, labels = [], []
    with data_file(path) as raw, io.TextIOWrapper(raw, newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            values, label = _parse_row(row, path, line)
            signals.append(values)
            labels.append(label)
    if not signals:
        raise UserError(f"ECG file {path} holds no rows")
    return torch.tensor(signals, dtype=torch.float32).unsqueeze(1), torch.tensor(labels, dtype=torch.int64)


def write_ecg_csv(path: Path, signals: torch.Tensor, labels: torch.Tensor) -> None:
    """Write signals (N×187 or N×1×187) and labels as a headerless MIT-BIH heartbeat CSV file."""
    rows = signals.reshape(len(signals), -1).tolist()
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        for values, label in zip(rows, labels.tolist()):
            writer.writerow([f"{v:.6g}" for v in values] + [f"{float(label):.1f}"])


def synthetic_heartbeats(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return n made-up beats in the MIT-BIH CSV's shape and range (N×187 in [0, 1], classes 0-4 with
    the real file's imbalance, about 83 % class 0): a spike at the start, then a bump whose position
    and width depend on the class, plus noise and a zero-padded tail. For trying the ECG preset and
    for tests; they are not heartbeats, and accuracy on them says nothing about real ECGs."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.tensor([0.83, 0.025, 0.066, 0.007, 0.072])
    labels = torch.multinomial(weights, n, replacement=True, generator=generator)
    t = torch.arange(SIGNAL_LENGTH, dtype=torch.float32)
    centre = (40 + 22 * labels + 6 * torch.randn(n, generator=generator)).unsqueeze(1)
    width = (6 + 2 * labels).float().unsqueeze(1)
    signals = 0.9 * torch.exp(-(t / 3) ** 2) + 0.5 * torch.exp(-((t - centre) / width) ** 2)
    signals = signals + 0.05 * torch.randn(n, SIGNAL_LENGTH, generator=generator)
    length = torch.randint(120, SIGNAL_LENGTH + 1, (n, 1), generator=generator)
    signals = torch.where(t < length, signals, torch.zeros(()))  # the real beats are zero-padded to 187
    return signals.clamp(0, 1), labels
