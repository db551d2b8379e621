"""Unit tier: the command-line pre-check (noderun.config) says each mistake in one line with exit 2,
in-process and before anything trains."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import noderun.cli
from noderun.command import parsed_command
from noderun.config import checked_overrides


@pytest.fixture
def run_cli(monkeypatch, tmp_path, capsys):
    """Return a function that runs `noderun ARGS` in-process and returns (exit code, stderr lines);
    reaching Hydra's app (training) fails the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(noderun.cli, "_app", lambda: pytest.fail("the pre-check let the command through"))

    def run(*args: str) -> tuple[int, list[str]]:
        monkeypatch.setattr(sys, "argv", ["noderun", *args])
        with pytest.raises(SystemExit) as exit_info:
            noderun.cli.main()
        return exit_info.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]

    return run


@pytest.mark.parametrize("args, words", [
    (["seed=1.5"], ["seed=1.5", "whole number"]),
    (["trainer.lr=abc"], ["trainer.lr='abc'", "a number"]),
    (["trainer.epoch=3"], ["unknown key trainer.epoch", "epochs, batch_size, lr"]),
    (["+trainer.epoch=3"], ["unknown key trainer.epoch", "epochs, batch_size, lr"]),
    (["++trainer.epoch=3"], ["unknown key trainer.epoch", "epochs, batch_size, lr"]),
    (["model=foo"], ["unknown model 'foo'", "latent_ode, mlp, odenet", "resnet, rknet, rnn, rnn_gap"]),
    (["solver=rk5"], ["unknown solver 'rk5'", "dopri5", "euler"]),
    (["solver.rtol=0"], ["solver.rtol=0", "> 0"]),
    (["trainer.epochs=0"], ["trainer.epochs=0", ">= 1"]),
    (["device=tpu"], ["device='tpu'", "auto, cpu, cuda"]),
    # retired with noderun/rk_stages.py (issue 19: solver.path=device replaces it)
    (["speed.rk_stages=true"], ["unknown key speed.rk_stages", "speed has: compile"]),
    (["speed.compile=maybe"], ["speed.compile='maybe'", "true or false"]),
    (["solver=dopri8", "solver.path=device"], ["solver.path=device has no 'dopri8'", "solver.path=torchdiffeq"]),
    (["-m", "seed=0,x"], ["seed='x'", "whole number"]),
    (["experiment=quick", "trainer.lr=abc"], ["trainer.lr='abc'", "a number"]),
    (["seed=0,1"], ["seed=0,1", "-m"]),
    (["+trainer.epochs=3"], ["+trainer.epochs=3", "trainer.epochs=3"]),
    (["model=rknet", "model.adjoint=true"], ["unknown key model.adjoint", "name, downsampling, t1"]),
    (["model=odenet", "model.adjoint=false", "solver=scipy_solver"], ["solver=scipy_solver", "model.adjoint=true"]),
    (["solver.step_size=abc"], ["solver.step_size='abc'", "> 0 or null"]),
    (["threads=0"], ["threads=0", ">= 1"]),
    (["-m", "experiment=table2", "dataset.n_obs=abc"], ["dataset.n_obs='abc'", "whole number"]),
    (["-m", "experiment=quick", "model.adjoint=true"], ["unknown key model.adjoint", "model=mlp"]),
    (["-m", "model=mlp,rknet", "seed=0,x"], ["seed='x'", "whole number"]),
    # Hydra composes a sweep's base without its swept choices: the default dataset has no n_spirals
    (["-m", "model=rnn,latent_ode", "dataset.n_spirals=40"], ["unknown key dataset.n_spirals", "dataset=spirals"]),
    (["tags=paper"], ["tags='paper'", "a list"]),
    (["tags=[paper,'a b']"], ["tags=", "names of letters, digits"]),
    (["tags=[1]"], ["tags=[1]", "names of letters, digits"]),
    (["note='two\nlines'"], ["note=", "one line of at most 300 printable characters"]),
    # a setting the chosen task does not read (issue 31): accepted and ignored, it would make another run
    (["experiment=ecg", "dataset.path=beats.csv", "trainer.lr=0.05"], ["trainer.lr=0.05", "task ecg", "ecg, solver"]),
    (["experiment=tolerance", "model=resnet"], ["model=resnet", "task tolerance does not read model"]),
    (["experiment=memory", "solver=euler"], ["solver=euler", "task memory", "solver.path"]),
    (["-m", "experiment=memory,gradcheck", "model.t1=2"], ["model.t1=2", "task memory"]),
    # a task's settings are typed too (noderun.schema), checked before anything runs
    (["experiment=memory", "memory.batch_size=0"], ["memory.batch_size=0", ">= 1"]),
    (["experiment=cubic", "cubic.resnet.iterations=abc"], ["cubic.resnet.iterations='abc'", "whole number"]),
    (["experiment=ecg", "dataset.path=x.csv", "ecg.lr=0"], ["ecg.lr=0", "> 0"]),
    (["experiment=memory", "memory.depth=3"], ["unknown key memory.depth", "models, steps, method"]),
    (["task=fit"], ["unknown task 'fit'", "memory", "timeseries"]),
])
def test_mistake_exits_2_with_one_line_naming_it(run_cli, args, words):
    code, lines = run_cli(*args)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("noderun: error: "), lines
    for word in words:
        assert word in lines[0]


