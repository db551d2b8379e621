"""`noderun experiment=ecg dataset.path=FILE`: the tutorial's (shared/seeds/002, section 6) MIT-BIH
heartbeat classification, a 1-D convolutional ResNet against an ODE-Net built alike, trained with
SGD and momentum on the cross entropy; per-epoch training and test loss (its Figures 13-14), test
accuracy and confusion matrices, ours beside the tutorial's.

The test set is dataset.test_path when given, else a seeded random `test_fraction` of the file.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn

from noderun.data.batches import epoch_generator, shuffled_batch_indices
from noderun.data.ecg import NUM_CLASSES, load_ecg_csv
from noderun.errors import UserError
from noderun.run.recorder import RunRecorder
from noderun.measure import NFECounter, peak_memory_mb, reset_peak_memory
from noderun.models import count_parameters
from noderun.models.ecg import ECG_MODELS, build_ecg_model
from noderun.solvers import solver_spec
from noderun.experiments.common import task_settings
from noderun.train import TrainingFailure, train_epoch

log = logging.getLogger("noderun")

CONFUSION_FILE = "ecg_confusion.csv"
CLASS_NAMES = ("normal", "supraventricular", "ventricular", "fusion", "unclassified")


def seeded_subset(signals: torch.Tensor, labels: torch.Tensor, size: int | None, seed: int):
    """Return a random `size` rows (all when None), drawn from the seed: the real files are sorted by
    class, so their first rows would hold one class only."""
    if size is None or size >= len(labels):
        return signals, labels
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:size]
    return signals[keep], labels[keep]


def load_splits(cfg: DictConfig, settings: DictConfig) -> tuple[tuple, tuple]:
    """Return ((train signals, labels), (test signals, labels)) from the dataset's files and the caps."""
    d = cfg.dataset
    if d.name != "ecg":
        raise UserError(f"task=ecg needs dataset=ecg, not dataset={d.name}; run it as experiment=ecg dataset.path=FILE")
    if d.get("path") is None or str(d.path) in ("", "???"):
        raise UserError("experiment=ecg needs the MIT-BIH training CSV: add dataset.path=FILE (and dataset.test_path=FILE)")
    signals, labels = load_ecg_csv(Path(str(d.path)))
    seed = int(cfg.seed)
    if d.get("test_path"):
        train, test = (signals, labels), load_ecg_csv(Path(str(d.test_path)))
    else:
        fraction = float(settings.test_fraction)
        if not 0 < fraction < 1:
            raise UserError(f"ecg.test_fraction={fraction} is invalid; use a number between 0 and 1")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        n_test = max(1, round(fraction * len(labels)))
        if n_test >= len(labels):
            raise UserError(f"{d.path} has {len(labels)} rows: too few to hold out a test split")
        test, train = (signals[order[:n_test]], labels[order[:n_test]]), (signals[order[n_test:]], labels[order[n_test:]])
    return (seeded_subset(*train, settings.get("train_size"), seed),
            seeded_subset(*test, settings.get("test_size"), seed + 1))


