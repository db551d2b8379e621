"""Live views of a run in the tools researchers already use (config group `logger`): TensorBoard event
files in the run directory, an MLflow run in an embedded SQLite store. noderun's own files are always
written; a logger only mirrors them, and its failure never fails or changes a run: it is said once in
the log and that logger stops.

Each backend is an optional extra (`pip install -e '.[tensorboard]'`, `'.[mlflow]'`), imported only
when a run asks for it."""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from noderun.errors import UserError
from noderun.records import METRICS_FILE, SUMMARY_FILE, flat_config

log = logging.getLogger("noderun")

# What each backend needs installed: (module to import, the extra that installs it).
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}
# Hydra writes this into a sweep's folder when the sweep starts: a run directory beside it is a sweep's job.
SWEEP_MARK = "multirun.yaml"
TENSORBOARD_DIR = "tensorboard"


def check_backends(backends: Any) -> list[str]:
    """Return the logger backends a run asks for (logger.backends), or raise UserError naming a backend
    noderun does not have or one whose package is not installed, with the command that installs it."""
    if isinstance(backends, str) or not hasattr(backends, "__iter__"):
        raise UserError(f"logger.backends={backends!r} is invalid; use a list of: {', '.join(LOGGERS)}")
    names = [str(b) for b in backends]
    for name in names:
        if name not in LOGGERS:
            raise UserError(f"unknown logger backend {name!r}; choose from: {', '.join(LOGGERS)} (logger=none|"
                            f"tensorboard|mlflow|many)")
        module, extra = PACKAGES.get(name, (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise UserError(f"logger {name} needs the {module} package, which is not installed; install it with "
                            f"pip install -e '.[{extra}]' (or pip install {module})")
    return names


def _numbers(row: Mapping[str, Any]) -> dict[str, float]:
    """Return a metrics row's finite numbers (text, flags and missing values are not scalars to plot)."""
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def flat_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a plain config as {dotted key: value}, lists as text (as params and hparams take them)."""
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in flat_config(dict(config)).items()}


def sweep_of(run_dir: Path) -> Path | None:
    """Return the sweep folder a run directory is a job of (Hydra's multirun.yaml beside it), else None."""
    parent = run_dir.resolve().parent
    return parent if (parent / SWEEP_MARK).is_file() else None


class TensorBoardLogger:
    """Event files in RUN_DIR/tensorboard: every numeric metrics.csv column per epoch, the config as hparams
    with the final numbers, the run's PNG figures as images at the end. A sweep's jobs are folders of the
    sweep's folder, so `tensorboard --logdir SWEEP` overlays them."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any], summary: Mapping[str, Any]):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard extra

        self.config = config
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))

    def epoch(self, row: Mapping[str, Any], step: int) -> None:
        for key, value in _numbers(row).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def end(self, summary: Mapping[str, Any], figures: list[Path]) -> None:
        import matplotlib.image

        finals = {f"final/{k}": v for k, v in _numbers(summary).items()
                  if k in ("test_error", "test_rmse", "val_error", "val_rmse", "train_time_s", "params")}
        hparams = {k: v if v is not None else "null" for k, v in flat_params(self.config).items()}
        self.writer.add_hparams(hparams, finals, run_name="hparams")
        for path in figures:
            self.writer.add_image(path.stem, matplotlib.image.imread(str(path))[..., :3], dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@contextmanager
def _store_held(tracking_uri: str) -> Iterator[None]:
    """Hold a lock beside a SQLite store while the block runs, so that a sweep's parallel jobs do not
    create the store and its tables at once (measured: of 4 joblib jobs starting on a new store, one
    failed MLflow's schema migration and lost its MLflow run). Other stores are left to MLflow."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(tracking_uri.removeprefix("sqlite:///")).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield


class MLflowLogger:
    """An MLflow run in an embedded store (logger.tracking_uri; by default a SQLite file under the output
    root, no server): the config as params, the metrics per epoch, summary.json, metrics.csv and the figures
    as artifacts. A sweep's jobs are runs of one experiment named after the sweep's folder; single runs
    go to the experiment `noderun`."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any], summary: Mapping[str, Any], tracking_uri: str,
                 artifact_root: Path):
        with _store_held(tracking_uri):
            self._open(run_dir, config, summary, tracking_uri, artifact_root)

    def _open(self, run_dir: Path, config: Mapping[str, Any], summary: Mapping[str, Any], tracking_uri: str,
              artifact_root: Path) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient  # needs the mlflow extra

        self.run_dir = run_dir
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.client.search_experiments(max_results=1)  # creates the store's tables, under the lock
        sweep = sweep_of(run_dir)
        name = f"sweep {sweep.name}" if sweep else "noderun"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(name, artifact_location=(artifact_root / name).as_uri())
            except Exception:  # another job of the sweep created it meanwhile
                experiment_id = self.client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = experiment.experiment_id
        run_name = f"{sweep.name}/{run_dir.name}" if sweep else run_dir.name
        tags = {"noderun.run_dir": str(run_dir.resolve()), "noderun.task": str(summary.get("task")),
                **{f"noderun.tag.{t}": "1" for t in summary.get("tags") or []}}
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flat_params(config).items()]
        for start in range(0, len(params), 100):  # the store takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def epoch(self, row: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in _numbers(row).items()])

    def end(self, summary: Mapping[str, Any], figures: list[Path]) -> None:
        records = [self.run_dir / name for name in (SUMMARY_FILE, METRICS_FILE) if (self.run_dir / name).is_file()]
        for path in [*records, *figures]:
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


LOGGERS: dict[str, Callable[..., Any]] = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger}


class RunLoggers:
    """The loggers of one run, each guarded: the first exception a logger raises is logged once (a
    warning naming it) and that logger is dropped; the run and its own records go on unchanged."""

    def __init__(self, cfg: Any, run_dir: Path, config: Mapping[str, Any], summary: Mapping[str, Any]):
        self.active: dict[str, Any] = {}
        settings = cfg.get("logger") or {}
        output_root = Path(str(cfg.paths.output_root)).expanduser().resolve()
        for name in check_backends(settings.get("backends") or []):
            if name == "mlflow":
                uri = settings.get("tracking_uri") or f"sqlite:///{output_root / 'mlflow.db'}"
                self._guarded(name, lambda: LOGGERS[name](run_dir, config, summary, uri, output_root / "mlartifacts"),
                              opening=True)
            else:
                self._guarded(name, lambda: LOGGERS[name](run_dir, config, summary), opening=True)

    def _guarded(self, name: str, call: Callable[[], Any], opening: bool = False) -> None:
        try:
            result = call()
            if opening:
                self.active[name] = result
        except Exception as err:  # a logger's failure is never the run's
            log.warning("logger %s failed and is off for the rest of this run (noderun's own records are "
                        "unaffected): %s: %s", name, type(err).__name__, str(err).splitlines()[0][:200] if str(err) else "")
            self.active.pop(name, None)

    def epoch(self, row: Mapping[str, Any]) -> None:
        """Mirror one metrics.csv row (its epoch the step)."""
        step = int(row.get("epoch") or 0)
        for name, logger in list(self.active.items()):
            self._guarded(name, lambda: logger.epoch(row, step))

    def end(self, summary: Mapping[str, Any], run_dir: Path, status: str) -> None:
        """Mirror the run's end: its final numbers and figures (PNG files it lists), then close."""
        figures = [run_dir / f for f in summary.get("files") or [] if str(f).endswith(".png") and (run_dir / f).is_file()]
        for name, logger in list(self.active.items()):
            if status == "completed":
                self._guarded(name, lambda: logger.end(summary, figures))
            if isinstance(logger, MLflowLogger):
                self._guarded(name, lambda: logger.close({"completed": "FINISHED", "interrupted": "KILLED"}
                                                         .get(status, "FAILED")))
            else:
                self._guarded(name, logger.close)
        self.active.clear()
