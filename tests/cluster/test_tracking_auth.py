"""MLflow's login on the shared tracking server: infra/mlflow-server.sh with authentication on,
over a real PostgreSQL, its users made by infra/mlflow-users.py, on the loopback.

- a client without a login (or with a wrong one) is refused, in one clear line;
- a searcher runs a real search end to end; a reader cannot start one;
- a reader opens the dashboard, but `promote` with it exits 2 naming the missing permission,
  and writes nothing; a promoter moves `@champion`; a reader loads it, a searcher may not;
- no password appears in an MLflow param or tag, a log line, a printed command, or the
  command line or environment of any process this test can see, while the search runs too.

Each user signs in the way infra/README.md recommends: `~/.mlflow/credentials` (mode 0600),
so a process's HOME decides who it is.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixmo_search import tracking, tracking_auth

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "tests" / "spaces" / "tiny.yaml"  # one short digits epoch a trial
DASHBOARD = ROOT / "app" / "dashboard.py"
USERS = ("admin", "searcher", "reader", "promoter")  # each non-admin holds its namesake role
SEARCH = "signed-in"


@dataclass(frozen=True)
class AuthServer:
    """A running server with its login on, and a home folder per user holding its login."""

    uri: str
    root: Path
    log: Path
    config: Path  # the auth config file the script wrote
    passwords: dict[str, str]

    def home(self, user: str) -> Path:
        return self.root / "homes" / user

    def env(self, user: str | None) -> dict[str, str]:
        """A process environment signed in as `user` (None: no login at all)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        home = self.home(user) if user else self.root / "homes" / "nobody"
        path = os.environ.get("PYTHONPATH")
        return {**env, "HOME": str(home), "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}  # fmt: skip


def _write_login(home: Path, user: str, password: str) -> None:
    """MLflow's credentials file, as infra/README.md has users write it."""
    folder = home / ".mlflow"
    folder.mkdir(parents=True)
    file = folder / "credentials"
    file.touch(mode=0o600)
    file.write_text(
        f"[mlflow]\nmlflow_tracking_username = {user}\nmlflow_tracking_password = {password}\n"
    )


@pytest.fixture(scope="module")
def auth_server(postgres, server_tools, tmp_path_factory) -> Iterator[AuthServer]:
    root = tmp_path_factory.mktemp("auth-server")
    passwords = {user: f"{user}-pw-{os.urandom(8).hex()}" for user in USERS}
    for user in (*USERS, "nobody"):
        (root / "homes" / user).mkdir(parents=True)
    admin_file = root / "admin-password"
    admin_file.touch(mode=0o600)
    admin_file.write_text(passwords["admin"] + "\n")
    postgres.create_database("authed", "authed-test-password")
    port = server_tools.free_port()
    proc = server_tools.start_mlflow(
        postgres, "authed", "authed-test-password", root, port, admin_password_file=admin_file
    )
    server = AuthServer(f"http://127.0.0.1:{port}", root, root / "server.log",
                        root / "auth" / "mlflow-auth.ini", passwords)  # fmt: skip
    try:
        for user, password in passwords.items():
            _write_login(server.home(user), user, password)
        _users_tool(server, "experiment", tracking.EXPERIMENT)
        for role in tracking_auth.ROLES:
            _users_tool(server, "user", role, role, stdin=passwords[role] + "\n")
        yield server
    finally:
        server_tools.stop(proc)


def _users_tool(server: AuthServer, *args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "mlflow-users.py"), "--uri", server.uri, *args],
        input=stdin, env=server.env("admin"), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _cli(server: AuthServer, user: str | None, module: str, *args: str, cwd: Path):
    return subprocess.run(
        [sys.executable, "-m", f"mixmo_search.{module}", *args, "--mlflow-uri", server.uri],
        env=server.env(user), cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_the_script_keeps_the_admin_password_in_a_private_file(auth_server):
    mode = stat.S_IMODE(auth_server.config.stat().st_mode)
    assert mode == 0o600, oct(mode)
    text = auth_server.config.read_text()
    assert "default_permission = NO_PERMISSIONS" in text
    assert "database_uri = postgresql://authed@" in text  # the password stays in libpq's env


def test_a_client_without_a_login_is_refused(auth_server, monkeypatch, tmp_path):
    uri = auth_server.uri
    experiments = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(f"{uri}/health") == 200  # the probe stays open
    assert _status(experiments) == 401
    assert _status(f"{uri}/api/2.0/mlflow-artifacts/artifacts") == 401
    assert _status(experiments, ("reader", "not-the-password")) == 401
    assert _status(experiments, ("reader", auth_server.passwords["reader"])) == 200

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("HOME", str(auth_server.root / "homes" / "nobody"))
    with pytest.raises(tracking.TrackingError, match="asks for a login and none is set"):
        tracking.connect(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with pytest.raises(tracking.TrackingError, match="refused the login of user 'reader'"):
        tracking.connect(uri)
    # a login in the URI would be recorded and printed: refused, without echoing it
    secret = auth_server.passwords["reader"]
    with pytest.raises(tracking.TrackingError, match="carries a login") as refused:
        tracking.check_store(uri.replace("http://", f"http://reader:{secret}@"))
    assert secret not in str(refused.value)

    args = ["--space", str(SPACE), "--gpus", "0", "--storage", str(tmp_path / "runs")]
    done = _cli(auth_server, None, "tune", *args, "--name", "anonymous", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "asks for a login" in done.stderr
    assert not (tmp_path / "runs").exists()


@settings(max_examples=60, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https"]),
    user=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1),
    password=st.one_of(st.none(), st.text(min_size=12).filter(lambda p: p.strip() == p)),
)
def test_a_login_in_the_uri_is_refused_and_never_shown(scheme, user, password):
    """The URI is recorded in search.json and MLflow tags and printed in the summary's
    commands, so a login in it is refused, in a line that shows no part of the URI."""
    login = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    with pytest.raises(tracking.TrackingError) as refused:
        tracking.check_store(f"{scheme}://{login}@127.0.0.1:5000/path")
    with pytest.raises(tracking.TrackingError, match="carries a login") as reference:
        tracking.check_store("http://someone:a-password@localhost")
    assert str(refused.value) == str(reference.value)  # the same words, whatever the URI


def test_each_role_does_its_part_and_no_password_shows(auth_server, monkeypatch, tmp_path):
    uri, storage = auth_server.uri, tmp_path / "runs"
    search = ["--space", str(SPACE), "--trials", "2", "--gpus", "0", "--cpus", "2",
              "--storage", str(storage)]  # fmt: skip

    # a reader may not start a search: the plan says so, before Ray starts or anything is
    # written (the CLI's exit 2 and one line: test_a_client_without_a_login_is_refused)
    from mixmo_search.search.plan import make_plan
    from mixmo_search.search.space import load_space

    _client(auth_server, "reader", monkeypatch)
    with pytest.raises(tracking_auth.AuthError) as refused:
        make_plan(load_space(SPACE), name="by-reader", gpus=0, storage=storage, mlflow_uri=uri)
    assert "user 'reader' may not write the runs of experiment 'mixmo-search'" in str(
        refused.value
    )
    assert "(needs EDIT, has READ)" in str(refused.value)
    assert "searcher role" in str(refused.value) and not storage.exists()

    # a searcher runs one end to end; every process it starts is scanned while it runs
    log = tmp_path / "search.log"
    with log.open("w") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "mixmo_search.tune", *search, "--name", SEARCH,
             "--mlflow-uri", uri],
            env=auth_server.env("searcher"), cwd=tmp_path, stdout=out,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    seen = _scan_processes_until(driver, auth_server.passwords, timeout=600)
    assert driver.returncode == 0, log.read_text()[-4000:]
    assert "MLflow refused" not in log.read_text()  # no write of the search was denied
    assert seen > 3  # the driver, Ray's processes and the trials' workers were all read

    admin = _client(auth_server, "admin", monkeypatch)
    exp_id = tracking.experiment_id(admin, create=False)
    parent = tracking.search_run_id(admin, exp_id, SEARCH)
    assert len(tracking.trial_runs(admin, exp_id, parent)) == 2
    assert admin.get_run(parent).info.status == "FINISHED"

    # a reader opens the dashboard; its Promote page says who may promote
    app = _dashboard(auth_server, monkeypatch, parent)
    assert sorted(app.dataframe[0].value["status"]) == ["finished", "finished"]
    app.switch_page("views/promote.py").run()
    assert not app.exception, [e.value for e in app.exception]
    errors = " ".join(e.value for e in app.error)
    assert "user 'reader' may not create registered model 'mixmo-signed-in'" in errors
    assert app.button[0].disabled

    # promote as the reader: exit 2, nothing written; as the promoter: @champion moves
    admin = _client(auth_server, "admin", monkeypatch)
    runs_before = len(admin.search_runs([exp_id]))
    denied = _cli(auth_server, "reader", "promote", "--search", SEARCH, cwd=tmp_path)
    assert denied.returncode == 2 and denied.stderr.count("\n") == 1, denied.stderr
    assert "user 'reader' may not create registered model 'mixmo-signed-in'" in denied.stderr
    assert "(needs USE on workspace 'default')" in denied.stderr
    assert "promoter role" in denied.stderr
    assert not admin.search_registered_models() and len(admin.search_runs([exp_id])) == runs_before
    promoted = _cli(auth_server, "promoter", "promote", "--search", SEARCH, cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    champion = admin.get_model_version_by_alias("mixmo-signed-in", "champion")
    assert champion.version == "1"
    from mixmo_search.promote import promote

    _client(auth_server, "reader", monkeypatch)
    with pytest.raises(tracking_auth.AuthError) as again:  # the model exists now
        promote(SEARCH, force=True, tracking_uri=uri)
    assert "may not write registered model 'mixmo-signed-in' (needs EDIT, has READ)" in str(
        again.value
    )
    admin = _client(auth_server, "admin", monkeypatch)
    assert admin.get_model_version_by_alias("mixmo-signed-in", "champion").version == "1"

    # the champion loads for a reader; a searcher may not read the registry
    from mixmo_search import serving

    _client(auth_server, "reader", monkeypatch)
    network = serving.load_network("models:/mixmo-signed-in@champion", tracking_uri=uri)
    assert network.model.n_members >= 1
    _client(auth_server, "searcher", monkeypatch)
    with pytest.raises(tracking_auth.AuthError, match="'searcher' sees no registered model"):
        serving.load_network("models:/mixmo-signed-in@champion", tracking_uri=uri)

    # no password in MLflow, the server's log or anything the commands printed
    admin = _client(auth_server, "admin", monkeypatch)
    printed = [done.stdout + done.stderr for done in (denied, promoted)]
    outputs = [log.read_text(), auth_server.log.read_text(), *printed]
    outputs += [str(refused.value), str(again.value)]
    _assert_no_password(auth_server.passwords, outputs + _store_texts(admin, exp_id))


def _client(server: AuthServer, user: str, monkeypatch):
    """Sign this process in as `user` (through HOME, as the CLIs are) and connect."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(server.home(user)))
    return tracking.connect(server.uri)


def _dashboard(server: AuthServer, monkeypatch, parent: str):
    from streamlit.testing.v1 import AppTest

    _client(server, "reader", monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    app = AppTest.from_file(str(DASHBOARD), default_timeout=120)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    app.sidebar.selectbox(key="search_id").set_value(parent).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _scan_processes_until(proc: subprocess.Popen, passwords: dict[str, str], timeout: float):
    """Read the command line and environment of every process this test may read, about
    twice a second until `proc` exits; fail on a password. Returns the most seen at once."""
    needles = [p.encode() for p in passwords.values()]
    deadline, most = time.monotonic() + timeout, 0
    while proc.poll() is None and time.monotonic() < deadline:
        readable = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            for part in ("cmdline", "environ"):
                try:
                    data = Path(f"/proc/{pid}/{part}").read_bytes()
                except OSError:
                    continue
                readable += part == "cmdline"
                leaked = [n for n in needles if n in data]
                assert not leaked, f"a password in /proc/{pid}/{part}: {data[:200]!r}"
        most = max(most, readable)
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        raise AssertionError(f"the search did not end in {timeout:.0f} s")
    return most


def _store_texts(client, exp_id: str) -> list[str]:
    """Every param, tag, run name and registry tag of the experiment, as text."""
    texts = []
    for run in client.search_runs([exp_id], max_results=1000):
        texts += [run.info.run_name or "", repr(run.data.params), repr(run.data.tags)]
    for model in client.search_registered_models():
        texts += [repr(model.tags), model.description or ""]
        for version in client.search_model_versions(f"name = '{model.name}'"):
            texts += [repr(version.tags), version.source or "", version.description or ""]
    return texts


def _assert_no_password(passwords: dict[str, str], texts: list[str]) -> None:
    for user, password in passwords.items():
        for text in texts:
            assert password not in text, f"{user}'s password in: {text[:200]!r}"
