"""Reading, writing and verifying IDX files (the MNIST file format), raw or gzipped."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

from noderun.errors import UserError
from noderun.safeio import UnsafeFile, open_regular

# IDX type code 0x08 is unsigned byte, the only type MNIST-style files use.
_UBYTE = 0x08


def data_file(path: Path):
    """Return a data file opened for reading in binary, or raise UserError naming it when it is not a
    regular file (a directory; a FIFO or a device such as /dev/zero, which would hang the reader)."""
    try:
        return open_regular(path)
    except UnsafeFile as err:
        raise UserError(f"{err}; replace it with the data file itself and run again") from None


def md5_of_file(path: Path) -> str:
    """Return the hex MD5 of the file's bytes as stored on disk."""
    digest = hashlib.md5()
    with data_file(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: Path, expected: str, fix: str) -> None:
    """Raise UserError naming the file and both checksums unless the file's MD5 is `expected`."""
    actual = md5_of_file(path)
    if actual != expected:
        raise UserError(
            f"checksum mismatch for {path}: expected MD5 {expected}, got {actual}; {fix}"
        )


def decode_idx(data: bytes, source: str) -> np.ndarray:
    """Decode the bytes of an unsigned-byte IDX file into an array of its declared shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise UserError(f"{source} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise UserError(f"{source} is truncated or padded: {len(data)} bytes, header says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gunzipping it first when its name ends in .gz."""
    if path.suffix == ".gz":
        try:
            with data_file(path) as raw, gzip.open(raw, "rb") as handle:
                data = handle.read()
        except (OSError, EOFError) as err:
            raise UserError(f"{path} is not a readable gzip file ({err}); delete it and run again") from err
    else:
        with data_file(path) as handle:
            data = handle.read()
    return decode_idx(data, str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as the bytes of an IDX file."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX encoding here supports uint8 only, got {array.dtype}")
    header = bytes([0, 0, _UBYTE, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_atomically(path: Path, data: bytes) -> None:
    """Write bytes to path so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
