"""`streamlit run app/dashboard.py` from the repository root, with no flags, stays on the
loopback: `.streamlit/config.toml` binds it (the dashboard can promote models)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

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
            deadline = time.monotonic() + 90  # a cold start on a busy 2-core machine
            while not _healthy(free_port):
                assert time.monotonic() < deadline and server.poll() is None, log_path.read_text()
                time.sleep(0.5)
            listening = {
                conn.laddr.ip
                for conn in psutil.Process(server.pid).net_connections(kind="inet")
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == free_port
            }
        finally:
            server.terminate()
            server.wait(timeout=20)
    assert listening == {"127.0.0.1"}, listening


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
            return True
    except OSError:  # not listening yet, or not healthy yet
        return False
