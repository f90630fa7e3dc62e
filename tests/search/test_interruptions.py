"""How a search stops, end to end (real Ray Tune, Optuna, MLflow, training on digits).

- Ctrl-C (SIGINT), SIGTERM and SIGKILL once asha has decided a few times, then `--resume`:
  SIGINT and SIGTERM end the same clean way (exit 130, the trials in flight interrupted and
  never called pruned, the summary, the resume command, nothing RUNNING; a second signal
  while it stops changes nothing of that), and after the
  resume every asha decision, before and after, is the rule computed over all rung records,
  and Tune, MLflow, Optuna and the summary agree on which trials were pruned.
- the time budget: the trials it stops are out of time in every view, never pruned.
- a signal while the plan is still being checked: exit 130, one line, nothing written.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from mlflow.entities import ViewType

from mixmo_search import tracking, trial_table
from mixmo_search.search.hold import HOLD_ENV
from tests.waiting import scaled, wait_until

SPACES = Path(__file__).parents[1] / "spaces"
ASHA = SPACES / "asha_resume.yaml"  # grace 1, factor 2, max_t 4: rungs at epochs 1 and 2
TUNE = [sys.executable, "-m", "mixmo_search.tune"]
CRASH_BANNER = ("received at time", "Traceback", "Aborted", "core dumped")


def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [*TUNE, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        )  # fmt: skip


def _end_session(sid: int) -> None:
    """SIGKILL what is left of a killed driver's processes (its local Ray), as a machine
    that died would lose them."""
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                proc.kill()
        except (OSError, psutil.Error):
            continue


def _decisions(search: Path) -> list[dict]:
    """asha's decisions so far, in order (a line being written is not one yet)."""
    file = search / "scheduler.jsonl"
    lines = file.read_text().split("\n")[:-1] if file.is_file() else []
    return [json.loads(line) for line in lines]


def _tune_record(search: Path) -> dict[str, list[dict]]:
    """{trial id: every result Tune recorded, in order}."""
    record: dict[str, list[dict]] = {}
    for file in search.glob("*/result.json"):
        for line in file.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                record.setdefault(row["trial_id"], []).append(row)
    return record


def _store(uri: str, search: Path):
    client = tracking.connect(uri)
    exp_id = tracking.experiment_id(client, create=False)
    parent = json.loads((search / "search.json").read_text())["parent_run_id"]
    return client, parent, trial_table.load_trials(client, exp_id, parent)


