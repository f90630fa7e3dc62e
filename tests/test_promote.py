"""promote: policies on validation metrics, a real promotion into a SQLite registry, loading by
alias in a fresh process, refusal of a worse candidate, and bad input that changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from mixmo_search import tracking, trial_table
from mixmo_search.config import resolve_config
from mixmo_search.predictions import load_predictions
from mixmo_search.promote import (
    POLICIES,
    PromoteError,
    Trial,
    main,
    plan_promotion,
    promote,
    select_trial,
)
from mixmo_search.train import train
from tests.waiting import scaled


def add_weak_search(uri: str, folder: Path) -> dict[str, float]:
    """A second real search, `weak`, whose one finished trial trained for a single epoch."""
    cfg = resolve_config(
        preset="digits_quick",
        overrides={"optim.epochs": 1, "run.out_dir": str(folder), "run.progress": False,
                   "run.threads": 0},
    )  # fmt: skip
    final = train(cfg)
    client = tracking.connect(uri)
    exp_id = tracking.experiment_id(client)
    parent = tracking.start_search_run(client, exp_id, name="weak", tags={}, params={},
                                       artifacts={})  # fmt: skip
    run_id = tracking.start_trial_run(client, exp_id, parent, search="weak", trial_id="weak0001",
                                      params=cfg.flat())  # fmt: skip
    split_metrics = {f"final/{k}": v for k, v in final.items() if k.startswith(("val/", "test/"))}
    tracking.log_metrics(client, run_id, split_metrics, step=1)
    client.log_artifact(run_id, str(folder / "best.pt"), "checkpoint")
    tracking.set_status(client, run_id, "finished")
    tracking.set_status(client, parent, "finished")
    return final


@pytest.fixture(scope="module")
def store(search_store, private_store, tmp_path_factory) -> str:
    """The private store, with one more search, `stopped`, whose only trial was stopped early."""
    uri = private_store(tmp_path_factory.mktemp("promote-store"))
    client = tracking.connect(uri)
    exp_id = tracking.experiment_id(client)
    parent = tracking.start_search_run(client, exp_id, name="stopped", tags={}, params={},
                                       artifacts={})  # fmt: skip
    run_id = tracking.start_trial_run(client, exp_id, parent, search="stopped",
                                      trial_id="early001", params={})  # fmt: skip
    tracking.set_status(client, run_id, "pruned")
    tracking.set_status(client, parent, "finished")
    return uri


def registry_state(uri: str) -> dict[str, object]:
    """Registered models with aliases and tagged versions, and the experiment's run count."""
    client = MlflowClient(uri)
    models = {m.name: dict(m.aliases) for m in client.search_registered_models()}
    versions = sorted((v.name, v.version, tuple(sorted(v.tags.items())))
                      for v in client.search_model_versions())  # fmt: skip
    n_runs = len(client.search_runs([tracking.experiment_id(client, create=False)]))
    return {"models": models, "versions": versions, "runs": n_runs}


@pytest.fixture(scope="module")
def champion(search_store, store) -> ModelVersion:
    """The fixture search's best-accuracy trial, promoted through the CLI."""
    main(["--search", search_store.name, "--mlflow-uri", store])
    return MlflowClient(store).get_model_version_by_alias(f"mixmo-{search_store.name}", "champion")


def _trial(trial_id: str, **val: float) -> Trial:
    return Trial(trial_id, f"run-{trial_id}", {f"val/{k}": v for k, v in val.items()},
                 {"test/acc": 1.0 if trial_id == "c" else 0.0})  # fmt: skip


