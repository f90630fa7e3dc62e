"""Searches on a real multi-node Ray cluster (a head and two worker nodes on 127.0.0.1, token
auth), logging to a real MLflow server on PostgreSQL, with the Optuna study in PostgreSQL too,
and the faults a cluster meets: a worker node killed mid-trial, the tracking server down
mid-search, the driver killed, two searches at once. Each fault test counts trials, runs and
metric points against Ray Tune's own record of every reported epoch (the trials' result.json).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mixmo_search import tracking, trial_table
from tests.waiting import scaled, wait_until

SPACES = Path(__file__).parents[1] / "spaces"
DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard.py"
TUNE = [sys.executable, "-m", "mixmo_search.tune"]
# Tune's bookkeeping and our non-metrics: what MlflowTrials does not log as metrics
NOT_LOGGED = {"timestamp", "time_this_iter_s", "time_total_s", "pid", "training_iteration",
              "time_since_restore", "iterations_since_restore", "done", "epoch", "node_id",
              "trial_id", "date", "hostname", "node_ip", "config", "checkpoint_dir_name",
              "should_checkpoint"}  # fmt: skip


def search_args(cluster, server: str, storage: Path, name: str, space: str, *extra: str):
    return ["--space", str(SPACES / space), "--address", cluster.address, "--gpus", "0",
            "--storage", str(storage), "--mlflow-uri", server, "--name", name, *extra]  # fmt: skip


def run(cluster, args: list[str], cwd: Path, timeout: float = 900, **env: str):
    done = subprocess.run(
        [*TUNE, *args], cwd=cwd, env=cluster.env(**env), capture_output=True, text=True,
        timeout=scaled(timeout),
    )  # fmt: skip
    (cwd / f"{args[args.index('--name') + 1]}.out").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def start(cluster, args: list[str], cwd: Path, log: Path, **env: str) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [*TUNE, *args], cwd=cwd, env=cluster.env(**env), stdout=out,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    def check():
        found = predicate()
        if not found and proc is not None and proc.poll() is not None:
            raise AssertionError(f"the search exited ({proc.returncode}) before {what}")
        return found

    return wait_until(check, timeout, what, interval=1)


def store(uri: str, name: str):
    """(client, experiment id, parent run id, trials frame) of search `name`."""
    client = tracking.connect(uri)
    exp_id = tracking.experiment_id(client, create=False)
    parent = tracking.search_run_id(client, exp_id, name)
    return client, exp_id, parent, trial_table.load_trials(client, exp_id, parent)


def logged_trial(uri: str, name: str, epochs: int = 1, *, timeout: float, proc) -> str:
    """The run id of search `name`'s first trial, once it has `epochs` epochs in MLflow."""

    def first_run() -> str | None:
        try:
            return store(uri, name)[3].get("run_id", [None])[0]
        except Exception:  # noqa: BLE001 - not there yet
            return None

    run_id = wait_for(first_run, timeout, f"a trial of {name} in MLflow", proc)
    client = tracking.connect(uri)
    wait_for(lambda: len(client.get_metric_history(run_id, "train/loss")) >= epochs, timeout,
             f"{epochs} epoch(s) of {name} in MLflow", proc)  # fmt: skip
    return run_id


def tune_record(search: Path) -> dict[str, list[dict]]:
    """{trial id: every result Tune recorded, in order} from the trials' result.json."""
    record: dict[str, list[dict]] = {}
    for file in sorted(search.glob("*/result.json")):
        rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        for row in rows:
            record.setdefault(row["trial_id"], []).append(row)
    return record


