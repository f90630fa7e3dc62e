"""One trial config: what the trainable built and trained is what MLflow logs and what the
checkpoint stores, key for key, on a real search."""

from __future__ import annotations

from mixmo_search import checkpoint, tracking, trial_table
from mixmo_search.config import flatten


def test_mlflow_params_are_the_config_each_trial_trained(search_store):
    client = tracking.connect(search_store.uri)
    exp_id = tracking.experiment_id(client, create=False)
    runs = tracking.trial_run_records(client, exp_id, search_store.parent_run_id)
    folders = {
        path.parent.parent.name: path
        for path in (search_store.storage / search_store.name).glob("*/train/last.pt")
    }
    checked = 0
    for run in runs:
        trial_id = run.data.tags[tracking.TRIAL_ID]
        folder = next((p for name, p in folders.items() if trial_id in name), None)
        if folder is None:  # a trial whose folder holds no checkpoint (it failed at once)
            continue
        trained = flatten(checkpoint.load(folder)["config"])
        logged = {k: v for k, v in run.data.params.items() if k != "searched"}
        assert logged == {k: str(v) for k, v in trained.items()}, trial_id
        # where the trial trained: its own folder (Ray's staging copy of the storage's)
        assert logged["run.out_dir"].endswith(f"{folder.parent.parent.name}/train")
        checked += 1
    assert checked >= 2
    # the trial table reads the same params back, typed
    frame = trial_table.load_trials(client, exp_id, search_store.parent_run_id)
    assert set(frame["param.optim.lr"].dropna()) <= {
        float(r.data.params["optim.lr"]) for r in runs
    }
