"""VXLAN (issue 17): three nodes with CALICO_NETWORKING_BACKEND=vxlan on two subnets joined by a
router that knows no pod address (tests/cluster_support.py's RoutedCluster): node-1 and node-2 on
subnet A, node-3 on subnet B. One cluster serves the module; each test undoes what it changes.

The module's etcd holds two IPv4 pools from the start: `vx-always` (vxlanMode Always, one pod of
it on every node) and `vx-cross` (CrossSubnet). Tests add the IPv6, IPIP and NAT settings they
need and take them away again. The module reads etcd through calicoctl only: the per-test
`etcd_endpoint`/`store` fixtures would wipe the cluster's records.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import socket
import struct
import subprocess
from dataclasses import dataclass

import pytest

from tests import netns
from tests.cluster_support import (OUTSIDE_V4, ClusterNode, RoutedCluster, block_of, connect, in_ns, ping, routed_cluster,
                                   send_udp, wait_for)
from tests.conftest import plugin_path, wipe

ALWAYS, CROSS = "198.18.60.0/24", "198.18.61.0/24"
V6 = "fd00:198:18:60::/112"
IPIP = "198.18.62.0/24"
VNI, PORT = 4096, 4789
DEVICE, DEVICE_V6 = "vxlan.calico", "vxlan-v6.calico"
VXLAN_OVERHEAD, VXLAN_OVERHEAD_V6 = 50, 70
PROTO = "80"  # the protocol number of the daemon's routes


def calicoctl(endpoint: str, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """The installed calicoctl against the module's etcd."""
    proc = subprocess.run([plugin_path("calicoctl"), *args], input=stdin, capture_output=True, text=True, timeout=30,
                          env={"ETCD_ENDPOINTS": endpoint, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert not check or proc.returncode == 0, f"calicoctl {' '.join(args)}: {proc.stdout} {proc.stderr}"
    return proc


def apply_pool(endpoint: str, name: str, cidr: str, block_size: int, **spec) -> None:
    calicoctl(endpoint, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
        "spec": {"cidr": cidr, "blockSize": block_size, "ipipMode": "Never", "vxlanMode": "Never", "natOutgoing": False,
                 "nodeSelector": "all()", **spec},
    }))


def patch_pool(endpoint: str, name: str, **spec) -> None:
    calicoctl(endpoint, "patch", "ippool", name, "-p", json.dumps({"spec": spec}))


def delete_pool(endpoint: str, name: str) -> None:
    """Clean-up: the pool goes, with whatever addresses it still holds."""
    if calicoctl(endpoint, "get", "ippool", name, check=False).returncode == 0:
        calicoctl(endpoint, "delete", "ippool", name, "--force")


def node_spec(endpoint: str, nodename: str) -> dict:
    return json.loads(calicoctl(endpoint, "get", "node", nodename, "-o", "json").stdout).get("spec") or {}


def tunnel_address(endpoint: str, nodename: str, family: int = 4) -> str | None:
    """The Node's VXLAN tunnel address of that family, or None while it has none."""
    return node_spec(endpoint, nodename).get("ipv4VXLANTunnelAddr" if family == 4 else "ipv6VXLANTunnelAddr")


def derived_mac(nodename: str, v6: bool = False) -> str:
    """Calico's VTEP MAC: 0x66, then the first five bytes of SHA-1 of the node name (`<node>-v6`)."""
    digest = hashlib.sha1((f"{nodename}-v6" if v6 else nodename).encode()).digest()
    return ":".join(f"{b:02x}" for b in b"\x66" + digest[:5])


def daemon_routes(node: ClusterNode, version: int = 4) -> dict[str, dict]:
    """The node's routes of the daemon's protocol, by destination."""
    return {r["dst"]: r for r in node.ip_json(f"-{version}", "route", "show", "proto", PROTO)}


def neighbours(node: ClusterNode, device: str = DEVICE) -> dict[str, str]:
    """Permanent neighbour entries on the device: address -> MAC."""
    if node.link(device) is None:
        return {}
    return {n["dst"]: n.get("lladdr") for n in node.ip_json("neigh", "show", "dev", device)}


