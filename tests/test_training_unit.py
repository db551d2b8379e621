"""The training pieces in-process, on synthetic images (no MNIST, no subprocess): the learning-rate
schedule, an epoch of training with its NFE counts and its measured step, a loss that stops being
finite, evaluation, and one whole run of a small experiment through the run lifecycle."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from conftest import composed, synthetic_split
from noderun.data.batches import epoch_generator, training_batches
from noderun.experiments import EXPERIMENTS
from noderun.run.lifecycle import EXIT_FAILED, EXIT_OK, ExperimentEntry, run_experiment
from noderun.measure import NFECounter
from noderun.models import build_model
from noderun.records import LOCK_FILE, SUMMARY_SCHEMAS, read_summary, summary_problem
from noderun.solvers import SolverSpec
from noderun.train import TrainingFailure, evaluate, lr_at_epoch, train_epoch

RK4_HALF = SolverSpec("rk4", step_size=0.5)  # 2 steps on [0, 1], 4 evaluations each


def test_learning_rate_schedule_keeps_the_reference_decay_points():
    fractions = (0.375, 0.625, 0.875)
    lrs = [lr_at_epoch(0.1, e, 160, fractions, 0.1) for e in range(160)]
    assert lrs[59] == pytest.approx(0.1) and lrs[60] == pytest.approx(0.01)
    assert lrs[99] == pytest.approx(0.01) and lrs[100] == pytest.approx(0.001)
    assert lrs[140] == pytest.approx(1e-4) and lrs[159] == pytest.approx(1e-4)
    short = [lr_at_epoch(0.1, e, 16, fractions, 0.1) for e in range(16)]
    assert short[5] == pytest.approx(0.1) and short[6] == pytest.approx(0.01) and short[14] == pytest.approx(1e-4)
    # However short the run, its first epoch trains at the base rate.
    assert all(lr_at_epoch(0.1, 0, epochs, fractions, 0.1) == 0.1 for epochs in range(1, 6))
    # A run shorter than min_epochs keeps its rate: a 3-epoch run would otherwise decay twice.
    assert lr_at_epoch(0.1, 2, 3, fractions, 0.1) == pytest.approx(1e-3)
    assert [lr_at_epoch(0.1, e, 3, fractions, 0.1, min_epochs=10) for e in range(3)] == [0.1] * 3
    # ...and the protocol's run is long enough for its decays: the same as without the floor.
    assert [lr_at_epoch(0.1, e, 160, fractions, 0.1, min_epochs=10) for e in range(160)] == lrs
    # the default config holds that floor
    trainer = composed([]).trainer
    assert trainer.lr_decay_min_epochs == 10 and list(trainer.lr_decay_fractions) == list(fractions)


def trained_epochs(name: str, epochs: int, measure: bool = False, lr: float = 0.1, seed: int = 0):
    """Return (model, the TrainStats of each epoch) of a model trained as classify trains it (SGD with
    momentum 0.9, shuffled batches of 16 from epoch_generator) on 64 synthetic images."""
    torch.manual_seed(seed)
    model = build_model({"name": name}, RK4_HALF)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    split, counter = synthetic_split(64, seed=1), NFECounter(model)
    stats = [train_epoch(model, optimizer, training_batches(split, 16, epoch_generator(seed, epoch)), 4, counter,
                         f"epoch {epoch + 1}", progress=False, measure=measure) for epoch in range(epochs)]
    return model, stats


def test_training_epochs_lower_the_loss_and_count_nfe_per_batch():
    _, stats = trained_epochs("mlp", 3)
    losses = [s.loss for s in stats]
    assert losses[0] < math.log(10) + 0.5 and losses[-1] < 0.5 * losses[0], losses
    # The end of an epoch (its last tenth of steps, here its last step of 4) is below the epoch's mean
    # while the model learns: the mean lags.
    assert stats[0].loss_end < stats[0].loss and all(math.isfinite(s.loss_end) for s in stats)
    assert stats[-1].accuracy > 0.5 and all(s.nfe_forward == s.nfe_backward == 0 for s in stats)
    # Per training batch: 2 rk4 steps of 4 evaluations forward; backward only through the adjoint.
    (rknet,) = trained_epochs("rknet", 1)[1]
    assert (rknet.nfe_forward, rknet.nfe_backward) == (8, 0) and rknet.time_s > 0
    model, (odenet,) = trained_epochs("odenet", 1)
    assert (odenet.nfe_forward, odenet.nfe_backward) == (8, 8)
    # Evaluation counts the forward evaluations of each batch, and its accuracy is the plain count.
    split = synthetic_split(40, seed=2)
    accuracy, nfe, seconds = evaluate(model, split, 16, NFECounter(model))
    with torch.no_grad():
        correct = int((model(split.images.float() / 255).argmax(1) == split.labels).sum())
    assert accuracy == correct / 40 and nfe == 8 and seconds > 0


def test_the_measured_step_changes_no_training_number():
    measured_model, (measured,) = trained_epochs("rknet", 1, measure=True)
    plain_model, (plain,) = trained_epochs("rknet", 1, measure=False)
    assert measured.saved_bytes > 0 and measured.flops > 0 and plain.saved_bytes == plain.flops == 0
    assert (measured.loss, measured.accuracy, measured.nfe_forward) == (plain.loss, plain.accuracy, plain.nfe_forward)
    for a, b in zip(measured_model.parameters(), plain_model.parameters()):
        assert torch.equal(a, b)


def test_a_loss_that_stops_being_finite_stops_training_naming_the_batch():
    with pytest.raises(TrainingFailure, match=r"loss became (nan|inf) at step [2-4]"):
        trained_epochs("mlp", 1, lr=1e12)


def test_a_run_of_a_small_experiment_keeps_the_run_directory_contract(tmp_path, restored_process_state):
    overrides = ["experiment=solver_accuracy", "solver_accuracy.t_end=1.0", "solver_accuracy.output_points=11",
                 "solver_accuracy.methods=[euler,heun3,rk4,dopri5]", "solver_accuracy.step_sizes=[0.1]",
                 "solver_accuracy.tolerances=[1.0e-3]"]
    cfg = composed(overrides)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.set_num_threads(2)  # the run sets its own, and records it (restored_process_state puts ours back)
    assert run_experiment(cfg, run_dir, EXPERIMENTS, overrides=overrides, threads=1) == EXIT_OK
    summary = read_summary(run_dir)
    assert summary["torch_threads"] == 1
    assert summary["task"] == "solver_accuracy" and summary["status"] == "completed" and summary["reason"] is None
    assert summary["overrides"] == overrides and summary["time_s"] >= 0 and summary["finished"]
    assert {"solver_accuracy.csv", "solver_accuracy.md", "solver_accuracy.png"} <= set(summary["files"])
    for name in summary["files"]:
        assert (run_dir / name).stat().st_size > 0, name
    assert not (run_dir / LOCK_FILE).exists() and not list(run_dir.glob(".*.tmp"))
    # The solve path each method took: the configured one (device, by default) where it has the method.
    paths = {"euler": "device", "heun3": "torchdiffeq", "rk4": "device", "dopri5": "device"}
    assert summary["solver_path"] == paths
    table = pd.read_csv(run_dir / "solver_accuracy.csv")
    assert dict(zip(table["method"], table["solver_path"])) == paths


def test_a_run_whose_summary_breaks_its_tasks_schema_fails_saying_so(tmp_path, restored_process_state):
    """The schema the report reads a summary by (records.SUMMARY_SCHEMAS) is checked by the writer too:
    a train task whose experiment completes without recording what its table reads fails (exit 1), naming
    the field, where its record would otherwise be unreadable to the report."""
    overrides = ["model=mlp", "dataset.train_size=8"]
    cfg = composed(overrides)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    records_nothing = {**EXPERIMENTS, "train": ExperimentEntry(lambda cfg, recorder: recorder.update(model="mlp", params=5))}
    assert run_experiment(cfg, run_dir, records_nothing, overrides=overrides, threads=1) == EXIT_FAILED
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and "breaks its task's schema" in summary["reason"], summary["reason"]
    assert "lacks 'test_error'" in summary["reason"] and summary["params"] == 5
    assert summary_problem(summary) is None  # a failed run's record is readable: it needs no test_error


def test_every_schema_is_of_a_registered_task():
    assert set(SUMMARY_SCHEMAS) <= set(EXPERIMENTS)
