"""study: Optuna trial numbers of Ray trials, read back from a real SQLite study."""

from __future__ import annotations

import optuna

from mixmo_search.search.study import STUDY_FILE, match_trial_numbers, study_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_study(folder, draws: list[dict]) -> None:
    """A study named `s` whose trials draw `draws` in order (block always, p only for cut)."""
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{folder / STUDY_FILE}")
    for draw in draws:
        study.enqueue_trial(draw)  # the sampler draws what the enqueued dict leaves out
        trial = study.ask()
        trial.suggest_categorical("mixing.block", ["cut", "linear"])
        if draw["mixing.block"] == "cut":
            trial.suggest_float("mixing.p", 0.0, 1.0)
        study.tell(trial, 0.5)


def row(run_id: str, block: str, p: float, searched: list[str]) -> dict:
    """A trial row as the dashboard holds it: every config key logged, `searched` listed."""
    return {"run_id": run_id, "param.mixing.block": block, "param.mixing.p": p,
            "param.model.n_members": 2, "param.searched": str(sorted(searched))}  # fmt: skip


def test_numbers_follow_the_drawn_values(tmp_path):
    draws = [{"mixing.block": "cut"}, {"mixing.block": "linear"}, {"mixing.block": "cut"}]
    run_study(tmp_path, draws)
    trials = study_trials(tmp_path, "s")
    assert [number for number, _ in trials] == [0, 1, 2]
    cut_ps = {n: params["mixing.p"] for n, params in trials if "mixing.p" in params}
    # the linear trial keeps the base p; fixed params (model.n_members) never reach Optuna
    runs = [
        row("r-linear", "linear", 0.5, ["mixing.block", "model.n_members"]),
        *[
            row(f"r{n}", "cut", p, ["mixing.block", "mixing.p", "model.n_members"])
            for n, p in cut_ps.items()
        ],
    ]
    found = match_trial_numbers(runs, trials)
    assert found == {"r-linear": 1, **{f"r{n}": n for n in cut_ps}}


def test_identical_draws_stay_unmatched(tmp_path):
    run_study(tmp_path, [{"mixing.block": "linear"}, {"mixing.block": "linear"}])
    runs = [row("a", "linear", 0.5, ["mixing.block"]), row("b", "linear", 0.5, ["mixing.block"])]
    assert match_trial_numbers(runs, study_trials(tmp_path, "s")) == {}


def test_no_study_file_or_name_gives_nothing(tmp_path):
    assert study_trials(tmp_path, "s") == []
    run_study(tmp_path, [{"mixing.block": "linear"}])
    assert study_trials(tmp_path, "other") == []
