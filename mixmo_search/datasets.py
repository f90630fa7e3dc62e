"""Whole data sets as uint8 tensors, so the trainer keeps them on its device and augments there.

Each loader returns a data set's own train and test images. `load_dataset` then holds a
validation split out of train (`data.val_size` images chosen by `data.split_seed`) and computes
the per-channel mean and std on what is left. Image folders and Tiny ImageNet are decoded once
with PIL and cached under `<root>/.mixmo_cache/`, except where the root is read-only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import multiprocessing
import os
import pickle
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mixmo_search.config import DataConfig
from mixmo_search.errors import DataError
from mixmo_search.files import replacing

if TYPE_CHECKING:
    import PIL.Image
    from torchvision.datasets import CIFAR10

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_DIR = ".mixmo_cache"  # under the data root; delete it to force a fresh decode
CACHE_VERSION = 1  # part of the cache key: bump when decoding changes, to drop old caches
PARALLEL_FROM = 2000  # files; below this a process pool and progress bar cost more than they save
CHUNK_FILES = 500  # files per pool task: few enough tasks to keep pickling overhead small
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


def load_dataset(cfg: DataConfig, *, hold_out: bool = True) -> Dataset:
    """Load `cfg.name` on the CPU: train minus a seeded validation hold-out, val, and test.
    Without `hold_out` (the paper protocol) train is the whole training set and val is empty."""
    loader = _LOADERS.get(cfg.name)
    if loader is None:
        raise DataError(f"unknown `data.name` {cfg.name!r}; choose one of: {', '.join(_LOADERS)}")
    full_train, test, num_classes = loader(cfg)
    val_size = cfg.val_size if hold_out else 0
    train, val = _hold_out(full_train, val_size, cfg.split_seed, cfg.name)
    mean, std = _channel_stats(train.images)
    return Dataset(cfg.name, train, val, test, num_classes, mean, std)


def _hold_out(full_train: Split, val_size: int, seed: int, name: str) -> tuple[Split, Split]:
    n = len(full_train)
    if val_size >= n:
        raise DataError(
            f"`data.val_size` ({val_size}) must be smaller than the {n} training images of "
            f"{name}; lower it, e.g. --set data.val_size={max(1, n // 10)}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
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


# --- loaders: each returns (train set before the hold-out, test set, number of classes) ---


def _load_cifar(cfg: DataConfig) -> tuple[Split, Split, int]:
    from torchvision import datasets

    cifar = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    root = Path(cfg.root).expanduser()
    try:
        train, test = (cifar(str(root), train=t, download=cfg.download) for t in (True, False))
    except (RuntimeError, OSError) as err:  # torchvision: files missing, or the download failed
        if cfg.download:
            raise DataError(
                f"could not download {cfg.name} into {root} (`data.root`): {err}; check the "
                "network, or `--set data.root=PATH` to an existing copy"
            ) from err
        raise DataError(
            f"{cfg.name} is not in {root} (`data.root`) and `data.download` is false; "
            "`--set data.download=true` to fetch it, or `--set data.root=PATH` to an existing copy"
        ) from err
    return _cifar_split(train), _cifar_split(test), len(train.classes)


def _cifar_split(cifar: CIFAR10) -> Split:  # CIFAR100 subclasses CIFAR10
    images = torch.from_numpy(cifar.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    return Split(images, torch.tensor(cifar.targets, dtype=torch.int64))


def _load_digits(cfg: DataConfig) -> tuple[Split, Split, int]:
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
    test = _take(every, torch.from_numpy(test_idx))
    return _take(every, torch.from_numpy(train_idx)), test, len(digits.target_names)


def _load_image_folder(cfg: DataConfig) -> tuple[Split, Split, int]:
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
    train_files = _list_images(root / "train", classes, index)
    test_files = _list_images(root / "test", test_classes, index)
    train = _decode_cached(root, "train", train_files, cfg.image_size)
    return train, _decode_cached(root, "test", test_files, cfg.image_size), len(classes)


def _load_tiny_imagenet(cfg: DataConfig) -> tuple[Split, Split, int]:
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
    train_files = _list_images(root / "train", wnids, index)
    # The official val set is the test split: the real test set has no labels.
    val_images = str(root / "val" / "images")
    test_files = []
    for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(
                f"{annotations}:{line_no}: expected FILE<tab>WNID with a WNID that has a "
                f"train/ folder, got {line!r}; restore the file from the original zip"
            )
        test_files.append((os.path.join(val_images, fields[0]), index[fields[1]]))
    if not test_files:
        raise DataError(f"{annotations} lists no images; restore it from the original zip")
    train = _decode_cached(root, "train", train_files, cfg.image_size)
    return train, _decode_cached(root, "test", test_files, cfg.image_size), len(wnids)


_LOADERS: dict[str, Callable[[DataConfig], tuple[Split, Split, int]]] = {
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "tinyimagenet": _load_tiny_imagenet,
    "imagefolder": _load_image_folder,
    "digits": _load_digits,
}


# --- image files: listing, decoding, caching ---


def _class_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DataError(
            f"{folder} does not exist; `data.root` must hold {folder.name}/<class>/ folders"
        )
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise DataError(f"{folder} has no class folders; put each class's images in its own")
    return names


def _list_images(folder: Path, classes: list[str], index: dict[str, int]) -> list[tuple[str, int]]:
    """(path, label) for every image under `folder/<class>/`, at any depth, sorted per class.
    Paths are strings: pathlib's sorting and `relative_to` took seconds on CIFAR's 60k files."""
    files = []
    for name in classes:
        found = sorted(
            os.path.join(parent, file)
            for parent, _, names in os.walk(folder / name, followlinks=True)
            for file in names
            if file.lower().endswith(IMAGE_EXTENSIONS) and not file.startswith(".")
        )
        if not found:
            raise DataError(
                f"{folder / name} holds no images ({' '.join(IMAGE_EXTENSIONS)}); add some or "
                "remove the folder"
            )
        files += [(path, index[name]) for path in found]
    return files


def _decode_cached(root: Path, split: str, files: list[tuple[str, int]], image_size: int) -> Split:
    """Decode `files` once; later loads read `<root>/.mixmo_cache/<split>_<image_size>.pt`."""
    key = _fingerprint(root, files)
    cache = root / CACHE_DIR / f"{split}_{image_size}.pt"
    cached = _read_cache(cache, key)
    if cached is not None:
        return cached
    images = _decode_all([path for path, _ in files], image_size, desc=f"decoding {split}")
    decoded = Split(images, torch.tensor([label for _, label in files], dtype=torch.int64))
    if _writable(root):
        _write_cache(cache, key, decoded)
    return decoded


def _fingerprint(root: Path, files: list[tuple[str, int]]) -> str:
    """Count, newest mtime and a digest of names and labels: adding, removing, moving or
    editing any file changes it."""
    digest = hashlib.sha1()
    newest = 0
    skip = len(str(root)) + 1  # paths are under root: hash them relative, so root may move
    for path, label in files:
        try:
            newest = max(newest, os.stat(path).st_mtime_ns)
        except OSError as err:
            raise DataError(f"cannot read image {path}: {err.strerror}; restore it") from err
        digest.update(f"{path[skip:]}\t{label}\n".encode())
    return f"v{CACHE_VERSION}-{len(files)}-{newest}-{digest.hexdigest()}"


def _read_cache(path: Path, key: str) -> Split | None:
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None  # a torn or foreign file counts as a miss; the next write replaces it
    if not isinstance(saved, dict) or saved.get("key") != key:
        return None
    return Split(saved["images"], saved["labels"])


def _write_cache(path: Path, key: str, split: Split) -> None:
    """Replace the cache atomically, so a killed run never leaves a torn one."""
    # a full disk or a read-only mount: no cache, which is only a speed-up
    with contextlib.suppress(OSError, RuntimeError), replacing(path) as tmp:
        torch.save({"key": key, "images": split.images, "labels": split.labels}, tmp)


def _writable(root: Path) -> bool:
    """Whether to cache under `root`; one marked read-only is left alone even by a superuser,
    whom `os.access` always lets write."""
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return os.access(root, os.W_OK) and bool(root.stat().st_mode & write_bits)


def _decode_all(paths: list[str], image_size: int, *, desc: str) -> Tensor:
    """(N, 3, H, W) uint8 of all `paths`, resized to `image_size` if > 0, else all one size."""
    from tqdm import tqdm

    first = paths[0]
    shape = (image_size, image_size) if image_size else _open_rgb(first).size[::-1]
    decode = partial(_decode_chunk, shape=shape, resize=image_size > 0, first=first)
    chunks = [paths[i : i + CHUNK_FILES] for i in range(0, len(paths), CHUNK_FILES)]
    parallel = len(paths) > PARALLEL_FROM
    images = torch.empty((len(paths), 3, *shape), dtype=torch.uint8)
    start = 0
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not parallel) as bar:
        for array in _map(decode, chunks, parallel=parallel):
            images[start : start + len(array)] = torch.from_numpy(array).permute(0, 3, 1, 2)
            start += len(array)
            bar.update(len(array))
    return images


def _map(
    fn: Callable[[list[str]], np.ndarray], chunks: list[list[str]], *, parallel: bool
) -> Iterator[np.ndarray]:
    """`map(fn, chunks)` in order; in worker processes if `parallel`, as PIL's per-file work
    holds the GIL (threads measured no faster). Fork: workers need not re-import torch."""
    if not parallel:
        yield from map(fn, chunks)
        return
    workers = min(len(chunks), os.cpu_count() or 1)
    with multiprocessing.get_context("fork").Pool(workers) as pool:  # exit terminates on error
        yield from pool.imap(fn, chunks)


def _decode_chunk(
    paths: list[str], *, shape: tuple[int, int], resize: bool, first: str
) -> np.ndarray:
    """(k, H, W, 3) uint8 from image files, RGB; runs in pool workers."""
    from PIL import Image

    height, width = shape
    out = np.empty((len(paths), height, width, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        rgb = _open_rgb(path)
        if resize and rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
        elif rgb.size != (width, height):
            raise DataError(
                f"{path} is {rgb.width}x{rgb.height} but {first} is {width}x{height}; "
                "`--set data.image_size=N` to resize every image to NxN"
            )
        out[i] = np.asarray(rgb)
    return out


def _open_rgb(path: str) -> PIL.Image.Image:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as err:  # PIL's UnidentifiedImageError is an OSError too
        raise DataError(f"cannot decode image {path}: {err}; replace or remove it") from err


@dataclass(frozen=True)
class DatasetShape:
    """What a data set holds, known without decoding it: enough to check a config at plan time."""

    n_train: int  # the training set before the validation hold-out
    n_test: int
    num_classes: int
    in_channels: int
    image_size: int  # as trained (after data.image_size's resize)


_FIXED_SHAPES = {  # (n_train, n_test, classes, channels, size)
    "digits": (1437, 360, 10, 1, 8),
    "cifar10": (50000, 10000, 10, 3, 32),
    "cifar100": (50000, 10000, 100, 3, 32),
}


def describe_dataset(cfg: DataConfig) -> DatasetShape:
    """`cfg.name`'s shape without decoding an image; a DataError where loading would fail."""
    if cfg.name in _FIXED_SHAPES:
        return DatasetShape(*_FIXED_SHAPES[cfg.name])
    root = Path(cfg.root).expanduser()
    if cfg.name == "tinyimagenet":
        return DatasetShape(100000, 10000, 200, 3, cfg.image_size or 64)
    classes = _class_names(root / "train")
    index = {name: i for i, name in enumerate(classes)}
    train_files = _list_images(root / "train", classes, index)
    test_files = _list_images(root / "test", _class_names(root / "test"), index)
    size = cfg.image_size or _open_rgb(train_files[0][0]).size[0]
    return DatasetShape(len(train_files), len(test_files), len(classes), 3, size)
