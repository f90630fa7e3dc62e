from __future__ import annotations

import math
import warnings
from pathlib import Path

import optuna
import pytest

from mixmo_search.config import list_presets
from mixmo_search.search import SearchSpace, SpaceError, SpaceWarning, load_space

SHIPPED = sorted((Path(__file__).parents[2] / "search_spaces").glob("*.yaml"))

# Line numbers below refer to this text; each mistake edits one line of it.
VALID = """\
name: tiny
base:
  preset: digits_quick
  overrides: {optim.epochs: 3}
params:
  mixing.block: {type: categorical, choices: [linear, cut, cow]}
  mixing.p: {type: uniform, low: 0.1, high: 0.9, when: {mixing.block: [cut, cow]}}
  optim.lr: {type: loguniform, low: 0.1, high: 1.0}
  optim.batch_repeat: {type: categorical, choices: [1, 2]}
  model.n_members: {type: int, low: 2, high: 3}
  mixing.reweight_r: {type: fixed, value: 3}
objective:
  - {metric: val/acc, mode: max}
sampler: {type: tpe, seed: 0}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
budget: {trials: 4}
resources: {gpus: 0, cpus: 1}
"""

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def edit(line: int, new: str, text: str = VALID) -> str:
    """`text` with 1-based `line` replaced by `new` (which may hold several lines)."""
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


def draw(space: SearchSpace, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    for _ in range(n):
        trial = study.ask()
        drawn.append(space.define_by_run(trial))
        study.tell(trial, 0.0)
    return drawn


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_space_loads_and_its_trials_resolve(path: Path) -> None:
    space = load_space(path)
    assert space.preset in list_presets()
    for overrides in draw(space, 5):
        space.trial_config(overrides)


def test_every_shipped_space_is_listed() -> None:
    assert {p.stem for p in SHIPPED} >= {"cutmix", "linear", "mixing", "pareto", "quickstart"}


def test_valid_space_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("resources: {gpus: 0, cpus: 1}\n", ""))
    space = load_space(path)
    assert space.name == "tiny"
    assert space.metric_modes() == (["val/acc"], ["max"])
    assert space.guard == space.objectives[0]  # asha's metric defaults to the only objective
    assert space.scheduler.max_t == 3  # from base optim.epochs
    assert (space.resources.gpus, space.resources.cpus) == (0, 1)
    assert space.base_config().optim.epochs == 3
    assert [p.key for p in space.params].index("mixing.block") < [
        p.key for p in space.params
    ].index("mixing.p")


def test_define_by_run_honours_conditions_and_bounds(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, VALID))
    drawn = draw(space, 40)
    for overrides in drawn:
        assert ("mixing.p" in overrides) == (overrides["mixing.block"] in ("cut", "cow"))
        assert overrides["mixing.reweight_r"] == 3  # fixed: a constant in every trial
        assert 0.1 <= overrides["optim.lr"] <= 1.0
        assert overrides["model.n_members"] in (2, 3)
        cfg = space.trial_config(overrides)
        assert cfg.mixing.p == overrides.get("mixing.p", 0.5)  # else the preset's p stays
    assert {o["mixing.block"] for o in drawn} == {"linear", "cut", "cow"}


def test_condition_on_base_key_and_chained_conditions(tmp_path: Path) -> None:
    text = edit(
        10,
        "  model.n_members: {type: int, low: 2, high: 3, when: {data.name: [digits]}}\n"
        "  mixing.input_mix: {type: categorical, choices: [none, cutmix], "
        "when: {mixing.block: [cut]}}\n"
        "  mixing.input_mix_prob: {type: uniform, low: 0.2, high: 0.8, "
        "when: {mixing.input_mix: [cutmix], model.n_members: [3]}}",
    )
    space = load_space(write(tmp_path, text))
    drawn = draw(space, 60, seed=1)
    for overrides in drawn:
        assert "model.n_members" in overrides  # its base-key condition always holds
        assert ("mixing.input_mix" in overrides) == (overrides["mixing.block"] == "cut")
        # a parent that is not drawn keeps its base value ("none"), so the chain stops there
        held = overrides.get("mixing.input_mix") == "cutmix" and overrides["model.n_members"] == 3
        assert ("mixing.input_mix_prob" in overrides) == held
    assert any("mixing.input_mix_prob" in o for o in drawn)


