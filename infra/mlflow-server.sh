#!/usr/bin/env bash
# The shared MLflow tracking server of cluster searches: runs in PostgreSQL, artifacts proxied
# by the server (clients never need the bucket's or the folder's credentials).
#
#   export MLFLOW_BACKEND_STORE_URI=postgresql://mlflow@127.0.0.1:5432/mlflow
#   export PGPASSFILE=/etc/mixmo-search/pgpass          # 0600: 127.0.0.1:5432:mlflow:mlflow:PW
#   export MLFLOW_ARTIFACTS_DESTINATION=/mnt/shared/mlartifacts    # or s3://bucket/mlartifacts
#   infra/mlflow-server.sh
#
# Searches then pass --mlflow-uri http://HOST:5000. It binds 127.0.0.1 unless MLFLOW_HOST says
# otherwise: set MLFLOW_HOST to a private-network address only (no authentication is built in),
# and MLFLOW_SERVER_ALLOWED_HOSTS to the names clients use when they are not private IPs.
# Optional: MLFLOW_PORT (5000), MLFLOW_WORKERS (4). For S3-compatible storage the server (only)
# needs boto3 and the usual AWS_* variables (MLFLOW_S3_ENDPOINT_URL for MinIO and the like).
set -euo pipefail
backend="${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI=postgresql://ROLE@HOST:PORT/DB (infra/postgres-setup.sh makes the role and database)}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION to a shared folder or s3://bucket/prefix}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"

if [[ ! "$backend" =~ ^postgresql(\+psycopg2)?:// ]]; then
    echo "mlflow-server.sh: MLFLOW_BACKEND_STORE_URI must be postgresql://..., got ${backend%%://*}://..." \
        "(one machine needs no server: searches default to sqlite:///mlflow.db)" >&2
    exit 2
fi
if [[ "$backend" =~ ^[^/]*//[^/@]*:[^/@]*@ ]]; then
    echo "mlflow-server.sh: keep the password out of MLFLOW_BACKEND_STORE_URI (ps shows it);" \
        "put it in PGPASSFILE (or PGPASSWORD)" >&2
    exit 2
fi
if [[ "$artifacts" != *://* ]]; then
    mkdir -p "$artifacts"
    artifacts="$(cd "$artifacts" && pwd)"
fi

args=(--backend-store-uri "$backend" --serve-artifacts --artifacts-destination "$artifacts"
    --host "$host" --port "$port" --workers "${MLFLOW_WORKERS:-4}")
if [[ -n "${MLFLOW_SERVER_ALLOWED_HOSTS:-}" ]]; then
    args+=(--allowed-hosts "$MLFLOW_SERVER_ALLOWED_HOSTS")
fi
exec mlflow server "${args[@]}"
