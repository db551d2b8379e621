"""Every experiment noderun runs, in one registry: `EXPERIMENTS[task]` (the config's `task` key, which
the model and experiment YAMLs set) gives the function that does its work through a RunRecorder, the
datasets it takes, and whether it trains (and so resumes from its last checkpoint). The run lifecycle
around each is noderun.lifecycle's, the same for all."""

from __future__ import annotations

from noderun.experiments import classify, cubic, ecg, gradcheck, memory, sequence, solver_accuracy, tolerance
from noderun.lifecycle import ExperimentEntry

IMAGE_DATASETS = ("mnist", "fashion_mnist")

EXPERIMENTS: dict[str, ExperimentEntry] = {
    "train": ExperimentEntry(classify.run, IMAGE_DATASETS, trains=True),  # Table 1's classifiers
    "timeseries": ExperimentEntry(sequence.run, ("spirals",), trains=True),  # Table 2's models
    "cubic": ExperimentEntry(cubic.run, ("cubic",), trains=True),
    "ecg": ExperimentEntry(ecg.run, ("ecg",), trains=True),
    "memory": ExperimentEntry(memory.run, IMAGE_DATASETS),
    "gradcheck": ExperimentEntry(gradcheck.run, IMAGE_DATASETS),
    "tolerance": ExperimentEntry(tolerance.run, IMAGE_DATASETS),
    "solver_accuracy": ExperimentEntry(solver_accuracy.run),
}
