"""Dashboard load time on a large search: every page's first visit, and the queries behind it.

    python benchmarks/dashboard_load.py --trials 500 --epochs 10
    python benchmarks/dashboard_load.py --trials 5000 --epochs 10 --store /tmp/b5000

Writes a synthetic but realistic search into a SQLite MLflow store through the real
`tracking` writer: a parent run and one child run per trial with the full resolved config as
params (cifar10_cut_mixmo plus four searched keys, `mixing.p` drawn only for the cut block,
and the `searched` list), about 20 metrics per epoch, final validation, test and
inference-cost metrics for finished trials, the statuses an ASHA search leaves (most trials
stopped early), and beside it the search's Optuna study (`optuna.db` in the folder the
parent's `mixmo.storage` names, one Optuna trial per MLflow trial, tagged with its number).
Then it times reading the trials (MLflow's `search_runs` against the SQL reader
`trial_table.load_trials` uses on SQLite), the Trials page with empty and warm caches, and
each page's first visit: a fresh process per page, in which only what a running dashboard
server has already done is done before the clock starts (its imports: streamlit, mlflow,
pandas, plotly, the app's modules; its start-up: Streamlit's component discovery, about a
second), so what a page imports for itself (optuna, torch) counts. A first visit follows the
Trials page, where the dashboard lands when the search is opened (so the search's trials are
loaded and cached: every page shares them; for Trials itself, that load is its visit);
`opened_directly_s` times a few pages opened by their address in a new server instead. The
target: every page's first visit <= 3 s at 5000 trials. Prints JSON.

Last measured (benchmarks/RESULTS.md, "Dashboard load"): see the per-page rows there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import queries  # noqa: E402
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


def write_search(uri: str, folder: Path, *, n_trials: int, n_epochs: int, seed: int = 0) -> str:
    """A finished search of `n_trials` trials in the store `uri`, with its Optuna study in
    `folder`/optuna.db; returns its parent run id."""
    import optuna
    from mlflow.entities import Metric

    rng = np.random.default_rng(seed)
    client = tracking.connect(uri)
    exp_id = tracking.experiment_id(client)
    parent = tracking.start_search_run(
        client, exp_id, name="bench",
        tags={"mixmo.objectives": OBJECTIVES, tracking.STORAGE: str(folder)},
        params={"sampler": "tpe", "budget.trials": n_trials}, artifacts={},
    )  # fmt: skip
    counts = {"finished": 0, "pruned": 0, "failed": 0}
    study_trials = []
    for index in range(n_trials):
        sampled = {
            "mixing.block": str(rng.choice(["cut", "linear"])),
            "mixing.p": float(rng.uniform()),
            "model.n_members": int(rng.integers(2, 5)),
            "optim.lr": float(np.exp(rng.uniform(np.log(0.05), np.log(0.5)))),
        }
        drawn = dict(sampled)
        if sampled["mixing.block"] != "cut":  # conditional: p drives only a binary block
            del drawn["mixing.p"]
        cfg = resolve_config(preset="cifar10_cut_mixmo", overrides=drawn)
        run_id = tracking.start_trial_run(
            client, exp_id, parent, search="bench", trial_id=f"{index:08x}",
            params={**cfg.flat(), "searched": sorted(drawn)},
            tags={tracking.OPTUNA_TRIAL: str(index)},
        )  # fmt: skip
        # ASHA with grace 2 and factor 2: stopped after 2, 4 or 8 epochs, or run to the end.
        epochs = int(rng.choice([2, 4, 8, n_epochs], p=[0.5, 0.25, 0.1, 0.15]))
        status = "finished" if epochs == n_epochs else "pruned"
        status = "failed" if rng.uniform() < 0.01 else status
        members = sampled["model.n_members"]
        now, batch, curve = int(time.time() * 1000), [], {}
        for epoch in range(1, epochs + 1):
            acc = 0.9 * (1 - np.exp(-epoch / 3)) * rng.uniform(0.85, 1.0)
            curve[epoch] = float(acc)
            epoch_metrics = {"train/loss": 2 * (1 - acc), "train/acc": acc, "lr": 0.1, "p": 0.5}
            epoch_metrics |= split_metrics(rng, "val", acc, members)
            batch += [Metric(k, float(v), now, epoch) for k, v in epoch_metrics.items()]
        values = None
        if status == "finished":
            final = {"best_epoch": n_epochs, **split_metrics(rng, "val", acc, members)}
            final |= split_metrics(rng, "test", acc - 0.01, members)
            final |= {"cost/params": 36.5e6 + members * 1e4, "cost/flops": 10.5e9,
                      "cost/images_per_s": float(rng.uniform(2000, 2500))}  # fmt: skip
            batch += [Metric(f"final/{k}", v, now, 0) for k, v in final.items()]
            values = [final["val/acc"], final["val/disagreement"]]
        for start in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics a batch
            client.log_batch(run_id, metrics=batch[start : start + 1000])
        reason = "RuntimeError: synthetic failure" if status == "failed" else None
        tracking.set_status(client, run_id, status, reason=reason)
        counts[status] += 1
        study_trials.append(_study_trial(drawn, status, values, curve))
    counts["total"] = n_trials
    tracking.log_metrics(client, parent, {f"trials/{k}": v for k, v in counts.items()}, step=0)
    tracking.set_status(client, parent, "finished")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="bench", storage=f"sqlite:///{folder / 'optuna.db'}",
                                directions=["maximize", "maximize"])  # fmt: skip
    study.set_metric_names(["val/acc", "val/disagreement"])
    study.add_trials(study_trials)
    return parent


def _study_trial(drawn: dict[str, Any], status: str, values: list[float] | None,
                 curve: dict[int, float]) -> Any:  # fmt: skip
    """The Optuna trial the search's sampler would have left for one MLflow trial."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import TrialState

    distributions = {
        "mixing.block": CategoricalDistribution(["cut", "linear"]),
        "mixing.p": FloatDistribution(0.0, 1.0),
        "model.n_members": IntDistribution(2, 4),
        "optim.lr": FloatDistribution(0.05, 0.5, log=True),
    }
    state = {"finished": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
             "failed": TrialState.FAIL}[status]  # fmt: skip
    return optuna.trial.create_trial(
        state=state, values=values, params=drawn,
        distributions={k: distributions[k] for k in drawn},
        intermediate_values=curve if status != "failed" else None,
    )  # fmt: skip


