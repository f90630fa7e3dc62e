"""A multi-node Ray cluster on this machine, for the cluster tests: run as a script.

    python tests/cluster/ray_nodes.py --workers 2 --worker-cpus 1

starts a head node (no CPUs: it runs the driver, never a trial) and worker nodes of
`--worker-cpus` CPUs each, every one a separate raylet with its own declared resources, on
127.0.0.1 only and with Ray's token authentication (the token comes in `RAY_AUTH_TOKEN`).
It prints one JSON line `{"address": ..., "head": NODE_ID, "workers": [NODE_ID, ...]}`, then
reads commands on stdin, answering each with a JSON line:

    add            start one more worker node      -> {"added": NODE_ID}
    kill NODE_ID   SIGKILL every process of a node -> {"killed": NODE_ID}
    quit           stop all nodes and exit

Why not `ray start`: a loopback-only cluster needs `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` in
every Ray process (else Ray swaps 127.0.0.1 for the machine's outward address and its GCS
listens on all interfaces), and with that setting `ray start --address` refuses to start a
worker node. `ray.cluster_utils.Cluster`, Ray's own multi-node test harness, starts the same
raylets without that check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

for name, value in {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}.items():
    if os.environ.get(name) != value:  # read by Ray at import: the caller must set them
        sys.exit(f"ray_nodes.py: set {name}={value} in the environment")
if not os.environ.get("RAY_AUTH_TOKEN"):
    sys.exit("ray_nodes.py: set RAY_AUTH_TOKEN")

import ray  # noqa: E402
from ray._private import ray_constants  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

NODE = {"node_ip_address": "127.0.0.1", "include_dashboard": False, "num_gpus": 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-cpus", type=int, default=1)
    parser.add_argument("--port", type=int, default=0, help="the head's GCS port (0: free)")
    args = parser.parse_args()

    cluster = Cluster(shutdown_at_exit=True)
    head = cluster.add_node(
        **NODE, num_cpus=0, resources={"head": 1}, gcs_server_port=args.port or None
    )

    def add_worker() -> ray._private.node.Node:
        return cluster.add_node(
            **NODE, num_cpus=args.worker_cpus, resources={"worker": args.worker_cpus}
        )

    workers = [add_worker() for _ in range(args.workers)]
    say({"address": cluster.address, "head": head.node_id,
         "workers": [w.node_id for w in workers]})  # fmt: skip
    try:
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "add":
                say({"added": add_worker().node_id})
            elif command == "kill":
                node = next(n for n in cluster.worker_nodes if n.node_id == arg)
                kill_node(cluster, node)
                say({"killed": arg})
            elif command == "quit":
                break
    finally:
        cluster.shutdown()


def kill_node(cluster: Cluster, node: ray._private.node.Node) -> None:
    """SIGKILL a node's raylet and agents and, as a dead machine would lose them, the
    worker processes the raylet started (a trial's among them) at the same moment."""
    import psutil

    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    workers = psutil.Process(raylet).children(recursive=True)
    for proc in workers:
        proc.kill()
    cluster.remove_node(node, allow_graceful=False)


def say(message: dict) -> None:
    print(json.dumps(message), flush=True)


if __name__ == "__main__":
    main()
