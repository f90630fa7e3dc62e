#!/usr/bin/env bash
# Join a GPU machine to the search cluster, with the head's token (see infra/ray-head.sh):
#
#   RAY_HEAD=10.0.0.5:6379 RAY_NODE_IP=10.0.0.6 infra/ray-worker.sh
set -euo pipefail
: "${RAY_HEAD:?set RAY_HEAD=host:port of the head node}"
export RAY_AUTH_MODE=token
# trials run at this node's priority, not at Ray's nice 15 (starved beside any busy program)
export RAY_worker_niceness="${RAY_worker_niceness:-0}"
token_file="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
if [[ -z "${RAY_AUTH_TOKEN:-}" && ! -s "$token_file" ]]; then
    echo "ray-worker.sh: no Ray token at $token_file; copy the head's ~/.ray/auth_token here" >&2
    exit 2
fi
exec ray start --address "$RAY_HEAD" ${RAY_NODE_IP:+--node-ip-address "$RAY_NODE_IP"} \
    --num-gpus "${RAY_NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
