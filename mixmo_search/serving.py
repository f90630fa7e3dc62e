"""Promoted networks as MLflow models: the pyfunc wrapper, logging, registry writes, loading.

A promoted network is logged as an `mlflow.pyfunc` model with two artifacts: `weights.pt`
(the state dict) and `network.json` (the resolved TrainConfig plus the input format:
channels, image size, classes, normalisation). The package's source travels inside the model
(`code_paths`), so `mlflow.pyfunc.load_model` and `mlflow models serve` rebuild the network
where mixmo_search is not installed. Python users call `load_network`, which reads the same two
artifacts with the installed package and leaves `sys.path` alone. `publish` makes every write of
a promotion: its run under the search, the logged model, the tagged version and the alias.

pyfunc input: float32 (N, C, H, W) raw pixels in [0, 255]; output: one row per image with the
ensemble `class`, its softmax `confidence` and each member's class `vote_0` ... `vote_{M-1}`.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from torch import Tensor

from mixmo_search import tracking, tracking_auth
from mixmo_search.checkpoint import code_revision
from mixmo_search.config import TrainConfig, resolve_config
from mixmo_search.errors import UserError
from mixmo_search.inference import (
    InputFormat,
    LoadedNetwork,
    build_network,
    member_logits,
    resolve_device,
)
from mixmo_search.metrics import ensemble_logits

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo


WEIGHTS, NETWORK = "weights.pt", "network.json"
LOGGED_NAME = "model"  # the LoggedModel's name inside the promotion run
PROMOTION = "promotion"  # `mixmo.kind` of the run a promotion logs its model in


class NonFiniteOutput(UserError):
    """The network's logits are NaN or infinite: no answer is given rather than a wrong one."""


@dataclass(frozen=True)
class Classification:
    """Per-image predictions of a MixMo network."""

    classes: Tensor  # (N,) ensemble class: argmax of the mean of the heads' logits
    confidence: Tensor  # (N,) softmax probability of that class
    votes: Tensor  # (M, N) each member's own class

    def frame(self) -> pd.DataFrame:
        """One row per image: class, confidence, vote_0 ... vote_{M-1} (the pyfunc output)."""
        columns = {
            "class": self.classes.cpu().numpy().astype(np.int64),
            "confidence": self.confidence.cpu().numpy().astype(np.float64),
        }
        for k, member_votes in enumerate(self.votes.cpu().numpy().astype(np.int64)):
            columns[f"vote_{k}"] = member_votes
        return pd.DataFrame(columns)


def classify(network: LoadedNetwork, images: Tensor) -> Classification:
    """Classify (N, C, H, W) raw-pixel images (uint8, or float in [0, 255])."""
    device = network.normalize.scale.device
    logits = member_logits(
        network.model, images.to(device), network.normalize, network.config.run.eval_batch_size
    )  # (M, N, K), fp32: a served model answers the same on every device
    if not torch.isfinite(logits).all():
        bad = (~torch.isfinite(logits)).any(dim=2).any(dim=0).nonzero()[:, 0]  # (n,)
        raise NonFiniteOutput(
            f"the network gives non-finite outputs for {len(bad)} of {images.shape[0]} "
            f"images (the first: image {int(bad[0])}); its weights or these inputs are "
            "broken: promote another trial, or check the images"
        )
    probs = ensemble_logits(logits).softmax(dim=1)  # (N, K), float64
    confidence, classes = probs.max(dim=1)
    return Classification(classes, confidence, logits.argmax(dim=2))


class MixMoPyfunc(PythonModel):
    """The `mlflow.pyfunc` face of a promoted network (see the module docstring for I/O)."""

    def load_context(self, context: Any) -> None:
        self.network = read_network(
            Path(context.artifacts["network"]), Path(context.artifacts["weights"]), "auto"
        )

    # MLflow reads this hint: np.ndarray means "validate by the logged signature instead"
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        images = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        return classify(self.network, images).frame()


