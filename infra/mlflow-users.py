"""Users and roles of the shared MLflow server (infra/mlflow-server.sh, its login on).

Run it as the MLflow admin, with the admin's login where MLflow's client reads it
(MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials), never on
the command line:

    python infra/mlflow-users.py --uri http://127.0.0.1:5000 user alice searcher    # prompts
    python infra/mlflow-users.py --uri URI user bob reader promoter < bob-password-file
    python infra/mlflow-users.py --uri URI experiment mixmo-search

`user NAME ROLE...` creates the user NAME when it is missing, with the password read from
stdin (its first line) or typed twice at the prompt (12 characters or more), then gives it
the roles, each made on first use from `mixmo_search.tracking_auth.ROLES`: `reader` (reads
experiments and registered models: the dashboard, predict, serving), `searcher` (writes runs:
tune), `promoter` (creates registered models and moves their aliases: promote). `experiment
NAME` creates an experiment, which searchers may write but not create.
"""

from __future__ import annotations

import getpass
import sys

from mixmo_search import tracking, tracking_auth
from mixmo_search.errors import Parser, UserError, exit_on_user_error

WORKSPACE = "default"  # infra/mlflow-server.sh's server has this one workspace


def admin_client(uri: str):
    """The auth app's client, checked to be signed in as an admin."""
    import warnings

    # the client imports MLflow's server modules, which import a deprecated starlette one
    warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
    from mlflow.server import get_app_client

    tracking.check_store(uri)
    who = tracking_auth.login(uri)
    if who is None:
        raise UserError(
            f"{uri} runs without a login (no MLflow auth app); start it with "
            "infra/mlflow-server.sh, whose authentication is on unless MLFLOW_AUTH=off"
        )
    if not who.is_admin:
        raise UserError(
            f"{uri}: user {who.username!r} is not an MLflow admin; sign in as the admin "
            "(MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials)"
        )
    return get_app_client("basic-auth", tracking_uri=uri)


def ensure_role(auth, role: str) -> int:
    """The id of the server's role for `role`, made (or completed) from ROLES."""
    name = tracking_auth.ROLE_PREFIX + role
    found = {r.name: r for r in auth.list_roles(WORKSPACE)}
    role_id = found[name].id if name in found else auth.create_role(WORKSPACE, name).id
    have = {(p.resource_type, p.resource_pattern, p.permission)
            for p in auth.list_role_permissions(role_id)}  # fmt: skip
    for grant in tracking_auth.ROLES[role]:
        if grant not in have:
            auth.add_role_permission(role_id, *grant)
    return role_id


def read_password(user: str) -> str:
    """The new user's password: stdin's first line, or typed twice at a prompt."""
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {user}: ")
        if getpass.getpass("again: ") != password:
            raise UserError("the two passwords differ; run the command again")
    if len(password) < 12:
        raise UserError(
            f"the password for {user!r} has {len(password)} characters; MLflow asks for 12 or "
            "more (e.g. from: openssl rand -hex 16)"
        )
    return password


def add_user(auth, user: str, roles: list[str]) -> None:
    from mlflow.exceptions import MlflowException

    unknown = [r for r in roles if r not in tracking_auth.ROLES]
    if unknown:
        raise UserError(
            f"unknown role {unknown[0]!r}; choose from: {', '.join(tracking_auth.ROLES)}"
        )
    try:
        auth.get_user(user)
        print(f"user {user} exists; its password is unchanged")
    except MlflowException:
        auth.create_user(user, read_password(user))
        print(f"created user {user}")
    held = {r.id for r in auth.list_user_roles(user)}
    for role in roles:
        role_id = ensure_role(auth, role)
        if role_id not in held:
            auth.assign_role(user, role_id)
        print(f"{user} has the {role} role ({tracking_auth.ROLE_PREFIX}{role})")


def add_experiment(uri: str, name: str) -> None:
    client = tracking.connect(uri)
    if client.get_experiment_by_name(name) is not None:
        print(f"experiment {name} exists")
        return
    print(f"created experiment {name} (id {tracking.experiment_id(client, name)})")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python infra/mlflow-users.py", description=__doc__.split("\n")[0])
    parser.add_argument("--uri", required=True, help="the server, e.g. http://127.0.0.1:5000")
    commands = parser.add_subparsers(dest="command", required=True)
    user = commands.add_parser("user", help="create a user (if missing) and give it roles")
    user.add_argument("name")
    user.add_argument("roles", nargs="+", metavar="ROLE", help=", ".join(tracking_auth.ROLES))
    experiment = commands.add_parser("experiment", help="create an experiment")
    experiment.add_argument("name")
    args = parser.parse_args(argv)
    auth = admin_client(args.uri)
    if args.command == "user":
        add_user(auth, args.name, args.roles)
    else:
        add_experiment(args.uri, args.name)


if __name__ == "__main__":
    main()
