"""Whole data sets as uint8 tensors, so the trainer keeps them on its device and augments there.

Each data set is first listed (`_Listing`): its shape, known without decoding an image, and
how to load its own train and test images. `load_dataset` then holds a validation split out
of train (`data.val_size` images chosen by `data.split_seed`) and computes the per-channel
mean and std on what is left. `describe_dataset` stops after the listing: the same shape and
the same refusals (missing files, a hold-out that leaves no training image, more images than
this machine's memory holds) without decoding, so a search can check its data set before it
starts. Image files are read by `images.py`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mixmo_search.config import DataConfig
from mixmo_search.errors import DataError
from mixmo_search.images import decode_cached, header_size, list_images, resolve_inside

if TYPE_CHECKING:
    from torchvision.datasets import CIFAR10

DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 0  # fixed, unlike data.split_seed, so the digits test set never changes


@dataclass(frozen=True)
class Split:
    """The images and labels of one split."""

    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Dataset:
    """Train (after the validation hold-out), val and test splits plus what models need."""

    name: str
    train: Split
    val: Split  # held out of the data set's train set; model selection uses it
    test: Split  # the data set's own test set; only for reporting
    num_classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units, on the train split
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[2]

    def to(self, device: torch.device | str) -> Dataset:
        return dataclasses.replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


@dataclass(frozen=True)
class DatasetShape:
    """What `load_dataset` returns, known without decoding an image (`describe_dataset`)."""

    name: str
    n_train: int  # the data set's training images, before the validation hold-out
    n_val: int  # held out of them: `data.val_size`, or 0 without a hold-out
    n_test: int
    num_classes: int
    in_channels: int
    height: int  # pixels, as trained: after `data.image_size`'s resize
    width: int

    @property
    def image_size(self) -> int:
        """The height, as `Dataset.image_size`."""
        return self.height

    @property
    def peak_bytes(self) -> int:
        """Host memory while loading: every image decoded, plus the hold-out's copy of train."""
        return (2 * self.n_train + self.n_test) * self.in_channels * self.height * self.width


@dataclass(frozen=True)
class _Listing:
    shape: DatasetShape  # n_val not yet known: 0
    load: Callable[[], tuple[Split, Split]]  # decodes: the train set before hold-out, test


def describe_dataset(cfg: DataConfig, *, hold_out: bool = True) -> DatasetShape:
    """The shape of `load_dataset(cfg, hold_out=hold_out)` without decoding an image; raises
    the DataError loading would raise for missing or malformed files, a `data.val_size` that
    leaves no training image, or more images than this machine's memory holds."""
    return _checked(_list(cfg), cfg, hold_out)


def load_dataset(cfg: DataConfig, *, hold_out: bool = True) -> Dataset:
    """Load `cfg.name` on the CPU: train minus a seeded validation hold-out, val, and test.
    Without `hold_out` (the paper protocol) train is the whole training set and val is empty."""
    listing = _list(cfg)
    shape = _checked(listing, cfg, hold_out)  # before a byte is decoded
    full_train, test = listing.load()
    train, val = _hold_out(full_train, shape.n_val, cfg.split_seed)
    mean, std = _channel_stats(train.images)
    return Dataset(cfg.name, train, val, test, shape.num_classes, mean, std)


def _list(cfg: DataConfig) -> _Listing:
    lister = _LISTERS.get(cfg.name)
    if lister is None:
        raise DataError(f"unknown `data.name` {cfg.name!r}; choose one of: {', '.join(_LISTERS)}")
    return lister(cfg)


