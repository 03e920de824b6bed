"""Fashion-MNIST (Zalando, MIT licence) from IDX files, and synthetic images: data sets held in memory on the device.

Where the images come from, first match wins:

1. ``--data DIR`` holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
   ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]`` (Fashion-MNIST or MNIST);
2. the full set, 60,000 training and 10,000 test images, where Debian's ``dataset-fashion-mnist`` put it
   (``/usr/share/datasets/fashion-mnist``);
3. the slice shipped inside the package (``tritonnet/data``): the first 10,000 images of the official training
   split and the first 2,000 of the official test split, cut by :func:`cut_fashion_mnist_slice` (see NOTICE.md).

The test split is the held-out validation set; it is never trained on.

Images stay uint8 (N, 1, 28, 28) on the device; each batch is augmented and shaped there: random shifts of up to
2 pixels and horizontal flips when training, then padding to 32x32 (alexnet-small) or bilinear resizing to the
model's input (227 for alexnet), 3 channels, normalised with the training set's mean and standard deviation.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from tritonnet.data import Batch, Data, DataError, augmentation_generator, epoch_order, rank_slice

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
SHIPPED_DIR = Path(__file__).resolve().parent
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
# Over the 60,000 training images, pixels scaled to [0, 1].
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
SHIFT = 2  # pixels a training image moves at most, in each direction

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
               0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzip-compressed when its name ends in .gz) as a numpy array."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # a torn or corrupt gzip stream raises any of these
        raise DataError(f"cannot read IDX file {path}: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dims = [int.from_bytes(raw[4 + 4 * axis:8 + 4 * axis], "big") for axis in range(raw[3])]
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * len(dims)
    if len(raw) - offset != int(np.prod(dims)) * dtype.itemsize:
        raise DataError(f"{path} is truncated: its header promises shape {tuple(dims)}")
    return np.frombuffer(raw, dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 array as a gzip-compressed IDX file (reproducible bytes: no timestamp in the gzip header)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    path = Path(path)
    with open(path, "wb") as file, gzip.GzipFile(filename="", mode="wb", fileobj=file, compresslevel=9,
                                                 mtime=0) as compressed:
        compressed.write(header + array.tobytes())
    return path


def find_idx_files(directory: str | Path) -> dict[str, Path] | None:
    """The four IDX files in ``directory`` (plain or .gz), or None when it does not hold them all."""
    directory = Path(directory)
    found = {}
    for key, stem in IDX_FILES.items():
        candidates = [directory / f"{stem}.gz", directory / stem]
        found[key] = next((candidate for candidate in candidates if candidate.is_file()), None)
    return found if all(found.values()) else None


def cut_fashion_mnist_slice(source: str | Path = FASHION_MNIST_SYSTEM_DIR, destination: str | Path = SHIPPED_DIR,
                            train: int = 10_000, test: int = 2_000) -> None:
    """Write the first ``train`` training and first ``test`` test images (and labels) of the IDX set in ``source``
    to ``destination`` (how the shipped slice was made)."""
    files = find_idx_files(source)
    if files is None:
        raise DataError(f"no Fashion-MNIST IDX files in {source} (install it: apt-get install dataset-fashion-mnist)")
    counts = {"train": train, "test": test}
    for key, path in files.items():
        write_idx(Path(destination) / f"{IDX_FILES[key]}.gz", read_idx(path)[:counts[key.split("_")[0]]])


def _idx_source(directory: str | Path | None) -> tuple[dict[str, Path], str]:
    if directory is not None:
        files = find_idx_files(directory)
        if files is None:
            raise DataError(f"{directory} holds no IDX data set (expected {', '.join(IDX_FILES.values())}, "
                            f"optionally .gz)")
        return files, str(directory)
    for candidate, label in ((FASHION_MNIST_SYSTEM_DIR, str(FASHION_MNIST_SYSTEM_DIR)),
                             (SHIPPED_DIR, "the slice shipped in tritonnet/data")):
        files = find_idx_files(candidate)
        if files is not None:
            return files, label
    raise DataError(f"the Fashion-MNIST slice is missing from {SHIPPED_DIR} (reinstall tritonnet)")


def _images_and_labels(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{images_path} and {labels_path} do not hold matching images (N, H, W) and labels (N,)")
    if len(images) == 0:
        raise DataError(f"{images_path} holds no images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{labels_path} holds {labels.dtype} labels; class indices must be integers")
    if labels.min() < 0:
        index = int(np.argmin(labels))
        raise DataError(f"{labels_path} holds the negative label {labels[index]} (image {index}); class indices "
                        f"are 0, 1, ...")
    return images, labels.astype(np.int64)


def count_classes(train_labels: np.ndarray, train_path: Path, test_labels: np.ndarray, test_path: Path) -> int:
    """The number of classes K: labels are the class indices 0..K-1, each of them held by some training image
    (a gap, such as a stray 255 among 0-9, would silently add classes no image teaches)."""
    present = np.bincount(train_labels)
    missing = np.flatnonzero(present == 0)
    if len(missing):
        raise DataError(f"{train_path} has labels up to {len(present) - 1} but no training image of class "
                        f"{missing[0]}{f' (nor of {len(missing) - 1} more)' if len(missing) > 1 else ''}: labels "
                        f"must be the class indices 0..K-1")
    if test_labels.max() >= len(present):
        index = int(np.argmax(test_labels))
        raise DataError(f"{test_path} holds the label {test_labels[index]} (image {index}), but the training labels "
                        f"are 0..{len(present) - 1}")
    return len(present)


def shape_batch(images: torch.Tensor, input_size: int, mean: float, std: float,
                flips: torch.Tensor | None = None, shifts: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float (N, 3, input_size, input_size), normalised.

    ``shifts`` (N, 2) in [0, 2 * SHIFT] moves each image (zero fill); ``flips`` (N,) bool mirrors it. Small inputs
    are padded (28 -> 32, centred), large ones resized bilinearly (28 -> 227).
    """
    pixels = images.float().div_(255.0)
    count, _, height, width = pixels.shape
    if shifts is not None:
        padded = F.pad(pixels, (SHIFT, SHIFT, SHIFT, SHIFT))
        rows = shifts[:, 0, None] + torch.arange(height, device=pixels.device)
        columns = shifts[:, 1, None] + torch.arange(width, device=pixels.device)
        batch_index = torch.arange(count, device=pixels.device)[:, None, None]
        pixels = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], columns[:, None, :]].permute(0, 3, 1, 2)
    if flips is not None:
        pixels = torch.where(flips[:, None, None, None], pixels.flip(3), pixels)
    if input_size >= 2 * height:
        pixels = F.interpolate(pixels, size=(input_size, input_size), mode="bilinear", align_corners=False)
    elif input_size != height:
        top, left = (input_size - height) // 2, (input_size - width) // 2
        pixels = F.pad(pixels, (left, input_size - width - left, top, input_size - height - top))
    pixels = (pixels - mean) / std
    return pixels.expand(-1, 3, -1, -1).contiguous() if pixels.shape[1] == 1 else pixels.contiguous()


