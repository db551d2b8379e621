"""The seed documents' experiments as presets, through the real `noderun` command."""

from __future__ import annotations

import json

import pandas as pd

from conftest import error_lines, run_noderun, single_run_dir


def test_solver_accuracy_against_the_exact_solution(mnist_root, tmp_path):
    args = ["experiment=solver_accuracy", "solver_accuracy.methods=[euler,rk4,dopri5]",
            "solver_accuracy.step_sizes=[0.1,0.05]", "solver_accuracy.tolerances=[1e-3,1e-6]"]
    result = run_noderun(args, mnist_root, tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = single_run_dir(tmp_path)
    table = pd.read_csv(run_dir / "solver_accuracy.csv")
    rows = {(r.method, r.step_size if r.method != "dopri5" else r.tol): r for r in table.itertuples()}
    # [0, 5] in steps of 0.1: 50 Euler steps of one evaluation, 50 rk4 steps of four.
    assert rows["euler", 0.1].nfe == 50 and rows["rk4", 0.1].nfe == 200
    # Euler is first order (halving h about halves its error), rk4 fourth order, and the adaptive
    # solve at 1e-6 lands near the exact solution: the equation and its solution agree.
    assert 1.5 < rows["euler", 0.1].max_abs_error / rows["euler", 0.05].max_abs_error < 2.5
    assert rows["rk4", 0.1].max_abs_error / rows["rk4", 0.05].max_abs_error > 8
    assert rows["rk4", 0.1].max_abs_error < 1e-3 < 1 < rows["euler", 0.1].max_abs_error
    assert rows["dopri5", 1e-6].max_abs_error < 1e-3
    assert "| euler | 0.1 |" in (run_dir / "solver_accuracy.md").read_text()
    assert (run_dir / "solver_accuracy.png").stat().st_size > 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_solver_accuracy_refuses_an_unknown_method_in_one_line(mnist_root, tmp_path):
    result = run_noderun(["experiment=solver_accuracy", "solver_accuracy.methods=[euler,rk5]"], mnist_root, tmp_path)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "rk5" in lines[0] and "dopri5" in lines[0], result.stderr


def composed(overrides: list[str]):
    """Return the config noderun composes for the overrides (Hydra's compose API on conf/)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_seed_training_presets_set_the_documents_protocols():
    for model in ("rknet", "odenet"):
        cfg = composed(["experiment=table1_rk4", f"model={model}"])
        assert (cfg.solver.method, cfg.solver.step_size, cfg.model.t1, cfg.trainer.epochs) == ("rk4", 0.5, 2.0, 20)
    sweep = composed(["experiment=table1_rk4"]).hydra.sweeper.params
    assert (sweep.model, sweep.seed) == ("mlp,resnet,rknet,odenet", "0,1,2")
    cfg = composed(["experiment=odenet_vs_resnet", "model=odenet"])
    assert cfg.trainer.epochs == 50 and cfg.hydra.sweeper.params.model == "resnet,odenet"
