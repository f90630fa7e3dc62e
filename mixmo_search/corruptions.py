"""Generated common corruptions (docs/method.md §Uncertainty): the Hendrycks & Dietterich (ICLR
2019) families that torch ops define, at their five CIFAR severities, as batched tensor ops on
the images' device.

These are *generated*: they follow the published recipe (make_cifar_c.py of the paper's code:
the same formulas and severity constants) but are not the published CIFAR-10-C files, whose
noise draws and image library differ; `corruption_files.py` reads those. Each family draws its
noise from its own seeded generator, the same draws at every severity (common random
numbers), so severities differ only by their constant and a split's corrupted images are the
same at every evaluation, in every trial. Where torch differs from the recipe's library it is
said at the family. Images are (N, C, H, W) uint8, returned uint8 (rounded), any C and size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mixmo_search.config import CORRUPTION_FAMILIES

SEVERITIES = (1, 2, 3, 4, 5)
COLOUR_ONLY = ("saturate",)  # families that need three channels
# The recipe's CIFAR constants assume 32 px; on smaller images pixelate's 5-7 pixel grids
# jitter strokes instead of coarsening them (8 px digits: accuracy 0.83 at severity 3, 0.89 at
# 5), so it needs images of at least this side
PIXELATE_MIN_SIDE = 32
# make_cifar_c.py's constants for 32x32 images, severity 1..5
PARAMS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std, on [0, 1] pixels
    "shot_noise": (500, 250, 100, 75, 50),  # photons at full intensity
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # salt-and-pepper fraction
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),  # multiplicative std
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma, pixels
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk r, alias
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor around the channel mean
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),  # HSV s * a + b
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # side kept before scaling back
    "jpeg": (80, 65, 58, 50, 40),  # quality
}
GAUSSIAN_TRUNCATE = 4.0  # kernel radius in sigmas (scikit-image's gaussian default)


def applicable(families: tuple[str, ...], channels: int, side: int) -> tuple[str, ...]:
    """`families` in their canonical order, less those images of `channels` channels and
    `side` pixels cannot take (colour-only ones on grey images, pixelate below 32 px)."""
    return tuple(
        f
        for f in CORRUPTION_FAMILIES
        if f in families
        and (channels == 3 or f not in COLOUR_ONLY)
        and (side >= PIXELATE_MIN_SIDE or f != "pixelate")
    )


def corrupt(images: Tensor, family: str, severity: int, *, seed: int) -> Tensor:
    """`images` (N, C, H, W) uint8 corrupted by `family` at `severity` (1-5), on their device;
    the same `seed` gives the same noise at every severity."""
    if family not in PARAMS:
        raise ValueError(f"unknown corruption {family!r}; choose one of {', '.join(PARAMS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    if not applicable((family,), images.shape[1], min(images.shape[2:])):
        raise ValueError(f"{family} cannot corrupt images of shape {tuple(images.shape[1:])}")
    gen = torch.Generator(device=images.device)
    gen.manual_seed(seed * len(PARAMS) + list(PARAMS).index(family))
    pixels = images.float() / 255
    corrupted = _FAMILIES[family](pixels, PARAMS[family][severity - 1], gen)
    return (corrupted.clamp(0, 1) * 255).round().to(torch.uint8)


# --- noise ---


def _normal(x: Tensor, gen: torch.Generator) -> Tensor:
    return torch.randn(x.shape, generator=gen, device=x.device)


def _uniform(x: Tensor, gen: torch.Generator) -> Tensor:
    return torch.rand(x.shape, generator=gen, device=x.device)


def _gaussian_noise(x: Tensor, std: float, gen: torch.Generator) -> Tensor:
    return x + std * _normal(x, gen)


def _shot_noise(x: Tensor, photons: float, gen: torch.Generator) -> Tensor:
    """Poisson(x * photons) / photons. The counts of a severity are a random thinning of the
    previous severity's (a Poisson count thinned is Poisson), so the same draws serve every
    severity: each keeps a subset of the photons the milder one caught."""
    ladder = PARAMS["shot_noise"]
    counts = torch.poisson(x * ladder[0], generator=gen)
    for higher, lower in zip(ladder, ladder[1 : ladder.index(photons) + 1], strict=False):
        counts = torch.binomial(counts, torch.full_like(counts, lower / higher), generator=gen)
    return counts / photons


def _impulse_noise(x: Tensor, amount: float, gen: torch.Generator) -> Tensor:
    """Salt and pepper on each value (scikit-image's random_noise 's&p', half salt); the
    flipped set grows with the amount, as the draws are shared."""
    flipped, salt = _uniform(x, gen) < amount, _uniform(x, gen) < 0.5
    return torch.where(flipped, salt.float(), x)


def _speckle_noise(x: Tensor, std: float, gen: torch.Generator) -> Tensor:
    return x + x * std * _normal(x, gen)


# --- blur ---


def _filter(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Each channel of `x` correlated with the 2-D `kernel` (odd sides), borders padded."""
    n, c, h, w = x.shape
    ky, kx = kernel.shape[0] // 2, kernel.shape[1] // 2
    flat = F.pad(x.reshape(n * c, 1, h, w), (kx, kx, ky, ky), mode=mode)
    return F.conv2d(flat, kernel[None, None].to(x)).reshape(n, c, h, w)


def _gaussian_kernel_1d(sigma: float, radius: int) -> Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def _gaussian_blur(x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    """scikit-image's gaussian: radius int(4 sigma + 0.5), edges repeated ('nearest')."""
    radius = min(int(GAUSSIAN_TRUNCATE * sigma + 0.5), min(x.shape[2:]) - 1)
    line = _gaussian_kernel_1d(sigma, radius).float()
    return _filter(x, line[:, None] * line[None, :], "replicate")


def _defocus_blur(x: Tensor, params: tuple[float, float], gen: torch.Generator) -> Tensor:
    """A disk of radius r, anti-aliased by a 3x3 Gaussian of sigma `alias` (OpenCV's
    GaussianBlur), mirrored borders (OpenCV's filter2D default, torch's 'reflect')."""
    radius, alias = params
    grid = torch.arange(-8, 9, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).double()
    disk /= disk.sum()
    smooth = _gaussian_kernel_1d(alias, 1)
    kernel = F.conv2d(disk[None, None], (smooth[:, None] * smooth[None, :])[None, None], padding=1)
    kernel = kernel[0, 0]
    rows, cols = kernel.abs().sum(1).nonzero(), kernel.abs().sum(0).nonzero()
    reach = int(max(8 - rows.min(), rows.max() - 8, 8 - cols.min(), cols.max() - 8))
    reach = min(reach, min(x.shape[2:]) - 1)  # reflect padding must stay inside the image
    return _filter(x, kernel[8 - reach : 9 + reach, 8 - reach : 9 + reach].float(), "reflect")


# --- colour and contrast (HSV as scikit-image's rgb2hsv / hsv2rgb define it) ---


def _brightness(x: Tensor, shift: float, gen: torch.Generator) -> Tensor:
    """HSV value + shift with hue and saturation kept: each colour scales by V'/V (a black
    pixel, whose saturation is 0, becomes grey V'); grey images add the shift."""
    if x.shape[1] == 1:
        return x + shift
    value = x.amax(dim=1, keepdim=True)
    lifted = (value + shift).clamp(0, 1)
    return torch.where(value > 0, x * lifted / value.clamp(min=1e-12), lifted.expand_as(x))


def _contrast(x: Tensor, factor: float, gen: torch.Generator) -> Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)  # per image and channel, as the recipe
    return (x - mean) * factor + mean


def _saturate(x: Tensor, params: tuple[float, float], gen: torch.Generator) -> Tensor:
    """HSV saturation * a + b with hue and value kept. A grey pixel (saturation 0) stays grey,
    where the recipe tints it red (its hue of a grey pixel is 0)."""
    scale, shift = params
    value = x.amax(dim=1, keepdim=True)
    saturation = (value - x.amin(dim=1, keepdim=True)) / value.clamp(min=1e-12)
    target = (saturation * scale + shift).clamp(0, 1)
    ratio = torch.where(saturation > 0, target / saturation.clamp(min=1e-12), 1.0)
    return value - (value - x) * ratio


# --- resampling and compression ---


def _pixelate(x: Tensor, keep: float, gen: torch.Generator) -> Tensor:
    """Down to int(side * keep) and back up, as the recipe's PIL BOX filter does both ways: an
    output pixel averages the input pixels whose centres fall in its footprint; going up, that
    is the nearest one."""
    height, width = x.shape[2:]
    small_h, small_w = int(height * keep), int(width * keep)
    rows, cols = _box_weights(small_h, height).to(x), _box_weights(small_w, width).to(x)
    small = rows @ x @ cols.T  # (N, C, small_h, small_w)
    return F.interpolate(small, size=(height, width), mode="nearest-exact")


def _box_weights(size_out: int, size_in: int) -> Tensor:
    """(size_out, size_in): row o averages the inputs i with o <= (i + 0.5) * out/in < o + 1."""
    footprint = ((torch.arange(size_in) + 0.5) * size_out / size_in).floor().long()
    weights = F.one_hot(footprint, size_out).T.double()
    return weights / weights.sum(dim=1, keepdim=True)


# JPEG's example tables (ITU-T T.81 Annex K), scaled by quality as libjpeg does
_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)  # fmt: skip
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99), (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8,) * 4,
)  # fmt: skip
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312)
)  # fmt: skip


