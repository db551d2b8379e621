"""A trained Table-1 ODE model rebuilt from its run directory: the checkpoint (loaded safely) and the
config beside it. Used by the tolerance experiment and scripts/bench.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from noderun.errors import UserError
from noderun.models import MODELS, ODE_NET, build_model
from noderun.records import BEST_CHECKPOINT, CONFIG_DIR, LAST_CHECKPOINT, BrokenRecord, load_checkpoint
from noderun.safeio import UnsafeFile, load_yaml
from noderun.solvers import SolverSpec

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
        state = load_checkpoint(path)
    except BrokenRecord as err:
        raise UserError(f"ckpt={ckpt}: {err}; pass a noderun run's best.pt or last.pt") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"ckpt={ckpt}: not a noderun checkpoint (it holds no model weights); pass a run's "
                        f"best.pt or last.pt")
    config_file = path.parent / CONFIG_DIR / "config.yaml"
    if not config_file.exists():
        raise UserError(f"ckpt={ckpt}: no {config_file} beside it, so the model cannot be rebuilt; pass a "
                        f"checkpoint inside the run directory noderun wrote")
    try:
        plain = load_yaml(config_file)
    except UnsafeFile as err:
        raise UserError(f"ckpt={ckpt}: {err}; pass a checkpoint inside the run directory noderun wrote") from None
    if not isinstance(plain, dict):
        raise UserError(f"ckpt={ckpt}: {config_file} holds no config; pass a checkpoint inside the run directory "
                        f"noderun wrote")
    try:
        run_cfg = OmegaConf.create(plain)
    except (OmegaConfBaseException, ValueError, TypeError) as err:
        raise UserError(f"ckpt={ckpt}: {config_file} is not a config ({str(err).splitlines()[0]})") from None
    model_name = OmegaConf.select(run_cfg, "model.name")
    if model_name not in MODELS or not MODELS[model_name].is_ode or MODELS[model_name].table != 1:
        raise UserError(f"ckpt={ckpt}: a {model_name} checkpoint; the tolerance task needs a model with an ODE "
                        f"block (a Table-1 ODE model)")
    return run_cfg, state["model"], path


def model_at(run_cfg: DictConfig, weights: dict[str, torch.Tensor], spec: SolverSpec, device: torch.device,
             path: Path) -> nn.Module:
    """Return the trained ODE-Net of checkpoint `path` solving with spec, gradients by the adjoint
    method, in eval mode."""
    # The ODE-Net's architecture with the adjoint, whichever way the checkpoint's run took its gradients.
    model = build_model({**OmegaConf.to_container(run_cfg.model), "name": ODE_NET, "adjoint": True}, spec)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise UserError(f"ckpt={path}: its weights do not fit the model its config describes ({str(err).splitlines()[0]})") from None
    return model.to(device).eval()
