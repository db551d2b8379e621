"""noderun's data layer: verified MNIST-style datasets in memory, and the tutorial's datasets.

`DATASETS` is the registry the run lifecycle checks a run's `dataset=` against: each dataset's kind
(what an experiment can take) and a line saying what it is. Adding a dataset is its module here, one
YAML in conf/dataset and one line below."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset: `kind` is what it holds, which the experiments name in the registry to say what
    they take ("images": 28×28 ten-class images; "spirals", "regression", "heartbeats", "target_density",
    "plane_samples")."""

    kind: str
    description: str


DATASETS: dict[str, DatasetEntry] = {
    "mnist": DatasetEntry("images", "MNIST handwritten digits, checksum-verified (sources.py)"),
    "fashion_mnist": DatasetEntry("images", "Fashion-MNIST, checksum-verified (sources.py)"),
    "spirals": DatasetEntry("spirals", "Table 2's noisy 2-D spirals (torchdiffeq's example family), irregularly observed (spirals.py)"),
    "spirals_archimedean": DatasetEntry("spirals", "noderun's earlier Archimedean spirals r = a + b*theta (spirals.py)"),
    "cubic": DatasetEntry("regression", "seed 002's h(x) = x^3 + 0.1x from noisy points (cubic.py)"),
    "ecg": DatasetEntry("heartbeats", "MIT-BIH heartbeats from the user's CSV files (ecg.py)"),
    "energy": DatasetEntry("target_density", "Rezende and Mohamed's energies u1-u4, density matching's targets (plane.py)"),
    "two_circles": DatasetEntry("plane_samples", "two concentric noisy circles, seeded, with test samples (plane.py)"),
    "two_moons": DatasetEntry("plane_samples", "two interleaved noisy half circles, seeded, with test samples (plane.py)"),
}


def datasets_of_kind(*kinds: str) -> list[str]:
    """Return the names of the datasets of these kinds, in registry order."""
    return [name for name, entry in DATASETS.items() if entry.kind in kinds]
