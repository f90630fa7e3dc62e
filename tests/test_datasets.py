from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from mixmo_search import images
from mixmo_search.config import DataConfig
from mixmo_search.datasets import Dataset, Split, load_dataset
from mixmo_search.errors import DataError

# One solid colour per class; class2 is saved as grayscale to check the conversion to RGB.
MODES_COLORS = [("RGB", (255, 0, 0)), ("RGB", (0, 255, 0)), ("L", 128)]
RGB_COLORS = torch.tensor([[255, 0, 0], [0, 255, 0], [128, 128, 128]], dtype=torch.uint8)


def _digits(**overrides: object) -> Dataset:
    return load_dataset(DataConfig(name="digits", val_size=200, **overrides))


def _rows(*splits: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """The multiset of (label, pixels) rows over `splits`: unique rows and their counts."""
    labels = torch.cat([s.labels for s in splits])[:, None]
    pixels = torch.cat([s.images.flatten(1) for s in splits]).long()
    return torch.unique(torch.cat([labels, pixels], 1), dim=0, return_counts=True)


def _make_image_folder(root: Path, *, train_per_class: int = 4, test_per_class: int = 2) -> None:
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for label, (mode, color) in enumerate(MODES_COLORS):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new(mode, (8, 8), color).save(folder / f"{i}.png")


def _assert_class_colors(split: Split) -> None:
    expected = RGB_COLORS[split.labels][:, :, None, None].expand_as(split.images)
    assert torch.equal(split.images, expected)


def _folder_cfg(root: Path, **overrides: object) -> DataConfig:
    return DataConfig(name="imagefolder", root=str(root), val_size=3, **overrides)


def test_digits_shapes_and_stats():
    ds = _digits()
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1437 - 200, 200, 360)
    for split in (ds.train, ds.val, ds.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 8, 8)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (10, 1, 8)
    assert int(ds.train.images.max()) == 255
    pixels = ds.train.images.double() / 255
    assert ds.mean == pytest.approx([pixels.mean().item()])
    assert ds.std == pytest.approx([pixels.std(unbiased=False).item()])


def test_digits_val_is_seeded_and_splits_partition_the_data():
    from sklearn.datasets import load_digits

    a, again, b = _digits(split_seed=0), _digits(split_seed=0), _digits(split_seed=1)
    assert torch.equal(a.val.images, again.val.images)
    assert torch.equal(a.val.labels, again.val.labels)
    assert not torch.equal(a.val.images, b.val.images)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.labels, b.test.labels)
    digits = load_digits()
    every = Split(
        (torch.from_numpy(digits.images) * (255 / 16)).round().to(torch.uint8)[:, None],
        torch.from_numpy(digits.target),
    )
    # Same multiset as the whole data set, so train, val and test are disjoint for any seed.
    for ds in (a, b):
        for got, want in zip(_rows(ds.train, ds.val, ds.test), _rows(every), strict=True):
            assert torch.equal(got, want)


def test_val_size_must_leave_training_images():
    with pytest.raises(DataError, match=r"`data\.val_size` \(1437\).*1437 training images"):
        load_dataset(DataConfig(name="digits", val_size=1437))


def test_unknown_name_is_a_data_error():
    with pytest.raises(DataError, match=r"data\.name"):
        load_dataset(DataConfig(name="mnist"))


def test_dataset_to_device_keeps_contents():
    ds = _digits()
    moved = ds.to("cpu")
    assert moved.name == "digits" and moved.mean == ds.mean
    assert torch.equal(moved.val.images, ds.val.images) and len(moved.test) == len(ds.test)


