"""Optuna's RDBStorage on the test PostgreSQL: where a cluster search's study can live."""

from __future__ import annotations

import optuna
import pytest


@pytest.fixture(scope="module")
def optuna_uri(postgres) -> str:
    return postgres.create_database("optuna", "optuna-test-password")


def test_a_study_and_its_trials_persist_in_postgres(optuna_uri):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(optuna_uri)
    study = optuna.create_study(
        study_name="cluster-check", storage=storage, directions=["maximize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=0),
    )  # fmt: skip
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(0.05, 0.2, log=True)})
    study.tell(trial, [0.9, 0.1])
    pruned = study.ask()
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)

    # a second process would see the same: a fresh storage object, a fresh connection pool
    again = optuna.load_study(
        study_name="cluster-check", storage=optuna.storages.RDBStorage(optuna_uri)
    )
    states = [t.state for t in again.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert again.trials[0].values == [0.9, 0.1]
    assert 0.05 <= again.trials[0].params["lr"] <= 0.2
    assert again.directions == study.directions
    storage.engine.dispose()


def test_the_setup_script_can_run_again(postgres, optuna_uri):
    """Re-running infra/postgres-setup.sh keeps the database and updates the password."""
    import psycopg

    uri = postgres.create_database("optuna", "a-new-password")
    with psycopg.connect(uri) as db:
        assert db.execute("SELECT count(*) FROM studies").fetchone()[0] >= 1
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(optuna_uri).close()  # the old password no longer works
