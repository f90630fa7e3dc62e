"""Image files on disk: listing class folders, decoding with PIL, and the decode cache.

Listing follows a symbolic link only inside the data folder, never back into a folder that
contains it (a loop) and never to a folder or image it already reached, so each image is
counted once, under one class. Decoding turns every PIL failure into one `DataError` naming
the file, in worker processes too: PIL raises whatever its format plugin raises (OSError,
SyntaxError for a broken PNG, ValueError for a malformed PPM, TypeError, struct.error,
DecompressionBombError, ...). Decoded folders are cached under `<root>/.mixmo_cache/`,
except where the root is read-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import pickle
import signal
import stat
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mixmo_search.errors import DataError
from mixmo_search.files import replacing

if TYPE_CHECKING:
    import PIL.Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_DIR = ".mixmo_cache"  # under the data root; delete it to force a fresh decode
CACHE_VERSION = 1  # part of the cache key: bump when decoding changes, to drop old caches
PARALLEL_FROM = 2000  # files; below this a process pool and progress bar cost more than they save
CHUNK_FILES = 500  # files per pool task: few enough tasks to keep pickling overhead small


# --- listing ---


def list_images(
    folder: Path, classes: list[str], index: dict[str, int], *, root: Path
) -> list[tuple[str, int]]:
    """(path, label) for every image under `folder/<class>/`, at any depth, sorted per class;
    links are followed inside `root` only. Paths are strings: pathlib's sorting and
    `relative_to` took seconds on CIFAR's 60k files."""
    walk = _Walk(root)
    files = []
    for name in classes:
        found = sorted(walk.images(str(folder / name)))
        if not found:
            raise DataError(
                f"{folder / name} holds no images ({' '.join(IMAGE_EXTENSIONS)}); add some or "
                "remove the folder"
            )
        files += [(path, index[name]) for path in found]
    return files


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def resolve_inside(path: str, root: str | Path) -> str:
    """The real path of `path`, which must lie inside the data folder `root`."""
    real, root = os.path.realpath(path), os.path.realpath(root)
    if real != root and not real.startswith(root + os.sep):
        raise DataError(
            f"{path} leads to {real}, outside the data folder {root} (`data.root`); links "
            "are followed inside it only: copy or move the images in"
        )
    return real


class _Walk:
    """The folders and images one split reached, by real path: a link may not leave the data
    folder, loop, or reach a folder or image a second time (it would count it twice, perhaps
    under another class)."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self.folders: dict[str, str] = {}  # real path -> the path it was first reached by
        self.files: dict[str, str] = {}

    def images(self, top: str) -> Iterator[str]:
        """Image files under `top` at any depth (hidden files skipped), in no set order."""
        stack = [(top, self.inside(top))]
        self.enter(top, stack[0][1], os.path.dirname(stack[0][1]))
        while stack:
            folder, real_folder = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
            except OSError as err:
                raise DataError(
                    f"cannot list {folder}: {err.strerror}; fix its permissions"
                ) from None
            for entry in entries:
                is_dir = entry.is_dir()  # follows a link
                if not is_dir and not _is_image_name(entry.name):
                    continue
                real = os.path.join(real_folder, entry.name)  # no syscall unless a link
                if entry.is_symlink():
                    real = self.inside(entry.path)
                if is_dir:
                    self.enter(entry.path, real, real_folder)
                    stack.append((entry.path, real))
                else:
                    self.count(entry.path, real, entry.is_file())
                    yield entry.path

    def inside(self, path: str) -> str:
        return resolve_inside(path, self.root)

    def enter(self, path: str, real: str, real_parent: str) -> None:
        if real_parent == real or real_parent.startswith(real + os.sep):
            raise DataError(
                f"{path} links to {real}, a folder that contains it: a loop; remove the link"
            )
        if real in self.folders:
            raise DataError(
                f"{path} reaches {real} a second time (first as {self.folders[real]}), which "
                "would count its images twice; remove the link"
            )
        self.folders[real] = path

    def count(self, path: str, real: str, is_file: bool) -> None:
        if not is_file:
            raise DataError(
                f"{path} is not a readable file (a broken link?); restore or remove it"
            )
        if real in self.files:
            raise DataError(
                f"{path} is the image {self.files[real]} again (through a link), which would "
                "count it twice; remove the link"
            )
        self.files[real] = path


# --- decoding ---


def read_image(path: str | Path, mode: str = "RGB") -> PIL.Image.Image:
    """The image at `path`, decoded and converted to `mode` ("RGB", "L")."""
    from PIL import Image

    with _decoding(path), Image.open(path) as image:
        return image.convert(mode)


def header_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of the image at `path`, from its header alone."""
    from PIL import Image

    with _decoding(path), Image.open(path) as image:
        return image.height, image.width


