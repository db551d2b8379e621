"""The one training loop (`training_steps`: a batch's loss, its gradients, an optimizer step, NFE
counted per phase), which every experiment that trains runs with its own loss; and one epoch of
training and evaluation of a classifier on it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from noderun.data.batches import ImageSplit, evaluation_batches
from noderun.measure import FlopCount, NFECounter, SavedTensorBytes, wait_for
from noderun.regularize import regularizers_of, take_penalty


# The share of an epoch's steps whose mean loss is its `loss_end`: the epoch's mean lags behind a model
# that learns fast within the epoch (a one-epoch run's mean is mostly its first steps).
END_FRACTION = 0.1


class TrainingFailure(Exception):
    """Training cannot go on (NaN loss, a solver that gave up); the run is recorded as failed."""


def lr_at_epoch(base_lr: float, epoch: int, epochs: int, decay_fractions: Iterable[float], factor: float,
                min_epochs: int = 0) -> float:
    """Return the learning rate of a 0-based epoch: base_lr times `factor` for each decay point passed.

    Decay points sit at the same fractions of the run whatever its length: for 160 epochs and
    fractions 0.375, 0.625, 0.875 they are the reference's epochs 60, 100 and 140. A run shorter
    than `min_epochs` keeps base_lr throughout: its decays would fall in its first few epochs (a
    3-epoch run would decay twice) and stop it learning before it has begun.
    """
    if epochs < min_epochs:
        return base_lr
    passed = sum(1 for f in decay_fractions if epoch >= max(1, round(f * epochs)))
    return base_lr * factor**passed


@dataclass
class Step:
    """One training step: its loss, its evaluations of the dynamics forward and backward, and what the
    loss function returned besides the loss (a classifier's logits)."""

    loss: float
    nfe_forward: int
    nfe_backward: int
    output: Any = None
    penalty: float = 0.0  # the regulariser's weighted penalty, added to `loss` for the gradients
    nfe_regularizer: int = 0  # the regulariser's own evaluations (noderun.regularize)


def training_steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable,
                   loss_of: Callable[[Any], tuple[torch.Tensor, Any]], counter: NFECounter,
                   hint: str | None = None) -> Iterator[Step]:
    """Train on each batch in turn, yielding each step: `loss_of(batch)` returns (loss, output); its
    gradients, then one optimizer step. The one loop every experiment trains with (classifiers, Table
    2's time-series models, the tutorial's fits). Raises TrainingFailure, before the optimizer step, when
    the loss is not finite, its reason followed by `hint` (what the user might change, naming the
    experiment's own key). A regularised model's penalty (noderun.regularize) joins the loss for the
    gradients; the step's `loss` is the task's alone, its `penalty` the regulariser's."""
    regularizers = regularizers_of(model)
    for number, batch in enumerate(batches, start=1):
        optimizer.zero_grad(set_to_none=True)
        counter.take()
        take_penalty(regularizers)  # what a solve outside a step added (a measured step's) is no step's
        loss, output = loss_of(batch)
        nfe_forward = counter.take()
        penalty, nfe_regularizer = take_penalty(regularizers)
        value, penalty_value = loss.item(), 0.0 if penalty is None else penalty.item()
        if not math.isfinite(value + penalty_value):
            raise TrainingFailure(f"loss became {value if not math.isfinite(value) else value + penalty_value} "
                                  f"at step {number}" + (f"; {hint}" if hint else ""))
        (loss if penalty is None else loss + penalty).backward()
        nfe_backward = counter.take()
        optimizer.step()
        yield Step(value, nfe_forward, nfe_backward, output, penalty_value, nfe_regularizer)


@dataclass
class TrainStats:
    """Means over one epoch's training batches, and what one training step on its first batch saves
    and computes."""

    loss: float
    accuracy: float
    loss_end: float  # the mean over the epoch's last tenth of steps (END_FRACTION): where training ended
    nfe_forward: float
    nfe_backward: float
    time_s: float  # the training steps only: the measured step below is not in it
    saved_bytes: int = 0  # held for the backward pass by the step's forward and loss (SavedTensorBytes)
    flops: int = 0  # of the step's forward and backward pass (FlopCount)
    penalty: float = 0.0  # the regulariser's weighted penalty, mean per step
    nfe_regularizer: float = 0.0  # the regulariser's own evaluations, mean per step


