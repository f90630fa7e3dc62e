"""record: a damaged `search.json` is one clear line; a changed space is refused on --resume,
saying what changed; of searches racing for one name exactly one gets it."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixmo_search.errors import UserError
from mixmo_search.search import record
from mixmo_search.search.plan import make_plan
from mixmo_search.search.space import load_space

SPACES = Path(__file__).parents[1] / "spaces"
TINY = SPACES / "tiny.yaml"


def _valid(tmp: Path) -> dict:
    """A record as a search writes it."""
    document = record.space_document(TINY.read_text())
    return json.loads(
        record.SearchRecord(
            parent_run_id="0" * 32,
            mlflow_uri=f"sqlite:///{tmp / 'mlflow.db'}",
            experiment="mixmo-search",
            optuna_storage=None,
            space=str(TINY),
            budget=record.Budget(trials=1, time_s=None),
            base={"optim.epochs": 1},
            status="interrupted",
            space_digest=record.space_digest(document),
            space_document=document,
        ).model_dump_json()
    )


def _resume(tmp: Path, space: Path = TINY):
    return make_plan(load_space(space), name="s1", gpus=0, cpus=1, storage=tmp / "runs",
                     resume=True, dry_run=True)  # fmt: skip


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
KEYS = ["parent_run_id", "mlflow_uri", "experiment", "space", "budget", "base", "status"]


@st.composite
def damaged(draw, valid: dict) -> bytes:
    """Bytes of a damaged record: garbage, a JSON value that is no record, or a good record
    with a key dropped or given a value of the wrong type."""
    kind = draw(st.sampled_from(["bytes", "value", "dropped", "retyped"]))
    if kind == "bytes":
        return draw(st.binary(min_size=0, max_size=40).filter(_not_a_record))
    if kind == "value":
        return json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
    key = draw(st.sampled_from(KEYS))
    broken = dict(valid)
    if kind == "dropped":
        del broken[key]
    else:
        broken[key] = draw(json_values.filter(lambda v: not _fits(key, v)))
    return json.dumps(broken).encode()


def _not_a_record(data: bytes) -> bool:
    try:
        return not isinstance(json.loads(data), dict)
    except ValueError:
        return True


def _fits(key: str, value) -> bool:
    if key == "status":
        return value in ("running", "interrupted", "finished")
    if key == "budget":
        return isinstance(value, dict) and set(value) >= {"trials", "time_s"}
    return isinstance(value, dict if key == "base" else str)


NAMED = {"{}": b"{}", "[]": b"[]", "null": b"null", "garbage": b"\xff\xfe\x00garbage\x81"}


@pytest.mark.parametrize("content", [*NAMED.values(), "missing key"], ids=[*NAMED, "missing"])
def test_named_damaged_records_are_one_clear_line(tmp_path, content):
    folder = tmp_path / "runs" / "s1"
    folder.mkdir(parents=True)
    if content == "missing key":
        valid = _valid(tmp_path)
        del valid["parent_run_id"]
        content = json.dumps(valid).encode()
    (folder / "search.json").write_bytes(content)
    with pytest.raises(UserError) as err:
        _resume(tmp_path)
    message = str(err.value)
    assert "\n" not in message and f"{folder / 'search.json'} is damaged" in message
    assert (folder / "search.json").read_bytes() == content  # nothing written
    assert ("`parent_run_id` field required" in message) == content.startswith(b"{")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_damaged_record_is_one_clear_line(tmp_path, data):
    content = data.draw(damaged(_valid(tmp_path)))
    folder = tmp_path / "runs" / "s1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "search.json").write_bytes(content)
    with pytest.raises(UserError) as err:
        record.read(folder)
    assert "\n" not in str(err.value) and "is damaged" in str(err.value)


def test_a_damaged_record_exits_2_from_the_command_line(tmp_path, run_tune):
    folder = tmp_path / "runs/searches/tiny"
    folder.mkdir(parents=True)
    (folder / "search.json").write_text("[]")
    done = run_tune("--space", str(TINY), "--gpus", "0", "--resume", cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "search.json is damaged" in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["search.json"]


def test_a_changed_space_is_refused_saying_what_changed(tmp_path):
    folder = tmp_path / "runs" / "s1"
    folder.mkdir(parents=True)
    (folder / "search.json").write_text(json.dumps(_valid(tmp_path)))
    changed = yaml.safe_load(TINY.read_text())
    changed["objective"] = [{"metric": "val/nll", "mode": "min"}]
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    with pytest.raises(UserError) as err:
        _resume(tmp_path, tmp_path / "changed.yaml")
    message = str(err.value)
    assert "objective[0].metric: val/acc -> val/nll; objective[0].mode: max -> min" in message
    assert "--warm-start s1" in message and "\n" not in message
    # the same content laid out otherwise is the same space
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(yaml.safe_load(TINY.read_text()),
                                                       default_flow_style=True))  # fmt: skip
    assert _resume(tmp_path, tmp_path / "same.yaml").resume


@given(st.dictionaries(st.sampled_from(["sampler", "budget", "params", "base", "scheduler"]),
                       json_values, min_size=1))  # fmt: skip
def test_any_change_of_content_is_named(changes):
    old = record.space_document(TINY.read_text())
    new = {**old, **changes}
    listed = record.space_changes(old, new)
    same = record.space_digest(old) == record.space_digest(new)
    assert same == (json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True))
    assert same == (listed == [])
    for key in changes:
        if old.get(key) != new[key]:
            assert any(line.startswith(key) for line in listed), (key, listed)


def _claim(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        record.Claim(Path(path), new=True)
        results.put("won")
    except UserError as err:
        results.put(str(err))


def test_of_searches_racing_for_a_name_exactly_one_gets_it(tmp_path):
    context = multiprocessing.get_context("fork")
    n = 6
    barrier, results = context.Barrier(n), context.Queue()
    racers = [context.Process(target=_claim, args=(str(tmp_path / "same"), barrier, results))
              for _ in range(n)]  # fmt: skip
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(timeout=60)
    assert outcomes.count("won") == 1, outcomes
    assert all("already exists" in o for o in outcomes if o != "won")


def test_a_running_search_cannot_be_resumed_at_the_same_time(tmp_path, run_tune):
    folder = tmp_path / "runs/searches/tiny"
    folder.mkdir(parents=True)
    valid = _valid(tmp_path)
    (folder / "search.json").write_text(json.dumps(valid))
    held = record.Claim(folder, new=False)
    try:
        with pytest.raises(UserError, match="running in another process"):
            record.Claim(folder, new=False)
        done = run_tune("--space", str(TINY), "--gpus", "0", "--resume", cwd=tmp_path,
                        timeout=300)  # fmt: skip
    finally:
        held.release()
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr
    assert "running in another process" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists()
    assert os.listdir(tmp_path / "runs/searches") == ["tiny"]
    record.Claim(folder, new=False).release()  # free again once the holder lets go
