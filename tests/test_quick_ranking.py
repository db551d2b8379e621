"""The quick preset ranks the models as the paper's Table 1 does: run as a user runs it (the real
`noderun experiment=quick`, real MNIST, its 16,000 training images; validation and test cut to 500
images to keep the evaluation to seconds), the convolutional models end with a lower test error
than the MLP: their mean, since one model's error after one epoch is not stable enough to rank alone.

What it checks was chosen by measuring its spread, because the same seed does not give the same run
on every machine: float32 convolutions round differently under AVX512 and AVX2 kernels and with another
thread count, and SGD steps amplify that as another seed would (docs/records.md). Measured on
2026-12-06 on an AMD EPYC of this machine kind (AVX512; AVX2 forced with `ATEN_CPU_CAPABILITY=avx2`):

- The end-of-epoch training loss the test first compared flipped with rounding alone (ResNet seed 0 at
  400 steps: 0.748 under AVX512, above the MLP's 0.591, and 0.345 under AVX2; issue 28).
- Test error after 400 steps (12,800 images), seeds 0 / 1 / 2 at one torch thread, AVX512; AVX2:
  MLP 18.0 / 17.0 / 18.2 under both; ResNet 13.0 / 7.8 / 9.0; 8.4 / 10.2 / 8.6; RK-Net 10.8 / 4.6 / 6.4;
  8.6 / 9.2 / 9.8; ODE-Net 8.4 / 8.6 / 4.8; 11.0 / 6.6 / 5.2. Yet at two threads under AVX512 the ResNet
  of seed 0 ended at 19.6 %, above the MLP's 18.0: at step 400 of lr 0.05 it can be mid-spike. So the
  test runs the preset's whole epoch (500 steps), where the claim is made.
- Test error after the preset's 500 steps, seed 0, two threads (as this test runs): AVX512 MLP 13.4,
  ResNet 2.8, RK-Net 3.4, ODE-Net 4.4; AVX2 MLP 13.2, ResNet 8.2, RK-Net 4.2, ODE-Net 11.4. With
  2,000 test images: 13.55 / 4.75 / 4.20 / 5.30 on the issue's AVX512 machine, 13.25 / 5.60 / 5.65 /
  5.35 on the machine the test was written on (docs/quick.md).
One model alone came within 1.8 points of the MLP (the ODE-Net under AVX2, 11.4 against 13.2), less
than a seed's spread (sample std up to 2.4 points above): a test of each model would fail by chance.
The mean of the three is steadier (its spread over seeds is the models' divided by about sqrt(3)):
3.5 and 7.9 % against the MLP's 13.4 and 13.2 after 500 steps, 13.7 against 18.0 at the ResNet's spike
after 400; so the test asserts the mean, whose least measured margin at this budget is 5.3 points."""

from __future__ import annotations

import pytest

from conftest import finished_sweep, run_noderun
from noderun.models import MODELS
from noderun.records import read_summary

# The preset as it is (16,000 training images, batch 32, lr 0.05, augmentation, one epoch); validation and
# test cut to keep the evaluation to seconds.
SUBSET = ["dataset.val_size=500", "dataset.test_size=500"]


@pytest.mark.slow
def test_the_quick_presets_conv_models_end_below_the_mlps_test_error_on_average(mnist_root, tmp_path):
    result = run_noderun(["experiment=quick", *SUBSET, "trainer.progress=false"], mnist_root, tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = finished_sweep(result, tmp_path)
    error = {model: read_summary(run)["test_error"] for model, run in sweep.runs.items()}
    conv = [m for m in error if m != "mlp"]
    assert sorted(conv) == sorted(m for m, e in MODELS.items() if e.table == 1 and m != "mlp")
    assert sum(error[m] for m in conv) / len(conv) < error["mlp"], error
