"""Time the training step of noderun's models against a plain baseline loop, on real MNIST.

For each model, two loops train the same architecture from the same initial weights on the same
images, in this process, one after the other:

- noderun: batches cut from tensors in memory (noderun.data.batches), noderun's model and solver
  options as the run's config would build them, on the solve path --path names (config key solver.path;
  default device, noderun's device solve path noderun/solve, which the solver configs choose for dopri5
  and rk4; torchdiffeq: torchdiffeq's own solvers); with --compile, its dynamics compiled (torch.compile,
  config key speed.compile; the first warm-up step's time, compiling included, is reported as first_step_s);
- baseline: the common way, torchvision's MNIST dataset with per-sample RandomCrop + ToTensor through
  a DataLoader, default memory format, torchdiffeq's own solvers with its default adjoint options.

Each step (data, forward, backward, optimizer step) is timed with time.perf_counter after warm-up
steps (on CUDA the device is synchronized before each clock read); the median over the timed steps is reported with images/s, NFE forward and backward (means),
FLOPs of one step (torch.utils.flop_counter's formulas: matmuls and convolutions only) and achieved GFLOP/s.
The machine's attainable FLOP/s is measured (a large matmul and the models' own convolution shapes), so each figure
can be read as a fraction of it. Writes bench.json and bench.md to --out and prints the table.

It also estimates the share of a full-protocol epoch spent evaluating (5,000 validation and 10,000 test
images against 55,000 training images, from measured per-batch times) and, for ODE-Net, the backward NFE
with the seminorm adjoint against the default one (same weights and batches: freshly initialised ones, and
a trained ODE-Net's with --checkpoint). bench.json's "targets" says which of issue 7's targets this run met.

Example: python scripts/bench.py --models resnet,rknet,odenet --steps 10 --out outputs/bench
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

from noderun.data.batches import epoch_generator, training_batches
from noderun.data.image_data import load_image_data
from noderun.errors import UserError
from noderun.measure import FlopCount, NFECounter, wait_for
from noderun.command import CONF_DIR
from noderun.solvers import solver_spec
from noderun.models import MODELS, ODE_NET, build_model, models_of_table
from noderun.models.ode_block import compile_dynamics
from noderun.solvers import SolverSpec
from noderun.models.trained import model_at, trained_run
from noderun.train import evaluate, measure_step



def model_config(name: str, path: str = "device") -> tuple[Any, SolverSpec]:
    """Return the model's config block and solver as `noderun model=NAME solver.path=PATH` composes them
    (its YAML's defaults: ResNet's downsampling, RK-Net's rk4 at step 0.25, dopri5 at 1e-3 for the ODE-Net)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}", f"solver.path={path}"])
    return cfg.model, solver_spec(cfg)


def built(name: str, path: str = "device") -> tuple[torch.nn.Module, SolverSpec]:
    """Return the model `noderun model=NAME solver.path=PATH` trains, built from seed 0, and its solver."""
    model_cfg, solver = model_config(name, path)
    torch.manual_seed(0)
    return build_model(model_cfg, solver), solver
# Issue 7's targets: noderun's step this much faster than the baseline's; the seminorm adjoint's NFE-B at
# most this fraction of the default's; evaluation at most this share of an epoch.
TARGET_SPEEDUP, TARGET_SEMINORM_RATIO, TARGET_EVAL_SHARE = 1.3, 0.7, 0.15


def parse_args() -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(models_of_table(1)),
                        help=f"comma-separated Table-1 models (default all: {','.join(models_of_table(1))})")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per loop (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("NODERUN_DATA_DIR", "~/.cache/noderun/data")),
                        help="MNIST cache (as noderun's dataset.root)")
    parser.add_argument("--path", choices=("torchdiffeq", "device"), default="device",
                        help="noderun's solve path (config key solver.path; default device, as the solver configs "
                             "of dopri5 and rk4 choose); the baseline always uses torchdiffeq's solvers")
    parser.add_argument("--compile", action="store_true",
                        help="compile noderun's ODE-Net and RK-Net dynamics (config key speed.compile); the baseline never")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]; on CUDA noderun's batches live on the GPU and the "
                        "baseline copies each DataLoader batch to it, as the common loop does")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a trained ODE-Net's run directory or best.pt/last.pt: the seminorm is also measured on its weights")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"), help="folder for bench.json and bench.md")
    return parser.parse_args()