def signal_batches(signals: torch.Tensor, labels: torch.Tensor, batch_size: int,
                   generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield shuffled (signals, labels) batches."""
    for index in shuffled_batch_indices(len(labels), batch_size, generator, labels.device):
        yield signals[index], labels[index]


@torch.no_grad()
def test_predictions(model: nn.Module, signals: torch.Tensor, labels: torch.Tensor,
                     batch_size: int) -> tuple[float, torch.Tensor]:
    """Return (mean cross entropy, predicted classes) of the model over the test signals."""
    model.eval()
    loss, predicted = 0.0, []
    for start in range(0, len(labels), batch_size):
        logits = model(signals[start : start + batch_size])
        loss += float(nn.functional.cross_entropy(logits, labels[start : start + batch_size], reduction="sum"))
        predicted.append(logits.argmax(1))
    return loss / len(labels), torch.cat(predicted)


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Return the NUM_CLASSES × NUM_CLASSES counts: row = true class, column = predicted class."""
    flat = labels.cpu() * NUM_CLASSES + predicted.cpu()
    return torch.bincount(flat, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def train_model(name: str, cfg: DictConfig, settings: DictConfig, train: tuple, test: tuple,
                device: torch.device, on_epoch, resume: dict[str, Any] | None = None) -> tuple[torch.Tensor | None, str | None]:
    """Train one model for the settings' epochs (from `resume`'s epoch when given: the state on_epoch
    saved), calling on_epoch(row, model, optimizer) after each; return its final confusion matrix, or
    (None, reason) when training stopped (loss not finite, solver gave up)."""
    torch.manual_seed(int(cfg.seed))
    model = build_ecg_model(name, solver_spec(cfg), int(settings.channels), adjoint=bool(settings.adjoint)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(settings.lr), momentum=float(settings.momentum))
    first = 1
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        first = int(resume["epoch"]) + 1
    counter, batch_size, epochs = NFECounter(model), int(settings.batch_size), int(settings.epochs)
    for epoch in range(first, epochs + 1):
        reset_peak_memory(device)
        batches = signal_batches(*train, batch_size, epoch_generator(int(cfg.seed), epoch))
        try:
            stats = train_epoch(model, optimizer, batches, math.ceil(len(train[1]) / batch_size), counter,
                                f"{name} epoch {epoch}/{epochs}", bool(cfg.trainer.progress), measure=False,
                                lr_key="ecg.lr")
        except (TrainingFailure, AssertionError) as error:  # AssertionError: torchdiffeq's underflow in dt
            return None, f"epoch {epoch}: {error}"
        test_loss, predicted = test_predictions(model, *test, int(settings.eval_batch_size))
        accuracy = int((predicted == test[1]).sum()) / len(test[1])  # exact, not a float32 mean
        on_epoch({"model": name, "epoch": epoch, "train_loss": stats.loss, "train_accuracy": stats.accuracy,
                  "test_loss": test_loss, "test_accuracy": accuracy, "nfe_forward": stats.nfe_forward,
                  "nfe_backward": stats.nfe_backward, "epoch_time_s": round(stats.time_s, 2),
                  "peak_memory_mb": round(peak_memory_mb(device), 1), "params": count_parameters(model)},
                 model, optimizer)
        log.info("ecg %s epoch %d: train loss %.4f, test loss %.4f, test accuracy %.2f %%", name, epoch,
                 stats.loss, test_loss, 100 * accuracy)
    return confusion_matrix(test[1], test_predictions(model, *test, int(settings.eval_batch_size))[1]), None


def confusion_table(matrices: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Return the confusion matrices in long form: model, true class, predicted class, count."""
    return pd.DataFrame([{"model": name, "true": i, "predicted": j, "count": int(matrix[i, j])}
                         for name, matrix in matrices.items() for i in range(NUM_CLASSES) for j in range(NUM_CLASSES)])


def markdown_report(metrics: pd.DataFrame, matrices: dict[str, torch.Tensor], failures: dict[str, str],
                    sizes: tuple[int, int], seed_document: DictConfig) -> str:
    """Return the final accuracy and test loss beside the tutorial's, and every confusion matrix."""
    lines = [f"{sizes[0]:,} training and {sizes[1]:,} test beats. Last epoch, ours beside the tutorial's "
             "(its 25 epochs on about 87,554 / 21,892 beats):", "",
             "| model | epochs | test accuracy % (ours) | (tutorial) | test loss (ours) | (tutorial) | NFE-F | NFE-B | s/epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in metrics["model"].unique() if len(metrics) else []:
        last = metrics[metrics["model"] == name].iloc[-1]
        theirs = seed_document.get(name, {})
        lines.append(f"| {name} | {last['epoch']} | {100 * last['test_accuracy']:.2f} | {theirs.get('accuracy', '')} | "
                     f"{last['test_loss']:.4f} | {theirs.get('test_loss', '')} | {last['nfe_forward']:.1f} | "
                     f"{last['nfe_backward']:.1f} | {last['epoch_time_s']:.1f} |")
    lines += [f"| {name} | failed: {reason} | | | | | | | |" for name, reason in failures.items()]
    for title, source in (("ours", {n: m.tolist() for n, m in matrices.items()}),
                          ("the tutorial's", {n: list(map(list, b.confusion)) for n, b in seed_document.items()})):
        for name, matrix in source.items():
            lines += ["", f"Confusion matrix, {name}, {title} (row: true class, column: predicted):", "",
                      "| true \\ predicted | " + " | ".join(str(k) for k in range(NUM_CLASSES)) + " |",
                      "|---" * (NUM_CLASSES + 1) + "|"]
            lines += [f"| {k} {CLASS_NAMES[k]} | " + " | ".join(str(v) for v in row) + " |" for k, row in enumerate(matrix)]
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig, rec: RunRecorder) -> None:
    """Train each model, recording metrics.csv and a checkpoint after every epoch (a resumed run goes on
    from the last one); write ecg_confusion.csv, ecg.md and the figures."""
    from noderun.plotting.seeds import ecg_figures  # matplotlib only once needed

    device = rec.device
    settings = task_settings(cfg)
    names = list(settings.models)
    unknown = [n for n in names if n not in ECG_MODELS]
    if unknown or not names:
        raise UserError(f"ecg.models={names} is invalid; choose from: {', '.join(ECG_MODELS)}")
    train, test = load_splits(cfg, settings)
    train, test = tuple(t.to(device) for t in train), tuple(t.to(device) for t in test)
    rec.update(train_size=len(train[1]), test_size=len(test[1]), train_path=str(cfg.dataset.path),
               test_path=str(cfg.dataset.test_path) if cfg.dataset.get("test_path") else None)
    state = rec.restored() or {}
    # Models already trained to the end: their confusion matrix (None when they failed) and failure.
    finished: dict[str, dict[str, Any]] = dict(state.get("finished", {}))

    def on_epoch(row: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        current = {"name": row["model"], "epoch": row["epoch"], "model": model.state_dict(),
                   "optimizer": optimizer.state_dict()}
        rec.record_epoch(row, {"finished": finished, "current": current})

    for name in names:
        if name in finished:
            continue
        current = state.get("current")
        resume = current if current and current.get("name") == name else None
        matrix, reason = train_model(name, cfg, settings, train, test, device, on_epoch, resume)
        finished[name] = {"matrix": matrix, "reason": reason}
        rec.checkpoint({"finished": finished})
        if reason:
            log.warning("ecg %s stopped: %s", name, reason)
    matrices = {n: f["matrix"] for n, f in finished.items() if f["matrix"] is not None}
    failures = {n: f["reason"] for n, f in finished.items() if f["reason"]}
    metrics = pd.DataFrame(rec.rows)
    if rec.rows:
        rec.add_files("metrics.csv")
    if matrices:
        rec.write_file(CONFUSION_FILE, confusion_table(matrices))
    rec.write_file("ecg.md", markdown_report(metrics, matrices, failures, (len(train[1]), len(test[1])),
                                             settings.seed_document))
    rec.add_files(*(p.name for p in ecg_figures(metrics, matrices, settings.seed_document, rec.run_dir)))
    for name in matrices:
        last = metrics[metrics["model"] == name].iloc[-1]
        rec.summary[f"{name}_test_accuracy"] = float(last["test_accuracy"])
    rec.summary["failed_models"] = failures
    if len(failures) == len(names):
        raise TrainingFailure("; ".join(f"{n}: {r}" for n, r in failures.items()))
