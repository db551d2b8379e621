"""The report's output folder: the report writes only files it made, and replaces or removes only those.

It keeps a manifest there, `.noderun-report.json`, with the SHA-256 of every file it wrote. A folder
is written into only if it is new, empty, or holds nothing but the files the manifest lists, each
still as the report wrote it; anything else there (a paper's main.pdf, a table the user edited, a link)
makes the report refuse the folder in one line and change nothing. The report is first drawn in a
temporary folder, then each file is moved in by an atomic rename, which replaces a file and never
writes through a link.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from noderun.errors import UserError
from noderun.safeio import UnsafeFile, load_json, open_regular

MANIFEST = ".noderun-report.json"


def _digest(path: Path) -> str | None:
    """Return the SHA-256 of a regular file (no link followed), or None for anything else."""
    digest = hashlib.sha256()
    try:
        with open_regular(path, follow=False) as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except (UnsafeFile, OSError):
        return None
    return digest.hexdigest()


def _manifest(out_dir: Path) -> dict[str, list[str]]:
    """Return the manifest's file names and the digests each may have ({} where there is none or it is
    not one the report wrote)."""
    if not (out_dir / MANIFEST).exists():
        return {}
    try:
        written = load_json(out_dir / MANIFEST).get("files", {})
    except (UnsafeFile, AttributeError):
        return {}
    if not isinstance(written, dict):
        return {}
    return {name: digests for name, digests in written.items()
            if isinstance(name, str) and isinstance(digests, list) and "/" not in name}


def _own_files(out_dir: Path) -> dict[str, list[str]]:
    """Return the report's own files in out_dir (by the manifest), or raise UserError naming the files
    there that the report did not write, changing nothing."""
    try:
        names = sorted(os.listdir(out_dir))
    except OSError as err:
        raise UserError(f"cannot write the report to {out_dir} ({err.strerror or err}); choose another folder "
                        f"with --out DIR") from None
    manifest = _manifest(out_dir)
    foreign = [n for n in names if n != MANIFEST and _digest(out_dir / n) not in manifest.get(n, [])]
    if foreign:
        shown = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
        raise UserError(f"{out_dir} holds files noderun-report did not write, or that changed since it wrote "
                        f"them ({shown}); it replaces only its own: choose another folder with --out DIR, or move those files away")
    return {n: d for n, d in manifest.items() if n in names}


def _write_manifest(out_dir: Path, files: dict[str, list[str]]) -> None:
    """Write the manifest in one step (a temporary file renamed over it)."""
    tmp = out_dir / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / MANIFEST)


def _move_in(source: Path, target: Path) -> None:
    """Copy source to target by a temporary file renamed over target (a link there is replaced, not followed)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def report_folder(out_dir: Path) -> Iterator[Path]:
    """Yield a new, empty temporary folder to draw the report in; afterwards move its files into out_dir,
    replacing the report's earlier files and removing those it no longer writes (its own only).
    Raise UserError, before anything is drawn, when out_dir holds files the report did not write."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write the report to {out_dir} ({err.strerror or err}); choose another folder "
                        f"with --out DIR") from None
    earlier = _own_files(out_dir)
    with tempfile.TemporaryDirectory(prefix="noderun-report-") as staging:
        yield Path(staging)
        new = {p.name: [_digest(p)] for p in sorted(Path(staging).iterdir()) if p.is_file()}
        # Until the last rename, a file may hold either its earlier or its new content: both are the report's.
        _write_manifest(out_dir, {n: sorted(set(earlier.get(n, []) + new.get(n, []))) for n in earlier.keys() | new})
        for name in new:
            _move_in(Path(staging) / name, out_dir / name)
        for name in earlier.keys() - new.keys():  # a report rewritten over fewer runs keeps no older figure
            (out_dir / name).unlink(missing_ok=True)
        _write_manifest(out_dir, new)
