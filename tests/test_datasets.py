from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mixmo_search import datasets, images
from mixmo_search.config import DataConfig
from mixmo_search.datasets import Dataset, DatasetShape, Split, describe_dataset, load_dataset
from mixmo_search.errors import DataError
from tests.waiting import scaled

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
        load_dataset(DataConfig.model_construct(name="mnist"))  # past the typed config


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


def test_decoding_workers_end_whatever_sigterm_handler_they_forked_with():
    """Found by the suite under load: after a test had run a search's `main` in-process, the
    pool's exit SIGTERMed workers that had forked with a handler that returns, and waited
    on them forever."""
    script = (
        "import signal\n"
        "signal.signal(signal.SIGTERM, lambda *_: None)  # returns, as 'already stopping'\n"
        "from mixmo_search import images\n"
        "chunks = [['a'] * 3, ['b'] * 2, ['c']]\n"
        "assert list(images._map(len, chunks, parallel=True)) == [3, 2, 1]\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=scaled(120))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


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


# --- bad image files: one DataError naming the file, in this process and in pool workers ---


def _encoded(fmt: str, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 90).save(buffer, fmt)
    return buffer.getvalue()


def _broken_png() -> bytes:
    """A PNG whose pixel data stops half-way into a chunk of no known kind: PIL opens it,
    then raises SyntaxError("broken PNG file") while decoding."""
    data = _encoded("PNG")
    start = data.index(b"IDAT") - 4  # the chunk: length, type, body, CRC
    (length,) = struct.unpack(">I", data[start : start + 4])
    half = data[start + 8 : start + 8 + length // 2]
    idat = struct.pack(">I", len(half)) + b"IDAT" + half
    return data[:start] + idat + struct.pack(">I", zlib.crc32(b"IDAT" + half)) + b"\0\0\0\5!!!!"


NAMED_BAD_IMAGES = {
    "broken PNG (SyntaxError)": ("bad.png", _broken_png()),
    "malformed PPM (ValueError)": ("bad.ppm", b"P6\n8 8\n-1\n" + bytes(192)),
    "truncated JPEG (OSError)": ("bad.jpg", _encoded("JPEG")[:200]),
    "not an image (UnidentifiedImageError)": ("bad.png", b"not a png"),
    "empty file": ("bad.png", b""),
}


def _parallel(on: bool):
    """Decode in pool workers, two files a task, when `on` (big folders do)."""
    if not on:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(images, "PARALLEL_FROM", 0))
    stack.enter_context(mock.patch.object(images, "CHUNK_FILES", 2))
    return stack


def _assert_names_file(caught: pytest.ExceptionInfo, path: Path) -> None:
    message = str(caught.value)
    assert str(path) in message and "\n" not in message, message


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("case", NAMED_BAD_IMAGES)
def test_an_undecodable_image_is_one_data_error_naming_it(tmp_path, case, parallel):
    _make_image_folder(tmp_path)
    name, data = NAMED_BAD_IMAGES[case]
    bad = tmp_path / "train" / "class1" / name
    bad.write_bytes(data)
    with _parallel(parallel), pytest.raises(DataError) as caught:
        load_dataset(_folder_cfg(tmp_path))
    _assert_names_file(caught, bad)
    assert "replace or remove it" in str(caught.value)
    assert not (tmp_path / ".mixmo_cache" / "train_0.pt").exists()


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("over", [1.5, 3])  # PIL warns past its cap and refuses past twice it
def test_a_decompression_bomb_is_one_data_error_naming_it(tmp_path, monkeypatch, over, parallel):
    from PIL import Image as PILImage

    _make_image_folder(tmp_path)
    bomb = tmp_path / "train" / "class2" / "bomb.png"
    Image.new("L", (16, 16)).save(bomb)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", int(256 / over))  # the others are 8x8
    with _parallel(parallel), pytest.raises(DataError) as caught:
        load_dataset(_folder_cfg(tmp_path))
    _assert_names_file(caught, bomb)
    assert "resize it" in str(caught.value)


IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "PPM": ".ppm", "BMP": ".bmp", "GIF": ".png",
                 "TIFF": ".tif", "WEBP": ".webp"}  # fmt: skip
