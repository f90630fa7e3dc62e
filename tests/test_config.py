"""config: every preset resolves and builds, the reference recipes are the paper's, and values
from YAML or `--set` are coerced or refused with the key named."""

from __future__ import annotations

import math

import pytest

from mixmo_search.config import (
    _coerce,
    list_presets,
    load_config,
    parse_override,
    published,
    resolve_config,
)
from mixmo_search.errors import ConfigError
from mixmo_search.models import create_model

CLASSES = {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200, "digits": 10}
CHANNELS = {"digits": 1}
CIFAR = [p for p in list_presets() if p.startswith("cifar") and "cpu" not in p]
TINY = [p for p in list_presets() if p.startswith("tinyimagenet")]


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_resolves_and_builds_its_network(preset):
    cfg = resolve_config(preset=preset)
    model = create_model(
        cfg.model.name,
        n_members=cfg.model.n_members,
        num_classes=CLASSES[cfg.data.name],
        in_channels=CHANNELS.get(cfg.data.name, 3),
        stem_stride=cfg.model.stem_stride,
    )
    assert model.n_members == cfg.model.n_members
    assert cfg.optim.batch_size % cfg.optim.batch_repeat == 0


@pytest.mark.parametrize("preset", CIFAR)
def test_cifar_presets_are_the_reference_recipe(preset):
    cfg = resolve_config(preset=preset)
    o = cfg.optim
    vanilla = cfg.model.n_members == 1
    assert (cfg.model.name, o.epochs, o.batch_size) == ("wrn28_10", 300, 64)
    assert o.batch_repeat == (1 if vanilla else 4)
    assert cfg.base_lr == pytest.approx(0.05 if vanilla else 0.0125)  # 0.1 (B/b) / 128
    assert (o.l2, o.weight_decay) == (3e-4, 0.0)  # loss l2, no SGD weight decay
    assert (o.momentum, o.nesterov, o.warmup_epochs) == (0.9, True, 1.0)
    assert (o.milestones, o.gamma) == ((101, 201, 226), 0.1)
    assert (cfg.data.crop_padding, cfg.data.flip, cfg.model.stem_stride) == (4, True, 1)
    assert published(preset).metric == "test/acc"


@pytest.mark.parametrize("preset", TINY)
def test_tiny_imagenet_presets_are_the_reference_recipe(preset):
    cfg = resolve_config(preset=preset)
    o = cfg.optim
    assert cfg.model.name.startswith("preactresnet18") and cfg.model.stem_stride == 2
    assert (o.epochs, o.batch_size, o.milestones) == (1200, 100, (600, 900))
    assert cfg.base_lr * o.batch_repeat == pytest.approx(0.2)  # 0.2 / b
    assert (o.l2, o.weight_decay) == (0.0, 1e-4)  # no loss l2; SGD weight decay instead
    assert 0.6 < published(preset).low < 0.71


def test_the_published_numbers_state_their_protocol():
    paper = published("cifar100_cut_mixmo")
    assert (paper.low, paper.high) == (0.8552, 0.8559)
    assert "full training set" in paper.protocol and "best test epoch" in paper.protocol
    assert published("digits_quick") is None and published("cifar10_wrn16_2_cpu") is None


@pytest.mark.parametrize(
    ("value", "typ", "expected"),
    [
        ("3", int, 3),
        (3.0, int, 3),
        ("1e3", int, 1000),
        ("inf", float, math.inf),
        (2, float, 2.0),
        ("true", bool, True),
        ("0", bool, False),
        ("[101, 201]", tuple[int, ...], (101, 201)),
        ([4], tuple[int, ...], (4,)),
        ("cut", str, "cut"),
    ],
)
def test_values_are_coerced_to_the_field_type(value, typ, expected):
    assert _coerce("`k`", value, typ) == expected


@pytest.mark.parametrize(
    ("value", "typ", "message"),
    [
        ("2.5", int, "must be an integer"),
        (True, int, "must be an integer"),
        ("x", float, "must be a number"),
        ("maybe", bool, "must be true or false"),
        ({"a": 1}, str, "must be a string"),
        (5, tuple[int, ...], "must be a list"),
    ],
)
def test_bad_values_name_the_key(value, typ, message):
    with pytest.raises(ConfigError, match=rf"`k`.*{message}|{message}"):
        _coerce("`k`", value, typ)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1"], "unknown key `optim.lrr`"),
        (["optimizer.lr=1"], "unknown section `optimizer`"),
        (["mixing.p=1.5"], "`mixing.p` must be in [0, 1]"),
        (["mixing.block=nope"], "`mixing.block` must be one of sum, linear, cut"),
        (["optim.batch_size=48", "optim.batch_repeat=32"], "must be a multiple"),
        (["run.protocol=test"], "`run.protocol` must be one of holdout, paper"),
        (["optim.milestones=[5, 3]"], "must be increasing"),
        (["model.name=resnet9000"], "unknown `model.name`"),
        (["lr=1"], "must look like section.key=value"),
    ],
)
def test_bad_overrides_are_one_clear_error(overrides, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(preset="digits_quick", overrides=overrides)
    assert message in str(err.value)


def test_an_override_is_parsed_as_yaml():
    assert parse_override("optim.milestones=[3, 5]") == ("optim", "milestones", [3, 5])
    assert parse_override("mixing.reweight_r=.inf") == ("mixing", "reweight_r", math.inf)


def test_config_files_must_be_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        load_config(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="cannot be read as a YAML text file"):
        load_config(tmp_path / "bin.yaml")
    (tmp_path / "ok.yaml").write_text("preset: digits_quick\noptim: {epochs: 3}\n")
    assert load_config(tmp_path / "ok.yaml", ["mixing.p=0.3"]).optim.epochs == 3
