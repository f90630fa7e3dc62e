"""The training configuration: typed, frozen, validated, built from presets and overrides.

A config is resolved in three layers: a preset (`mixmo_search/presets/NAME.yaml`), then a
config file's own sections, then `--set section.key=value` overrides. Every key is checked:
an unknown key or a bad value raises `ConfigError` naming the key, the value and what is
allowed. The resolved config is what checkpoints and MLflow runs record.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from mixmo_search.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"

DATASETS = ("cifar10", "cifar100", "tinyimagenet", "imagefolder", "digits")
BINARY_BLOCKS = ("cut", "cow", "patchup")  # mixing.py draws their masks
MIX_BLOCKS = ("sum", "linear", *BINARY_BLOCKS)
INPUT_MIXES = ("none", "cutmix", "mixup")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("bf16", "fp32")
PROTOCOLS = ("holdout", "paper")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MAX_MEMBERS = 8
# --- uncertainty evaluation (docs/method.md §Uncertainty): the names `data.ood`,
# `data.corruptions` and `data.corruptions_test` take; ood.py and corruptions.py implement them
OOD_SETS = ("sklearn-photos", "svhn", "cifar10", "cifar100")  # or imagefolder:PATH
OOD_FOLDER = "imagefolder:"
CORRUPTION_FAMILIES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
                       "gaussian_blur", "defocus_blur", "brightness", "contrast", "saturate",
                       "pixelate", "jpeg")  # fmt: skip
CORRUPTION_FILES = ("cifar10-c", "cifar100-c")  # published corrupted test sets (downloaded)


def _choice(*allowed: str) -> dict[str, Any]:
    return {"choices": allowed}


def _range(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    return {"range": (low, high)}


@dataclass(frozen=True)
class DataConfig:
    name: str = field(default="cifar100", metadata=_choice(*DATASETS))
    root: str = "data"  # where torchvision downloads, or the image-folder root
    download: bool = True  # let torchvision fetch CIFAR when it is missing
    val_size: int = field(default=5000, metadata=_range(1))  # images held out of train
    split_seed: int = 0  # fixes which images form the validation split
    image_size: int = field(default=0, metadata=_range(0))  # imagefolder resize; 0 = keep
    crop_padding: int = field(default=4, metadata=_range(0))  # zero-pad of the random crop
    flip: bool = True  # horizontal flip (off for digits: a flipped 2 is not a 2)
    # --- uncertainty evaluation sets (docs/method.md §Uncertainty; checked in validate) ---
    # out-of-distribution images scored against val and test: "" none; sklearn-photos (tiles
    # of scikit-learn's two bundled photographs, offline); svhn, cifar10, cifar100
    # (torchvision, into data.root); imagefolder:PATH (PATH/train/<class>/ for val,
    # PATH/test/<class>/ for test). Val and test OOD images never overlap
    ood: str = ""
    # generated corruptions of val and test: "" none, "all" (every family the images allow),
    # or comma-separated families of CORRUPTION_FAMILIES; 5 severities each
    corruptions: str = ""
    # the corrupted test set: "generated" (the families above), or the published files
    # cifar10-c, cifar100-c (downloaded into data.root, md5-checked); val is always generated
    corruptions_test: str = field(
        default="generated", metadata=_choice("generated", *CORRUPTION_FILES)
    )
    corruption_size: int = field(default=1000, metadata=_range(0))  # images a split; 0 = all


@dataclass(frozen=True)
class ModelConfig:
    name: str = "wrn28_10"  # a name from `mixmo_search.models.list_models()`
    n_members: int = field(default=2, metadata=_range(1, MAX_MEMBERS))  # M encoders and heads
    stem_stride: int = field(
        default=1, metadata=_range(1, 4)
    )  # 2 on Tiny ImageNet (docs/method.md §Architectures)


@dataclass(frozen=True)
class MixingConfig:
    block: str = field(default="cut", metadata=_choice(*MIX_BLOCKS))  # the binary block
    alpha: float = 2.0  # kappa ~ Beta(alpha, alpha) / Dirichlet; <= 0 means exactly 1/M
    p: float = field(default=0.5, metadata=_range(0, 1))  # per-batch prob. of the block
    p_decay_start: float = field(default=11 / 12, metadata=_range(0, 1))  # fraction of training
    reweight_r: float = field(default=3.0, metadata=_range(1e-6))  # loss root r; .inf = equal
    input_mix: str = field(default="none", metadata=_choice(*INPUT_MIXES))  # per-member MSDA
    input_mix_prob: float = field(default=0.5, metadata=_range(0, 1))
    input_mix_alpha: float = field(default=1.0, metadata=_range(1e-6))  # lambda ~ Beta(a, a)


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = field(default=300, metadata=_range(1))
    batch_size: int = field(default=64, metadata=_range(1))  # slots per step, repeats counted
    batch_repeat: int = field(default=4, metadata=_range(1))  # b: each image b times a batch
    input_repeat: float = field(default=0.0, metadata=_range(0, 1))  # rho: same image, all M
    lr: float = field(default=0.1, metadata=_range(0))  # per 128 *unique* images a step
    momentum: float = field(default=0.9, metadata=_range(0, 1))
    nesterov: bool = True
    l2: float = field(default=3e-4, metadata=_range(0))  # loss += l2 * sum(theta^2) (§Recipes)
    weight_decay: float = field(default=0.0, metadata=_range(0))  # SGD's own, on top of l2
    warmup_epochs: float = field(default=1.0, metadata=_range(0))  # linear warm-up
    milestones: tuple[int, ...] = (101, 201, 226)  # 1-based epochs where lr *= gamma
    gamma: float = field(default=0.1, metadata=_range(0, 1))


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    # holdout: select the best epoch on `data.val_size` images held out of train (searches);
    # paper: train on the whole training set and report its last epoch on test, as the
    # published numbers were made (docs/method.md §Protocols); it selects nothing
    protocol: str = field(default="holdout", metadata=_choice(*PROTOCOLS))
    device: str = field(default="auto", metadata=_choice(*DEVICES))  # auto: cuda if present
    threads: int = field(default=0, metadata=_range(0))  # CPU threads; 0 = torch's default
    # bf16 autocast on CUDA (the reference trains fp32; benchmarks/RESULTS.md compares the two);
    # the CPU always trains in fp32
    precision: str = field(default="bf16", metadata=_choice(*PRECISIONS))
    compile: bool = False  # torch.compile the model (worth it for long GPU runs)
    # torch.compile's mode when `compile`: reduce-overhead replays the step's kernels as CUDA
    # graphs; max-autotune also benchmarks kernel variants (minutes of compile a shape)
    compile_mode: str = field(default="default", metadata=_choice(*COMPILE_MODES))
    out_dir: str = ""  # checkpoints, predictions, metrics.json; "" = runs/<date-time>
    eval_batch_size: int = field(default=500, metadata=_range(1))
    eval_every: int = field(default=1, metadata=_range(1))  # epochs between val evaluations
    max_steps_per_epoch: int = field(default=0, metadata=_range(0))  # 0 = all; benchmarks
    checkpoint: bool = True  # write last.pt each epoch (resume) and best.pt
    # epochs between the checkpoints a search trial hands Ray Tune (its resume points on any
    # node; WRN-28-10 M=2: ~440 MB each); the last epoch always. Resume stays exact: a trial
    # retried from epoch k trains k+1.. again with k's RNG state (infra/README.md)
    checkpoint_every: int = field(default=10, metadata=_range(1))
    progress: bool = True  # tqdm bar per epoch
    # --- uncertainty evaluation cadence (docs/method.md §Uncertainty) ---
    # epochs between OOD and corruption evaluations of val (their val/* metrics, e.g. for an
    # asha guard); 0 = only the kept epoch, at the end, on val and test (the cheapest)
    robustness_every: int = field(default=0, metadata=_range(0))


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    mixing: MixingConfig = MixingConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """`{"section.key": value}`, the form MLflow params and search spaces use."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    @property
    def unique_per_step(self) -> int:
        """Unique images in one batch: B / b (docs/method.md §Training step 1)."""
        return self.optim.batch_size // self.optim.batch_repeat

    @property
    def base_lr(self) -> float:
        """lr follows the unique images per step, so changing b needs no lr retune."""
        return self.optim.lr * self.unique_per_step / 128


