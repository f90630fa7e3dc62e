"""Permissions on an MLflow server with a login (`mlflow server --app-name basic-auth`).

Every command that uses a server checks here, before it starts, that the user it signs in as
may do what it is about to do: `tune` writes its experiment's runs, `promote` writes the
registered model, `predict` and serving read it, the dashboard reads the experiment. A missing
permission is one line naming the user, the permission and the fix, instead of a 403 half-way
through. Stores without a login (SQLite, PostgreSQL, a server without the auth app) pass.

A read is what the user sees: the server hides what a user may not read. Whether it may
write an experiment or model that exists, the server says itself (`users/permissions/get`,
resolved as a request is). Whether it may *create* one is read from its grants, as MLflow's
auth app decides it: with workspaces on (infra/mlflow-server.sh turns them on), a
workspace-wide USE or MANAGE grant; always, no DENY on the type.

`ROLES` are the project's three roles as grants in the `default` workspace
(`infra/mlflow-users.py` makes them): readers read, searchers write runs, promoters make
registered models and move their aliases. The login itself comes from MLflow's client
settings (`MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` or `~/.mlflow/credentials`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mixmo_search import tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient

ROLE_PREFIX = "mixmo-"  # role names on the server: mixmo-reader, mixmo-searcher, ...
# (resource type, pattern, permission) grants of each role, `*` = every resource of the type
ROLES = {
    "reader": (("experiment", "*", "READ"), ("registered_model", "*", "READ")),
    # runs: MANAGE so that `--resume` may delete the runs of lost trials (restorable)
    "searcher": (("experiment", "*", "EDIT"), ("run", "*", "MANAGE")),
    "promoter": (
        ("workspace", "*", "USE"),  # creates the registered model of a search's first promotion
        ("experiment", "*", "EDIT"),  # the promotion run, with the logged model
        ("registered_model", "*", "EDIT"),
    ),
}
WRITES = ("EDIT", "MANAGE")
CREATES = ("USE", "MANAGE")  # workspace-wide grants that allow creating resources
CURRENT_USER = "/api/2.0/mlflow/users/current"
CURRENT_GRANTS = "/api/3.0/mlflow/users/current/permissions"
USER_PERMISSION = "/api/3.0/mlflow/users/permissions/get"
SERVER_INFO = "/api/3.0/mlflow/server-info"


class AuthError(tracking.TrackingError):
    """The server's login works, but its user may not do what the command is about to do."""


@dataclass(frozen=True)
class Login:
    """Who a server knows this process as."""

    uri: str
    username: str
    is_admin: bool


def login(uri: str) -> Login | None:
    """The server's view of this process's login; None for stores without a login."""
    if not uri.startswith(("http://", "https://")):
        return None
    user = _get(uri, CURRENT_USER)
    if user is None:  # no such route: the server runs without the auth app
        return None
    return Login(uri, user["user"]["username"], bool(user["user"]["is_admin"]))


def check_search(client: MlflowClient, experiment: str) -> None:
    """`tune`: the user may write runs in `experiment` (or create it when it is missing)."""
    who = login(client.tracking_uri)
    if who is None or who.is_admin:
        return
    found = _experiment(client, who, experiment, need="EDIT", role="searcher")
    if found is not None:
        _require(who, "experiment", found, f"experiment {experiment!r}", "write the runs of",
                 "searcher")  # fmt: skip
    elif not _may_create(who, "experiment", experiment):
        raise AuthError(
            f"{who.uri}: the experiment {experiment!r} does not exist and user "
            f"{who.username!r} may not create it (needs USE on workspace {_workspace()!r}); "
            f"an MLflow admin creates it with `python infra/mlflow-users.py --uri "
            f"{who.uri} experiment {experiment}`, or pass an existing --experiment"
        )


def check_promotion(client: MlflowClient, experiment_id: str, model_name: str) -> None:
    """`promote`: the user may log the promotion run in the search's experiment, and make a
    version of `model_name` and move its alias (or create the model when it is missing)."""
    who = login(client.tracking_uri)
    if who is None or who.is_admin:
        return
    model = f"registered model {model_name!r}"
    if _visible_model(client, model_name):
        _require(who, "registered_model", model_name, model, "write", "promoter")
    elif not _may_create(who, "registered_model", model_name):  # a first promotion makes it
        need = f"USE on workspace {_workspace()!r}"
        raise AuthError(_refusal(who, f"may not create {model} (needs {need})", "promoter"))
    name = client.get_experiment(experiment_id).name
    _require(who, "experiment", experiment_id, f"experiment {name!r}",
             "log a promotion run in", "promoter")  # fmt: skip


