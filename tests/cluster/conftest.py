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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.waiting import WaitTimeout, scaled, wait_until

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


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot be started here (with the fix), or None when it can."""
    if _postgres_bin() is None:
        return "PostgreSQL's server programs (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:  # postgres refuses to run as root: it runs as the service user
        import pwd

        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return f"there is no {SERVICE_USER!r} system user to run PostgreSQL as"
    return None


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1 (password auth over TCP), removed afterwards
    (`postgres_missing()` says first whether it can start). The chaos soak uses it too."""
    bin_dir = _postgres_bin()
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", SERVICE_USER, "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="mixmo-postgres-"))
    data_dir, password, port = root / "data", "superuser-test-password", free_port()
    password_file = root / "superuser.pw"
    password_file.write_text(password)
    if as_root:
        import pwd

        service = pwd.getpwnam(SERVICE_USER)
        for path in (root, password_file):
            os.chown(path, service.pw_uid, service.pw_gid)

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1 for the session (`running_postgres`)."""
    missing = postgres_missing()
    if missing:
        _missing(missing)
    with running_postgres() as server:
        yield server


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Wait until `url` answers GET with 200; fail, with the server's log, if the process
    dies or `timeout` (scaled) runs out."""

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    try:
        wait_until(healthy, timeout, f"{url} to answer", interval=0.5)
    except WaitTimeout as late:
        raise AssertionError(f"{late}:\n{log.read_text()[-4000:]}") from None


def stop(proc: subprocess.Popen) -> None:
    """End a server started in its own session: SIGTERM to its group, SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def start_mlflow_server(
    postgres: Postgres, database: str, password: str, root: Path, port: int, *,
    admin_password_file: Path | None = None,
) -> subprocess.Popen:  # fmt: skip
    """`infra/mlflow-server.sh` on 127.0.0.1:`port` over the role and database `database`,
    artifacts under `root`/mlartifacts, output appended to `root`/server.log; once healthy.

    With `admin_password_file`, MLflow's login is on (the script's default; its config file
    is `root`/auth/mlflow-auth.ini); without, MLFLOW_AUTH=off (the loopback-only opt-out)."""
    bin_dir = str(Path(sys.executable).parent)  # this environment's `mlflow`
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # the password reaches libpq through the environment, never the command line
        "MLFLOW_BACKEND_STORE_URI": (
            f"postgresql://{database}@{postgres.host}:{postgres.port}/{database}"
        ),
        "PGPASSWORD": password,
        "MLFLOW_ARTIFACTS_DESTINATION": str(root / "mlartifacts"),
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    for name in (
        "MLFLOW_HOST",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_SERVER_ALLOWED_HOSTS",
        *[n for n in env if n.startswith(("MLFLOW_AUTH", "MLFLOW_TRACKING_"))],
    ):
        env.pop(name, None)  # the script's defaults are under test
    if admin_password_file is None:
        env["MLFLOW_AUTH"] = "off"
    else:
        env["MLFLOW_AUTH_ADMIN_PASSWORD_FILE"] = str(admin_password_file)
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(root / "auth" / "mlflow-auth.ini")
    log = root / "server.log"
    with log.open("a") as out:
        proc = subprocess.Popen(
            ["bash", str(INFRA / "mlflow-server.sh")], env=env, cwd=root,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, log, START_TIMEOUT_S)
    except BaseException:
        stop(proc)
        raise
    return proc


@pytest.fixture(scope="session")
def mlflow_server(postgres: Postgres, tmp_path_factory) -> Iterator[MlflowServer]:
    """`infra/mlflow-server.sh` on 127.0.0.1: PostgreSQL backend, artifacts proxied to a folder."""
    backend_uri = postgres.create_database("mlflow", "mlflow-test-password")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = start_mlflow_server(postgres, "mlflow", "mlflow-test-password", root, port)
    try:
        yield MlflowServer(
            f"http://127.0.0.1:{port}", root / "mlartifacts", backend_uri, root / "server.log"
        )
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def server_tools():
    """For tests that start, kill and restart servers themselves."""
    from types import SimpleNamespace

    return SimpleNamespace(free_port=free_port, start_mlflow=start_mlflow_server, stop=stop)


@dataclass(frozen=True)
class StudyDatabase:
    """A PostgreSQL database for Optuna studies, reached as infra/README.md says: a URL
    without the password, which libpq reads from a 0600 password file."""

    url: str  # postgresql://studies@127.0.0.1:PORT/studies
    pgpass: Path

    def env(self) -> dict[str, str]:
        return {"PGPASSFILE": str(self.pgpass)}


@pytest.fixture(scope="session")
def study_database(postgres: Postgres, tmp_path_factory) -> StudyDatabase:
    password = "studies-test-password"
    postgres.create_database("studies", password)
    pgpass = tmp_path_factory.mktemp("studies") / "pgpass"
    pgpass.write_text(f"{postgres.host}:{postgres.port}:studies:studies:{password}\n")
    pgpass.chmod(0o600)
    url = f"postgresql://studies@{postgres.host}:{postgres.port}/studies"
    return StudyDatabase(url, pgpass)


@dataclass
class RayCluster:
    """A head and worker nodes on 127.0.0.1 (tests/cluster/ray_nodes.py), token auth on."""

    address: str  # 127.0.0.1:PORT, the head's GCS
    head: str  # node ids
    workers: list[str]
    token: str
    temp_dir: Path
    proc: subprocess.Popen

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a driver (or a node) of this cluster: its token, the loopback
        setting, this checkout on PYTHONPATH, Ray's files under the cluster's folder, and
        trials at the node's priority (as infra/ray-*.sh start them)."""
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        return {
            **os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": str(self.temp_dir),
            "RAY_worker_niceness": "0", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root, **extra,
        }  # fmt: skip

    def command(self, line: str, timeout: float = 180) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return _read_json_line(self.proc, timeout)

    def add_worker(self) -> str:
        node = self.command("add")["added"]
        self.workers.append(node)
        return node

    def kill(self, node_id: str) -> None:
        """SIGKILL every process of a worker node (raylet, its workers and agents)."""
        self.command(f"kill {node_id}")
        self.workers.remove(node_id)


