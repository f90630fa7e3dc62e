"""Generated corruptions (mixmo_search/corruptions.py): each family against its definition or
the library the recipe used, and severities that order accuracy on a trained digits model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.datasets import load_digits, load_sample_images
from torchvision.io import decode_jpeg, encode_jpeg

from mixmo_search.config import CORRUPTION_FAMILIES
from mixmo_search.corruptions import PARAMS, SEVERITIES, applicable, corrupt
from mixmo_search.inference import member_logits

NOISY = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """(80, 3, 32, 32) crops of scikit-learn's sample photographs."""
    return torch.stack([
        torch.from_numpy(photo[y : y + 32, x : x + 32].copy()).permute(2, 0, 1)
        for photo in load_sample_images().images
        for y in range(0, 400, 80)
        for x in range(0, 600, 80)
    ])  # fmt: skip


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as the trainer holds them: (N, 1, 8, 8) uint8, and their labels."""
    bunch = load_digits()
    images = torch.from_numpy(bunch.images * (255 / 16)).round().to(torch.uint8)[:, None]
    return images, torch.from_numpy(bunch.target)


def test_every_family_keeps_shape_dtype_and_is_reproducible(photos):
    few = torch.cat([photos[:6], photos[:6, :, :, :8]], dim=3)  # 32 x 40: not square
    for family in CORRUPTION_FAMILIES:
        for severity in SEVERITIES:
            out = corrupt(few, family, severity, seed=3)
            assert out.shape == few.shape and out.dtype == torch.uint8
            assert torch.equal(out, corrupt(few, family, severity, seed=3))
    different = corrupt(photos, "gaussian_noise", 3, seed=4)
    assert not torch.equal(different, corrupt(photos, "gaussian_noise", 3, seed=3))


def test_which_families_images_can_take():
    assert "saturate" not in applicable(CORRUPTION_FAMILIES, 1, 32)
    assert "pixelate" not in applicable(CORRUPTION_FAMILIES, 3, 8)
    assert applicable(CORRUPTION_FAMILIES, 3, 32) == CORRUPTION_FAMILIES
    with pytest.raises(ValueError, match="cannot corrupt"):
        corrupt(torch.zeros(1, 1, 32, 32, dtype=torch.uint8), "saturate", 1, seed=0)


def test_noise_has_the_recipes_strength():
    flat = torch.full((4, 3, 64, 64), 128, dtype=torch.uint8)
    x = 128 / 255
    for severity, std in enumerate(PARAMS["gaussian_noise"], 1):
        noise = corrupt(flat, "gaussian_noise", severity, seed=0).float() / 255 - x
        assert noise.std().item() == pytest.approx(std, rel=0.03)
    for severity, photons in enumerate(PARAMS["shot_noise"], 1):
        noise = corrupt(flat, "shot_noise", severity, seed=0).float() / 255 - x
        assert noise.std().item() == pytest.approx(math.sqrt(x / photons), rel=0.05)
    for severity, amount in enumerate(PARAMS["impulse_noise"], 1):
        flipped = (corrupt(flat, "impulse_noise", severity, seed=0) != 128).float().mean()
        assert flipped.item() == pytest.approx(amount, rel=0.1)
    for severity, std in enumerate(PARAMS["speckle_noise"], 1):
        noise = corrupt(flat, "speckle_noise", severity, seed=0).float() / 255 - x
        assert noise.std().item() == pytest.approx(x * std, rel=0.05)


def test_gaussian_blur_is_scipys_filter_with_repeated_edges(photos):
    for severity, sigma in enumerate(PARAMS["gaussian_blur"], 1):
        ours = corrupt(photos, "gaussian_blur", severity, seed=0).float()
        theirs = gaussian_filter(photos.double().numpy() / 255, sigma=(0, 0, sigma, sigma),
                                 mode="nearest", truncate=4.0)  # fmt: skip
        expected = torch.from_numpy(theirs * 255).round()
        assert (ours - expected).abs().max().item() <= 1


def test_pixelate_is_pils_box_resampling_both_ways(photos):
    for severity, keep in enumerate(PARAMS["pixelate"], 1):
        side = int(32 * keep)
        expected = torch.stack([
            torch.from_numpy(np.asarray(
                Image.fromarray(img.permute(1, 2, 0).numpy()).resize((side, side), Image.BOX)
                .resize((32, 32), Image.BOX)
            ).copy()).permute(2, 0, 1)
            for img in photos
        ])  # fmt: skip
        diff = (corrupt(photos, "pixelate", severity, seed=0).int() - expected.int()).abs()
        assert diff.max().item() <= 1  # PIL rounds in fixed point


def test_jpeg_is_close_to_libjpeg_at_each_quality(photos, digits):
    for images in (photos, digits[0][:300]):
        for severity, quality in enumerate(PARAMS["jpeg"], 1):
            ours = corrupt(images, "jpeg", severity, seed=0).float()
            libjpeg = torch.stack([decode_jpeg(encode_jpeg(im, quality=quality)) for im in images])
            change = (images.float() - libjpeg.float()).abs().mean()
            assert (ours - libjpeg.float()).abs().mean() < 0.3 * change  # measured 0.03-0.25


def test_brightness_contrast_and_saturation_by_hand():
    pixel = torch.tensor([200, 100, 50], dtype=torch.uint8).view(1, 3, 1, 1)
    brighter = corrupt(pixel, "brightness", 5, seed=0).flatten().tolist()  # V 200/255 + 0.3
    value = min(200 / 255 + 0.3, 1.0)
    assert brighter == [round(c * value / (200 / 255)) for c in (200, 100, 50)]
    assert corrupt(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), "brightness", 5, seed=0
                   ).flatten().tolist() == [76, 76, 76]  # black gets the value, grey  # fmt: skip
    two = torch.tensor([[[[0, 200]]]], dtype=torch.uint8)  # mean 100
    assert corrupt(two, "contrast", 2, seed=0).flatten().tolist() == [50, 150]  # factor 0.5
    # saturation (200 - 50) / 200 = 0.75 -> 0.75 * 0.3 = 0.225 at severity 1; hue, value kept
    faded = corrupt(pixel, "saturate", 1, seed=0).flatten().tolist()
    assert faded == [200, round(200 - 100 * 0.3), round(200 - 150 * 0.3)]
    grey = torch.full((1, 3, 1, 1), 90, dtype=torch.uint8)
    assert torch.equal(corrupt(grey, "saturate", 5, seed=0), grey)


def test_defocus_blur_spreads_a_point_over_its_disk():
    point = torch.zeros(1, 1, 15, 15, dtype=torch.uint8)
    point[..., 7, 7] = 255
    # severity 4: a disk of radius 1 (the point and its 4 neighbours, 1/5 each), anti-aliased
    # by a 3x3 Gaussian of sigma 0.2 whose side weights are e^-12.5: 51 on the cross
    spread = corrupt(point, "defocus_blur", 4, seed=0)[0, 0]
    cross = torch.zeros(15, 15, dtype=torch.uint8)
    cross[7, 6:9] = cross[6:9, 7] = 51
    assert torch.equal(spread, cross)
    for severity in SEVERITIES:  # a normalised kernel keeps the light
        total = corrupt(point, "defocus_blur", severity, seed=0).float().sum().item()
        assert total == pytest.approx(255, abs=10)


def test_severities_order_accuracy_on_a_trained_digits_model(digits_network, digits):
    """Every family digits can take: accuracy never rises with severity by more than twice
    the standard error of the paired difference, and the worst severity costs accuracy."""
    images, labels = digits
    net = digits_network.network

    def correct(batch: torch.Tensor) -> torch.Tensor:
        logits = member_logits(net.model, batch, net.normalize, 2000).mean(0)
        return (logits.argmax(1) == labels).double()  # (N,)

    clean = correct(images).mean().item()
    for family in applicable(CORRUPTION_FAMILIES, 1, 8):
        seeds = range(2) if family in NOISY else range(1)
        hits = torch.stack([
            torch.stack([correct(corrupt(images, family, s, seed=seed)) for s in SEVERITIES])
            for seed in seeds
        ])  # (seeds, 5, N)  # fmt: skip
        acc = hits.mean(dim=(0, 2))
        for s in range(4):
            paired = (hits[:, s + 1] - hits[:, s]).flatten()
            noise = 2 * paired.pow(2).mean().sqrt().item() / math.sqrt(len(paired))
            assert acc[s + 1] <= acc[s] + noise, (family, acc.tolist())
        assert acc[4] < clean, (family, clean, acc.tolist())
