"""The chaos soak's loopback cluster (`benchmarks/chaos.py --cluster`) and its two faults.

One cluster lives for the whole soak, as a real one would: a Ray head with no CPUs and two
1-CPU worker nodes on 127.0.0.1 with token authentication (`tests/cluster/ray_nodes.py`),
and an MLflow tracking server (`infra/mlflow-server.sh`, no login, on a free loopback port)
over a PostgreSQL from the operating system, both started by the cluster tests' own helpers
(`tests/cluster/conftest.py`). Every driver joins the cluster with `--address` and logs to
the server over HTTP.

    kill-node        SIGKILL of a worker node drawn at random, its raylet, agents and the
                     worker processes it started (a trial's among them) at once, as a dead
                     machine; a replacement node joins at once (an autoscaler's answer), so
                     the search goes on with two trials at a time
    restart-mlflow   SIGKILL or SIGTERM (drawn) of the tracking server, then the same server
                     started again on the same port after a drawn outage of 1-10 s (plus its
                     start-up): the driver buffers its writes meanwhile
                     (search/tracking_queue.py)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.conftest import (
    Postgres,
    RayCluster,
    free_port,
    postgres_missing,
    running_postgres,
    running_ray_cluster,
    start_mlflow_server,
    stop,
)

DATABASE, PASSWORD = "chaos", "chaos-soak-password"  # a throwaway PostgreSQL on the loopback
OUTAGE_S = (1.0, 10.0)  # the drawn time the tracking server stays down, before its start-up
SERVER_SIGNALS = (signal.SIGKILL, signal.SIGTERM)


@dataclass
class Loopback:
    """The running cluster: Ray nodes, the tracking server and its database."""

    ray: RayCluster
    postgres: Postgres
    server: subprocess.Popen
    port: int
    server_root: Path

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def driver_env(self) -> dict[str, str]:
        """A driver's environment: the cluster's token, loopback setting and Ray folder."""
        return self.ray.env()

    def kill_node(self, rng: random.Random) -> str:
        """SIGKILL a worker node drawn at random with its processes, then add a new one."""
        node = rng.choice(sorted(self.ray.workers))
        self.ray.kill(node)
        added = self.ray.add_worker()
        return f"SIGKILL to worker node {node[:8]}, node {added[:8]} added"

    def restart_mlflow(self, rng: random.Random) -> str:
        """Stop the tracking server by a drawn signal, wait a drawn outage, start it again on
        the same port; returns once it answers."""
        sig, outage = rng.choice(SERVER_SIGNALS), rng.uniform(*OUTAGE_S)
        os.killpg(self.server.pid, sig)
        try:
            self.server.wait(timeout=60)
        except subprocess.TimeoutExpired:  # SIGTERM's graceful stop hung: a dead machine now
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()
        down = time.monotonic()
        time.sleep(outage)
        self.server = self.start_server()
        return (
            f"{sig.name} to the MLflow server, down {time.monotonic() - down:.0f} s "
            f"(outage {outage:.1f} s + start-up)"
        )

    def start_server(self) -> subprocess.Popen:
        return start_mlflow_server(self.postgres, DATABASE, PASSWORD, self.server_root, self.port)


@contextmanager
def loopback(root: Path) -> Iterator[Loopback]:
    """The soak's cluster for as long as the `with` lasts; everything it started is ended
    after, even when the soak is cut short."""
    missing = postgres_missing()
    if missing:
        raise SystemExit(f"chaos.py --cluster: {missing}; install it: apt-get install -y "
                         "postgresql")  # fmt: skip
    with ExitStack() as stack:
        postgres = stack.enter_context(running_postgres())
        postgres.create_database(DATABASE, PASSWORD)
        server_root = root / "mlflow-server"
        server_root.mkdir(parents=True, exist_ok=True)
        ray = stack.enter_context(running_ray_cluster(workers=2))
        cluster = Loopback(ray, postgres, None, free_port(), server_root)  # type: ignore[arg-type]
        cluster.server = cluster.start_server()
        stack.callback(lambda: stop(cluster.server))
        yield cluster
