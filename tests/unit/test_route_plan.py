"""The encapsulation plan (calico_cni.node.route_plan) from a cluster view (calico_cni.node.cluster_view):
VXLAN devices, VTEPs, block, borrowed and blackhole routes, CrossSubnet, IPIP, MTUs, and the
records that cannot be read. Pure: no kernel, no etcd."""

from __future__ import annotations

import hashlib
import ipaddress
import json

from calico_cni.datastore.etcd import KeyValue
from calico_cni.model import keys
from calico_cni.node.cluster_view import FELIX_CONFIGURATIONS, ClusterView
from calico_cni.node.route_plan import PlannedRoute, Uplink, plan, vtep_mac

API = "projectcalico.org/v3"
UPLINK = {4: Uplink(7, "uplink0"), 6: Uplink(7, "uplink0")}


def doc(kind: str, name: str, labels: dict | None = None, **spec) -> bytes:
    meta = {"name": name, **({"labels": labels} if labels else {})}
    return json.dumps({"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec}).encode()


def node(name: str, v4: str | None, vxlan: str | None = None, v6: str | None = None, vxlan6: str | None = None, **extra) -> tuple[str, bytes]:
    bgp = {k: v for k, v in (("ipv4Address", v4), ("ipv6Address", v6)) if v}
    spec = {"bgp": bgp, **extra}
    if vxlan:
        spec["ipv4VXLANTunnelAddr"] = vxlan
    if vxlan6:
        spec["ipv6VXLANTunnelAddr"] = vxlan6
    return keys.node(name), doc("Node", name, **spec)


def pool(name: str, cidr: str, vxlan: str = "Never", ipip: str = "Never", **spec) -> tuple[str, bytes]:
    return keys.pool(name), doc("IPPool", name, cidr=cidr, vxlanMode=vxlan, ipipMode=ipip, **spec)


def block(cidr: str, affine: str | None, holders: dict[int, str | None] | None = None) -> tuple[str, bytes]:
    """A block affine to `affine`; `holders`: ordinal -> the node attribute of its allocation."""
    size = ipaddress.ip_network(cidr).num_addresses
    allocations: list[int | None] = [None] * size
    attributes = []
    for ordinal, holder in (holders or {}).items():
        allocations[ordinal] = len(attributes)
        attributes.append({"handle_id": f"h{ordinal}", "secondary": {"node": holder} if holder else {}})
    value = {"cidr": cidr, "affinity": f"host:{affine}" if affine else None, "allocations": allocations,
             "unallocated": [i for i in range(size) if allocations[i] is None], "attributes": attributes}
    return keys.block(cidr), json.dumps(value).encode()


def view(*items: tuple[str, bytes], me: str = "n1") -> ClusterView:
    return ClusterView.read({k: KeyValue(k, v, 5, 5, 1) for k, v in items}, me)


THREE = (
    node("n1", "198.19.201.11/24", "198.18.0.1"),
    node("n2", "198.19.201.12/24", "198.18.0.65"),
    node("n3", "198.19.202.13/24", "198.18.0.129"),
    block("198.18.0.0/26", "n1", {1: "n1"}),
    block("198.18.0.64/26", "n2", {1: "n2", 5: "n3"}),
    block("198.18.0.128/26", "n3", {1: "n3"}),
)


def test_vtep_mac_is_calicos_derivation():
    digest = hashlib.sha1(b"node-a").digest()
    assert vtep_mac("node-a", 4) == "66:" + ":".join(f"{b:02x}" for b in digest[:5])
    assert vtep_mac("node-a", 6) != vtep_mac("node-a", 4)
    assert vtep_mac("node-a", 6).startswith("66:")


def test_vxlan_always_device_vteps_and_routes():
    p = plan(view(pool("p", "198.18.0.0/16", vxlan="Always"), *THREE), UPLINK, 1500)
    device = p.vxlan[4]
    assert (device.name, device.vni, device.port, device.mtu, str(device.local), str(device.address)) == ("vxlan.calico", 4096, 4789, 1450, "198.19.201.11", "198.18.0.1")
    assert device.mac == vtep_mac("n1", 4) and device.parent.name == "uplink0"
    assert [(v.node, str(v.tunnel_address), str(v.node_address)) for v in p.vteps] == [("n2", "198.18.0.65", "198.19.201.12"), ("n3", "198.18.0.129", "198.19.202.13")]
    assert [str(r) for r in p.routes] == [
        "blackhole 198.18.0.0/26",
        "198.18.0.64/26 via 198.18.0.65 dev vxlan.calico onlink",
        # n3 borrowed .69 from n2's block: its own /32 towards n3's VTEP
        "198.18.0.69/32 via 198.18.0.129 dev vxlan.calico onlink",
        "198.18.0.128/26 via 198.18.0.129 dev vxlan.calico onlink",
    ]
    assert p.pod_mtu == 1450 and p.ipip is None and not p.problems


def test_cross_subnet_routes_same_subnet_natively():
    p = plan(view(pool("p", "198.18.0.0/16", vxlan="CrossSubnet"), *THREE), UPLINK, 1500)
    assert "198.18.0.64/26 via 198.19.201.12 dev uplink0 onlink" in [str(r) for r in p.routes]
    assert "198.18.0.128/26 via 198.18.0.129 dev vxlan.calico onlink" in [str(r) for r in p.routes]


def test_overrides_from_felix_configuration_and_node():
    items = (
        pool("p", "198.18.0.0/16", vxlan="Always"),
        node("n1", "198.19.201.11/24", "198.18.0.1", vxlanTunnelMACAddr="66:AA:bb:cc:dd:ee"),
        (FELIX_CONFIGURATIONS + "default", doc("FelixConfiguration", "default", vxlanVNI=5000, vxlanPort=8472, vxlanMTU=1400)),
        (FELIX_CONFIGURATIONS + "node.n1", doc("FelixConfiguration", "node.n1", vxlanMTU=1300)),
    )
    device = plan(view(*items), UPLINK, 1500).vxlan[4]
    assert (device.vni, device.port, device.mtu, device.mac) == (5000, 8472, 1300, "66:aa:bb:cc:dd:ee")


def test_bad_felix_values_are_reported_and_defaults_kept():
    items = (pool("p", "198.18.0.0/16", vxlan="Always"), node("n1", "198.19.201.11/24", "198.18.0.1"),
             (FELIX_CONFIGURATIONS + "default", doc("FelixConfiguration", "default", vxlanVNI=1 << 24, vxlanPort="x")))
    v = view(*items)
    assert (v.felix.vxlan_vni, v.felix.vxlan_port) == (4096, 4789)
    assert len(v.problems) == 2 and all("FelixConfiguration default" in p for p in v.problems)


def test_no_tunnel_address_yet_means_no_device_and_a_problem():
    p = plan(view(pool("p", "198.18.0.0/16", vxlan="Always"), node("n1", "198.19.201.11/24"), node("n2", "198.19.201.12/24", "198.18.0.65"),
                  block("198.18.0.64/26", "n2")), UPLINK, 1500)
    assert p.vxlan == {} and p.routes == [] and "waiting for node n1's IPv4 VXLAN tunnel address" in p.problems[0]
    # VXLAN is in use all the same: the device is kept, and new pods get an MTU that fits.
    assert p.vxlan_in_use == {4} and p.pod_mtu == 1450


def test_ipv6_device_and_mtu():
    items = (
        pool("p6", "fd00:198:18::/48", vxlan="Always"),
        node("n1", None, v6="fd00:198:19:201::11/64", vxlan6="fd00:198:18::1"),
        node("n2", None, v6="fd00:198:19:202::12/64", vxlan6="fd00:198:18:0:1::1"),
        block("fd00:198:18:0:1::/122", "n2"),
    )
    p = plan(view(*items), UPLINK, 1500)
    assert p.vxlan[6].name == "vxlan-v6.calico" and p.vxlan[6].mtu == 1430 and p.pod_mtu == 1430
    assert [str(r) for r in p.routes] == ["fd00:198:18:0:1::/122 via fd00:198:18:0:1::1 dev vxlan-v6.calico onlink"]


def test_ipip_routes_via_node_address_on_tunl0_and_cross_subnet_natively():
    p = plan(view(pool("pi", "198.18.0.0/16", ipip="CrossSubnet"), *THREE), UPLINK, 1500)
    assert p.ipip_pools == ("pi",) and p.ipip is None  # n1 has no IPIP tunnel address recorded
    assert [str(r) for r in p.routes] == [
        "blackhole 198.18.0.0/26",
        "198.18.0.64/26 via 198.19.201.12 dev uplink0 onlink",
        "198.18.0.69/32 via 198.19.202.13 dev tunl0 onlink",
        "198.18.0.128/26 via 198.19.202.13 dev tunl0 onlink",
    ]


def test_unencapsulated_pools_and_unknown_blocks_get_no_routes():
    p = plan(view(pool("p", "198.18.0.0/16"), *THREE, block("198.17.0.0/26", "n2")), UPLINK, 1500)
    assert p.routes == [] and p.vxlan == {} and p.pod_mtu == 1500


def test_block_without_affinity_routes_each_address_to_its_holder():
    items = (pool("p", "198.18.0.0/16", vxlan="Always"), *THREE[:3], block("198.18.1.0/26", None, {3: "n2", 4: "n1", 9: None}))
    routes = [str(r) for r in plan(view(*items), UPLINK, 1500).routes]
    assert "198.18.1.3/32 via 198.18.0.65 dev vxlan.calico onlink" in routes
    assert not any(r.startswith(("198.18.1.4/", "198.18.1.9/", "198.18.1.0/")) for r in routes)


def test_remote_tunnel_address_borrowed_is_a_device_route():
    items = (pool("p", "198.18.0.0/16", vxlan="Always"), node("n1", "198.19.201.11/24", "198.18.0.1"),
             node("n2", "198.19.201.12/24", "198.18.0.7"), block("198.18.0.0/26", "n1", {1: "n1", 7: "n2"}))
    assert PlannedRoute(ipaddress.ip_network("198.18.0.7/32"), "vxlan.calico") in plan(view(*items), UPLINK, 1500).routes


def test_unreadable_records_are_named_and_the_rest_planned():
    items = (pool("p", "198.18.0.0/16", vxlan="Always"), *THREE, (keys.pool("bad"), b"{"), (keys.block("198.18.9.0/26"), b"[]"),
             node("n4", "not-an-address", "198.18.3.1"))
    v = view(*items)
    assert len(v.problems) == 3
    assert len(plan(v, UPLINK, 1500).routes) == 4


def test_no_node_record_plans_nothing():
    p = plan(view(pool("p", "198.18.0.0/16", vxlan="Always")), UPLINK, 1500)
    assert p.routes == [] and "no Node resource" in p.problems[0]


def test_ipip_device_wanted_once_the_node_has_its_ipip_address():
    me = keys.node("n1"), doc("Node", "n1", bgp={"ipv4Address": "198.19.201.11/24", "ipv4IPIPTunnelAddr": "198.18.0.1"})
    p = plan(view(pool("pi", "198.18.0.0/16", ipip="Always"), me), UPLINK, 1500)
    assert p.ipip == (1480, ipaddress.IPv4Address("198.18.0.1")) and p.pod_mtu == 1480


def test_blocks_are_parsed_again_only_when_their_revision_or_content_changed():
    memo: dict = {}
    key, value = block("198.18.0.64/26", "n2", {1: "n2"})
    first = ClusterView.read({key: KeyValue(key, value, 7, 7, 1)}, "n1", memo).blocks[0]
    assert ClusterView.read({key: KeyValue(key, value, 7, 7, 1)}, "n1", memo).blocks[0] is first, "same revision and value: the parsed block"
    _, moved = block("198.18.0.64/26", "n3", {1: "n3"})
    assert ClusterView.read({key: KeyValue(key, moved, 8, 7, 2)}, "n1", memo).blocks[0].node == "n3", "a new revision is parsed"
    # An etcd restored from a backup: the same revision again, with the content it had then.
    assert ClusterView.read({key: KeyValue(key, value, 8, 7, 2)}, "n1", memo).blocks[0].node == "n2", "same revision, other content: parsed"
    bad = keys.block("198.18.9.0/26")
    for _ in range(2):
        view = ClusterView.read({bad: KeyValue(bad, b"[]", 9, 9, 1)}, "n1", memo)
        assert view.blocks == () and len(view.problems) == 1, "a corrupt block is reported on every read, from the memo too"
