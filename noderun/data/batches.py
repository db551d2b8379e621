"""In-memory image splits and batch iteration, with batched random-crop augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass
class ImageSplit:
    """Images as uint8 N×1×H×W and int64 labels, both held on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> "ImageSplit":
        """Return the split moved to `device`."""
        return ImageSplit(self.images.to(device), self.labels.to(device))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Scale uint8 pixels to floats in [0, 1], as torchvision's ToTensor does."""
    return images.float().div_(255.0)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Crop each image of a batch at its own random offset after zero-padding by `padding` pixels.

    Equivalent to torchvision's RandomCrop(size, padding) applied per sample, done for the whole
    batch with one gather.
    """
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device="cpu").to(images.device)
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)  # n×h
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)  # n×w
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Return the generator for one epoch's shuffling and augmentation.

    Seeding per epoch (not carrying one generator along) makes a resumed run draw exactly the
    batches an uninterrupted run would have drawn.
    """
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def shuffled_batch_indices(n: int, batch_size: int, generator: torch.Generator,
                           device: torch.device) -> Iterator[torch.Tensor]:
    """Yield the indices of each batch of one shuffled pass over n examples (a permutation drawn from
    generator when iteration starts), on device."""
    order = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def training_batches(split: ImageSplit, batch_size: int, generator: torch.Generator,
                     crop_padding: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield shuffled float batches of the split, randomly cropped when crop_padding > 0."""
    for index in shuffled_batch_indices(len(split), batch_size, generator, split.labels.device):
        images = split.images[index]
        if crop_padding > 0:
            images = random_crop(images, crop_padding, generator)
        yield to_float(images), split.labels[index]


def evaluation_batches(split: ImageSplit, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield the split's float batches in order, without augmentation."""
    for start in range(0, len(split), batch_size):
        yield to_float(split.images[start : start + batch_size]), split.labels[start : start + batch_size]
