"""space_check: a space the checks accept never draws a trial that cannot train.

The rule is tested, not examples of it: hypothesis writes spaces over every field of the
typed config and every kind of param a space can declare (int ranges with steps, categoricals
of any values, float ranges, fixed values), and for every space `load_space` accepts, trials
drawn by a real Optuna sampler must build a valid config whose network runs at its data's
shapes (and a few of them train for real). The named cases are those a hostile check found
(issue 17): each passed `--dry-run`, then failed every trial.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixmo_search.config import KEYS, TrainConfig
from mixmo_search.datasets import describe_dataset
from mixmo_search.errors import TrainingDiverged
from mixmo_search.preflight import check_config
from mixmo_search.search.schema import UNSEARCHABLE
from mixmo_search.search.space import SearchSpace, load_space
from mixmo_search.search.types import SpaceError
from mixmo_search.train import DIVERGED_LOSS, train

SEARCHABLE = [k for k in KEYS if k not in UNSEARCHABLE and k != "data.root"]
BASE = {"preset": "digits_quick", "overrides": {"optim.epochs": 2}}
CASE_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _write(tmp: Path, params: dict[str, Any], **extra: Any) -> Path:
    doc = {"name": "gen", "base": BASE, "params": params,
           "objective": [{"metric": "val/acc", "mode": "max"}], "budget": {"trials": 2},
           **extra}  # fmt: skip
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


numbers = st.one_of(
    st.integers(-3, 300), st.floats(-2, 300, allow_nan=False),
    st.sampled_from([0, 1, 2, 3, 4, 6, 8, 64, 1e-7, 1e6, 1e30]),
)  # fmt: skip
any_value = st.one_of(
    numbers, st.booleans(), st.sampled_from([math.nan, math.inf, -math.inf]),
    st.sampled_from(["cut", "sum", "linear", "cow", "patchup", "cutmix", "mixup", "none",
                     "wrn10_1", "wrn16_2", "fp32", "x", "true"]),
)  # fmt: skip


@st.composite
def param_specs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["int", "categorical", "uniform", "loguniform", "fixed"]))
    if kind == "int":
        low = draw(st.integers(-3, 300))
        step = draw(st.integers(1, 7))
        high = low + step * draw(st.integers(1, 40))
        return {"type": "int", "low": low, "high": high, "step": step}
    if kind == "categorical":
        choices = draw(st.lists(any_value, min_size=2, max_size=4, unique_by=repr))
        return {"type": "categorical", "choices": choices}
    if kind == "fixed":
        return {"type": "fixed", "value": draw(any_value)}
    low = draw(st.floats(1e-4, 100))
    return {"type": kind, "low": low, "high": low * draw(st.floats(1.01, 50))}


spaces = st.dictionaries(st.sampled_from(SEARCHABLE), param_specs(), min_size=1, max_size=3)


def _drawn_configs(space: SearchSpace, n_trials: int) -> list[TrainConfig]:
    """`n_trials` trials drawn by a real (random) Optuna sampler through the space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = []
    for _ in range(n_trials):
        trial = study.ask()
        configs.append(space.trial_config(space.define_by_run(trial)))
        study.tell(trial, 0.0)
    return configs


@pytest.mark.slow
@settings(max_examples=100, **CASE_SETTINGS)
@given(params=spaces)
def test_an_accepted_space_draws_only_trials_that_can_train(params, tmp_path_factory):
    path = _write(tmp_path_factory.mktemp("space"), params)
    try:
        space = load_space(path)
    except SpaceError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    for cfg in _drawn_configs(space, 40):
        check_config(cfg, describe_dataset(cfg.data))  # raises if it could not train


# the knobs whose in-bounds values could still break the numerics of a step
NUMERIC = st.fixed_dictionaries({}, optional={
    "mixing.alpha": st.just({"type": "loguniform", "low": 1e-6, "high": 1e6}),
    "mixing.reweight_r": st.just({"type": "loguniform", "low": 1e-6, "high": 1e6}),
    "mixing.p": st.just({"type": "uniform", "low": 0.0, "high": 1.0}),
    "mixing.block": st.just({"type": "categorical", "choices": ["sum", "linear", "cut", "cow",
                                                                "patchup"]}),
    "mixing.input_mix": st.just({"type": "categorical", "choices": ["none", "cutmix", "mixup"]}),
    "mixing.input_mix_alpha": st.just({"type": "loguniform", "low": 1e-3, "high": 1e6}),
    "model.n_members": st.just({"type": "int", "low": 1, "high": 8}),
    "optim.batch_repeat": st.just({"type": "categorical", "choices": [1, 2, 4, 8, 16, 32, 64]}),
    "optim.input_repeat": st.just({"type": "uniform", "low": 0.0, "high": 1.0}),
    "optim.lr": st.just({"type": "loguniform", "low": 1e-6, "high": 1e3}),
    "optim.warmup_epochs": st.just({"type": "uniform", "low": 0.0, "high": 1e6}),
})  # fmt: skip


@pytest.mark.slow
@settings(max_examples=6, **CASE_SETTINGS)
@given(params=NUMERIC.filter(bool))
def test_accepted_spaces_really_train(params, tmp_path_factory):
    """Trials of spaces over the numerical knobs, at any value their bounds allow, trained
    for real (one epoch of two steps on digits): each trains, or diverges — a failed trial,
    never a crash."""
    folder = tmp_path_factory.mktemp("trained")
    space = load_space(_write(folder, params))
    for i, cfg in enumerate(_drawn_configs(space, 1)):
        run = cfg.model_copy(update={"run": cfg.run.model_copy(update={
            "out_dir": str(folder / f"t{i}"), "progress": False, "max_steps_per_epoch": 2,
            "device": "cpu"})})  # fmt: skip
        try:
            results = train(TrainConfig.model_validate(run.to_dict()))
        except TrainingDiverged as diverged:  # a failed trial: its loss was bad
            assert not math.isfinite(diverged.loss) or diverged.loss >= DIVERGED_LOSS
            continue
        assert results["epochs"] == cfg.optim.epochs and 0 <= results["test/acc"] <= 1


