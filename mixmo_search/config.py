"""The training configuration: one typed, frozen pydantic model, validated whole when built.

A config is resolved in three layers: a preset (`mixmo_search/presets/NAME.yaml`), then a
config file's own sections, then `section.key=value` overrides (`--set`, a search's base and
sampled values). `ConfigBuilder` holds the first two and builds configs from overrides; the
model checks every field (type, range, choices) and the rules that tie fields together, and a
failure is one `ConfigError` line naming the key, the value, what is allowed and the fix.
The built config is what the trainer trains, MLflow logs and checkpoints record.

Rules that need the data set or the network (a validation split smaller than the training
set, a feature map left after the stem) are `preflight`'s; those of a search space, `search/`.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic import model_validator as _model_validator
from pydantic_core import PydanticCustomError

from mixmo_search import yaml_io
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
MAX_SEED = 2**32 - 1  # numpy's and most samplers' seed range; torch takes it too
MAX_IMAGE_SIZE = 1024  # data.image_size: far above every recipe (Tiny ImageNet is 64)
# --- uncertainty evaluation (docs/method.md §Uncertainty): the names `data.ood`,
# `data.corruptions` and `data.corruptions_test` take; ood.py and corruptions.py implement them
OOD_SETS = ("sklearn-photos", "svhn", "cifar10", "cifar100")  # or imagefolder:PATH
OOD_FOLDER = "imagefolder:"
CORRUPTION_FAMILIES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
                       "gaussian_blur", "defocus_blur", "brightness", "contrast", "saturate",
                       "pixelate", "jpeg")  # fmt: skip
CORRUPTION_FILES = ("cifar10-c", "cifar100-c")  # published corrupted test sets (downloaded)


# ---- field types: YAML, `--set` strings and MLflow params all arrive here ----


def _integer(value: Any) -> Any:
    """An int from an int, an integral float or numeric text ("3", "1e3"); not a bool."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise PydanticCustomError("not_integer", "must be an integer") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("not_integer", "must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise PydanticCustomError("not_integer", "must be an integer")
        return int(value)
    return value