def assert_every_point_once(client, trials, record: dict[str, list[dict]]) -> int:
    """Each metric of each epoch Tune recorded is in MLflow exactly once, with its value;
    returns how many points that is.

    Tune's record can lose a dead node's last reports: a trial restarted from a checkpoint
    gets the search storage's `result.json` back over the driver's copy (Ray's
    JsonLoggerCallback), and the storage's copy is as old as the driver's last sync. MLflow,
    written from the results as they came, keeps them. So an epoch missing from the record
    (below its last one) may be in MLflow, once, and a metric Tune recorded every epoch must
    be there for it too."""
    points = 0
    for row in trials.itertuples():
        results = record[row.trial_id]
        expected: dict[str, dict[int, float]] = {}
        # an epoch reported again after a retry has the same values (but its measured speed);
        # the first report of an epoch can be missing from Tune's record when its node dies
        for result in results:
            for key, value in result.items():
                if key in NOT_LOGGED or not isinstance(value, int | float) or key == "step":
                    continue
                expected.setdefault(key, {}).setdefault(int(result["epoch"]), float(value))
        recorded = {int(r["epoch"]) for r in results}
        every_epoch = set(range(1, max(recorded) + 1))
        for key, by_epoch in expected.items():
            history = client.get_metric_history(row.run_id, key)
            steps = [m.step for m in history]
            assert len(steps) == len(set(steps)), (row.trial_id, key, "logged twice", steps)
            unrecorded = set(steps) - set(by_epoch)
            assert set(by_epoch) <= set(steps), (row.trial_id, key, "lost", steps)
            assert unrecorded <= every_epoch - recorded, (row.trial_id, key, steps)
            if set(by_epoch) == recorded:  # a metric of every epoch: of the unrecorded too
                assert set(steps) == every_epoch, (row.trial_id, key, steps)
            points += len(history)
            if key.endswith("per_s"):  # a measured speed: a retry repeats the epoch, not it
                continue
            for m in history:
                if m.step in by_epoch:
                    assert m.value == pytest.approx(by_epoch[m.step], rel=1e-6, nan_ok=True), key
    return points


@pytest.fixture
def shared(tmp_path) -> Path:
    """The trial storage every node sees (on one machine: a folder)."""
    return tmp_path / "shared"


