"""The `noderun` console command: checks what Hydra cannot explain in one line, then runs the app."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from noderun.errors import UserError
from noderun.parallel import threads_per_job

CONF_DIR = Path(__file__).resolve().parent / "conf"
GROUPS = ("model", "solver", "dataset", "trainer", "experiment")
_GROUP_OVERRIDE = re.compile(r"^\+{0,2}(%s)=(.*)$" % "|".join(GROUPS))
_OUTPUT_OVERRIDE = re.compile(r"^(paths\.output_root|hydra\.run\.dir|hydra\.sweep\.dir)=(.+)$")


def group_options(group: str) -> list[str]:
    """Return the config names available in a config group."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_choices(args: list[str]) -> None:
    """Raise UserError for a config-group choice that has no config file, listing the valid ones."""
    for arg in args:
        match = _GROUP_OVERRIDE.match(arg)
        if not match or "(" in match.group(2):  # leave sweep functions like glob(...) to Hydra
            continue
        group, values = match.groups()
        options = group_options(group)
        for value in values.split(","):
            if value not in options and not (group == "experiment" and value == "null"):
                raise UserError(f"unknown {group} {value!r}; choose one of: {', '.join(options)}")


def check_output_dirs(args: list[str]) -> None:
    """Raise UserError unless the folder runs will be written under can be created and written."""
    targets = [m.group(2) for m in map(_OUTPUT_OVERRIDE.match, args) if m] or ["outputs"]
    for target in targets:
        # Hydra interpolations (${now:...}) are filled in later; check the fixed part before them.
        base = Path(target.split("${")[0] or ".").expanduser()
        try:
            base.mkdir(parents=True, exist_ok=True)
            # A uniquely named probe, so that commands started together don't remove each other's.
            with tempfile.NamedTemporaryFile(dir=base, prefix=".noderun-write-probe-"):
                pass
        except OSError as err:
            raise UserError(f"cannot write runs under {str(base)!r} ({err.strerror or err}); choose a writable "
                            f"folder with paths.output_root=DIR") from None


def configure_torch(threads: int | None, deterministic: bool, rk_stages: bool = True) -> None:
    """Set torch's intra-op threads (None: torch's default), whether cuDNN may pick its convolution
    algorithms by speed (its fastest ones are nondeterministic on a GPU: the same seed gave RK-Net
    training losses 2.330114 and 2.330013 on an H100, so by default it may not), and whether adaptive
    Runge-Kutta steps use noderun's stage arithmetic (noderun.rk_stages)."""
    import torch

    from noderun.rk_stages import use_noderun_stages

    use_noderun_stages(rk_stages)

    if threads:
        torch.set_num_threads(threads)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def config_flag(cfg: DictConfig, key: str) -> bool:
    """Return the true/false config value at `key` (true when absent), or raise UserError naming a bad one."""
    value = OmegaConf.select(cfg, key, default=True)
    if not isinstance(value, bool):
        raise UserError(f"{key}={value!r} is invalid; use true or false")
    return value


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> int:
    from noderun.run import EXIT_INTERRUPTED, EXIT_OK, Run  # torch is imported only once a run really starts

    hydra_cfg = HydraConfig.get()
    try:
        flags = [config_flag(cfg, key) for key in ("deterministic", "speed.rk_stages")]
    except UserError as err:
        print(f"noderun: error: {err}", file=sys.stderr)
        sys.exit(2)
    configure_torch(threads_per_job(cfg.get("threads"), hydra_cfg.get("launcher")), *flags)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.get("task", "train") == "train":
        code = Run(cfg, run_dir, list(hydra_cfg.overrides.task)).execute()
    else:
        from noderun.tasks import run_task

        code = run_task(cfg, run_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN and code != EXIT_INTERRUPTED:
        # In a sweep a failed run is recorded, not raised, so that the other runs and the summary go on;
        # an interrupt (Ctrl-C, SIGTERM) stops the sweep.
        return code
    if code != EXIT_OK:
        sys.exit(code)
    return code


def main() -> None:
    """Entry point of the `noderun` command."""
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    try:
        check_group_choices(args)
        if not any(a in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help") for a in sys.argv[1:]):
            check_output_dirs(args)
    except UserError as err:
        print(f"noderun: error: {err}", file=sys.stderr)
        sys.exit(2)
    _app()


if __name__ == "__main__":
    main()
