"""dataplane.wiring.Teardown, calico's DEL in two steps: `unlisted()` returns only once the kernel
has unlisted every host name (the datastore part may start then: a DEL killed at its first write
has its veth on the way out), and not before, however slow the teardown is to begin; a name that is
not the attachment's (left alone) never holds it back past the teardown's end; a teardown that
failed raises from `unlisted()` already; `result()` gives what was deleted, or that error."""

from __future__ import annotations

import os
import threading
import time

import pytest

from calico_cni.dataplane import wiring
from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane.netns import Netns
from tests import netns


@pytest.fixture
def node():
    name = netns.add(f"{netns.PREFIX}teardown-{os.getpid()}")
    try:
        with netns.inside(name):
            yield name
    finally:
        netns.delete(name)


def veth(ns: str, name: str, alias: str) -> None:
    netns.ip("-n", ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    netns.ip("-n", ns, "link", "set", name, "alias", alias)


def listed(ns: str) -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in netns.ip("-n", ns, "-o", "link", "show").stdout.splitlines()}


def test_unlisted_waits_for_the_kernel_however_late_the_deletion_starts(node, monkeypatch):
    veth(node, "caliteardown1", "calico:net1/c1/eth0")
    real = wiring.teardown

    def late(*args):
        time.sleep(0.3)  # a thread slow to get going: unlisted() must not take that for done
        return real(*args)

    monkeypatch.setattr(wiring, "teardown", late)
    with Netns.here() as host:
        began = time.monotonic()
        job = wiring.Teardown(host, None, "eth0", ["caliteardown1"], lambda alias: alias == "calico:net1/c1/eth0")
        job.unlisted()
        waited = time.monotonic() - began
        assert "caliteardown1" not in listed(node)
        assert waited >= 0.3
        assert job.result() == ["caliteardown1"]


def test_a_link_of_another_attachment_holds_unlisted_back_only_until_the_teardown_ends(node):
    veth(node, "caliteardown2", "calico:net1/other/eth0")
    with Netns.here() as host:
        job = wiring.Teardown(host, None, "eth0", ["caliteardown2"], lambda alias: alias == "calico:net1/c2/eth0")
        waiting = threading.Thread(target=job.unlisted)  # bounded: a regression fails, never hangs
        waiting.start()
        waiting.join(10)
        assert not waiting.is_alive(), "unlisted() waited past the teardown's end"
        assert job.result() == []
    assert "caliteardown2" in listed(node)  # left alone


def test_the_teardowns_error_comes_from_result(node, monkeypatch):
    def failing(*args):
        raise DataplaneError("removing the interfaces of eth0 failed", "injected")

    monkeypatch.setattr(wiring, "teardown", failing)
    with Netns.here() as host:
        job = wiring.Teardown(host, None, "eth0", ["caliteardown3"], lambda alias: True)
        # Raised by unlisted(), before the caller's datastore part: a DEL fails before it deletes
        # anything in etcd while the veth and its routes may still be there.
        with pytest.raises(DataplaneError, match="injected"):
            job.unlisted()
        with pytest.raises(DataplaneError, match="injected"):
            job.result()
        job.finish()  # a way out with its own error: waits, never raises
