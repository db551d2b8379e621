"""Golden numbers: a few training steps of ODE-Net and MLP on fixed synthetic images give exactly the
losses recorded below. Any change to the models' initialisation or architecture, the solver's
arithmetic, the adjoint, batching, augmentation or the optimiser step changes them, and this test says
so, where a looser test would let it pass silently.

The numbers were recorded on 2026-12-01 on this project's 2-core x86 CPU (torch 2.14.1, torchdiffeq
0.2.5, one torch thread) by `python tests/test_golden.py`, which prints them. A deliberate change of
the numbers is recorded again the same way; a new torch or CPU may move the last digits (float32)."""

from __future__ import annotations

import pytest
import torch

from conftest import synthetic_split
from noderun.data.batches import epoch_generator, training_batches
from noderun.measure import NFECounter
from noderun.models import build_model
from noderun.solvers import SolverSpec
from noderun.train import train_epoch

# Each training batch's loss, before its step: 2 epochs of 2 batches of 16 randomly cropped images.
GOLDEN_LOSSES = {
    "odenet": [2.4305951595306396, 2.3075366020202637, 2.099245071411133, 2.3843750953674316],
    "mlp": [2.3008525371551514, 2.2845442295074463, 2.1885766983032227, 2.2336363792419434],
}
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


@pytest.mark.parametrize("name", list(GOLDEN_LOSSES))
def test_training_steps_give_the_recorded_losses(name):
    assert training_losses(name) == pytest.approx(GOLDEN_LOSSES[name], rel=1e-6, abs=0)


if __name__ == "__main__":
    for model_name in GOLDEN_LOSSES:
        print(f'    "{model_name}": {[float(repr_loss) for repr_loss in training_losses(model_name)]!r},')
