#!/usr/bin/env bash
# Start the Ray head of a search cluster on this machine, with token authentication.
#
#   ray get-auth-token --generate          # once: writes ~/.ray/auth_token (keep it secret)
#   RAY_NODE_IP=10.0.0.5 infra/ray-head.sh
#
# Every node and the search driver need the same token: copy ~/.ray/auth_token to each worker
# (same path, mode 0600) or point RAY_AUTH_TOKEN_PATH at it. Every node also needs the same
# Python environment: this repository installed at the same commit (infra/README.md).
# Without RAY_NODE_IP it binds to 127.0.0.1: a one-machine head for trying things out, which
# a driver on this machine joins (--address 127.0.0.1:6379) and no other node can.
# Ray's ports must be reachable from the workers only: keep them on a private network.
set -euo pipefail
export RAY_AUTH_MODE=token
# trials run at this node's priority, not at Ray's nice 15 (starved beside any busy program)
export RAY_worker_niceness="${RAY_worker_niceness:-0}"
token_file="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
if [[ -z "${RAY_AUTH_TOKEN:-}" && ! -s "$token_file" ]]; then
    echo "ray-head.sh: no Ray token at $token_file; run 'ray get-auth-token --generate' first" >&2
    exit 2
fi
ip="${RAY_NODE_IP:-127.0.0.1}"
if [[ "$ip" == 127.0.0.1 || "$ip" == ::1 || "$ip" == localhost ]]; then
    # else Ray swaps the loopback for this machine's outward address and listens on all
    # interfaces; drivers joining 127.0.0.1 set the same (mixmo_search does it for them)
    export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
fi
exec ray start --head --node-ip-address "$ip" --port "${RAY_PORT:-6379}" \
    --include-dashboard false --num-gpus "${RAY_NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
