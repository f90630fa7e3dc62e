"""Real servers for the cluster tests: a PostgreSQL and an MLflow tracking server on top of it.

Both listen on a free loopback port and live for the test session. PostgreSQL comes from the
operating system (Debian: `apt-get install postgresql`; `.ci/run` installs it) and runs under
the `postgres` system user when the tests run as root, since it refuses to run as root. The
roles and databases are made by `infra/postgres-setup.sh`, and the MLflow server is started by
`infra/mlflow-server.sh`, so the tests exercise what an operator runs.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"
SERVICE_USER = "postgres"  # the system user Debian's postgresql package creates
START_TIMEOUT_S = 120  # MLflow creates its tables on first start: ~20 s on two busy cores


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server and how to reach it as its superuser."""

    host: str
    port: int
    superuser: str
    password: str
    data_dir: Path

    def env(self) -> dict[str, str]:
        """libpq variables for a superuser connection (psql, infra/postgres-setup.sh)."""
        return {
            **os.environ, "PGHOST": self.host, "PGPORT": str(self.port),
            "PGUSER": self.superuser, "PGPASSWORD": self.password, "PGDATABASE": "postgres",
        }  # fmt: skip

    def create_database(self, role: str, password: str) -> str:
        """A role and its database (named alike) via infra/postgres-setup.sh; its URI."""
        with (INFRA / "postgres-setup.sh").open() as script:  # on stdin, as infra/README.md
            done = subprocess.run(
                ["bash", "-s", role], stdin=script,
                env={**self.env(), "MIXMO_DB_PASSWORD": password},
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return f"postgresql://{role}:{password}@{self.host}:{self.port}/{role}"


@dataclass(frozen=True)
class MlflowServer:
    uri: str  # http://127.0.0.1:PORT
    artifacts: Path  # --artifacts-destination
    backend_uri: str  # postgresql://... (with the password, for the tests' own checks)
    log: Path


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_bin() -> Path | None:
    """The folder of initdb/pg_ctl: Debian keeps them off PATH, in /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major_version)
    return Path(found[-1]).parent if found else None


def _major_version(initdb: str) -> int:
    version = Path(initdb).parts[-3]
    return int(version) if version.isdigit() else 0


def _missing(what: str) -> None:
    """CI must have everything (`.ci/run` installs it); elsewhere, skip with the fix."""
    message = f"{what}; install it with `apt-get install -y postgresql` (as .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1 (password auth over TCP), removed afterwards."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        _missing("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    as_root = os.geteuid() == 0
    run_as: list[str] = []
    if as_root:  # postgres refuses to run as root
        try:
            import pwd

            service = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            _missing(f"there is no {SERVICE_USER!r} system user to run PostgreSQL as")
        run_as = ["runuser", "-u", SERVICE_USER, "--"]
    root = Path(tempfile.mkdtemp(prefix="mixmo-postgres-"))
    if as_root:
        os.chown(root, service.pw_uid, service.pw_gid)
    data_dir, password, port = root / "data", "superuser-test-password", free_port()
    password_file = root / "superuser.pw"
    password_file.write_text(password)
    if as_root:
        os.chown(password_file, service.pw_uid, service.pw_gid)

    def run(*args: str) -> None:
        done = subprocess.run(
            [*run_as, *args], cwd=root, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"

    run(
        str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "-E", "UTF8",
        "--auth-local=peer", "--auth-host=scram-sha-256", f"--pwfile={password_file}",
    )  # fmt: skip
    password_file.unlink()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root}"
    log = root / "postgres.log"
    try:
        run(str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(log),
            "-w", "-t", "60", "start")  # fmt: skip
        yield Postgres("127.0.0.1", port, "postgres", password, data_dir)
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"],
            cwd=root, capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll `url` (GET, expecting 200) until it answers, the process dies, or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    """End a server started in its own session: SIGTERM to its group, SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


@pytest.fixture(scope="session")
def mlflow_server(postgres: Postgres, tmp_path_factory) -> Iterator[MlflowServer]:
    """`infra/mlflow-server.sh` on 127.0.0.1: PostgreSQL backend, artifacts proxied to a folder."""
    backend_uri = postgres.create_database("mlflow", "mlflow-test-password")
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts, log, port = root / "mlartifacts", root / "server.log", free_port()
    bin_dir = str(Path(sys.executable).parent)  # this environment's `mlflow`
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # the password reaches libpq through the environment, never the command line
        "MLFLOW_BACKEND_STORE_URI": f"postgresql://mlflow@{postgres.host}:{postgres.port}/mlflow",
        "PGPASSWORD": "mlflow-test-password",
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    for name in ("MLFLOW_HOST", "MLFLOW_TRACKING_URI", "MLFLOW_SERVER_ALLOWED_HOSTS"):
        env.pop(name, None)  # the script's defaults are under test
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", str(INFRA / "mlflow-server.sh")], env=env, cwd=root,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_healthy(f"{uri}/health", proc, log, START_TIMEOUT_S)
        yield MlflowServer(uri, artifacts, backend_uri, log)
    finally:
        stop(proc)