def noderun_batches(root: Path, batch: int, count: int, device: torch.device):
    """Return `count` training batches the way noderun's trainer cuts them (resident on the device,
    batched crop)."""
    data = load_image_data("mnist", root.expanduser(), val_size=0, train_size=batch * count)
    return list(training_batches(data.train.to(device), batch, epoch_generator(0, 0), crop_padding=4))


def baseline_loader(root: Path, batch: int):
    """Return a DataLoader over torchvision's MNIST with per-sample transforms, the common way."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.RandomCrop(28, padding=4), transforms.ToTensor()])
    dataset = datasets.MNIST(str(root.expanduser()), train=True, download=False, transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)


class Loop:
    """One training loop: a model, its optimizer and its batches, stepped one at a time."""

    def __init__(self, model, batches, device: torch.device):
        self.model, self.batches, self.device = model, iter(batches), device
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.counter = NFECounter(model)
        self.times, self.forward, self.backward, self.untimed = [], [], [], []

    def step(self, timed: bool) -> None:
        """Take one step (data, forward, backward, optimizer); record its time and NFE when timed."""
        wait_for(self.device)
        start = time.perf_counter()
        images, labels = (t.to(self.device) for t in next(self.batches))
        self.optimizer.zero_grad(set_to_none=True)
        self.counter.take()
        loss = torch.nn.functional.cross_entropy(self.model(images), labels)
        nfe_f = self.counter.take()
        loss.backward()
        nfe_b = self.counter.take()
        self.optimizer.step()
        wait_for(self.device)
        if timed:
            self.times.append(time.perf_counter() - start)
            self.forward.append(nfe_f)
            self.backward.append(nfe_b)
        else:
            self.untimed.append(time.perf_counter() - start)

    def result(self) -> dict:
        """Return the median step time and the mean NFE of the timed steps, and the first warm-up step's time."""
        return {"s_per_step": statistics.median(self.times), "nfe_forward": statistics.mean(self.forward),
                "nfe_backward": statistics.mean(self.backward), "first_step_s": self.untimed[0] if self.untimed else None}


def time_loops(loops: list[Loop], steps: int, warmup: int) -> None:
    """Step the loops in turn, warmup untimed rounds then `steps` timed ones: interleaving them puts
    any drift of the machine's speed (other load, clock) on all of them alike."""
    for round_ in range(warmup + steps):
        for loop in loops:
            loop.step(timed=round_ >= warmup)


def best_seconds(work, repeats: int, device: torch.device) -> float:
    """Return the fastest of `repeats` timed calls of work(), after one untimed call."""
    work()
    best = float("inf")
    for _ in range(repeats):
        wait_for(device)
        start = time.perf_counter()
        work()
        wait_for(device)
        best = min(best, time.perf_counter() - start)
    return best


def conv_shapes(model, images) -> list[tuple]:
    """Return the distinct (Conv2d module, input shape) pairs of a forward pass on images."""
    seen, shapes = set(), []

    def record(module, args):
        key = (id(module), tuple(args[0].shape))
        if key not in seen:
            seen.add(key)
            shapes.append((module, tuple(args[0].shape)))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return shapes


def attainable_gflops(models: list, images, device: torch.device, repeats: int = 10) -> dict:
    """Return this machine's best measured GFLOP/s: a 2048x2048 float32 matrix product, and each of the
    models' convolution shapes alone (forward, and backward for input and weight). The highest is the
    practical limit each model's achieved GFLOP/s is read against."""
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    result = {"matmul_2048": 2 * 2048**3 / best_seconds(lambda: a @ b, repeats, device) / 1e9, "convolutions": {}}
    for model in models:
        for conv, shape in conv_shapes(model, images):
            name = (f"{conv.in_channels}->{conv.out_channels} k{conv.kernel_size[0]} s{conv.stride[0]} "
                    f"on {shape[2]}x{shape[3]}")
            if name in result["convolutions"]:
                continue
            x = torch.randn(shape, device=device, requires_grad=True)
            layer = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                    conv.padding, bias=conv.bias is not None).to(device)
            with FlopCount() as counter:
                layer(x).sum().backward()
            result["convolutions"][name] = counter.total / best_seconds(lambda: layer(x).sum().backward(), repeats, device) / 1e9
    result["best"] = max([result["matmul_2048"], *result["convolutions"].values()])
    return result