def timed(call: Callable[[], Any], repeats: int = 1) -> float:
    """Best wall time of `repeats` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return round(best, 3)


def clear_caches() -> None:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


PAGES = ("trials", "tradeoff", "cost", "robustness", "ood", "parameters", "compare",
         "ensembles", "promote")  # fmt: skip
# what a running dashboard server has imported before any page (the router's imports)
SERVER_IMPORTS = ("streamlit", "mlflow", "pandas", "plotly.express", "plotly.graph_objects",
                  "sqlalchemy", "app.queries", "app.state", "app.charts",
                  "mixmo_search.tracking", "mixmo_search.trial_table",
                  "mixmo_search.tracking_auth")  # fmt: skip


def first_visit(uri: str, page: str, *, landed: bool) -> tuple[float, bool]:
    """Seconds of one page's first visit and whether it imported torch, in a fresh process
    that has done what a running dashboard server has (see the module docstring). `landed`:
    the user opened the search first (the Trials page, where the dashboard lands: the
    search's trials are loaded and cached, as every page shares them); else the page is
    opened directly, nothing cached."""
    script = f"""
import importlib, os, sys, time
sys.path.insert(0, {str(ROOT)!r})
os.environ["MLFLOW_TRACKING_URI"] = {uri!r}
for name in {SERVER_IMPORTS!r}:
    importlib.import_module(name)
from mixmo_search import tracking
tracking.connect({uri!r}, create=False)  # the server's first page made the client
from streamlit.testing.v1 import AppTest
AppTest.from_string("import streamlit as st\\nst.write(1)").run()  # the server's start-up
app = AppTest.from_file({str(ROOT / "app" / "dashboard.py")!r}, default_timeout=300)
if {landed!r}:
    app.run()  # the landing page: Trials
before = "torch" in sys.modules
app.switch_page("views/{page}.py")
start = time.perf_counter()
app.run()
took = time.perf_counter() - start
assert not app.exception, [e.value for e in app.exception]
assert not app.error, [e.value for e in app.error]
print(round(took, 3), "torch" in sys.modules and not before)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"page {page}: {done.stderr[-2000:]}")
    took, torch = done.stdout.split()[-2:]
    return float(took), torch == "True"


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
    parser.add_argument("--rounds", type=int, default=2, help="first visits per page (best)")
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
            parent = write_search(uri, folder, n_trials=args.trials, n_epochs=args.epochs)
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
        figures["trials_cold_s"] = timed(lambda: queries.trials(uri, exp_id, parent))
        figures["trials_warm_s"] = timed(lambda: queries.trials(uri, exp_id, parent), repeats=3)
        trials = queries.trials(uri, exp_id, parent)
        figures["trials_frame"] = list(trials.shape)

        os.environ["MLFLOW_TRACKING_URI"] = uri
        app = AppTest.from_file(str(ROOT / "app" / "dashboard.py"), default_timeout=300)
        app.run()
        figures["apptest_trials_page_warm_s"] = timed(app.run, repeats=3)
        shown = app.dataframe[0].value
        assert len(shown) == args.trials, f"the table shows {len(shown)} trials"
        for landed, label in ((True, "first_visit_s"), (False, "opened_directly_s")):
            pages, imported = {}, {}
            for page in PAGES if landed else ("trials", "parameters", "promote"):
                first = landed and page != "trials"  # landing on Trials is its first visit
                runs = [first_visit(uri, page, landed=first) for _ in range(args.rounds)]
                pages[page] = min(took for took, _ in runs)
                imported[page] = any(torch for _, torch in runs)
            figures[label] = pages
            figures[f"{label.removesuffix('_s')}_imports_torch"] = imported
        figures["every_page_within_3s"] = max(figures["first_visit_s"].values()) <= 3.0
        figures["machine"] = f"{platform.node()} {platform.processor() or platform.machine()}"
        figures["cpus"] = os.cpu_count()
        figures["load_average"] = [round(x, 1) for x in os.getloadavg()]
        figures["date"] = time.strftime("%Y-%m-%d")
        figures["versions"] = {"python": platform.python_version(), "mlflow": mlflow.__version__,
                               "streamlit": streamlit.__version__}  # fmt: skip
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
