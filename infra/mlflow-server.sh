#!/usr/bin/env bash
# A shared MLflow tracking server for searches that run on a Ray cluster.
#
#   infra/mlflow-server.sh                      # 127.0.0.1:5000, SQLite + local artifacts
#   MLFLOW_HOST=0.0.0.0 MLFLOW_BACKEND=postgresql://mlflow:PW@db/mlflow \
#   MLFLOW_ARTIFACTS=/mnt/shared/mlartifacts infra/mlflow-server.sh
#
# It binds to 127.0.0.1 unless MLFLOW_HOST says otherwise: expose it on a private network
# (or behind an authenticating proxy) only. Searches then pass --mlflow-uri http://HOST:5000.
set -euo pipefail
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"
backend="${MLFLOW_BACKEND:-sqlite:///$PWD/mlflow-server.db}"
artifacts="${MLFLOW_ARTIFACTS:-$PWD/mlartifacts}"
exec mlflow server --host "$host" --port "$port" \
    --backend-store-uri "$backend" \
    --artifacts-destination "$artifacts" --serve-artifacts
