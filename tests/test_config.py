"""config: every preset resolves and builds, the reference recipes are the paper's, and values
from YAML or `--set` are coerced or refused with the key named."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixmo_search.config import (
    KEYS,
    PRESET_DIR,
    SECTIONS,
    TrainConfig,
    list_presets,
    load_config,
    parse_override,
    published,
    resolve_config,
)
from mixmo_search.datasets import DatasetShape
from mixmo_search.errors import ConfigError
from mixmo_search.models import create_model
from mixmo_search.preflight import check_config
from mixmo_search.train import main as train_main
from tests.waiting import scaled

CLASSES = {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200, "digits": 10}
CHANNELS = {"digits": 1}
CIFAR = [p for p in list_presets() if p.startswith("cifar") and "cpu" not in p]
TINY = [p for p in list_presets() if p.startswith("tinyimagenet")]


SIZES = {"tinyimagenet": 64, "digits": 8}
TRAIN_IMAGES = {"tinyimagenet": 100000, "digits": 1437}


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_resolves_and_trains_its_network(preset):
    """Each preset's network, built on the meta device, runs a training step at its data
    set's shapes (preflight), and its parameter count is the real network's."""
    cfg = resolve_config(preset=preset)
    name = cfg.data.name
    side = SIZES.get(name, 32)
    shape = DatasetShape(name, TRAIN_IMAGES.get(name, 50000), cfg.data.val_size, 10000,
                         CLASSES[name], CHANNELS.get(name, 3), side, side)  # fmt: skip
    footprint = check_config(cfg, shape)
    assert footprint.activation_bytes_per_slot > 0
    if name == "digits":  # small enough to build for real
        real = create_model(cfg.model.name, n_members=cfg.model.n_members,
                            num_classes=10, in_channels=1)  # fmt: skip
        assert footprint.params == sum(p.numel() for p in real.parameters())
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
    ("key", "value", "expected"),
    [
        ("optim.epochs", "3", 3),
        ("optim.epochs", 3.0, 3),
        ("optim.epochs", "1e3", 1000),
        ("mixing.reweight_r", "inf", math.inf),
        ("mixing.reweight_r", 2, 2.0),
        ("run.compile", "true", True),
        ("run.compile", "0", False),
        ("optim.milestones", "[101, 201]", (101, 201)),
        ("optim.milestones", "(101, 201, 226)", (101, 201, 226)),  # an MLflow param
        ("optim.milestones", [4], (4,)),
        ("mixing.block", "cut", "cut"),
        ("data.root", 7, "7"),
    ],
)
def test_values_are_coerced_to_the_field_type(key, value, expected):
    section, name = key.split(".")
    cfg = resolve_config(preset="digits_quick", overrides={key: value})
    assert getattr(getattr(cfg, section), name) == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("optim.epochs", "2.5", "must be an integer"),
        ("optim.epochs", True, "must be an integer"),
        ("optim.lr", "x", "must be a number"),
        ("optim.lr", True, "must be a number"),
        ("run.compile", "maybe", "must be true or false"),
        ("data.root", {"a": 1}, "must be a string"),
        ("optim.milestones", 5, "must be a list"),
        # found by a hostile check (issue 17): accepted, then crashed or trained nonsense
        ("run.seed", 1e30, "`run.seed` must be in [0, 4294967295]"),
        ("data.split_seed", 1e30, "`data.split_seed` must be in [0, 4294967295]"),
        ("mixing.alpha", math.nan, "`mixing.alpha` must be a finite number"),
        ("mixing.alpha", math.inf, "`mixing.alpha` must be a finite number"),
        ("mixing.reweight_r", math.nan, "must be a number > 0 or .inf"),
        ("optim.momentum", 0, "`optim.nesterov` needs `optim.momentum` > 0"),
        ("data.image_size", 200000, "`data.image_size` must be in [0, 1024]"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(preset="digits_quick", overrides={key: value})
    assert message in str(err.value) and key.split(".")[1] in str(err.value)


ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["inf", "-inf", "nan", "1e30", "0", "-1", "[1, 2]", "true", "cut"]),
    st.lists(st.integers(-3, 400), max_size=4), st.dictionaries(st.text(max_size=3), st.none()),
)  # fmt: skip


@settings(max_examples=400, deadline=None, derandomize=True)
@given(key=st.sampled_from(KEYS), value=ANY_VALUE)
def test_every_field_takes_a_valid_value_or_names_itself_in_one_line(key, value):
    """Over every field of the typed config and any value YAML, `--set` or MLflow can give:
    a valid config that round-trips through its flat form, or one ConfigError line naming
    the key; never another exception."""
    try:
        cfg = resolve_config(preset="digits_quick", overrides={key: value})
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message and key.split(".")[1] in message, (key, value, message)
        return
    assert resolve_config(overrides=cfg.flat()) == cfg
    assert TrainConfig.model_validate(cfg.to_dict()) == cfg


def test_the_field_list_is_the_models():
    assert KEYS == tuple(f"{s}.{k}" for s, cls in SECTIONS.items() for k in cls.model_fields)
    assert "optim.lr" in KEYS and len(KEYS) == len(set(KEYS))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1"], "unknown key `optim.lrr`"),
        (["optimizer.lr=1"], "unknown section `optimizer`"),
        (["optim.lr=["], "override 'optim.lr=[': not valid YAML"),
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


# --- YAML at the boundary: config files, presets and `--set` values (issue 17, group 4) ---

LAUGHS = (
    "l0: &l0 ["
    + ", ".join(["lol"] * 10)
    + "]\n"
    + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))
)  # 10**10 values once its aliases are expanded
BAD_YAML = {
    "loop.yaml": ("optim:\n  milestones: &m [1, *m]\n", "loop.yaml:2: the alias *m sits inside"),
    "deep.yaml": ("optim: " + "[" * 3000 + "]" * 3000 + "\n", "more than 64 lists or mappings"),
    "bomb.yaml": (LAUGHS, "its aliases expand it to"),
    "big.yaml": ("#" * (1 << 20) + "\n", "larger than the 1,048,576 bytes"),
}


def _write_bad_yaml(folder: Path) -> None:
    for name, (text, _) in BAD_YAML.items():
        (folder / name).write_text(text)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--set", "optim.lr=["], "override 'optim.lr=[': not valid YAML"),
        (["--set", "optim.milestones=&a [*a]"], "override 'optim.milestones=&a [*a]': the alias"),
        (["--set", "optim.milestones=" + "[" * 3000], "more than 64 lists or mappings"),
        (["--set", "data.split_seed=2024-13-01"], "month must be in 1..12"),
        *((["--config", name], expected) for name, (_, expected) in BAD_YAML.items()),
        (["--preset", "{evil}"], "unknown preset '{evil}'; choose one of: cifar100_cut_mixmo"),
    ],
)
def test_bad_yaml_and_preset_paths_are_one_line_exit_2_nothing_written(
    tmp_path, monkeypatch, capsys, argv, expected
):
    _write_bad_yaml(tmp_path)
    evil = tmp_path / "evil.yaml"  # a valid config, reached as a "preset" by a relative path
    evil.write_text("data: {name: digits}\n")
    relative = os.path.relpath(tmp_path / "evil", PRESET_DIR)
    argv = [a.replace("{evil}", relative) for a in argv]
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exited:
        train_main([*argv, "--set", "optim.epochs=1"])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and expected.replace("{evil}", relative) in err, err
    assert sorted(tmp_path.rglob("*")) == before


def test_a_bad_override_is_one_line_through_the_cli(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mixmo_search.train", "--preset", "digits_quick",
         "--set", "optim.lr=["],
        capture_output=True, text=True, timeout=scaled(300), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: override 'optim.lr=[': not valid YAML (expected the node content, but found "
        "'<stream end>' while parsing a flow node); fix the syntax"
    ]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../presets/digits_quick", "/etc/hostname", "digits_quick ", 3])
def test_a_preset_is_a_shipped_name_never_a_path(name):
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config(preset=name)
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config({"preset": name})  # as a config file's `preset:` key
    assert resolve_config(preset="digits_quick").data.name == "digits"