def fdb(node: ClusterNode, device: str = DEVICE) -> dict[str, str]:
    """FDB entries of the device that name a remote VTEP: MAC -> remote address."""
    if node.link(device) is None:
        return {}
    return {e["mac"]: e["dst"] for e in node.bridge_json("fdb", "show", "dev", device) if e.get("dst")}


def health_parts(node: ClusterNode) -> dict:
    return (node.health() or {}).get("parts") or {}


def part_ready(node: ClusterNode, part: str) -> bool:
    return bool(health_parts(node).get(part, {}).get("ready"))


def uplink_mtu(node: ClusterNode) -> int:
    return node.link(node.uplink)["mtu"]


@dataclass
class VX:
    cluster: RoutedCluster
    endpoint: str
    nodes: list[ClusterNode]
    pods: dict[str, tuple[str, str]]  # nodename -> (pod namespace, its address in vx-always)

    def node(self, name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.nodename == name)


@pytest.fixture(scope="module")
def vx(system, etcd, tmp_path_factory):
    """The module's cluster: the two IPv4 pools, three vxlan nodes (A, A, B), a pod on each."""
    wipe(etcd.endpoint)
    endpoint = etcd.endpoint
    apply_pool(endpoint, "vx-always", ALWAYS, 26, vxlanMode="Always")
    apply_pool(endpoint, "vx-cross", CROSS, 26, vxlanMode="CrossSubnet")
    with routed_cluster(tmp_path_factory.mktemp("vxlan") / "cluster") as cluster:
        nodes = [cluster.add_node(subnet=subnet, CALICO_NETWORKING_BACKEND="vxlan") for subnet in ("a", "a", "b")]
        pods = {}
        for node in nodes:
            pod, (address,) = node.add_pod(endpoint, ipam={"ipv4_pools": [ALWAYS]})
            pods[node.nodename] = (pod, address)
        yield VX(cluster, endpoint, nodes, pods)


def all_pairs_ping(vx: VX, timeout: float = 30) -> None:
    for source in vx.nodes:
        pod, _ = vx.pods[source.nodename]
        for target in vx.nodes:
            if target is not source:
                address = vx.pods[target.nodename][1]
                wait_for(f"{source.nodename}'s pod -> {target.nodename}'s pod {address}", lambda a=address: ping(pod, a), timeout)


def test_always_pods_on_every_node_reach_each_other_and_the_router_carries_only_vxlan(vx):
    all_pairs_ping(vx)
    # Counted once everything is programmed (a ping before that may take the default route).
    vx.cluster.reset_router_counts()
    for source in vx.nodes:
        for target in vx.nodes:
            if target is not source:
                assert ping(vx.pods[source.nodename][0], vx.pods[target.nodename][1]), f"{source.nodename} -> {target.nodename}"
    counts = vx.cluster.router_counts()
    assert counts["vxlan"] > 0, f"the router saw no VXLAN between the subnets: {counts}"
    assert counts["other"] == 0 and counts["pools"] == 0, f"the router carried something other than VXLAN between nodes: {counts}"

    for node in vx.nodes:
        link = node.link(DEVICE)
        assert link is not None, f"{node.nodename} has no {DEVICE}"
        data = link["linkinfo"]["info_data"]
        assert link["linkinfo"]["info_kind"] == "vxlan"
        assert (data["id"], data["port"], data["learning"]) == (VNI, PORT, False), data
        assert data.get("local") == node.ipv4 and data.get("link") == node.uplink, data
        assert link["mtu"] == uplink_mtu(node) - VXLAN_OVERHEAD
        assert link["address"] == derived_mac(node.nodename)
        assert "UP" in link["flags"]
        tunnel = tunnel_address(vx.endpoint, node.nodename)
        on_device = [(a["local"], a["prefixlen"]) for a in node.ip_json("-4", "addr", "show", "dev", DEVICE)[0]["addr_info"]]
        assert on_device == [(tunnel, 32)], on_device

    one, three = vx.node("node-1"), vx.node("node-3")
    route = daemon_routes(one).get(block_of(vx.pods["node-3"][1]))
    assert route is not None, f"node-1 has no proto {PROTO} route to node-3's block: {daemon_routes(one)}"
    assert route["dev"] == DEVICE and route.get("gateway") == tunnel_address(vx.endpoint, three.nodename), route
    assert "onlink" in route.get("flags", []) and route.get("metric", 0) > 0, route
    own = daemon_routes(one).get(block_of(vx.pods["node-1"][1]))
    assert own is not None and own.get("type") == "blackhole", f"node-1's own block is a blackhole: {daemon_routes(one)}"
    # Per remote node: a permanent neighbour and an FDB entry for its VTEP.
    for other in (vx.node("node-2"), three):
        mac = derived_mac(other.nodename)
        assert neighbours(one).get(tunnel_address(vx.endpoint, other.nodename)) == mac, neighbours(one)
        assert fdb(one).get(mac) == other.ipv4, fdb(one)


