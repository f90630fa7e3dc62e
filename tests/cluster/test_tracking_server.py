"""The shared MLflow server (infra/mlflow-server.sh on PostgreSQL) does what a search needs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mixmo_search import tracking, tracking_auth, trial_table

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_a_search_logs_to_the_server_and_reads_back(mlflow_server, tmp_path):
    """Parent and trial runs, params, metrics and artifacts through the proxied store."""
    client = tracking.connect(mlflow_server.uri)
    exp_id = tracking.experiment_id(client)
    assert exp_id == tracking.experiment_id(client)  # found again, not created twice
    experiment = client.get_experiment(exp_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied, not a path

    parent = tracking.start_search_run(
        client, exp_id, name="server-check", tags={"mixmo.sampler": "tpe"},
        params={"sampler": "tpe", "budget.trials": 2}, artifacts={"space.yaml": "name: x\n"},
    )  # fmt: skip
    trial = tracking.start_trial_run(
        client, exp_id, parent, search="server-check", trial_id="t0",
        params={"optim.lr": 0.1, "mixing.p": 0.5},
    )  # fmt: skip
    for epoch, acc in enumerate([0.5, 0.7]):
        tracking.log_metrics(client, trial, {"val/acc": acc, "lr": 0.1}, step=epoch)
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(os.urandom(4096))
    client.log_artifact(trial, str(checkpoint), "checkpoint")
    tracking.set_status(client, trial, "finished")
    tracking.set_status(client, parent, "finished")

    assert tracking.search_run_id(client, exp_id, "server-check") == parent
    trials = trial_table.load_trials(client, exp_id, parent)
    assert list(trials["trial_id"]) == ["t0"]
    assert trials.loc[0, "status"] == "finished"
    assert trials.loc[0, "param.optim.lr"] == 0.1 and trials.loc[0, "val/acc"] == 0.7
    history = tracking.metric_histories(client, [trial], ["val/acc"])
    assert list(history["value"]) == [0.5, 0.7] and list(history["step"]) == [0, 1]
    assert client.get_run(parent).info.status == "FINISHED"

    got = tracking.download_artifact(client, trial, "checkpoint/best.pt", tmp_path / "down")
    assert got.read_bytes() == checkpoint.read_bytes()
    space = tracking.download_artifact(client, parent, "space.yaml", tmp_path / "down")
    assert space.read_text() == "name: x\n"
    # the server, not the client, wrote them: under --artifacts-destination
    stored = {p.name for p in mlflow_server.artifacts.rglob("*") if p.is_file()}
    assert {"best.pt", "space.yaml"} <= stored


def test_runs_are_rows_in_postgres(mlflow_server):
    """The backend really is the PostgreSQL database, not a fallback file store."""
    import psycopg

    client = tracking.connect(mlflow_server.uri)
    exp_id = tracking.experiment_id(client)
    run_id = client.create_run(exp_id, run_name="row-check").info.run_id
    with psycopg.connect(mlflow_server.backend_uri) as db:
        row = db.execute("SELECT name FROM runs WHERE run_uuid = %s", (run_id,)).fetchone()
    assert row == ("row-check",)


def test_the_server_listens_on_loopback_only(mlflow_server):
    port = int(mlflow_server.uri.rsplit(":", 1)[1])
    listening = _listening_addresses(port)
    assert listening == {"127.0.0.1"}, listening


def test_a_server_without_a_login_passes_the_permission_checks(mlflow_server):
    """MLFLOW_AUTH=off (the loopback-only opt-out): no auth app, so nothing to check."""
    client = tracking.connect(mlflow_server.uri)
    assert tracking_auth.login(mlflow_server.uri) is None
    tracking_auth.check_search(client, "an-experiment-nobody-made")
    tracking_auth.check_model_read(client, "models:/no-such-model@champion")


def test_the_end_of_a_search_waits_out_a_server_restart(postgres, server_tools, tmp_path, capsys):
    """Found by the chaos soak (`benchmarks/chaos.py --cluster`): the server SIGKILLed as the
    driver concluded (reading its trials back, closing its run) crashed the driver with a
    traceback, exit 1, and left the search's run RUNNING. Through `Patient` each call waits
    for the server to come back, says so once each way, and a metric batch written twice (a
    POST repeated after a lost answer) is stored once."""
    import signal
    import threading
    import time

    from mixmo_search.search.tracking_queue import Patient

    postgres.create_database("ending", "ending-test-password")
    root, port = tmp_path / "server", server_tools.free_port()
    root.mkdir()

    def start():
        return server_tools.start_mlflow(postgres, "ending", "ending-test-password", root, port)

    server, uri = start(), f"http://127.0.0.1:{port}"
    client = tracking.connect(uri)
    exp_id = tracking.experiment_id(client)
    parent = client.create_run(exp_id, run_name="ending").info.run_id
    tracking.start_trial_run(client, exp_id, parent, search="ending", trial_id="t0", params={})
    patient = Patient(client, uri=uri, doing="end the search")
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=60)
    restarted = []
    back = threading.Thread(target=lambda: (time.sleep(3), restarted.append(start())))
    back.start()
    try:
        trials = trial_table.load_trials(patient, exp_id, parent)  # waits for the server
        batch = tracking.metric_batch({"trials/finished": 1}, step=0)
        tracking.log_metric_batch(patient, parent, batch)
        tracking.log_metric_batch(patient, parent, batch)  # the same POST again
        tracking.set_status(patient, parent, "finished")
        said = capsys.readouterr().out
        assert said.count(f"MLflow store {uri} unreachable (") == 1, said
        assert said.count(f"MLflow store {uri} is back after") == 1, said
        assert list(trials["trial_id"]) == ["t0"]
        assert [m.step for m in client.get_metric_history(parent, "trials/finished")] == [0]
        assert client.get_run(parent).info.status == "FINISHED"
    finally:
        back.join()
        for proc in restarted:
            server_tools.stop(proc)


def test_an_unreachable_server_is_one_clear_error():
    with pytest.raises(tracking.TrackingError, match="cannot reach the MLflow store"):
        tracking.connect("http://127.0.0.1:9")  # discard port: nothing answers


POSTGRES = "postgresql://mlflow@127.0.0.1:5432/mlflow"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"MLFLOW_BACKEND_STORE_URI": "sqlite:///mlflow.db"}, "must be postgresql://"),
        ({"MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow:secret@127.0.0.1:5432/mlflow"},
         "keep the password out"),
        # MLflow's login is on unless turned off, and off only on the loopback
        ({"MLFLOW_AUTH": "off", "MLFLOW_HOST": "10.0.0.5"}, "only on 127.0.0.1"),
        ({"MLFLOW_AUTH": "off", "MLFLOW_HOST": "0.0.0.0"}, "only on 127.0.0.1"),
        ({"MLFLOW_AUTH": "none"}, "MLFLOW_AUTH must be basic"),
        ({}, "admin password must be 12 characters or more"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": "short"}, "admin password must be 12"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD_FILE": "/nonexistent/pw"}, "cannot read"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-enough-password",
          "MLFLOW_AUTH_DATABASE_URI": "postgresql://auth:secret@127.0.0.1/auth"},
         "keep the password out of MLFLOW_AUTH_DATABASE_URI"),
    ],
)  # fmt: skip
def test_the_server_script_refuses_unsafe_settings(settings, message, tmp_path):
    """One line and exit 2, before anything starts or is written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    config = tmp_path / "auth.ini"
    done = subprocess.run(
        ["bash", str(INFRA / "mlflow-server.sh")],
        env={**env, "MLFLOW_BACKEND_STORE_URI": POSTGRES, "MLFLOW_AUTH_CONFIG_PATH": str(config),
             "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"), **settings},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1
    assert not config.exists() and not (tmp_path / "artifacts").exists()


def _listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a listening TCP socket on `port` (from /proc/net/tcp*)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                found.add(_decode(address) if width == 8 else f"ipv6:{address}")
    return found


def _decode(hex_address: str) -> str:
    """/proc/net/tcp writes IPv4 addresses as little-endian hex."""
    return ".".join(str(int(hex_address[i : i + 2], 16)) for i in (6, 4, 2, 0))
