from __future__ import annotations

import importlib.util
import itertools
import json
import warnings
from contextlib import nullcontext
from pathlib import Path

import optuna
import pytest

from mixmo_search.search import (
    SAMPLERS,
    SamplerSpec,
    SearchSpace,
    SpaceError,
    SpaceWarning,
    load_space,
    make_sampler,
    sampler_for,
    samplers,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Finite params only, so grid can run it too; 2 * 2 * 2 = 8 grid points.
SPACE = """\
base: {preset: digits_quick}
params:
  mixing.alpha: {type: categorical, choices: [1, 2]}
  optim.batch_repeat: {type: categorical, choices: [1, 2]}
  model.n_members: {type: int, low: 2, high: 3}
  mixing.reweight_r: {type: fixed, value: 3}
objective:
  - {metric: val/acc, mode: max}
budget: {trials: 8}
"""
# Options that let the model-based samplers leave their random start within a few trials
QUICK = {
    "tpe": {"n_startup_trials": 2},
    "gp": {"n_startup_trials": 2},
    "cmaes": {"n_startup_trials": 2},
    "nsga2": {"population_size": 4},
}


def spec_for(kind: str) -> SamplerSpec:
    return SamplerSpec(kind, seed=0, options=QUICK.get(kind, {}))


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> SearchSpace:
    path = tmp_path_factory.mktemp("space") / "finite.yaml"
    path.write_text(SPACE)
    return load_space(path)


def propose(
    space: SearchSpace, spec: SamplerSpec | optuna.samplers.BaseSampler, n_objectives: int, n: int
) -> list[dict]:
    """Run an ask/tell loop of `n` trials on a toy objective with `spec`'s sampler (or that
    sampler itself); returns each trial's overrides."""
    sampler = spec
    if isinstance(spec, SamplerSpec):
        sampler = make_sampler(spec, n_objectives, params=space.params)
    study = optuna.create_study(directions=["maximize"] * n_objectives, sampler=sampler)
    drawn = []
    for _ in range(n):
        trial = study.ask()
        overrides = space.define_by_run(trial)
        space.trial_config(overrides)  # every proposal is a valid training config
        score = overrides["mixing.alpha"] / overrides["optim.batch_repeat"]
        study.tell(trial, [score, overrides["model.n_members"]][:n_objectives])
        drawn.append(overrides)
    return drawn


# cmaes is single-objective: make_sampler refuses two objectives (tested below)
@pytest.mark.parametrize(
    ("kind", "n_objectives"),
    [(k, n) for k in SAMPLERS for n in (1, 2) if (k, n) != ("cmaes", 2)],
)
def test_sampler_builds_and_proposes(space: SearchSpace, kind: str, n_objectives: int) -> None:
    # these run, with a warning that another sampler suits the space better
    odd = {("nsga2", 1): "on one objective", ("cmaes", 1): "categorical params at random"}
    warns = (kind, n_objectives) in odd
    with (
        pytest.warns(SpaceWarning, match=odd.get((kind, n_objectives))) if warns else nullcontext()
    ):
        # gp fits a GP per proposal (about a second each), so it gets fewer trials
        drawn = propose(space, spec_for(kind), n_objectives, 4 if kind == "gp" else 8)
    assert all(o["mixing.reweight_r"] == 3 for o in drawn)  # fixed params ride along


@pytest.mark.parametrize("kind", ["tpe", "random", "nsga2", "grid"])
def test_seeded_sampler_repeats_its_proposals(space: SearchSpace, kind: str) -> None:
    assert propose(space, spec_for(kind), 2, 8) == propose(space, spec_for(kind), 2, 8)


def test_grid_enumerates_every_point_once(space: SearchSpace) -> None:
    drawn = propose(space, SamplerSpec("grid", seed=0), 1, 8)
    points = {(o["mixing.alpha"], o["optim.batch_repeat"], o["model.n_members"]) for o in drawn}
    assert points == set(itertools.product([1, 2], [1, 2], [2, 3]))


def test_a_space_without_a_sampler_gets_tpe(space: SearchSpace) -> None:
    assert isinstance(sampler_for(space), optuna.samplers.TPESampler)  # the default


@pytest.mark.parametrize("kind", SAMPLERS)
def test_sampler_for_uses_the_spaces_spec(kind: str, tmp_path: Path) -> None:
    """The sampler a space names, with its seed and options, is the one `sampler_for`
    builds: of its class, proposing what that sampler built directly proposes."""
    n_objectives = 2 if kind == "nsga2" else 1  # each where it runs without a warning
    second = "  - {metric: val/disagreement, mode: max}\n" if n_objectives == 2 else ""
    spec = SamplerSpec(kind, seed=5, options=QUICK.get(kind, {}))
    block = json.dumps({"type": kind, "seed": 5, **spec.options})  # JSON is YAML
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("budget:", f"{second}sampler: {block}\nbudget:"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpaceWarning)  # cmaes: categorical params at random
        loaded = load_space(path)
        sampler = sampler_for(loaded)
        assert loaded.sampler == spec
        assert isinstance(sampler, samplers.CLASSES[kind])
        n = 4 if kind == "gp" else 8
        drawn = propose(loaded, sampler, n_objectives, n)
        assert drawn == propose(loaded, spec, n_objectives, n)
        if kind != "grid":  # the seed is the space's: another seed proposes otherwise
            other = SamplerSpec(kind, seed=6, options=spec.options)
            assert drawn != propose(loaded, other, n_objectives, n)


@pytest.mark.parametrize(
    ("spec", "n_objectives", "expected"),
    [
        (SamplerSpec("bayes"), 1, "unknown sampler 'bayes'"),
        (SamplerSpec("tpe", options={"n_startup": 2}), 1, "did you mean `n_startup_trials`"),
        (SamplerSpec("nsga2", options={"population_size": "big"}), 2, "must be an integer"),
        (SamplerSpec("tpe", options={"group": True}), 1, "needs `multivariate: true`"),
    ],
)
def test_bad_spec_raises_space_error(spec: SamplerSpec, n_objectives: int, expected: str) -> None:
    with pytest.raises(SpaceError, match=expected.replace("(", r"\(")):
        make_sampler(spec, n_objectives)


def test_missing_package_names_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # cmaes is a dependency; pretend an environment without it
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cmaes" else find_spec(name)
    )
    with pytest.raises(SpaceError, match="pip install cmaes"):
        make_sampler(SamplerSpec("cmaes"), 1)


def test_cmaes_refuses_several_objectives() -> None:
    with pytest.raises(SpaceError, match="cmaes optimises one objective"):
        make_sampler(SamplerSpec("cmaes"), 2)


def test_grid_refuses_continuous_params(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    lr = "  optim.lr: {type: uniform, low: 0.1, high: 1.0}\n"
    path.write_text(SPACE.replace("objective:\n", lr + "objective:\n"))
    with pytest.raises(SpaceError, match="grid sampler needs finite values"):
        make_sampler(SamplerSpec("grid"), 1, params=load_space(path).params)


def test_sampler_options_come_from_optunas_own_signatures():
    from mixmo_search.search.samplers import options

    tpe = {"n_startup_trials": int, "n_ei_candidates": int, "multivariate": bool, "group": bool,
           "constant_liar": bool}  # fmt: skip
    assert options("tpe") == tpe
    assert "population_size" in options("nsga2") and options("random") == {}
    # not offered: callables, sampler objects, the seed (its own key), deprecated arguments
    assert not {"gamma", "independent_sampler", "seed", "sigma0", "consider_endpoints"} & {
        *options("tpe"),
        *options("cmaes"),
        *options("gp"),
    }