def _study(search: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{search / 'optuna.db'}")


def _lines_about(output: str, trial_id: str) -> list[str]:
    return [line for line in output.splitlines() if f"trial {trial_id} " in line]


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_stopped_asha_search_resumes_deciding_by_every_rung_record(
    stop, tmp_path, wait_until, asha_rule
):
    uri, name = f"sqlite:///{tmp_path / 'mlflow.db'}", "cut"
    args = ["--space", str(ASHA), "--gpus", "0", "--cpus", "2", "--mlflow-uri", uri,
            "--name", name]  # fmt: skip
    search = tmp_path / "runs/searches" / name
    log = tmp_path / "stopped.log"
    driver = _start(args, tmp_path, log)
    try:
        try:
            wait_until(lambda: len(_decisions(search)) >= 3, 600, "three asha decisions", driver)
        except AssertionError as err:
            raise AssertionError(f"{err}:\n{log.read_text()[-3000:]}") from None
        driver.send_signal(getattr(signal, stop))
        if stop == "SIGTERM":  # a second signal, while it stops, must not break the stop
            stopping = lambda: "stopping the search" in log.read_text()  # noqa: E731
            wait_until(stopping, 60, "the stop", driver, every=0.1)
            driver.send_signal(signal.SIGINT)
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
        _end_session(driver.pid)
    output, before = log.read_text(), _decisions(search)

    if stop == "SIGKILL":
        resume = shlex_join([*TUNE, *args, "--resume"])
    else:
        resume = _stopped_cleanly(output, driver.returncode, uri, search, name)
        assert ("SIGINT: the search is already stopping" in output) == (stop == "SIGTERM")
    done = subprocess.run(resume, shell=True, cwd=tmp_path, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    after = _decisions(search)
    assert after[: len(before)] == before and len(after) > len(before), (before, after)
    asha_rule(after, reduction_factor=2, mode="max", max_t=4)
    _all_views_agree_with_asha(after, uri, search, name, done.stdout, killed=stop == "SIGKILL")


def shlex_join(parts: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(p) for p in parts)


def _stopped_cleanly(output: str, returncode: int, uri: str, search: Path, name: str) -> str:
    """SIGINT and SIGTERM end alike; returns the printed resume command."""
    assert returncode == 130, output[-3000:]
    assert not [b for b in CRASH_BANNER if b in output], output[-3000:]
    assert re.search(rf"search '{name}': \d+ trials: .* interrupted", output), output[-3000:]
    assert "interrupted before its budget; resume it as below" in output
    client, parent, trials = _store(uri, search)
    assert client.get_run(parent).info.status == "KILLED"
    assert json.loads((search / "search.json").read_text())["status"] == "interrupted"
    assert not (trials.status == "running").any()
    interrupted = trials[trials.status == "interrupted"]
    assert len(interrupted), "two trials run at a time: the signal stops some mid-way"
    states = {t.number: t.state.name for t in _study(search, name).trials}
    for row in interrupted.itertuples():
        run = client.get_run(row.run_id)
        assert run.info.status == "KILLED" and run.info.run_name == row.trial_id
        assert states[int(row.optuna_trial)] == "RUNNING"  # open, for --resume
        said = _lines_about(output, row.trial_id)
        assert any("interrupted" in line for line in said), said
        assert not any("pruned" in line for line in said), said
    return next(line for line in output.splitlines()
                if line.strip().startswith("resume:")).split("resume:", 1)[1].strip()  # fmt: skip


def _all_views_agree_with_asha(
    decisions: list[dict], uri: str, search: Path, name: str, output: str, *, killed: bool
) -> None:
    """Tune's results, MLflow, Optuna and the summary say what asha's record says, for the
    search's trials (a killed driver may leave lost ones: see lost_trials)."""
    client, parent, trials = _store(uri, search)
    shown = trials[["trial_id", "status", "error"]].to_string()
    assert len(trials) == 6 and set(trials.status) <= {"finished", "pruned"}, (shown, output)
    kept = set(trials.trial_id)
    stopped = {d["trial_id"]: d["epoch"] for d in decisions if d["stop"] and d["trial_id"] in kept}
    record = _tune_record(search)
    for d in (d for d in decisions if d["trial_id"] in kept):  # the value reported there
        reported = [r["val/acc"] for r in record[d["trial_id"]] if r.get("epoch") == d["epoch"]]
        assert reported and all(_same(v, d["value"]) for v in reported), (d, reported)
    for trial_id in kept:  # every rung a trial reached was judged, and a stop stopped it
        reached = max(r["epoch"] for r in record[trial_id] if "epoch" in r)
        judged = {d["rung"] for d in decisions if d["trial_id"] == trial_id}
        until = stopped.get(trial_id, reached)
        assert judged == {rung for rung in (1, 2) if until >= rung}, (trial_id, judged)
        # a stop the killed driver decided but did not save: the trial, restored from its
        # checkpoint of that epoch, trains one more before the stop is made again
        assert until <= reached <= until + killed, (trial_id, reached, until)
    assert set(trials.loc[trials.status == "pruned", "trial_id"]) == set(stopped)
    assert client.get_run(parent).info.status == "FINISHED"
    study = {t.number: t for t in _study(search, name).trials}
    for row in trials.itertuples():
        run = client.get_run(row.run_id)
        expected = "PRUNED" if row.trial_id in stopped else "COMPLETE"
        assert study[int(row.optuna_trial)].state.name == expected, row.trial_id
        if row.trial_id in stopped:
            assert run.info.run_name == f"{row.trial_id} (pruned at epoch {stopped[row.trial_id]})"
        else:
            assert run.info.status == "FINISHED" and run.info.run_name == row.trial_id
    assert f"{len(stopped)} pruned (stopped early)" in output
    _the_rest_were_lost(client, study, set(trials.optuna_trial.astype(int)))


def _the_rest_were_lost(client, study: dict, ours: set[int]) -> None:
    """Optuna trials beyond the search's own are the ones a killed driver lost (lost_trials):
    FAIL, or as told before the kill; their runs deleted, failed with the reason."""
    from mixmo_search.search.lost_trials import LOST, REASON

    others = {n: t for n, t in study.items() if n not in ours}
    if not others:
        return
    exp_id = tracking.experiment_id(client, create=False)
    runs = client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)
    deleted = {r.data.tags.get(tracking.OPTUNA_TRIAL): r for r in runs}
    for number, trial in others.items():
        assert trial.state.name in ("FAIL", "PRUNED", "COMPLETE"), (number, trial.state)
        if trial.state.name == "FAIL":
            assert LOST in trial.user_attrs, (number, trial.user_attrs)
        run = deleted.get(str(number))
        if run is not None:  # it had started: its run is kept, deleted, saying why
            assert run.data.tags[tracking.STATUS] == "failed"
            assert run.data.tags[tracking.ERROR] == REASON


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("sigint_at_start", [signal.SIG_DFL, signal.SIG_IGN],
                         ids=["sigint-default", "sigint-ignored"])  # fmt: skip
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_while_the_plan_is_checked_exits_130_and_writes_nothing(
    sig, sigint_at_start, tmp_path
):
    """Found by the chaos soak: Ctrl-C while the driver imported torch ended in a
    KeyboardInterrupt traceback, and SIGTERM killed it without a word. Found by the suite run
    from a script's background job (`cmd &`: SIGINT ignored, inherited): the driver ignored
    Ctrl-C until Tune ran and trained the whole search."""
    work = tmp_path / "work"
    work.mkdir()
    with (tmp_path / "tune.log").open("w") as log:
        driver = subprocess.Popen(
            [*TUNE, "--space", str(SPACES.parent.parent / "search_spaces/quickstart.yaml"),
             "--gpus", "0"], cwd=work, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint_at_start),
        )  # fmt: skip
    try:
        wait_until(lambda: _maps_torch(driver), 120, "the driver to load torch", interval=0.05)
        driver.send_signal(sig)
        returncode = driver.wait(timeout=scaled(120))
    finally:
        _end_session(driver.pid)
    output = (tmp_path / "tune.log").read_text()
    assert returncode == 130, output[-3000:]
    assert output.strip() == "stopped before the search started: nothing was started or written"
    assert list(work.iterdir()) == []