VALID_FILES = {fmt: _encoded(fmt) for fmt in IMAGE_FORMATS}


@st.composite
def damaged_images(draw: st.DrawFn) -> tuple[str, bytes]:
    """(extension, bytes): a valid file cut short, with bytes changed, or random bytes."""
    fmt = draw(st.sampled_from(sorted(IMAGE_FORMATS)))
    data = bytearray(VALID_FILES[fmt])
    how = draw(st.sampled_from(["truncate", "flip", "random"]))
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        for at in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=6)):
            data[at] = draw(st.integers(0, 255))
    else:
        data = bytearray(draw(st.binary(max_size=300)))
    return IMAGE_FORMATS[fmt], bytes(data)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(damaged=damaged_images(), first=st.booleans(), parallel=st.integers(0, 9))
def test_any_damaged_file_in_a_folder_loads_or_is_one_data_error(damaged, first, parallel):
    """Anywhere in the folder (the first file sizes the others), alone or in pool workers."""
    ext, data = damaged
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _make_image_folder(root, train_per_class=3, test_per_class=1)
        bad = root / "train" / "class0" / f"{'0' if first else '9'}_damaged{ext}"
        bad.write_bytes(data)
        try:
            with _parallel(parallel == 0):
                ds = load_dataset(_folder_cfg(root))
        except DataError as err:
            assert str(bad) in str(err) and "\n" not in str(err), str(err)
            return
        assert len(ds.train) + len(ds.val) == 10 and ds.train.images.shape[1] == 3


