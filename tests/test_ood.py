"""OOD sets (mixmo_search/ood.py): disjoint val and test sets in the trained data's format."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from mixmo_search.config import resolve_config
from mixmo_search.datasets import load_dataset
from mixmo_search.errors import DataError
from mixmo_search.ood import _like, _photo_tiles, load_ood


@pytest.fixture(scope="module")
def digits():
    cfg = resolve_config(preset="digits_quick")
    return cfg.data, load_dataset(cfg.data)


def test_photo_tiles_split_into_disjoint_halves():
    val, test = _photo_tiles()
    assert val.shape == test.shape == (260, 3, 32, 32) and val.dtype == torch.uint8
    seen = {tile.numpy().tobytes() for tile in val}
    assert not any(tile.numpy().tobytes() in seen for tile in test)


def test_sklearn_photos_in_the_format_of_digits(digits):
    data, ds = digits
    sets = load_ood(data.model_copy(update={"ood": "sklearn-photos"}), ds)
    assert sets.val.shape == sets.test.shape == (260, 1, 8, 8)  # fewer than 300 / 360: all
    small = dataclasses.replace(ds, val=dataclasses.replace(
        ds.val, images=ds.val.images[:50], labels=ds.val.labels[:50]))  # fmt: skip
    assert len(load_ood(data.model_copy(update={"ood": "sklearn-photos"}), small).val) == 50
    assert sets.val.dtype == sets.test.dtype == torch.uint8
    again = load_ood(data.model_copy(update={"ood": "sklearn-photos"}), ds)
    assert torch.equal(again.val, sets.val)  # the same images in every trial


def test_conversion_to_grey_and_back_to_colour(digits):
    _, ds = digits
    pixel = torch.tensor([200, 100, 50], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    grey = _like(pixel, ds)
    assert grey.shape == (1, 1, 8, 8)
    assert grey[0, 0, 0, 0].item() == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    colour = dataclasses.replace(ds, train=dataclasses.replace(
        ds.train, images=ds.train.images.expand(-1, 3, -1, -1)))  # fmt: skip
    assert _like(grey, colour).shape == (1, 3, 8, 8)


def test_an_image_folder_gives_val_from_train_and_test_from_test(digits, tmp_path):
    data, ds = digits
    for part, shade in (("train", 10), ("test", 240)):
        folder = tmp_path / part / "any"
        folder.mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((16, 16, 3), shade + k, np.uint8)).save(folder / f"{k}.png")
    sets = load_ood(data.model_copy(update={"ood": f"imagefolder:{tmp_path}"}), ds)
    assert sets.val.shape == sets.test.shape == (3, 1, 8, 8)
    assert sets.val.max() < 20 and sets.test.min() > 230


def test_a_missing_published_set_is_one_clear_error(digits, tmp_path):
    data, ds = digits
    for name in ("svhn", "cifar10"):
        request = data.model_copy(update={"ood": name, "root": str(tmp_path), "download": False})
        with pytest.raises(DataError, match="data.download"):
            load_ood(request, ds)
