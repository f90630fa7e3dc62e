"""Three trials through real Ray Tune, one process reused for all: the process dies (SIGKILL)
as Tune hands it to the second trial. Run as a script by tests/search/test_actor_reuse.py:

    python tests/search/reused_worker_dies.py STORAGE [--patched]

prints one JSON line: {trial index: [Tune's status, steps, failures counted]}. `--patched`
applies the search's `requeue_when_a_reused_actor_dies` first.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from mixmo_search.search.cluster import start_local, use_local_ray_env

use_local_ray_env()  # before ray is imported: loopback, token authentication

from ray import tune  # noqa: E402


class Counting(tune.Trainable):
    """Two steps a trial; its process dies the first time Tune resets it for a new trial."""

    def setup(self, config: dict) -> None:
        self.steps = 0

    def step(self) -> dict:
        self.steps += 1
        return {"steps": self.steps, "done": self.steps >= 2}

    def reset_config(self, new_config: dict) -> bool:
        marker = Path(new_config["marker"])
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        self.steps = 0
        return True

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        return None

    def load_checkpoint(self, checkpoint: object) -> None:
        return None


def main(storage: Path, patched: bool) -> None:
    if patched:
        from mixmo_search.search.actor_reuse import requeue_when_a_reused_actor_dies

        requeue_when_a_reused_actor_dies()
    start_local(cpus=1, gpus=0)
    tuner = tune.Tuner(
        tune.with_resources(Counting, {"cpu": 1}),
        param_space={"index": tune.grid_search([0, 1, 2]), "marker": str(storage / "killed")},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=tune.RunConfig(
            storage_path=str(storage),
            name="reuse",
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=2),
        ),  # fmt: skip
    )
    trials = tuner.fit()._experiment_analysis.trials
    ended = {t.config["index"]: [t.status, t.last_result.get("steps"), t.num_failures]
             for t in trials}  # fmt: skip
    print(json.dumps(ended), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--patched" in sys.argv[2:])