SECTIONS: dict[str, type] = get_type_hints(TrainConfig)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _coerce(where: str, value: Any, typ: Any) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise a ConfigError naming `where`."""
    origin = get_origin(typ)
    if origin is tuple:
        (elem, _) = get_args(typ)
        if isinstance(value, str):
            value = [v for v in value.strip("[]()").split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(f"{where}[{i}]", v, elem) for i, v in enumerate(value))
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(as_float)
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)  # accepts "inf" / YAML .inf for reweight_r
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if typ is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {typ!r} at {where}")


def _check(where: str, value: Any, meta: Any) -> None:
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{where} must be one of {', '.join(meta['choices'])}; got {value!r}")
    if "range" in meta:
        low, high = meta["range"]
        if isinstance(value, float) and math.isnan(value):
            raise ConfigError(f"{where} must be a number, got nan")
        if low is not None and value < low or high is not None and value > high:
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ConfigError(f"{where} must be {bounds}; got {value!r}")


def _build_section(name: str, cls: type, values: dict[str, Any], source: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section `{name}` must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    prefix = f"{source}: " if source else ""
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(
                f"{prefix}unknown key `{name}.{key}`; allowed keys in `{name}`: "
                f"{', '.join(fields)}"
            )
        kwargs[key] = _coerce(f"{prefix}`{name}.{key}`", value, hints[key])
        _check(f"{prefix}`{name}.{key}`", kwargs[key], fields[key].metadata)
    return cls(**kwargs)


def _merge(base: dict[str, dict[str, Any]], extra: dict[str, Any], source: str) -> None:
    for section, values in extra.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section `{section}`; allowed: preset, {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section `{section}` must be a mapping")
        base.setdefault(section, {}).update(values)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read as a YAML text file ({err})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections")
    return loaded


@dataclass(frozen=True)
class Published:
    """A preset's number in the paper, and how it was made (docs/method.md §Protocols)."""

    metric: str  # e.g. test/acc, as a fraction
    low: float  # the paper gives a range where it reports several runs
    high: float
    protocol: str
    source: str


