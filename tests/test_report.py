"""noderun-report over a real sweep of the four models and the ablation with two seeds, intact and
with broken runs. These run the real `noderun` on MNIST; the report's own cases, on run directories built by hand,
are in test_report_unit.py."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import SMALL, TABLE1_MODELS, run_noderun

pytestmark = pytest.mark.slow

REPORT = str(Path(sys.executable).parent / "noderun-report")
FILES = ["runs.csv", "table1.csv", "table1.md", "table1.tex", "not_completed.txt",
         *[f"{name}.{ext}" for name in ("accuracy", "nfe_forward_per_epoch", "nfe_backward_vs_forward")
           for ext in ("png", "pdf")]]


@pytest.fixture(scope="module")
def sweep(mnist_root, tmp_path_factory) -> Path:
    """A real sweep: the four models and the ablation, two seeds, one short epoch each."""
    cwd = tmp_path_factory.mktemp("sweep")
    result = run_noderun(["-m", f"model={','.join(TABLE1_MODELS)}", "seed=0,1", *SMALL], mnist_root, cwd)
    assert result.returncode == 0, result.stderr
    (sweep_dir,) = (cwd / "outputs" / "multirun").iterdir()
    return sweep_dir


def report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([REPORT, *args], capture_output=True, text=True, timeout=300)


def summaries(sweep_dir: Path) -> pd.DataFrame:
    return pd.DataFrame([json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")])


def expected_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1's numbers recomputed by hand from summary.json files."""
    rows = []
    for model, label in (("mlp", "MLP"), ("resnet", "ResNet"), ("rknet", "RK-Net"), ("odenet", "ODE-Net"),
                         ("downsample_head", "ODE-Net without ODE block")):
        group = runs[(runs["model"] == model) & (runs["status"] == "completed")]
        errors = group["test_error"].tolist()
        rows.append({"model": label, "seeds": len(group), "test_error_mean": statistics.mean(errors),
                     "test_error_std": statistics.stdev(errors) if len(errors) > 1 else float("nan"),
                     "params_m": group["params"].mean() / 1e6,
                     "train_time_per_epoch_s": (group["train_time_s"] / group["epochs_done"]).mean(),
                     "peak_memory_mb": group["peak_memory_mb"].mean(),
                     "nfe_forward": group["nfe_forward"].mean() if model in ("rknet", "odenet") else float("nan")})
    return pd.DataFrame(rows)


def assert_table_matches(table_csv: Path, expected: pd.DataFrame) -> None:
    table = pd.read_csv(table_csv)
    assert table["model"].tolist() == expected["model"].tolist()  # the paper's row order
    for column in expected.columns[1:]:
        assert table[column].tolist() == pytest.approx(expected[column].tolist(), abs=1e-4, nan_ok=True), column


def test_report_over_a_real_sweep_writes_every_file_and_the_recomputed_numbers(sweep, tmp_path):
    out = tmp_path / "report"
    result = report(str(sweep), "--out", str(out))
    assert result.returncode == 0, result.stderr
    for name in FILES:
        assert (out / name).exists(), name
        assert name == "not_completed.txt" or (out / name).stat().st_size > 0, name
    assert (out / "not_completed.txt").read_text() == ""
    assert "10 completed, 0 failed, 0 interrupted, 0 running, 0 unreadable" in result.stdout
    assert "| ODE-Net | 2 |" in result.stdout and "| MLP | 2 |" in result.stdout
    assert_table_matches(out / "table1.csv", expected_table(summaries(sweep)))
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 10 and set(runs.cpu_capability) == {torch.backends.cpu.get_cpu_capability()}
    table = pd.read_csv(out / "table1.csv")
    assert table["paper_test_error"].tolist() == pytest.approx([1.60, 0.41, 0.47, 0.42, float("nan")], nan_ok=True)
    assert r"$\pm$" in (out / "table1.tex").read_text()


def test_broken_and_failed_runs_are_listed_and_left_out(sweep, mnist_root, tmp_path):
    broken = tmp_path / "sweep"
    shutil.copytree(sweep, broken)
    shutil.rmtree(broken / "report", ignore_errors=True)
    victim = next(p for p in sorted(broken.glob("*/summary.json")) if json.loads(p.read_text())["model"] == "odenet")
    victim.write_text(victim.read_text()[:40])  # truncated mid-write
    failed = run_noderun(["model=resnet", *SMALL, "trainer.lr=1e12", f"paths.output_root={broken / 'extra'}"],
                         mnist_root, tmp_path)
    assert failed.returncode == 1

    result = report(str(broken))
    assert result.returncode == 0, result.stderr
    out = broken / "report"
    listed = (out / "not_completed.txt").read_text()
    assert str(victim.parent) in listed and "unreadable" in listed
    assert "failed" in listed and "loss became" in listed
    assert "9 completed, 1 failed, 0 interrupted, 0 running, 1 unreadable" in result.stdout
    expected = expected_table(summaries_without(broken, victim.parent))
    assert_table_matches(out / "table1.csv", expected)
    assert pd.read_csv(out / "table1.csv").set_index("model").loc["ODE-Net", "seeds"] == 1


def summaries_without(sweep_dir: Path, excluded: Path) -> pd.DataFrame:
    return pd.DataFrame([json.loads(p.read_text()) for p in sweep_dir.glob("**/summary.json") if p.parent != excluded])

