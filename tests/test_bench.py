"""scripts/bench.py runs end to end on real MNIST (its timings are read from its output, not tested)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


@pytest.mark.slow
def test_bench_writes_its_table_and_json(mnist_root, tmp_path):
    result = subprocess.run([sys.executable, str(BENCH), "--models", "resnet", "--steps", "1", "--warmup", "0",
                             "--data", str(mnist_root), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    resnet = report["results"][0]
    assert resnet["model"] == "resnet" and resnet["flops_per_step"] > 0
    for loop in ("noderun", "baseline"):
        assert resnet[loop]["s_per_step"] > 0 and resnet[loop]["nfe_forward"] == 0
    assert 0 < resnet["evaluation"]["eval_share"] < 1
    assert report["attainable_gflops_per_s"]["best"] >= report["attainable_gflops_per_s"]["matmul_2048"] > 0
    assert "| resnet | noderun |" in (tmp_path / "bench.md").read_text()
