"""Signals during a run: SIGTERM and SIGINT end it as `interrupted`, but never inside a write."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Any, Iterator


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised in the main thread between writes."""


_deferring = 0
_pending: int | None = None


def _on_signal(signum: int, frame: Any) -> None:
    """Raise Interrupted now, or, inside a write (`signals_deferred`), once the write is done.

    Python runs signal handlers in the main thread between bytecodes, whichever thread the process
    got the signal on; deferring here (not with pthread_sigmask, which only masks the main thread)
    keeps the handler from raising inside torch.save.
    """
    global _pending
    if _deferring:
        _pending = signum
        return
    raise Interrupted(f"received signal {signum}")


@contextmanager
def signals_deferred(deliver: bool = True) -> Iterator[None]:
    """Hold SIGTERM/SIGINT back while the block runs; afterwards raise Interrupted for one that came
    (unless `deliver` is false: the run is ending anyway)."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            if deliver:
                raise Interrupted(f"received signal {signum}")


@contextmanager
def signal_handlers() -> Iterator[None]:
    """Route SIGTERM and SIGINT through `_on_signal` while the block runs, then put back what was there
    (main thread only; in a launcher's worker thread the launcher's handling stays)."""
    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _on_signal)
    except ValueError:
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
