"""The quick preset ranks the models as the paper's Table 1 does: run as a user runs it (the real
`noderun experiment=quick`, real MNIST), on fewer images, the three convolutional models end with a
lower test error than the MLP.

What it checks was chosen by measuring its spread, because the same seed does not give the same run
on every machine: float32 convolutions round differently under AVX512 and AVX2 kernels (and with
another thread count), and 400 SGD steps amplify that as another seed would (docs/records.md). The
end-of-epoch training loss this test used to compare is inside that spread: the ResNet's, seed 0, was
0.478 where the test was written, 0.748 on an AVX512 machine (above the MLP's 0.591) and 0.345 with
AVX2 forced there (issue 28). The test error is not. Measured 2026-12-06 on an AMD EPYC of this machine
kind with this test's settings at one torch thread, seeds 0 / 1 / 2, AVX512 then AVX2
(`ATEN_CPU_CAPABILITY=avx2`), test error in percent of the 500 test images:
  MLP      18.0 / 17.0 / 18.2 and the same under AVX2 (no convolution: the same rounding)
  ResNet   13.0 /  7.8 /  9.0;   8.4 / 10.2 /  8.6
  RK-Net   10.8 /  4.6 /  6.4;   8.6 /  9.2 /  9.8
  ODE-Net   8.4 /  8.6 /  4.8;  11.0 /  6.6 /  5.2
Over the six runs of each (seeds and capabilities together), the convolutional models' means are
9.5 / 8.2 / 7.4 % with sample std 1.9 / 2.3 / 2.4 points, the MLP's 17.7 %: the gap to the worst mean
(8.2 points) is 3.4 times the largest std, and the closest any convolutional run came to the MLP of
its seed was 5.0 points (ResNet seed 0 under AVX512, 13.0 against 18.0). A rounding change moves a
model by about a seed's spread, not by the gap."""

from __future__ import annotations

import pytest

from conftest import finished_sweep, run_noderun
from noderun.models import MODELS
from noderun.records import read_summary

# The preset's own configuration (batch, lr, augmentation, one epoch) on 12,800 of its 16,000 training
# images (400 steps); validation and test cut to keep the evaluation to seconds.
SUBSET = ["dataset.train_size=12800", "dataset.val_size=500", "dataset.test_size=500"]


@pytest.mark.slow
def test_the_quick_presets_conv_models_end_below_the_mlps_test_error(mnist_root, tmp_path):
    result = run_noderun(["experiment=quick", *SUBSET, "trainer.progress=false"], mnist_root, tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = finished_sweep(result, tmp_path)
    error = {model: read_summary(run)["test_error"] for model, run in sweep.runs.items()}
    conv = [m for m in error if m != "mlp"]
    assert sorted(conv) == sorted(m for m, e in MODELS.items() if e.table == 1 and m != "mlp")
    assert all(error[m] < error["mlp"] for m in conv), error
