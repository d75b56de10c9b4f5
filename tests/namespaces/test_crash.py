"""Crash safety: the plugin SIGKILLed before each of its datastore writes, and at random times, in
ADD and in DEL. After each kill, DEL reaches a clean state (no allocation, handle, endpoint, link
or route), and no address is ever held twice."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

import pytest

from tests.calico_support import (
    assert_datastore_clean,
    assert_node_clean,
    ok,
    pod_env,
    pod_links,
    popen_calico,
    run_calico,
)
from tests.crash_launcher import KILL, crashing
from tests.pools import pools_fixture

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

# The exec'd plugin itself is killed here (through the test-only crash launcher, which installs the
# kill hook): in CALICO_TEST_VIA_AGENT mode too, it must not hand the request (and the kill) to the
# session's agent. The agent killed mid-request has its own test (agents(..., KILL=n) starts it
# through the crash launcher).
IN_PROCESS = {"CALICO_CNI_AGENT_SOCKET": ""}


pools = pools_fixture(("v4", "198.18.50.0/24", 28), ("v6", "fd00:198:18:50::/112", 124))


def assert_no_address_twice(store) -> None:
    """Each endpoint address is allocated, to that endpoint's container, and used by one endpoint."""
    held = {}
    for block in store.all_blocks():
        for o in range(block.size):
            attr = block.attribute(o) or {}
            if attr.get("handle_id"):
                held[str(block.address(o))] = attr["handle_id"]
    used = Counter(n.split("/")[0] for e in store.workload_endpoints() for n in e.ip_networks)
    assert [a for a, c in used.items() if c > 1] == []
    for e in store.workload_endpoints():
        for n in e.ip_networks:
            assert held.get(n.split("/")[0], "").endswith(e.container_id), (n, held.get(n.split("/")[0]))


def assert_recovered(store, node, conf: dict, p: str, env: dict | None = None) -> None:
    """After a kill: no address is held twice, and the runtime's DEL (with `env` on top of the pod's
    CNI_* variables) leaves no link, route, endpoint, handle or allocation behind."""
    assert_no_address_twice(store)
    ok(run_calico(node, "DEL", conf, {**pod_env(p), **(env or {})}))
    assert pod_links(p) == []
    assert_node_clean(node)
    assert_datastore_clean(store)


def test_kill_before_every_write_of_add_and_del(store, pools, node, pod, calico_conf, tmp_path):
    conf = calico_conf(ipam={"assign_ipv6": "true"}, release_journal_dir=str(tmp_path / "j"))
    kills = 0
    for n in range(1, 8):  # ADD: claim v4 block, allocate, claim v6 block, allocate, endpoint...
        p = pod()
        run = run_calico(node, "ADD", conf, pod_env(p, **{KILL: str(n)}, **IN_PROCESS), plugin=crashing("calico"))
        if run.rc == 0:
            ok(run_calico(node, "DEL", conf, pod_env(p)))
            break  # the ADD needs fewer writes than n: every step has been covered
        assert run.rc == -signal.SIGKILL, run.stdout
        kills += 1
        assert_recovered(store, node, conf, p)
    assert kills >= 3
    del_kills = 0
    for n in range(1, 8):
        p = pod()
        result = ok(run_calico(node, "ADD", conf, pod_env(p)))
        run = run_calico(node, "DEL", {**conf, "prevResult": result}, pod_env(p, **{KILL: str(n)}, **IN_PROCESS), plugin=crashing("calico"))
        if run.rc == 0:
            break
        assert run.rc == -signal.SIGKILL, run.stdout
        # Killed before any of its etcd writes, a DEL has its veth gone all the same: the datastore
        # part starts only once the kernel has unlisted it (the rest of a deletion, the grace
        # period, the kernel finishes for a dead process), and a DEL given up leaks no interface.
        host = result["interfaces"][0]["name"]
        assert host not in {link["ifname"] for link in node.cali_links()}, f"DEL killed before write {n} left {host}"
        del_kills += 1
        assert_recovered(store, node, {**conf, "prevResult": result}, p)
    assert del_kills >= 2


def test_agent_killed_before_every_write_of_add_and_del(store, pools, node, pod, calico_conf, tmp_path, agents):
    """The agent SIGKILLed before each of an ADD's etcd writes in turn: the plugin prints error 11
    and never runs the request itself; the runtime's DEL, through a restarted agent, leaves no
    link, address, handle or endpoint behind. Then the same for DEL's writes."""
    conf = calico_conf(ipam={"assign_ipv6": "true"}, release_journal_dir=str(tmp_path / "j"))

    def killed(run, agent) -> bool:
        if run.rc == 0:
            return False
        assert run.rc == 1 and run.out["code"] == 11 and "not run again here" in run.out["details"], run.stdout
        assert agent.proc.wait(10) == -signal.SIGKILL
        return True

    kills = 0
    for n in range(1, 8):
        p = pod()
        dying = agents(node, **{KILL: str(n)})
        if not killed(run_calico(node, "ADD", conf, {**pod_env(p), **dying.env()}), dying):
            ok(run_calico(node, "DEL", conf, {**pod_env(p), **agents(node).env()}))
            break
        kills += 1
        assert_recovered(store, node, conf, p, agents(node).env())
    assert kills >= 3
    del_kills = 0
    for n in range(1, 8):
        p = pod()
        result = ok(run_calico(node, "ADD", conf, {**pod_env(p), **agents(node).env()}))
        dying = agents(node, **{KILL: str(n)})
        if not killed(run_calico(node, "DEL", {**conf, "prevResult": result}, {**pod_env(p), **dying.env()}), dying):
            break
        del_kills += 1
        assert_recovered(store, node, {**conf, "prevResult": result}, p, agents(node).env())
    assert del_kills >= 2


def test_kill_at_random_times(store, pools, node, pod, calico_conf, tmp_path):
    conf = calico_conf(ipam={"assign_ipv6": "true"}, release_journal_dir=str(tmp_path / "j"))
    rng = random.Random(7)
    killed = 0
    for i in range(8):
        p = pod()
        verb = "ADD" if i % 2 == 0 else "DEL"
        if verb == "DEL":
            ok(run_calico(node, "ADD", conf, pod_env(p)))
        proc = popen_calico(node, verb, conf, pod_env(p, **IN_PROCESS))
        time.sleep(rng.uniform(0.05, 0.35))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()
        assert_recovered(store, node, conf, p)
    assert killed >= 1
