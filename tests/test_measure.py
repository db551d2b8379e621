"""What the paper claims, measured: saved bytes and FLOPs against hand counts; a training run's
measurements; the memory, gradcheck and tolerance experiments through the `noderun` entry point
(in-process; slow, as they read real MNIST) and the report's Figure 3."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import noderun.report.cli
from conftest import single_error_line, single_run_dir
from noderun.measure import FlopCount, SavedTensorBytes
from noderun.models import build_model
from noderun.records import read_summary
from noderun.solvers import SolverSpec

# The adjoint's gradient at rtol = atol = 1e-7 (float64) against backpropagation through dopri5:
# measured 5.8e-3 to 6.5e-3 on batches of 4 and 16. Not smaller: the dynamics' ReLUs make them
# non-smooth, and both gradients converge slowly (about 6.5x per 100x tighter tolerance, measured).
TIGHT_BOUND = 2e-2


def test_saved_bytes_of_a_linear_relu_chain_match_the_hand_count():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.rand(5, 3)
    with SavedTensorBytes() as saved:
        loss = model(x).sum()
    # float32, 4 bytes each. Linear 1 saves its input x (5x3: 60 bytes) for its weight's gradient, and
    # not its weight (x needs no gradient). ReLU saves its output (5x4: 80). Linear 2 saves that same
    # output as its input (the same storage: not counted again) and its weight (2x4: 32) for the
    # gradient of its input. sum saves no tensor.
    assert saved.bytes == 60 + 80 + 32
    loss.backward()
    with_hooks = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    assert all(torch.equal(a, p.grad) for a, p in zip(with_hooks, model.parameters()))


def test_saved_bytes_count_a_storage_once_and_skip_freed_graph_parts():
    weights = torch.rand(10, 10, requires_grad=True)  # 400 bytes
    with SavedTensorBytes() as saved:
        # pow saves its input: two views of one storage, which counts once and whole.
        loss = (weights[:2] ** 2).sum() + (weights[5:] ** 2).sum()
    assert saved.bytes == 400
    leaf = torch.rand(10, requires_grad=True)  # 40 bytes
    with SavedTensorBytes() as saved:
        rejected = leaf.exp().sum()  # exp saves its output (40 bytes) ...
        del rejected  # ... which goes with its graph, as a rejected solver step's would
        kept = leaf.sin().sum()  # sin saves its input, the leaf
    assert saved.bytes == 40 and kept.requires_grad and loss.requires_grad


def test_flop_count_matches_the_hand_count_and_torchs_counter():
    layer = nn.Linear(3, 4)
    with FlopCount() as flops:
        layer(torch.rand(5, 3)).sum().backward()
    # forward 5x3 @ 3x4 and the weight's gradient 4x5 @ 5x3: 2 * 60 multiply-adds each.
    assert flops.total == 2 * 5 * 3 * 4 * 2
    model, images = build_model({"name": "rknet"}, SolverSpec("rk4", step_size=0.5)), torch.rand(2, 1, 28, 28)
    with FlopCount() as flops:
        model(images).sum().backward()
    with FlopCounterMode(display=False) as reference:
        model(images).sum().backward()
    assert flops.total == reference.get_total_flops() > 0


def test_flop_count_works_through_the_adjoint_and_changes_no_number():
    torch.manual_seed(0)
    model, images = build_model({"name": "odenet"}, SolverSpec("rk4", step_size=0.5)), torch.rand(2, 1, 28, 28)
    with FlopCount() as flops:
        model(images).sum().backward()
    measured = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(images).sum().backward()
    assert flops.total > 0
    assert all(torch.equal(a, p.grad) for a, p in zip(measured, model.parameters()))


@pytest.mark.slow
def test_a_training_run_records_saved_bytes_and_flops(model_sweep):
    run_dir = model_sweep.runs["rknet"]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    summary = read_summary(run_dir)
    assert summary["task"] == "train"
    assert summary["saved_mb"] == metrics["saved_mb"].iloc[-1] > 0
    assert summary["flops_per_step"] == metrics["flops_per_step"].iloc[-1] > 0
    assert summary["achieved_gflops"] > 0


@pytest.mark.slow
def test_memory_task_writes_saved_bytes_for_n_and_2n_steps(noderun_main, mnist_root, tmp_path):
    result = noderun_main(["experiment=memory", "memory.steps=[1,2,4]", "memory.batch_size=4"], mnist_root)
    assert result.returncode == 0, result.stderr
    run_dir = single_run_dir(tmp_path)
    table = pd.read_csv(run_dir / "memory.csv")
    saved = table.pivot(index="depth", columns="model", values="saved_mb")
    assert list(saved.index) == [1, 2, 4] and set(saved.columns) == {"resnet", "rknet", "odenet"}
    for n in (1, 2):  # n and 2n
        assert saved.loc[2 * n, "rknet"] > saved.loc[n, "rknet"]
        assert saved.loc[2 * n, "resnet"] > saved.loc[n, "resnet"]
        assert saved.loc[2 * n, "odenet"] == saved.loc[n, "odenet"]  # the adjoint keeps no step's activations
    rknet = table[table["model"] == "rknet"]
    assert (rknet["nfe_forward"] == 4 * rknet["depth"]).all()  # rk4: n steps of 4 evaluations
    assert table["cuda_peak_mb"].isna().all()  # no allocator peak on the CPU
    summary = read_summary(run_dir)
    assert summary["task"] == "memory" and summary["status"] == "completed"
    assert summary["solver_path"] == "device"  # the configured solver.path (its default), which has rk4
    for name in ("memory.png", "memory.pdf"):
        assert (run_dir / name).stat().st_size > 0


@pytest.mark.slow
def test_gradcheck_task_finds_the_adjoint_agrees_at_tight_tolerance(noderun_main, mnist_root, tmp_path):
    result = noderun_main(["experiment=gradcheck", "gradcheck.batch_size=4"], mnist_root)
    assert result.returncode == 0, result.stderr
    run_dir = single_run_dir(tmp_path)
    table = pd.read_csv(run_dir / "gradcheck.csv")
    overall = table[table["parameter"] == "all"].set_index("case")["rel_error"]
    assert overall["tight"] < TIGHT_BOUND
    assert overall["loose"] > overall["tight"] and overall["rk4"] > overall["tight"]
    parameters = len(list(build_model({"name": "odenet"}, SolverSpec()).parameters()))
    assert (table.groupby("case").size() == 1 + parameters).all()
    assert (run_dir / "gradcheck.png").exists() and (run_dir / "gradcheck.pdf").exists()
    assert set(table["solver_path"]) == {"device"}  # the configured solver.path (its default)
    assert read_summary(run_dir)["solver_path"] == {"tight": "device", "loose": "device", "rk4": "device"}


@pytest.mark.slow
def test_tolerance_task_and_its_figure_in_the_report(model_sweep, noderun_main, mnist_root, tmp_path, monkeypatch):
    trained_odenet = model_sweep.runs["odenet"]
    args = ["experiment=tolerance", f"ckpt={trained_odenet / 'best.pt'}", "tolerance.tolerances=[1e-1,1e-3,1e-5]",
            "tolerance.batch_size=32", "tolerance.reference_tol=1e-7", "dataset.test_size=64"]
    result = noderun_main(args, mnist_root)
    assert result.returncode == 0, result.stderr
    run_dir = single_run_dir(tmp_path)
    table = pd.read_csv(run_dir / "tolerance.csv")
    assert list(table["tol"]) == [1e-1, 1e-3, 1e-5]
    for column in ("nfe_forward", "forward_s", "test_error", "block_error", "nfe_forward_train", "nfe_backward"):
        assert table[column].notna().all() and (table[column] >= 0).all(), column
    assert table["nfe_forward"].iloc[-1] > table["nfe_forward"].iloc[0]
    assert table["nfe_backward"].iloc[-1] > table["nfe_backward"].iloc[0]
    assert table["block_error"].iloc[-1] < table["block_error"].iloc[0]
    assert (run_dir / "figure3_tolerance.png").exists()
    summary = read_summary(run_dir)
    assert summary["solver_path"] == summary["reference_solver_path"] == "device"  # the configured solver.path

    # The report (noderun-report's entry point) draws Figure 3(a)-(c) from the task and keeps the
    # task out of Table 1.
    monkeypatch.setattr(sys, "argv", ["noderun-report", str(trained_odenet), str(run_dir), "--out",
                                      str(tmp_path / "report")])
    noderun.report.cli.main()
    assert (tmp_path / "report" / "figure3_tolerance.pdf").exists()
    assert len(pd.read_csv(tmp_path / "report" / "runs.csv")) == 1


@pytest.mark.parametrize("ckpt, words", [
    ("/nonexistent/best.pt", ["ckpt=/nonexistent/best.pt", "no checkpoint"]),
    (None, ["tolerance task needs a trained ODE-Net", "ckpt=PATH"]),
    ("NOT_A_CHECKPOINT", ["config.yaml", "best.pt or last.pt"]),
])
def test_tolerance_task_refuses_a_bad_checkpoint_in_one_line(noderun_main, tmp_path, ckpt, words):
    if ckpt == "NOT_A_CHECKPOINT":  # a file that exists but is no checkpoint
        ckpt = tmp_path / "config.yaml"
        ckpt.write_text("model:\n  name: odenet\n")
    line = single_error_line(noderun_main(["experiment=tolerance", *([f"ckpt={ckpt}"] if ckpt else [])]))
    for word in words:
        assert word in line, line
