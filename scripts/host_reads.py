"""Count the host reads of tensor values in torchdiffeq's solves, on the CPU, and print a Markdown table.

A host read is an operator call that needs a tensor's value on the host: `.item()`, `bool(t)` (an
`if`, `assert` or `max` on tensors), `int(t)`, `float(t)` and the like, or an output whose size depends
on tensor values (noderun.measure.HostReads says exactly what counts). On a GPU each is a host-device
synchronisation. For the ODE-Net (dopri5 at rtol = atol = 1e-3, adjoint, default norm and seminorm) and
the RK-Net (rk4, 4 steps, backpropagation through the solver), built as `noderun model=NAME` builds
them from seed 0, one forward and one backward pass on one batch of seeded random 28x28 images
(noderun.measure.host_reads_per_step) give, per pass: NFE, solver steps (torchdiffeq's step
callbacks), host reads, reads per evaluation, per step, and per pass of the solver's loop (reads from
one step's start to the next's, without the solve's reads before its first step and after its last).
By default the cases run on torchdiffeq's own solvers (--path torchdiffeq, the reference); with --path
device, on noderun's device solve path (noderun/solve, config key solver.path, which the solver configs
choose for dopri5 and rk4). Takes a few seconds.

Example: python scripts/host_reads.py --batch 32 --seed 0 --path device
"""

from __future__ import annotations

import argparse

import torch
import torchdiffeq
from hydra import compose, initialize_config_dir

from noderun.command import CONF_DIR
from noderun.solvers import solver_spec
from noderun.measure import host_reads_per_step
from noderun.models import build_model

# (row label, gradients, `noderun` overrides): the models as their YAMLs compose them.
CASES = [
    ("ODE-Net", "adjoint, default norm", ["model=odenet"]),
    ("ODE-Net", "adjoint, seminorm", ["model=odenet", "solver.adjoint_norm=seminorm"]),
    ("RK-Net", "backprop through the solver", ["model=rknet"]),
]


def parse_args() -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="images in the batch (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images and labels (weights: seed 0)")
    parser.add_argument("--path", choices=("torchdiffeq", "device"), default="torchdiffeq",
                        help="the solve path (config key solver.path; default torchdiffeq)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the counts do not need speed, and a busy machine's "
                             "spinning threads slow small solves down many times)")
    return parser.parse_args()


def built(overrides: list[str]) -> tuple[torch.nn.Module, str]:
    """Return the model the overrides compose, built from seed 0, and its solver in words."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    spec = solver_spec(cfg)
    torch.manual_seed(0)
    words = f"{spec.method}, step {spec.step_size}" if spec.fixed_grid else f"{spec.method}, tol {spec.rtol:g}"
    return build_model(cfg.model, spec), words


def ratio(value: float | None) -> str:
    """Return a ratio to two decimals, or '-' where there is none (no steps or evaluations)."""
    return "-" if value is None else f"{value:.2f}"


def table(batch: int, seed: int, path: str = "torchdiffeq") -> list[str]:
    """Return the Markdown lines: a header naming the versions and the device, the table, the reads by operator."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    lines = [f"CPU, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, torchdiffeq "
             f"{torchdiffeq.__version__}; one batch of {batch} random 28x28 images (seed {seed}), weights "
             f"from seed 0; solve path {path}",
             "",
             "| model | solver | gradients | pass | NFE | steps (accepted + rejected) | host reads "
             "| reads / NFE | reads / step | reads / loop pass |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    by_op = []
    for label, gradients, overrides in CASES:
        model, solver = built([*overrides, f"solver.path={path}"])
        measured = host_reads_per_step(model, images, labels)
        for direction in ("forward", "backward"):
            steps = measured[f"steps_{direction}"]
            accepted, rejected = measured[f"accepted_{direction}"], measured[f"rejected_{direction}"]
            split = f"{steps} ({accepted} + {rejected})" if steps else "0"
            lines.append(f"| {label} | {solver} | {gradients} | {direction} | {measured[f'nfe_{direction}']} | {split} "
                         f"| {measured[f'reads_{direction}']} | {ratio(measured[f'reads_per_nfe_{direction}'])} "
                         f"| {ratio(measured[f'reads_per_step_{direction}'])} "
                         f"| {ratio(measured[f'loop_reads_per_step_{direction}'])} |")
            ops = measured[f"reads_by_op_{direction}"]
            by_op.append(f"{label} ({gradients}), {direction}: "
                         + (", ".join(f"{op} {n}" for op, n in sorted(ops.items())) or "none"))
    return lines + ["", "Host reads by operator:", ""] + [f"- {line}" for line in by_op]


def main() -> None:
    """Measure and print the table."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    print("\n".join(table(args.batch, args.seed, args.path)))


if __name__ == "__main__":
    main()
