"""Routing beyond the plain mesh: a borrowed address, route reflectors, and a top-of-rack router
(a plain BIRD) peered through a global BGPPeer."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

from tests import netns
from tests.cluster_support import GATEWAY_V4, SUBNET_V4, block_of, in_ns, ping, wait_for
from tests.conftest import plugin_path
from tests.pools import create_pool


def calicoctl(etcd_endpoint: str, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([plugin_path("calicoctl"), *args], input=stdin, capture_output=True, text=True, timeout=30,
                          env={"ETCD_ENDPOINTS": etcd_endpoint, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, f"calicoctl {' '.join(args)}: {proc.stdout} {proc.stderr}"
    return proc.stdout


def sessions(node) -> dict[str, str]:
    """BGP protocol name -> state, from BIRD's own table."""
    out = {}
    for line in node.birdc("show", "protocols").splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "BGP":
            out[fields[0]] = line
    return out


def test_a_borrowed_address_is_reachable_from_every_node(cluster, store, etcd_endpoint):
    """The pool has one block: node-1 claims it, node-2 borrows an address from it. node-2's BIRD
    exports the borrowed /32 it learns from the pod's route, so every node reaches it, node-1 (the
    block's owner, whose blackhole covers it) included."""
    create_pool(store, "tiny", "198.18.41.0/26", 26)
    one, two, three = (cluster.add_node() for _ in range(3))
    pod_one, (first,) = one.add_pod(etcd_endpoint)
    _, (borrowed,) = two.add_pod(etcd_endpoint)
    pod_three, _ = three.add_pod(etcd_endpoint)
    assert borrowed.startswith("198.18.41.") and borrowed != first
    for node in (one, three):
        wait_for(f"{node.nodename}'s route to the borrowed {borrowed}/32 via node-2",
                 lambda node=node: node.bird_routes(4).get(borrowed, {}).get("gateway") == two.ipv4, 10)
    # From a pod on each node (pods of one network: their profile lets them in; a node's own host
    # reaching a remote pod is refused by that profile since calico-node enforces policy).
    for node, pod in ((one, pod_one), (three, pod_three)):
        assert wait_for(f"a pod on {node.nodename} -> borrowed {borrowed}", lambda pod=pod: ping(pod, borrowed), 10)


def test_route_reflector_clients_reach_each_other_without_a_session_between_them(cluster, store, etcd_endpoint):
    create_pool(store, "v4", "198.18.42.0/24", 26)
    calicoctl(etcd_endpoint, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
        "spec": {"nodeToNodeMeshEnabled": False},
    }))
    calicoctl(etcd_endpoint, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "to-reflectors"},
        "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
    }))
    reflector, client_a, client_b = (cluster.add_node(f"rr-{name}") for name in ("reflector", "a", "b"))
    calicoctl(etcd_endpoint, "patch", "node", reflector.nodename, "-p", json.dumps({"spec": {"bgp": {"routeReflectorClusterID": "224.0.0.1"}}}))
    calicoctl(etcd_endpoint, "label", "nodes", reflector.nodename, "route-reflector=true")
    pod_a, (address_a,) = client_a.add_pod(etcd_endpoint)
    pod_b, (address_b,) = client_b.add_pod(etcd_endpoint)
    wait_for("client a's route to b's block", lambda: any(r.get("gateway") == client_b.ipv4 for r in client_a.bird_routes(4).values()), 20)
    assert wait_for("pod a -> pod b", lambda: ping(pod_a, address_b), 10)
    assert wait_for("pod b -> pod a", lambda: ping(pod_b, address_a), 10)
    # The clients peer only with the reflector: no session between them, and no mesh.
    for client, other in ((client_a, client_b), (client_b, client_a)):
        names = sessions(client)
        assert not any(other.ipv4.replace(".", "_") in name for name in names), names
        assert any(reflector.ipv4.replace(".", "_") in name for name in names), names
        assert not any(name.startswith("Mesh_") for name in names), names
    assert "rr client" in (reflector.state_dir / "bird.cfg").read_text()


ROUTER_AS = 65001


def router_config(router_ip: str, neighbors: list[str]) -> str:
    """A plain BIRD 2 router: one session per node, learns everything, exports nothing."""
    sessions = "\n".join(
        f"protocol bgp node{i} {{ local {router_ip} as {ROUTER_AS}; neighbor {ip} as 64512; ipv4 {{ import all; export none; }}; }}"
        for i, ip in enumerate(neighbors)
    )
    return textwrap.dedent(f"""\
        router id {router_ip};
        protocol device {{ }}
        {sessions}
        """)


def test_a_router_peered_through_a_global_bgppeer_learns_every_block_and_nothing_outside_the_pools(cluster, store, etcd_endpoint, tmp_path):
    create_pool(store, "v4", "198.18.43.0/24", 26)
    nodes = [cluster.add_node() for _ in range(2)]
    router_ip = f"{SUBNET_V4}.250"
    router = netns.add(f"{netns.PREFIX}router-{os.getpid()}")
    link = f"calrtr{cluster.id}"
    sock, pid = tmp_path / "router.ctl", tmp_path / "router.pid"
    try:
        netns.ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", router)
        netns.ip("link", "set", link, "master", cluster.bridge, "up")
        netns.ip("-n", router, "addr", "add", f"{router_ip}/24", "dev", "eth0")
        netns.ip("-n", router, "link", "set", "eth0", "up")
        netns.ip("-n", router, "route", "add", "default", "via", GATEWAY_V4)
        config = tmp_path / "router.conf"
        config.write_text(router_config(router_ip, [n.ipv4 for n in nodes]))
        in_ns(router, "bird", "-c", str(config), "-s", str(sock), "-P", str(pid))
        calicoctl(etcd_endpoint, "apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "tor"},
            "spec": {"peerIP": router_ip, "asNumber": ROUTER_AS},
        }))
        blocks = set()
        for node in nodes:
            _, (address,) = node.add_pod(etcd_endpoint)
            blocks.add(block_of(address))

        def learned() -> set[str]:
            out = in_ns(router, "birdc", "-s", str(sock), "show", "route").stdout
            return {line.split()[0] for line in out.splitlines() if line[:1].isdigit()}

        assert wait_for("the router to learn every block", lambda: blocks <= learned(), 20)
        routes = learned()
        assert routes == blocks, f"the router learned routes outside the pools: {routes - blocks}"
        for node in nodes:
            assert any(name.startswith("Global_") for name in sessions(node)), sessions(node)
    finally:
        subprocess.run(["kill", pid.read_text().strip()] if pid.exists() else ["true"], check=False)
        netns.delete(router)
        netns.ip("link", "del", link, check=False)