def published(preset: str) -> Published | None:
    """The published result a reference preset reproduces, or None (CPU and test presets)."""
    raw = _read_yaml(_preset_path(preset)).get("published")
    if raw is None:
        return None
    meta = {k: raw.pop(k) for k in ("protocol", "source")}
    ((metric, value),) = raw.items()
    low, high = (value, value) if isinstance(value, float | int) else value
    return Published(metric, float(low), float(high), **meta)


def _preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(list_presets())}")
    return path


def _preset_values(name: str) -> dict[str, Any]:
    values = _read_yaml(_preset_path(name))
    values.pop("description", None)
    values.pop("published", None)
    return values


def parse_override(item: str) -> tuple[str, str, Any]:
    """`section.key=value` -> (section, key, YAML-parsed value)."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(
            f"override {item!r} must look like section.key=value, e.g. optim.lr=0.05"
        )
    dotted, raw = item.split("=", 1)
    section, key = dotted.split(".", 1)
    return section, key, yaml.safe_load(raw) if raw else ""


def resolve_config(
    values: dict[str, Any] | None = None,
    *,
    preset: str | None = None,
    overrides: list[str] | dict[str, Any] = (),
    source: str = "",
) -> TrainConfig:
    """Preset, then `values` (sections), then overrides (`a.b=c` strings or a flat dict)."""
    values = dict(values or {})
    preset = values.pop("preset", preset)
    merged: dict[str, dict[str, Any]] = {}
    if preset:
        _merge(merged, _preset_values(preset), f"preset {preset}")
    _merge(merged, values, source or "config")
    items = overrides.items() if isinstance(overrides, dict) else None
    flat = [(*k.split(".", 1), v) for k, v in items] if items else map(parse_override, overrides)
    for section, key, value in flat:
        _merge(merged, {section: {key: value}}, "override")
    built = {
        name: _build_section(name, cls, merged.get(name, {}), source)
        for name, cls in SECTIONS.items()
    }
    cfg = TrainConfig(**built)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Read a config file (`preset:` plus sections) and apply `--set` overrides."""
    if path is None:
        return resolve_config(overrides=overrides)
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"config file {path} {what}; give a YAML file (`preset: NAME` plus sections), or "
            f"--preset NAME with one of: {', '.join(list_presets())}"
        )
    return resolve_config(_read_yaml(path), overrides=overrides, source=str(path))