NAMED = {
    # name: (params or a change to the space, expected in the one-line error)
    "nesterov without momentum": (
        {"optim.momentum": {"type": "fixed", "value": 0}}, "`optim.nesterov` needs"),
    "a step that draws a batch_repeat not dividing the batch": (
        {"optim.batch_repeat": {"type": "int", "low": 2, "high": 8, "step": 2}},
        "can draw 6"),
    "a stem stride that leaves no feature map on digits": (
        {"model.stem_stride": {"type": "categorical", "choices": [1, 4]}},
        "cannot train on the 8x8 images of digits"),
    "a NaN among the choices": (
        {"mixing.alpha": {"type": "categorical", "choices": [1, math.nan]}},
        "can draw nan"),
    "an image size for a data set of one size": (
        {"data.image_size": {"type": "int", "low": 0, "high": 64, "step": 32}},
        "`data.image_size` resizes image folders"),
    "a corruption the images cannot take": (
        {"data.corruptions": {"type": "categorical", "choices": ["jpeg", "pixelate"]}},
        "pixelate, which digits's 1-channel 8 px images cannot take"),
    "a batch larger than the training set": (
        {"optim.batch_size": {"type": "int", "low": 64, "high": 8192, "step": 64}},
        "unique images a step exceeds"),
}  # fmt: skip


@pytest.mark.parametrize("name", NAMED)
def test_named_cases_fail_at_load_naming_the_value(name, tmp_path):
    params, expected = NAMED[name]
    path = _write(tmp_path, {"optim.lr": {"type": "loguniform", "low": 0.4, "high": 1.2},
                             **params})  # fmt: skip
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert expected in str(err.value) and f"{path}:" in str(err.value)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"base": {"preset": "digits_quick", "overrides": {"data.val_size": 100000}}},
         "`base`: the base config cannot train"),
        ({"sampler": {"type": "grid"},
          "params": {"run.seed": {"type": "int", "low": 0, "high": 10**9}}},
         "the grid has 1e+09 points"),
        ({"sampler": {"type": "nsga2", "population_size": 1}}, "population_size"),
        ({"sampler": {"type": "tpe", "seed": 2**40}}, "must be in [0, 4294967295]"),
        ({"sampler": {"type": "tpe", "n_startup_trials": -5}}, "must be >= 0"),
        ({"sampler": {"type": "tpe", "n_ei_candidates": 0}}, "fails with these options"),
    ],
    ids=["base val_size", "grid too large", "nsga2 population 1", "seed 2**40",
         "negative start-up", "no EI candidates"],
)  # fmt: skip
def test_space_level_mistakes_fail_at_load(extra, expected, tmp_path):
    params = extra.pop("params", {"optim.lr": {"type": "loguniform", "low": 0.4, "high": 1.2}})
    path = _write(tmp_path, params, **extra)
    if "base" in extra:
        doc = yaml.safe_load(path.read_text())
        doc["base"] = extra["base"]
        path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert expected in str(err.value)


def test_every_drawable_value_of_a_small_int_range_is_checked(tmp_path):
    """An int range's every value is tried when it has few (a divisibility rule holds only
    at some), and a huge one is tried at spread values without enumerating it."""
    space = load_space(_write(tmp_path, {
        "optim.batch_repeat": {"type": "categorical", "choices": [1, 2, 4]},
        "run.seed": {"type": "int", "low": 0, "high": 10**9}}))  # fmt: skip
    assert space.check.n_configs > 256 and space.check.n_shapes >= 1


def test_dry_run_refuses_a_drawable_invalid_value_naming_it(tmp_path, capsys, monkeypatch):
    """`--dry-run` is the check a user runs: the step-2 range that draws 6 is one line, exit
    2, nothing written (issue 17: this space passed --dry-run and failed 2 of 3 trials)."""
    from mixmo_search import tune

    path = _write(tmp_path, {"optim.batch_repeat": {"type": "int", "low": 2, "high": 8,
                                                    "step": 2}})  # fmt: skip
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        tune.main(["--space", str(path), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and len(err.splitlines()) == 1, err
    assert "`params.optim.batch_repeat`: can draw 6" in err and "multiple of" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_data_missing_here_is_refused_for_a_local_search_and_noted_for_a_plan(tmp_path):
    """Data on a cluster's shared folder is not on the planning machine: a dry run (or a
    cluster search) notes it; a local search, whose every trial would fail, is refused."""
    from mixmo_search.errors import UserError
    from mixmo_search.search.plan import make_plan

    path = _write(tmp_path, {"optim.lr": {"type": "loguniform", "low": 0.05, "high": 0.2}})
    doc = yaml.safe_load(path.read_text())
    doc["base"] = {"preset": "cifar10_wrn16_2_cpu", "overrides": {
        "data.root": str(tmp_path / "elsewhere"), "data.download": False}}  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    space = load_space(path)  # shapes checked with CIFAR's known shape
    assert space.check.n_shapes == 1 and "cifar10 is not in" in space.check.data_absent[0]
    common = dict(gpus=0, cpus=2, storage=tmp_path / "runs",
                  mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}")  # fmt: skip
    plan = make_plan(space, dry_run=True, **common)
    assert any(n.startswith("data not on this machine") for n in plan.notes)
    with pytest.raises(UserError, match="every trial would fail: cifar10 is not in"):
        make_plan(space, **common)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]