def test_image_folder_loads_and_caches(tmp_path):
    _make_image_folder(tmp_path)
    ds = load_dataset(_folder_cfg(tmp_path))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (9, 3, 6)
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (3, 3, 8)
    for split in (ds.train, ds.val, ds.test):
        _assert_class_colors(split)
    assert torch.equal(ds.test.labels.sort().values, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert {p.name for p in (tmp_path / ".mixmo_cache").iterdir()} == {"train_0.pt", "test_0.pt"}


def test_image_folder_cache_hit_and_invalidation(tmp_path):
    _make_image_folder(tmp_path)
    cfg = _folder_cfg(tmp_path)
    first = load_dataset(cfg)
    path = tmp_path / "train" / "class0" / "0.png"
    before = path.stat()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)

    def first_pixels(ds: Dataset) -> torch.Tensor:  # (N, 3), train and val together
        return torch.cat([ds.train.images, ds.val.images])[:, :, 0, 0]

    # Same mtime: only a cache hit still returns the old pixels.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert torch.equal(load_dataset(cfg).train.images, first.train.images)
    # A newer mtime invalidates the cache: the repainted image is decoded.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert (first_pixels(load_dataset(cfg)) == torch.tensor([1, 2, 3])).all(1).sum() == 1
    # So does an added file.
    Image.new("RGB", (8, 8), (0, 255, 0)).save(tmp_path / "train" / "class1" / "new.png")
    added = load_dataset(cfg)
    assert len(added.train) + len(added.val) == 13


@pytest.mark.parametrize("parallel", [False, True])
def test_image_folder_sizes_must_match_unless_resized(tmp_path, monkeypatch, parallel):
    if parallel:  # big folders decode in worker processes, a few files per task
        monkeypatch.setattr(images, "PARALLEL_FROM", 0)
        monkeypatch.setattr(images, "CHUNK_FILES", 2)
    _make_image_folder(tmp_path)
    Image.new("RGB", (10, 6), (0, 255, 0)).save(tmp_path / "train" / "class1" / "9.png")
    with pytest.raises(DataError, match=r"9\.png is 10x6 .*data\.image_size"):
        load_dataset(_folder_cfg(tmp_path))
    ds = load_dataset(_folder_cfg(tmp_path, image_size=4))
    assert ds.image_size == 4 and ds.test.images.shape[1:] == (3, 4, 4)
    _assert_class_colors(ds.train)


def test_image_folder_test_classes_must_exist_in_train(tmp_path):
    _make_image_folder(tmp_path)
    (tmp_path / "test" / "zebra").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "zebra" / "0.png")
    with pytest.raises(DataError, match="no train folder: zebra"):
        load_dataset(_folder_cfg(tmp_path))


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (None, r"does not exist.*data\.root"),
        ([], r"train does not exist"),
        (["train/a", "test/a"], r"train[/\\]a holds no images"),
    ],
)
def test_image_folder_missing_or_empty(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout is not None:
        root.mkdir()
        for folder in layout:
            (root / folder).mkdir(parents=True)
    with pytest.raises(DataError, match=message):
        load_dataset(_folder_cfg(root))


def test_image_folder_read_only_root_is_not_cached(tmp_path):
    root = tmp_path / "ro"
    _make_image_folder(root)
    root.chmod(0o555)
    try:
        ds = load_dataset(_folder_cfg(root))
    finally:
        root.chmod(0o755)
    assert len(ds.test) == 6 and not (root / ".mixmo_cache").exists()


def test_tiny_imagenet_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    colors = {"n01": (255, 0, 0), "n02": (0, 255, 0)}
    for wnid, color in colors.items():
        (root / "train" / wnid / "images").mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")  # not an image: skipped
        for i in range(3):
            Image.new("RGB", (8, 8), color).save(root / "train" / wnid / "images" / f"{i}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, wnid in enumerate(["n02", "n01", "n02"]):
        Image.new("RGB", (8, 8), colors[wnid]).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t7\t7")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")

    ds = load_dataset(DataConfig(name="tinyimagenet", root=str(root), val_size=2))
    assert ds.num_classes == 2 and (len(ds.train), len(ds.val)) == (4, 2)
    assert ds.test.labels.tolist() == [1, 0, 1]  # the official val set is the test split
    expected = torch.tensor([colors["n02"], colors["n01"], colors["n02"]], dtype=torch.float64)
    assert (ds.test.images.double().mean((2, 3)) - expected).abs().max() < 4  # JPEG is lossy


def test_tiny_imagenet_bad_layout(tmp_path):
    with pytest.raises(DataError, match="not a tiny-imagenet-200 folder"):
        load_dataset(DataConfig(name="tinyimagenet", root=str(tmp_path), val_size=1))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_without_download(tmp_path, name):
    with pytest.raises(DataError, match=r"data\.download") as info:
        load_dataset(DataConfig(name=name, root=str(tmp_path), download=False))
    assert str(tmp_path) in str(info.value) and "data.root" in str(info.value)
