"""One training run, from config to a complete run directory, whatever happens along the way."""

from __future__ import annotations

import logging
import platform
import signal
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
import torchdiffeq
from omegaconf import DictConfig, OmegaConf

from noderun.data.batches import epoch_generator, training_batches
from noderun.data.image_data import ImageData, load_image_data
from noderun.errors import UserError
from noderun.measure import NFECounter, peak_memory_mb, reset_peak_memory
from noderun.models import build_model, count_parameters
from noderun.records import (BEST_CHECKPOINT, LAST_CHECKPOINT, find_previous_run, read_summary, run_key,
                             save_checkpoint, write_metrics, write_run_link, write_summary)
from noderun.solvers import SolverSpec, validate_solver
from noderun.train import TrainingFailure, evaluate, lr_at_epoch, train_epoch

log = logging.getLogger("noderun")

IMAGE_DATASETS = ("mnist", "fashion_mnist")
ODE_MODELS = ("rknet", "odenet")
EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
# Config keys that change where things are kept or shown, not what is computed, and the other tasks'
# keys (constant for training): left out of the run key.
_NOT_IN_KEY = ("resume", "paths", "device", "task", "ckpt")
_DATASET_KEYS_NOT_IN_KEY = ("root", "sources", "download_timeout_s")


def solver_spec(cfg: DictConfig) -> SolverSpec:
    """Return the validated solver of a run's config."""
    s = cfg.solver
    return validate_solver(SolverSpec(method=s.method, rtol=s.rtol, atol=s.atol, step_size=s.get("step_size"),
                                      adjoint_norm=s.get("adjoint_norm", "default"),
                                      scipy_method=s.get("scipy_method"), max_num_steps=s.get("max_num_steps")))


# What the datasets that are not MNIST's are for, said when one is used elsewhere.
DATASET_USERS = {"spirals": "model=latent_ode or model=rnn", "cubic": "experiment=cubic", "ecg": "experiment=ecg"}


def validate_config(cfg: DictConfig, datasets: tuple[str, ...] = IMAGE_DATASETS) -> None:
    """Raise UserError for the first value a run cannot use, naming what would be valid; `datasets`
    are those the run or task can take."""
    t = cfg.trainer
    if not isinstance(t.epochs, int) or t.epochs < 1:
        raise UserError(f"trainer.epochs={t.epochs} is invalid; use a whole number >= 1")
    if not isinstance(t.batch_size, int) or t.batch_size < 1:
        raise UserError(f"trainer.batch_size={t.batch_size} is invalid; use a whole number >= 1")
    if not t.lr > 0:
        raise UserError(f"trainer.lr={t.lr} is invalid; use a number > 0")
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise UserError(f"device={cfg.device!r} is invalid; choose one of: auto, cpu, cuda")
    if str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={cfg.device} was asked for but no CUDA device is available; use device=cpu or auto")
    if cfg.dataset.name not in datasets:
        what = "the MNIST models take" if datasets == IMAGE_DATASETS else f"task={cfg.task} (model={cfg.model.name}) takes"
        hint = DATASET_USERS.get(cfg.dataset.name)
        raise UserError(f"dataset={cfg.dataset.name} cannot be used here; {what} "
                        f"dataset={' or dataset='.join(datasets)}" + (f" (dataset={cfg.dataset.name} is for {hint})" if hint else ""))
    spec = solver_spec(cfg)
    backprop_through_solver = cfg.model.name == "rknet" or not cfg.model.get("adjoint", True)
    if spec.method == "scipy_solver" and cfg.model.name in ODE_MODELS and backprop_through_solver:
        raise UserError("solver=scipy_solver gives no gradients to backpropagate through; use it with "
                        "model=odenet model.adjoint=true, or choose a torchdiffeq solver")


def choose_device(name: str) -> torch.device:
    """Return the torch device for device=auto|cpu|cuda[:N]."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def key_config(cfg: DictConfig) -> dict[str, Any]:
    """Return the part of the config that determines a run's results (hashed into its run key)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in _NOT_IN_KEY:
        plain.pop(key, None)
    plain["trainer"].pop("progress", None)
    plain["trainer"].pop("measure_step", None)
    for key in _DATASET_KEYS_NOT_IN_KEY:
        plain["dataset"].pop(key, None)
    return plain


def load_data(cfg: DictConfig, device: torch.device) -> ImageData:
    """Return the run's image data with every split on `device`."""
    d = cfg.dataset
    data = load_image_data(d.name, Path(str(d.root)).expanduser(), val_size=d.val_size,
                           train_size=d.get("train_size"), test_size=d.get("test_size"),
                           sources=tuple(d.get("sources") or ()))
    data.train, data.test = data.train.to(device), data.test.to(device)
    data.val = data.val.to(device) if data.val is not None else None
    return data


