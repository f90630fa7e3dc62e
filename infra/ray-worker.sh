#!/usr/bin/env bash
# Join a GPU machine to the search cluster:  RAY_HEAD=10.0.0.5:6379 infra/ray-worker.sh
set -euo pipefail
: "${RAY_HEAD:?set RAY_HEAD=host:port of the head node}"
exec ray start --address "$RAY_HEAD" ${RAY_NODE_IP:+--node-ip-address "$RAY_NODE_IP"} \
    --num-gpus "${RAY_NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