def test_policies_rank_on_validation_metrics_only():
    trials = [
        _trial(
            "a",
            acc=0.90,
            nll=0.30,
            disagreement=0.10,
            corrupt_acc=0.6,
            ood_auroc_msp=0.7,
            aurc=0.05,
        ),
        _trial(
            "b",
            acc=0.85,
            nll=0.25,
            disagreement=0.30,
            corrupt_acc=0.7,
            ood_auroc_msp=0.6,
            aurc=0.04,
        ),
        # best on test: never chosen for it
        _trial(
            "c",
            acc=0.70,
            nll=0.90,
            disagreement=0.50,
            corrupt_acc=0.5,
            ood_auroc_msp=0.9,
            aurc=0.09,
        ),
        _trial(
            "d",
            acc=0.60,
            nll=1.00,
            disagreement=0.45,
            corrupt_acc=0.4,
            ood_auroc_msp=0.5,
            aurc=0.10,
        ),  # dominated by c
    ]
    pick = {name: select_trial(trials, policy, min_acc=0.8 if name == "best-diversity" else None)
            for name, policy in POLICIES.items()}  # fmt: skip
    assert pick["best-accuracy"].trial_id == "a"
    assert pick["best-nll"].trial_id == "b"
    assert pick["best-diversity"].trial_id == "b"  # c is more diverse but below --min-acc
    assert pick["pareto-knee"].trial_id == "b"  # the front is a, b, c; b is nearest utopia
    assert pick["best-robust"].trial_id == "b"
    assert pick["best-ood"].trial_id == "c"
    assert pick["best-selective"].trial_id == "b"
    with pytest.raises(PromoteError, match="--min-acc 0.95"):
        select_trial(trials, POLICIES["best-accuracy"], min_acc=0.95)


def test_promotion_registers_a_tagged_version_under_the_alias(search_store, store, champion):
    client = MlflowClient(store)
    exp_id = tracking.experiment_id(client, create=False)
    trials = trial_table.load_trials(client, exp_id, search_store.parent_run_id)
    finished = trials[trials["status"] == "finished"]
    best = finished.sort_values(["final/val/acc", "trial_id"], ascending=[False, True]).iloc[0]
    tags = champion.tags
    assert str(champion.version) == "1"
    assert tags["mixmo.trial_id"] == best["trial_id"]
    assert tags["mixmo.trial_run_id"] == best["run_id"]
    assert tags["mixmo.policy"] == "best-accuracy"
    assert tags["mixmo.search"] == search_store.name
    parent_tags = client.get_run(search_store.parent_run_id).data.tags
    assert tags["mixmo.space_digest"] == parent_tags["mixmo.space_digest"]
    assert tags["mixmo.code_revision"] == parent_tags["mixmo.code_revision"]
    assert float(tags["val/acc"]) == pytest.approx(best["final/val/acc"])
    assert float(tags["test/acc"]) == pytest.approx(best["final/test/acc"])
    assert float(tags["promote/test/acc"]) == pytest.approx(best["final/test/acc"])
    # the model sits in a promotion run under the search, which load_trials does not list
    run = client.get_run(champion.run_id)
    assert run.data.tags[tracking.KIND] == "promotion"
    assert run.data.tags[tracking.PARENT] == search_store.parent_run_id
    assert champion.run_id not in set(trials["run_id"])


