"""The device check's CPU side: `benchmarks/gpu_check.py --device cpu --quick` runs every
section at tiny sizes through the real trainer and writes its report; the sync audit finds
no host sync in the step beyond the divergence check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import scaled

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.mark.slow
def test_the_quick_device_check_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--device", "cpu", "--quick",
         "--out", str(out), "--budget-s", "1200"],
        capture_output=True, text=True, timeout=scaled(1200),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["failures"] == [] and report["errors"] == [] and report["skipped"] == []

    # host syncs: per step only the host generator's draw (no device sync) and the
    # divergence check (1 in 20 steps); every one of them says so in its comment
    syncs = report["syncs"]
    in_step = [r for r in syncs["records"] if r["in_step"]]
    assert {(r["op"], r["every_steps"], r["device_sync"]) for r in in_step} == {
        ("_local_scalar_dense", 1.0, False),
        ("_local_scalar_dense", 20.0, True),
    }, in_step
    assert all("sync" in r["code"] for r in in_step)
    assert syncs["device_syncs_per_step"] == 0.05
    assert syncs["profiler_local_scalar_dense"] == 2 * syncs["recorded_local_scalar_dense"]

    # correctness on the CPU: a repeat and a resumed run repeat the straight run exactly
    correctness = report["correctness"]
    assert correctness["ok"] and correctness["resume_prefix_identical"]
    gaps = {row["run"]: row["gap_vs_bf16"] for row in correctness["runs"]}
    assert gaps["bf16 repeat"] == 0 and gaps["bf16 stopped, resumed"] == 0

    rows = {(r["M"], r["slots"], r["mode"]): r for r in report["throughput"]}
    assert set(rows) == {(2, 16, "eager"), (2, 32, "eager"), (3, 16, "eager")}
    assert all(r["slots_per_s"] > 0 and len(r["train_loss"]) == 3 for r in rows.values())
    assert [p["trials"] for p in report["packing"]] == [1, 2]
    assert all(p["total_slots_per_s"] > 0 and not p["errors"] for p in report["packing"])
    accuracy = report["accuracy"]  # 90 tiny CPU steps: the path runs; learning shows on a GPU
    assert len(accuracy["val_acc_by_epoch"]) == 3 and 0 <= accuracy["final_test_acc"] <= 1
    assert report["projection"]["by_mode"]["eager"]["train_gpu_hours"] > 0
    markdown = (out / "gpu_check.md").read_text()
    for title in ("Host syncs", "Correctness", "Throughput", "packed", "Accuracy", "Projected"):
        assert title in markdown
