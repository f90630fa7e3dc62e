#!/usr/bin/env bash
# Start the Ray head node of a search cluster (run on the head machine).
#
#   RAY_NODE_IP=10.0.0.5 infra/ray-head.sh
#
# Every node needs the same Python environment: `pip install -e .` of this repository (same
# commit) and, for CIFAR, the data under the same `data.root` path or a shared mount.
# Without RAY_NODE_IP it binds to 127.0.0.1, a one-machine "cluster" for trying things out.
set -euo pipefail
ip="${RAY_NODE_IP:-127.0.0.1}"
exec ray start --head --node-ip-address "$ip" --port "${RAY_PORT:-6379}" \
    --include-dashboard false --num-gpus "${RAY_NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