def test_damaged_images_through_the_train_cli_are_one_line(tmp_path):
    _make_image_folder(tmp_path / "data")
    bad = tmp_path / "data" / "train" / "class0" / "bad.png"
    bad.write_bytes(_broken_png())
    done = subprocess.run(
        [sys.executable, "-m", "mixmo_search.train", "--preset", "digits_quick",
         "--set", "data.name=imagefolder", "--set", f"data.root={tmp_path / 'data'}",
         "--set", "data.val_size=2", "--set", f"run.out_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=scaled(300),
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot decode image {bad} (SyntaxError: broken PNG")
    assert not (tmp_path / "out").exists() and not (tmp_path / "data" / ".mixmo_cache").exists()


# --- symbolic links: followed inside the data folder only, each image counted once ---


def _link(link: Path, target: str) -> Path:
    link.symlink_to(target)
    return link


@pytest.mark.parametrize(
    ("link", "target", "message"),
    [
        ("train/class0/loop", "..", "a folder that contains it: a loop"),
        ("train/class0/loop", "../..", "a folder that contains it: a loop"),
        ("train/class0/self", ".", "a folder that contains it: a loop"),
        ("train/class0/also1", "../class1", "a second time"),
        ("train/class0/x.png", "../class1/0.png", "again (through a link)"),
        ("train/class0/out", "{outside}", "outside the data folder"),
        ("train/class0/out.png", "{outside}/0.png", "outside the data folder"),
        ("train/class3", "{outside}", "outside the data folder"),
        ("train/class0/gone.png", "nowhere.png", "a broken link"),
    ],
)
def test_links_that_loop_leave_the_folder_or_repeat_an_image_are_refused(
    tmp_path, link, target, message
):
    root, outside = tmp_path / "data", tmp_path / "outside"
    _make_image_folder(root)
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "0.png")
    made = _link(root / link, target.replace("{outside}", str(outside)))
    with pytest.raises(DataError) as caught:
        load_dataset(_folder_cfg(root))
    assert str(made) in str(caught.value) and message in str(caught.value)
    with pytest.raises(DataError, match=re.escape(message)):
        describe_dataset(_folder_cfg(root))


def test_a_link_inside_the_data_folder_is_followed(tmp_path):
    _make_image_folder(tmp_path)
    extra = tmp_path / "extra" / "reds"
    extra.mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (8, 8), (255, 0, 0)).save(extra / f"{i}.png")
    _link(tmp_path / "train" / "class0" / "more", "../../extra/reds")
    _link(tmp_path / "train" / "class0" / "notes.txt", "/etc/hostname")  # not an image: unread
    ds = load_dataset(_folder_cfg(tmp_path))
    assert len(ds.train) + len(ds.val) == 12 + 5
    _assert_class_colors(ds.train)


def test_the_data_folder_itself_may_be_a_link(tmp_path):
    _make_image_folder(tmp_path / "real")
    _link(tmp_path / "data", "real")
    assert len(load_dataset(_folder_cfg(tmp_path / "data")).test) == 6


@pytest.mark.parametrize("name", ["../../etc/hostname", "/etc/hostname", "..", ""])
def test_tiny_imagenet_val_names_stay_in_val_images(tmp_path, name):
    root = _make_tiny_imagenet(tmp_path)
    (root / "val" / "val_annotations.txt").write_text(f"{name}\tn01\t0\t0\t7\t7\n")
    with pytest.raises(DataError, match=r"val_annotations.txt:1: expected FILE<tab>WNID"):
        load_dataset(DataConfig(name="tinyimagenet", root=str(root), val_size=1))


def test_tiny_imagenet_val_links_stay_in_the_data_folder(tmp_path):
    root = _make_tiny_imagenet(tmp_path)
    image = root / "val" / "images" / "val_0.JPEG"
    image.unlink()
    _link(image, "/etc/hostname")
    with pytest.raises(DataError, match="outside the data folder"):
        describe_dataset(DataConfig(name="tinyimagenet", root=str(root), val_size=1))


# --- memory: estimated before a byte is decoded ---


def test_an_image_size_that_cannot_fit_in_memory_is_refused_before_allocating(tmp_path):
    _make_image_folder(tmp_path)
    # 18 images of 3x200000x200000: 2.2 TB (the typed config stops this size before a
    # loader sees it; the loader's own guard holds for what the config allows, e.g. many
    # images at 1024)
    cfg = DataConfig.model_construct(
        **{**_folder_cfg(tmp_path).model_dump(), "image_size": 200_000}
    )
    start = time.monotonic()
    with pytest.raises(DataError) as caught:
        load_dataset(cfg)
    message = str(caught.value)
    assert "18 images of 3x200000x200000 pixels need" in message and "GiB of memory" in message
    assert "lower `data.image_size` (200000)" in message and time.monotonic() - start < 5
    with pytest.raises(DataError, match=re.escape(message)):
        describe_dataset(cfg)
    assert not (tmp_path / ".mixmo_cache").exists()


def test_the_memory_estimate_is_the_loaders_peak(tmp_path):
    _make_image_folder(tmp_path)
    shape = describe_dataset(_folder_cfg(tmp_path, image_size=16))
    ds = load_dataset(_folder_cfg(tmp_path, image_size=16))
    per_image = ds.train.images[0].numel()
    assert shape.peak_bytes == (2 * (len(ds.train) + len(ds.val)) + len(ds.test)) * per_image
    assert 0 < datasets.machine_memory() < 2**50


# --- describe_dataset: load_dataset's shape and refusals, without decoding ---


def _shape_of(ds: Dataset) -> DatasetShape:
    _, channels, height, width = ds.train.images.shape
    n_train = len(ds.train) + len(ds.val)
    return DatasetShape(
        ds.name, n_train, len(ds.val), len(ds.test), ds.num_classes, channels, height, width
    )


def _same_outcome(cfg: DataConfig, hold_out: bool = True) -> DatasetShape | str:
    """describe_dataset's shape, which must be load_dataset's, or both one same DataError."""
    try:
        loaded = _shape_of(load_dataset(cfg, hold_out=hold_out))
    except DataError as err:
        with pytest.raises(DataError) as described:
            describe_dataset(cfg, hold_out=hold_out)
        assert str(described.value) == str(err)
        return str(err)
    assert describe_dataset(cfg, hold_out=hold_out) == loaded
    return loaded


@pytest.mark.parametrize("hold_out", [True, False])
@pytest.mark.parametrize("val_size", [1, 200, 1436, 1437])
def test_describe_digits_is_the_loaders_shape(val_size, hold_out):
    outcome = _same_outcome(DataConfig(name="digits", val_size=val_size), hold_out)
    if val_size == 1437 and hold_out:
        assert "must be smaller than the 1437 training images" in outcome
    else:
        assert outcome == DatasetShape("digits", 1437, val_size * hold_out, 360, 10, 1, 8, 8)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    counts=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 2)), min_size=1, max_size=4),
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    image_size=st.sampled_from([0, 0, 5]),
    nested=st.booleans(),
    val_size=st.integers(1, 12),
    hold_out=st.booleans(),
)
def test_describe_image_folders_is_the_loaders_shape(
    counts, size, image_size, nested, val_size, hold_out
):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for label, (n_train, n_test) in enumerate(counts):
            for split, n in (("train", n_train), ("test", n_test)):
                folder = root / split / f"c{label}" / ("deep/er" if nested else "")
                folder.mkdir(parents=True)
                for i in range(n):
                    Image.new("RGB", size, (label * 60, 0, 0)).save(folder / f"{i}.png")
        if not any(n for _, n in counts):  # a test folder with no class folder
            (root / "test").mkdir(exist_ok=True)
        cfg = DataConfig(name="imagefolder", root=str(root), val_size=val_size,
                         image_size=image_size)  # fmt: skip
        _same_outcome(cfg, hold_out)