def measure_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """Return (bytes saved for the backward pass, FLOPs) of one training step on the batch.

    The step runs forward, loss and backward under the counters and leaves the weights as they were
    (no optimizer step; the gradients are cleared), so that training is unchanged by it and its time,
    which the counters' hooks inflate, is charged to no epoch.
    """
    with FlopCount() as flops:
        with SavedTensorBytes() as saved:
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return saved.bytes, flops.total


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable, num_batches: int,
                counter: NFECounter, description: str, progress: bool, measure: bool = True,
                lr_key: str = "trainer.lr") -> TrainStats:
    """Train over the batches once; raise TrainingFailure when the loss stops being finite.

    With `measure`, one extra step on the first batch is measured first (measure_step), outside the
    epoch's time and NFE means. `lr_key`: the config key of the learning rate, named in the failure.
    """
    model.train()
    loss_fn = nn.CrossEntropyLoss()

    def loss_of(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        images, labels = batch
        logits = model(images)
        return loss_fn(logits, labels), (logits, labels)
    sums = {"loss": 0.0, "correct": 0, "seen": 0, "nfe_f": 0, "nfe_b": 0, "end_loss": 0.0, "end_seen": 0,
            "penalty": 0.0, "nfe_r": 0}
    end_from = num_batches - max(1, round(END_FRACTION * num_batches)) + 1  # first step of the last tenth
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise TrainingFailure("the training split gave no batch")
    saved_bytes, flops = measure_step(model, *first) if measure else (0, 0)
    counter.take()  # the measured step's evaluations belong to no training step
    start = time.perf_counter()
    bar = tqdm(chain([first], batches), total=num_batches, desc=description, leave=False,
               disable=not progress or None)
    steps = training_steps(model, optimizer, bar, loss_of, counter, hint=f"try a smaller {lr_key}")
    for number, step in enumerate(steps, start=1):
        logits, labels = step.output
        sums["loss"] += step.loss * len(labels)
        if number >= end_from:
            sums["end_loss"] += step.loss * len(labels)
            sums["end_seen"] += len(labels)
        sums["correct"] += int((logits.argmax(1) == labels).sum())
        sums["seen"] += len(labels)
        sums["nfe_f"] += step.nfe_forward
        sums["nfe_b"] += step.nfe_backward
        sums["penalty"] += step.penalty
        sums["nfe_r"] += step.nfe_regularizer
        bar.set_postfix(loss=f"{sums['loss'] / sums['seen']:.3f}", acc=f"{sums['correct'] / sums['seen']:.3f}",
                        nfe_f=step.nfe_forward, nfe_b=step.nfe_backward)
    wait_for(first[0].device)
    elapsed = time.perf_counter() - start
    seen, batches_done = max(sums["seen"], 1), max(num_batches, 1)
    end_loss = sums["end_loss"] / sums["end_seen"] if sums["end_seen"] else math.nan
    return TrainStats(sums["loss"] / seen, sums["correct"] / seen, end_loss, sums["nfe_f"] / batches_done,
                      sums["nfe_b"] / batches_done, elapsed, saved_bytes, flops, sums["penalty"] / batches_done,
                      sums["nfe_r"] / batches_done)


@torch.no_grad()
def evaluate(model: nn.Module, split: ImageSplit, batch_size: int, counter: NFECounter) -> tuple[float, float, float]:
    """Return (accuracy, mean forward NFE per batch, mean wall seconds per batch) of the model on a split."""
    model.eval()
    correct, nfe, batches = 0, 0, 0
    start = time.perf_counter()
    for images, labels in evaluation_batches(split, batch_size):
        counter.take()
        correct += int((model(images).argmax(1) == labels).sum())
        nfe += counter.take()
        batches += 1
    batches = max(batches, 1)
    return correct / len(split), nfe / batches, (time.perf_counter() - start) / batches