def _number(value: Any) -> Any:
    """A float from a number or numeric text ("0.1", "inf"); not a bool."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise PydanticCustomError("not_number", "must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("not_number", "must be a number")
    return float(value)


def _finite(value: Any) -> Any:
    value = _number(value)
    if not math.isfinite(value):
        raise PydanticCustomError("not_finite", "must be a finite number")
    return value


def _positive_or_inf(value: Any) -> Any:
    value = _number(value)
    if math.isnan(value) or value == -math.inf:
        raise PydanticCustomError("not_number", "must be a number > 0 or .inf")
    return value


def _boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise PydanticCustomError("not_bool", "must be true or false")


def _text(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError("not_text", "must be a string")
    return str(value)


def _int_list(value: Any) -> Any:
    """A list of ints from a list, or text like "[101, 201]" / "(101, 201)" (MLflow params)."""
    if isinstance(value, str):
        value = [v for v in value.strip().strip("[]()").split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise PydanticCustomError("not_list", "must be a list of integers")
    return tuple(_integer(v) for v in value)


def _choice(*allowed: str) -> Any:
    return Annotated[Literal[allowed], BeforeValidator(_text)]  # type: ignore[valid-type]


def Int(low: int | None = None, high: int | None = None) -> Any:  # noqa: N802 - a type
    return Annotated[int, BeforeValidator(_integer), Field(ge=low, le=high)]


def Float(low: float | None = None, high: float | None = None) -> Any:  # noqa: N802 - a type
    """A finite float in [low, high]."""
    return Annotated[float, BeforeValidator(_finite), Field(ge=low, le=high)]


Bool = Annotated[bool, BeforeValidator(_boolean)]
Text = Annotated[str, BeforeValidator(_text)]
Seed = Int(0, MAX_SEED)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)


class DataConfig(_Section):
    name: _choice(*DATASETS) = "cifar100"
    root: Text = "data"  # where torchvision downloads, or the image-folder root
    download: Bool = True  # let torchvision fetch CIFAR when it is missing
    val_size: Int(1) = 5000  # images held out of train (below the training set: preflight)
    split_seed: Seed = 0  # fixes which images form the validation split
    image_size: Int(0, MAX_IMAGE_SIZE) = 0  # image folders and Tiny ImageNet resize; 0 = keep
    crop_padding: Int(0, 64) = 4  # pixels of zero padding of the random crop (<= image size)
    flip: Bool = True  # horizontal flip (off for digits: a flipped 2 is not a 2)
    # --- uncertainty evaluation sets (docs/method.md §Uncertainty) ---
    # out-of-distribution images scored against val and test: "" none; sklearn-photos (tiles
    # of scikit-learn's two bundled photographs, offline); svhn, cifar10, cifar100
    # (torchvision, into data.root); imagefolder:PATH (PATH/train/<class>/ for val,
    # PATH/test/<class>/ for test). Val and test OOD images never overlap
    ood: Text = ""
    # generated corruptions of val and test: "" none, "all" (every family the images allow),
    # or comma-separated families of CORRUPTION_FAMILIES; 5 severities each
    corruptions: Text = ""
    # the corrupted test set: "generated" (the families above), or the published files
    # cifar10-c, cifar100-c (downloaded into data.root, md5-checked); val is always generated
    corruptions_test: _choice("generated", *CORRUPTION_FILES) = "generated"
    corruption_size: Int(0) = 1000  # images a split; 0 = all


class ModelConfig(_Section):
    name: Text = "wrn28_10"  # a name from `mixmo_search.models.list_models()`
    n_members: Int(1, MAX_MEMBERS) = 2  # M encoders and heads
    stem_stride: Int(1, 4) = 1  # 2 on Tiny ImageNet (docs/method.md §Architectures)


class MixingConfig(_Section):
    block: _choice(*MIX_BLOCKS) = "cut"  # the binary block (sum and linear: none)
    # kappa ~ Beta(alpha, alpha) / Dirichlet; <= 0 means exactly 1/M
    alpha: Float(-1e6, 1e6) = 2.0
    p: Float(0, 1) = 0.5  # per-batch probability of the binary block
    p_decay_start: Float(0, 1) = 11 / 12  # fraction of training where p starts to fall
    # loss root r: weights kappa^(1/r), normalised; .inf = equal weights
    reweight_r: Annotated[float, BeforeValidator(_positive_or_inf), Field(gt=0)] = 3.0
    input_mix: _choice(*INPUT_MIXES) = "none"  # per-member CutMix / Mixup of the inputs
    input_mix_prob: Float(0, 1) = 0.5
    input_mix_alpha: Float(1e-3, 1e6) = 1.0  # lambda ~ Beta(a, a)


class OptimConfig(_Section):
    epochs: Int(1, 1_000_000) = 300
    batch_size: Int(1, 1_000_000) = 64  # slots per step, repeats counted
    batch_repeat: Int(1, 1_000_000) = 4  # b: each image b times a batch
    input_repeat: Float(0, 1) = 0.0  # rho: the same image in all M inputs
    lr: Float(0, 1e6) = 0.1  # per 128 *unique* images a step
    momentum: Float(0, 1) = 0.9
    nesterov: Bool = True
    l2: Float(0, 1e6) = 3e-4  # loss += l2 * sum(theta^2) (docs/method.md §Recipes)
    weight_decay: Float(0, 1e6) = 0.0  # SGD's own, on top of l2
    warmup_epochs: Float(0, 1_000_000) = 1.0  # linear warm-up
    milestones: Annotated[tuple[Int(1), ...], BeforeValidator(_int_list)] = (101, 201, 226)
    gamma: Float(0, 1) = 0.1  # lr *= gamma at each 1-based milestone epoch


class RunConfig(_Section):
    seed: Seed = 0
    # holdout: select the best epoch on `data.val_size` images held out of train (searches);
    # paper: train on the whole training set and report its last epoch on test, as the
    # published numbers were made (docs/method.md §Protocols); it selects nothing
    protocol: _choice(*PROTOCOLS) = "holdout"
    device: _choice(*DEVICES) = "auto"  # auto: cuda if present
    threads: Int(0, 1024) = 0  # CPU threads; 0 = torch's default
    # bf16 autocast on CUDA (the reference trains fp32; benchmarks/RESULTS.md compares the two);
    # the CPU always trains in fp32
    precision: _choice(*PRECISIONS) = "bf16"
    compile: Bool = False  # torch.compile the model (worth it for long GPU runs)
    # torch.compile's mode when `compile`: reduce-overhead replays the step's kernels as CUDA
    # graphs; max-autotune also benchmarks kernel variants (minutes of compile a shape)
    compile_mode: _choice(*COMPILE_MODES) = "default"
    out_dir: Text = ""  # checkpoints, predictions, metrics.json; "" = runs/<date-time>
    eval_batch_size: Int(1, 100_000) = 500
    eval_every: Int(1) = 1  # epochs between val evaluations
    max_steps_per_epoch: Int(0) = 0  # 0 = all; benchmarks
    checkpoint: Bool = True  # write last.pt each epoch (resume) and best.pt
    # epochs between the checkpoints a search trial hands Ray Tune (its resume points on any
    # node; WRN-28-10 M=2: ~440 MB each); the last epoch always. Resume stays exact: a trial
    # retried from epoch k trains k+1.. again with k's RNG state (infra/README.md)
    checkpoint_every: Int(1) = 10
    progress: Bool = True  # tqdm bar per epoch
    # --- uncertainty evaluation cadence (docs/method.md §Uncertainty) ---
    # epochs between OOD and corruption evaluations of val (their val/* metrics, e.g. for an
    # asha guard); 0 = only the kept epoch, at the end, on val and test (the cheapest)
    robustness_every: Int(0) = 0


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    mixing: MixingConfig = MixingConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()

    @_model_validator(mode="after")
    def _rules(self) -> TrainConfig:
        for rule in RULES:
            problem = rule(self)
            if problem:
                raise PydanticCustomError("config_rule", "{problem}", {"problem": problem})
        return self

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return self.model_dump()

    def flat(self) -> dict[str, Any]:
        """`{"section.key": value}`, the form MLflow params and search spaces use."""
        return flatten(self.to_dict())

    @property
    def unique_per_step(self) -> int:
        """Unique images in one batch: B / b (docs/method.md §Training step 1)."""
        return self.optim.batch_size // self.optim.batch_repeat

    @property
    def base_lr(self) -> float:
        """lr follows the unique images per step, so changing b needs no lr retune."""
        return self.optim.lr * self.unique_per_step / 128


SECTIONS: dict[str, type[_Section]] = {
    name: field.annotation for name, field in TrainConfig.model_fields.items()
}
KEYS: tuple[str, ...] = tuple(
    f"{section}.{key}" for section, cls in SECTIONS.items() for key in cls.model_fields
)


# ---- rules that tie fields together: each returns what is wrong and the fix, or "" ----


def _batch_divides(cfg: TrainConfig) -> str:
    o = cfg.optim
    if o.batch_size % o.batch_repeat:
        return (
            f"`optim.batch_size` ({o.batch_size}) must be a multiple of `optim.batch_repeat` "
            f"({o.batch_repeat}): a batch holds batch_size/batch_repeat unique images"
        )
    return ""


def _milestones_increase(cfg: TrainConfig) -> str:
    milestones = list(cfg.optim.milestones)
    if milestones != sorted(milestones):
        return f"`optim.milestones` must be increasing, got {milestones}"
    return ""


def _nesterov_needs_momentum(cfg: TrainConfig) -> str:
    if cfg.optim.nesterov and cfg.optim.momentum == 0:
        return (
            "`optim.nesterov` needs `optim.momentum` > 0 (Nesterov momentum with no "
            "momentum is undefined); set optim.momentum (e.g. 0.9) or optim.nesterov=false"
        )
    return ""


def _known_model(cfg: TrainConfig) -> str:
    from mixmo_search.models import list_models  # models import config-free modules only

    if cfg.model.name not in list_models():
        return (
            f"unknown `model.name` {cfg.model.name!r}; "
            f"{_did_you_mean(cfg.model.name, list_models())}choose one of: "
            f"{', '.join(list_models())}"
        )
    return ""


def _image_size_applies(cfg: TrainConfig) -> str:
    if cfg.data.image_size and cfg.data.name not in ("imagefolder", "tinyimagenet"):
        return (
            f"`data.image_size` resizes image folders and Tiny ImageNet; {cfg.data.name} has "
            "one fixed size, so set data.image_size=0"
        )
    return ""


def _known_ood_set(cfg: TrainConfig) -> str:
    ood = cfg.data.ood
    if ood and ood not in OOD_SETS and not ood.startswith(OOD_FOLDER):
        return (
            f"`data.ood` must be empty (no OOD set), one of {', '.join(OOD_SETS)}, or "
            f"{OOD_FOLDER}PATH; got {ood!r}"
        )
    if ood == OOD_FOLDER:
        return f"`data.ood` {OOD_FOLDER} needs a folder: {OOD_FOLDER}PATH"
    return ""


def _known_corruptions(cfg: TrainConfig) -> str:
    data = cfg.data
    unknown = [f for f in corruption_families(data.corruptions) if f not in CORRUPTION_FAMILIES]
    if unknown:
        return (
            f"`data.corruptions` names unknown families {', '.join(unknown)}; use all, or "
            f"some of {', '.join(CORRUPTION_FAMILIES)}, comma-separated"
        )
    if data.corruptions_test != "generated" and not data.corruptions:
        return (
            f"`data.corruptions_test` is {data.corruptions_test} but `data.corruptions` is "
            "empty: validation needs generated corruptions to select on; set "
            "data.corruptions=all"
        )
    made_from = data.corruptions_test.removesuffix("-c")
    if data.corruptions_test in CORRUPTION_FILES and data.name != made_from:
        return (
            f"`data.corruptions_test` {data.corruptions_test} corrupts the {made_from} test set, "
            f"but `data.name` is {data.name}; use corruptions_test=generated"
        )
    return ""


RULES = (_batch_divides, _milestones_increase, _nesterov_needs_momentum, _known_model,
         _image_size_applies, _known_ood_set, _known_corruptions)  # fmt: skip


def coerce_value(key: str, value: Any) -> Any:
    """`value` as the typed field `section.key` holds it (e.g. 2 for a float field is 2.0),
    or a ConfigError; a sampled value logged before its trial's config reads the same."""
    section, _, name = key.partition(".")
    field = SECTIONS[section].model_fields[name]
    try:
        return _adapter(section, name, field).validate_python(value)
    except ValidationError as err:
        (error,) = err.errors(include_url=False)[:1]
        raise ConfigError(f"`{key}` {error['msg']}; got {value!r}") from None


