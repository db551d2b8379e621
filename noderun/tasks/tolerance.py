"""`noderun experiment=tolerance ckpt=PATH`: a trained ODE-Net across solver tolerances, the numbers
behind Figure 3(a)-(c): NFE, time per forward pass, test error, numerical error and backward NFE."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from noderun.data.batches import evaluation_batches
from noderun.data.image_data import ImageData
from noderun.errors import UserError
from noderun.measure import NFECounter, relative_error
from noderun.models import build_model
from noderun.models.ode_block import ODEBlock
from noderun.records import BEST_CHECKPOINT, LAST_CHECKPOINT
from noderun.run import ODE_MODELS, load_data
from noderun.solvers import SolverSpec, integrate, validate_solver
from noderun.tasks.common import task_settings, write_table
from noderun.train import evaluate

log = logging.getLogger("noderun")

CSV_FILE = "tolerance.csv"


def checkpoint_file(ckpt: Any) -> Path:
    """Return the checkpoint ckpt names (a file, or a run directory's best.pt, else its last.pt), or
    raise UserError."""
    if ckpt in (None, ""):
        raise UserError("the tolerance task needs a trained ODE-Net: pass ckpt=PATH (a run's best.pt or "
                        "last.pt, or its run directory)")
    path = Path(str(ckpt)).expanduser()
    if path.is_dir():
        path = next((path / name for name in (BEST_CHECKPOINT, LAST_CHECKPOINT) if (path / name).exists()), path)
    if not path.is_file():
        raise UserError(f"ckpt={ckpt}: no checkpoint there; pass a run's best.pt or last.pt, or its run directory")
    return path


def trained_run(ckpt: Any) -> tuple[DictConfig, dict[str, torch.Tensor], Path]:
    """Return the config, the model weights and the file of the checkpoint ckpt names, or raise
    UserError saying why it cannot be used."""
    path = checkpoint_file(ckpt)
    try:
        # weights_only: tensors and plain values only, so a foreign file cannot run code when loaded.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"ckpt={ckpt}: not a readable checkpoint ({type(err).__name__}); pass a noderun "
                        f"run's best.pt or last.pt") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"ckpt={ckpt}: not a noderun checkpoint (it holds no model weights); pass a run's "
                        f"best.pt or last.pt")
    config_file = path.parent / ".hydra" / "config.yaml"
    if not config_file.exists():
        raise UserError(f"ckpt={ckpt}: no {config_file} beside it, so the model cannot be rebuilt; pass a "
                        f"checkpoint inside the run directory noderun wrote")
    run_cfg = OmegaConf.load(config_file)
    model_name = OmegaConf.select(run_cfg, "model.name")
    if model_name not in ODE_MODELS:
        raise UserError(f"ckpt={ckpt}: a {model_name} checkpoint; the tolerance task needs a model with an ODE "
                        f"block (model=odenet or rknet)")
    return run_cfg, state["model"], path


def model_at(run_cfg: DictConfig, weights: dict[str, torch.Tensor], spec: SolverSpec, device: torch.device,
             path: Path) -> nn.Module:
    """Return the trained ODE-Net of checkpoint `path` solving with spec, gradients by the adjoint
    method, in eval mode."""
    m = run_cfg.model
    model = build_model("odenet", spec, m.get("downsampling", "conv"), t1=m.get("t1", 1.0), adjoint=True)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise UserError(f"ckpt={path}: its weights do not fit the model its config describes ({str(err).splitlines()[0]})") from None
    return model.to(device).eval()


def ode_block(model: nn.Module) -> ODEBlock:
    """Return the model's ODE block."""
    return next(m for m in model.modules() if isinstance(m, ODEBlock))


@torch.no_grad()
def block_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Return what the model's ODE block receives for these images (the downsampled features)."""
    captured = []
    handle = ode_block(model).register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        model(images)
    finally:
        handle.remove()
    return captured[0]


@torch.no_grad()
def reference_solution(model: nn.Module, h0: torch.Tensor, spec: SolverSpec) -> torch.Tensor:
    """Return the ODE block's output for h0 solved with spec in float64, a reference for the block's error."""
    block = ode_block(model)
    dynamics = copy.deepcopy(block.dynamics).double()
    return integrate(dynamics, h0.double(), block.times.double(), spec, adjoint=False)[-1]


def tolerance_row(model: nn.Module, data: ImageData, batch_size: int, h0: torch.Tensor, reference: torch.Tensor,
                  train_batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Return one tolerance's measurements: test error and NFE and seconds per forward pass on the test
    set; the ODE block's error on h0 against the reference; NFE forward and backward of one training step."""
    counter = NFECounter(model)
    accuracy, nfe_eval, forward_s = evaluate(model, data.test, batch_size, counter)
    with torch.no_grad():
        counter.take()
        output = ode_block(model)(h0)
        nfe_error = counter.take()
    model.train()
    images, labels = train_batch
    loss = nn.functional.cross_entropy(model(images), labels)
    nfe_train = counter.take()
    loss.backward()
    nfe_backward = counter.take()
    model.eval()
    return {"nfe_forward": round(nfe_eval, 3), "forward_s": round(forward_s, 5),
            "test_error": round(100 * (1 - accuracy), 4), "nfe_forward_error_batch": nfe_error,
            "block_error": relative_error([output], [reference]),
            "block_error_max": float((output.double() - reference).abs().max()),
            "nfe_forward_train": nfe_train, "nfe_backward": nfe_backward}


def checked_settings(settings: DictConfig) -> tuple[list[float], str, int, SolverSpec]:
    """Return (tolerances, method, batch_size, reference solver) of the settings, or raise UserError."""
    tolerances = list(settings.tolerances)
    if not tolerances:
        raise UserError("tolerance.tolerances is empty; give a list such as [1e-1,1e-3,1e-5]")
    for tol in tolerances:
        validate_solver(SolverSpec(method=settings.method, rtol=tol, atol=tol))
    if SolverSpec(method=settings.method).fixed_grid:
        raise UserError(f"tolerance.method={settings.method} steps a fixed grid and ignores tolerances; "
                        f"choose an adaptive method such as dopri5")
    if not isinstance(settings.batch_size, int) or settings.batch_size < 1:
        raise UserError(f"tolerance.batch_size={settings.batch_size} is invalid; use a whole number >= 1")
    reference = validate_solver(SolverSpec(method=settings.reference_method, rtol=settings.reference_tol,
                                           atol=settings.reference_tol))
    return sorted(map(float, tolerances), reverse=True), str(settings.method), settings.batch_size, reference


def measure(cfg: DictConfig, run_dir: Path, device: torch.device, summary: dict[str, Any]) -> None:
    """Write tolerance.csv (one row per tolerance, loosest first) and Figure 3(a)-(c)."""
    from noderun.report.task_figures import figure3_abc  # matplotlib only once there is something to draw

    tolerances, method, batch_size, reference_spec = checked_settings(task_settings(cfg))
    run_cfg, weights, path = trained_run(cfg.ckpt)
    # The trained model's dataset; where the data lives and how much of the test set, from this command.
    dataset = OmegaConf.merge(run_cfg.dataset, {k: cfg.dataset.get(k) for k in ("root", "sources", "test_size")})
    data = load_data(OmegaConf.merge(cfg, {"dataset": dataset}), device)
    error_images = next(evaluation_batches(data.test, batch_size))[0]
    train_images, train_labels = next(evaluation_batches(data.train, batch_size))

    model = model_at(run_cfg, weights, SolverSpec(method, tolerances[0], tolerances[0]), device, path)
    h0 = block_input(model, error_images)
    # Untimed warm-up over the test set: one-off setup (kernels for new shapes) is charged to no tolerance.
    evaluate(model, data.test, batch_size, NFECounter(model))
    reference = reference_solution(model, h0, reference_spec)
    coarser = SolverSpec(reference_spec.method, reference_spec.rtol * 100, reference_spec.atol * 100)
    reference_check = relative_error([reference_solution(model, h0, coarser)], [reference])
    rows = []
    for tol in tolerances:
        model = model_at(run_cfg, weights, SolverSpec(method, tol, tol), device, path)
        row = {"tol": tol, "method": method, "batch_size": batch_size,
               **tolerance_row(model, data, batch_size, h0, reference, (train_images, train_labels))}
        log.info("tolerance %g: NFE-F %.1f, %.4f s per forward pass, test error %.2f%%, block error %.3g, "
                 "NFE-B %d", tol, row["nfe_forward"], row["forward_s"], row["test_error"], row["block_error"],
                 row["nfe_backward"])
        rows.append(row)
    table = pd.DataFrame(rows)
    write_table(run_dir, CSV_FILE, table, summary)
    summary["files"] += [p.name for p in figure3_abc([("ODE-Net", "odenet", table)], run_dir)]
    summary.update(ckpt=str(path.resolve()), model=run_cfg.model.name, method=method, batch_size=batch_size,
                   test_size=len(data.test), reference_method=reference_spec.method, reference_tol=reference_spec.rtol,
                   reference_vs_100x_looser=reference_check)
