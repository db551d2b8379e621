"""The seed documents' experiments as presets: what each preset's comment promises holds for the run
Hydra composes from it, and the experiments that need no MNIST run whole through the `noderun` entry
point (in-process)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import SWEEP_TRAINING, composed, single_error_line, single_run_dir
from noderun.solvers import solver_spec
from noderun.measure import NFECounter
from noderun.models import MODELS, build_model, models_of_table
from noderun.models.ode_block import ODEBlock
from noderun.records import read_summary

MAKE_ECG_CSV = Path(__file__).resolve().parents[1] / "scripts" / "make_ecg_csv.py"


def swept(preset: str, key: str) -> list[str]:
    """Return the values a preset's own sweep gives `key`."""
    return str(composed([f"experiment={preset}"], hydra_config=True).hydra.sweeper.params[key]).split(",")


def forward_nfe_and_interval(cfg) -> tuple[int, float]:
    """Return the dynamics evaluations of one forward pass of the model a config builds, and the end
    of the interval its ODE block integrates over."""
    model = build_model(cfg.model, solver_spec(cfg))
    counter = NFECounter(model)
    with torch.no_grad():
        model(torch.rand(2, 1, 28, 28))
    (block,) = [m for m in model.modules() if isinstance(m, ODEBlock)]
    return counter.take(), float(block.times[-1])


def test_table1_rk4_runs_the_four_models_three_times_with_16_rk4_evaluations_on_0_2():
    # "RK-Net and ODE-Net with rk4 at a fixed step of 0.5 on [0, 2] (4 steps, 16 evaluations), 20 epochs";
    # the ablation row (not the seed document's) runs beside its four models, without a figure of its own
    assert swept("table1_rk4", "model") == models_of_table(1) and swept("table1_rk4", "seed") == ["0", "1", "2"]
    for model in models_of_table(1):
        cfg = composed(["experiment=table1_rk4", f"model={model}"])
        assert cfg.trainer.epochs == 20 and (cfg.reference.error.get(model, 0) > 0) == (model != "downsample_head")
        if MODELS[model].is_ode:
            assert forward_nfe_and_interval(cfg) == (16, 2.0)


def test_odenet_vs_resnet_trains_both_for_50_epochs_against_the_documents_accuracies():
    # "ODE-Net against ResNet on MNIST for 50 epochs ... final test accuracies: ODE-Net 99.58 %, ResNet 99.52 %"
    assert swept("odenet_vs_resnet", "model") == ["resnet", "odenet"]
    cfg = composed(["experiment=odenet_vs_resnet", "model=odenet"])
    assert cfg.trainer.epochs == 50 and cfg.solver.method == "dopri5" and cfg.model.adjoint
    assert dict(cfg.reference.error) == {"odenet": pytest.approx(100 - 99.58), "resnet": pytest.approx(100 - 99.52)}


@pytest.mark.parametrize("preset, steps, seeds", [("quick", 500, None), ("table1_quick", 1000, ["0", "1", "2"])])
def test_quick_presets_train_one_augmented_epoch_at_the_reference_lr_scaled_to_their_batch(preset, steps, seeds):
    # "one epoch of 16,000 (32,000) training images (500 (1,000) steps of batch 32 at lr 0.05, the
    # reference's 0.1 scaled by the square root of 32/128, kept for the run; the reference's random-crop
    # augmentation)"
    reference, cfg = composed([]).trainer, composed([f"experiment={preset}"])
    assert cfg.trainer.lr == pytest.approx(reference.lr * (cfg.trainer.batch_size / reference.batch_size) ** 0.5)
    assert cfg.dataset.train_size / cfg.trainer.batch_size == steps and cfg.trainer.epochs == 1
    assert cfg.trainer.epochs < cfg.trainer.lr_decay_min_epochs  # no decay inside the one epoch
    assert cfg.dataset.augment and composed([]).dataset.crop_padding == cfg.dataset.crop_padding
    params = composed([f"experiment={preset}"], hydra_config=True).hydra.sweeper.params
    assert swept(preset, "model") == models_of_table(1) and (seeds is None) == ("seed" not in params)
    assert seeds is None or swept(preset, "seed") == seeds
    assert cfg.caption.startswith(f"experiment={preset}: a ") and "not the paper's protocol" in cfg.caption


