"""calico-node's parts: a failing part is restarted with back-off and reported; the others go on."""

from __future__ import annotations

import threading
import time

import pytest

from calico_cni.node import parts as parts_module
from calico_cni.node.parts import Part, PartHealth, Parts


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(parts_module, "FIRST_BACKOFF", 0.01)
    monkeypatch.setattr(parts_module, "MAX_BACKOFF", 0.05)


def wait(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_failing_part_is_restarted_and_reported_while_the_others_run():
    runs = []
    healthy = threading.Event()

    def failing(stop: threading.Event, health: PartHealth) -> None:
        runs.append(time.monotonic())
        if len(runs) < 3:
            raise RuntimeError(f"boom {len(runs)}")
        health.ok("third time lucky")
        stop.wait()

    def steady(stop: threading.Event, health: PartHealth) -> None:
        health.ok()
        healthy.set()
        stop.wait()

    parts = Parts([Part("flaky", failing), Part("steady", steady)])
    parts.start()
    try:
        wait(lambda: parts.status()["flaky"]["ready"])
        status = parts.status()
        assert status["flaky"]["restarts"] == 2
        assert status["flaky"]["last_error"] == "RuntimeError: boom 2"
        assert status["flaky"]["alive"] and status["flaky"]["detail"] == "third time lucky"
        assert status["steady"] == {**status["steady"], "alive": True, "ready": True, "restarts": 0, "last_error": None}
        assert healthy.is_set()
    finally:
        parts.stop(5)
    assert not any(p["alive"] for p in parts.status().values())


def test_a_part_that_returns_unasked_is_restarted_and_the_back_off_grows():
    runs = []

    def returns(stop: threading.Event, health: PartHealth) -> None:
        runs.append(time.monotonic())

    parts = Parts([Part("quitter", returns)])
    parts.start()
    try:
        wait(lambda: len(runs) >= 4)
    finally:
        parts.stop(5)
    status = parts.status()["quitter"]
    assert status["restarts"] >= 3 and status["last_error"] == "the loop returned without being stopped"
    gaps = [b - a for a, b in zip(runs, runs[1:])]
    assert gaps[2] >= gaps[0], gaps  # doubling from 0.01 s, capped at 0.05 s


def test_not_ready_keeps_the_part_alive_with_its_reason():
    health = PartHealth()
    health.ok()
    health.not_ready("waiting for the first full list of the datastore")
    state = health.as_dict()
    assert state["ready"] is False and state["detail"] == "waiting for the first full list of the datastore"
    assert state["last_ok"] is not None


def test_stop_ends_every_part_within_the_timeout():
    parts = Parts([Part(f"p{i}", lambda stop, health: stop.wait()) for i in range(3)])
    parts.start()
    wait(lambda: all(p["alive"] for p in parts.status().values()))
    started = time.monotonic()
    parts.stop(5)
    assert time.monotonic() - started < 5
    assert not any(p["alive"] for p in parts.status().values())


def test_a_failure_replaces_the_detail_of_the_last_good_pass():
    """The probes print the detail as the reason a part is not ready: after a failure it must be
    the failure, not what the last good pass said."""
    health = PartHealth()
    health.ok("BIRD configured from revision 12")
    health.failed("BirdError: BIRD did not start")
    state = health.as_dict()
    assert (state["ready"], state["detail"], state["last_error"], state["restarts"]) == (False, "BirdError: BIRD did not start", "BirdError: BIRD did not start", 1)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_part_whose_thread_ends_for_good_is_not_alive(caplog):
    """An exception a part does not survive (SystemExit here) ends its thread: it must not go on
    being reported alive (the liveness probe reads this)."""
    def exits(stop: threading.Event, health: PartHealth) -> None:
        health.ok()
        raise SystemExit("gone")

    parts = Parts([Part("exits", exits)])
    parts.start()
    parts.parts[0].join(5)
    assert parts.status()["exits"]["alive"] is False
    assert "part exits ended and is not restarted: calico-node must be restarted" in caplog.messages
    parts.stop(5)


@pytest.mark.parametrize("synced", [True, False])
def test_a_reconcile_loop_stops_promptly_between_passes(synced):
    """A loop waiting out its period (5 s in calico-node) for a change of the cache ends within a
    fraction of a second of `stop`: a restart of calico-node is not held back by its own loops."""
    from calico_cni.node.parts import STOP_POLL, reconcile_passes
    from calico_cni.node.syncer import Cache

    cache = Cache()
    if synced:
        cache.replace([], 1)
    stop, passes = threading.Event(), []
    loop = threading.Thread(target=reconcile_passes, args=(cache, stop, PartHealth(), 30.0, lambda s: passes.append(s) or (True, "ok")))
    loop.start()
    wait(lambda: passes or not synced)
    time.sleep(0.2)
    began = time.monotonic()
    stop.set()
    loop.join(5)
    assert not loop.is_alive() and time.monotonic() - began < STOP_POLL + 0.5
    assert len(passes) == (1 if synced else 0)
