"""The published corrupted test sets (`data.corruptions_test`): CIFAR-10-C and CIFAR-100-C of
Hendrycks & Dietterich (ICLR 2019), read from `<data.root>/CIFAR-10-C/` (or -100-C), downloaded
there first, md5-checked, the way torchvision fetches its data sets.

Each folder holds `<corruption>.npy`, (50000, 32, 32, 3) uint8: the 10 000 test images at
severity 1, then 2, ... 5, in the order of the data set's own test split, and `labels.npy`.
Only the 15 benchmark corruptions are read (the paper's mean corruption figures average
them; the 4 extra ones are its validation corruptions). Files are memory-mapped, so a
corruption's images are read as they are evaluated, one severity at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from mixmo_search.errors import DataError

BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip


class Release(NamedTuple):
    url: str
    md5: str
    folder: str


RELEASES = {
    "cifar10-c": Release(
        "https://zenodo.org/record/2535967/files/CIFAR-10-C.tar",
        "56bf5dcef84df0e2308c6dcbcbbd8499",
        "CIFAR-10-C",
    ),
    "cifar100-c": Release(
        "https://zenodo.org/record/3555552/files/CIFAR-100-C.tar",
        "11f0ed0f1191edbf9fa23466ae6021d3",
        "CIFAR-100-C",
    ),
}


def corruption_folder(name: str, root: str | Path, *, download: bool) -> Path:
    """The folder of the release `name` under `root`, downloaded and extracted if missing and
    `download`; one clear error otherwise."""
    release = RELEASES[name]
    folder = Path(root).expanduser() / release.folder
    if not (folder / "labels.npy").is_file():
        if not download:
            raise DataError(
                f"{name} is not in {folder} (`data.root`) and `data.download` is false; "
                "`--set data.download=true` to fetch it, or put the extracted folder there"
            )
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(release.url, str(folder.parent), md5=release.md5)
        except (RuntimeError, OSError) as err:
            raise DataError(
                f"could not download {name} into {folder.parent} (`data.root`): {err}; check "
                "the network, or put the extracted folder there"
            ) from err
    missing = [c for c in BENCHMARK_CORRUPTIONS if not (folder / f"{c}.npy").is_file()]
    if missing:
        raise DataError(
            f"{folder} lacks {', '.join(f'{c}.npy' for c in missing)}; extract {name} again"
        )
    return folder


def corrupted_test(
    folder: Path, subset: Tensor, labels: Tensor
) -> Iterator[tuple[str, int, Tensor]]:
    """(corruption, severity, (n, 3, 32, 32) uint8 images) for every benchmark corruption and
    severity, the test images `subset` indexes; `labels` (the test split's) must match."""
    stored = np.load(folder / "labels.npy", mmap_mode="r")
    per_severity = len(labels)  # 10 000: the CIFAR test split, in its order
    index = subset.cpu().numpy()
    if len(stored) != 5 * per_severity or not np.array_equal(
        stored[index].astype(np.int64), labels[subset].cpu().numpy()
    ):
        raise DataError(
            f"{folder}/labels.npy does not match the test split's labels: it is not the "
            "corrupted copy of this data set's test set; extract it again"
        )
    for corruption in BENCHMARK_CORRUPTIONS:
        images = np.load(folder / f"{corruption}.npy", mmap_mode="r")  # (50000, 32, 32, 3)
        for severity in range(1, 6):
            rows = images[(severity - 1) * per_severity + index]
            yield (
                corruption,
                severity,
                torch.from_numpy(np.ascontiguousarray(rows)).permute(0, 3, 1, 2),
            )