def test_crosssubnet_routes_natively_within_a_subnet_and_through_vxlan_across(vx):
    one, two, three = vx.nodes
    made = [(node, *node.add_pod(vx.endpoint, ipam={"ipv4_pools": [CROSS]})) for node in vx.nodes]
    try:
        (pod1, (a1,)), (pod2, (a2,)), (pod3, (a3,)) = [(pod, addresses) for _, pod, addresses in made]
        same = wait_for("node-1's route to node-2's CrossSubnet block", lambda: daemon_routes(one).get(block_of(a2)), 30)
        assert same["dev"] == one.uplink and same.get("gateway") == two.ipv4, f"same subnet: natively via node-2: {same}"
        across = wait_for("node-1's route to node-3's CrossSubnet block", lambda: daemon_routes(one).get(block_of(a3)), 30)
        assert across["dev"] == DEVICE and across.get("gateway") == tunnel_address(vx.endpoint, three.nodename), across
        back = wait_for("node-3's route to node-1's CrossSubnet block", lambda: daemon_routes(three).get(block_of(a1)), 30)
        assert back["dev"] == DEVICE, back
        for pod, address in ((pod1, a2), (pod2, a1), (pod1, a3), (pod3, a1)):
            assert wait_for(f"{pod} -> {address}", lambda pod=pod, address=address: ping(pod, address), 20)
    finally:
        for node, pod, _ in made:
            node.remove_pod(vx.endpoint, pod, ipam={"ipv4_pools": [CROSS]})


def test_node_tunnel_fields_and_ipam_check(vx):
    for node in vx.nodes:
        address = wait_for(f"{node.nodename}'s ipv4VXLANTunnelAddr", lambda node=node: tunnel_address(vx.endpoint, node.nodename), 30)
        assert any(ipaddress.ip_address(address) in ipaddress.ip_network(p) for p in (ALWAYS, CROSS)), address
        spec = node_spec(vx.endpoint, node.nodename)
        assert "vxlanTunnelMACAddr" not in spec, "the MAC is read as an override, never written"
        info = json.loads(calicoctl(vx.endpoint, "ipam", "show", "--ip", address, "-o", "json").stdout)
        assert info.get("handle") == f"vxlan-tunnel-addr-{node.nodename}", info
        assert info.get("attributes") == {"node": node.nodename, "type": "vxlanTunnelAddress"}, info
    check = calicoctl(vx.endpoint, "ipam", "check", "--grace", "0", check=False)
    assert check.returncode == 0, f"calicoctl ipam check found problems: {check.stdout} {check.stderr}"


