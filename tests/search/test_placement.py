"""GPU scheduling without a GPU: real searches on logical GPUs, GPU plans, GPU shares.

`MIXMO_SIMULATE_GPUS=2` declares two logical GPUs to the search's local Ray; trials given a
GPU (or a share of one) then train on the CPU. Everything else is the real thing: Ray assigns
the GPUs and sets each trial's CUDA_VISIBLE_DEVICES, the trial records what it got, and MLflow
holds when each trial ran, so the tests read concurrency and GPU ids from the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from mixmo_search import tracking
from mixmo_search.errors import UserError
from mixmo_search.search import SpaceError, load_space, placement

SHIPPED = Path(__file__).parents[2] / "search_spaces"
LOGICAL_GPUS = 2


def _space(tmp_path: Path, *, share: float, trials: int) -> Path:
    """A small real search on digits whose trials each ask `share` GPUs."""
    space = {
        "name": f"gpus-{share:g}",
        "base": {
            "preset": "digits_quick",
            "overrides": {"optim.epochs": 4, "optim.milestones": [4]},
        },
        "params": {"optim.lr": {"type": "uniform", "low": 0.5, "high": 1.0}},
        "objective": [{"metric": "val/acc", "mode": "max"}],
        "sampler": {"type": "random", "seed": 0},
        "scheduler": {"type": "fifo"},
        "budget": {"trials": trials},
        "resources": {"gpus": share, "cpus": 1},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def _most_at_once(intervals: list[tuple[int, int]]) -> int:
    """The largest number of [start, end) intervals that hold one instant in common."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, change in events:  # an end at t sorts before a start at t: they do not overlap
        running += change
        most = max(most, running)
    return most


