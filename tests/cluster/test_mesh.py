"""Three nodes in the default node-to-node mesh: pods on every node reach each other over IPv4 and
IPv6 through the routes BIRD installs, while the fabric holds no pod route."""

from __future__ import annotations

import json
import subprocess

from tests import netns
from tests.cluster_support import GATEWAY_V4, in_ns, ping, wait_for
from tests.conftest import plugin_path
from tests.pools import create_pool


def pools(store) -> None:
    create_pool(store, "v4", "198.18.40.0/24", 26)
    create_pool(store, "v6", "fd00:198:18:40::/112", 122)


def fabric_routes() -> list[str]:
    return [r["dst"] for v in ("-4", "-6") for r in json.loads(netns.ip("-j", v, "route", "show").stdout or "[]")]


def remote_routes(node, version: int) -> dict[str, dict]:
    """BIRD's kernel routes to other nodes' blocks (its own blocks are blackholes, as Calico's)."""
    return {dst: r for dst, r in node.bird_routes(version).items() if r.get("type") != "blackhole"}


def test_pods_on_three_nodes_reach_each_other_over_ipv4_and_ipv6(cluster, store, etcd_endpoint):
    pools(store)
    nodes = [cluster.add_node() for _ in range(3)]
    pods = {node.nodename: node.add_pod(etcd_endpoint, ipv6=True) for node in nodes}
    for node in nodes:
        # Two IPv4 and two IPv6 sessions each (to the two other nodes).
        wait_for(f"BGP sessions of {node.nodename}", lambda node=node: node.bgp_established() >= 4, 30)
    for node in nodes:
        others = [n for n in nodes if n is not node]
        # Every other node's blocks (one IPv4 /26 and one IPv6 /122 each) are routed via that node.
        wait_for(f"{node.nodename}'s routes to the other nodes' blocks", lambda node=node: len(remote_routes(node, 4)) >= 2 and len(remote_routes(node, 6)) >= 2, 10)
        v4 = remote_routes(node, 4)
        assert {r.get("gateway") for r in v4.values()} == {n.ipv4 for n in others}, v4
        assert all(dst.startswith("198.18.40.") and dst.endswith("/26") for dst in v4), v4
        v6 = remote_routes(node, 6)
        assert {r.get("gateway") for r in v6.values()} == {n.ipv6 for n in others}, v6
        own = {dst for dst, r in node.bird_routes(4).items() if r.get("type") == "blackhole"}
        assert len(own) == 1 and own.isdisjoint(v4), "the node's own block is a blackhole, under its pods' /32 routes"
    assert not [dst for dst in fabric_routes() if dst.startswith(("198.18.", "fd00:198:18:"))], "the fabric must know no pod route"
    for source in nodes:
        pod, _ = pods[source.nodename]
        for target in nodes:
            if target is source:
                continue
            for address in pods[target.nodename][1]:
                assert wait_for(f"{source.nodename} pod -> {target.nodename} pod {address}", lambda a=address: ping(pod, a), 10)
    assert all(len(addresses) == 2 for _, addresses in pods.values())  # one address of each family


def test_node_registration_and_status(cluster, store, etcd_endpoint):
    pools(store)
    a, b = cluster.add_node(), cluster.add_node()
    node = json.loads(store.client.get(f"/calico/resources/v3/projectcalico.org/nodes/{a.nodename}").value)
    assert node["spec"]["bgp"]["ipv4Address"] == f"{a.ipv4}/24"
    assert node["spec"]["bgp"]["ipv6Address"] == f"{a.ipv6}/64"
    assert (a.state_dir / "nodename").read_text().strip() == a.nodename
    wait_for("the mesh session", lambda: a.bgp_established() >= 2, 30)
    proc = subprocess.run(
        ["nsenter", f"--net={netns.NETNS_DIR}/{a.ns}", plugin_path("calicoctl"), "node", "status"],
        capture_output=True, text=True, timeout=30, env={"CALICO_RUN_DIR": str(a.run_dir), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Calico process is running." in proc.stdout
    assert "IPv4 BGP status" in proc.stdout and "IPv6 BGP status" in proc.stdout
    assert b.ipv4 in proc.stdout and b.ipv6 in proc.stdout
    assert "node-to-node mesh" in proc.stdout and "Established" in proc.stdout
    wide = subprocess.run([plugin_path("calicoctl"), "get", "nodes", "-o", "wide"], capture_output=True, text=True, timeout=30,
                          env={"ETCD_ENDPOINTS": etcd_endpoint, "PATH": "/usr/bin:/bin"})
    assert wide.returncode == 0, wide.stderr
    lines = wide.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ASN", "IPV4", "IPV6"]
    assert f"{a.nodename}" in wide.stdout and "(64512)" in wide.stdout and f"{a.ipv4}/24" in wide.stdout


def test_an_autodetected_address_that_changes_is_registered_again_and_the_mesh_follows(cluster, store, etcd_endpoint):
    """AUTODETECT_POLL_INTERVAL: the node's uplink gets a new address; calico-node detects it
    again, updates its Node, and the other node's BIRD peers with the new address."""
    pools(store)
    a = cluster.add_node(IP="autodetect", IP6="none", IP_AUTODETECTION_METHOD="interface=eth0", AUTODETECT_POLL_INTERVAL="1s")
    b = cluster.add_node()
    wait_for("the mesh session", lambda: b.bgp_established() >= 1, 30)
    new = "198.19.200.99"
    # The new address is a secondary of the same subnet: promoted when the old one goes (else the
    # kernel deletes it along with the primary), and the default route put back.
    in_ns(a.ns, "sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1")
    netns.ip("-n", a.ns, "addr", "add", f"{new}/24", "dev", "eth0")
    netns.ip("-n", a.ns, "addr", "del", f"{a.ipv4}/24", "dev", "eth0")
    netns.ip("-n", a.ns, "route", "replace", "default", "via", GATEWAY_V4)

    def registered() -> str:
        return json.loads(store.client.get(f"/calico/resources/v3/projectcalico.org/nodes/{a.nodename}").value)["spec"]["bgp"]["ipv4Address"]

    # The old address took calico-node's etcd connection with it: gRPC's keepalive finds it dead
    # and connects again (within 15 s), then the next detection registers the new address.
    wait_for("the new address in the Node", lambda: registered() == f"{new}/24", 30)
    wait_for("node-2's BIRD to peer with the new address", lambda: "Mesh_198_19_200_99" in b.birdc("show", "protocols"), 10)
    assert a.health()["parts"]["addresses"]["ready"]
