"""ImageNet-style image folders (``DIR/train/<class>/*``, ``DIR/val/<class>/*``) decoded with Pillow in DataLoader
workers, with the paper's preprocessing (section 4.1 and docs/alexnet.md).

For an input size S (227 for alexnet; the ratios stay the paper's 256:227 for other sizes):

- every image: shorter side resized to R = round(S * 256 / 227) (256), then the centre R x R crop;
- training: a random S x S crop, a horizontal flip with probability 1/2, PCA lighting noise (alpha ~ N(0, 0.1) per
  eigenvector, drawn once per image, with ImageNet's RGB eigenvalues and eigenvectors);
- evaluation: the centre S x S crop, or ten crops (four corners and the centre, each also mirrored) whose softmax
  outputs the evaluation averages;
- then per-channel mean subtraction; we also divide by the per-channel standard deviation (ImageNet's, as
  torchvision does) so torchvision's AlexNet weights apply unchanged.

A file Pillow cannot decode is skipped with a warning and counted; it never stops training.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tritonnet.data import Batch, Data, DataError, epoch_order, rank_slice

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp"}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# fb.resnet.torch datasets/imagenet.lua, on pixels in [0, 1]; the eigenvectors are the matrix's columns.
PCA_EIGENVALUES = np.array([0.2175, 0.0188, 0.0045], dtype=np.float32)
PCA_EIGENVECTORS = np.array([[-0.5675, 0.7192, 0.4009],
                             [-0.5808, -0.0045, -0.8140],
                             [-0.5836, -0.6948, 0.4203]], dtype=np.float32)
LIGHTING_STD = 0.1


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image folders needs Pillow: pip install -e '.[images]'") from None
    return Image


def scan_image_folder(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """``root/<class>/<image>`` -> (class names, [(path, class index)]). ``classes`` fixes the class list (the
    validation set uses the training set's)."""
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    found = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not found:
        raise DataError(f"{root} has no class sub-folders (expected {root}/<class>/<image>.jpg)")
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{root} has classes the training set lacks: {', '.join(unknown[:5])}")
    samples = [(str(path), index) for index, name in enumerate(classes) if (root / name).is_dir()
               for path in sorted((root / name).rglob("*"))
               if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()]
    if not samples:
        raise DataError(f"{root} holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return classes, samples


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The seed of the augmentation of the image at ``position`` of epoch ``epoch``'s order."""
    return ((seed * 1_000_003 + epoch) * 100_000_007 + position) % 2**63


class FolderDataset(Dataset):
    """Items are ``(index, seed)`` pairs (see :func:`sample_seed`); returns ``(image or None, label, path, error)``,
    None with the error when the file cannot be decoded. ``mode``: "train", "center" or "ten-crop"."""

    def __init__(self, samples: list[tuple[str, int]], input_size: int, mode: str):
        self.samples, self.input_size, self.mode = samples, input_size, mode
        self.resize = round(input_size * 256 / 227)

    def __len__(self) -> int:
        return len(self.samples)

    def _square(self, path: str):
        Image = _pillow()
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        width, height = image.size
        scale = self.resize / min(width, height)
        size = (max(self.resize, round(width * scale)), max(self.resize, round(height * scale)))
        image = image.resize(size, Image.BILINEAR)
        left, top = (size[0] - self.resize) // 2, (size[1] - self.resize) // 2
        return image.crop((left, top, left + self.resize, top + self.resize))

    def _normalise(self, image) -> np.ndarray:
        return (np.asarray(image, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        path, label = self.samples[index]
        try:
            square = self._square(path)
        except Exception as error:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
            return None, label, path, f"{type(error).__name__}: {error}"
        size, margin = self.input_size, self.resize - self.input_size
        if self.mode == "train":
            random = np.random.default_rng(seed)
            left, top = (int(offset) for offset in random.integers(0, margin + 1, size=2))
            crop = square.crop((left, top, left + size, top + size))
            if random.random() < 0.5:
                crop = crop.transpose(0)  # Image.FLIP_LEFT_RIGHT
            pixels = np.asarray(crop, dtype=np.float32) / 255.0
            alpha = random.normal(0.0, LIGHTING_STD, size=3).astype(np.float32)
            pixels = pixels + PCA_EIGENVECTORS @ (alpha * PCA_EIGENVALUES)
            pixels = (pixels - IMAGENET_MEAN) / IMAGENET_STD
            return torch.from_numpy(pixels.transpose(2, 0, 1).copy()), label, path, None
        centre = margin // 2
        if self.mode == "center":
            crop = square.crop((centre, centre, centre + size, centre + size))
            return torch.from_numpy(self._normalise(crop).transpose(2, 0, 1).copy()), label, path, None
        corners = [(0, 0), (margin, 0), (0, margin), (margin, margin), (centre, centre)]
        crops = [square.crop((left, top, left + size, top + size)) for left, top in corners]
        crops += [crop.transpose(0) for crop in crops]
        stacked = np.stack([self._normalise(crop).transpose(2, 0, 1) for crop in crops])
        return torch.from_numpy(stacked), label, path, None


def collate(items) -> tuple[torch.Tensor | None, torch.Tensor, list[tuple[str, str]]]:
    """Stack the decodable images; report the others as ``[(path, error)]``."""
    good = [(image, label) for image, label, _, _ in items if image is not None]
    corrupt = [(path, error) for image, _, path, error in items if image is None]
    images = torch.stack([image for image, _ in good]) if good else None
    return images, torch.tensor([label for _, label in good], dtype=torch.int64), corrupt


def _warn_to_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def folder_data(root: str | Path, input_size: int, device: torch.device, seed: int, *,
                train_subset: int | None = None, val_subset: int | None = None, workers: int = 4,
                ten_crop: bool = False, augment: bool = True,
                warn: Callable[[str], None] = _warn_to_stderr) -> Data:
    """:class:`Data` over ``root/train/<class>/*`` and ``root/val/<class>/*``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if not (root / "train").is_dir():
        raise DataError(f"{root} has no train/ sub-folder (expected {root}/train/<class>/*.jpg and "
                        f"{root}/val/<class>/*.jpg)")
    classes, train_samples = scan_image_folder(root / "train")
    _, val_samples = scan_image_folder(root / "val", classes)
    train_samples, val_samples = train_samples[:train_subset], val_samples[:val_subset]
    train_set = FolderDataset(train_samples, input_size, "train" if augment else "center")
    val_set = FolderDataset(val_samples, input_size, "ten-crop" if ten_crop else "center")
    corrupt_count = [0]

    def load(dataset: FolderDataset, batches: list[list[tuple[int, int]]]) -> Iterator[Batch]:
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                            pin_memory=device.type == "cuda")
        for images, labels, corrupt in loader:
            for path, error in corrupt:
                corrupt_count[0] += 1
                warn(f"skipped corrupt image {path} ({error}); {corrupt_count[0]} skipped so far")
            if images is None:
                images = torch.empty(0, *((10,) if dataset.mode == "ten-crop" else ()), 3, input_size, input_size)
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def train_batches(epoch: int, start_step: int, batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        order = epoch_order(seed, epoch, len(train_samples)).tolist()
        mine = rank_slice(batch_size, rank, world_size)
        batches = [[(order[position], sample_seed(seed, epoch, position))
                    for position in range(step * batch_size, (step + 1) * batch_size)][mine]
                   for step in range(start_step, len(train_samples) // batch_size)]
        yield from load(train_set, batches)

    def val_batches(batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        share = -(-len(val_samples) // world_size)
        mine = range(rank * share, min(len(val_samples), (rank + 1) * share))
        batches = [[(index, 0) for index in mine[start:start + batch_size]]
                   for start in range(0, len(mine), batch_size)]
        yield from load(val_set, batches)

    description = (f"image folders {root}: {len(train_samples):,} training and {len(val_samples):,} validation "
                   f"images, {len(classes)} classes")
    return Data("folders", description, len(classes), len(train_samples), len(val_samples), train_batches,
                val_batches, corrupt_images=lambda: corrupt_count[0])