def test_mtu_file_and_a_new_pods_mtu(vx):
    node = vx.node("node-1")
    path = node.state_dir / "mtu"
    expected = uplink_mtu(node) - VXLAN_OVERHEAD
    wait_for(f"{path} to hold {expected}", lambda: path.exists() and path.read_text().strip() == str(expected), 30)
    conf = {"mtu_file": str(path)}
    pod, _ = node.add_pod(vx.endpoint, ipam={"ipv4_pools": [ALWAYS]}, conf=conf)
    try:
        eth0 = json.loads(netns.ip("-n", pod, "-j", "link", "show", "eth0").stdout)[0]
        assert eth0["mtu"] == expected, f"a new pod's eth0 MTU {eth0['mtu']}, the MTU file says {expected}"
    finally:
        node.remove_pod(vx.endpoint, pod, ipam={"ipv4_pools": [ALWAYS]}, conf=conf)


def test_the_device_is_recreated_after_someone_deletes_it(vx):
    one = vx.node("node-1")
    before = wait_for(f"node-1's {DEVICE}", lambda: one.link(DEVICE), 30)
    in_ns(one.ns, "ip", "link", "del", DEVICE)
    wait_for(f"node-1's {DEVICE} to come back up", lambda: (link := one.link(DEVICE)) is not None and link["ifindex"] != before["ifindex"] and "UP" in link["flags"], 30)
    pod1, a1 = vx.pods["node-1"]
    pod3, a3 = vx.pods["node-3"]
    assert wait_for("node-1's pod -> node-3's pod", lambda: ping(pod1, a3), 30)
    assert wait_for("node-3's pod -> node-1's pod", lambda: ping(pod3, a1), 30)


def test_nat_outgoing_on_and_off_and_never_between_pods(vx):
    one = vx.node("node-1")
    pod1, a1 = vx.pods["node-1"]
    pod3, a3 = vx.pods["node-3"]
    all_pairs_ping(vx)
    outside = vx.cluster.listen(vx.cluster.outside, OUTSIDE_V4, 8080)
    neighbour = vx.cluster.listen(pod3, a3, 8081)
    try:
        assert not connect(pod1, OUTSIDE_V4, 8080), "natOutgoing false: the outside has no route back to the pool"
        assert outside.peers() == []
        patch_pool(vx.endpoint, "vx-always", natOutgoing=True)
        wait_for("a pod's connection to the outside", lambda: connect(pod1, OUTSIDE_V4, 8080), 30)
        # The listener writes what it accepted a moment after the client is done.
        wait_for("the outside's record of the connection", outside.peers, 10)
        assert set(outside.peers()) == {one.ipv4}, f"masqueraded to node-1's address: {outside.peers()}"
        assert connect(pod1, a3, 8081), "pod -> pod on another node"
        wait_for("node-3's pod's record of the connection", neighbour.peers, 10)
        assert neighbour.peers() == [a1], f"pod-to-pod is never masqueraded: {neighbour.peers()}"
        patch_pool(vx.endpoint, "vx-always", natOutgoing=False)
        wait_for("natOutgoing false to stop the connection", lambda: not connect(pod1, OUTSIDE_V4, 8080, timeout=2), 30)
    finally:
        patch_pool(vx.endpoint, "vx-always", natOutgoing=False)
        outside.stop()
        neighbour.stop()


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def vxlan_packet(dst_mac: str, inner_src: str, inner_dst: str, dport: int, payload: bytes = b"injected") -> bytes:
    """A VXLAN payload (what goes in the outer UDP datagram): VNI 4096, an Ethernet frame to
    `dst_mac` carrying IPv4/UDP from inner_src to inner_dst:dport."""
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, socket.IPPROTO_UDP, 0, socket.inet_aton(inner_src), socket.inet_aton(inner_dst))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    ether = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex("660000000001") + b"\x08\x00"
    return struct.pack("!B3xI", 0x08, VNI << 8) + ether + ip + udp


