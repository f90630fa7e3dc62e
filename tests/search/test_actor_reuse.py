"""A trial whose reused worker process dies as Tune hands it over is retried, not failed
(mixmo_search/search/actor_reuse.py; found by the chaos soak, benchmarks/chaos.py).

Real Ray Tune in a subprocess, one process reused for three trials, SIGKILLed as Tune resets
it for the second: without the fix that trial ends in ERROR at once with its retries unused;
with it, it is retried on a new process (one failure counted) and every trial finishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.waiting import scaled

SCRIPT = Path(__file__).with_name("reused_worker_dies.py")
ROOT = Path(__file__).resolve().parents[2]


def _run(storage: Path, *flags: str) -> dict[str, list]:
    ray_tmp = tempfile.mkdtemp(prefix="mxr-", dir="/tmp")  # short: Ray's socket paths
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "HOME": str(storage), "PYTHONPATH": path}
    try:
        done = subprocess.run([sys.executable, str(SCRIPT), str(storage), *flags], env=env,
                              capture_output=True, text=True, timeout=scaled(300))  # fmt: skip
    finally:
        subprocess.run(["rm", "-rf", ray_tmp], check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_reused_worker_killed_as_tune_hands_it_over_is_retried(tmp_path):
    unpatched, patched = tmp_path / "unpatched", tmp_path / "patched"
    unpatched.mkdir(), patched.mkdir()
    # Ray Tune 2.60 alone: the trial handed the dying process errors at once, its two
    # retries unused (one death counted twice)
    assert _run(unpatched)["1"] == ["ERROR", None, 2]
    done = ["TERMINATED", 2, 0]
    assert _run(patched, "--patched") == {"0": done, "1": ["TERMINATED", 2, 1], "2": done}