def write_network(
    folder: Path, config: TrainConfig, input_format: InputFormat, state_dict: dict[str, Tensor]
) -> dict[str, str]:
    """Write the two artifacts into `folder`; returns them as pyfunc `artifacts`."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, folder / WEIGHTS)
    spec = {"config": config.to_dict(), "input_format": asdict(input_format)}
    (folder / NETWORK).write_text(json.dumps(spec, indent=2, sort_keys=True))
    return {"weights": str(folder / WEIGHTS), "network": str(folder / NETWORK)}


def read_network(
    network_json: Path, weights: Path, device: torch.device | str = "cpu"
) -> LoadedNetwork:
    """Rebuild a network from the artifacts `write_network` wrote."""
    spec = json.loads(network_json.read_text())
    config = resolve_config(spec["config"], source=str(network_json))
    fmt = spec["input_format"]
    input_format = InputFormat(**{**fmt, "mean": tuple(fmt["mean"]), "std": tuple(fmt["std"])})
    device = resolve_device(device) if isinstance(device, str) else device
    state_dict = torch.load(weights, map_location=device, weights_only=True)
    return build_network(config, input_format, state_dict, device)


@contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at `uri` for a block, then restore it.

    `log_model`, `models:/` URIs and the SQL registry's `create_model_version` read only the
    global URI; restoring it keeps callers such as the dashboard unaffected. Not thread-safe,
    like the global it sets.
    """
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def requirements() -> list[str]:
    """What the logged model needs at serving time, pinned to this environment."""
    import yaml

    # local version labels such as +cpu are not on PyPI
    pins = {"torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "pyyaml": yaml.__version__, "mlflow": mlflow.__version__}  # fmt: skip
    return [f"{name}=={version.split('+')[0]}" for name, version in pins.items()]


def signature(network: LoadedNetwork) -> ModelSignature:
    """float32 (N, C, H, W) raw pixels in; class, confidence and M votes out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    fmt = network.input_format
    shape = (-1, fmt.in_channels, fmt.image_size, fmt.image_size)
    votes = [ColSpec("long", f"vote_{k}") for k in range(network.model.n_members)]
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), shape)]),
        outputs=Schema([ColSpec("long", "class"), ColSpec("double", "confidence"), *votes]),
    )


def log_network(
    client: MlflowClient, run_id: str, network: LoadedNetwork, example: Tensor
) -> ModelInfo:
    """Log `network` as a pyfunc model of run `run_id`, with a signature and input example."""
    example_pixels = example.float().cpu().numpy()  # (n, C, H, W) float32, raw pixels
    state_dict = {k: v.cpu() for k, v in network.model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp, fluent_tracking_uri(client.tracking_uri):
        artifacts = write_network(Path(tmp), network.config, network.input_format, state_dict)
        with mlflow.start_run(run_id=run_id):
            return mlflow.pyfunc.log_model(
                name=LOGGED_NAME,
                python_model=MixMoPyfunc(),
                artifacts=artifacts,
                code_paths=[str(Path(__file__).parent)],
                signature=signature(network),
                input_example=example_pixels,
                pip_requirements=requirements(),
            )


def register(
    client: MlflowClient, model_name: str, info: ModelInfo, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    """A new version of `model_name` (created when missing) for the logged model `info`."""
    if not tracking.registered_model(client, model_name):
        client.create_registered_model(
            model_name, description="MixMo networks promoted by `python -m mixmo_search.promote`"
        )
    # the SQL registry resolves a `models:/<model id>` source through the global tracking URI
    with fluent_tracking_uri(client.tracking_uri):
        return client.create_model_version(
            model_name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id
        )


def publish(
    client: MlflowClient,
    network: LoadedNetwork,
    example: Tensor,
    *,
    experiment_id: str,
    search: str,
    search_run_id: str,
    trial_id: str,
    trial_run_id: str,
    policy: str,
    chosen_by: str,
    min_acc: float | None,
    trial_metrics: dict[str, float],
    params: dict[str, str],
    measured: dict[str, float],
    model_name: str,
    alias: str,
) -> tuple[str, str]:
    """Every write of a promotion; returns the promotion run's id and the new version.

    In order: a child run of the search (`mixmo.kind=promotion`) with the trial's `params` and
    the `measured` test metrics, `network` logged in it as a pyfunc model, a new version of
    `model_name` tagged with its lineage and `trial_metrics`, and `alias` moved to it.
    """
    parent = client.get_run(search_run_id).data.tags
    run = client.create_run(
        experiment_id,
        run_name=f"promote-{trial_id}",
        tags={
            tracking.PARENT: search_run_id, tracking.KIND: PROMOTION,
            tracking.SEARCH: search, tracking.PROMOTED_TRIAL: trial_id,
            tracking.TRIAL_RUN_ID: trial_run_id, tracking.POLICY: policy,
        },
    )  # fmt: skip
    run_id = run.info.run_id
    tracking.log_params(client, run_id, params)
    tracking.log_metrics(client, run_id, measured, step=0)
    info = log_network(client, run_id, network, example)
    tags = {
        tracking.SEARCH: search,
        tracking.TRIAL_ID: trial_id,
        tracking.TRIAL_RUN_ID: trial_run_id,
        tracking.POLICY: policy,
        tracking.CHOSEN_BY: chosen_by,
        tracking.SPACE_DIGEST: parent.get(tracking.SPACE_DIGEST, "unknown"),
        tracking.CODE_REVISION: parent.get(tracking.CODE_REVISION, "unknown"),
        tracking.PROMOTE_CODE_REVISION: code_revision(),
        **({tracking.MIN_ACC: str(min_acc)} if min_acc is not None else {}),
        **{k: repr(v) for k, v in trial_metrics.items()},
        "promote/test/acc": repr(measured["test/acc"]),
    }
    version = register(client, model_name, info, run_id, tags)
    client.set_registered_model_alias(model_name, alias, version.version)
    return run_id, str(version.version)  # the SQL registry gives ints, other stores strings


MODEL_URI_FORMS = (
    "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH, or the local folder of a "
    "logged model"
)


def load_network(
    uri: str, *, tracking_uri: str | None = None, device: torch.device | str = "cpu"
) -> LoadedNetwork:
    """A promoted network by MLflow URI: `models:/NAME@ALIAS`, `models:/NAME/3`, `runs:/...`,
    or a logged model's local folder (path or file://). What it downloads is deleted once the
    network is in memory, and nothing is left behind when it fails."""
    local = _local_model_folder(uri)  # refuses the schemes it does not read
    if local is not None:
        return _read_model_folder(local, uri, device)
    tracking_uri = tracking_uri or tracking.default_tracking_uri()
    client = tracking.connect_existing(tracking_uri)
    tracking_auth.check_model_read(client, uri)
    with tempfile.TemporaryDirectory(prefix="mixmo-model-") as tmp:
        return _read_model_folder(_download(client, uri, tmp), uri, device)


def _local_model_folder(uri: str) -> Path | None:
    """The folder a local `uri` names; None for `models:/` and `runs:/`; else a TrackingError."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(uri)
    if parsed.scheme in ("models", "runs"):
        return None
    if not uri.strip():
        raise tracking.TrackingError(f"the model URI is empty; give {MODEL_URI_FORMS}")
    if parsed.scheme not in ("", "file"):
        raise tracking.TrackingError(
            f"cannot load model {uri!r}: {parsed.scheme}: URIs are not read here; give "
            f"{MODEL_URI_FORMS}"
        )
    folder = Path(url2pathname(parsed.path) if parsed.scheme else uri).expanduser()
    if not folder.is_dir():
        raise tracking.TrackingError(
            f"cannot load model {uri!r}: no such folder; give {MODEL_URI_FORMS}"
        )
    return folder


def _download(client: MlflowClient, uri: str, folder: str) -> Path:
    """The logged model `uri` downloaded into `folder`, or a TrackingError saying why not."""
    from mlflow.exceptions import MlflowException

    try:
        with fluent_tracking_uri(client.tracking_uri):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))
    except MlflowException as err:
        names = [m.name for m in client.search_registered_models()]
        reason = err.message.splitlines()[0]
        hint = f"registered models: {', '.join(names) or 'none'} (promote one with python -m "
        hint += "mixmo_search.promote, use models:/NAME@ALIAS or models:/NAME/VERSION)"
    except ImportError as err:  # artifacts in a cloud store whose client is not installed
        reason, hint = f"its artifacts need the `{err.name}` package", f"pip install {err.name}"
    except OSError as err:  # an artifact server that does not answer
        first_line = (str(err).splitlines() or [""])[0][:200]
        reason, hint = f"{type(err).__name__}: {first_line}", "check the artifact store"
    raise tracking.TrackingError(
        f"cannot load model {uri!r} from {client.tracking_uri!r}: {reason}; {hint}"
    )


def _read_model_folder(folder: Path, uri: str, device: torch.device | str) -> LoadedNetwork:
    network_json, weights = folder / "artifacts" / NETWORK, folder / "artifacts" / WEIGHTS
    if not network_json.is_file() or not weights.is_file():
        raise tracking.TrackingError(
            f"{uri!r} is not a network logged by mixmo_search.promote: it has no "
            f"artifacts/{NETWORK} and artifacts/{WEIGHTS}"
        )
    try:
        return read_network(network_json, weights, device)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError) as err:
        first_line = (str(err).splitlines() or [""])[0][:200]
        raise tracking.TrackingError(
            f"{uri!r}: its network files cannot be read ({type(err).__name__}: {first_line}); "
            "promote the trial again"
        ) from None