def test_alias_loads_in_a_fresh_process_with_the_trainers_predictions(
    search_store, store, champion, tmp_path
):
    script = """
import json, sys
import mlflow, numpy as np
from mixmo_search.config import resolve_config
from mixmo_search.datasets import load_dataset
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
ds = load_dataset(resolve_config(preset="digits_quick").data)
out = model.predict(ds.test.images.numpy().astype(np.float32))
acc = float((out["class"].to_numpy() == ds.test.labels.numpy()).mean())
print(json.dumps({"classes": out["class"].tolist(), "acc": acc, "columns": list(out.columns)}))
"""
    uri = f"models:/mixmo-{search_store.name}@champion"
    done = subprocess.run([sys.executable, "-c", script, store, uri], capture_output=True,
                          text=True, timeout=scaled(300), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])

    client = MlflowClient(store)
    trial_run = client.get_run(champion.tags["mixmo.trial_run_id"])
    assert loaded["acc"] == pytest.approx(trial_run.data.metrics["final/test/acc"], abs=1e-12)
    npz = client.download_artifacts(trial_run.info.run_id, "predictions/test.npz", str(tmp_path))
    trainer = load_predictions(npz)
    # float16 logits on disk: compare where the trainer's top two classes are clearly apart
    top2 = np.sort(trainer.ensemble_logits, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-2
    trainer_classes = trainer.ensemble_logits.argmax(axis=1)
    assert (np.array(loaded["classes"])[clear] == trainer_classes[clear]).all()
    n_members = int(trial_run.data.params["model.n_members"])
    assert loaded["columns"] == ["class", "confidence"] + [f"vote_{k}" for k in range(n_members)]


def test_a_worse_candidate_is_refused_unless_forced(search_store, store, tmp_path, capsys):
    # its own model name, so the order of the tests does not matter
    first = promote(search_store.name, model_name="ladder", tracking_uri=store)
    weak_acc = add_weak_search(store, tmp_path / "weak")["val/acc"]
    assert weak_acc < first.val_metrics["val/acc"]  # the premise of this test

    before = registry_state(store)
    capsys.readouterr()  # drop what MLflow logged while promoting the first
    with pytest.raises(SystemExit) as exited:
        main(["--search", "weak", "--trial", "weak0001", "--model-name", "ladder",
              "--mlflow-uri", store])  # fmt: skip
    assert exited.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert (
        f"version 1 (trial {first.trial_id}: val/acc {first.val_metrics['val/acc']:.4f})"
        in message
    )
    assert f"than trial weak0001 (val/acc {weak_acc:.4f}); pass --force" in message
    assert registry_state(store) == before

    result = promote("weak", model_name="ladder", force=True, tracking_uri=store)
    assert (result.version, result.replaced_version, result.trial_id) == ("2", "1", "weak0001")
    holder = MlflowClient(store).get_model_version_by_alias("ladder", "champion")
    assert str(holder.version) == "2" and holder.tags["mixmo.trial_id"] == "weak0001"
    assert result.test_acc_measured == pytest.approx(result.test_acc_logged, abs=1e-12)
    assert not result.warnings


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--search", "nope"], "no search named 'nope'"),
        (["--search", "it's"], 'no search named "it\'s"'),
        (["--search", 'it\'s "x"'], "no search named"),
        (["--search", "stopped"], "has no finished trial (1 pruned)"),
        (["--search", "{fixture}", "--policy", "best-foo"], "unknown policy 'best-foo'"),
        (["--search", "{fixture}", "--policy", "best-diversity"], "needs --min-acc"),
        (["--search", "{fixture}", "--min-acc", "1.0"], "lower --min-acc"),
        (["--search", "{fixture}", "--trial", "nope"], "has no finished trial 'nope'"),
        (["--search", "{fixture}", "--alias", "latest"], "alias 'latest' is not allowed"),
        (["--search", "{fixture}", "--model-name", "a/b"], "Invalid model name"),
        (["--search", "{fixture}", "--experiment", "nope"], "no experiment 'nope'"),
        (["--search", "{fixture}", "--mlflow-uri", "http://127.0.0.1:9"], "cannot reach"),
        (["--search", "{fixture}", "--mlflow-uri", "sqlite:///{tmp}/none.db"], "no MLflow store"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    search_store, store, argv, expected, capsys, tmp_path
):
    argv = [a.replace("{fixture}", search_store.name).replace("{tmp}", str(tmp_path))
            for a in argv]  # fmt: skip
    if "--mlflow-uri" not in argv:
        argv += ["--mlflow-uri", store]
    before = registry_state(store)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and expected in err
    assert registry_state(store) == before
    assert not (tmp_path / "none.db").exists()


def test_dry_run_shows_the_plan_and_writes_nothing(search_store, store, capsys):
    before = registry_state(store)
    main(["--search", search_store.name, "--mlflow-uri", store, "--dry-run"])
    assert capsys.readouterr().out.startswith("would promote trial ")
    assert registry_state(store) == before


def test_promoting_the_same_trial_again_makes_no_new_version(search_store, store, capsys):
    first = promote(search_store.name, model_name="twice", tracking_uri=store)
    before = registry_state(store)
    again = promote(search_store.name, model_name="twice", tracking_uri=store)
    assert (again.version, again.trial_id) == (first.version, first.trial_id)
    assert again.replaced_version is None and not again.warnings  # no WARNING: nothing wrong
    assert again.again.endswith("and holds @champion: nothing changed")
    capsys.readouterr()
    main(["--search", search_store.name, "--model-name", "twice", "--mlflow-uri", store])
    printed = capsys.readouterr()
    assert "WARNING" not in printed.err and "promoted trial" not in printed.out
    assert f"is already version {first.version} of twice and holds @champion" in printed.out
    assert registry_state(store) == before
    holder = MlflowClient(store).get_model_version_by_alias("twice", "champion")
    assert str(holder.version) == first.version


def test_a_trial_with_non_finite_metrics_is_never_promoted(store, tmp_path):
    """A finished trial whose final NLL is infinite, with the best accuracy of its search."""
    client = tracking.connect(store)
    exp_id = tracking.experiment_id(client)
    parent = tracking.start_search_run(client, exp_id, name="broken", tags={}, params={},
                                       artifacts={})  # fmt: skip
    good_final = add_weak_search(store, tmp_path / "weak2")  # a real trial to fall back on
    for trial_id, acc, nll in (("inf0001", 0.99, float("inf")), ("nan0001", 0.98, float("nan"))):
        run_id = tracking.start_trial_run(client, exp_id, parent, search="broken",
                                          trial_id=trial_id, params={})  # fmt: skip
        tracking.log_metrics(client, run_id, {"final/val/acc": acc, "final/val/nll": nll,
                                              "final/test/acc": acc, "final/test/nll": nll},
                             step=1)  # fmt: skip
        tracking.set_status(client, run_id, "finished")
    with pytest.raises(PromoteError, match="has no finished trial"):
        promote("broken", tracking_uri=store)
    assert good_final["val/acc"] < 0.98  # the premise: the broken trials would have won


def test_best_robust_promotes_the_trial_most_accurate_under_corruption(
    ensemble_store, private_store, tmp_path, capsys
):
    """The search on corrupted validation accuracy (tests/spaces/ensembles_small.yaml) through
    `promote --policy best-robust`: its best trial on val/corrupt_acc, with the metric tagged."""
    uri = private_store(tmp_path, ensemble_store.uri)
    main(["--search", ensemble_store.name, "--policy", "best-robust", "--mlflow-uri", uri])
    assert "(best-robust)" in capsys.readouterr().out
    client = MlflowClient(uri)
    exp_id = tracking.experiment_id(client, create=False)
    trials = trial_table.trial_record(client, exp_id, ensemble_store.parent_run_id)
    best = trial_table.best_trial(trials, "val/corrupt_acc", "max")  # ties: Optuna's rule
    version = client.get_model_version_by_alias(f"mixmo-{ensemble_store.name}", "champion")
    assert version.tags["mixmo.trial_id"] == best["trial_id"]
    assert version.tags["mixmo.policy"] == "best-robust"
    assert float(version.tags["val/corrupt_acc"]) == pytest.approx(best["val/corrupt_acc"])


def test_robustness_policies_on_a_search_without_those_metrics_say_so(search_store):
    for policy in ("best-robust", "best-ood"):
        with pytest.raises(PromoteError, match="has the metrics .* choose another --policy"):
            plan_promotion(search_store.name, policy=policy, tracking_uri=search_store.uri)