def quantisation_table(base: tuple[tuple[int, ...], ...], quality: int) -> Tensor:
    """libjpeg's jpeg_quality_scaling: 5000/q below 50, else 200 - 2q percent, in [1, 255]."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    table = (torch.tensor(base, dtype=torch.float64) * scale + 50) // 100
    return table.clamp(1, 255)


def _dct_matrix() -> Tensor:
    """(8, 8) orthonormal DCT-II: JPEG's forward transform is C X C^T."""
    u, x = torch.arange(8.0)[:, None], torch.arange(8.0)[None, :]
    matrix = torch.cos((2 * x + 1) * u * math.pi / 16) * math.sqrt(2 / 8)
    matrix[0] /= math.sqrt(2)
    return matrix


def _quantise_plane(plane: Tensor, table: Tensor) -> Tensor:
    """(N, H, W) samples in [0, 255], H and W multiples of 8: level shift, 8x8 DCT,
    quantisation with `table`, and back."""
    n, height, width = plane.shape
    blocks = (plane - 128).reshape(n, height // 8, 8, width // 8, 8).transpose(2, 3)
    dct, table = _dct_matrix().to(plane), table.to(plane)
    coefficients = dct @ blocks @ dct.T
    restored = dct.T @ ((coefficients / table).round() * table) @ dct
    return restored.transpose(2, 3).reshape(n, height, width) + 128


def _jpeg(x: Tensor, quality: int, gen: torch.Generator) -> Tensor:
    """JPEG's lossy steps as libjpeg's baseline encoder takes them at `quality` (PIL's
    default): YCbCr, 4:2:0 chroma by 2x2 means, 8x8 DCT, the Annex K tables scaled by
    quality, rounding; decoded with libjpeg's fancy (bilinear) chroma upsampling. Entropy
    coding is lossless and skipped. Edges are repeated to whole blocks, as libjpeg pads."""
    n, channels, height, width = x.shape
    unit = 16 if channels == 3 else 8
    pad_h, pad_w = -height % unit, -width % unit
    samples = F.pad(x * 255, (0, pad_w, 0, pad_h), mode="replicate")
    luma_table = quantisation_table(_LUMA_TABLE, quality)
    if channels == 1:
        decoded = _quantise_plane(samples[:, 0], luma_table)[:, None]
    else:
        to_ycbcr = torch.tensor(_RGB_TO_YCBCR).to(x)
        ycbcr = torch.einsum("oc,nchw->nohw", to_ycbcr, samples)
        luma = _quantise_plane(ycbcr[:, 0], luma_table)
        chroma = F.avg_pool2d(ycbcr[:, 1:], 2)  # (N, 2, H/2, W/2), centred on 0
        chroma_table = quantisation_table(_CHROMA_TABLE, quality)
        chroma = _quantise_plane((chroma + 128).flatten(0, 1), chroma_table) - 128
        chroma = F.interpolate(chroma.view(n, 2, *chroma.shape[1:]), scale_factor=2,
                               mode="bilinear", align_corners=False)  # fmt: skip
        decoded = torch.einsum(
            "oc,nchw->nohw", torch.linalg.inv(to_ycbcr), torch.cat([luma[:, None], chroma], 1)
        )
    return decoded[:, :, :height, :width] / 255


_FAMILIES: dict[str, Callable[[Tensor, object, torch.Generator], Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "defocus_blur": _defocus_blur,
    "brightness": _brightness,
    "contrast": _contrast,
    "saturate": _saturate,
    "pixelate": _pixelate,
    "jpeg": _jpeg,
}
