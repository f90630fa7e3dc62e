"""Dashboard load time on a large search: the queries of a first render and AppTest page runs.

    python benchmarks/dashboard_load.py --trials 500 --epochs 10
    python benchmarks/dashboard_load.py --trials 5000 --epochs 10

Writes a synthetic but realistic search into a temporary SQLite MLflow store through the real
`tracking` writer: a parent run and one child run per trial with the full resolved config as
params (cifar10_cut_mixmo plus four searched keys), about 20 metrics per epoch, final
validation, test and inference-cost metrics for finished trials, and the statuses an ASHA
search leaves (most trials stopped early). Then it times reading the trials (MLflow's
`search_runs` against the SQL reader `trial_table.load_trials` uses on SQLite) and the
dashboard's load path with empty caches ("cold", what a user opening the search waits for)
and filled ones ("warm", every later rerun), and prints JSON. The target is a 500-trial
search's first view in <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import parameters, queries  # noqa: E402
from mixmo_search import tracking, trial_table  # noqa: E402
from mixmo_search.config import resolve_config  # noqa: E402

OBJECTIVES = (
    '[{"metric": "val/acc", "mode": "max"}, {"metric": "val/disagreement", "mode": "max"}]'
)
SPLIT_METRICS = ("acc", "top5", "nll", "ece", "brier", "nll_ts", "ece_ts", "temperature",
                 "member_acc_mean", "ratio_error", "disagreement")  # fmt: skip


def split_metrics(rng: np.random.Generator, split: str, acc: float, n_members: int) -> dict:
    values = dict(zip(SPLIT_METRICS, rng.uniform(0.05, 1.0, len(SPLIT_METRICS)), strict=True))
    values |= {"acc": acc, "nll": 2.5 * (1 - acc) + 0.1}
    values |= {f"acc_member{k}": acc - rng.uniform(0, 0.05) for k in range(n_members)}
    return {f"{split}/{name}": float(value) for name, value in values.items()}


def write_search(uri: str, *, n_trials: int, n_epochs: int, seed: int = 0) -> str:
    """A finished search of `n_trials` trials in the store `uri`; returns its parent run id."""
    from mlflow.entities import Metric

    rng = np.random.default_rng(seed)
    client = tracking.connect(uri)
    exp_id = tracking.experiment_id(client)
    parent = tracking.start_search_run(
        client, exp_id, name="bench", tags={"mixmo.objectives": OBJECTIVES},
        params={"sampler": "tpe", "budget.trials": n_trials}, artifacts={},
    )  # fmt: skip
    searched = ["mixing.block", "mixing.p", "model.n_members", "optim.lr"]
    counts = {"finished": 0, "pruned": 0, "failed": 0}
    for index in range(n_trials):
        sampled = {
            "mixing.block": str(rng.choice(["cut", "linear"])),
            "mixing.p": float(rng.uniform()),
            "model.n_members": int(rng.integers(2, 5)),
            "optim.lr": float(np.exp(rng.uniform(np.log(0.05), np.log(0.5)))),
        }
        cfg = resolve_config(preset="cifar10_cut_mixmo", overrides=sampled)
        run_id = tracking.start_trial_run(
            client, exp_id, parent, search="bench", trial_id=f"{index:08x}",
            params={**cfg.flat(), "searched": searched},
        )  # fmt: skip
        # ASHA with grace 2 and factor 2: stopped after 2, 4 or 8 epochs, or run to the end.
        epochs = int(rng.choice([2, 4, 8, n_epochs], p=[0.5, 0.25, 0.1, 0.15]))
        status = "finished" if epochs == n_epochs else "pruned"
        status = "failed" if rng.uniform() < 0.01 else status
        members = sampled["model.n_members"]
        now, batch = int(time.time() * 1000), []
        for epoch in range(1, epochs + 1):
            acc = 0.9 * (1 - np.exp(-epoch / 3)) * rng.uniform(0.85, 1.0)
            epoch_metrics = {"train/loss": 2 * (1 - acc), "train/acc": acc, "lr": 0.1, "p": 0.5}
            epoch_metrics |= split_metrics(rng, "val", acc, members)
            batch += [Metric(k, float(v), now, epoch) for k, v in epoch_metrics.items()]
        if status == "finished":
            final = {"best_epoch": n_epochs, **split_metrics(rng, "val", acc, members)}
            final |= split_metrics(rng, "test", acc - 0.01, members)
            final |= {"cost/params": 36.5e6 + members * 1e4, "cost/flops": 10.5e9,
                      "cost/images_per_s": float(rng.uniform(2000, 2500))}  # fmt: skip
            batch += [Metric(f"final/{k}", v, now, 0) for k, v in final.items()]
        for start in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics a batch
            client.log_batch(run_id, metrics=batch[start : start + 1000])
        reason = "RuntimeError: synthetic failure" if status == "failed" else None
        tracking.set_status(client, run_id, status, reason=reason)
        counts[status] += 1
    counts["total"] = n_trials
    tracking.log_metrics(client, parent, {f"trials/{k}": v for k, v in counts.items()}, step=0)
    tracking.set_status(client, parent, "finished")
    return parent


def timed(call: Callable[[], Any], repeats: int = 1) -> float:
    """Best wall time of `repeats` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return round(best, 3)


