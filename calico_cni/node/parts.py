"""The daemon's parts: each a loop on a thread of its own, restarted with back-off when it fails,
and reported (alive, ready, restarts, last error, last good pass) to the health answer the probes
read. A failing part never takes the others, or the plugins' socket, down.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, Protocol

log = logging.getLogger(__name__)

# Back-off between restarts of a failed part: doubling from FIRST_BACKOFF up to MAX_BACKOFF, back
# to the start once the part has run STABLE seconds without failing.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STABLE = 60.0
# How soon a loop waiting for the cache sees that calico-node stops: the cache's wait knows nothing
# of `stop`, and a loop waiting out its whole period held a restart back up to 5 s.
STOP_POLL = 0.1


class PartHealth:
    """What one part reports: set by the part itself (`ok`, `not_ready`) and by its runner."""

    def __init__(self, period: float | None = None) -> None:
        """`period`: how often the part has a good pass when all is well (None: only when
        something happens, e.g. a watch), so a liveness check knows what age is stale."""
        self._lock = threading.Lock()
        self.period = period
        self.alive = False
        self.ready = False
        self.restarts = 0
        self.last_error: str | None = None
        self.last_ok: float | None = None
        self.detail: str | None = None

    def ok(self, detail: str | None = None) -> None:
        """A pass of the part succeeded: it is ready, and live as of now."""
        with self._lock:
            self.ready, self.last_ok, self.detail = True, time.time(), detail

    def not_ready(self, why: str) -> None:
        """The part runs but cannot do its job yet (waiting for the first sync, BIRD refused a
        configuration, ...): it stays alive, and `why` is reported."""
        with self._lock:
            self.ready, self.detail = False, why

    def failed(self, error: str) -> None:
        """The part's loop raised `error`: it is not ready and is being restarted (`error` is
        also the detail: the last good pass's detail no longer describes the part)."""
        with self._lock:
            self.last_error, self.detail, self.ready = error, error, False
            self.restarts += 1

    def as_dict(self) -> dict:
        """The part's state, as the health answer carries it."""
        with self._lock:
            return {
                "alive": self.alive,
                "ready": self.ready,
                "restarts": self.restarts,
                "last_error": self.last_error,
                "last_ok": self.last_ok,
                "detail": self.detail,
                "period": self.period,
            }


# A part's loop: runs until `stop` is set, reporting through its health; an exception restarts it.
PartLoop = Callable[[threading.Event, PartHealth], None]


class ProblemLog:
    """The problems a controller's passes find, each logged once while it lasts and its end logged
    too (a pass every few seconds must not flood the log with the same line)."""

    def __init__(self, logger: logging.Logger, part: str, level: int = logging.ERROR) -> None:
        self.logger = logger
        self.part = part
        self.level = level
        self.current: frozenset[str] = frozenset()

    def report(self, problems: Iterable[str]) -> None:
        """This pass's problems: the new ones logged (at `level`), the ones gone as resolved."""
        current = frozenset(problems)
        for problem in sorted(current - self.current):
            self.logger.log(self.level, "%s: %s", self.part, problem)
        for problem in sorted(self.current - current):
            self.logger.info("%s: resolved: %s", self.part, problem)
        self.current = current


class CacheView(Protocol):
    """What a controller's loop needs of the daemon's cache (`node.syncer.Cache`)."""

    def snapshot(self) -> Any:
        """The current snapshot (with `synced` and `version`)."""

    def wait(self, version: int, timeout: float | None) -> int:
        """Block until the version differs from `version` or `timeout` passes."""


def reconcile_passes(cache: CacheView, stop: threading.Event, health: PartHealth, period: float, one_pass: Callable[[Any], tuple[bool, str]]) -> None:
    """A controller's loop: nothing before the first full list of the datastore is in the cache
    (design rule 27), then `one_pass(snapshot)` on every change of the cache and at least every
    `period` seconds (repairing drift); each pass says (ready, detail) for the part's health."""
    while not stop.is_set():
        snapshot = cache.snapshot()
        if not snapshot.synced:
            health.not_ready("waiting for the first full list of the datastore")
            wait_for_change(cache, snapshot.version, 1.0, stop)
            continue
        ready, detail = one_pass(snapshot)
        if ready:
            health.ok(detail)
        else:
            health.not_ready(detail)
        wait_for_change(cache, snapshot.version, period, stop)


def wait_for_change(cache: CacheView, version: int, timeout: float, stop: threading.Event) -> None:
    """Wait until the cache's version differs from `version`, `timeout` seconds pass, or `stop` is
    set (seen within STOP_POLL)."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0 or cache.wait(version, min(left, STOP_POLL)) != version:
            return


class Part:
    """One supervised loop."""

    def __init__(self, name: str, loop: PartLoop, period: float | None = None) -> None:
        """`loop` supervised under `name`; `period` as `PartHealth`'s."""
        self.name = name
        self.loop = loop
        self.health = PartHealth(period)
        self._thread: threading.Thread | None = None

    def start(self, stop: threading.Event) -> None:
        """Run the loop on its own thread until `stop` is set."""
        self._thread = threading.Thread(target=self._supervise, args=(stop,), name=f"part-{self.name}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the part's thread to end (after `stop` was set)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _supervise(self, stop: threading.Event) -> None:
        """Run the loop until `stop` is set, restarting it after each failure (see the back-off
        above). The part is alive exactly while this runs, however it ends."""
        backoff = FIRST_BACKOFF
        self.health.alive = True
        try:
            while not stop.is_set():
                started = time.monotonic()
                exc_info = False
                try:
                    self.loop(stop, self.health)
                    problem = None if stop.is_set() else "the loop returned without being stopped"
                except Exception as exc:  # noqa: BLE001 - a failing part is restarted, never ends the daemon
                    problem, exc_info = f"{type(exc).__name__}: {exc}", True
                if problem is None:
                    break
                if time.monotonic() - started > STABLE:
                    backoff = FIRST_BACKOFF
                log.error("part %s failed (%s); restarting it in %.1fs", self.name, problem, backoff, exc_info=exc_info)
                self.health.failed(problem)
                if stop.wait(backoff):
                    break
                backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            self.health.alive = False
            if not stop.is_set():
                log.error("part %s ended and is not restarted: calico-node must be restarted", self.name)


class Parts:
    """Every part of the daemon, started and stopped together."""

    def __init__(self, parts: list[Part], stop: threading.Event | None = None) -> None:
        """`parts`, stopped when `stop` (default: an event of their own) is set."""
        self.parts = parts
        self.stop_event = stop or threading.Event()

    def start(self) -> None:
        """Start every part."""
        for part in self.parts:
            part.start(self.stop_event)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every part to stop and wait for them (at most `timeout` seconds in all)."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for part in self.parts:
            part.join(max(deadline - time.monotonic(), 0))

    def status(self) -> dict:
        """{part name: its health}, for the health answer."""
        return {part.name: part.health.as_dict() for part in self.parts}
