"""The search platform's own cost per trial: Ray, Optuna, MLflow and checkpoints.

    python benchmarks/search_overhead.py [--trials 6]

It times `train()` on its own for the space's (fixed) config, then, after a 1-trial search
that warms the process up (Ray start, imports), two real searches of identical trials run
one at a time (`benchmarks/spaces/overhead.yaml`): `--trials` and 3 x `--trials`. The
per-trial cost is the slope, (wall_large - wall_small - extra trials x train time) / extra
trials; what each search pays once (parent run, summary) is reported apart, and the first
search of a process (which also starts Ray) on its own. Target: at most 1 s or 2 % of a
trial's time, whichever is larger.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mixmo_search.search.cluster import use_local_ray_env  # noqa: E402

use_local_ray_env()  # before ray is imported: loopback and token authentication

from mixmo_search.search.plan import make_plan  # noqa: E402
from mixmo_search.search.run import run_search  # noqa: E402
from mixmo_search.search.space import load_space  # noqa: E402
from mixmo_search.train import train  # noqa: E402

SPACE = Path(__file__).parent / "spaces" / "overhead.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    space = load_space(SPACE)
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_times = []
        for i in range(3):
            cfg = space.trial_config({**space.overrides, "run.device": "cpu",
                                      "run.threads": 2, **space.define_by_run(None),
                                      "run.out_dir": str(root / f"plain{i}"),
                                      "run.progress": False})  # fmt: skip
            started = time.perf_counter()
            train(cfg)
            train_times.append(time.perf_counter() - started)
        # a 1-trial search first, apart: the first search of a process also starts Ray and
        # imports Tune, Optuna and MLflow, which the two measured searches must not differ by
        for n in (1, args.trials, 3 * args.trials):
            plan = make_plan(space, gpus=0, cpus=2, trials=n, storage=root / f"runs{n}",
                             mlflow_uri=f"sqlite:///{root / f'mlflow{n}.db'}")  # fmt: skip
            started = time.perf_counter()
            summary = run_search(plan)
            walls[n] = time.perf_counter() - started
            assert summary["counts"]["finished"] == n, summary["counts"]
    train_s = statistics.median(train_times)
    small, large = args.trials, 3 * args.trials
    per_trial = (walls[large] - walls[small] - (large - small) * train_s) / (large - small)
    fixed = walls[small] - small * (train_s + per_trial)
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"),
        "trials": [small, large],
        "train_s_per_trial": round(train_s, 2),
        "search_wall_s": {str(k): round(v, 2) for k, v in walls.items()},
        "overhead_s_per_trial": round(per_trial, 2),
        "overhead_pct_of_trial": round(100 * per_trial / train_s, 1),
        "fixed_s_per_search": round(fixed, 2),
        "first_search_in_process_s": round(walls[1], 2),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
