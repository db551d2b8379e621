"""The wheel is a working noderun: it ships the Hydra configs, and installed outside the source tree
`python -m noderun` composes configs and completes a real run from any working directory."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = REPO_ROOT / "noderun"
# What the build reads: a clean copy of these, so that a stale build/ in the checkout cannot leak
# deleted modules into the wheel, and building leaves nothing in the checkout.
BUILD_INPUTS = ("pyproject.toml", "README.md", "noderun")
# A few seconds instead of 21: three methods, one step size, one tolerance, a short interval.
SMALL_SOLVER_ACCURACY = ["experiment=solver_accuracy", "solver_accuracy.t_end=1.0", "solver_accuracy.output_points=11",
                         "solver_accuracy.methods=[euler,rk4,dopri5]", "solver_accuracy.step_sizes=[0.1]",
                         "solver_accuracy.tolerances=[1.0e-3]"]


def builds_without_isolation() -> bool:
    """Return whether this venv can build the wheel itself: setuptools >= 70.1 (pyproject asks for >= 64;
    70.1 brought bdist_wheel in, older ones need the wheel package). Else pip builds it in isolation,
    fetching setuptools."""
    try:
        version = tuple(int(part) for part in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return version >= (70, 1) or (version >= (64, 0) and importlib.util.find_spec("wheel") is not None)


def source_copy(destination: Path) -> Path:
    """Return a copy of what the build reads (no caches, no build output) under destination."""
    for name in BUILD_INPUTS:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, destination / name)
    return destination


def pip(*args: str) -> None:
    """Run pip with this interpreter; fail the test with its output when it fails."""
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Return the path of a wheel built from the current source."""
    source = source_copy(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if builds_without_isolation() else []
    pip("wheel", "--no-deps", *isolation, "-w", str(out), str(source))
    (built,) = out.glob("noderun-*.whl")
    return built


@pytest.fixture(scope="module")
def target(wheel, tmp_path_factory) -> Path:
    """Return the folder the wheel is installed into (alone: its dependencies come from this venv)."""
    folder = tmp_path_factory.mktemp("target")
    pip("install", "--no-deps", "--target", str(folder), str(wheel))
    return folder


def run_installed(args: list[str], target: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run this interpreter with the installed wheel first on its path, in cwd (outside the source tree)."""
    env = {**os.environ, "PYTHONPATH": str(target), "NODERUN_DATA_DIR": str(cwd / "data"), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_ships_every_config_and_the_module_entry_point(wheel):
    shipped = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(REPO_ROOT).as_posix() for p in (PACKAGE / "conf").rglob("*.yaml")}
    assert len(configs) > 20  # config.yaml and the group folders (which have no __init__.py)
    assert configs - shipped == set()
    assert "noderun/__main__.py" in shipped


def test_the_installed_package_is_imported_not_the_source_tree(target, tmp_path):
    result = run_installed(["-c", "import noderun; print(noderun.__file__)"], target, tmp_path)
    assert result.returncode == 0, result.stderr
    imported = Path(result.stdout.strip()).resolve()
    assert imported.is_relative_to(target.resolve()), imported
    assert not imported.is_relative_to(REPO_ROOT)


def test_the_installed_command_composes_configs_from_any_directory(target, tmp_path):
    result = run_installed(["-m", "noderun", "--cfg", "job", "model=rknet"], target, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "name: rknet" in result.stdout
    assert "method: rk4" in result.stdout  # rknet's own solver default, from conf/model/rknet.yaml


def test_the_installed_command_completes_a_run(target, tmp_path):
    result = run_installed(["-m", "noderun", *SMALL_SOLVER_ACCURACY], target, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summaries = list((tmp_path / "outputs" / "runs").glob("*/summary.json"))
    assert len(summaries) == 1, summaries
    assert json.loads(summaries[0].read_text())["status"] == "completed"
