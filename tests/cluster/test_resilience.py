"""Routes outlive their daemons: SIGKILL of calico-node, of BIRD, a planned BIRD restart, etcd
restarted; and a node deleted with calicoctl loses its routes and sessions everywhere."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

from tests.cluster_support import block_of, ping, wait_for
from tests.conftest import plugin_path
from tests.pools import create_pool


@pytest.fixture
def two_nodes_pinging(cluster, store, etcd_endpoint):
    """node-1 and node-2 with a pod each, routed to each other."""
    create_pool(store, "v4", "198.18.44.0/24", 26)
    one, two = cluster.add_node(), cluster.add_node()
    pod_one, (address_one,) = one.add_pod(etcd_endpoint)
    pod_two, (address_two,) = two.add_pod(etcd_endpoint)
    wait_for("node-2's route to node-1's block", lambda: any(r.get("gateway") == one.ipv4 for r in two.bird_routes(4).values()), 30)
    wait_for("node-1's route to node-2's block", lambda: any(r.get("gateway") == two.ipv4 for r in one.bird_routes(4).values()), 30)
    assert wait_for("pod 2 -> pod 1", lambda: ping(pod_two, address_one), 10)
    return one, two, pod_two, address_one


class Pinger:
    """`ping -i 0.1` from a pod for the duration of a `with` block; how many replies were lost."""

    def __init__(self, pod: str, address: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", pod, "ping", "-i", "0.1", "-W", "1", address],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def __enter__(self) -> Pinger:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.output = self.proc.communicate(10)[0]

    def lost(self) -> tuple[int, int]:
        """(sent, lost) from ping's summary."""
        m = re.search(r"(\d+) packets transmitted, (\d+) received", self.output)
        assert m, self.output
        sent, received = int(m.group(1)), int(m.group(2))
        return sent, sent - received


def test_sigkill_of_calico_node_then_of_bird_loses_no_ping(two_nodes_pinging):
    one, two, pod_two, address_one = two_nodes_pinging
    bird_before = one.bird_pid()
    with Pinger(pod_two, address_one) as pinger:
        time.sleep(1)
        one.stop(signal.SIGKILL)
        assert one.bird_pid() == bird_before, "BIRD must outlive calico-node"
        time.sleep(1)
        one.start()
        time.sleep(3)
        assert one.bird_pid() == bird_before, "a restarted calico-node adopts the running BIRD"
        one.kill_bird(signal.SIGKILL)
        wait_for("calico-node to restart BIRD", lambda: one.bird_pid() not in (None, bird_before), 15)
        wait_for("the sessions to come back", lambda: one.bgp_established() >= 1, 30)
        time.sleep(1)
    sent, lost = pinger.lost()
    assert sent > 50 and lost == 0, pinger.output[-500:]


def test_a_planned_bird_restart_loses_no_ping(two_nodes_pinging):
    one, two, pod_two, address_one = two_nodes_pinging
    bird_before = one.bird_pid()
    with Pinger(pod_two, address_one) as pinger:
        time.sleep(1)
        one.birdc("graceful", "restart")
        wait_for("calico-node to start BIRD again", lambda: one.bird_pid() not in (None, bird_before), 15)
        wait_for("the sessions to come back", lambda: one.bgp_established() >= 1, 30)
        time.sleep(1)
    sent, lost = pinger.lost()
    assert sent > 20 and lost == 0, pinger.output[-500:]