def test_tolerance_sweep_pairs_atol_with_rtol():
    # "atol follows rtol, so the sweep pairs them (1e-1/1e-1, ...) instead of crossing them"
    for rtol in swept("tolerance_sweep", "solver.rtol"):
        spec = solver_spec(composed(["experiment=tolerance_sweep", "model=odenet", f"solver.rtol={rtol}"]))
        assert spec.method == "dopri5" and spec.rtol == spec.atol == float(rtol)


def test_solver_accuracy_against_the_exact_solution(noderun_main, tmp_path):
    result = noderun_main(["experiment=solver_accuracy", "solver_accuracy.methods=[euler,rk4,dopri5]",
                           "solver_accuracy.step_sizes=[0.1,0.05]", "solver_accuracy.tolerances=[1e-3,1e-6]"])
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
    assert read_summary(run_dir)["status"] == "completed"


def test_solver_accuracy_refuses_an_unknown_method_in_one_line(noderun_main):
    line = single_error_line(noderun_main(["experiment=solver_accuracy", "solver_accuracy.methods=[euler,rk5]"]))
    assert "rk5" in line and "dopri5" in line


@pytest.mark.slow
def test_odenet_vs_resnet_report_puts_the_documents_figures_beside_ours(noderun_main, mnist_root, tmp_path):
    result = noderun_main(["experiment=odenet_vs_resnet", *SWEEP_TRAINING, "trainer.epochs=1",
                           "trainer.progress=false"], mnist_root)
    assert result.returncode == 0, result.stderr
    sweep = next((tmp_path / "outputs" / "multirun").iterdir())
    table = pd.read_csv(sweep / "report" / "table1.csv").set_index("model")
    assert table.loc["ODE-Net", "reference_error"] == 0.42 and table.loc["ResNet", "reference_error"] == 0.48
    text = (sweep / "report" / "table1.md").read_text()
    assert "seed document error (%)" in text and "0.42 (seed 000: test error after 50 epochs)" in text


CUBIC_SHORT = ["experiment=cubic", "cubic.resnet.iterations=60", "cubic.odenet.iterations=25",
               "cubic.random_sets.count=2", "cubic.odenet.lr_sweep=[0.001,0.005,50.0]"]


def test_cubic_regression_fits_compares_and_draws(noderun_main, tmp_path):
    result = noderun_main(CUBIC_SHORT)
    assert result.returncode == 0, result.stderr
    run_dir = single_run_dir(tmp_path)
    fits = pd.read_csv(run_dir / "cubic.csv")
    # 2 main fits, 3 + 3 sweep fits, 2 random sets x 2 models.
    assert list(fits.groupby("study", sort=False).size().items()) == [("main", 2), ("lr_sweep", 6), ("random_sets", 4)]
    main = fits[fits.study == "main"].set_index("model")
    losses = pd.read_csv(run_dir / "cubic_loss.csv")
    for model in ("resnet", "odenet"):
        curve = losses[losses.fit == main.loc[model, "fit"]]["train_mse"]
        assert curve.iloc[-1] < curve.iloc[0]  # gradient descent lowers the training MSE
        assert 0 < main.loc[model, "test_mse"] < 100
    # The ODE-Net evaluates its dynamics (dopri5: 2 + 6k per solve) forward and, by the adjoint, backward.
    assert (main.loc["odenet", "nfe_forward"] - 2) % 6 == 0 and main.loc["odenet", "nfe_backward"] > 0
    assert main.loc["resnet", "nfe_forward"] == 0
    # A learning rate far too large is recorded as diverged, not raised.
    huge = fits[(fits.study == "lr_sweep") & (fits.lr == 50.0)].iloc[0]
    assert bool(huge.diverged) and isinstance(huge.reason, str) and pd.isna(huge.test_mse)
    # Random sets: 20 points each on [-3, 3], from seeds other than the main set's.
    sets = fits[fits.study == "random_sets"]
    assert set(sets.n_train) == {20} and 0 not in set(sets.data_seed)
    curves = pd.read_csv(run_dir / "cubic_curves.csv")
    assert curves[curves.fit == main.loc["odenet", "fit"]]["x"].between(-2.5, 2.5).all()
    # The reported test MSE is the MSE of the stored predictions against the noiseless target.
    predicted = curves[curves.fit == main.loc["resnet", "fit"]]
    target = predicted["x"] ** 3 + 0.1 * predicted["x"]
    assert abs(((predicted["prediction"] - target) ** 2).mean() - main.loc["resnet", "test_mse"]) < 1e-4
    table = (run_dir / "cubic.md").read_text()
    assert "4.673" in table and "7.72" in table
    for name in ("cubic_fit", "cubic_random_sets", "cubic_lr_sweep"):
        assert (run_dir / f"{name}.png").stat().st_size > 10_000
    assert read_summary(run_dir)["status"] == "completed"


