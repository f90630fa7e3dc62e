"""Where a search's trials run: a private Ray on this machine, or a cluster it joins.

A local search starts its own Ray bound to the loopback interface, with Ray's token
authentication on and no dashboard: nothing it opens is reachable from another host, and a
process on this host without the token (kept by Ray in `~/.ray/auth_token`) is refused. Ray
would write that file readable by every user of the machine (0644); `private_token` writes it
first, owner-only (0600), and tightens one found looser. When the search ends, its Ray session
folder (logs, sockets, spilled objects: megabytes a search) is removed (`remove_session`).
Joining a cluster (`--address`) uses that cluster's own token the way Ray looks it up
(`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`, then `~/.ray/auth_token`), and leaves the
cluster's files alone.

`check_address` runs while the search is planned, before anything is written: a cluster that
does not answer, or a `ray://` address without Ray Client installed, is one clear error
instead of a hang or a traceback after the search's first writes.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from mixmo_search.errors import UserError

# Read by Ray when it is imported, so `use_local_ray_env` must run before `import ray`.
LOCAL_RAY_ENV = {
    "RAY_AUTH_MODE": "token",  # every Ray API and internal RPC carries the token
    # On Linux Ray swaps 127.0.0.1 for the machine's outward address so that other nodes can
    # join; a local search has no other nodes, so its processes stay on the loopback.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}
# Ray starts its workers at nice 15, below every ordinary process: beside any other busy
# program a trial then gets a few percent of a core (measured: 3 %, two busy processes on two
# cores). The trials are the search's work: they run at the driver's priority, so `nice python
# -m mixmo_search.tune ...` makes the whole search polite. A RAY_worker_niceness set is kept.
WORKER_NICENESS = ("RAY_worker_niceness", "0")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
CONNECT_TIMEOUT_S = 5.0
CURRENT_CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")  # written by `ray start --head`


class ClusterError(UserError):
    """A Ray cluster that cannot be joined as asked."""


def use_local_ray_env() -> None:
    """Make this process (and the Ray it starts) use loopback and token authentication."""
    if os.environ.get("RAY_AUTH_MODE", "token") != "token":
        print(
            f"note: ignoring RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}: a local search "
            "always runs Ray with token authentication"
        )
    os.environ.update(LOCAL_RAY_ENV)
    os.environ.setdefault(*WORKER_NICENESS)


def use_cluster_env(address: str) -> None:
    """Make this process join the cluster at `address` with token authentication, and keep a
    loopback address on the loopback (Ray would swap 127.0.0.1 for this machine's outward
    address, where a cluster bound to the loopback does not answer). Before `import ray`."""
    if os.environ.get("RAY_AUTH_MODE", "token") != "token":
        print(
            f"note: ignoring RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}: searches join Ray "
            "clusters with token authentication"
        )
    os.environ["RAY_AUTH_MODE"] = "token"
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    if host in LOOPBACK:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def check_address(address: str, *, reachable: bool = True) -> str:
    """The `host:port` of the cluster `address` names, checked to accept connections unless
    `reachable` is False (a dry run plans a cluster search from anywhere).

    `auto` means `$RAY_ADDRESS`, else the cluster `ray start --head` last started here.
    """
    if address.startswith("ray://"):
        import importlib.util

        if importlib.util.find_spec("grpc") is None:
            raise ClusterError(
                f"--address {address} uses Ray Client, which needs "
                "`pip install 'ray[client]==2.60.0'`; or run the search on the cluster's head "
                "node with --address auto"
            )
        target = address.removeprefix("ray://")
    elif address == "auto":
        target = os.environ.get("RAY_ADDRESS") or (_current_cluster() if reachable else "auto")
        if target == "auto":
            return address
    else:
        target = address
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(
            f"--address {address!r} must be HOST:PORT (the head's GCS port, 6379 by default), "
            "ray://HOST:PORT or auto"
        )
    host = host.strip("[]")
    if not reachable:
        return f"{host}:{port}"
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise ClusterError(
            f"no Ray cluster answers at {host}:{port} (--address {address}): "
            f"{err.strerror or err} within {CONNECT_TIMEOUT_S:g} s; start it with "
            "`ray start --head` (see infra/README.md), or drop --address for a local search"
        ) from None
    return f"{host}:{port}"


def _current_cluster() -> str:
    try:
        return CURRENT_CLUSTER_FILE.read_text().strip()
    except OSError:
        raise ClusterError(
            "--address auto found no running Ray cluster on this machine (no $RAY_ADDRESS, no "
            f"{CURRENT_CLUSTER_FILE}); start one with `ray start --head`, pass HOST:PORT, "
            "or drop --address for a local search"
        ) from None


def private_token() -> Path | None:
    """The token file a local Ray uses, made owner-only (see the module docstring); None when
    the token comes in `RAY_AUTH_TOKEN` (no file)."""
    import secrets

    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    path = path.expanduser()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return path
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32))  # as Ray makes its own: 256 random bits
    return path


def start_local(*, cpus: float, gpus: float) -> Path:
    """Start a private Ray with `cpus` and `gpus` (logical: Ray schedules by them); returns
    its session folder."""
    import math

    import ray

    private_token()
    context = ray.init(
        num_cpus=int(cpus),
        num_gpus=math.ceil(gpus),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
        log_to_driver=False,  # trials' own output stays in Ray's session logs
    )
    host = ray.get_runtime_context().gcs_address.rpartition(":")[0].strip("[]")
    if host not in LOOPBACK:  # Ray was imported before use_local_ray_env: refuse, not expose
        ray.shutdown()
        raise RuntimeError(
            f"the local Ray listens on {host}, not the loopback; call "
            "mixmo_search.search.cluster.use_local_ray_env() before importing ray"
        )
    return Path(context.address_info["session_dir"])


def remove_session(session: Path | None) -> None:
    """Remove a local Ray's session folder once Ray is shut down (and its `session_latest`
    link, if it points there)."""
    import shutil

    if session is None:
        return
    shutil.rmtree(session, ignore_errors=True)
    latest = session.parent / "session_latest"
    if latest.is_symlink() and Path(os.readlink(latest)) == session:
        latest.unlink(missing_ok=True)


def join(address: str) -> None:
    """Connect to the running cluster at `address` (already checked by `check_address`)."""
    import ray
    from ray.exceptions import AuthenticationError

    try:
        # as a local search: the trials' own output stays in the cluster's session logs
        ray.init(address=address, configure_logging=False, log_to_driver=False)
    except AuthenticationError as err:
        raise ClusterError(
            f"the Ray cluster at {address} refused this driver's token ({err}); set "
            "RAY_AUTH_TOKEN_PATH to the cluster's token file (`ray get-auth-token` on the head "
            "prints it) and RAY_AUTH_MODE=token"
        ) from None