def test_a_vxlan_packet_from_a_pod_is_dropped_at_its_own_node_and_at_another(vx):
    """A pod sends encapsulated packets to node-1 (its own) and node-2, whose inner datagram goes to
    a listener on the target's tunnel address. With natOutgoing on, the one to node-2 leaves
    masqueraded to node-1's address, so node-2's input filter alone would let it in: only the
    drop of a pod's packets to the VXLAN port keeps it out. The same packet sent by another
    node's host arrives (the packet is sound, the listener hears)."""
    one, two, three = vx.nodes
    pod1, _ = vx.pods["node-1"]
    all_pairs_ping(vx)
    tunnels = {n.nodename: tunnel_address(vx.endpoint, n.nodename) for n in vx.nodes}
    forged_src = tunnels["node-3"]  # routed through the device on node-1 and node-2 alike
    patch_pool(vx.endpoint, "vx-always", natOutgoing=True)
    listeners = {"outside": vx.cluster.listen(vx.cluster.outside, OUTSIDE_V4, 8080)}
    try:
        wait_for("natOutgoing to take effect (a pod reaches the outside)", lambda: connect(pod1, OUTSIDE_V4, 8080, timeout=2), 30)
        for target in (one, two):
            listeners[target.nodename] = vx.cluster.listen(target.ns, tunnels[target.nodename], 5555, "udp")
        for target in (one, two):
            packet = vxlan_packet(derived_mac(target.nodename), forged_src, tunnels[target.nodename], 5555)
            for _ in range(3):
                send_udp(pod1, target.ipv4, PORT, packet)
        # Controls: the same kind of packet from another node's host arrives.
        for target, sender in ((one, two), (two, one)):
            packet = vxlan_packet(derived_mac(target.nodename), tunnels[sender.nodename], tunnels[target.nodename], 5555)
            send_udp(sender.ns, target.ipv4, PORT, packet)
            wait_for(f"the control packet from {sender.nodename} at {target.nodename}", lambda t=target, s=sender: tunnels[s.nodename] in listeners[t.nodename].peers(), 10)
        for target in (one, two):
            assert forged_src not in listeners[target.nodename].peers(), f"a pod's VXLAN packet was decapsulated on {target.nodename}"
    finally:
        patch_pool(vx.endpoint, "vx-always", natOutgoing=False)
        for listener in listeners.values():
            listener.stop()


def test_a_removed_node_loses_its_entries_everywhere(vx):
    four = vx.cluster.add_node("node-4", subnet="b", CALICO_NETWORKING_BACKEND="vxlan")
    pod4, (a4,) = four.add_pod(vx.endpoint, ipam={"ipv4_pools": [ALWAYS]})
    block4 = block_of(a4)
    mac4 = derived_mac(four.nodename)
    tunnel4 = wait_for("node-4's tunnel address", lambda: tunnel_address(vx.endpoint, four.nodename), 30)
    for node in vx.nodes:
        wait_for(f"{node.nodename}'s entries for node-4", lambda node=node: neighbours(node).get(tunnel4) == mac4 and fdb(node).get(mac4) == four.ipv4 and block4 in daemon_routes(node), 30)
    four.stop()
    # --force: its pod's endpoint goes with it (and its addresses), as when a machine is gone.
    calicoctl(vx.endpoint, "delete", "node", four.nodename, "--force")
    for node in vx.nodes:
        wait_for(f"{node.nodename} to drop node-4's neighbour, FDB entry and route",
                 lambda node=node: tunnel4 not in neighbours(node) and mac4 not in fdb(node) and block4 not in daemon_routes(node), 30)
    # The others still reach each other.
    assert wait_for("node-1's pod -> node-3's pod", lambda: ping(vx.pods["node-1"][0], vx.pods["node-3"][1]), 10)


