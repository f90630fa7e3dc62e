"""The driver's store calls at the end of a search wait out an outage (`Patient`,
`when_answering`); the server restart itself is in tests/cluster/test_tracking_server.py."""

from __future__ import annotations

import socket
import time

import pytest

from mixmo_search import tracking
from mixmo_search.search.tracking_queue import Patient, when_answering


def _nobody_listening() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_store_that_never_answers_is_one_clear_error_after_the_timeout(monkeypatch, capsys):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the wait is ours, not MLflow's
    uri = _nobody_listening()
    client = MlflowClient(tracking_uri=uri)
    started = time.monotonic()
    with pytest.raises(tracking.TrackingError) as raised:
        when_answering(uri, "end the search", client.search_experiments, timeout=3)
    assert 3 <= time.monotonic() - started < 10  # tried at 0, 1 and 3 s
    assert str(raised.value) == (
        f"the MLflow store {uri} did not answer for 3 s, so the search could not end the "
        "search. The trials themselves are safe in --storage: start the server and resume "
        "the search with --resume"
    )
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 1 and f"MLflow store {uri} unreachable (" in said[0], said


def test_an_error_retrying_cannot_fix_is_raised_at_once(tmp_path, capsys):
    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    patient = Patient(client, uri="sqlite", doing="end the search")
    assert patient.tracking_uri == client.tracking_uri  # attributes pass through
    started = time.monotonic()
    with pytest.raises(Exception, match="not found|does not exist|RESOURCE_DOES_NOT_EXIST"):
        patient.set_tag("0" * 32, "k", "v")  # no such run: an error about the request
    assert time.monotonic() - started < 1 and capsys.readouterr().out == ""
    exp_id = tracking.experiment_id(client)
    run_id = patient.create_run(exp_id).info.run_id  # calls go through, results come back
    patient.set_tag(run_id, "k", "v")
    assert client.get_run(run_id).data.tags["k"] == "v"