def check_model_read(client: MlflowClient, model_uri: str) -> None:
    """`predict` and serving: the user sees the registered model of `models:/NAME/...`."""
    who = login(client.tracking_uri)
    if who is None or who.is_admin or not model_uri.startswith("models:/"):
        return
    name = model_uri.removeprefix("models:/").split("/", 1)[0].split("@", 1)[0]
    if not _visible_model(client, name):  # a model it may not read is hidden from it
        raise AuthError(
            _refusal(
                who, f"sees no registered model {name!r}: it does not exist (promote a trial "
                "first), or the user may not read it (needs READ)", "reader",
            )
        )  # fmt: skip


def check_experiment_read(uri: str, experiment: str) -> None:
    """The dashboard: the user may read `experiment` (a missing one is the caller's news)."""
    if not uri.startswith(("http://", "https://")):
        return
    client = tracking.connect_existing(uri)  # a server that is down: one line, no long retries
    who = login(uri)
    if who is not None and not who.is_admin:
        _experiment(client, who, experiment, need="READ", role="reader")


def _experiment(
    client: MlflowClient, who: Login, name: str, *, need: str, role: str
) -> str | None:
    """The id of experiment `name` (which the user may then read), None when it is missing;
    an AuthError when the server refuses to show it."""
    try:
        found = client.get_experiment_by_name(name)
    except Exception as err:  # noqa: BLE001 - only a refusal is news here
        if tracking.http_status(err) != 403:
            raise
        problem = f"may not read experiment {name!r} (needs {need})"
        raise AuthError(_refusal(who, problem, role)) from None
    return None if found is None else found.experiment_id


def _visible_model(client: MlflowClient, name: str) -> bool:
    """Whether this user sees a registered model `name` (one it may not read is hidden)."""
    literal = tracking.quoted(name)
    return bool(literal and client.search_registered_models(f"name = {literal}"))


def _require(
    who: Login, resource_type: str, resource_id: str, what: str, action: str, role: str
) -> None:
    """EDIT or MANAGE on an existing resource. Never asked about a missing one: MLflow 3.17's
    `users/permissions/get` caches a missing resource's workspace as none for an hour
    (`workspace_cache_ttl_seconds`), and answers NO_PERMISSIONS once it exists."""
    has = _permission(who, resource_type, resource_id)
    if has not in WRITES:
        raise AuthError(_refusal(who, f"may not {action} {what} (needs EDIT, has {has})", role))


def _refusal(who: Login, problem: str, role: str) -> str:
    return (
        f"{who.uri}: user {who.username!r} {problem}; an MLflow admin gives it the {role} "
        f"role with `python infra/mlflow-users.py --uri {who.uri} user {who.username} "
        f"{role}`, or sign in as a user who has it (MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials)"
    )


def _permission(who: Login, resource_type: str, resource_id: str) -> str:
    """The user's permission on one resource, as the server resolves it for a request."""
    params = {"username": who.username, "resource_type": resource_type,
              "resource_id": resource_id}  # fmt: skip
    return (_get(who.uri, USER_PERMISSION, params) or {}).get("permission", "NO_PERMISSIONS")


def _may_create(who: Login, resource_type: str, name: str) -> bool:
    """Whether the user may create a `resource_type` named `name` (MLflow's create rule)."""
    workspace = _workspace()
    grants = (_get(who.uri, CURRENT_GRANTS) or {}).get("permissions", [])
    mine = [g for g in grants if g.get("workspace", workspace) == workspace]
    if any(g["resource_type"] == resource_type and g["resource_pattern"] in ("*", name)
           and g["permission"] == "DENY" for g in mine):  # fmt: skip
        return False
    if not (_get(who.uri, SERVER_INFO) or {}).get("workspaces_enabled"):
        return True  # without workspaces every user may create
    return any(g["resource_type"] == "workspace" and g["permission"] in CREATES for g in mine)


def _workspace() -> str:
    """The workspace requests go to: MLflow's MLFLOW_WORKSPACE, else the default one."""
    return os.environ.get("MLFLOW_WORKSPACE") or "default"


def _get(uri: str, endpoint: str, params: dict[str, str] | None = None) -> Any:
    """GET a JSON reply with this process's login; None when the server has no such route."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        reply = http_request(get_default_host_creds(uri), endpoint, "GET", params=params)
    except Exception as err:  # noqa: BLE001 - connection errors: the server does not answer
        raise tracking.TrackingError(
            f"cannot reach the MLflow store {uri!r} to check its permissions ("
            f"{type(err).__name__}); start the server, or pass another URI with --mlflow-uri"
        ) from None
    if reply.status_code == 404:
        return None
    if reply.status_code == 401:
        raise tracking.TrackingError(tracking.login_refused(uri))
    if reply.status_code != 200:
        raise tracking.TrackingError(
            f"the MLflow server {uri} answered HTTP {reply.status_code} to {endpoint}; check "
            "that it runs MLflow 3.17 with --app-name basic-auth (infra/mlflow-server.sh)"
        )
    return reply.json()