def test_dataset_root_that_is_a_file_is_refused(run_cli, tmp_path):
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a folder")
    code, lines = run_cli(f"dataset.root={a_file}")
    assert code == 2 and len(lines) == 1
    assert f"dataset.root='{a_file}'" in lines[0] and "File exists" in lines[0]


def test_dataset_root_that_cannot_be_created_is_refused(run_cli, tmp_path):
    under_a_file = tmp_path / "data.txt" / "mnist"
    under_a_file.parent.write_text("not a folder")
    code, lines = run_cli(f"dataset.root={under_a_file}")
    assert code == 2 and len(lines) == 1
    assert f"dataset.root='{under_a_file}'" in lines[0] and "Not a directory" in lines[0]
    assert not under_a_file.parent.is_dir()


@pytest.mark.parametrize("args", [
    ["model=mlp", "trainer.epochs=1", "trainer.lr=1", "seed=3", "dataset.train_size=256"],
    ["-m", "model=mlp,rknet", "seed=0,1", "solver.step_size=0.5"],
    ["experiment=quick", "trainer.lr=0.05"],
    ["experiment=table2_quick", "trainer.epochs=2"],
    ["experiment=timeseries", "model=latent_ode", "model.adjoint=true", "solver=scipy_solver"],
    ["-m", "seed=range(3)", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ["resume=true"],
    ["tags=[paper,v2.1]", "note='the baseline, again'"],
    ["experiment=memory", "solver.path=torchdiffeq", "dataset.root=data"],
    ["experiment=ecg", "dataset.path=beats.csv", "trainer.progress=false", "solver.rtol=1e-4"],
    ["task=gradcheck", "gradcheck.batch_size=4"],
])
def test_good_command_passes_the_pre_check(args):
    checked_overrides(args)


def test_noderun_reads_no_private_part_of_hydra():
    # hydra._internal may change in any release; the pre-check uses Hydra's public API and its own
    # parser of Hydra's documented options.
    package = Path(__file__).resolve().parents[1] / "noderun"
    assert not [p.name for p in package.rglob("*.py") if "hydra._internal" in p.read_text()]


@pytest.mark.parametrize("args, shows_only, multirun", [
    (["--help"], True, False), (["-m", "seed=1,2"], False, True), (["--cfg", "job", "seed=1"], True, False),
    (["--info"], True, False), (["--info", "defaults", "seed=1"], True, False), (["-cn", "other"], False, False),
])
def test_the_command_line_is_read_as_hydra_reads_it(args, shows_only, multirun):
    command = parsed_command(args)
    assert (command.shows_only, command.multirun) == (shows_only, multirun)
    assert command.own_config == ("-cn" in args)
