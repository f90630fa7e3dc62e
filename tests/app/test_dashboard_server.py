"""`streamlit run app/dashboard.py` from the repository root, with no flags, stays on the
loopback: `.streamlit/config.toml` binds it (the dashboard can promote models)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil

from tests.waiting import scaled, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_the_dashboard_listens_on_loopback_only_by_default(tmp_path, free_port):
    log_path = tmp_path / "streamlit.log"
    with log_path.open("w", buffering=1) as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/dashboard.py",
             "--server.port", str(free_port), "--server.headless", "true"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none.db'}"},
        )  # fmt: skip
        try:
            # a cold start on a busy 2-core machine takes a while
            wait_until(lambda: _healthy(free_port, server, log_path), 90,
                       f"streamlit's health check on 127.0.0.1:{free_port}")  # fmt: skip
            listening = {
                conn.laddr.ip
                for conn in psutil.Process(server.pid).net_connections(kind="inet")
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == free_port
            }
        finally:
            server.terminate()
            server.wait(timeout=scaled(20))
    assert listening == {"127.0.0.1"}, listening


def _healthy(port: int, server: subprocess.Popen, log_path: Path) -> bool:
    assert server.poll() is None, f"streamlit exited:\n{log_path.read_text()}"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
            return True
    except OSError:  # not listening yet, or not healthy yet
        return False
