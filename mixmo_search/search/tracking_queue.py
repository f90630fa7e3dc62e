"""The driver's MLflow writes, in order, through an outage of the tracking server.

Every write the search makes to its trials' runs (create, params, metrics, tags, status,
artifacts) is an operation in one first-in-first-out queue that a background thread applies
in order, so Tune's callbacks never wait on the store and the search goes on while it is down.
When the store does not answer (refused, timed out, or a 5xx such as its database being
down), the thread keeps the operation at the head of the queue, says so in one line, retries
with backoff (1 s doubling to 30 s) and, once the store answers again, says so and writes the
backlog in its order. An error about the request itself (4xx) is printed and the operation
dropped: retrying cannot fix it.

Nothing is written twice: each operation can be retried after a lost answer. A metric point
keeps the timestamp it got when queued, and MLflow ignores a point it already holds; a
trial's run is looked up before it is created; params, tags, statuses and artifacts are
written with the same values to the same keys and paths.

`flush` waits for the queue to empty (the search calls `flush_all` before it reads its own
results); writes still queued when the driver dies are lost with it.

What the search does with the store once Tune has stopped (read its trials back, end the
stopped ones, log its summary, close its run) goes through `Patient`, a client whose calls
wait out an outage the same way, so a server restarted as a search ends costs a wait, not
the driver (found by the chaos soak, `benchmarks/chaos.py --cluster`).
"""

from __future__ import annotations

import collections
import functools
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mixmo_search import tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0  # a long outage is retried twice a minute
FLUSH_TIMEOUT_S = 30 * 60.0  # how long the end of a search waits for a store that is down

Operation = Callable[["MlflowClient"], None]
T = TypeVar("T")
_OPEN: weakref.WeakSet[TrackingQueue] = weakref.WeakSet()


class TrackingQueue:
    """The queue and its writer thread (see the module docstring)."""

    def __init__(self, client: MlflowClient, *, uri: str) -> None:
        self.client, self.uri = client, uri
        self._ops: collections.deque[tuple[str, Operation]] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False  # an operation taken off the queue is being written
        self._closed = False
        self.outages = 0  # times the store stopped answering (tests and the summary read it)
        self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)
        self._thread.start()
        _OPEN.add(self)

    def submit(self, what: str, op: Operation) -> None:
        """Queue `op(client)`; `what` names it in messages (e.g. "metrics of trial abc")."""
        with self._cond:
            self._ops.append((what, op))
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._ops) + self._busy

    def flush(self, timeout: float = FLUSH_TIMEOUT_S) -> bool:
        """Wait until every queued operation is written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._ops or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 1.0))
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        _OPEN.discard(self)

    def _run(self) -> None:
        down_since: float | None = None
        delay = FIRST_RETRY_S
        while True:
            with self._cond:
                while not self._ops and not self._closed:
                    self._cond.wait()
                if not self._ops:
                    return
                what, op = self._ops[0]
                self._busy = True
            try:
                op(self.client)
            except Exception as err:  # noqa: BLE001 - sorted into retry or drop below
                if not transient(err):
                    say(f"MLflow refused the {what} ({_first_line(err)}); skipped it")
                    self._done()
                    continue
                if down_since is None:
                    down_since, delay = time.monotonic(), FIRST_RETRY_S
                    self.outages += 1
                    say(
                        f"MLflow store {self.uri} unreachable ({_first_line(err)}); "
                        f"buffering trial updates and retrying"
                    )
                with self._cond:
                    self._busy = False
                    if self._cond.wait_for(lambda: self._closed, timeout=delay):
                        return
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            if down_since is not None:
                say(
                    f"MLflow store {self.uri} is back after {time.monotonic() - down_since:.0f} "
                    f"s; writing {self.pending()} buffered updates in order"
                )
                down_since = None
            self._done()

    def _done(self) -> None:
        with self._cond:
            self._ops.popleft()
            self._busy = False
            self._cond.notify_all()


def flush_all(timeout: float = FLUSH_TIMEOUT_S) -> None:
    """Flush every open queue of this process; a store that stays down is a TrackingError."""
    for queue in list(_OPEN):
        if not queue.flush(timeout):
            raise tracking.TrackingError(
                f"the MLflow store {queue.uri} did not answer for {timeout / 60:.0f} min; "
                f"{queue.pending()} trial updates were not written. The trials themselves are "
                "safe in --storage: start the server and resume the search with --resume"
            )
        queue.close()


class Patient:
    """`client` whose every call waits out an outage of the store (`when_answering`). Only
    for calls that are safe to repeat after a lost answer: reads, tags, statuses, run names,
    text artifacts, metric batches timestamped before the first try (not `create_run`)."""

    def __init__(self, client: MlflowClient, *, uri: str, doing: str) -> None:
        self._client, self._uri, self._doing = client, uri, doing

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._client, name)
        if not callable(found):
            return found
        return functools.partial(when_answering, self._uri, self._doing, found)


def when_answering(
    uri: str, doing: str, call: Callable[..., T], *args: Any, timeout: float = FLUSH_TIMEOUT_S,
    **kwargs: Any,
) -> T:  # fmt: skip
    """`call(*args, **kwargs)`, called again with the queue's backoff while the store `uri`
    does not answer, saying so once when it stops and once when it is back (`doing`: what
    waits, e.g. "end the search"); any other error is raised at once. A store down for
    `timeout` s is a TrackingError."""
    deadline = time.monotonic() + timeout
    down_since: float | None = None
    delay = FIRST_RETRY_S
    while True:
        try:
            result = call(*args, **kwargs)
        except Exception as err:
            if not transient(err):
                raise
            if down_since is None:
                down_since = time.monotonic()
                say(f"MLflow store {uri} unreachable ({_first_line(err)}); waiting for it to "
                    f"{doing}")  # fmt: skip
            left = deadline - time.monotonic()
            if left <= 0:
                raise tracking.TrackingError(
                    f"the MLflow store {uri} did not answer for {_duration(timeout)}, so the "
                    f"search could not {doing}. The trials themselves are safe in --storage: "
                    "start the server and resume the search with --resume"
                ) from None
            time.sleep(min(delay, left))
            delay = min(delay * 2, MAX_RETRY_S)
            continue
        if down_since is not None:
            say(f"MLflow store {uri} is back after {time.monotonic() - down_since:.0f} s")
        return result


def transient(err: BaseException) -> bool:
    """Whether retrying can help: the store did not answer, or answered with a 5xx."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.get_http_status_code() >= 500
    return isinstance(err, OSError | TimeoutError)


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _first_line(err: BaseException) -> str:
    """A short reason: MLflow's own messages quote the whole failed request."""
    import re

    text = str(err).strip()
    for pattern, reason in (
        (r"Connection refused", "connection refused"),
        (r"[Tt]imed? ?out", "timed out"),
        (r"error code (\d+)", r"HTTP \1"),
        (r"Max retries exceeded|Connection aborted|RemoteDisconnected", "no answer"),
    ):
        found = re.search(pattern, text)
        if found:
            return found.expand(reason)
    return (text.splitlines()[0] if text else type(err).__name__)[:160]
