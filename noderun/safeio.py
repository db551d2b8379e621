"""Opening files that may be hostile: every file noderun reads or appends to goes through here.

Only regular files are opened (a FIFO would block the reader forever, a device such as /dev/zero never
end it, a directory fail obscurely), a link is followed only where the caller allows it, and what is
read is capped in size. YAML and JSON from a run directory are parsed here too, with the same limits
and without YAML aliases (a few nested aliases expand to billions of nodes). Each refusal is an
UnsafeFile whose message names the file and what is wrong with it.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import stat
from pathlib import Path
from typing import IO, Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Far above what noderun writes (a config or summary is a few KiB), and low enough that a huge or
# endless file cannot stall a reader or fill its memory.
MAX_DOCUMENT_BYTES = 1 << 20
# Errors that mean the disk (or the process's file-size limit) is full: a write cannot succeed anywhere there.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class UnsafeFile(Exception):
    """A file that cannot be read (or appended to) as noderun must; the message names it."""


def _kind(mode: int) -> str:
    """Return what a file of this st_mode is, in a few words."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def _open_fd(path: Path, flags: int, follow: bool) -> int:
    """Open path with flags, never blocking on a FIFO; return the descriptor of a regular file, or raise
    UnsafeFile (also for a symbolic link where `follow` is false)."""
    flags |= os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP and not follow:
            raise UnsafeFile(f"{path} is a symbolic link; noderun does not follow it (remove the link)") from None
        if err.errno in (errno.EISDIR, errno.ENXIO):
            raise UnsafeFile(f"{path} is not a regular file") from None
        raise UnsafeFile(f"cannot open {path} ({err.strerror or err})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnsafeFile(f"{path} is {_kind(mode)}, not a regular file")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def open_regular(path: Path | str, follow: bool = True) -> IO[bytes]:
    """Return `path` opened for reading in binary, if it is a regular file (a link to one, where `follow`);
    else raise UnsafeFile."""
    return os.fdopen(_open_fd(Path(path), os.O_RDONLY, follow), "rb")


def open_append(path: Path | str) -> IO[str]:
    """Return `path` opened for appending text, created if missing; a symbolic link or anything but a
    regular file there raises UnsafeFile (a log must not be written through a link to another file)."""
    return os.fdopen(_open_fd(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, follow=False), "a",
                     encoding="utf-8")


def open_overwrite(path: Path | str) -> IO[bytes]:
    """Return an existing regular file opened for writing in binary, in place (no link followed, nothing
    created); else raise UnsafeFile."""
    return os.fdopen(_open_fd(Path(path), os.O_WRONLY, follow=False), "wb")


def read_bytes(path: Path | str, limit: int = MAX_DOCUMENT_BYTES, follow: bool = True) -> bytes:
    """Return the bytes of a regular file of at most `limit` bytes; else raise UnsafeFile."""
    with open_regular(path, follow) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as err:
            raise UnsafeFile(f"cannot read {path} ({err.strerror or err})") from None
    if len(data) > limit:
        raise UnsafeFile(f"{path} is larger than {limit // 1024} KiB, far more than noderun writes")
    return data


def read_text(path: Path | str, limit: int = MAX_DOCUMENT_BYTES, follow: bool = True) -> str:
    """Return a regular file of at most `limit` bytes as UTF-8 text; else raise UnsafeFile."""
    try:
        return read_bytes(path, limit, follow).decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeFile(f"{path} is not text (binary data?)") from None


def load_json(path: Path | str, limit: int = MAX_DOCUMENT_BYTES) -> Any:
    """Return the JSON document in a regular file of at most `limit` bytes; else raise UnsafeFile."""
    text = read_text(path, limit)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise UnsafeFile(f"{path} is not JSON ({type(err).__name__}: {' '.join(str(err).split())[:120]})") from None


def parse_yaml(text: str, name: str) -> Any:
    """Return a YAML mapping or list as plain dicts, lists and scalars, read as OmegaConf reads a config
    (its safe loader; interpolations left unresolved); raise UnsafeFile naming `name` for text that is
    no such YAML, or that uses anchors and aliases, which noderun never writes."""
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise UnsafeFile(f"{name} uses YAML aliases, which noderun never writes")
        return OmegaConf.to_container(OmegaConf.load(io.StringIO(text)), resolve=False)
    except (yaml.YAMLError, RecursionError) as err:
        raise UnsafeFile(f"{name} is not YAML ({' '.join(str(err).split())[:160]})") from None
    except (OmegaConfBaseException, OSError, ValueError, TypeError) as err:  # OSError: a bare scalar
        raise UnsafeFile(f"{name} is not a config ({' '.join(str(err).split())[:160]})") from None


def load_yaml(path: Path | str, limit: int = MAX_DOCUMENT_BYTES) -> Any:
    """Return the YAML document in a regular file of at most `limit` bytes (see parse_yaml); else raise
    UnsafeFile."""
    return parse_yaml(read_text(path, limit), str(path))


def printable(text: str) -> str:
    """Return text with every unprintable character (a newline, a terminal escape) made a space, so
    that what a file holds prints as it is and cannot act on the terminal."""
    return "".join(c if c.isprintable() else " " for c in text)


def unusable_folder_reason(path: Path) -> str | None:
    """Return why `path` is neither a folder nor creatable as one, in the OS's words (os.strerror),
    or None. Creates nothing; an existing folder counts as usable even if read-only (a shared cache)."""
    try:
        if path.is_dir():
            return None
        if path.exists():
            return os.strerror(errno.EEXIST)
        existing = next(p for p in path.absolute().parents if p.exists())
        if not existing.is_dir():
            return os.strerror(errno.ENOTDIR)
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
        if not os.access(existing, os.W_OK | os.X_OK):
            return os.strerror(errno.EACCES)
    except OSError as err:
        return err.strerror or str(err)
    return None