def test_define_by_run_drives_rays_optuna_search(tmp_path: Path) -> None:
    """Ray's OptunaSearch asks the space's define-by-run function: each suggestion is a
    trial config within the space, and each result reaches the study as that trial's value."""
    from ray.tune.search.optuna import OptunaSearch

    space = load_space(write(tmp_path, VALID))
    metrics, modes = space.metric_modes()
    searcher = OptunaSearch(space=space.define_by_run, metric=metrics[0], mode=modes[0], seed=0)
    suggested = []
    for i in range(6):
        config = searcher.suggest(f"t{i}")
        cfg = space.trial_config(config)
        assert cfg.mixing.block in ("linear", "cut", "cow") and 0.1 <= cfg.optim.lr <= 1.0
        assert cfg.model.n_members in (2, 3) and cfg.optim.batch_repeat in (1, 2)
        assert ("mixing.p" in config) == (cfg.mixing.block in ("cut", "cow"))  # conditional
        assert cfg.mixing.reweight_r == 3 and cfg.optim.epochs == 3  # fixed and base values
        searcher.on_trial_complete(f"t{i}", {"val/acc": 0.1 * i})
        suggested.append(config)
    study = searcher._ot_study  # the Optuna study Ray's searcher drives
    assert [t.value for t in study.trials] == pytest.approx([0.1 * i for i in range(6)])
    for trial, config in zip(study.trials, suggested, strict=True):
        assert trial.params and all(config[k] == v for k, v in trial.params.items())


