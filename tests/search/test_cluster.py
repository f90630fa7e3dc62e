"""A local search's Ray: only on the loopback, and closed to clients without its token.

Everything here talks to 127.0.0.1 only: the sockets are read from the processes themselves
(psutil), and the clients that knock are processes of this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from mixmo_search.search import cluster
from tests.waiting import scaled, wait_until

SPACES = Path(__file__).parents[1] / "spaces"
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
CONNECT = "import ray; ray.init(address='{address}', configure_logging=False); print('joined')"


def _listening(root: psutil.Process) -> dict[str, set[str]]:
    """{process name: addresses it listens on} for `root` and all its descendants."""
    found: dict[str, set[str]] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.setdefault(proc.name(), set()).add(conn.laddr.ip)
        except psutil.Error:  # a worker that ended meanwhile
            continue
    return found


def _gcs_port(root: psutil.Process) -> int:
    gcs = next(p for p in root.children(recursive=True) if p.name() == "gcs_server")
    return next(c.laddr.port for c in gcs.net_connections("inet") if c.status == "LISTEN")


def _client(address: str, env: dict[str, str]) -> subprocess.Popen:
    """A process of this machine that tries to join the cluster as a Ray driver."""
    # the flag keeps the client's own view of 127.0.0.1 local, as the search's Ray does
    env = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CONNECT.format(address=address)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _output(proc: subprocess.Popen, *, timeout: float) -> str:
    """What `proc` printed, once it ends or after `timeout` s (then killed: a refused client
    may keep retrying; its return code is then negative)."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


@pytest.mark.slow
def test_a_local_search_listens_on_loopback_only_and_refuses_clients_without_its_token(
    tmp_path,
):
    space = yaml.safe_load((SPACES / "one_trial.yaml").read_text())
    # a trial that outlives the clients' knocking: the search is stopped by SIGINT below
    space["base"]["overrides"].update({"optim.epochs": 300, "optim.milestones": [200, 280]})
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    log = (tmp_path / "tune.log").open("w")
    driver = subprocess.Popen(
        [sys.executable, "-m", "mixmo_search.tune", "--space", str(tmp_path / "space.yaml"),
         "--gpus", "0", "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    results = tmp_path / "runs/searches/one-trial"
    try:

        def reported() -> bool:
            assert driver.poll() is None, f"the search exited {driver.returncode}"
            return any(p.stat().st_size for p in results.glob("*/result.json"))

        wait_until(reported, 300, "the trial's first report in result.json", interval=1)
        root = psutil.Process(driver.pid)
        listening = _listening(root)
        assert {"gcs_server", "raylet"} <= set(listening), listening
        off_loopback = {name: ips - LOOPBACK for name, ips in listening.items() if ips - LOOPBACK}
        assert not off_loopback, f"listening beyond the loopback: {off_loopback}"

        address = f"127.0.0.1:{_gcs_port(root)}"
        home = tmp_path / "stranger"  # a user of this machine who has no token
        home.mkdir()
        stranger = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        clients = {
            "no token": _client(address, {**stranger, "HOME": str(home)}),
            "wrong token": _client(
                address, {**stranger, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}
            ),
            "the token": _client(address, {**os.environ, "RAY_AUTH_MODE": "token"}),
        }
        # the client with the token first; the refused ones have run as long by then
        outputs = {name: _output(clients[name], timeout=scaled(240 if name == "the token" else 30))
                   for name in ("the token", "no token", "wrong token")}  # fmt: skip
        assert clients["the token"].returncode == 0, outputs["the token"][-800:]
        assert "joined" in outputs["the token"], outputs["the token"][-800:]
        for name in ("no token", "wrong token"):  # refused: they exit, or retry until killed
            assert clients[name].returncode != 0, (name, outputs[name][-800:])
            assert "joined" not in outputs[name], (name, outputs[name][-800:])
            assert "Unauthenticated" in outputs[name] or "AuthenticationError" in outputs[name], (
                name, outputs[name][-800:],
            )  # fmt: skip
    finally:
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=scaled(300))
        log.close()
    meta = json.loads((results / "search.json").read_text())
    assert meta["status"] == "interrupted"


def test_the_address_must_answer_before_anything_starts():
    with pytest.raises(cluster.ClusterError, match="no Ray cluster answers at 127.0.0.1:1"):
        cluster.check_address("127.0.0.1:1")
    assert cluster.check_address("127.0.0.1:1", reachable=False) == "127.0.0.1:1"
    for bad in ("127.0.0.1", "host:port", "10.0.0.1:99999", ":6379"):
        with pytest.raises(cluster.ClusterError, match="must be HOST:PORT"):
            cluster.check_address(bad, reachable=False)


def test_ray_client_addresses_need_the_client_extra():
    import importlib.util

    if importlib.util.find_spec("grpc") is None:
        with pytest.raises(cluster.ClusterError, match=r"pip install 'ray\[client\]"):
            cluster.check_address("ray://127.0.0.1:10001")
    else:  # installed: then the address is checked like any other
        with pytest.raises(cluster.ClusterError, match="no Ray cluster answers"):
            cluster.check_address("ray://127.0.0.1:1")


def test_auto_without_a_running_cluster_says_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(cluster, "CURRENT_CLUSTER_FILE", tmp_path / "ray_current_cluster")
    with pytest.raises(cluster.ClusterError, match="ray start --head"):
        cluster.check_address("auto")
    assert cluster.check_address("auto", reachable=False) == "auto"


@pytest.mark.parametrize("mode", [None, 0o644, 0o640, 0o600, 0o666])
def test_the_local_token_file_is_the_owner_s_only(tmp_path, monkeypatch, mode):
    """Ray would create it 0644; a search creates it 0600 first, or tightens one it finds."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    token = tmp_path / ".ray" / "auth_token"
    if mode is not None:
        token.parent.mkdir()
        token.write_text("a" * 64)
        token.chmod(mode)
    assert cluster.private_token() == token
    assert token.stat().st_mode & 0o777 == 0o600
    text = token.read_text()
    assert text == "a" * 64 if mode is not None else len(bytes.fromhex(text)) == 32
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)  # a token given in the environment: no file
    assert cluster.private_token() is None
