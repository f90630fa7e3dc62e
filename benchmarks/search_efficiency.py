"""Does TPE + ASHA find a good MixMo configuration with less compute than random search?

    python benchmarks/search_efficiency.py [--seeds 5] [--trials 32] [--mo-trials 16]

Real searches (Ray Tune, Optuna, MLflow, training on digits) over `spaces/efficiency.yaml`:
for each seed, a random search with FIFO (every trial trains its 12 epochs) and a TPE search
with ASHA (grace 2 epochs, reduction factor 3), each of `--trials` trials. The target of a
seed is the best final validation accuracy the random search found; the compute a search
needs is the number of epochs all its trials had trained (counted from MLflow's per-epoch
metric timestamps) when its first finished trial reached the target. A TPE + ASHA search that
never reaches it is charged all its epochs and marked. Target: the median ratio of TPE + ASHA
to random compute is at most 40 %.

Multi-objective (`--mo-trials`, 0 to skip): NSGA-II and TPE on (val/acc, val/disagreement),
FIFO, per seed, compared on the hypervolume of their finished trials (reference point 0, 0).
Prints one JSON document; copy its figures into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mixmo_search.search.cluster import use_local_ray_env  # noqa: E402

use_local_ray_env()  # before ray is imported: loopback and token authentication

from mixmo_search import tracking, trial_table  # noqa: E402
from mixmo_search.search.plan import make_plan  # noqa: E402
from mixmo_search.search.run import run_search  # noqa: E402
from mixmo_search.search.space import load_space  # noqa: E402

SPACE = Path(__file__).parent / "spaces" / "efficiency.yaml"
METHODS = {
    "random+fifo": {"sampler": {"type": "random"}, "scheduler": {"type": "fifo"}},
    "tpe+asha": {
        "sampler": {"type": "tpe", "n_startup_trials": 8},
        "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 3},
    },
}
MO_METHODS = {"nsga2": {"type": "nsga2", "population_size": 8}, "tpe": {"type": "tpe"}}
MO_OBJECTIVES = [
    {"metric": "val/acc", "mode": "max"},
    {"metric": "val/disagreement", "mode": "max"},
]


def search(root: Path, name: str, changes: dict[str, Any], seed: int, trials: int) -> str:
    """Run one real search with `changes` to the space; returns its MLflow URI."""
    doc = yaml.safe_load(SPACE.read_text())
    doc.update(changes, name=name, budget={"trials": trials})
    doc["sampler"] = {**doc["sampler"], **changes.get("sampler", {}), "seed": seed}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    uri = f"sqlite:///{root / name}.db"
    plan = make_plan(load_space(path), gpus=0, cpus=2, storage=root / "runs", mlflow_uri=uri)
    run_search(plan)
    return uri


def trial_records(uri: str) -> list[dict[str, Any]]:
    """Each trial's final val/acc (None unless finished), end time, and epoch timestamps."""
    client = tracking.connect(uri, create=False)
    exp_id = tracking.experiment_id(client, create=False)
    (parent,) = tracking.list_searches(client, exp_id).run_id
    trials = trial_table.load_trials(client, exp_id, parent)
    records = []
    for row in trials.to_dict("records"):
        history = client.get_metric_history(row["run_id"], "train/loss")
        finished = row["status"] == "finished"
        records.append({
            "acc": row.get("final/val/acc") if finished else None,
            "disagreement": row.get("final/val/disagreement") if finished else None,
            "end": client.get_run(row["run_id"]).info.end_time or 0,
            "epoch_times": sorted(m.timestamp for m in history),
        })  # fmt: skip
    return records


def epochs_until(records: list[dict[str, Any]], moment: float) -> int:
    """Epochs trained by all trials up to `moment` (ms), from the per-epoch timestamps."""
    return sum(t <= moment for r in records for t in r["epoch_times"])


def compute_to_reach(records: list[dict[str, Any]], target: float) -> tuple[int, bool]:
    hits = [r["end"] for r in records if r["acc"] is not None and r["acc"] >= target - 1e-12]
    if not hits:
        return epochs_until(records, float("inf")), False
    return epochs_until(records, min(hits)), True


def hypervolume(points: list[tuple[float, float]]) -> float:
    """Area dominated by `points` (both maximised) above the reference point (0, 0)."""
    area, best_y = 0.0, 0.0
    for x, y in sorted(points, reverse=True):  # by accuracy, highest first
        if y > best_y:
            area += x * (y - best_y)
            best_y = y
    return area


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--mo-trials", type=int, default=16)
    args = parser.parse_args()
    started = time.time()
    rows, mo_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for seed in range(args.seeds):
            found = {m: trial_records(search(root, f"{m.replace('+', '-')}-{seed}", change,
                                             seed, args.trials))
                     for m, change in METHODS.items()}  # fmt: skip
            target = max(r["acc"] for r in found["random+fifo"] if r["acc"] is not None)
            random_epochs, _ = compute_to_reach(found["random+fifo"], target)
            tpe_epochs, reached = compute_to_reach(found["tpe+asha"], target)
            rows.append({
                "seed": seed, "target_val_acc": round(target, 4),
                "random_epochs": random_epochs, "tpe_asha_epochs": tpe_epochs,
                "reached": reached, "ratio": round(tpe_epochs / random_epochs, 3),
                "random_total_epochs": epochs_until(found["random+fifo"], float("inf")),
                "tpe_asha_total_epochs": epochs_until(found["tpe+asha"], float("inf")),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            if args.mo_trials:
                mo = {}
                for name, sampler in MO_METHODS.items():
                    change = {"sampler": sampler, "scheduler": {"type": "fifo"},
                              "objective": MO_OBJECTIVES}  # fmt: skip
                    uri = search(root, f"mo-{name}-{seed}", change, seed, args.mo_trials)
                    points = [(r["acc"], r["disagreement"]) for r in trial_records(uri)
                              if r["acc"] is not None]  # fmt: skip
                    mo[name] = round(hypervolume(points), 4)
                mo_rows.append({"seed": seed, **mo})
                print(json.dumps(mo_rows[-1]), flush=True)
    ratios = [r["ratio"] for r in rows]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "seeds": args.seeds,
        "trials": args.trials,
        "rows": rows,
        "ratio_median": statistics.median(ratios),
        "ratio_min_max": [min(ratios), max(ratios)],
        "reached": sum(r["reached"] for r in rows),
        "multi_objective": mo_rows,
        "wall_minutes": round((time.time() - started) / 60, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
