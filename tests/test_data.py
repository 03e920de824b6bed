"""tritonnet.data: the shipped Fashion-MNIST slice, IDX files, batch shaping, epoch order, image folders."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from tritonnet.data import (
    FASHION_MNIST_SYSTEM_DIR, SHIPPED_DIR, DataError, build_data, epoch_order, find_idx_files, rank_slice, read_idx,
    write_idx,
)
from tritonnet.data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD, shape_batch
from tritonnet.data.folders import PCA_EIGENVALUES, PCA_EIGENVECTORS, FolderDataset, folder_data, scan_image_folder

CPU = torch.device("cpu")


def test_shipped_slice_keeps_the_official_splits_apart_with_its_notice():
    files = find_idx_files(SHIPPED_DIR)
    assert files is not None
    train_images, test_images = read_idx(files["train_images"]), read_idx(files["test_images"])
    train_labels, test_labels = read_idx(files["train_labels"]), read_idx(files["test_labels"])
    assert train_images.shape == (10_000, 28, 28) and test_images.shape == (2_000, 28, 28)
    assert train_images.dtype == np.uint8
    assert sorted(set(train_labels.tolist())) == list(range(10)) == sorted(set(test_labels.tolist()))
    assert min(np.bincount(test_labels)) >= 150  # every class is represented in the held-out images
    notice = (SHIPPED_DIR / "NOTICE.md").read_text()
    assert "Zalando SE" in notice and "MIT" in notice and "first 10,000" in notice and "first 2,000" in notice
    assert sum(path.stat().st_size for path in files.values()) < 6_000_000


@pytest.mark.skipif(find_idx_files(FASHION_MNIST_SYSTEM_DIR) is None,
                    reason="the full Fashion-MNIST set is not installed (apt-get install dataset-fashion-mnist)")
def test_shipped_slice_is_the_head_of_each_official_split():
    full, shipped = find_idx_files(FASHION_MNIST_SYSTEM_DIR), find_idx_files(SHIPPED_DIR)
    for key in full:
        part = read_idx(shipped[key])
        np.testing.assert_array_equal(part, read_idx(full[key])[:len(part)])


@pytest.mark.parametrize("shape", [(3,), (5, 4), (2, 3, 7)])
@pytest.mark.parametrize("compressed", [True, False])
def test_idx_round_trip(tmp_path, shape, compressed):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    path = write_idx(tmp_path / "a-idx.gz", array)
    if not compressed:
        plain = tmp_path / "a-idx"
        plain.write_bytes(gzip.decompress(path.read_bytes()))
        path = plain
    np.testing.assert_array_equal(read_idx(path), array)


def test_idx_reader_refuses_bad_files(tmp_path):
    (tmp_path / "magic").write_bytes(b"\x01\x02\x03\x04" + bytes(8))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "magic")
    full = write_idx(tmp_path / "full.gz", np.zeros((4, 5), dtype=np.uint8))
    (tmp_path / "short").write_bytes(gzip.decompress(full.read_bytes())[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "broken.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "broken.gz")


def test_idx_folder_given_with_data_is_used_whole(tmp_path):
    rng = np.random.default_rng(1)
    for split, count in (("train", 40), ("t10k", 12)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 3, count, dtype=np.uint8))
    data = build_data(str(tmp_path), 32, CPU, seed=0)
    assert (data.train_size, data.val_size, data.num_classes) == (40, 12, 3)
    images, labels = next(data.train_batches(0, 0, 8, 0, 1))
    assert images.shape == (8, 3, 32, 32) and labels.shape == (8,)


@pytest.mark.parametrize("input_size", [28, 32, 227])
def test_shape_batch_pads_or_resizes_to_three_normalised_channels(input_size):
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    shaped = shape_batch(images, input_size, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    assert shaped.shape == (3, 3, input_size, input_size) and shaped.is_contiguous()
    assert torch.equal(shaped[:, 0], shaped[:, 1]) and torch.equal(shaped[:, 0], shaped[:, 2])
    expected = (images.float() / 255 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    if input_size == 32:  # centred, padded with black
        torch.testing.assert_close(shaped[:, :1, 2:30, 2:30], expected)
        background = (0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
        assert torch.allclose(shaped[:, :, :2], torch.tensor(background))
    elif input_size == 28:
        torch.testing.assert_close(shaped[:, :1], expected)
    else:
        torch.testing.assert_close(shaped[:, :1].mean(), expected.mean(), atol=0.05, rtol=0)


def test_shape_batch_shifts_and_flips_each_image():
    images = torch.arange(2 * 28 * 28).remainder(256).to(torch.uint8).view(2, 1, 28, 28)
    shifts = torch.tensor([[2, 2], [0, 4]])  # image 0 stays put; image 1 moves down 2 and left 2
    flips = torch.tensor([True, False])
    shaped = shape_batch(images, 28, 0.0, 1.0, flips=flips, shifts=shifts)
    pixels = images.float() / 255
    torch.testing.assert_close(shaped[0, 0], pixels[0, 0].flip(1))
    torch.testing.assert_close(shaped[1, 0, 2:, :26], pixels[1, 0, :26, 2:])
    assert torch.all(shaped[1, 0, :2] == 0) and torch.all(shaped[1, 0, :, 26:] == 0)


def test_epoch_order_is_a_seeded_permutation():
    first, again, other_epoch = epoch_order(3, 1, 50), epoch_order(3, 1, 50), epoch_order(3, 2, 50)
    assert torch.equal(first, again) and not torch.equal(first, other_epoch)
    assert sorted(first.tolist()) == list(range(50))


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_ranks_split_each_global_batch_and_the_validation_set_exactly(world_size):
    data = build_data("synthetic", 8, CPU, seed=0, train_subset=64, val_subset=30)
    whole = list(data.train_batches(0, 1, 16, 0, 1))
    parts = [list(data.train_batches(0, 1, 16, rank, world_size)) for rank in range(world_size)]
    for step, (images, labels) in enumerate(whole):
        assert torch.equal(torch.cat([part[step][0] for part in parts]), images)
        assert torch.equal(torch.cat([part[step][1] for part in parts]), labels)
    assert [rank_slice(16, rank, world_size) for rank in range(world_size)][-1].stop == 16
    seen = sum(len(labels) for rank in range(world_size) for _, labels in data.val_batches(7, rank, world_size))
    assert seen == 30


def test_resuming_inside_an_epoch_sees_the_same_batches():
    data = build_data(None, 32, CPU, seed=5, train_subset=96, val_subset=16)
    straight = list(data.train_batches(2, 0, 32, 0, 1))
    resumed = list(data.train_batches(2, 1, 32, 0, 1))
    assert len(straight) == 3 and len(resumed) == 2
    for (images, labels), (again, again_labels) in zip(straight[1:], resumed):
        assert torch.equal(images, again) and torch.equal(labels, again_labels)


def _image_folder(root, classes=("cat", "dog"), per_class=3, size=(48, 40)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for index in range(per_class):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{index}.png")


def test_image_folder_gives_paper_crops_and_ten_crop_evaluation(tmp_path):
    pytest.importorskip("PIL")
    _image_folder(tmp_path)
    classes, samples = scan_image_folder(tmp_path / "train")
    assert classes == ["cat", "dog"] and len(samples) == 6
    train = FolderDataset(samples, 32, "train")
    image, label, _, error = train[(0, 123)]
    assert error is None and image.shape == (3, 32, 32) and label == 0
    again, *_ = train[(0, 123)]
    assert torch.equal(image, again)  # augmentation is a function of the sample's seed
    crops, *_ = FolderDataset(samples, 32, "ten-crop")[(4, 0)]
    assert crops.shape == (10, 3, 32, 32)
    torch.testing.assert_close(crops[5:], crops[:5].flip(3))  # the mirrored five
    data = folder_data(tmp_path, 32, CPU, 0, workers=0, ten_crop=True)
    images, labels = next(data.val_batches(4, 0, 1))
    assert images.shape == (4, 10, 3, 32, 32) and labels.tolist() == [0, 0, 0, 1]


def test_pca_lighting_constants_are_orthonormal_eigenvectors():
    np.testing.assert_allclose(PCA_EIGENVECTORS.T @ PCA_EIGENVECTORS, np.eye(3), atol=2e-3)
    assert list(PCA_EIGENVALUES) == sorted(PCA_EIGENVALUES, reverse=True)


def test_bad_image_folders_name_the_path(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'missing'} does not exist"):
        build_data(str(tmp_path / "missing"), 32, CPU, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'} has no train/"):
        build_data(str(tmp_path / "empty"), 32, CPU, 0)
    (tmp_path / "flat" / "train").mkdir(parents=True)
    (tmp_path / "flat" / "train" / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=f"{tmp_path / 'flat' / 'train'} has no class sub-folders"):
        build_data(str(tmp_path / "flat"), 32, CPU, 0)
    (tmp_path / "noimages" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        build_data(str(tmp_path / "noimages"), 32, CPU, 0)


def test_corrupt_image_is_skipped_with_a_warning_and_counted(tmp_path):
    pytest.importorskip("PIL")
    _image_folder(tmp_path)
    (tmp_path / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    warnings = []
    data = folder_data(tmp_path, 32, CPU, 0, workers=0, warn=warnings.append)
    batches = list(data.train_batches(0, 0, 7, 0, 1))
    assert len(batches) == 1 and len(batches[0][1]) == 6  # 7 files, one skipped
    assert data.corrupt_images() == 1
    assert len(warnings) == 1 and "broken.jpg" in warnings[0]


def _idx_set(root, train_labels, test_labels, label_type: int = 0x08):
    """A tiny IDX data set in ``root``; labels written with IDX type code ``label_type`` (0x08 uint8, 0x09 int8)."""
    root.mkdir(parents=True, exist_ok=True)
    for split, labels in (("train", train_labels), ("t10k", test_labels)):
        write_idx(root / f"{split}-images-idx3-ubyte.gz", np.zeros((len(labels), 28, 28), dtype=np.uint8))
        raw = np.asarray(labels, dtype=np.int8 if label_type == 0x09 else np.uint8)
        header = bytes([0, 0, label_type, 1]) + len(raw).to_bytes(4, "big")
        (root / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + raw.tobytes()))
    return root


@pytest.mark.parametrize("train_labels, test_labels, label_type, message", [
    ([0, 1, -1, 2], [0, 1], 0x09, r"train-labels-idx1-ubyte.gz holds the negative label -1 \(image 2\)"),
    ([0, 1, 2, 1], [0, -1], 0x09, "t10k-labels-idx1-ubyte.gz holds the negative label -1"),
    ([0, 1, 255, 2], [0, 1], 0x08, "has labels up to 255 but no training image of class 3 \\(nor of 251 more\\)"),
    ([0, 1, 2, 1], [0, 3], 0x08, r"holds the label 3 \(image 1\), but the training labels are 0..2"),
])
def test_idx_labels_are_validated_when_loaded(tmp_path, train_labels, test_labels, label_type, message):
    root = _idx_set(tmp_path / "idx", train_labels, test_labels, label_type)
    with pytest.raises(DataError, match=message):
        build_data(str(root), 32, CPU, seed=0)


def test_idx_class_count_comes_from_the_whole_training_set_not_the_subset(tmp_path):
    root = _idx_set(tmp_path / "idx", [0, 0, 1, 2], [2, 1])
    assert build_data(str(root), 32, CPU, seed=0, train_subset=2, val_subset=1).num_classes == 3


def test_empty_or_corrupt_idx_files_are_data_errors(tmp_path):
    root = _idx_set(tmp_path / "empty", [], [0])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz holds no images"):
        build_data(str(root), 32, CPU, seed=0)
    root = _idx_set(tmp_path / "corrupt", [0, 1], [0, 1])
    compressed = bytearray((root / "t10k-images-idx3-ubyte.gz").read_bytes())
    compressed[12:20] = b"\xff" * 8  # inside the deflate stream: zlib refuses it
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(compressed))
    with pytest.raises(DataError, match="cannot read IDX file .*t10k-images-idx3-ubyte.gz"):
        build_data(str(root), 32, CPU, seed=0)


@pytest.mark.parametrize("source", [None, "synthetic"])
@pytest.mark.parametrize("subset", [0, -5, 2.5, True])
def test_subsets_must_be_positive_counts(source, subset):
    for name in ("train_subset", "val_subset"):
        with pytest.raises(ValueError, match=f"{name} must be a positive number of images"):
            build_data(source, 32, CPU, seed=0, **{name: subset})