def _checked(listing: _Listing, cfg: DataConfig, hold_out: bool) -> DatasetShape:
    shape = dataclasses.replace(listing.shape, n_val=cfg.val_size if hold_out else 0)
    n_train = shape.n_train
    if shape.n_val >= n_train:
        raise DataError(
            f"`data.val_size` ({shape.n_val}) must be smaller than the {n_train} training "
            f"images of {cfg.name}; lower it, e.g. --set data.val_size={max(1, n_train // 10)}"
        )
    memory = machine_memory()
    if shape.peak_bytes > memory:
        resize = f"lower `data.image_size` ({cfg.image_size})" if cfg.image_size else (
            "`--set data.image_size=N` to resize every image to NxN"
        )  # fmt: skip
        raise DataError(
            f"{cfg.name}: {shape.n_train + shape.n_test:,} images of {shape.in_channels}x"
            f"{shape.height}x{shape.width} pixels need {_gib(shape.peak_bytes)} of memory to "
            f"load, more than this machine's {_gib(memory)}; {resize}, or use fewer images"
        )
    return shape


def machine_memory() -> int:
    """Bytes of memory on this machine, or its container's limit where that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()  # cgroup v2; else "max"
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB"


def _hold_out(full_train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    perm = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(seed))
    return _take(full_train, perm[val_size:]), _take(full_train, perm[:val_size])


def _take(split: Split, index: Tensor) -> Split:
    return Split(split.images[index], split.labels[index])


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units from 256-bin histograms: exact, and with no
    float copy of the data set (a 1.2 GB Tiny ImageNet would need 4.8 GB as float32)."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in images.unbind(1):
        freq = torch.bincount(channel.flatten(), minlength=256).double()
        freq /= freq.sum()
        mean = (freq * values).sum()
        means.append(mean.item())
        stds.append((freq * (values - mean).square()).sum().sqrt().item())
    return tuple(means), tuple(stds)


# --- listers: each returns a data set's shape and how to load it, decoding nothing ---


def _list_digits(cfg: DataConfig) -> _Listing:
    # scikit-learn's 1797 digits, 20 % of them the test set; test_datasets checks the loader
    return _Listing(DatasetShape("digits", 1437, 0, 360, 10, 1, 8, 8), _load_digits)


def _load_digits() -> tuple[Split, Split]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = torch.from_numpy(digits.images) * (255 / 16)  # sklearn's digits are 0..16
    every = Split(
        pixels.round().to(torch.uint8)[:, None],  # (N, 1, 8, 8)
        torch.from_numpy(digits.target).to(torch.int64),
    )
    train_idx, test_idx = train_test_split(
        np.arange(len(every)),
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=DIGITS_TEST_SEED,
    )
    return _take(every, torch.from_numpy(train_idx)), _take(every, torch.from_numpy(test_idx))


def _list_cifar(cfg: DataConfig) -> _Listing:
    from torchvision import datasets

    cifar = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    root = Path(cfg.root).expanduser()
    folder = root / cifar.base_folder
    present = all((folder / name).is_file() for name, _ in cifar.train_list + cifar.test_list)
    if not present and not cfg.download:
        raise _cifar_missing(cfg, root)
    classes = 10 if cfg.name == "cifar10" else 100
    shape = DatasetShape(cfg.name, 50_000, 0, 10_000, classes, 3, 32, 32)
    return _Listing(shape, partial(_load_cifar, cfg, cifar, root))


def _load_cifar(cfg: DataConfig, cifar: type[CIFAR10], root: Path) -> tuple[Split, Split]:
    try:
        train, test = (cifar(str(root), train=t, download=cfg.download) for t in (True, False))
    except (RuntimeError, OSError) as err:  # torchvision: files missing, or the download failed
        if cfg.download:
            raise DataError(
                f"could not download {cfg.name} into {root} (`data.root`): {err}; check the "
                "network, or `--set data.root=PATH` to an existing copy"
            ) from err
        raise _cifar_missing(cfg, root) from err
    return _cifar_split(train), _cifar_split(test)


def _cifar_missing(cfg: DataConfig, root: Path) -> DataError:
    return DataError(
        f"{cfg.name} is not in {root} (`data.root`) and `data.download` is false; "
        "`--set data.download=true` to fetch it, or `--set data.root=PATH` to an existing copy"
    )


def _cifar_split(cifar: CIFAR10) -> Split:  # CIFAR100 subclasses CIFAR10
    images = torch.from_numpy(cifar.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    return Split(images, torch.tensor(cifar.targets, dtype=torch.int64))


def _list_image_folder(cfg: DataConfig) -> _Listing:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"image folder {root} (`data.root`) does not exist; `--set data.root=PATH` to a "
            "folder holding train/<class>/ and test/<class>/"
        )
    classes = _class_names(root / "train")
    test_classes = _class_names(root / "test")
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DataError(
            f"{root / 'test'} has classes with no train folder: {', '.join(unknown)}; add "
            f"{root / 'train'}/<class>/ for each, or remove them from test/"
        )
    index = {name: i for i, name in enumerate(classes)}
    train_files = list_images(root / "train", classes, index, root=root)
    test_files = list_images(root / "test", test_classes, index, root=root)
    return _image_listing(cfg, root, train_files, test_files, len(classes))


def _list_tiny_imagenet(cfg: DataConfig) -> _Listing:
    root = Path(cfg.root).expanduser()
    annotations = root / "val" / "val_annotations.txt"
    if not (root / "train").is_dir() or not annotations.is_file():
        raise DataError(
            f"{root} (`data.root`) is not a tiny-imagenet-200 folder (train/<wnid>/images/, "
            "val/images/, val/val_annotations.txt); `--set data.root=PATH` to the unzipped "
            "tiny-imagenet-200 folder"
        )
    wnids = _class_names(root / "train")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    train_files = list_images(root / "train", wnids, index, root=root)
    # The official val set is the test split: the real test set has no labels.
    test_files = _tiny_imagenet_val(root, annotations, index)
    return _image_listing(cfg, root, train_files, test_files, len(wnids))


def _tiny_imagenet_val(
    root: Path, annotations: Path, index: dict[str, int]
) -> list[tuple[str, int]]:
    """(path, label) of the official val images: file names in val/images/, inside `root`."""
    val_images = str(root / "val" / "images")
    resolve_inside(val_images, root)
    try:
        lines = annotations.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(
            f"cannot read {annotations} ({err}); restore it from the original zip"
        ) from None
    files = []
    for line_no, line in enumerate(lines, 1):
        name, wnid = [*line.split("\t"), ""][:2]
        if wnid not in index or name in ("", ".", "..") or os.path.basename(name) != name:
            raise DataError(
                f"{annotations}:{line_no}: expected FILE<tab>WNID, a file name in val/images/ "
                f"and a WNID that has a train/ folder, got {line!r}; restore the file from "
                "the original zip"
            )
        path = os.path.join(val_images, name)
        if os.path.islink(path):
            resolve_inside(path, root)
        files.append((path, index[wnid]))
    if not files:
        raise DataError(f"{annotations} lists no images; restore it from the original zip")
    return files


def _image_listing(
    cfg: DataConfig, root: Path, train: list[tuple[str, int]], test: list[tuple[str, int]],
    num_classes: int,
) -> _Listing:  # fmt: skip
    """Image files decoded as RGB, at `data.image_size` square or the first image's size."""
    sized_by = train[0][0]
    height, width = (cfg.image_size,) * 2 if cfg.image_size else header_size(sized_by)
    shape = DatasetShape(cfg.name, len(train), 0, len(test), num_classes, 3, height, width)

    def load() -> tuple[Split, Split]:
        decode = partial(decode_cached, root, image_size=cfg.image_size, sized_by=sized_by)
        return Split(*decode("train", train)), Split(*decode("test", test))

    return _Listing(shape, load)


def _class_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DataError(
            f"{folder} does not exist; `data.root` must hold {folder.name}/<class>/ folders"
        )
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise DataError(f"{folder} has no class folders; put each class's images in its own")
    return names


_LISTERS: dict[str, Callable[[DataConfig], _Listing]] = {
    "cifar10": _list_cifar,
    "cifar100": _list_cifar,
    "tinyimagenet": _list_tiny_imagenet,
    "imagefolder": _list_image_folder,
    "digits": _list_digits,
}
