"""A run's noderun.log: the terminal's log, appended to the run directory's file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from noderun.errors import UserError
from noderun.safeio import UnsafeFile, open_append

log = logging.getLogger("noderun")


class _RunLog(logging.StreamHandler):
    """A run's noderun.log, appended to; never through a symbolic link (safeio.open_append). A write that
    fails (a full disk) is dropped silently: the terminal gets the run's one line anyway."""

    def __init__(self, path: Path):
        try:
            stream = open_append(path)
        except UnsafeFile as err:
            raise UserError(f"cannot write the run's log: {err}") from None
        super().__init__(stream)

    def handleError(self, record: logging.LogRecord) -> None:
        pass

    def close(self) -> None:
        try:
            self.stream.close()
        except OSError:
            pass
        super().close()


def log_also_to(path: Path) -> logging.Handler:
    """Append this process's log to a run directory's log (a resumed run's log then tells its whole
    story), formatted as the terminal's; return the handler added."""
    handler = _RunLog(path)
    for existing in logging.getLogger().handlers:
        if existing.formatter is not None:
            handler.setFormatter(existing.formatter)
    logging.getLogger().addHandler(handler)
    return handler


def log_to_file(level: int, message: str, exc_info: bool = False) -> None:
    """Log to the run's log file only: the terminal already got its one line."""
    record = log.makeRecord(log.name, level, __file__, 0, message, (), sys.exc_info() if exc_info else None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, (logging.FileHandler, _RunLog)):
            handler.handle(record)
