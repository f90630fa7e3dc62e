"""`python -m mixmo_search.tune`: run a MixMo hyperparameter search.

    python -m mixmo_search.tune --space search_spaces/quickstart.yaml --gpus 0
    python -m mixmo_search.tune --space search_spaces/cutmix.yaml --gpus 8
    python -m mixmo_search.tune --space search_spaces/cutmix.yaml --resume

Ray Tune runs the trials (a local Ray on 127.0.0.1 unless --address joins a cluster), an
Optuna sampler proposes them, and every trial is a nested MLflow run under the search's
parent run. Bad input exits with code 2 and one line saying what to fix. Ctrl-C or SIGTERM
before the search starts (while the plan is checked) exits 130, saying nothing was written.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING

from mixmo_search import tracking
from mixmo_search.errors import EXIT_INTERRUPTED, Parser, exit_on_user_error

if TYPE_CHECKING:
    import optuna

    from mixmo_search.search.space import SearchSpace


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(
        prog="python -m mixmo_search.tune", description="Run a MixMo hyperparameter search."
    )
    parser.add_argument("--space", required=True, help="search-space YAML (search_spaces/)")
    parser.add_argument("--gpus", type=float, help="GPUs the whole search may use; 0 = CPU")
    parser.add_argument("--cpus", type=float, help="CPUs the whole search may use")
    parser.add_argument("--trials", type=int, help="number of trials (overrides budget)")
    parser.add_argument("--name", help="search name (default: the space's name)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted search")
    parser.add_argument("--address", help="join an existing Ray cluster (e.g. auto)")
    parser.add_argument("--storage", help="folder for searches (default: runs/searches)")
    parser.add_argument(
        "--mlflow-uri",
        help="MLflow tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in "
        "the working directory); sqlite:///..., postgresql://..., http(s)://... of a server",
    )
    parser.add_argument(
        "--experiment", default=tracking.EXPERIMENT, help="MLflow experiment (default %(default)s)"
    )
    parser.add_argument(
        "--optuna-storage",
        metavar="URL",
        help="the Optuna study's database (default: sqlite:///STORAGE/NAME/optuna.db); a "
        "cluster search: postgresql://USER@HOST:PORT/DB, password in PGPASSFILE or PGPASSWORD",
    )
    parser.add_argument(
        "--warm-start",
        metavar="SEARCH",
        help="seed the sampler with the trials of an earlier search in --storage",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="Ray Tune's progress tables, not one line a trial"
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in stop_signals}
    # SIGTERM is Ctrl-C from the first line on, and Ctrl-C stops the search even when the
    # shell started it with SIGINT ignored (`cmd &` in a script), as it does once Tune runs
    signal.signal(signal.SIGTERM, _as_ctrl_c)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _main(argv)
    except KeyboardInterrupt:  # the search handles its own from its claim on: none written
        print("stopped before the search started: nothing was started or written",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:  # called as a function (tests, notebooks), it leaves the process's handlers be
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def _as_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@exit_on_user_error
def _main(argv: list[str] | None) -> None:
    args = parse_args(argv)
    from mixmo_search.search.cluster import use_cluster_env, use_local_ray_env

    if args.address is None:  # before anything imports ray
        use_local_ray_env()
    else:
        use_cluster_env(args.address)
    from mixmo_search.search.plan import make_plan
    from mixmo_search.search.run import run_search
    from mixmo_search.search.space import load_space
    from mixmo_search.search.summary import exit_code, print_summary

    space = load_space(args.space)
    plan = make_plan(
        space, name=args.name, gpus=args.gpus, cpus=args.cpus, trials=args.trials,
        storage=args.storage, mlflow_uri=args.mlflow_uri, experiment=args.experiment,
        address=args.address, resume=args.resume, dry_run=args.dry_run,
        warm_start=args.warm_start, verbose=args.verbose, optuna_storage=args.optuna_storage,
    )  # fmt: skip
    print(plan.describe(), flush=True)
    if args.dry_run:
        example = plan.trial_configs.build(space.define_by_run(_example_trial(space)))
        print("  example trial config:")
        for section, values in example.to_dict().items():
            print(f"    {section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        print("dry run: nothing was started or written")
        return
    if plan.finished:
        print(
            f"search {plan.name!r} already ran its {plan.trials} trials: nothing to resume. "
            f"To run more, start a new search that learns from it: --name NEW --warm-start "
            f"{plan.name}"
        )
        return
    summary = run_search(plan)
    print_summary(summary, plan)
    code = exit_code(summary)  # 130 interrupted, 1 every trial failed (it says why)
    if code:
        raise SystemExit(code)


def _example_trial(space: SearchSpace) -> optuna.trial.Trial:
    """An Optuna trial that draws from the sampler once, in memory, for the dry-run example."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize" if o.mode == "max" else "minimize" for o in space.objectives]
    )
    return study.ask()


if __name__ == "__main__":
    main()