MISTAKES = {
    # name: (text, line or None, substrings the message must hold)
    "unknown top-level key": (
        VALID.replace("sampler:", "sampeler:"),
        14,
        ["unknown key 'sampeler'", "`sampler`"],
    ),
    "unknown param key": (
        edit(7, "  mixing.pp: {type: uniform, low: 0.1, high: 0.9}"),
        7,
        ["`params.mixing.pp`", "not a training-config key", "did you mean `mixing.p`"],
    ),
    "unknown section": (
        edit(8, "  optimizer.lr: {type: loguniform, low: 0.1, high: 1.0}"),
        8,
        ["'optimizer.lr'", "sections: data, model, mixing, optim, run"],
    ),
    "bad param type": (
        edit(8, "  optim.lr: {type: normal, low: 0.1, high: 1.0}"),
        8,
        ["`params.optim.lr.type`", "unknown type 'normal'", "uniform, loguniform"],
    ),
    "unknown param field": (
        edit(8, "  optim.lr: {type: loguniform, low: 0.1, hi: 1.0}"),
        8,
        ["unknown key 'hi'", "did you mean `high`"],
    ),
    "low >= high": (
        edit(8, "  optim.lr: {type: loguniform, low: 1.0, high: 0.1}"),
        8,
        ["`params.optim.lr`", "low < high", "low=1.0, high=0.1"],
    ),
    "loguniform from zero": (
        edit(8, "  optim.lr: {type: loguniform, low: 0, high: 1.0}"),
        8,
        ["`params.optim.lr.low`", "low > 0", "type: uniform"],
    ),
    "uniform on an int key": (
        edit(10, "  model.n_members: {type: uniform, low: 2, high: 3}"),
        10,
        ["`model.n_members` holds int", "use categorical"],
    ),
    "probability out of range": (
        edit(7, "  mixing.p: {type: uniform, low: 0.1, high: 1.5}"),
        7,
        ["`params.mixing.p`", "can draw 1.5", "in [0, 1]", "narrow"],
    ),
    "config rule batch_size % batch_repeat": (
        edit(9, "  optim.batch_repeat: {type: categorical, choices: [1, 3]}"),
        9,
        ["`params.optim.batch_repeat`", "can draw 3", "multiple of `optim.batch_repeat`"],
    ),
    "single-choice categorical": (
        edit(9, "  optim.batch_repeat: {type: categorical, choices: [2]}"),
        9,
        ["two or more values", "type: fixed"],
    ),
    "bad sampler": (
        VALID.replace("type: tpe", "type: bayes"),
        14,
        ["`sampler.type`", "unknown sampler 'bayes'", "tpe, random, cmaes, gp, nsga2, grid"],
    ),
    "unknown sampler option": (
        VALID.replace("seed: 0}", "seed: 0, n_startup: 3}"),
        14,
        ["unknown key 'n_startup'", "did you mean `n_startup_trials`"],
    ),
    "grid with a continuous param": (
        VALID.replace("type: tpe", "type: grid"),
        7,
        ["`params.mixing.p.type`", "grid sampler needs finite values", "not uniform"],
    ),
    "test-split objective": (
        edit(13, "  - {metric: test/acc, mode: max}"),
        13,
        ["`objective[0].metric`", "test split only reports", "use val/acc"],
    ),
    "metric without split": (
        edit(13, "  - {metric: acc, mode: max}"),
        13,
        ["val/NAME, train/NAME or cost/NAME", "'acc'"],
    ),
    "bad mode": (edit(13, "  - {metric: val/acc, mode: maximize}"), 13, ["min or max"]),
    "multi-objective asha without guard": (
        edit(13, "  - {metric: val/acc, mode: max}\n  - {metric: val/nll, mode: min}"),
        16,
        ["`scheduler.type`", "2 objectives", "add `guard:", "fifo"],
    ),
    "condition on unknown key": (
        edit(7, "  mixing.p: {type: uniform, low: 0.1, high: 0.9, when: {mixing.blok: [cut]}}"),
        7,
        ["`params.mixing.p.when.mixing.blok`", "did you mean `mixing.block`"],
    ),
    "condition on a continuous param": (
        edit(7, "  mixing.p: {type: uniform, low: 0.1, high: 0.9, when: {optim.lr: [0.5]}}"),
        7,
        ["`params.mixing.p.when.optim.lr`", "exact values", "not loguniform"],
    ),
    "condition value never taken": (
        edit(7, "  mixing.p: {type: uniform, low: 0.1, high: 0.9, when: {mixing.block: [cat]}}"),
        7,
        ["never takes 'cat'", "['linear', 'cut', 'cow']"],
    ),
    "condition on base key that never holds": (
        edit(7, "  mixing.p: {type: uniform, low: 0.1, high: 0.9, when: {data.name: [cifar10]}}"),
        7,
        ["never holds", "'digits'"],
    ),
    "conditions in a loop": (
        edit(
            6,
            "  mixing.block: {type: categorical, choices: [linear, cut, cow], "
            "when: {model.n_members: [2]}}",
        ).replace("high: 3}", "high: 3, when: {mixing.block: [cut]}}"),
        6,
        ["conditions form a loop", "(mixing.block -> model.n_members -> mixing.block)"],
    ),
    "yaml syntax error": (
        edit(8, "  optim.lr: {type: loguniform, low: 0.1, high: 1.0"),
        9,
        ["not valid YAML"],
    ),
    "duplicate key": (
        edit(11, "  optim.lr: {type: uniform, low: 0.1, high: 0.2}"),
        11,
        ["`params.optim.lr` appears twice", "first at line 8"],
    ),
    "unknown preset": (edit(3, "  preset: digits_quik"), 3, ["unknown preset", "digits_quick"]),
    "no budget": (edit(16, "budget: {}"), 16, ["a search needs an end", "trials", "time"]),
    "bad duration": (edit(16, "budget: {time: 2 hours}"), 16, ["positive duration", "2h"]),
    "no cpus": (edit(17, "resources: {gpus: 0, cpus: 0}"), 17, ["`resources.cpus`", ">= 1"]),
    "asha grace beyond max_t": (
        edit(15, "scheduler: {type: asha, grace_period: 5}"),
        15,
        ["`scheduler.grace_period`", "<= max_t (3 epochs)"],
    ),
    "missing required key": (VALID.replace("budget: {trials: 4}\n", ""), None, ["`budget`"]),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_mistake_names_file_line_key_and_fix(tmp_path: Path, name: str) -> None:
    text, line, expected = MISTAKES[name]
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}:" if line else f"{path}:"), message
    for part in expected:
        assert part in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")


def test_grid_budget_defaults_to_grid_size_and_is_capped(tmp_path: Path) -> None:
    grid = edit(8, "  optim.lr: {type: categorical, choices: [0.1, 0.2]}")
    grid = grid.replace("type: tpe", "type: grid").replace("[linear, cut, cow]}", "[cut, cow]}")
    grid = edit(7, "  mixing.p: {type: categorical, choices: [0.2, 0.5]}", grid)
    space = load_space(write(tmp_path, grid.replace("budget: {trials: 4}", "budget: {time: 1h}")))
    assert space.budget.trials == 2 * 2 * 2 * 2 * 2  # block, p, lr, b, M
    with pytest.raises(SpaceError, match="the grid has 32 points"):
        load_space(write(tmp_path, grid.replace("trials: 4", "trials: 33")))


def test_multi_objective_with_guard(tmp_path: Path) -> None:
    text = edit(13, "  - {metric: val/acc, mode: max}\n  - {metric: val/disagreement, mode: max}")
    text += "guard: {metric: val/nll, mode: min}\n"
    space = load_space(write(tmp_path, text))
    assert space.metric_modes() == (["val/acc", "val/disagreement"], ["max", "max"])
    assert space.guard.metric == "val/nll"