def test_a_deleted_node_loses_its_routes_and_sessions_everywhere(cluster, store, etcd_endpoint):
    create_pool(store, "v4", "198.18.45.0/24", 26)
    nodes = [cluster.add_node() for _ in range(3)]
    for node in nodes:
        node.add_pod(etcd_endpoint)
    gone = nodes[2]
    for node in nodes[:2]:
        wait_for(f"{node.nodename}'s route to {gone.nodename}", lambda node=node: any(r.get("gateway") == gone.ipv4 for r in node.bird_routes(4).values()), 30)
    gone.stop()
    gone.kill_bird(signal.SIGTERM)
    proc = subprocess.run([plugin_path("calicoctl"), "delete", "node", gone.nodename, "--force"], capture_output=True, text=True, timeout=60,
                          env={"ETCD_ENDPOINTS": etcd_endpoint, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    for node in nodes[:2]:
        wait_for(f"{node.nodename} to withdraw {gone.nodename}'s routes",
                 lambda node=node: not any(r.get("gateway") == gone.ipv4 for r in node.bird_routes(4).values()), 10)
        wait_for(f"{node.nodename} to drop its session to {gone.nodename}",
                 lambda node=node: gone.ipv4.replace(".", "_") not in node.birdc("show", "protocols"), 10)
    assert store.client.get(f"/calico/resources/v3/projectcalico.org/nodes/{gone.nodename}") is None


@pytest.fixture
def private_etcd(tmp_path):
    """An etcd of the test's own (restarting the session's would disturb nothing, but a private
    one makes the test independent), on the fabric address and other ports."""
    from tests import etcd_server
    from tests.conftest import FABRIC_ADDRESS

    server = etcd_server.start(FABRIC_ADDRESS, 2479, 2480, log_dir=str(tmp_path))
    try:
        yield server
    finally:
        server.stop()


def test_etcd_restarted_routes_stay_and_later_changes_converge(cluster, private_etcd):
    from calico_cni.config import EtcdSettings
    from calico_cni.datastore.etcd import EtcdClient
    from calico_cni.datastore.store import Datastore

    endpoint = private_etcd.endpoint
    store = Datastore(EtcdClient(EtcdSettings((endpoint,))))
    try:
        create_pool(store, "v4", "198.18.47.0/24", 26)
        one, two = cluster.add_node(ETCD_ENDPOINTS=endpoint), cluster.add_node(ETCD_ENDPOINTS=endpoint)
        pod_one, (address_one,) = one.add_pod(endpoint)
        pod_two, (address_two,) = two.add_pod(endpoint)
        assert wait_for("pod 2 -> pod 1", lambda: ping(pod_two, address_one), 30)
        with Pinger(pod_two, address_one) as pinger:
            private_etcd.restart(down=3)
            time.sleep(1)
        sent, lost = pinger.lost()
        assert sent > 20 and lost == 0, "routes must stay while etcd is away: " + pinger.output[-300:]
        # A change made after etcd came back converges: a new pool's block on node-2 is routed from node-1.
        create_pool(store, "v4b", "198.18.48.0/24", 26)
        _, (address_new,) = two.add_pod(endpoint, IP="198.18.48.10")
        wait_for("node-1's route to node-2's new block", lambda: "198.18.48.0/26" in one.bird_routes(4), 15)
        assert wait_for("pod 1 -> the new pod", lambda: ping(pod_one, address_new), 10)
        # Both watches are back (a watch lost while etcd was away resumes after a back-off, which a
        # loaded machine can stretch past the moment the pings above answer).
        wait_for("both nodes' watches in sync again", lambda: all((n.health() or {}).get("in_sync") for n in (one, two)), 20)
    finally:
        store.close()


def test_a_released_block_is_withdrawn_everywhere(cluster, store, etcd_endpoint):
    """The pod deleted and its pool deleted with calicoctl (which releases the pool's blocks and
    affinities): the block's blackhole goes from its node and its route from every other node."""
    create_pool(store, "v4", "198.18.49.0/24", 26)
    one, two = cluster.add_node(), cluster.add_node()
    pod, (address,) = one.add_pod(etcd_endpoint)
    block = block_of(address)
    wait_for("node-2's route to node-1's block", lambda: two.bird_routes(4).get(block, {}).get("gateway") == one.ipv4, 30)
    assert one.bird_routes(4)[block]["type"] == "blackhole"
    run = one.plugin("DEL", one.conf(etcd_endpoint), pod)
    assert run.rc == 0, run.stderr
    proc = subprocess.run([plugin_path("calicoctl"), "delete", "ippool", "v4"], capture_output=True, text=True, timeout=60,
                          env={"ETCD_ENDPOINTS": etcd_endpoint, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wait_for("node-2 to withdraw the released block", lambda: block not in two.bird_routes(4), 10)
    wait_for("node-1 to drop the released block's blackhole", lambda: block not in one.bird_routes(4), 10)