def test_a_search_runs_its_trials_on_several_nodes(
    ray_cluster, mlflow_server, study_database, server_tools, shared, tmp_path, monkeypatch
):
    import optuna

    name = "spread"
    args = search_args(ray_cluster, mlflow_server.uri, shared, name, "cluster_small.yaml",
                       "--optuna-storage", study_database.url)  # fmt: skip
    out = run(ray_cluster, args, tmp_path, **study_database.env())
    assert f"optuna: {study_database.url}" in out
    client, exp_id, parent, trials = store(mlflow_server.uri, name)
    assert len(trials) == 4 and set(trials.status) == {"finished"}

    # where each trial ran: the node id the trainable reported, in MLflow and in Tune's record
    nodes = {
        r.trial_id: client.get_run(r.run_id).data.tags["mixmo.nodes"] for r in trials.itertuples()
    }
    record = tune_record(shared / name)
    for trial_id, node in nodes.items():
        assert {row["node_id"] for row in record[trial_id]} == {node}
    assert set(nodes.values()) == set(ray_cluster.workers), nodes  # both workers, never the head
    assert_every_point_once(client, trials, record)

    # the study is in PostgreSQL, told each trial's final value, numbered as MLflow tags them
    meta = json.loads((shared / name / "search.json").read_text())
    assert meta["optuna_storage"] == study_database.url
    assert not list((shared / name).glob("*.db"))
    monkeypatch.setenv("PGPASSFILE", str(study_database.pgpass))
    study = optuna.load_study(study_name=name, storage=study_database.url)
    by_number = {t.number: t for t in study.trials}
    assert len(by_number) == 4
    for row in trials.to_dict("records"):
        number = int(client.get_run(row["run_id"]).data.tags[tracking.OPTUNA_TRIAL])
        assert by_number[number].state.name == "COMPLETE"
        assert by_number[number].value == pytest.approx(row["final/val/acc"])

    # a later search warm-starts from the study where search.json says it is; the name is
    # taken in the study database, even for a search in another storage folder
    from mixmo_search.search import study_storage
    from mixmo_search.search.optuna_search import seed_study
    from mixmo_search.search.plan import make_plan
    from mixmo_search.search.space import load_space

    space = load_space(SPACES / "cluster_small.yaml")
    common = {"storage": shared, "mlflow_uri": mlflow_server.uri, "address": ray_cluster.address,
              "gpus": 0, "dry_run": True}  # fmt: skip
    warm = make_plan(space, name="warm", warm_start=name, **common)
    assert warm.warm_start_storage == study_database.url
    seeded = study_storage.open_storage(f"sqlite:///{tmp_path / 'warm.db'}")
    assert seed_study(seeded, "warm", space, source=warm.warm_start_storage, source_name=name) == 4
    with pytest.raises(study_storage.StudyStorageError, match="already holds a study named"):
        make_plan(space, name=name, optuna_storage=study_database.url,
                  **{**common, "storage": tmp_path / "elsewhere", "dry_run": False})  # fmt: skip

    # the summary's commands work against the server and the study
    labels = ("dashboard:", "MLflow UI:", "Optuna:", "promote:")
    commands = {label: line.split(label, 1)[1].strip() for line in out.splitlines()
                for label in labels if line.startswith(f"  {label}")}  # fmt: skip
    assert commands["MLflow UI:"] == mlflow_server.uri  # the server serves the UI
    assert study_database.url in commands["Optuna:"]
    optuna_port = server_tools.free_port()
    dashboard = subprocess.Popen(
        f"{commands['Optuna:']} --port {optuna_port}", shell=True, start_new_session=True,
        env={**os.environ, **study_database.env()},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{optuna_port}/api/studies"
        studies = wait_for(lambda: _get_json(api), 120, "optuna-dashboard", dashboard)
        assert name in {s["study_name"] for s in studies["study_summaries"]}
    finally:
        server_tools.stop(dashboard)
    promoted = subprocess.run(commands["promote:"], shell=True, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert f"as mixmo-{name} version 1" in promoted.stdout

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    app = AppTest.from_file(str(DASHBOARD), default_timeout=120)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    app.sidebar.selectbox(key="search_id").set_value(parent).run()
    table = app.dataframe[0].value
    assert sorted(table["trial_id"]) == sorted(trials["trial_id"])


def _get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def test_a_killed_worker_node_hands_its_trial_to_another(
    ray_cluster, mlflow_server, shared, tmp_path
):
    """The node running the trial is SIGKILLed, trial process included, after its third
    epoch; the trial continues on the other node from the last checkpoint it handed Tune
    (every 2 epochs), and every epoch is logged once."""
    name = "node-failure"
    args = search_args(ray_cluster, mlflow_server.uri, shared, name, "node_failure.yaml")
    driver = start(ray_cluster, args, tmp_path, tmp_path / "tune.log")
    try:
        run_id = logged_trial(mlflow_server.uri, name, 3, timeout=600, proc=driver)
        client = tracking.connect(mlflow_server.uri)
        first_node = client.get_run(run_id).data.tags["mixmo.nodes"]
        assert first_node in ray_cluster.workers
        ray_cluster.kill(first_node)
        assert driver.wait(timeout=scaled(900)) == 0, (tmp_path / "tune.log").read_text()[-4000:]
    finally:
        if driver.poll() is None:
            driver.kill()
        ray_cluster.add_worker()  # two workers again for the other tests
    log = (tmp_path / "tune.log").read_text()
    assert "continues from its checkpoint" in log or "retried after a failure" in log, log
    client, _, _, trials = store(mlflow_server.uri, name)
    assert len(trials) == 1 and trials.status.item() == "finished"
    nodes = client.get_run(run_id).data.tags["mixmo.nodes"].split(",")
    assert len(nodes) == 2 and nodes[0] == first_node and nodes[1] != first_node
    results = tune_record(shared / name)[trials.trial_id.item()]
    restored_at = next(r for r in results if r["node_id"] == nodes[1])
    # continued from a checkpoint it handed (every 2 epochs), not from scratch; what the first
    # node handed is in MLflow (Tune's record can lose its last reports: see above)
    history = client.get_metric_history(run_id, "checkpoint/bytes")
    handed = [m.step for m in history if m.step < restored_at["epoch"]]
    assert restored_at["epoch"] - 1 in handed and restored_at["iterations_since_restore"] == 1
    assert [r["epoch"] for r in results][-1] == 16
    assert_every_point_once(client, trials, {trials.trial_id.item(): results})
    steps = [m.step for m in client.get_metric_history(run_id, "val/acc")]
    assert steps == list(range(1, 17))
    handed = [r["epoch"] for r in results if "checkpoint/bytes" in r]
    assert set(handed) <= set(range(2, 17, 2)) and 16 in handed


def test_the_tracking_server_down_mid_search_loses_and_duplicates_nothing(
    ray_cluster, postgres, server_tools, shared, tmp_path
):
    """The MLflow server is SIGKILLed once the trial has logged an epoch and restarted on the
    same port 15 s later (plus its start-up); the trial goes on meanwhile, and the driver
    buffers its epochs, says so, and writes every point once."""
    postgres.create_database("outage", "outage-test-password")
    root, port = tmp_path / "server", server_tools.free_port()
    root.mkdir()
    server = server_tools.start_mlflow(postgres, "outage", "outage-test-password", root, port)
    uri, name = f"http://127.0.0.1:{port}", "outage"
    driver = start(ray_cluster, search_args(ray_cluster, uri, shared, name, "node_failure.yaml"),
                   tmp_path, tmp_path / "tune.log")  # fmt: skip
    try:
        logged_trial(uri, name, 1, timeout=600, proc=driver)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=60)
        down_at = time.time()
        time.sleep(15)
        server = server_tools.start_mlflow(postgres, "outage", "outage-test-password", root, port)
        back_at = time.time()
        assert driver.wait(timeout=scaled(900)) == 0, (tmp_path / "tune.log").read_text()[-4000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    try:
        log = (tmp_path / "tune.log").read_text()
        down = [line for line in log.splitlines() if "unreachable" in line]
        back = [line for line in log.splitlines() if "is back after" in line]
        assert len(down) == 1 and len(back) == 1, log[-4000:]
        assert log.index(down[0]) < log.index(back[0])
        client, _, parent, trials = store(uri, name)
        assert len(trials) == 1 and trials.status.item() == "finished"
        record = tune_record(shared / name)
        reported = [r["timestamp"] for r in record[trials.trial_id.item()]]
        assert any(down_at < t < back_at for t in reported)  # epochs came while it was down
        points = assert_every_point_once(client, trials, record)
        assert points > 16 * 20  # every metric of every epoch
        assert [m.step for m in client.get_metric_history(trials.run_id.item(), "val/acc")] == (
            list(range(1, 17))
        )
        artifacts = {a.path for a in client.list_artifacts(trials.run_id.item())}
        assert {"predictions", "checkpoint"} <= artifacts
        assert client.get_run(parent).info.status == "FINISHED"
    finally:
        server_tools.stop(server)


def test_a_killed_driver_resumes_with_its_study_and_runs(
    ray_cluster, mlflow_server, study_database, shared, tmp_path, monkeypatch
):
    """The driver is SIGKILLed while its first two trials train, once Tune's saved state names
    a checkpoint of one (Tune saves it every ten seconds or so); `--resume` reattaches the
    study and the runs, the trials continue from the checkpoints that state names (none was
    deleted meanwhile: see search/retention.py), and trials, runs, Optuna trials and metric
    points add up."""
    import optuna
    from ray.tune import ExperimentAnalysis

    name = "driver-kill"
    args = search_args(ray_cluster, mlflow_server.uri, shared, name, "cluster_resume.yaml",
                       "--optuna-storage", study_database.url)  # fmt: skip
    driver = start(ray_cluster, args, tmp_path, tmp_path / "first.log", **study_database.env())

    def a_running_trial_saved_with_a_checkpoint() -> bool:
        try:
            saved = ExperimentAnalysis(str(shared / name)).trials
        except Exception:  # noqa: BLE001 - no state saved yet, or being copied in
            return False
        return any(t.status not in ("TERMINATED", "ERROR") and t.checkpoint for t in saved)

    try:
        wait_for(a_running_trial_saved_with_a_checkpoint, 600, "a saved checkpoint", driver)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    assert json.loads((shared / name / "search.json").read_text())["status"] == "running"
    out = run(ray_cluster, [*args, "--resume"], tmp_path, **study_database.env())
    assert f"search {name!r}: 4 trials: 4 finished" in out, out[-3000:]

    client, exp_id, parent, trials = store(mlflow_server.uri, name)
    assert len(trials) == 4 and trials.trial_id.is_unique, trials[["trial_id", "status"]]
    assert set(trials.status) == {"finished"}
    runs = client.search_runs([exp_id], f"tags.`mixmo.search` = '{name}'")
    assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)  # + the parent
    record = tune_record(shared / name)
    assert set(record) == set(trials.trial_id)
    # killed mid-trial: some trial continued from a checkpoint in the resumed search
    assert any(
        r["iterations_since_restore"] < r["epoch"] for rows in record.values() for r in rows
    )
    assert_every_point_once(client, trials, record)
    monkeypatch.setenv("PGPASSFILE", str(study_database.pgpass))
    study = optuna.load_study(study_name=name, storage=study_database.url)
    numbers = {int(client.get_run(r.run_id).data.tags[tracking.OPTUNA_TRIAL]): r.trial_id
               for r in trials.itertuples()}  # fmt: skip
    states = {t.number: t.state.name for t in study.trials}
    assert {states[n] for n in numbers} == {"COMPLETE"}
    assert set(states.values()) <= {"COMPLETE", "FAIL"}  # no trial left RUNNING
    lost = [t for t in study.trials if t.number not in numbers]
    assert all(t.state.name == "FAIL" and "mixmo.lost" in t.user_attrs for t in lost)
    assert json.loads((shared / name / "search.json").read_text())["status"] == "finished"

    # a trial started after Tune's last save (a run and a RUNNING Optuna trial Tune never
    # saved) is ended when the search resumes, whatever moment the driver died
    from mixmo_search.search.lost_trials import LOST, end_lost_trials
    from mixmo_search.search.plan import make_plan
    from mixmo_search.search.space import load_space

    orphan = study.ask()
    tags = {tracking.OPTUNA_TRIAL: str(orphan.number)}
    run_id = tracking.start_trial_run(client, exp_id, parent, search=name, trial_id="orphan01",
                                      params={}, tags=tags)  # fmt: skip
    plan = make_plan(load_space(SPACES / "cluster_resume.yaml"), name=name, storage=shared,
                     address=ray_cluster.address, gpus=0, resume=True, dry_run=True)  # fmt: skip
    assert end_lost_trials(plan, client, exp_id, parent) == 1
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert len(trial_table.load_trials(client, exp_id, parent)) == 4
    ended = optuna.load_study(study_name=name, storage=study_database.url).trials[orphan.number]
    assert ended.state.name == "FAIL" and LOST in ended.user_attrs


def test_two_searches_at_once_against_one_store(
    ray_cluster, mlflow_server, study_database, shared, tmp_path, monkeypatch
):
    import optuna

    names = ("twin-a", "twin-b")
    drivers = {
        name: start(
            ray_cluster,
            search_args(
                ray_cluster,
                mlflow_server.uri,
                shared,
                name,
                "cluster_small.yaml",
                "--optuna-storage",
                study_database.url,
                "--trials",
                "2",
                "--cpus",
                "1",
            ),
            tmp_path,
            tmp_path / f"{name}.log",
            **study_database.env(),
        )  # fmt: skip
        for name in names
    }
    try:
        for name, driver in drivers.items():
            code = driver.wait(timeout=scaled(900))
            assert code == 0, (tmp_path / f"{name}.log").read_text()[-4000:]
    finally:
        for driver in drivers.values():
            if driver.poll() is None:
                driver.kill()
    monkeypatch.setenv("PGPASSFILE", str(study_database.pgpass))
    for name in names:
        client, _, parent, trials = store(mlflow_server.uri, name)
        assert len(trials) == 2 and set(trials.status) == {"finished"}
        assert client.get_run(parent).info.status == "FINISHED"
        assert_every_point_once(client, trials, tune_record(shared / name))
        study = optuna.load_study(study_name=name, storage=study_database.url)
        assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


def test_the_head_script_keeps_a_one_machine_head_on_the_loopback(ray_cluster, server_tools):
    """infra/ray-head.sh without RAY_NODE_IP: every socket of its Ray on 127.0.0.1, and a
    driver with the token joins it at 127.0.0.1."""
    import psutil

    infra = Path(__file__).resolve().parents[2] / "infra"
    port = server_tools.free_port()
    env = {k: v for k, v in ray_cluster.env().items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env = {**env, "RAY_PORT": str(port), "RAY_NUM_GPUS": "0", "RAY_TMPDIR": str(
        ray_cluster.temp_dir / "head-script")}  # fmt: skip
    # the script runs `ray` as an activated environment finds it (make test does not activate)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    Path(env["RAY_TMPDIR"]).mkdir()
    script = subprocess.Popen(["bash", str(infra / "ray-head.sh")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    session = script.pid
    try:
        assert script.wait(timeout=300) == 0  # `ray start` returns once the head runs
        ours = [p for p in psutil.process_iter() if _in_session(p, session)]
        listening = {c.laddr.ip for p in ours for c in _listening(p)}
        assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
        joined = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}'); "
             "print(len(ray.nodes()))"],
            env={**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert joined.returncode == 0 and joined.stdout.strip() == "1", joined.stderr[-2000:]
    finally:
        for proc in psutil.process_iter():
            if _in_session(proc, session):
                proc.kill()


def _in_session(proc, session: int) -> bool:
    try:
        return os.getsid(proc.pid) == session
    except OSError:
        return False


def _listening(proc) -> list:
    import psutil

    try:
        return [c for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        return []


@pytest.mark.parametrize(
    ("logged", "holds"),
    [
        (range(1, 9), True),  # every epoch once
        ([1, 2, 3, 4, 5, 6, 7, 8, 6], False),  # an epoch logged twice
        ([1, 5, 6, 7, 8], False),  # epochs lost, though Tune's record lacks them too
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], False),  # an epoch past what the trial reported
    ],
)
def test_the_point_check_forgives_only_what_tunes_record_can_lose(tmp_path, logged, holds):
    """The case that found it (a loaded run): a node died after epoch 4, the restarted trial
    got the storage's older result.json back, and Tune's record lost epochs 2-4 that MLflow
    had, once each. The check allows that and nothing else."""
    import pandas as pd

    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(tracking.experiment_id(client)).info.run_id
    for epoch in logged:
        tracking.log_metric_batch(client, run_id, tracking.metric_batch(
            {"val/acc": epoch / 10, **({"checkpoint/bytes": 7} if epoch % 2 == 0 else {})},
            step=epoch))  # fmt: skip
    record = {"t1": [{"trial_id": "t1", "epoch": e, "val/acc": e / 10,
                      **({"checkpoint/bytes": 7} if e % 2 == 0 else {})}
                     for e in (1, 5, 6, 7, 8)]}  # fmt: skip
    trials = pd.DataFrame({"trial_id": ["t1"], "run_id": [run_id]})
    if holds:
        assert assert_every_point_once(client, trials, record) == 8 + 4
    else:
        with pytest.raises(AssertionError):
            assert_every_point_once(client, trials, record)