def test_main_called_in_process_leaves_the_signal_handlers_as_it_found_them(tmp_path):
    """`tune.main` as a function (tests, notebooks) sets its stop handlers for its own run
    only: a handler it left behind was inherited by later forked workers."""
    from mixmo_search import tune

    def mine(*_):
        return None

    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as ended:
            tune.main(["--space", str(tmp_path / "missing.yaml")])
        assert ended.value.code == 2
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _maps_torch(driver: subprocess.Popen) -> bool:
    """Whether the driver has begun loading torch's library (the plan's network checks)."""
    assert driver.poll() is None, f"the driver exited ({driver.returncode}) before torch"
    return "libtorch" in Path(f"/proc/{driver.pid}/maps").read_text()


def test_the_time_budget_stops_trials_out_of_time_never_pruned(tmp_path):
    """Two trials held at epoch 3 (MIXMO_HOLD_AT, never released) and a 20 s budget: the
    search's clock stops both mid-training. (Unheld, a quiet machine trained 188 of 200 epochs
    in those 20 s, and once all of them.) Also: the Ray token file it uses is the owner's only,
    and its Ray session folder is gone when it ends."""
    home, ray_tmp = tmp_path / "home", Path(tempfile.mkdtemp(prefix="mxr-", dir="/tmp"))
    home.mkdir()
    held = tmp_path / "hold"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        done = subprocess.run(
            [*TUNE, "--space", str(SPACES / "time_budget.yaml"), "--gpus", "0", "--cpus", "2",
             "--mlflow-uri", uri], cwd=tmp_path, capture_output=True, text=True, timeout=600,
            env={**os.environ, "HOME": str(home), "RAY_TMPDIR": str(ray_tmp),
                 "PYTHONUNBUFFERED": "1", HOLD_ENV: f"3:{held}"},
        )  # fmt: skip
        sessions = list((ray_tmp / "ray").glob("session_*"))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not sessions, sessions
    assert (home / ".ray/auth_token").stat().st_mode & 0o777 == 0o600

    search = tmp_path / "runs/searches/time-budget"
    assert json.loads((search / "search.json").read_text())["status"] == "finished"
    assert "2 trials: 0 finished, 0 pruned (stopped early), 0 failed, 2 stopped by the time " \
        "budget" in done.stdout  # fmt: skip
    client, parent, trials = _store(uri, search)
    assert list(trials.status) == ["out_of_time"] * 2
    assert sorted(p.stem for p in held.glob("*.held")) == sorted(trials.trial_id)
    assert list(trials.epochs) == [3, 3]
    assert client.get_run(parent).info.status == "FINISHED"
    study = {t.number: t for t in _study(search, "time-budget").trials}
    for row in trials.itertuples():
        run = client.get_run(row.run_id)
        assert run.info.status == "KILLED" and run.info.run_name == row.trial_id
        optuna_trial = study[int(row.optuna_trial)]
        assert optuna_trial.state.name == "FAIL"
        assert optuna_trial.user_attrs["mixmo.outcome"] == "out_of_time"
        said = _lines_about(done.stdout, row.trial_id)
        assert any("by the search's time budget" in line for line in said), said
        assert not any("pruned" in line for line in said), said
    assert study[0].state.name == "FAIL" and len(study) == 2