def validate(cfg: TrainConfig) -> None:
    """Rules that tie keys together; each names the keys and the fix."""
    o, m = cfg.optim, cfg.model
    if o.batch_size % o.batch_repeat:
        raise ConfigError(
            f"`optim.batch_size` ({o.batch_size}) must be a multiple of `optim.batch_repeat` "
            f"({o.batch_repeat}): a batch holds batch_size/batch_repeat unique images"
        )
    if list(o.milestones) != sorted(o.milestones):
        raise ConfigError(f"`optim.milestones` must be increasing, got {list(o.milestones)}")
    from mixmo_search.models import list_models  # models import config-free modules only

    if m.name not in list_models():
        raise ConfigError(
            f"unknown `model.name` {m.name!r}; choose one of: {', '.join(list_models())}"
        )
    _validate_uncertainty(cfg.data)


def _validate_uncertainty(data: DataConfig) -> None:
    """`data.ood` and `data.corruptions` name sets this project knows (docs/method.md
    §Uncertainty)."""
    if data.ood and data.ood not in OOD_SETS and not data.ood.startswith(OOD_FOLDER):
        raise ConfigError(
            f"`data.ood` must be empty (no OOD set), one of {', '.join(OOD_SETS)}, or "
            f"{OOD_FOLDER}PATH; got {data.ood!r}"
        )
    if data.ood == OOD_FOLDER:
        raise ConfigError(f"`data.ood` {OOD_FOLDER} needs a folder: {OOD_FOLDER}PATH")
    unknown = [f for f in corruption_families(data.corruptions) if f not in CORRUPTION_FAMILIES]
    if unknown:
        raise ConfigError(
            f"`data.corruptions` names unknown families {', '.join(unknown)}; use all, or "
            f"some of {', '.join(CORRUPTION_FAMILIES)}, comma-separated"
        )
    if data.corruptions_test != "generated" and not data.corruptions:
        raise ConfigError(
            f"`data.corruptions_test` is {data.corruptions_test} but `data.corruptions` is "
            "empty: validation needs generated corruptions to select on; set "
            "data.corruptions=all"
        )
    made_from = data.corruptions_test.removesuffix("-c")
    if data.corruptions_test in CORRUPTION_FILES and data.name != made_from:
        raise ConfigError(
            f"`data.corruptions_test` {data.corruptions_test} corrupts the {made_from} test set, "
            f"but `data.name` is {data.name}; use corruptions_test=generated"
        )


def corruption_families(setting: str) -> tuple[str, ...]:
    """The families `data.corruptions` names: () for "", every family for "all"."""
    if setting.strip() == "all":
        return CORRUPTION_FAMILIES
    return tuple(dict.fromkeys(f.strip() for f in setting.split(",") if f.strip()))