def _make_tiny_imagenet(tmp_path: Path, size: tuple[int, int] = (8, 8)) -> Path:
    root = tmp_path / "tiny-imagenet-200"
    colors = {"n01": (255, 0, 0), "n02": (0, 255, 0)}
    for wnid, color in colors.items():
        (root / "train" / wnid / "images").mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")  # not an image: skipped
        for i in range(3):
            Image.new("RGB", size, color).save(root / "train" / wnid / "images" / f"{i}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, wnid in enumerate(["n02", "n01", "n02"]):
        Image.new("RGB", size, colors[wnid]).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t7\t7")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("image_size", [0, 4])
@pytest.mark.parametrize("val_size", [1, 5, 6])
def test_describe_tiny_imagenet_is_the_loaders_shape(tmp_path, image_size, val_size):
    root = _make_tiny_imagenet(tmp_path, size=(10, 6))
    cfg = DataConfig(name="tinyimagenet", root=str(root), val_size=val_size, image_size=image_size)
    outcome = _same_outcome(cfg)
    if val_size < 6:
        side = (image_size,) * 2 if image_size else (6, 10)
        assert outcome == DatasetShape("tinyimagenet", 6, val_size, 3, 2, 3, *side)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_describe_cifar_without_its_files_raises_the_loaders_error(tmp_path, name):
    cfg = DataConfig(name=name, root=str(tmp_path), download=False)
    with pytest.raises(DataError) as loading:
        load_dataset(cfg)
    with pytest.raises(DataError) as describing:
        describe_dataset(cfg)
    assert str(describing.value) == str(loading.value)
    with_download = describe_dataset(DataConfig(name=name, root=str(tmp_path), val_size=5000))
    classes = 10 if name == "cifar10" else 100
    assert with_download == DatasetShape(name, 50_000, 5000, 10_000, classes, 3, 32, 32)
    assert not any(tmp_path.iterdir())  # describing downloads nothing