def _read_json_line(proc: subprocess.Popen, timeout: float) -> dict:
    import json
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            if selector.select(timeout=1):
                line = proc.stdout.readline()
                if line.startswith("{"):
                    return json.loads(line)
                if not line:
                    break
    raise AssertionError(f"the Ray cluster helper did not answer (exit {proc.poll()})")


def _end_session(sid: int) -> None:
    """SIGKILL what is left of the processes this test started in session `sid`."""
    import psutil

    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                proc.kill()
        except (OSError, psutil.Error):
            continue


@contextmanager
def running_ray_cluster(workers: int = 2) -> Iterator[RayCluster]:
    """A head (0 CPUs: the driver's node) and `workers` 1-CPU worker nodes, all on 127.0.0.1
    with their own token; Ray's files in a private folder (short: Ray's socket paths are
    limited). The chaos soak uses it too."""
    import secrets

    temp_dir = Path(tempfile.mkdtemp(prefix="mxr-", dir="/tmp"))
    cluster = RayCluster("", "", [], secrets.token_hex(32), temp_dir, None)  # type: ignore[arg-type]
    env = cluster.env(
        # a killed node is declared dead within seconds (Ray's defaults take ~30 s)
        RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="2000",
        RAY_health_check_failure_threshold="3",
    )  # fmt: skip
    cluster.proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("ray_nodes.py")), "--workers",
         str(workers)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        started = _read_json_line(cluster.proc, 300)
        cluster.address, cluster.head = started["address"], started["head"]
        cluster.workers = started["workers"]
        yield cluster
    finally:
        try:
            cluster.proc.communicate("quit\n", timeout=120)
        except subprocess.TimeoutExpired:
            pass
        _end_session(cluster.proc.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A head and two 1-CPU worker nodes on 127.0.0.1 (`running_ray_cluster`)."""
    with running_ray_cluster() as cluster:
        yield cluster
