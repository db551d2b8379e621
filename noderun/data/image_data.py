"""MNIST-style datasets as fixed train / validation / test splits held in memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from noderun.data.batches import ImageSplit
from noderun.data.sources import load_image_dataset
from noderun.errors import UserError


@dataclass
class ImageData:
    """The three splits of an image classification dataset and where they came from."""

    train: ImageSplit
    val: ImageSplit | None
    test: ImageSplit
    source: str
    num_classes: int = 10


def _split(images: np.ndarray, labels: np.ndarray) -> ImageSplit:
    return ImageSplit(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def load_image_data(name: str, root: Path, val_size: int, train_size: int | None = None,
                    test_size: int | None = None, sources: tuple[str, ...] | None = None) -> ImageData:
    """Return the dataset's splits: the validation split is the last `val_size` official training
    images (the same for every model, seed and run); `train_size` and `test_size` cap the others."""
    if val_size < 0 or val_size >= 60_000:
        raise UserError(f"dataset.val_size={val_size} is invalid; use 0 (no validation split) to 59999")
    for key, value in (("train_size", train_size), ("test_size", test_size)):
        if value is not None and value < 1:
            raise UserError(f"dataset.{key}={value} is invalid; use a positive number or null for all")
    kwargs = {"sources": tuple(sources)} if sources else {}
    arrays, source = load_image_dataset(name, root, **kwargs)
    n_fit = len(arrays["train_labels"]) - val_size
    train = _split(arrays["train_images"][:n_fit][:train_size], arrays["train_labels"][:n_fit][:train_size])
    val = _split(arrays["train_images"][n_fit:], arrays["train_labels"][n_fit:]) if val_size else None
    test = _split(arrays["test_images"][:test_size], arrays["test_labels"][:test_size])
    return ImageData(train=train, val=val, test=test, source=source)