class _Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into an exception so the run can record itself before it stops."""


def _raise_interrupted(signum, frame):
    raise _Interrupted(f"received signal {signum}")


def install_sigterm_handler() -> None:
    """Turn SIGTERM into an exception (in the main thread), so a run or task records itself before it stops."""
    try:
        signal.signal(signal.SIGTERM, _raise_interrupted)
    except ValueError:  # not the main thread (a launcher's worker): the launcher handles signals
        pass


@contextmanager
def _sigterm_deferred():
    """Hold SIGTERM back while the block runs (in the main thread), delivering it afterwards."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    except (AttributeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _resume_dir(cfg: DictConfig, run_dir: Path, key: str) -> Path | None:
    """Return the earlier run directory to continue in, or None to start afresh in run_dir."""
    if cfg.resume in (False, None, "false"):
        return None
    if cfg.resume is True or cfg.resume == "true":
        return find_previous_run(Path(str(cfg.paths.output_root)), key, exclude=run_dir)
    path = Path(str(cfg.resume)).expanduser()
    if not (path / LAST_CHECKPOINT).exists() and not (path / "summary.json").exists():
        raise UserError(f"resume={cfg.resume}: no run directory with a checkpoint there; pass resume=true "
                        f"to find the run with this config, or the path of a run directory")
    return path


