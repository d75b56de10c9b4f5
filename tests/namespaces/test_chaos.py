"""Chaos: three simulated nodes run concurrent ADDs and DELs (six workers) while plugins are killed
at random (before a chosen datastore write, or at a random time) and etcd is restarted once. A
killed ADD is followed by a DEL as a runtime would do, which may be killed too and is then given
up (a leak for GC). Afterwards GC runs on each node with the true list of live containers; then
`calicoctl ipam check` must find 0 problems, no address is held twice, every live container still
has its address, endpoint and link, and no journal entry is left. Kills and operations are
printed (pytest -s)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter

import pytest

from tests import etcd_secure, netns
from tests.calico_support import make_node, make_pod, popen_calico, remove_node, run_calico
from tests.calicoctl_support import run_exe
from tests.conftest import FABRIC_ADDRESS
from tests.crash_launcher import KILL, crashing
from tests.pools import create_pool

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

PORT, PEER = 2479, 2480
DURATION = 40.0
PODS_PER_WORKER = 5
# The exec'd plugins are killed here: in CALICO_TEST_VIA_AGENT mode too they must not hand the
# request (and the kill) to the session's agent.
IN_PROCESS = {"CALICO_CNI_AGENT_SOCKET": ""}


@pytest.fixture
def chaos_etcd(tmp_path):
    """A single etcd of its own whose data survives a restart (the test restarts it once)."""
    cluster = etcd_secure.start_single(FABRIC_ADDRESS, PORT, PEER, str(tmp_path))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def chaos_nodes():
    made = []
    try:
        for _ in range(3):
            made.append(make_node())
        yield made
    finally:
        for n in made:
            remove_node(n)


class Worker:
    """Runs ADD/DEL cycles for its own pods on one node (never two operations on one container)."""

    def __init__(self, node, conf: dict, seed: int, stats: Counter, lock: threading.Lock, deadline: float) -> None:
        self.node, self.conf, self.rng, self.stats, self.lock, self.deadline = node, conf, random.Random(seed), stats, lock, deadline
        self.pods = [make_pod(node) for _ in range(PODS_PER_WORKER)]
        self.generation = {p: 0 for p in self.pods}
        self.live: dict[str, str] = {}  # pod -> container id of its live attachment
        self.errors: list[str] = []

    def env(self, pod: str) -> dict:
        return {"CNI_CONTAINERID": f"chaos-{pod.rsplit('-', 2)[-2]}-{self.generation[pod]}", "CNI_NETNS": f"{netns.NETNS_DIR}/{pod}",
                "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent", **IN_PROCESS}

    def count(self, key: str) -> None:
        with self.lock:
            self.stats[key] += 1

    def op(self, verb: str, pod: str, kill: bool) -> int:
        env = self.env(pod)
        mode = self.rng.choice(["write", "time"]) if kill else None
        if mode == "write":
            env[KILL] = str(self.rng.randint(1, 3))
        # A kill before a write needs the test-only crash launcher (it installs the kill hook).
        proc = popen_calico(self.node, verb, self.conf, env, plugin=crashing("calico") if mode == "write" else "calico")
        if mode == "time":
            time.sleep(self.rng.uniform(0.02, 0.3))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            self.errors.append(f"{verb} hung")
            return -1
        self.count(f"{verb} total")
        if proc.returncode == -signal.SIGKILL:
            self.count(f"{verb} killed")
        elif proc.returncode != 0:
            self.count(f"{verb} failed ({json.loads(out or b'{}').get('code')})")
        return proc.returncode

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                pod = self.rng.choice(self.pods)
                kill = self.rng.random() < 0.3
                if pod in self.live:
                    del self.live[pod]  # from now on the runtime considers it gone
                    rc = self.op("DEL", pod, kill)
                    if rc != 0 and self.rng.random() < 0.5:
                        self.op("DEL", pod, False)  # the runtime retries; otherwise a leak for GC
                    self.retire_if_dirty(pod)
                    self.generation[pod] += 1
                else:
                    rc = self.op("ADD", pod, kill)
                    if rc == 0:
                        self.live[pod] = self.env(pod)["CNI_CONTAINERID"]
                    else:
                        if self.op("DEL", pod, self.rng.random() < 0.3) != 0:
                            self.count("DEL given up")
                        self.retire_if_dirty(pod)
                        self.generation[pod] += 1
        except Exception as exc:  # noqa: BLE001
            self.errors.append(repr(exc))

    def retire_if_dirty(self, pod: str) -> None:
        """A pod whose interface survived (a DEL killed before its teardown, then given up) is
        not reused: its leftovers are GC's job."""
        links = subprocess.run(["ip", "-n", pod, "-o", "link", "show", "eth0"], capture_output=True)
        if links.returncode == 0 and len(self.pods) > 1:
            self.pods.remove(pod)


