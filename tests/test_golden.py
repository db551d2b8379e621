"""Golden numbers: a few training steps of ODE-Net and MLP on fixed synthetic images give exactly the
losses recorded below. Any change to the models' initialisation or architecture, the solver's
arithmetic, the adjoint, batching, augmentation or the optimiser step changes them, and this test says
so, where a looser test would let it pass silently.

The numbers are recorded per CPU capability (the kernels torch chose: `torch.backends.cpu.
get_cpu_capability()`), since float32 convolutions round differently under AVX512 and AVX2: recorded on
2026-12-01 (AVX2) and 2026-12-06 (AVX512, an AMD EPYC; the same AVX2 numbers again there with
`ATEN_CPU_CAPABILITY=avx2`), torch 2.14.1, torchdiffeq 0.2.5, one torch thread, by `python
tests/test_golden.py`, which prints them for the capability it runs under. A deliberate change of the
numbers is recorded again the same way, under both capabilities. A capability with no numbers of its
own (another CPU) is checked against AVX2's within OTHER_CAPABILITY_REL: AVX512 and AVX2 differ by at
most 1.0e-7 relative over these four steps (the ODE-Net's last loss, 2.3843748569 against 2.3843750954),
so a hundred times that still catches any change of arithmetic, which moves them by 1e-3 or more."""

from __future__ import annotations

import pytest
import torch

from conftest import synthetic_split
from noderun.data.batches import epoch_generator, training_batches
from noderun.measure import NFECounter
from noderun.models import build_model
from noderun.solvers import SolverSpec
from noderun.train import train_epoch

# Each training batch's loss, before its step: 2 epochs of 2 batches of 16 randomly cropped images, by
# the CPU capability they were recorded under.
GOLDEN_LOSSES = {
    "AVX2": {
        "odenet": [2.4305951595306396, 2.3075366020202637, 2.099245071411133, 2.3843750953674316],
        "mlp": [2.3008525371551514, 2.2845442295074463, 2.1885766983032227, 2.2336363792419434],
    },
    "AVX512": {
        "odenet": [2.4305951595306396, 2.3075366020202637, 2.099245071411133, 2.3843748569488525],
        "mlp": [2.3008525371551514, 2.284543991088867, 2.1885766983032227, 2.2336363792419434],
    },
}
MODELS_CHECKED = ["odenet", "mlp"]
# The relative tolerance for a capability with no numbers of its own (the docstring says how it was chosen).
OTHER_CAPABILITY_REL = 1e-5
SOLVER = SolverSpec("rk4", step_size=0.5)  # the ODE-Net: 2 rk4 steps on [0, 1], gradients by the adjoint


def training_losses(name: str) -> list[float]:
    """Return the loss of each training step of the model, seeded 0, trained as noderun trains it
    (SGD, lr 0.1, momentum 0.9; shuffled batches cropped with padding 4 from the epoch's generator)
    on 32 synthetic images; with one torch thread, so that the float32 sums run in one order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model({"name": name, "adjoint": True}, SOLVER)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        split, counter = synthetic_split(32, seed=0), NFECounter(model)
        losses = []
        for epoch in range(2):
            for batch in training_batches(split, 16, epoch_generator(0, epoch), crop_padding=4):
                losses.append(train_epoch(model, optimizer, [batch], 1, counter, "", False, measure=False).loss)
        return losses
    finally:
        torch.set_num_threads(threads)


def expected_losses(name: str, capability: str) -> tuple[list[float], float]:
    """Return the losses recorded for the model under this CPU capability, and the relative tolerance:
    float32's last digit (1e-6) where the capability has its own numbers, else AVX2's numbers within
    OTHER_CAPABILITY_REL."""
    if capability in GOLDEN_LOSSES:
        return GOLDEN_LOSSES[capability][name], 1e-6
    return GOLDEN_LOSSES["AVX2"][name], OTHER_CAPABILITY_REL


@pytest.mark.parametrize("name", MODELS_CHECKED)
def test_training_steps_give_the_recorded_losses(name):
    expected, rel = expected_losses(name, torch.backends.cpu.get_cpu_capability())
    assert training_losses(name) == pytest.approx(expected, rel=rel, abs=0)


def test_the_capabilities_recorded_agree_within_the_tolerance_for_others():
    # What OTHER_CAPABILITY_REL rests on: the two recorded capabilities are that close to each other.
    for name in MODELS_CHECKED:
        assert GOLDEN_LOSSES["AVX512"][name] == pytest.approx(GOLDEN_LOSSES["AVX2"][name], rel=OTHER_CAPABILITY_REL)


if __name__ == "__main__":
    print(f"    # {torch.backends.cpu.get_cpu_capability()}")
    for model_name in MODELS_CHECKED:
        print(f'    "{model_name}": {[float(repr_loss) for repr_loss in training_losses(model_name)]!r},')