def evaluation_share(model, root: Path, train_step_s: float, device: torch.device, eval_batch: int = 500,
                     batches: int = 4) -> dict:
    """Return the time of evaluating one full-protocol epoch (5,000 validation and 10,000 test images,
    forward only, in batches of trainer.eval_batch_size's default, 500) against the time of its training (55,000
    images at the measured step time), both estimated from measured per-batch times."""
    data = load_image_data("mnist", root.expanduser(), val_size=0, train_size=1, test_size=eval_batch * batches)
    data.test = data.test.to(device)
    counter = NFECounter(model)
    evaluate(model, data.test, eval_batch, counter)  # warm-up: kernels for the evaluation batch's shape
    _, nfe, s_per_batch = evaluate(model, data.test, eval_batch, counter)
    eval_s = s_per_batch * (5_000 + 10_000) / eval_batch
    train_s = train_step_s * -(-55_000 // 128)
    return {"eval_s_per_1000": s_per_batch * 1000 / eval_batch, "nfe_forward_eval": nfe, "epoch_eval_s": eval_s,
            "epoch_train_s": train_s, "eval_share": eval_s / (eval_s + train_s)}


def seminorm_ratio(root: Path, batch: int, device: torch.device, checkpoint: Path | None = None, count: int = 4,
                   tol: float = 1e-3) -> dict:
    """Return ODE-Net's mean backward NFE with the default adjoint and with the seminorm, dopri5 at
    rtol = atol = tol, on the same batches from the same weights (no optimizer step between): freshly
    initialised ones, or the trained ones of `checkpoint`."""
    batches = noderun_batches(root, batch, count, device)
    trained = trained_run(checkpoint) if checkpoint else None
    result = {"weights": str(trained[2]) if trained else "initial (seed 0)"}
    for norm in ("default", "seminorm"):
        torch.manual_seed(0)
        spec = SolverSpec("dopri5", tol, tol, adjoint_norm=norm)
        if trained:
            model = model_at(*trained[:2], spec, device, trained[2]).train()
        else:
            model = build_model({**model_config(ODE_NET)[0], "adjoint": True}, spec).to(device)
        counter, forward, backward = NFECounter(model), [], []
        for images, labels in batches:
            model.zero_grad(set_to_none=True)
            counter.take()
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            forward.append(counter.take())
            loss.backward()
            backward.append(counter.take())
        result[norm] = {"nfe_forward": statistics.mean(forward), "nfe_backward": statistics.mean(backward)}
    result["ratio_backward"] = result["seminorm"]["nfe_backward"] / result["default"]["nfe_backward"]
    result["tol"], result["batches"], result["batch"] = tol, count, batch
    return result


def bench_model(name: str, args: argparse.Namespace) -> dict:
    """Return both loops' measurements for one model, from the same initial weights, interleaved."""
    model, solver = built(name, args.path)
    model = model.to(args.device)
    twin = copy.deepcopy(model)
    for module in twin.modules():  # the baseline solves with torchdiffeq, whichever path noderun's loop takes
        if isinstance(getattr(module, "solver", None), SolverSpec):
            module.solver = dataclasses.replace(module.solver, path="torchdiffeq")
    if args.compile:
        compile_dynamics(model)
    ours = Loop(model, noderun_batches(args.data, args.batch, args.warmup + args.steps, args.device), args.device)
    baseline = Loop(twin, baseline_loader(args.data, args.batch), args.device)
    time_loops([ours, baseline], args.steps, args.warmup)
    images, labels = noderun_batches(args.data, args.batch, 1, args.device)[0]
    flops = measure_step(twin, images, labels)[1]  # the step noderun's runs measure, the same way (uncompiled)
    result = {"model": name, "solver": solver.method if MODELS[name].is_ode else None, "flops_per_step": flops,
              "compiled": bool(args.compile and MODELS[name].is_ode)}
    for label, loop in (("noderun", ours.result()), ("baseline", baseline.result())):
        result[label] = {**loop, "images_per_s": args.batch / loop["s_per_step"],
                         "gflops_per_s": flops / loop["s_per_step"] / 1e9}
    result["speedup"] = result["baseline"]["s_per_step"] / result["noderun"]["s_per_step"]
    result["evaluation"] = evaluation_share(model, args.data, result["noderun"]["s_per_step"], args.device)
    return result


def markdown(results: list[dict], attainable: float, seminorm: list[dict]) -> str:
    """Return the results as Markdown tables."""
    lines = ["| model | loop | s/step | first step s | images/s | NFE-F | NFE-B | GFLOP/step | GFLOP/s | % of attainable "
             "| speedup |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for label in ("noderun", "baseline"):
            m = r[label]
            speedup = f"{r['speedup']:.2f}x" if label == "noderun" else ""
            first = "-" if m["first_step_s"] is None else f"{m['first_step_s']:.2f}"
            lines.append(f"| {r['model']} | {label} | {m['s_per_step']:.3f} | {first} | {m['images_per_s']:.0f} | "
                         f"{m['nfe_forward']:.1f} | {m['nfe_backward']:.1f} | {r['flops_per_step'] / 1e9:.2f} | "
                         f"{m['gflops_per_s']:.1f} | {100 * m['gflops_per_s'] / attainable:.0f}% | {speedup} |")
    lines += ["", "| model | evaluation s per 1,000 images | full epoch: evaluation s | training s | evaluation share |",
              "|---|---|---|---|---|"]
    for r in results:
        e = r["evaluation"]
        lines.append(f"| {r['model']} | {e['eval_s_per_1000']:.2f} | {e['epoch_eval_s']:.0f} | {e['epoch_train_s']:.0f} | "
                     f"{100 * e['eval_share']:.1f}% |")
    if not seminorm:
        return "\n".join(lines)
    lines += ["", "| ODE-Net weights | NFE-F | NFE-B, default adjoint | NFE-B, seminorm | ratio |", "|---|---|---|---|---|"]
    for case in seminorm:
        d, n = case["default"], case["seminorm"]
        lines.append(f"| {case['weights']} | {d['nfe_forward']:.1f} | {d['nfe_backward']:.1f} | {n['nfe_backward']:.1f} | "
                     f"{case['ratio_backward']:.2f} |")
    first = seminorm[0]
    lines += ["", f"(dopri5 at rtol = atol = {first['tol']:g}, mean over {first['batches']} batches of {first['batch']})"]
    return "\n".join(lines)


def targets_met(results: list[dict], seminorm: list[dict]) -> dict:
    """Return, for each of issue 7's targets, the measured figure and whether it was met."""
    met = {}
    for r in results:
        met[f"speedup_{r['model']}"] = {"value": r["speedup"], "target": f">= {TARGET_SPEEDUP}",
                                        "met": r["speedup"] >= TARGET_SPEEDUP}
        share = r["evaluation"]["eval_share"]
        met[f"eval_share_{r['model']}"] = {"value": share, "target": f"<= {TARGET_EVAL_SHARE}",
                                           "met": share <= TARGET_EVAL_SHARE}
    for case in seminorm:
        ratio = case["ratio_backward"]
        met[f"seminorm_ratio ({case['weights']})"] = {"value": ratio, "target": f"<= {TARGET_SEMINORM_RATIO}",
                                                     "met": ratio <= TARGET_SEMINORM_RATIO}
    return met


def main() -> None:
    """Run the benchmark and write bench.json and bench.md."""
    args = parse_args()
    if args.checkpoint:
        try:
            trained_run(args.checkpoint)
        except UserError as err:
            raise SystemExit(f"bench.py: error: {err}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = torch.device(args.device)
    torch.manual_seed(0)
    sample = noderun_batches(args.data, args.batch, 1, args.device)[0][0]
    limits = attainable_gflops([built(name)[0].to(args.device) for name in args.models.split(",")], sample, args.device)
    attainable = limits["best"]
    results = [bench_model(name, args) for name in args.models.split(",")]
    seminorm = []
    if ODE_NET in args.models.split(","):
        seminorm.append(seminorm_ratio(args.data, args.batch, args.device))
        if args.checkpoint:
            seminorm.append(seminorm_ratio(args.data, args.batch, args.device, args.checkpoint))
    machine = {"device": str(args.device), "processor": platform.processor() or platform.machine(),
               "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(args.device)
    where = (f"GPU {machine['gpu']}" if "gpu" in machine else "CPU") + f", {machine['cores']} cores"
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine, "attainable_gflops_per_s": limits, "batch": args.batch, "steps": args.steps,
              "warmup": args.warmup, "results": results, "seminorm": seminorm, "targets": targets_met(results, seminorm)}
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(results, attainable, seminorm)
    header = (f"{where}, {machine['torch_threads']} torch threads, torch {machine['torch']}; "
              f"noderun's solve path {args.path}{', dynamics compiled' if args.compile else ''}; "
              f"batch {args.batch}, median of {args.steps} steps after {args.warmup} warm-up; "
              f"attainable {attainable:.1f} GFLOP/s (the best of a 2048x2048 matmul, {limits['matmul_2048']:.1f}, and "
              f"the models' convolution shapes, forward+backward); loops interleaved step by step")
    (args.out / "bench.md").write_text(header + "\n\n" + table + "\n")
    print(header + "\n\n" + table)


if __name__ == "__main__":
    main()
