"""A training config checked against its data set and its network before anything trains.

The config model checks each field and the rules between fields; what needs the data set or
the network is checked here, cheaply: the data set's shape comes from `describe_dataset`
(no image decoded) and the network is built on PyTorch's meta device, where one training
forward and backward at the trial's shapes computes every tensor's shape and no value, so
"the kernel is larger than the input" or "no feature map is left" fail in milliseconds, and
the tensors saved for the backward pass measure the activation memory of a slot.

`python -m mixmo_search.train` runs this on the data it loaded; a search runs it on every
network shape its space can draw, before Ray starts (search/space_check.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mixmo_search.config import TrainConfig, corruption_families
from mixmo_search.corruptions import applicable
from mixmo_search.datasets import DatasetShape
from mixmo_search.errors import ConfigError

FP32_BYTES = 4
OPTIMIZER_COPIES = 3  # weights, gradients and SGD's momentum buffer, each the size of the weights


@dataclass(frozen=True)
class Footprint:
    """Memory a training of the config needs, from the meta-device pass."""

    params: int  # the network's parameters
    activation_bytes_per_slot: int  # tensors kept for the backward pass, one slot (fp32)
    data_bytes: int  # the whole data set as uint8 on the training device

    def training_bytes(self, slots: int) -> int:
        """Bytes of one training step with `slots` slots, the data set on the device."""
        weights = OPTIMIZER_COPIES * FP32_BYTES * self.params
        return weights + slots * self.activation_bytes_per_slot + self.data_bytes


def device_memory(device: torch.device) -> int:
    """Bytes of memory on `device`: the GPU's, or this machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(footprint: Footprint, slots: int, available: float, where: str) -> None:
    """Refuse a training whose estimated memory exceeds `available` bytes (`where` says
    whose memory that is)."""
    need = footprint.training_bytes(slots)
    if need > available:
        raise ConfigError(
            f"training needs about {need / 2**30:.1f} GiB ({slots} slots of "
            f"{footprint.activation_bytes_per_slot / 2**20:.0f} MiB, the weights and the data "
            f"set), more than {where}; lower optim.batch_size or the image size, or use a "
            "smaller model"
        )


def check_config(cfg: TrainConfig, shape: DatasetShape) -> Footprint:
    """Raise a ConfigError naming the keys when `cfg` cannot train on data of `shape`;
    return what its training holds in memory."""
    _check_data(cfg, shape)
    return _check_network(cfg, shape)


def _check_data(cfg: TrainConfig, shape: DatasetShape) -> None:
    data = cfg.data
    n_train = shape.n_train - shape.n_val
    if n_train < 1:
        raise ConfigError(
            f"`data.val_size` ({shape.n_val}) must be smaller than the {shape.n_train} "
            f"training images of {data.name}; lower it, e.g. data.val_size="
            f"{max(1, shape.n_train // 10)}"
        )
    if cfg.unique_per_step > n_train:
        raise ConfigError(
            f"`optim.batch_size`/`optim.batch_repeat` = {cfg.unique_per_step} unique images a "
            f"step exceeds the {n_train} training images of {data.name}; lower "
            "optim.batch_size or raise optim.batch_repeat"
        )
    asked = corruption_families(data.corruptions)
    refused = [f for f in asked if f not in applicable(asked, shape.in_channels, shape.image_size)]
    if refused and data.corruptions.strip() != "all":
        raise ConfigError(
            f"`data.corruptions` names {', '.join(refused)}, which {data.name}'s "
            f"{shape.in_channels}-channel {shape.image_size} px images cannot take (saturate "
            "needs colour, pixelate 32 px or more); drop it from data.corruptions"
        )
    if data.crop_padding > shape.image_size:
        raise ConfigError(
            f"`data.crop_padding` ({data.crop_padding}) is larger than the {shape.image_size}"
            f"-pixel images of {data.name}; use at most {shape.image_size} (the reference pads "
            "32-pixel images by 4)"
        )


def _check_network(cfg: TrainConfig, shape: DatasetShape) -> Footprint:
    """One training forward and backward on the meta device, two slots, the trial's shapes."""
    from mixmo_search.models import create_model

    slots, members, size = 2, cfg.model.n_members, shape.image_size
    with torch.device("meta"):
        model = create_model(
            cfg.model.name, n_members=members, num_classes=shape.num_classes,
            in_channels=shape.in_channels, stem_stride=cfg.model.stem_stride,
        )  # fmt: skip
        images = torch.empty(members, slots, shape.in_channels, size, size)
        mask_side = size // model.encoder_stride
        masks = torch.empty(members, slots, 1, mask_side, mask_side)
    saved = [0]

    def count(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * FP32_BYTES
        return tensor

    try:
        encoded = tuple(model.encoders[0](images[0]).shape[-2:])
        if encoded != (mask_side, mask_side):  # the trainer draws masks of size // stride
            raise RuntimeError(
                f"the encoders give {encoded[0]}x{encoded[1]} features, MixMo's masks are "
                f"{mask_side}x{mask_side} ({size} // stride {model.encoder_stride}): the stem "
                "stride must divide the image size"
            )
        with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
            logits = model(images, masks)  # (M, B, K)
        logits.float().logsumexp(-1).sum().backward()
    except RuntimeError as err:
        raise ConfigError(
            f"`model.name` {cfg.model.name} with `model.stem_stride` {cfg.model.stem_stride} "
            f"cannot train on the {size}x{size} images of {cfg.data.name}: "
            f"{str(err).splitlines()[0][:200]}; lower model.stem_stride, or use larger images "
            "(data.image_size for image folders)"
        ) from None
    data_bytes = (shape.n_train + shape.n_test) * shape.in_channels * size * size
    params = sum(p.numel() for p in model.parameters())
    return Footprint(params, saved[0] // slots, data_bytes)
