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
from noderun.records import linked_run_dir, read_summary

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


def plugin_folder(folder: Path, name: str, files: dict[str, str]) -> tuple[dict[str, str], str]:
    """Write a plugin as the README's recipes have it: `files` (its module NAME.py and its YAMLs under
    conf/) into `folder`, and an installed distribution's metadata naming the module by a `noderun.plugins`
    entry point (found on PYTHONPATH). Return (environment, search-path override)."""
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(textwrap.dedent(text).lstrip())
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[noderun.plugins]\n{name} = {name}\n")
    env = {**os.environ, "PYTHONPATH": str(folder), "PYTHONUNBUFFERED": "1"}
    return env, f"hydra.searchpath=[file://{folder / 'conf'}]"


@pytest.fixture
def plugin(tmp_path) -> tuple[dict[str, str], str]:
    """A plugin holding the model's module, its YAML and its entry point."""
    return plugin_folder(tmp_path / "plugin", "tinymlp", {"tinymlp.py": PLUGIN, "conf/model/tinymlp.yaml": YAML})


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
    assert listed.stdout.split() == ["mlp,resnet,rknet,odenet,downsample_head,tinymlp"], listed.stderr
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


EXPERIMENT = '''
"""An experiment from outside noderun: learn the rate k of dy/dt = -k y from e^{-0.7 t} at 21 times,
each solve by the run's solver (the solver group), trained with noderun's one loop."""
from dataclasses import dataclass

import torch
from torch import nn

from noderun import schema
from noderun.experiments import EXPERIMENTS
from noderun.measure import NFECounter
from noderun.run.lifecycle import ExperimentEntry
from noderun.solvers import SolveStats, integrate, solver_spec
from noderun.train import training_steps


@dataclass
class DecaySettings:
    true_rate: float = schema.positive(0.7)
    epochs: int = schema.whole(3, 1)
    steps_per_epoch: int = schema.whole(20, 1)
    lr: float = schema.positive(0.1)


class Dynamics(nn.Module):
    def __init__(self):
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(0.1))

    def forward(self, t, y):
        return -self.rate * y


class Decay(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.dynamics, self.spec, self.solve_stats = Dynamics(), spec, SolveStats()

    def forward(self, times):
        return integrate(self.dynamics, torch.ones(1), times, self.spec, False, stats=self.solve_stats)[:, 0]


def run(cfg, rec):
    settings = cfg.decay
    times = torch.linspace(0.0, 2.0, 21)
    target = torch.exp(-settings.true_rate * times)
    model = Decay(solver_spec(cfg))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    first = len(rec.rows) + 1 if rec.restore(model=model, optimizer=optimizer) else 1
    for epoch in range(first, settings.epochs + 1):
        steps = list(training_steps(model, optimizer, [times] * settings.steps_per_epoch,
                                    lambda t: (((model(t) - target) ** 2).mean(), None), NFECounter(model)))
        rate = float(model.dynamics.rate)
        row = {"epoch": epoch, "loss": steps[-1].loss, "rate": rate, "nfe_forward": steps[-1].nfe_forward}
        rec.record_epoch(row, {"model": model.state_dict(), "optimizer": optimizer.state_dict()}, rate=rate)
    rec.write_file("decay.md", f"learned rate {float(model.dynamics.rate):.3f}, true {settings.true_rate}\\n")


EXPERIMENTS["decay"] = ExperimentEntry(run, trains=True)
schema.SCHEMAS["task"]["decay"] = DecaySettings
schema.TASK_READS["decay"] = ("decay", "solver")
schema.register()
'''

TASK_YAML = '''
# @package _global_
# task=decay: the rate of dy/dt = -k y learned from e^{-0.7 t} (decay.py)
task: decay
decay:
  true_rate: 0.7
  epochs: 3
  steps_per_epoch: 20
  lr: 0.1
'''

PRESET_YAML = '''
# @package _global_
# experiment=decay: the task decay, each solve by rk4 at steps of 0.1
defaults:
  - override /task: decay
  - override /solver: rk4

solver:
  step_size: 0.1
'''


@pytest.fixture
def experiment_plugin(tmp_path) -> tuple[dict[str, str], str]:
    """A plugin holding the experiment's module, its task YAML, its preset and its entry point."""
    return plugin_folder(tmp_path / "plugin", "decay", {"decay.py": EXPERIMENT, "conf/task/decay.yaml": TASK_YAML,
                                                        "conf/experiment/decay.yaml": PRESET_YAML})


@pytest.mark.slow
def test_an_experiment_added_from_outside_the_package_trains_and_resumes(experiment_plugin, mnist_root, tmp_path):
    env, searchpath = experiment_plugin
    result = _noderun([searchpath, "experiment=decay", "threads=1"], env, tmp_path, mnist_root)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["task"] == "decay" and summary["epochs_done"] == 3
    assert abs(summary["rate"] - 0.7) < 0.05, summary["rate"]  # learned from 0.1
    assert "decay.md" in summary["files"] and (run_dir / "decay.md").read_text().startswith("learned rate")
    metrics = (run_dir / "metrics.csv").read_text().splitlines()
    assert metrics[0].split(",") == ["epoch", "loss", "rate", "nfe_forward"] and len(metrics) == 4
    assert all(int(line.split(",")[3]) == 20 * 4 for line in metrics[1:])  # rk4: 20 steps of 4 evaluations
    # its key config holds what it reads: its settings and the solver, not the model or the dataset
    assert set(summary["key_config"]) >= {"decay", "solver"} and not {"model", "dataset"} & set(summary["key_config"])
    # resume=true finds it by its key config (an experiment that trains resumes like noderun's own); a
    # completed run is not redone: the new directory only points to it
    again = _noderun([searchpath, "experiment=decay", "threads=1", "resume=true"], env, tmp_path, mnist_root)
    assert again.returncode == 0, again.stderr
    (link_dir,) = set((tmp_path / "outputs" / "runs").iterdir()) - {run_dir}
    assert linked_run_dir(link_dir) == run_dir and (run_dir / "metrics.csv").read_text().splitlines() == metrics
    # its settings are typed by its dataclass; a key it does not read is refused: one line, exit 2
    for args, named in ((["decay.epochs=many"], ("decay.epochs='many'", "whole number")),
                        (["decay.rates=1"], ("unknown key decay.rates", "true_rate")),
                        (["trainer.lr=0.5"], ("trainer.lr=0.5", "task decay does not read trainer"))):
        wrong = _noderun([searchpath, "experiment=decay", *args], env, tmp_path, mnist_root)
        lines = [line for line in wrong.stderr.splitlines() if line.strip()]
        assert wrong.returncode == 2 and len(lines) == 1 and all(n in lines[0] for n in named), wrong.stderr
