"""The search platform's own cost per trial: Ray, Optuna, MLflow and checkpoints.

    python benchmarks/search_overhead.py [--trials 6]

It times `train()` on its own for the space's (fixed) config, then a real search of
`--trials` identical trials run one at a time (`benchmarks/spaces/overhead.yaml`), and
reports (search wall time - Ray start-up - trials x train time) / trials. Target: at most
1 s or 2 % of a trial's time, whichever is larger.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixmo_search.search.run import make_plan, run_search  # noqa: E402
from mixmo_search.search.space import load_space  # noqa: E402
from mixmo_search.train import train  # noqa: E402

SPACE = Path(__file__).parent / "spaces" / "overhead.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    space = load_space(SPACE)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plan = make_plan(space, gpus=0, cpus=2, trials=args.trials, storage=root / "runs",
                         mlflow_uri=f"sqlite:///{root / 'mlflow.db'}")  # fmt: skip
        train_times = []
        for i in range(3):
            cfg = space.trial_config({**plan.base, **space.define_by_run(None),
                                      "run.out_dir": str(root / f"plain{i}"),
                                      "run.progress": False})  # fmt: skip
            started = time.perf_counter()
            train(cfg)
            train_times.append(time.perf_counter() - started)
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
        ray.shutdown()
        ray_start = time.perf_counter() - started

        started = time.perf_counter()
        summary = run_search(plan)
        search_wall = time.perf_counter() - started
    train_s = statistics.median(train_times)
    overhead = (search_wall - ray_start - args.trials * train_s) / args.trials
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"),
        "trials": args.trials,
        "finished": summary["counts"]["finished"],
        "train_s_per_trial": round(train_s, 2),
        "ray_start_s": round(ray_start, 2),
        "search_wall_s": round(search_wall, 2),
        "overhead_s_per_trial": round(overhead, 2),
        "overhead_pct_of_trial": round(100 * overhead / train_s, 1),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