@functools.cache
def _adapter(section: str, name: str, field: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(Annotated[field.annotation, *field.metadata])


# ---- the one flat <-> nested helper ----


def flatten(nested: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`{"optim": {"lr": 0.1}}` -> `{"optim.lr": 0.1}`."""
    return {f"{s}.{k}": v for s, section in nested.items() for k, v in section.items()}


def nest(flat: Mapping[str, Any], *, source: str = "override") -> dict[str, dict[str, Any]]:
    """`{"optim.lr": 0.1}` -> `{"optim": {"lr": 0.1}}`; a key without a section is an error."""
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in flat.items():
        section, dot, key = str(dotted).partition(".")
        if not dot or not key:
            raise ConfigError(
                f"{source} {dotted!r}: keys look like section.key (e.g. optim.lr); sections: "
                f"{', '.join(SECTIONS)}"
            )
        nested.setdefault(section, {})[key] = value
    return nested


# ---- building configs ----


@dataclass(frozen=True)
class ConfigBuilder:
    """A preset and a config file's sections, resolved once; `build` adds overrides on top.

    A search builds every trial's config with one builder: the preset is read once, and each
    trial costs one validation.
    """

    sections: Mapping[str, Mapping[str, Any]]  # preset, then the file's sections, merged
    source: str = "config"

    @classmethod
    def of(
        cls, values: Mapping[str, Any] | None = None, *, preset: str | None = None,
        source: str = "",
    ) -> ConfigBuilder:  # fmt: skip
        values = dict(values or {})
        preset = values.pop("preset", preset)
        merged: dict[str, dict[str, Any]] = {}
        if preset is not None:
            _merge(merged, _preset_values(preset), f"preset {preset}")
        _merge(merged, values, source or "config")
        return cls(merged, source or "config")

    def build(self, overrides: Mapping[str, Any] | Iterable[str] = ()) -> TrainConfig:
        """The validated config with `overrides` (a flat dict, or `a.b=c` strings) on top."""
        if not isinstance(overrides, Mapping):
            overrides = {f"{s}.{k}": v for s, k, v in map(parse_override, overrides)}
        extra = nest(overrides)
        merged = {name: dict(values) for name, values in self.sections.items()}
        _merge(merged, extra, "override")
        return validated(merged, source=self.source)


def validated(nested: Mapping[str, Any], *, source: str = "") -> TrainConfig:
    """`TrainConfig` of nested sections, or one ConfigError line for the first problem."""
    try:
        return TrainConfig.model_validate(nested)
    except ValidationError as err:
        raise ConfigError(_message(err.errors(include_url=False)[0], source)) from None


def _message(error: dict[str, Any], source: str) -> str:
    """One line from a pydantic error: `where`: what is wrong, got what; what is allowed."""
    prefix = f"{source}: " if source and source != "config" else ""
    loc = [str(part) for part in error["loc"]]
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "config_rule":
        return prefix + ctx["problem"]
    where = f"`{loc[0]}.{loc[1]}`" + "".join(f"[{i}]" for i in loc[2:]) if len(loc) > 1 else ""
    if kind == "extra_forbidden" and len(loc) == 1:
        return f"{prefix}unknown section `{loc[0]}`; allowed: preset, {', '.join(SECTIONS)}"
    if kind == "extra_forbidden":
        allowed = list(SECTIONS[loc[0]].model_fields)
        return (
            f"{prefix}unknown key {where}; {_did_you_mean(loc[1], allowed)}allowed keys in "
            f"`{loc[0]}`: {', '.join(allowed)}"
        )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{prefix}section `{loc[0]}` must be a mapping, got {value!r}"
    if kind == "literal_error":
        allowed = [c.strip("'") for c in ctx["expected"].replace(" or ", ", ").split(", ")]
        return (
            f"{prefix}{where} must be one of {', '.join(allowed)}; "
            f"{_did_you_mean(value, allowed)}got {value!r}"
        )
    if kind in ("greater_than_equal", "less_than_equal", "greater_than"):
        return f"{prefix}{where} must be {_allowed_range(loc)}; got {value!r}"
    return f"{prefix}{where} {error['msg']}; got {value!r}"


def _allowed_range(loc: list[str]) -> str:
    """`in [0, 1]`, `>= 1` or `> 0`: a field's bounds as its annotation declares them."""
    field = SECTIONS[loc[0]].model_fields[loc[1]]
    found = {a: getattr(m, a) for m in field.metadata for a in ("ge", "le", "gt") if hasattr(m, a)}
    if len(loc) > 2:  # an element of a list field (milestones): its own bound
        found = {"ge": 1}
    low, high = (_shown(found.get(a)) for a in ("ge", "le"))
    if low is not None and high is not None:
        return f"in [{low}, {high}]"
    if "gt" in found:
        return f"> {_shown(found['gt'])}"
    return f">= {low}" if low is not None else f"<= {high}"


def _shown(bound: float | None) -> str | None:
    return None if bound is None else f"{bound:g}" if isinstance(bound, float) else str(bound)


def _did_you_mean(value: Any, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=3)
    return f"did you mean {' or '.join(f'`{c}`' for c in close)}? " if close else ""


def _merge(base: dict[str, dict[str, Any]], extra: Mapping[str, Any], source: str) -> None:
    for section, values in extra.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section `{section}`; "
                f"{_did_you_mean(section, SECTIONS)}allowed: preset, {', '.join(SECTIONS)}"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section `{section}` must be a mapping, got {values!r}")
        base.setdefault(section, {}).update(values)


def _read_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml_io.read_file(path, error=ConfigError, expected="a config file") or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections")
    return loaded


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


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
    if name not in list_presets():  # a name, never a path: files go through --config
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(list_presets())}")
    return PRESET_DIR / f"{name}.yaml"


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
    value = yaml_io.load_text(raw, source=f"override {item!r}", error=ConfigError) if raw else ""
    return section, key, value


def resolve_config(
    values: Mapping[str, Any] | None = None,
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    source: str = "",
) -> TrainConfig:
    """Preset, then `values` (sections), then overrides (`a.b=c` strings or a flat dict)."""
    return ConfigBuilder.of(values, preset=preset, source=source).build(overrides)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
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


def corruption_families(setting: str) -> tuple[str, ...]:
    """The families `data.corruptions` names: () for "", every family for "all"."""
    if setting.strip() == "all":
        return CORRUPTION_FAMILIES
    return tuple(dict.fromkeys(f.strip() for f in setting.split(",") if f.strip()))
