"""The dashboard stays on the loopback however and wherever it is started (it can promote
models): `streamlit run /path/to/app/dashboard.py` from a folder outside the repository, with
no flags, and a user configuration that asks for every interface, listens on 127.0.0.1 only
(app/.streamlit/config.toml, beside the script, sets it; only a flag or an environment
variable chooses another interface). The sockets are read from the process (psutil); nothing
is sent off the machine."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil

from tests.waiting import scaled

DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard.py"


def test_the_dashboard_listens_on_loopback_only_from_any_folder(tmp_path, free_port, wait_until):
    elsewhere, home = tmp_path / "elsewhere", tmp_path / "home"
    (home / ".streamlit").mkdir(parents=True)
    elsewhere.mkdir()
    # a user's own configuration that would open every interface
    (home / ".streamlit" / "config.toml").write_text('[server]\naddress = "0.0.0.0"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env.update(HOME=str(home), STREAMLIT_SERVER_PORT=str(free_port),
               STREAMLIT_SERVER_HEADLESS="true",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'none.db'}")  # fmt: skip
    log_path = tmp_path / "streamlit.log"
    with log_path.open("w", buffering=1) as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(DASHBOARD)],
            cwd=elsewhere, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            try:  # a cold start on a busy 2-core machine
                wait_until(
                    lambda: _healthy(free_port, server, log_path), 90, "the dashboard", server
                )
            except AssertionError as err:
                raise AssertionError(f"{err}: {log_path.read_text()}") from None
            listening = {
                conn.laddr.ip
                for conn in psutil.Process(server.pid).net_connections(kind="inet")
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == free_port
            }
        finally:
            server.terminate()
            server.wait(timeout=scaled(20))
    assert listening == {"127.0.0.1"}, listening
    assert not (elsewhere / ".streamlit").exists()  # nothing written where it was started


def _healthy(port: int, server: subprocess.Popen, log_path: Path) -> bool:
    assert server.poll() is None, f"streamlit exited:\n{log_path.read_text()}"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
            return True
    except OSError:  # not listening yet, or not healthy yet
        return False