def test_cubic_task_refuses_another_dataset_in_one_line(noderun_main):
    line = single_error_line(noderun_main(["experiment=cubic", "dataset=mnist"]))
    assert "dataset=mnist" in line and "dataset=cubic" in line


def made_up_ecg_file(tmp_path, monkeypatch, rows: int) -> str:
    """Write made-up beats in the MIT-BIH format with the script a user would run (in-process); return its path."""
    path = tmp_path / "beats.csv"
    monkeypatch.setattr(sys, "argv", [str(MAKE_ECG_CSV), "--rows", str(rows), "--out", str(path)])
    runpy.run_path(str(MAKE_ECG_CSV), run_name="__main__")
    return str(path)


def test_ecg_classifies_beats_and_writes_confusion_matrices(noderun_main, tmp_path, monkeypatch):
    path = made_up_ecg_file(tmp_path, monkeypatch, 400)
    result = noderun_main(["experiment=ecg", f"dataset.path={path}", "ecg.epochs=2", "ecg.test_fraction=0.25",
                           "ecg.batch_size=64", "trainer.progress=false"])
    assert result.returncode == 0, result.stderr
    run_dir = single_run_dir(tmp_path)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(zip(metrics.model, metrics.epoch)) == [("resnet", 1), ("resnet", 2), ("odenet", 1), ("odenet", 2)]
    assert metrics.train_loss.notna().all() and (metrics.nfe_forward[metrics.model == "odenet"] > 0).all()
    confusion = pd.read_csv(run_dir / "ecg_confusion.csv")
    summary = read_summary(run_dir)
    assert (summary["train_size"], summary["test_size"]) == (300, 100)
    for model, counts in confusion.groupby("model"):
        # Every test beat lands in one cell, and the diagonal is the accuracy the metrics report.
        assert counts["count"].sum() == 100 and len(counts) == 25
        correct = counts[counts.true == counts.predicted]["count"].sum()
        assert abs(correct / 100 - metrics[metrics.model == model].test_accuracy.iloc[-1]) < 1e-9
    report = (run_dir / "ecg.md").read_text()
    assert "97.8" in report and "18056" in report  # the tutorial's figures beside ours
    for name in ("ecg_loss", "ecg_confusion"):
        assert (run_dir / f"{name}.png").stat().st_size > 10_000


def test_ecg_without_its_file_says_so_in_one_line(noderun_main, tmp_path):
    missing = tmp_path / "nowhere.csv"
    line = single_error_line(noderun_main(["experiment=ecg", f"dataset.path={missing}"]))
    assert str(missing) in line and "dataset.path" in line
