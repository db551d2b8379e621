"""The README's "Adding a model" recipe followed literally from outside noderun's package: a module that
adds its model to the registries, a YAML in a config folder put on Hydra's search path, and an entry point
naming the module (written here as an installed distribution's metadata would be, on PYTHONPATH). The
model then trains through the real `noderun` command, its config typed by its own dataclass, it is in
every Table-1 preset, and the report names it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import NODERUN, SMALL
from noderun.records import read_summary

PLUGIN = '''
"""A Table-1 model from outside noderun: one hidden layer of `width` units."""
from dataclasses import dataclass

from torch import nn

from noderun import schema
from noderun.models import MODELS, ModelEntry


@dataclass
class TinyMLPModel:
    name: str = "tinymlp"
    width: int = schema.whole(16, 1)


def build(cfg, solver):
    width = int(cfg["width"])
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))


MODELS["tinymlp"] = ModelEntry(build, 1, False, "Tiny MLP", "#17becf")
schema.SCHEMAS["model"]["tinymlp"] = TinyMLPModel
schema.register()
'''

YAML = '''
# A one-hidden-layer MLP of `width` units (tinymlp.py)
defaults:
  - /schema_model_tinymlp@_here_
  - _self_

name: tinymlp
width: 16
'''


@pytest.fixture
def plugin(tmp_path) -> tuple[dict[str, str], str]:
    """Return (environment, search-path override) of a folder holding the model's module, its YAML and
    its entry point."""
    folder = tmp_path / "plugin"
    (folder / "conf" / "model").mkdir(parents=True)
    (folder / "tinymlp.py").write_text(textwrap.dedent(PLUGIN))
    (folder / "conf" / "model" / "tinymlp.yaml").write_text(textwrap.dedent(YAML).lstrip())
    info = folder / "tinymlp-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinymlp\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[noderun.plugins]\ntinymlp = tinymlp\n")
    env = {**os.environ, "PYTHONPATH": str(folder), "PYTHONUNBUFFERED": "1"}
    return env, f"hydra.searchpath=[file://{folder / 'conf'}]"


def _noderun(args: list[str], env: dict[str, str], cwd: Path, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([NODERUN, *args], cwd=cwd, env={**env, "NODERUN_DATA_DIR": str(data)},
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_model_added_from_outside_the_package_trains_and_is_reported(plugin, mnist_root, tmp_path):
    env, searchpath = plugin
    result = _noderun([searchpath, "model=tinymlp", "model.width=24", *SMALL, "threads=1", "trainer.progress=false"],
                      env, tmp_path, mnist_root)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["model"] == "tinymlp"
    assert summary["params"] == 784 * 24 + 24 + 24 * 10 + 10 and 0 <= summary["test_error"] <= 100
    # its own dataclass types its config: a wrong value is one line, exit 2, before anything runs
    wrong = _noderun([searchpath, "model=tinymlp", "model.width=wide"], env, tmp_path, mnist_root)
    assert wrong.returncode == 2 and "model.width='wide'" in wrong.stderr and "whole number" in wrong.stderr
    # a Table-1 model of the registry: in every Table-1 preset's sweep
    listed = subprocess.run([sys.executable, "-c", "import noderun.cli; from noderun.config import _table_models; "
                             "print(_table_models(1))"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.stdout.split() == ["mlp,resnet,rknet,odenet,tinymlp"], listed.stderr
    # and the report names it by its label
    report = subprocess.run([str(Path(NODERUN).with_name("noderun-report")), str(run_dir), "--out", str(tmp_path / "r")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "Tiny MLP" in (tmp_path / "r" / "table1.md").read_text()


@pytest.mark.slow
def test_a_plugin_that_fails_to_load_is_one_line(plugin, mnist_root, tmp_path):
    env, _ = plugin
    Path(env["PYTHONPATH"], "tinymlp.py").write_text("raise ImportError('no module named torch_extras')\n")
    result = _noderun(["model=mlp"], env, tmp_path, mnist_root)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "plugin 'tinymlp'" in lines[0] and "torch_extras" in lines[0]
