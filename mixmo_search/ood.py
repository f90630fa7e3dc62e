"""Out-of-distribution image sets (`data.ood`), in the format of the data set a network trains
on (docs/method.md §Uncertainty).

Each source gives two disjoint sets: one scored against the validation split (it may select
trials) and one against the test split (it only reports). The validation set comes from the
source's training images, the test set from its test images (sklearn-photos: one seeded half
of its tiles each). Each is cut to at most as many images as the split it is scored against,
by a seeded draw, and converted to that data set's channels (luminance for grey) and size
(antialiased resampling).

`sklearn-photos` ships with scikit-learn, so it works offline (tests, the CPU quick start): the
two sample photographs of `sklearn.datasets.load_sample_images` (china.jpg and flower.jpg, 427 x
640) cut into 32 x 32 tiles, 520 in all. It is a far-OOD set of natural-image textures, not a
published benchmark. `svhn`, `cifar10` and `cifar100` are the published sets, downloaded by
torchvision into `data.root` (md5-checked); `imagefolder:PATH` reads PATH/train/<class>/ and
PATH/test/<class>/ like `data.name=imagefolder`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mixmo_search.config import OOD_FOLDER, DataConfig
from mixmo_search.datasets import Dataset, load_dataset
from mixmo_search.errors import DataError

PHOTO_TILE = 32  # pixels of a tile of the scikit-learn photographs
OOD_SEED = 0  # fixes which images each split's OOD set holds: the same in every trial
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


class OodSets(NamedTuple):
    """OOD images scored against val and against test, (N, C, H, W) uint8 on the CPU."""

    name: str
    val: Tensor
    test: Tensor


def load_ood(data: DataConfig, like: Dataset) -> OodSets:
    """The OOD sets `data.ood` names, in the format of `like` (which must be loaded)."""
    if data.ood == "sklearn-photos":
        val, test = _photo_tiles()
    elif data.ood == "svhn":
        val, test = _svhn(data)
    elif data.ood in ("cifar10", "cifar100"):
        val, test = _torchvision_set(data.model_copy(update={"name": data.ood, "ood": ""}))
    elif data.ood.startswith(OOD_FOLDER):
        root = data.ood.removeprefix(OOD_FOLDER)
        folder = DataConfig(name="imagefolder", root=root, image_size=like.image_size)
        val, test = _torchvision_set(folder)
    else:
        raise DataError(f"`data.ood` {data.ood!r} is not an OOD set; see docs/method.md")
    return OodSets(
        data.ood,
        _like(_draw(val, len(like.val), "val"), like),
        _like(_draw(test, len(like.test), "test"), like),
    )


def _draw(images: Tensor, limit: int, split: str) -> Tensor:
    """At most `limit` of `images`, by a draw seeded per split."""
    if len(images) <= limit:
        return images
    seed = OOD_SEED + (split == "test")
    return images[
        torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:limit]
    ]


def _like(images: Tensor, like: Dataset) -> Tensor:
    """`images` with the channels and side of `like`'s images."""
    if images.shape[1] == 3 and like.in_channels == 1:
        weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
        images = (images.float() * weights).sum(dim=1, keepdim=True).round().to(torch.uint8)
    elif images.shape[1] == 1 and like.in_channels == 3:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[2:] != (like.image_size, like.image_size):
        resized = F.interpolate(
            images.float(), size=(like.image_size,) * 2, mode="bilinear", antialias=True
        )
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous()


def _photo_tiles() -> tuple[Tensor, Tensor]:
    """The tiles of scikit-learn's two sample photographs, seeded halves for val and test."""
    from sklearn.datasets import load_sample_images

    tiles = []
    for photo in load_sample_images().images:  # (427, 640, 3) uint8 each
        image = torch.from_numpy(photo.copy()).permute(2, 0, 1)
        rows, cols = image.shape[1] // PHOTO_TILE, image.shape[2] // PHOTO_TILE
        cut = image[:, : rows * PHOTO_TILE, : cols * PHOTO_TILE]
        cut = cut.reshape(3, rows, PHOTO_TILE, cols, PHOTO_TILE).permute(1, 3, 0, 2, 4)
        tiles.append(cut.reshape(rows * cols, 3, PHOTO_TILE, PHOTO_TILE))
    every = torch.cat(tiles)
    order = torch.randperm(len(every), generator=torch.Generator().manual_seed(OOD_SEED))
    half = len(every) // 2
    return every[order[:half]], every[order[half:]]


def _svhn(data: DataConfig) -> tuple[Tensor, Tensor]:
    from torchvision.datasets import SVHN

    try:
        parts = [SVHN(data.root, split=s, download=data.download) for s in ("train", "test")]
    except (RuntimeError, OSError) as err:  # torchvision: files missing, or the download failed
        raise DataError(
            f"SVHN (`data.ood`) is not in {data.root} (`data.root`) and could not be "
            f"{'downloaded' if data.download else 'read'}: {err}; check the network, or "
            "--set data.download=true, or drop data.ood"
        ) from err
    return tuple(torch.from_numpy(part.data) for part in parts)  # (N, 3, 32, 32) uint8


def _torchvision_set(data: DataConfig) -> tuple[Tensor, Tensor]:
    """The training images (for val) and test images of a data set this project loads."""
    loaded = load_dataset(data, hold_out=False)
    return loaded.train.images, loaded.test.images