def test_chaos(chaos_etcd, chaos_nodes, tmp_path):
    from calico_cni.config import EtcdSettings
    from calico_cni.datastore.etcd import EtcdClient
    from calico_cni.datastore.store import Datastore

    store = Datastore(EtcdClient(EtcdSettings((chaos_etcd.endpoint,))))
    try:
        create_pool(store, "chaos", "198.18.60.0/24", 28)
        confs = {}
        for i, node in enumerate(chaos_nodes):
            confs[node.name] = {
                "cniVersion": "1.0.0", "name": "chaosnet", "type": "calico", "etcd_endpoints": chaos_etcd.endpoint,
                "nodename": f"chaos{i}", "etcd_timeout": 1, "add_timeout": 4,
                "release_journal_dir": str(tmp_path / f"journal{i}"),
                "log_file_path": str(tmp_path / f"node{i}.log"), "log_level": "info", "ipam": {"type": "calico-ipam"},
            }
        stats: Counter = Counter()
        lock = threading.Lock()
        start = time.monotonic()
        deadline = start + DURATION
        workers = [Worker(node, confs[node.name], 1000 * i + j, stats, lock, deadline) for i, node in enumerate(chaos_nodes) for j in range(2)]
        threads = [threading.Thread(target=w.run) for w in workers]
        for t in threads:
            t.start()
        time.sleep(DURATION / 3)
        member = chaos_etcd.members[0]
        member.stop()
        time.sleep(2)
        member.start()
        chaos_etcd.wait_healthy()
        for t in threads:
            t.join(DURATION + 120)
        assert not any(t.is_alive() for t in threads)
        assert [e for w in workers for e in w.errors] == []

        # GC on every node with the true list of live containers.
        for i, node in enumerate(chaos_nodes):
            live = [{"containerID": cid, "ifname": "eth0"} for w in workers if w.node is node for cid in w.live.values()]
            conf = {**confs[node.name], "cniVersion": "1.1.0", "cni.dev/valid-attachments": live}
            gc = run_calico(node, "GC", conf, {"CNI_PATH": "/nonexistent"})
            assert gc.rc == 0, gc.stdout
            pending = tmp_path / f"journal{i}" / "pending"
            assert not pending.exists() or os.listdir(pending) == [], os.listdir(pending)

        check = run_exe("ipam", "check", "--grace", "0", env={"ETCD_ENDPOINTS": chaos_etcd.endpoint})
        assert check.rc == 0 and check.stdout.splitlines()[-1] == "Check complete; found 0 problems.", check.stdout

        held: dict[str, str] = {}
        for block in store.all_blocks():
            for o in range(block.size):
                attr = block.attribute(o) or {}
                if attr.get("handle_id"):
                    held[str(block.address(o))] = attr["handle_id"]
        endpoints = store.workload_endpoints()
        used = Counter(n.split("/")[0] for e in endpoints for n in e.ip_networks)
        assert [a for a, c in used.items() if c > 1] == []
        live_all = {cid for w in workers for cid in w.live.values()}
        assert {e.container_id for e in endpoints} == live_all
        assert sorted(held.values()) == sorted(f"chaosnet.{cid}" for cid in live_all)
        for e in endpoints:
            for n in e.ip_networks:
                assert held[n.split("/")[0]] == f"chaosnet.{e.container_id}"
        for node in chaos_nodes:
            assert len(node.cali_links()) == sum(len(w.live) for w in workers if w.node is node)
        operations = sum(v for k, v in stats.items() if k.endswith("total"))
        kills = sum(v for k, v in stats.items() if k.endswith("killed"))
        print(f"\nchaos: {operations} operations, {kills} kills, {len(live_all)} live at the end, {len(held)} held; {dict(sorted(stats.items()))}")
        assert kills > 0 and operations > 50
    finally:
        store.close()
