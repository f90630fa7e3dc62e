"""The trainable's checkpoint cadence: what it hands Tune, and an exact resume from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mixmo_search import tracking, trial_table
from mixmo_search.config import resolve_config
from mixmo_search.search.hold import HOLD_ENV
from mixmo_search.search.trainable import hands_checkpoint
from mixmo_search.train import train
from tests.waiting import scaled, wait_until

SPACES = Path(__file__).parents[1] / "spaces"


@pytest.mark.parametrize(
    ("every", "epochs", "handed"),
    [(1, 3, [1, 2, 3]), (4, 9, [4, 8, 9]), (10, 300, [*range(10, 301, 10)]), (5, 3, [3])],
)
def test_checkpoints_every_n_epochs_and_at_the_last(every, epochs, handed):
    cfg = resolve_config(
        preset="digits_quick",
        overrides={"run.checkpoint_every": every, "optim.epochs": epochs, "optim.milestones": []},
    )
    assert [e for e in range(1, epochs + 1) if hands_checkpoint(e, cfg)] == handed


@pytest.mark.slow
def test_a_trial_killed_between_checkpoints_resumes_exactly(tmp_path):
    """Killed after epoch 5 (checkpoints at 4, 8, 9), the trial retries from epoch 4 and ends
    with the same metrics, to the bit, as a training that was never interrupted."""
    uri, hold = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "hold"
    driver = subprocess.Popen(
        [sys.executable, "-m", "mixmo_search.tune", "--space", str(SPACES / "cadence.yaml"),
         "--gpus", "0", "--cpus", "1", "--mlflow-uri", uri], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, HOLD_ENV: f"5:{hold}"},  # the trial waits after epoch 5
    )  # fmt: skip
    try:

        def held() -> list[Path]:
            assert driver.poll() is None, f"the search exited {driver.returncode}"
            return list(hold.glob("*.held"))

        (marker,) = wait_until(held, 600, "the trial held after its 5th epoch")
        os.kill(int(marker.read_text()), signal.SIGKILL)  # between the checkpoints of 4 and 8
        output, _ = driver.communicate(timeout=scaled(600))
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output[-3000:]

    search = tmp_path / "runs/searches/cadence"
    (file,) = search.glob("*/result.json")
    results = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    retry = next(r for r in results if r["iterations_since_restore"] < r["training_iteration"])
    assert retry["epoch"] == 5 and retry["iterations_since_restore"] == 1  # from epoch 4
    handed = sorted({r["epoch"] for r in results if "checkpoint/bytes" in r})
    assert handed == [4, 8, 9]

    cfg = resolve_config(
        preset="digits_quick",
        overrides={"optim.epochs": 9, "optim.milestones": [6], "run.max_steps_per_epoch": 20,
                   "mixing.p": 0.5, "run.threads": 1, "run.device": "cpu",
                   "run.out_dir": str(tmp_path / "straight"), "run.progress": False},
    )  # fmt: skip
    straight = train(cfg)
    final = results[-1]
    for key in ("val/acc", "val/nll", "test/acc", "test/nll", "test/disagreement"):
        assert final[f"final/{key}"] == straight[key], key

    client = tracking.connect(uri)
    meta = json.loads((search / "search.json").read_text())
    trials = trial_table.load_trials(client, tracking.experiment_id(client), meta["parent_run_id"])
    steps = [m.step for m in client.get_metric_history(trials.run_id.item(), "val/acc")]
    assert steps == list(range(1, 10))  # epochs 5 and on, reported twice, logged once
