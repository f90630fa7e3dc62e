#!/usr/bin/env bash
# The shared MLflow tracking server of cluster searches: runs in PostgreSQL, artifacts proxied
# by the server (clients never need the bucket's or the folder's credentials), and a login:
# MLflow's authentication app (`--app-name basic-auth`), its users and permissions in the same
# PostgreSQL database.
#
#   export MLFLOW_BACKEND_STORE_URI=postgresql://mlflow@127.0.0.1:5432/mlflow
#   export PGPASSFILE=/etc/mixmo-search/pgpass          # 0600: 127.0.0.1:5432:mlflow:mlflow:PW
#   export MLFLOW_ARTIFACTS_DESTINATION=/mnt/shared/mlartifacts    # or s3://bucket/mlartifacts
#   export MLFLOW_AUTH_ADMIN_PASSWORD_FILE=/etc/mixmo-search/mlflow-admin   # 0600, 12+ chars
#   infra/mlflow-server.sh
#
# Searches then pass --mlflow-uri http://HOST:5000, signed in as a user that
# infra/mlflow-users.py made (infra/README.md). The admin user (MLFLOW_AUTH_ADMIN_USERNAME,
# default admin) is made on the first start with the password in MLFLOW_AUTH_ADMIN_PASSWORD_FILE
# (or MLFLOW_AUTH_ADMIN_PASSWORD); the script writes it into the auth config file
# (MLFLOW_AUTH_CONFIG_PATH, default ~/.config/mixmo-search/mlflow-auth.ini, mode 0600), never on
# a command line. Optional: MLFLOW_AUTH_DATABASE_URI (the users' database; default the backend's),
# MLFLOW_FLASK_SERVER_SECRET_KEY (CSRF key of the sign-up form; default a new one each start).
#
# It binds 127.0.0.1 unless MLFLOW_HOST says otherwise (a private-network address), with
# MLFLOW_SERVER_ALLOWED_HOSTS for the names clients use when they are not private IPs.
# MLFLOW_AUTH=off starts it without a login, on the loopback only (one user, one machine).
# Optional: MLFLOW_PORT (5000), MLFLOW_WORKERS (4). For S3-compatible storage the server (only)
# needs boto3 and the usual AWS_* variables (MLFLOW_S3_ENDPOINT_URL for MinIO and the like).
set -euo pipefail
backend="${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI=postgresql://ROLE@HOST:PORT/DB (infra/postgres-setup.sh makes the role and database)}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION to a shared folder or s3://bucket/prefix}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"
auth="${MLFLOW_AUTH:-basic}"

fail() {
    echo "mlflow-server.sh: $*" >&2
    exit 2
}

check_database_uri() { # NAME URI: PostgreSQL, with its password out of the URI
    if [[ ! "$2" =~ ^postgresql(\+psycopg2?)?:// ]]; then
        fail "$1 must be postgresql://..., got ${2%%://*}://..." \
            "(one machine needs no server: searches default to sqlite:///mlflow.db)"
    fi
    if [[ "$2" =~ ^[^/]*//[^/@]*:[^/@]*@ ]]; then
        fail "keep the password out of $1 (ps shows it); put it in PGPASSFILE (or PGPASSWORD)"
    fi
}

admin_password() { # the admin's password, from its file or the environment (not a flag)
    local password
    if [[ -n "${MLFLOW_AUTH_ADMIN_PASSWORD_FILE:-}" ]]; then
        [[ -r "$MLFLOW_AUTH_ADMIN_PASSWORD_FILE" ]] ||
            fail "cannot read MLFLOW_AUTH_ADMIN_PASSWORD_FILE=$MLFLOW_AUTH_ADMIN_PASSWORD_FILE"
        IFS= read -r password <"$MLFLOW_AUTH_ADMIN_PASSWORD_FILE" || true
    else
        password="${MLFLOW_AUTH_ADMIN_PASSWORD:-}"
    fi
    if ((${#password} < 12)); then
        fail "the MLflow admin password must be 12 characters or more; put it in a 0600 file" \
            "named by MLFLOW_AUTH_ADMIN_PASSWORD_FILE (e.g. openssl rand -hex 16 > FILE)," \
            "or MLFLOW_AUTH=off for a server without a login on 127.0.0.1"
    fi
    printf '%s' "$password"
}

write_auth_config() { # FILE ADMIN PASSWORD DATABASE_URI, mode 0600 (builtins only: no ps)
    mkdir -p "$(dirname "$1")"
    (
        umask 077
        {
            echo "[mlflow]"
            echo "default_permission = NO_PERMISSIONS" # nothing without a role
            echo "database_uri = $4"
            echo "admin_username = $2"
            echo "admin_password = ${3//%/%%}" # configparser reads %% as %
            echo "authorization_function = mlflow.server.auth:authenticate_request_basic_auth"
        } >"$1"
    )
    chmod 600 "$1"
}

# every check first: nothing is written or started until they all pass
check_database_uri MLFLOW_BACKEND_STORE_URI "$backend"
case "$auth" in
basic)
    users_db="${MLFLOW_AUTH_DATABASE_URI:-$backend}"
    check_database_uri MLFLOW_AUTH_DATABASE_URI "$users_db"
    password="$(admin_password)"
    ;;
off)
    if [[ ! "$host" =~ ^(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost|::1)$ ]]; then
        fail "MLFLOW_AUTH=off serves without a login: only on 127.0.0.1, not MLFLOW_HOST=$host" \
            "(drop MLFLOW_AUTH=off to serve the network with MLflow's login)"
    fi
    ;;
*) fail "MLFLOW_AUTH must be basic (the default: MLflow's login) or off, got $auth" ;;
esac

if [[ "$artifacts" != *://* ]]; then
    mkdir -p "$artifacts"
    artifacts="$(cd "$artifacts" && pwd)"
fi
args=(--backend-store-uri "$backend" --serve-artifacts --artifacts-destination "$artifacts"
    --host "$host" --port "$port" --workers "${MLFLOW_WORKERS:-4}")
if [[ -n "${MLFLOW_SERVER_ALLOWED_HOSTS:-}" ]]; then
    args+=(--allowed-hosts "$MLFLOW_SERVER_ALLOWED_HOSTS")
fi
if [[ "$auth" == basic ]]; then
    config="${MLFLOW_AUTH_CONFIG_PATH:-${XDG_CONFIG_HOME:-$HOME/.config}/mixmo-search/mlflow-auth.ini}"
    write_auth_config "$config" "${MLFLOW_AUTH_ADMIN_USERNAME:-admin}" "$password" "$users_db"
    unset password MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_AUTH_ADMIN_USERNAME # the file holds them
    export MLFLOW_AUTH_CONFIG_PATH="$config"
    if [[ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]]; then
        MLFLOW_FLASK_SERVER_SECRET_KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
        export MLFLOW_FLASK_SERVER_SECRET_KEY
    fi
    # workspaces on: creating experiments or registered models needs a workspace-wide grant,
    # so only promoters (and admins) make the models whose aliases `predict` loads
    args+=(--app-name basic-auth --enable-workspaces)
fi
exec mlflow server "${args[@]}"
