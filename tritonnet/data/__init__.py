"""Data for training AlexNet: Fashion-MNIST (shipped slice or full set), ImageNet-style folders, synthetic images.

Every source gives the training loop the same thing (:class:`Data`): batches already on the device, at the model's
input size, normalised. Batches are cut from one permutation per epoch drawn from ``(seed, epoch)``, and every
random choice of augmentation is drawn from ``(seed, epoch, position)``. So the order and the augmentation do not
depend on how many ranks or DataLoader workers there are, and a run resumed in the middle of an epoch sees exactly
the batches it would have seen.

With several ranks, each global batch is split into equal contiguous parts, one per rank (rank r takes
``[r * batch / world, (r + 1) * batch / world)``): averaging the ranks' gradients gives the one-process gradient.

- :func:`fashion_mnist_data` (:mod:`tritonnet.data.fashion_mnist`): IDX files held in memory on the device.
- :func:`synthetic_data`: random images, for throughput runs.
- :func:`folder_data` (:mod:`tritonnet.data.folders`): ``DIR/train/<class>/*`` and ``DIR/val/<class>/*`` decoded
  with Pillow in DataLoader workers, with the paper's preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class DataError(Exception):
    """A problem with the data the user pointed at (missing folder, no images, ...): shown as one line."""


def epoch_order(seed: int, epoch: int, size: int) -> torch.Tensor:
    """The permutation of ``range(size)`` that epoch ``epoch`` visits (the same on every rank)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator)


def augmentation_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The generator for the random augmentation choices of one global batch."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + step)


def rank_slice(global_batch: int, rank: int, world_size: int) -> slice:
    """The part of a global batch that ``rank`` trains on."""
    local = global_batch // world_size
    return slice(rank * local, (rank + 1) * local)


@dataclass
class Data:
    """A training set and a validation set, as batches on the device.

    ``train_batches(epoch, start_step, batch_size, rank, world_size)`` yields the local (this rank's) part of the
    global batches ``start_step, start_step + 1, ...`` of ``epoch`` (the last partial batch is dropped);
    ``val_batches(batch_size, rank, world_size)`` yields this rank's share of the validation set, each image once
    across ranks. Validation images are (N, C, H, W), or (N, crops, C, H, W) for ten-crop evaluation.
    """

    name: str
    description: str
    num_classes: int
    train_size: int
    val_size: int
    train_batches: Callable[[int, int, int, int, int], Iterator[Batch]]
    val_batches: Callable[[int, int, int], Iterator[Batch]]
    corrupt_images: Callable[[], int] = lambda: 0

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.train_size // batch_size


from tritonnet.data.fashion_mnist import (  # noqa: E402  (they use the helpers above)
    FASHION_MNIST_CLASSES, FASHION_MNIST_SYSTEM_DIR, SHIPPED_DIR, cut_fashion_mnist_slice, fashion_mnist_data,
    find_idx_files, read_idx, synthetic_data, write_idx,
)
from tritonnet.data.folders import folder_data  # noqa: E402


def build_data(source: str | None, input_size: int, device: torch.device, seed: int, *, train_subset: int | None = None,
               val_subset: int | None = None, workers: int = 4, ten_crop: bool = False,
               augment: bool = True, warn: Callable[[str], None] | None = None) -> Data:
    """The data for ``--data``: None (Fashion-MNIST: the full set when installed, else the shipped slice),
    ``"synthetic"``, a folder of IDX files, or an ImageNet-style folder. ``train_subset`` and ``val_subset``, when
    given, keep the first N images (N at least 1)."""
    for name, subset in (("train_subset", train_subset), ("val_subset", val_subset)):
        if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
            raise ValueError(f"{name} must be a positive number of images or None, got {subset!r}")
    if source == "synthetic":
        return synthetic_data(input_size, device, seed, train_subset=train_subset, val_subset=val_subset)
    if source is None or find_idx_files(source) is not None:
        return fashion_mnist_data(source, input_size, device, seed, train_subset=train_subset,
                                  val_subset=val_subset, augment=augment)
    extra = {} if warn is None else {"warn": warn}
    return folder_data(source, input_size, device, seed, train_subset=train_subset, val_subset=val_subset,
                       workers=workers, ten_crop=ten_crop, augment=augment, **extra)


__all__ = ["Batch", "Data", "DataError", "FASHION_MNIST_CLASSES", "FASHION_MNIST_SYSTEM_DIR", "SHIPPED_DIR",
           "augmentation_generator", "build_data", "cut_fashion_mnist_slice", "epoch_order", "fashion_mnist_data",
           "find_idx_files", "folder_data", "rank_slice", "read_idx", "synthetic_data", "write_idx"]