def test_warnings_for_runnable_but_odd_spaces(tmp_path: Path) -> None:
    text = VALID.replace("type: tpe, seed: 0", "type: nsga2, seed: 0, population_size: 4")
    with pytest.warns(SpaceWarning) as caught:
        load_space(write(tmp_path, text))
    messages = [str(w.message) for w in caught]
    assert any("nsga2 on one objective" in m for m in messages), messages
    assert any("under two nsga2 generations of 4" in m for m in messages), messages
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpaceWarning)
        load_space(write(tmp_path, VALID))


def test_cmaes_refuses_several_objectives(tmp_path: Path) -> None:
    text = edit(13, "  - {metric: val/acc, mode: max}\n  - {metric: val/nll, mode: min}")
    text = text.replace("type: tpe", "type: cmaes").replace("type: asha,", "type: fifo,")
    with pytest.raises(SpaceError, match="cmaes optimises one objective"):
        load_space(write(tmp_path, text.replace(", grace_period: 1, reduction_factor: 2", "")))


def test_reweight_inf_choice_survives(tmp_path: Path) -> None:
    text = edit(11, "  mixing.reweight_r: {type: categorical, choices: [1, 3, .inf]}")
    space = load_space(write(tmp_path, text))
    assert math.inf in next(p for p in space.params if p.key == "mixing.reweight_r").choices


LAUGHS = (
    "l0: &l0 ["
    + ", ".join(["lol"] * 10)
    + "]\n"
    + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))
)  # 10**10 values once its aliases are expanded
HOSTILE_YAML = {
    "recursive alias": (
        edit(4, "  overrides: &o {optim.milestones: [1, *o]}"),
        4,
        "*o sits inside",
    ),
    "3000 nested brackets": (edit(4, "  overrides: " + "[" * 3000), 4, "more than 64 lists"),
    "billion laughs": (VALID + LAUGHS, 22, "its aliases expand it to"),  # l4: 111,111
    "over the size bound": (VALID + "#" * (1 << 20), None, "larger than the 1,048,576 bytes"),
    "a list as a key": (edit(10, "  ? [model.n_members]\n  : 2"), 10, "a list or mapping used as"),
}


@pytest.mark.parametrize("name", HOSTILE_YAML)
def test_hostile_yaml_is_one_line_at_its_line_and_nothing_starts(
    tmp_path, monkeypatch, capsys, name
):
    from mixmo_search import tune

    text, line, expected = HOSTILE_YAML[name]
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    assert str(caught.value).startswith(f"{path}:{line}:" if line else f"{path}:")
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        tune.main(["--space", str(path), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and err == f"error: {caught.value}"
    assert [p.name for p in tmp_path.iterdir()] == ["space.yaml"]


@pytest.mark.parametrize(
    ("overrides", "metric", "message"),
    [
        ("{optim.epochs: 3}", "val/corrupt_acc", "needs images to score: set data.corruptions"),
        ("{optim.epochs: 3}", "val/ood_auroc_msp", "set data.ood"),
        ("{data.corruptions: all}", "val/corrupt_acc", "set run.robustness_every: 1"),
    ],
)
def test_a_shifted_objective_needs_its_images_every_epoch(
    tmp_path: Path, overrides: str, metric: str, message: str
) -> None:
    text = VALID.replace("{optim.epochs: 3}", overrides).replace("val/acc", metric)
    with pytest.raises(SpaceError, match=f"space.yaml:.*{message}"):
        load_space(write(tmp_path, text))


def test_uncertainty_and_cost_metrics_are_objectives(tmp_path: Path) -> None:
    shifted = "{data.corruptions: all, data.ood: sklearn-photos, run.robustness_every: 1}"
    text = VALID.replace("{optim.epochs: 3}", shifted).replace(
        "  - {metric: val/acc, mode: max}",
        "  - {metric: val/corrupt_acc, mode: max}\n  - {metric: val/ood_fpr95_mi, mode: min}\n"
        "  - {metric: cost/flops, mode: min}\nguard: {metric: val/aurc, mode: min}",
    )
    space = load_space(write(tmp_path, text.replace("type: tpe", "type: nsga2")))
    assert [o.metric for o in space.objectives] == ["val/corrupt_acc", "val/ood_fpr95_mi",
                                                    "cost/flops"]  # fmt: skip
    assert space.guard.metric == "val/aurc"
    with pytest.raises(SpaceError, match="cannot select on test/corrupt_acc"):
        load_space(write(tmp_path, text.replace("val/corrupt_acc", "test/corrupt_acc")))