@pytest.mark.parametrize(("share", "at_once"), [(1.0, 2), (0.5, 4)], ids=["gpus-1", "gpus-0.5"])
def test_trials_share_logical_gpus_as_ray_assigns_them(
    share, at_once, tmp_path, run_tune, monkeypatch
):
    """On 2 logical GPUs, trials of 1 GPU run 2 at a time and trials of 0.5 GPU 4 at a time;
    each trial sees the GPU Ray assigned it, no GPU holds more trials than fit, and a trial
    given a GPU chose `cuda`, which the testing switch (and only it) turned into the CPU."""
    monkeypatch.setenv(placement.SIMULATE_ENV, str(LOGICAL_GPUS))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trials = at_once + 1  # one more than fits: the limit holds it back, then lets it start
    space = _space(tmp_path, share=share, trials=trials)
    done = run_tune("--space", str(space), "--gpus", str(LOGICAL_GPUS), "--cpus", str(at_once),
                    "--mlflow-uri", uri, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"up to {at_once} at a time ({LOGICAL_GPUS} GPU" in done.stdout
    assert f"note: {placement.SIMULATE_ENV}={LOGICAL_GPUS}: a testing aid" in done.stdout

    meta = json.loads((tmp_path / f"runs/searches/gpus-{share:g}/search.json").read_text())
    client = tracking.connect(uri)
    assert client.get_run(meta["parent_run_id"]).data.tags["mixmo.simulated_gpus"] == "true"
    exp = tracking.experiment_id(client, create=False)
    runs = [client.get_run(r) for r in tracking.trial_runs(client, exp, meta["parent_run_id"])
            .values()]  # fmt: skip
    assert len(runs) == trials
    assert {r.data.tags[tracking.STATUS] for r in runs} == {"finished"}

    # concurrency: the driver opens a trial's run when Tune starts it and ends it when the
    # trial completes, so the runs' times are when each trial held its resources
    spans = [(r.info.start_time, r.info.end_time) for r in runs]
    assert _most_at_once(spans) == at_once

    # GPU ids: what Ray assigned, what the trial's process saw, and the device it chose
    for run in runs:
        tags = run.data.tags
        assert tags["mixmo.placement.gpu_ids"] in {"0", "1"}, tags
        assert tags["mixmo.placement.cuda_visible_devices"] == tags["mixmo.placement.gpu_ids"]
        assert tags["mixmo.placement.gpu_share"] == f"{share:g}"
        assert tags["mixmo.placement.device"] == "cpu (simulated GPU)"
        assert run.data.params["run.device"] == "cpu"
    per_gpu = round(1 / share)
    for gpu in ("0", "1"):
        on_gpu = [s for s, r in zip(spans, runs, strict=True)
                  if r.data.tags["mixmo.placement.gpu_ids"] == gpu]  # fmt: skip
        assert 1 <= _most_at_once(on_gpu) <= per_gpu, (gpu, on_gpu)


@pytest.mark.parametrize(("share", "at_once"), [(1, 8), (0.5, 16), (0.25, 32)])
def test_a_dry_run_plans_gpus_this_machine_does_not_have(share, at_once, tmp_path, run_tune):
    """A cluster search is planned on a laptop: the plan is printed, nothing runs."""
    space = yaml.safe_load((SHIPPED / "cutmix.yaml").read_text())
    space["resources"] = {"gpus": share, "cpus": 4}
    path = tmp_path / "cutmix.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    done = run_tune("--space", str(path), "--gpus", "8", "--cpus", "128", "--dry-run",
                    cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = f"{share:g} GPU + 4 CPU a trial on cuda; up to {at_once} at a time (8 GPU, 128 CPU"
    assert plan in done.stdout
    assert '"run.device": "cuda"' in done.stdout
    assert "dry run: nothing was started or written" in done.stdout
    if not torch.cuda.is_available():
        assert "note: planned for 8 GPUs but this machine has 0 CUDA device(s)" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cutmix.yaml"]


def test_the_testing_aid_is_refused_on_a_cluster_and_with_a_bad_value(
    tmp_path, run_tune, monkeypatch
):
    space = str(SHIPPED / "quickstart.yaml")
    monkeypatch.setenv(placement.SIMULATE_ENV, "2")
    done = run_tune("--space", space, "--address", "127.0.0.1:1", "--dry-run", cwd=tmp_path)
    assert done.returncode == 2 and "only simulates the GPUs of a local search" in done.stderr
    monkeypatch.setenv(placement.SIMULATE_ENV, "two")
    done = run_tune("--space", space, "--dry-run", cwd=tmp_path)
    assert done.returncode == 2 and "must be a whole number of logical GPUs" in done.stderr
    monkeypatch.setenv(placement.SIMULATE_ENV, "2")
    done = run_tune("--space", space, "--gpus", "3", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # a dry run may plan more than it simulates
    done = run_tune("--space", space, "--gpus", "3", cwd=tmp_path)
    assert done.returncode == 2
    assert "--gpus 3 but this machine has 2 logical GPU(s)" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_the_testing_aid_never_applies_where_cuda_is(monkeypatch):
    """On a machine with a GPU the switch is an error, never a silent CPU search."""
    monkeypatch.setenv(placement.SIMULATE_ENV, "8")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    with pytest.raises(UserError, match="has 8 CUDA device"):
        placement.local_gpus()
    monkeypatch.delenv(placement.SIMULATE_ENV)
    assert placement.local_gpus() == placement.LocalGpus(8, simulated=False)


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [(0, 0), (1, 1), (2, 2), (0.5, 0.5), (0.25, 0.25), (0.333, 1 / 3), (0.2, 0.2),
     (1 / 16, 1 / 16), (0.3, None), (0.75, None), (1.5, None), (0.01, None)],
)  # fmt: skip
def test_a_gpu_share_must_divide_a_gpu(gpus, expected):
    assert placement.check_share(float(gpus)) == expected


@pytest.mark.parametrize("gpus", [0.3, 0.75, 1.5, 0.01])
def test_a_space_with_a_share_that_does_not_divide_a_gpu_is_refused(gpus, tmp_path):
    space = yaml.safe_load((SHIPPED / "quickstart.yaml").read_text())
    space["resources"] = {"gpus": gpus, "cpus": 1}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    with pytest.raises(SpaceError, match=r"`resources.gpus`.*a share 1/k of one"):
        load_space(path)
