"""Every experiment noderun runs, in one registry: `EXPERIMENTS[task]` (the config's `task` key, which
task=NAME or an experiment preset chooses) gives the function that does its work through a
RunRecorder, the kinds of dataset it takes (noderun.data.DATASETS), and whether it trains (and so
resumes from its last checkpoint). The run lifecycle around each is noderun.run.lifecycle's, the same
for all; the paper's table whose models a task trains is noderun.schema.TASK_TABLE."""

from __future__ import annotations

from noderun.experiments import classify, cubic, ecg, flows, gradcheck, memory, sequence, solver_accuracy, tolerance
from noderun.run.lifecycle import ExperimentEntry

EXPERIMENTS: dict[str, ExperimentEntry] = {
    "train": ExperimentEntry(classify.run, ("images",), trains=True),  # Table 1's classifiers
    "timeseries": ExperimentEntry(sequence.run, ("spirals",), trains=True),  # Table 2's models
    "cubic": ExperimentEntry(cubic.run, ("regression",), trains=True),
    "ecg": ExperimentEntry(ecg.run, ("heartbeats",), trains=True),
    "memory": ExperimentEntry(memory.run, ("images",)),
    "gradcheck": ExperimentEntry(gradcheck.run, ("images",)),
    "tolerance": ExperimentEntry(tolerance.run, ("images",)),
    "solver_accuracy": ExperimentEntry(solver_accuracy.run),
    "cnf_density": ExperimentEntry(flows.run, ("target_density",), trains=True),  # section 4, Figure 4
    "cnf_mle": ExperimentEntry(flows.run, ("plane_samples",), trains=True),  # section 4, Figure 5
}
