"""calico-node's routing controller (calico_cni.node.routing) against a fake BIRD control socket (the
recorded replies of tests/unit/test_bird_protocols.py) and the real `bird -p`: nothing before the
first full list, a write only when the file does not hold the text, one `configure` per change, a
refused or uncheckable configuration, a configure BIRD refuses, a BIRD that never answers, each
problem logged once. No BIRD is ever started here: the `bird` these tests give the controller
passes `-p` to the real one and refuses to start (leaving a mark that a test would see).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from calico_cni.dataplane.bird import Bird
from calico_cni.datastore.etcd import KeyValue
from calico_cni.model import keys
from calico_cni.node import routing
from calico_cni.node.parts import PartHealth
from calico_cni.node.routing import RoutingController, inputs_from
from calico_cni.node.syncer import Cache
from tests.unit.test_bird_protocols import CONFIG_ERROR, CONFIGURED, FakeBird, fake_bird  # noqa: F401 - fake_bird: the fixture

API = "projectcalico.org/v3"
REAL_BIRD = "/usr/sbin/bird"


def doc(kind: str, name: str, **spec) -> bytes:
    return json.dumps({"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}).encode()


def node_doc(name: str, address: str) -> bytes:
    return doc("Node", name, bgp={"ipv4Address": address})


def affinity(node: str, cidr: str, state: str = "confirmed", deleted: bool = False) -> tuple[str, bytes]:
    return f"{keys.host_affinities(node, 4)}{cidr.replace('/', '-')}", json.dumps({"state": state, "deleted": deleted}).encode()


def synced(cache: Cache, items: dict[str, bytes], revision: int = 10) -> None:
    cache.replace([KeyValue(k, v, revision, revision, 1) for k, v in items.items()], revision)


BASE = {
    keys.RESOURCES + "nodes/n1": node_doc("n1", "198.19.0.1/24"),
    keys.RESOURCES + "nodes/n2": node_doc("n2", "198.19.0.2/24"),
    keys.RESOURCES + "ippools/p4": doc("IPPool", "p4", cidr="198.18.0.0/16", ipipMode="Never", vxlanMode="Never"),
    **dict([affinity("n1", "198.18.0.0/26")]),
}


@pytest.fixture
def bird_binary(tmp_path) -> Path:
    """A `bird` that checks with the real one and refuses to start, leaving `started` beside it."""
    path = tmp_path / "bin" / "bird"
    path.parent.mkdir()
    path.write_text(f'#!/bin/sh\n[ "$1" = -p ] && exec {REAL_BIRD} "$@"\ntouch "$(dirname "$0")/started"\n'
                    'echo "bird: a unit test never starts BIRD" >&2\nexit 1\n')
    path.chmod(0o755)
    return path


def started_any(binary: Path) -> bool:
    return (binary.parent / "started").exists()


@pytest.fixture
def controller(tmp_path, fake_bird, bird_binary):  # noqa: F811 - fake_bird: the fixture
    """A controller of node n1 whose BIRD is a fake that reloads as asked."""
    fake = fake_bird({"configure": CONFIGURED})
    cache = Cache()
    bird = Bird(str(tmp_path / "state" / "bird.cfg"), fake.path, str(tmp_path / "bird.pid"), timeout=0.5, binary=str(bird_binary))
    c = RoutingController("n1", None, cache, bird)
    c.fake = fake
    return c


def test_nothing_happens_before_the_first_full_list(controller, bird_binary):
    stop, health = threading.Event(), PartHealth()
    runner = threading.Thread(target=controller.run, args=(stop, health))
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while health.as_dict()["detail"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # a controller that does not wait would act now
        assert health.as_dict()["detail"] == "waiting for the first full list of the datastore" and not health.as_dict()["ready"]
        assert not os.path.exists(controller.bird.config) and controller.fake.connections == 0 and not started_any(bird_binary)
        synced(controller.cache, BASE)
        deadline = time.monotonic() + 10
        while not health.as_dict()["ready"]:
            assert time.monotonic() < deadline, health.as_dict()
            time.sleep(0.01)
        assert health.as_dict()["detail"] == "BIRD configured from revision 10"
        assert controller.fake.commands == ["configure"]
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()


def test_the_file_is_written_and_bird_reloaded_only_for_a_change(controller):
    synced(controller.cache, BASE)
    assert controller.run_pass(controller.cache.snapshot()) is None
    config = Path(controller.bird.config)
    text, written = config.read_text(), config.stat()
    assert "198.18.0.0/26" in text and "198.19.0.2" in text
    assert controller.run_pass(controller.cache.snapshot()) is None
    assert config.stat().st_ino == written.st_ino and config.stat().st_mtime_ns == written.st_mtime_ns
    assert controller.fake.commands == ["configure"]
    # A change in the datastore: written again and reloaded once.
    synced(controller.cache, {**BASE, keys.RESOURCES + "nodes/n3": node_doc("n3", "198.19.0.3/24")}, 11)
    assert controller.run_pass(controller.cache.snapshot()) is None
    assert "198.19.0.3" in config.read_text() and controller.fake.commands == ["configure", "configure"]


def test_a_pass_with_nothing_changed_renders_nothing(controller, monkeypatch):
    """The periodic pass only checks BIRD and its file: rendering again from an unchanged cache
    would cost every idle node CPU every PERIOD."""
    renders = []
    real = routing.render
    monkeypatch.setattr(routing, "render", lambda inputs: renders.append(inputs) or real(inputs))
    synced(controller.cache, BASE)
    for _ in range(3):
        assert controller.run_pass(controller.cache.snapshot()) is None
    assert len(renders) == 1
    synced(controller.cache, {**BASE, keys.RESOURCES + "nodes/n3": node_doc("n3", "198.19.0.3/24")}, 11)
    assert controller.run_pass(controller.cache.snapshot()) is None
    assert len(renders) == 2 and "198.19.0.3" in Path(controller.bird.config).read_text()


def test_an_adopted_bird_is_reloaded_once_even_when_the_file_holds_the_text(controller, tmp_path):
    """A new calico-node cannot know what the BIRD it adopts has loaded: one configure."""
    synced(controller.cache, BASE)
    assert controller.run_pass(controller.cache.snapshot()) is None
    successor = RoutingController("n1", None, controller.cache, controller.bird)
    assert successor.run_pass(controller.cache.snapshot()) is None
    assert successor.run_pass(controller.cache.snapshot()) is None
    assert controller.fake.commands == ["configure", "configure"]


def test_a_file_changed_behind_its_back_is_put_back_and_reloaded(controller):
    synced(controller.cache, BASE)
    assert controller.run_pass(controller.cache.snapshot()) is None
    config = Path(controller.bird.config)
    text = config.read_text()
    config.write_text("protocol nonsense {}\n")
    assert controller.run_pass(controller.cache.snapshot()) is None
    assert config.read_text() == text and controller.fake.commands == ["configure", "configure"]


def test_a_configuration_bird_refuses_is_kept_out_and_logged_once(controller, bird_binary, caplog):
    bird_binary.write_text('#!/bin/sh\n[ "$1" = -p ] && { echo "bird: $3:3:1 syntax error, unexpected CF_SYM_UNDEFINED" >&2; exit 1; }\nexit 1\n')
    synced(controller.cache, BASE)
    with caplog.at_level(logging.INFO, logger=routing.__name__):
        for _ in range(3):
            failure = controller.run_pass(controller.cache.snapshot())
            assert failure == (f"BIRD refused the rendered configuration (the running one is kept): "
                               f"{controller.bird.config}.rejected:3:1 syntax error, unexpected CF_SYM_UNDEFINED")
        assert not os.path.exists(controller.bird.config) and os.path.exists(f"{controller.bird.config}.rejected")
        assert controller.fake.connections == 0  # BIRD neither started nor reloaded
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [f"routing: {failure}"]
        bird_binary.write_text(f'#!/bin/sh\nexec {REAL_BIRD} "$@"\n')
        assert controller.run_pass(controller.cache.snapshot()) is None
    assert f"routing: resolved: {failure}" in [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert controller.fake.commands == ["configure"]


def test_a_bird_that_cannot_be_run_is_reported(controller, tmp_path):
    missing = tmp_path / "no-such-dir" / "bird"
    controller.bird.binary = str(missing)
    synced(controller.cache, BASE)
    failure = controller.run_pass(controller.cache.snapshot())
    assert failure == (f"BIRD's configuration {controller.bird.config} is not installed: cannot check BIRD's configuration: "
                       f"cannot run {missing}: No such file or directory (is bird2 installed?)")
    assert not os.path.exists(f"{controller.bird.config}.rejected")  # nothing was refused
    assert not [name for name in os.listdir(os.path.dirname(controller.bird.config)) if name != "bird.cfg"]  # no temporary file left


def test_a_configure_bird_refuses_is_tried_again_on_every_pass_and_logged_once(fake_bird, controller, caplog):  # noqa: F811
    refusing = fake_bird({"configure": CONFIG_ERROR})
    controller.bird.socket = refusing.path
    synced(controller.cache, BASE)
    with caplog.at_level(logging.ERROR, logger=routing.__name__):
        failures = {controller.run_pass(controller.cache.snapshot()) for _ in range(3)}
    assert failures == {"BIRD did not load the new configuration: 8002 /tmp/hb/a/bird.cfg:2:19 syntax error, unexpected CF_SYM_UNDEFINED"}
    assert refusing.commands == ["configure"] * 3
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_a_bird_that_never_answers_fails_the_pass_and_no_second_bird_is_started(fake_bird, controller, bird_binary):  # noqa: F811
    """A hung BIRD (its socket accepts, nothing answers): the pass ends within the deadline."""
    hung = fake_bird({}, welcome=b"")
    controller.bird.socket = hung.path
    synced(controller.cache, BASE)
    failure = controller.run_pass(controller.cache.snapshot())
    assert failure == f"BIRD is not running or does not answer: BIRD did not answer on {hung.path} within the deadline"
    assert not started_any(bird_binary)


def test_starting_bird_is_news_the_first_time_and_a_warning_after(controller, tmp_path, caplog):
    """A fresh node starts its BIRD (info); a BIRD that later vanishes is started again (warning).
    The `bird` given leaves a mark; a fake control socket then stands for the BIRD it forked."""
    marker, socket_path = tmp_path / "ran", str(tmp_path / "started.ctl")
    binary = tmp_path / "bin" / "forks"
    binary.write_text(f'#!/bin/sh\n[ "$1" = -p ] && exec {REAL_BIRD} "$@"\ntouch {marker}\n')
    binary.chmod(0o755)
    controller.bird.binary, controller.bird.socket = str(binary), socket_path
    synced(controller.cache, BASE)
    fakes: list[FakeBird] = []

    def run_pass_starting_bird() -> str | None:
        def answer_once_started() -> None:
            deadline = time.monotonic() + 10
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            fakes.append(FakeBird(socket_path, {"configure": CONFIGURED}))

        marker.unlink(missing_ok=True)
        helper = threading.Thread(target=answer_once_started)
        helper.start()
        try:
            return controller.run_pass(controller.cache.snapshot())
        finally:
            helper.join(15)

    try:
        with caplog.at_level(logging.INFO, logger=routing.__name__):
            assert run_pass_starting_bird() is None
            assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO, "routing: BIRD started")]
            caplog.clear()
            fakes.pop().close()  # BIRD dies
            os.unlink(socket_path)
            assert run_pass_starting_bird() is None
            assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
                (logging.WARNING, "routing: BIRD was no longer running (it died or was stopped); started it again")]
    finally:
        for fake in fakes:
            fake.close()


def test_bird_not_running_is_started(controller, bird_binary, tmp_path):
    """Nothing answers on the socket: the controller starts BIRD (here the refusing stand-in,
    whose error is the pass's failure)."""
    controller.bird.socket = str(tmp_path / "absent.ctl")
    synced(controller.cache, BASE)
    failure = controller.run_pass(controller.cache.snapshot())
    assert started_any(bird_binary)
    assert failure is not None and failure.startswith("BIRD is not running or does not answer: BIRD did not start (")
    assert failure.endswith(": a unit test never starts BIRD")


def test_records_that_cannot_be_read_are_named_and_left_out():
    cache = Cache()
    bad_pool = keys.RESOURCES + "ippools/broken"
    items = {
        **BASE,
        bad_pool: b"{not json",
        keys.RESOURCES + "bgppeers/list": b"[1, 2]",
        keys.RESOURCES + "nodes/a/b": node_doc("ignored", "198.19.0.9/24"),  # not a resource key
        "/calico/resources/v3/projectcalico.org/workloadendpoints/x": b"{}",  # not a kind routing reads
        **dict([affinity("n1", "198.18.0.64/26", state="pending"), affinity("n1", "198.18.0.128/26", deleted=True),
                affinity("n1", "198.18.0.192/26"), affinity("n2", "198.18.1.0/26")]),
        f"{keys.host_affinities('n1', 4)}198.18.2.0-26": b"[]",
    }
    synced(cache, items)
    inputs, problems = inputs_from(cache.snapshot(), "n1", None)
    assert inputs.blocks == ["198.18.0.0/26", "198.18.0.192/26"]
    assert set(inputs.nodes) == {"n1", "n2"} and [p["metadata"]["name"] for p in inputs.pools] == ["p4"] and inputs.peers == []
    assert f"{bad_pool}: not a JSON object; left out of the BIRD configuration" in problems
    assert f"{keys.RESOURCES}bgppeers/list: not a JSON object; left out of the BIRD configuration" in problems
    assert any("198.18.2.0-26" in p and p.endswith("its block is not advertised") for p in problems), problems
    assert len(problems) == 3