def in_memory_data(name: str, description: str, train: tuple[torch.Tensor, torch.Tensor],
                   val: tuple[torch.Tensor, torch.Tensor], num_classes: int, input_size: int, seed: int,
                   mean: float, std: float, augment: bool, train_size: int | None = None,
                   val_size: int | None = None) -> Data:
    """:class:`Data` over uint8 image tensors (N, C, H, W) and int64 labels already on the device. ``train_size``
    and ``val_size`` (default: N) may exceed N: image i is then image i mod N."""
    train_images, train_labels = train
    val_images, val_labels = val
    train_size, val_size = train_size or len(train_images), val_size or len(val_images)
    device = train_images.device

    def train_batches(epoch: int, start_step: int, batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        # Host-to-device copies are non-blocking: a blocking one would wait for the GPU to finish the last step.
        order = epoch_order(seed, epoch, train_size).to(device, non_blocking=True) % len(train_images)
        mine = rank_slice(batch_size, rank, world_size)
        for step in range(start_step, train_size // batch_size):
            indices = order[step * batch_size:(step + 1) * batch_size][mine]
            flips = shifts = None
            if augment:
                generator = augmentation_generator(seed, epoch, step)
                flips = (torch.rand(batch_size, generator=generator) < 0.5)[mine].to(device, non_blocking=True)
                shifts = torch.randint(0, 2 * SHIFT + 1, (batch_size, 2), generator=generator)[mine].to(
                    device, non_blocking=True)
            yield shape_batch(train_images[indices], input_size, mean, std, flips, shifts), train_labels[indices]

    def val_batches(batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        share = -(-val_size // world_size)
        for start in range(rank * share, min(val_size, (rank + 1) * share), batch_size):
            stop = min(start + batch_size, (rank + 1) * share, val_size)
            indices = torch.arange(start, stop, device=device) % len(val_images)
            yield shape_batch(val_images[indices], input_size, mean, std), val_labels[indices]

    return Data(name, description, num_classes, train_size, val_size, train_batches, val_batches)


def fashion_mnist_data(directory: str | Path | None, input_size: int, device: torch.device, seed: int, *,
                       train_subset: int | None = None, val_subset: int | None = None, augment: bool = True) -> Data:
    """Fashion-MNIST (or any IDX set of 28x28 grey images) from ``directory``, or found as the module docstring
    says, held on ``device``."""
    files, source = _idx_source(directory)
    train = _images_and_labels(files["train_images"], files["train_labels"])
    test = _images_and_labels(files["test_images"], files["test_labels"])
    num_classes = count_classes(train[1], files["train_labels"], test[1], files["test_labels"])
    train, test = tuple(part[:train_subset] for part in train), tuple(part[:val_subset] for part in test)
    description = (f"Fashion-MNIST from {source}: {len(train[0]):,} training images, {len(test[0]):,} held-out test "
                   f"images, {num_classes} classes")

    def on_device(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(images[:, None].copy()).to(device), torch.from_numpy(labels).to(device)

    return in_memory_data("fashion-mnist", description, on_device(*train), on_device(*test), num_classes, input_size,
                          seed, FASHION_MNIST_MEAN, FASHION_MNIST_STD, augment)


def synthetic_data(input_size: int, device: torch.device, seed: int, *, num_classes: int = 1000,
                   train_subset: int | None = None, val_subset: int | None = None) -> Data:
    """Random images and labels at the model's input size, for throughput runs (nothing to learn). 256 distinct
    images, repeated: 25,600 per training epoch and 2,560 for validation unless subsets say otherwise."""
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randint(0, 256, (256, 3, input_size, input_size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, num_classes, (256,), generator=generator)
    train_count, val_count = train_subset or 25_600, val_subset or 2_560
    description = (f"synthetic: random {input_size}x{input_size} images, {train_count:,} per epoch, "
                   f"{num_classes} classes")
    pool, labels = pool.to(device), labels.to(device)
    return in_memory_data("synthetic", description, (pool, labels), (pool, labels), num_classes, input_size, seed,
                          0.5, 0.29, augment=False, train_size=train_count, val_size=val_count)