def test_ipv6_pools_over_vxlan_v6(vx):
    one, three = vx.node("node-1"), vx.node("node-3")
    apply_pool(vx.endpoint, "vx-v6", V6, 122, vxlanMode="Always")
    ipam = {"ipv4_pools": [ALWAYS], "ipv6_pools": [V6]}
    made = []
    try:
        for node in vx.nodes:
            link = wait_for(f"{node.nodename}'s {DEVICE_V6}", lambda node=node: node.link(DEVICE_V6), 30)
            data = link["linkinfo"]["info_data"]
            assert (data["id"], data["port"], data["learning"]) == (VNI, PORT, False), data
            assert data.get("local6", data.get("local")) == node.ipv6, data
            assert link["mtu"] == uplink_mtu(node) - VXLAN_OVERHEAD_V6
            assert link["address"] == derived_mac(node.nodename, v6=True)
            address = wait_for(f"{node.nodename}'s ipv6VXLANTunnelAddr", lambda node=node: tunnel_address(vx.endpoint, node.nodename, 6), 30)
            assert ipaddress.ip_address(address) in ipaddress.ip_network(V6), address
        for node in (one, three):
            pod, addresses = node.add_pod(vx.endpoint, ipv6=True, ipam=ipam)
            made.append((node, pod, [a for a in addresses if ":" in a][0]))
        (_, pod1, a1), (_, pod3, a3) = made
        assert wait_for("node-1's IPv6 pod -> node-3's", lambda: ping(pod1, a3), 30)
        assert wait_for("node-3's IPv6 pod -> node-1's", lambda: ping(pod3, a1), 30)
        route = daemon_routes(one, 6).get(block_of(a3, 122))
        assert route is not None and route["dev"] == DEVICE_V6, daemon_routes(one, 6)
        # Both encapsulations in use: the pod MTU is the smaller (Felix's determinePodMTU).
        path = one.state_dir / "mtu"
        expected = uplink_mtu(one) - VXLAN_OVERHEAD_V6
        wait_for(f"{path} to hold {expected}", lambda: path.exists() and path.read_text().strip() == str(expected), 30)
        for node, pod, _ in made:
            node.remove_pod(vx.endpoint, pod, ipv6=True, ipam=ipam)
        made.clear()
        # No enabled pool needs them any more: the tunnel addresses are released (and the pool
        # can then be deleted without --force).
        patch_pool(vx.endpoint, "vx-v6", disabled=True)
        for node in vx.nodes:
            wait_for(f"{node.nodename}'s IPv6 tunnel address released", lambda node=node: tunnel_address(vx.endpoint, node.nodename, 6) is None, 30)
        calicoctl(vx.endpoint, "delete", "ippool", "vx-v6")
    finally:
        for node, pod, _ in made:
            node.remove_pod(vx.endpoint, pod, ipv6=True, ipam=ipam)
        delete_pool(vx.endpoint, "vx-v6")


def test_an_ipip_pool_is_reported_not_ready_naming_the_pool(vx):
    one = vx.node("node-1")
    apply_pool(vx.endpoint, "vx-ipip", IPIP, 26, ipipMode="Always")

    def reported() -> list[str]:
        return [name for name, part in health_parts(one).items()
                if not part.get("ready") and ("vx-ipip" in (part.get("detail") or "") or IPIP in (part.get("detail") or ""))]

    try:
        assert wait_for("a part of node-1 not ready naming the IPIP pool", reported, 30)
        status = one.calicoctl_here("node", "status")
        text = status.stdout + status.stderr
        assert "vx-ipip" in text or IPIP in text, f"calicoctl node status does not name the IPIP pool: {text}"
        address = node_spec(vx.endpoint, one.nodename).get("bgp", {}).get("ipv4IPIPTunnelAddr")
        assert address and ipaddress.ip_address(address) in ipaddress.ip_network(IPIP), f"the IPIP tunnel address is allocated: {address}"
        info = json.loads(calicoctl(vx.endpoint, "ipam", "show", "--ip", address, "-o", "json").stdout)
        assert info.get("handle") == f"ipip-tunnel-addr-{one.nodename}", info
        patch_pool(vx.endpoint, "vx-ipip", disabled=True)
        wait_for("node-1's IPIP tunnel address released", lambda: not node_spec(vx.endpoint, one.nodename).get("bgp", {}).get("ipv4IPIPTunnelAddr"), 30)
    finally:
        delete_pool(vx.endpoint, "vx-ipip")
    wait_for("node-1's parts ready again without the IPIP pool", lambda: not reported() and part_ready(one, "encapsulation"), 30)