class Run:
    """A training run writing into one directory; `execute` returns the process exit code."""

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: list[str]):
        self.cfg = cfg
        self.run_dir = run_dir
        self.overrides = overrides
        self.records: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.summary: dict[str, Any] = {}

    def execute(self) -> int:
        """Validate, train, evaluate and record; never lets an error leave the run undocumented."""
        return run_guarded(self._start, self._finish)

    def _start(self) -> int:
        key = run_key(key_config(self.cfg))
        self.summary = self._initial_summary(key)
        validate_config(self.cfg)
        previous = _resume_dir(self.cfg, self.run_dir, key)
        if previous is not None:
            # The new directory points to the run it stands for, so a sweep's report still finds it.
            write_run_link(self.run_dir, previous)
            if read_summary_status(previous) == "completed":
                log.info("resume: this run already completed in %s; nothing to do", previous)
                return EXIT_OK
            log.info("resume: continuing the run in %s", previous)
            self.run_dir = previous
            _log_also_to(previous / "noderun.log")
        return self._train()

    def _initial_summary(self, key: str) -> dict[str, Any]:
        cfg = self.cfg
        ode = cfg.model.name in ODE_MODELS
        return {
            "task": "train",
            "model": cfg.model.name,
            "solver": cfg.solver.method if ode else None,
            "rtol": cfg.solver.rtol if ode else None,
            "atol": cfg.solver.atol if ode else None,
            "step_size": cfg.solver.get("step_size") if ode else None,
            "adjoint": bool(cfg.model.get("adjoint", False)) if cfg.model.name == "odenet" else False,
            "adjoint_norm": cfg.solver.get("adjoint_norm") if ode else None,
            "downsampling": cfg.model.get("downsampling"),
            "seed": cfg.seed,
            "dataset": cfg.dataset.name,
            "train_size": None, "val_size": cfg.dataset.get("val_size"), "test_size": None,
            "device": None,
            "torch_version": torch.__version__,
            "torchdiffeq_version": torchdiffeq.__version__,
            "python_version": platform.python_version(),
            "params": None,
            "epochs": cfg.trainer.epochs,
            "epochs_done": 0,
            "best_epoch": None, "selected_by": None,
            "test_error": None, "val_error": None, "final_test_error": None,
            "nfe_forward": None, "nfe_backward": None, "nfe_forward_eval": None,
            "train_time_s": None, "peak_memory_mb": None, "peak_memory_kind": None,
            "saved_mb": None, "flops_per_step": None, "achieved_gflops": None,
            "status": "running", "reason": None,
            "run_key": key,
            "overrides": self.overrides,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "finished": None,
        }

    def _train(self) -> int:
        cfg, t = self.cfg, self.cfg.trainer
        install_sigterm_handler()
        device = choose_device(str(cfg.device))
        data = load_data(cfg, device)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model.name, solver_spec(cfg), cfg.model.get("downsampling", "conv"),
                            t1=cfg.model.get("t1", 1.0), adjoint=cfg.model.get("adjoint", True)).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                                    weight_decay=t.weight_decay)
        params = count_parameters(model)
        self.summary.update(device=str(device), torch_threads=torch.get_num_threads(), params=params, train_size=len(data.train),
                            test_size=len(data.test), data_source=data.source,
                            peak_memory_kind="cuda_max_allocated" if device.type == "cuda" else "cpu_max_rss")
        log.info("model %s: %d parameters (%.3f M); data %s from %s: %d train, %d val, %d test; device %s",
                 cfg.model.name, params, params / 1e6, cfg.dataset.name, data.source, len(data.train),
                 len(data.val) if data.val else 0, len(data.test), device)
        start_epoch = self._restore(model, optimizer, device)
        write_summary(self.run_dir, self.summary)
        counter = NFECounter(model)
        num_batches = -(-len(data.train) // t.batch_size)
        padding = cfg.dataset.crop_padding if cfg.dataset.augment else 0
        for epoch in range(start_epoch, t.epochs):
            lr = lr_at_epoch(t.lr, epoch, t.epochs, t.lr_decay_fractions, t.lr_decay_factor)
            for group in optimizer.param_groups:
                group["lr"] = lr
            reset_peak_memory(device)
            batches = training_batches(data.train, t.batch_size, epoch_generator(cfg.seed, epoch), padding)
            stats = train_epoch(model, optimizer, batches, num_batches, counter,
                                f"epoch {epoch + 1}/{t.epochs}", bool(t.progress), bool(t.get("measure_step", True)))
            row = self._evaluate(model, data, counter, epoch, lr, stats, device)
            self._record_epoch(model, optimizer, row)
        return self._finish("completed", None, EXIT_OK)

    def _evaluate(self, model, data: ImageData, counter: NFECounter, epoch: int, lr: float, stats,
                  device: torch.device) -> dict[str, Any]:
        start = time.perf_counter()
        batch = self.cfg.trainer.eval_batch_size
        val_acc = evaluate(model, data.val, batch, counter)[0] if data.val is not None else None
        test_acc, nfe_eval, test_forward_s = evaluate(model, data.test, batch, counter)
        row = {
            "epoch": epoch + 1, "lr": lr, "train_loss": round(stats.loss, 6), "train_acc": round(stats.accuracy, 6),
            "val_acc": None if val_acc is None else round(val_acc, 6), "test_acc": round(test_acc, 6),
            "nfe_forward": round(stats.nfe_forward, 4), "nfe_backward": round(stats.nfe_backward, 4),
            "nfe_forward_eval": round(nfe_eval, 4), "test_forward_s": round(test_forward_s, 5),
            "epoch_time_s": round(stats.time_s, 3),
            "eval_time_s": round(time.perf_counter() - start, 3), "peak_memory_mb": round(peak_memory_mb(device), 1),
            "saved_mb": round(stats.saved_bytes / 2**20, 3) if stats.flops else None,
            "flops_per_step": stats.flops or None,
        }
        log.info("epoch %d: lr %.4g loss %.4f train acc %.4f val acc %s test acc %.4f NFE-F %.1f NFE-B %.1f "
                 "time %.1fs + eval %.1fs", row["epoch"], lr, stats.loss, stats.accuracy,
                 "-" if val_acc is None else f"{val_acc:.4f}", test_acc, stats.nfe_forward, stats.nfe_backward,
                 stats.time_s, row["eval_time_s"])
        return row

    def _record_epoch(self, model, optimizer, row: dict[str, Any]) -> None:
        """Append the epoch's row, update best, and write checkpoints, metrics and summary.

        The checkpoint goes first, so every row of metrics.csv has a checkpoint behind it, and
        SIGTERM waits until all of them are written.
        """
        self.records.append(row)
        # Model selection looks at validation accuracy only; without a validation split the last epoch counts.
        score = row["val_acc"] if row["val_acc"] is not None else row["epoch"]
        is_best = self.best is None or score > self.best["score"]
        if is_best:
            self.best = {"epoch": row["epoch"], "score": score}
        state = {"epoch": row["epoch"], "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "records": self.records, "best": self.best, "run_key": self.summary["run_key"]}
        with _sigterm_deferred():
            if is_best:
                save_checkpoint(self.run_dir / BEST_CHECKPOINT, {**state, "optimizer": None})
            save_checkpoint(self.run_dir / LAST_CHECKPOINT, state)
            write_metrics(self.run_dir, self.records)
            self._update_summary_from_records()
            write_summary(self.run_dir, self.summary)

    def _restore(self, model, optimizer, device: torch.device) -> int:
        """Load the last checkpoint if this run directory has one; return the epoch to start from."""
        path = self.run_dir / LAST_CHECKPOINT
        if not path.exists():
            return 0
        state = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        self.records, self.best = list(state["records"]), state["best"]
        log.info("resume: restored epoch %d from %s", state["epoch"], path)
        self._update_summary_from_records()
        return int(state["epoch"])

    def _update_summary_from_records(self) -> None:
        if not self.records:
            return
        last = self.records[-1]
        best = self.records[self.best["epoch"] - 1]
        self.summary.update(
            epochs_done=last["epoch"], best_epoch=best["epoch"],
            selected_by="val_acc" if best["val_acc"] is not None else "last_epoch",
            test_error=round(100 * (1 - best["test_acc"]), 4),
            val_error=None if best["val_acc"] is None else round(100 * (1 - best["val_acc"]), 4),
            final_test_error=round(100 * (1 - last["test_acc"]), 4),
            nfe_forward=last["nfe_forward"], nfe_backward=last["nfe_backward"],
            nfe_forward_eval=last["nfe_forward_eval"],
            train_time_s=round(sum(r["epoch_time_s"] for r in self.records), 3),
            peak_memory_mb=max(r["peak_memory_mb"] for r in self.records),
            saved_mb=last.get("saved_mb"), flops_per_step=last.get("flops_per_step"),
            achieved_gflops=self._achieved_gflops(last),
        )

    def _achieved_gflops(self, row: dict[str, Any]) -> float | None:
        """Return an epoch's FLOPs per second of training in GFLOP/s: its first step's FLOPs times its
        steps over its training time. Exact for fixed grids up to a smaller last batch; with adaptive
        solvers other steps' FLOPs differ with their NFE, so it is an estimate there."""
        if not row.get("flops_per_step") or not row["epoch_time_s"] or not self.summary.get("train_size"):
            return None
        steps = -(-self.summary["train_size"] // self.cfg.trainer.batch_size)
        return round(row["flops_per_step"] * steps / row["epoch_time_s"] / 1e9, 3)

    def _finish(self, status: str, reason: str | None, code: int, user_error: bool = False) -> int:
        record_end(self.run_dir, self.summary, status, reason, user_error)
        if status == "completed":
            log.info("run completed: test error %.2f%% at best epoch %s (by %s); written to %s",
                     self.summary["test_error"], self.summary["best_epoch"], self.summary["selected_by"],
                     self.run_dir)
        return code


def run_guarded(work: Callable[[], int], finish: Callable[..., int]) -> int:
    """Return work()'s exit code; when it raises, return finish(status, reason, code, user_error=...)'s.

    A UserError is the user's mistake (exit 2); a TrainingFailure, or any other error (a solver's,
    the library's: its traceback goes to the log file), a failure (exit 1); Ctrl-C or SIGTERM an
    interruption (exit 130).
    """
    try:
        return work()
    except UserError as err:
        return finish("failed", str(err), EXIT_USER_ERROR, user_error=True)
    except TrainingFailure as err:
        return finish("failed", str(err), EXIT_FAILED)
    except KeyboardInterrupt as err:
        return finish("interrupted", str(err) or "interrupted by the user", EXIT_INTERRUPTED)
    except Exception as err:  # a solver's or the library's own error: record it, don't lose the run
        log_to_file(logging.ERROR, "run failed", exc_info=True)
        return finish("failed", f"{type(err).__name__}: {err}", EXIT_FAILED)


def record_end(run_dir: Path, summary: dict[str, Any], status: str, reason: str | None,
               user_error: bool = False) -> None:
    """Say in one line on stderr why a run or task ended short of completion (the log keeps the
    details), and write its status, reason and end time into its summary.json."""
    if reason:
        print(f"noderun: {'error' if user_error else status}: {reason}", file=sys.stderr)
        log_to_file(logging.INFO, f"run {status}: {reason}")
    if summary:
        summary.update(status=status, reason=reason, finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        try:
            write_summary(run_dir, summary)
        except OSError as err:
            print(f"noderun: error: could not write {run_dir / 'summary.json'}: {err}", file=sys.stderr)


def _log_also_to(path: Path) -> None:
    """Append this process's log to an earlier run's log too, so that run's log tells its whole story."""
    handler = logging.FileHandler(path)
    for existing in logging.getLogger().handlers:
        if isinstance(existing, logging.FileHandler):
            handler.setFormatter(existing.formatter)
    logging.getLogger().addHandler(handler)


def log_to_file(level: int, message: str, exc_info: bool = False) -> None:
    """Log to the run's log file only: the terminal already got its one line."""
    record = log.makeRecord(log.name, level, __file__, 0, message, (), sys.exc_info() if exc_info else None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def read_summary_status(run_dir: Path) -> str | None:
    """Return the status recorded in a run directory's summary.json, or None if unreadable."""
    try:
        return read_summary(run_dir).get("status")
    except (OSError, ValueError):
        return None
