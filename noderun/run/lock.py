"""The run directory's lock: one process at a time runs a run."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from noderun.errors import UserError
from noderun.records import LOCK_FILE
from noderun.safeio import UnsafeFile, read_text


class RunLock:
    """A lock file in a run directory: one process at a time runs it.

    The lock appears with its holder already written in it (a hard link to a complete file, which
    fails if a lock exists), so no other process ever reads it half-written. A lock whose process is
    gone from this machine is taken over; one held on another machine (a cluster node) cannot be
    checked from here, so the refusal names the file to delete once that process is known to be gone.
    Two processes may find the same stale lock: each moves the lock file aside (one atomic rename) and
    deletes it only if it is still the stale one it judged, so that neither deletes the lock the other
    has just taken; the loser puts that lock back.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.mine = f"{socket.gethostname()} {os.getpid()}\n"
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise UserError naming the process that holds it and the lock file."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise UserError(f"{self.path} is not a lock file noderun made (it is a directory, link or other "
                            f"file); remove it once no noderun process runs {self.path.parent}")
        draft = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
        draft.write_text(self.mine)
        try:
            for _ in range(3):
                try:
                    os.link(draft, self.path)
                except FileExistsError:
                    stale = self._read()
                    holder = self._live_holder(stale)
                    if holder:
                        raise UserError(f"{self.path.parent.resolve()} is being run by process {holder} (lock file "
                                        f"{self.path.resolve()}); wait for it to end, or delete the lock file if "
                                        f"that process is gone") from None
                    self.remove_if_still(stale)
                    continue
                self.held = True
                return
        finally:
            draft.unlink(missing_ok=True)
        raise UserError(f"could not take the lock {self.path}; other processes keep taking it")

    def _read(self) -> str | None:
        """Return the lock file's text (None when it is gone or unreadable)."""
        try:
            return read_text(self.path, 4096, follow=False)
        except UnsafeFile:
            return None

    def remove_if_still(self, stale: str | None) -> None:
        """Delete the lock file if it still holds `stale` (what this process judged stale); a lock that
        another process took meanwhile is put back where it was."""
        aside = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.stale")
        try:
            os.rename(self.path, aside)  # atomic: of two processes, one moves the file, the other finds none
        except FileNotFoundError:
            return
        try:
            if read_text(aside, 4096, follow=False) != stale:
                os.link(aside, self.path)  # not the stale lock: another process's, so it goes back
        except (OSError, UnsafeFile):
            pass  # a third process took the free name meanwhile: the lock there is its own
        finally:
            aside.unlink(missing_ok=True)

    def _live_holder(self, text: str | None) -> str | None:
        """Return who holds a lock with this text if that process may still be running, else None."""
        try:
            host, pid = (text or "").split()
            pid_number = int(pid)
        except ValueError:
            return None  # garbage: no noderun process wrote it
        if host != socket.gethostname():
            return f"{pid} on {host}"
        try:
            os.kill(pid_number, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def release(self) -> None:
        """Remove the lock if this process holds it (and it is still this process's)."""
        if self.held:
            try:
                if read_text(self.path, 4096, follow=False) == self.mine:
                    self.path.unlink()
            except (OSError, UnsafeFile):
                pass
            self.held = False