def clear_caches() -> None:
    for loader in (queries.searches, queries.trials, parameters.param_importances,
                   parameters.space_params):  # fmt: skip
        loader.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--store",
        type=Path,
        help="keep the written store in this folder, or time the one an earlier run kept "
        "there (writing 5000 trials takes about 10 minutes)",
    )
    args = parser.parse_args()
    import mlflow
    import streamlit
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory(prefix="dashboard-load-") as temporary:
        folder = args.store or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        uri, kept = f"sqlite:///{folder / 'mlflow.db'}", folder / "parent_run_id"
        start = time.perf_counter()
        if kept.exists():
            parent = kept.read_text()
        else:
            parent = write_search(uri, n_trials=args.trials, n_epochs=args.epochs)
            kept.write_text(parent)
        write_s = time.perf_counter() - start
        exp_id = queries.searches(uri)["experiment_id"].iloc[0]
        figures: dict[str, Any] = {
            "trials": args.trials,
            "epochs": args.epochs,
            "write_store_s": round(write_s, 1),
            "connect_s": timed(lambda: tracking.connect(uri), repeats=3),
            "search_runs_trials_s": timed(
                lambda: trial_table._load_trials_api(tracking.connect(uri), exp_id, parent)
            ),
            "load_trials_sql_s": timed(
                lambda: trial_table.load_trials(tracking.connect(uri), exp_id, parent), repeats=3
            ),
        }
        clear_caches()
        figures["searches_cold_s"] = timed(lambda: queries.searches(uri))
        figures["trials_cold_s"] = timed(lambda: queries.trials(uri, exp_id, parent))
        figures["trials_warm_s"] = timed(lambda: queries.trials(uri, exp_id, parent), repeats=3)
        trials = queries.trials(uri, exp_id, parent)
        figures["trials_frame"] = list(trials.shape)

        os.environ["MLFLOW_TRACKING_URI"] = uri
        app = AppTest.from_file(str(ROOT / "app" / "dashboard.py"), default_timeout=300)
        figures["apptest_first_run_s"] = timed(app.run)  # imports the app; caches are warm
        clear_caches()
        figures["apptest_trials_page_cold_s"] = timed(app.run)
        figures["apptest_trials_page_warm_s"] = timed(app.run, repeats=3)
        for page in ("tradeoff", "cost", "parameters", "compare", "ensembles"):
            app.switch_page(f"views/{page}.py")
            figures[f"apptest_{page}_page_s"] = timed(app.run)
            assert not app.exception, [e.value for e in app.exception]
        app.session_state[f"selected-{parent}"] = trials["run_id"].tolist()[:4]
        app.switch_page("views/compare.py")
        figures["apptest_compare_4_selected_cold_s"] = timed(app.run)  # 4 metric histories
        shown = app.switch_page("views/trials.py").run().dataframe[0].value
        assert len(shown) == args.trials, f"the table shows {len(shown)} trials"
        figures["meets_3s_target"] = figures["apptest_trials_page_cold_s"] <= 3.0
        figures["machine"] = f"{platform.node()} {platform.processor() or platform.machine()}"
        figures["cpus"] = os.cpu_count()
        figures["date"] = time.strftime("%Y-%m-%d")
        figures["versions"] = {"python": platform.python_version(), "mlflow": mlflow.__version__,
                               "streamlit": streamlit.__version__}  # fmt: skip
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