@contextlib.contextmanager
def _decoding(path: str | Path) -> Iterator[None]:
    """Any failure to read `path` as an image is one DataError naming it. PIL's warnings on
    a readable file's odd metadata are muted; its pixel-cap warning is a refusal."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except MemoryError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise DataError(
                f"cannot decode image {path}: {str(err).split(',')[0]}; resize it (PIL "
                f"decodes at most {Image.MAX_IMAGE_PIXELS:,} pixels, a guard against "
                "decompression bombs)"
            ) from None
        except Exception as err:  # noqa: BLE001 - PIL raises what its format plugin raises
            reason = (str(err).splitlines() or [""])[0][:200]
            raise DataError(
                f"cannot decode image {path} ({type(err).__name__}: {reason}); replace or "
                "remove it"
            ) from None


def decode_cached(
    root: Path, split: str, files: list[tuple[str, int]], *, image_size: int, sized_by: str
) -> tuple[Tensor, Tensor]:
    """(N, 3, H, W) uint8 images and (N,) labels of `files`, each resized to `image_size`
    square if > 0, else of the size of `sized_by`; later loads read `<root>/.mixmo_cache/`."""
    key = _fingerprint(root, files)
    cache = root / CACHE_DIR / f"{split}_{image_size}.pt"
    cached = _read_cache(cache, key)
    if cached is not None:
        return cached
    paths = [path for path, _ in files]
    images = _decode_all(paths, image_size, sized_by, desc=f"decoding {split}")
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    if _writable(root):
        _write_cache(cache, key, images, labels)
    return images, labels


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


def _read_cache(path: Path, key: str) -> tuple[Tensor, Tensor] | None:
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None  # a torn or foreign file counts as a miss; the next write replaces it
    if not isinstance(saved, dict) or saved.get("key") != key:
        return None
    return saved["images"], saved["labels"]


def _write_cache(path: Path, key: str, images: Tensor, labels: Tensor) -> None:
    """Replace the cache atomically, so a killed run never leaves a torn one."""
    # a full disk or a read-only mount: no cache, which is only a speed-up
    with contextlib.suppress(OSError, RuntimeError), replacing(path) as tmp:
        torch.save({"key": key, "images": images, "labels": labels}, tmp)


def _writable(root: Path) -> bool:
    """Whether to cache under `root`; one marked read-only is left alone even by a superuser,
    whom `os.access` always lets write."""
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return os.access(root, os.W_OK) and bool(root.stat().st_mode & write_bits)


def _decode_all(paths: list[str], image_size: int, sized_by: str, *, desc: str) -> Tensor:
    """(N, 3, H, W) uint8 of all `paths`: resized to `image_size` if > 0, else all one size."""
    from tqdm import tqdm

    shape = (image_size, image_size) if image_size else header_size(sized_by)
    decode = partial(_decode_chunk, shape=shape, resize=image_size > 0, sized_by=sized_by)
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
    fork = multiprocessing.get_context("fork")
    with fork.Pool(workers, initializer=_worker_signals) as pool:  # exit terminates workers
        yield from pool.imap(fn, chunks)


def _worker_signals() -> None:
    """A pool worker dies of the SIGTERM the pool's exit sends, whatever handler it forked
    with (a search's "already stopping" handler returns, and the pool's exit then waited on
    that worker forever); Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_chunk(
    paths: list[str], *, shape: tuple[int, int], resize: bool, sized_by: str
) -> np.ndarray:
    """(k, H, W, 3) uint8 from image files, RGB; runs in pool workers."""
    from PIL import Image

    height, width = shape
    out = np.empty((len(paths), height, width, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        rgb = read_image(path)
        if resize and rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
        elif rgb.size != (width, height):
            raise DataError(
                f"{path} is {rgb.width}x{rgb.height} but {sized_by} is {width}x{height}; "
                "`--set data.image_size=N` to resize every image to NxN"
            )
        out[i] = np.asarray(rgb)
    return out
