"""The pure parts of the tunnel-address controller (calico_cni/node/tunnel_addresses.py) and of the
allocator's intended use: which pools qualify, how the Node's field is read and written, what a
pass compares to decide whether IPAM must be read. The IPAM and Node work itself is tested against
etcd in tests/etcd/test_tunnel_addresses.py."""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from calico_cni.datastore.etcd import KeyValue
from calico_cni.model import keys
from calico_cni.model.records import TUNNEL, WORKLOAD, IPPool
from calico_cni.node.cluster_view import ClusterView
from calico_cni.node.node_record import changed
from calico_cni.node.syncer import Snapshot
from calico_cni.node import tunnel_addresses as ta
from calico_cni.node.tunnel_addresses import IPIP, KINDS, VXLAN_V4, VXLAN_V6, TunnelAddressController
from calico_ipam.allocator import Attachment, FamilyRequest
from calico_ipam.errors import AddressesExhausted
from calico_ipam.pools import pool_containing, usable_pools

ME = "n1"


def kv(key: str, doc: dict, revision: int = 1) -> KeyValue:
    return KeyValue(key, json.dumps(doc).encode(), revision, revision, 1)


def pool_kv(name: str, cidr: str, **spec) -> KeyValue:
    return kv(keys.pool(name), {"kind": "IPPool", "metadata": {"name": name}, "spec": {"cidr": cidr, **spec}})


def node_kv(name: str = ME, labels: dict | None = None, **spec) -> KeyValue:
    return kv(keys.node(name), {"kind": "Node", "metadata": {"name": name, "labels": labels or {}}, "spec": spec})


def view(*items: KeyValue) -> ClusterView:
    return ClusterView.read({i.key: i for i in items}, ME)


def names(pools) -> list[str]:
    return [p.name for p in pools]


# --- qualification ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, qualifies", [("Always", True), ("CrossSubnet", True), ("Never", False), (None, False)])
def test_vxlan_mode_always_and_cross_subnet_qualify(mode, qualifies):
    spec = {"vxlanMode": mode} if mode else {}
    v = view(node_kv(), pool_kv("p", "198.18.0.0/16", **spec))
    assert names(ta.qualifying_pools(v, VXLAN_V4)) == (["p"] if qualifies else [])
    assert ta.qualifying_pools(v, IPIP) == []  # the IPIP mode is Never


def test_each_kind_takes_its_family_and_its_mode():
    v = view(
        node_kv(),
        pool_kv("v4-vxlan", "198.18.0.0/20", vxlanMode="Always"),
        pool_kv("v6-vxlan", "fd00:198:18::/64", vxlanMode="CrossSubnet"),
        pool_kv("v4-ipip", "198.18.16.0/20", ipipMode="Always"),
        pool_kv("v6-ipip", "fd00:198:18:1::/64", ipipMode="Always"),  # IPIP is IPv4 only
    )
    assert names(ta.qualifying_pools(v, VXLAN_V4)) == ["v4-vxlan"]
    assert names(ta.qualifying_pools(v, VXLAN_V6)) == ["v6-vxlan"]
    assert names(ta.qualifying_pools(v, IPIP)) == ["v4-ipip"]


def test_disabled_pools_never_qualify():
    v = view(node_kv(), pool_kv("p", "198.18.0.0/16", vxlanMode="Always", disabled=True))
    assert ta.qualifying_pools(v, VXLAN_V4) == []


@pytest.mark.parametrize("uses, qualifies", [(None, True), ([], True), (["Tunnel"], True), (["Workload", "Tunnel"], True), (["Workload"], False)])
def test_allowed_uses_empty_or_with_tunnel(uses, qualifies):
    spec = {"vxlanMode": "Always"}
    if uses is not None:
        spec["allowedUses"] = uses
    v = view(node_kv(), pool_kv("p", "198.18.0.0/16", **spec))
    assert bool(ta.qualifying_pools(v, VXLAN_V4)) is qualifies


@pytest.mark.parametrize("selector, qualifies", [("all()", True), ("rack == 'a'", True), ("rack == 'b'", False), ("has(gpu)", False), ("not valid ((", False)])
def test_the_node_selector_is_matched_against_the_nodes_labels(selector, qualifies):
    v = view(node_kv(labels={"rack": "a"}), pool_kv("p", "198.18.0.0/16", vxlanMode="Always", nodeSelector=selector))
    assert bool(ta.qualifying_pools(v, VXLAN_V4)) is qualifies


def test_no_node_no_pool_and_pools_in_name_order():
    pools = [pool_kv(n, c, vxlanMode="Always") for n, c in (("b", "198.18.1.0/24"), ("a", "198.18.0.0/24"))]
    assert ta.qualifying_pools(view(*pools), VXLAN_V4) == []
    assert names(ta.qualifying_pools(view(node_kv(), *pools), VXLAN_V4)) == ["a", "b"]


# --- the Node's fields ---------------------------------------------------------------------------


def test_handles_and_types_are_calicos():
    assert [(k.handle("n1"), k.attr_type, k.field) for k in KINDS] == [
        ("vxlan-tunnel-addr-n1", "vxlanTunnelAddress", "spec.ipv4VXLANTunnelAddr"),
        ("vxlan-v6-tunnel-addr-n1", "vxlanV6TunnelAddress", "spec.ipv6VXLANTunnelAddr"),
        ("ipip-tunnel-addr-n1", "ipipTunnelAddress", "spec.bgp.ipv4IPIPTunnelAddr"),
    ]


def field_of(doc: dict, kind):
    """The raw value of the Node document's field for `kind` (None when absent or empty)."""
    value = doc.get("spec")
    for part in kind.path:
        value = value.get(part) if isinstance(value, dict) else None
    return value or None


def with_field(doc: dict, kind, address):
    """The Node document as the controller writes it: `set_field` through node_record's change."""
    return changed(doc, lambda d: ta.set_field(d, kind, address))


def test_set_field_sets_and_clears_keeping_everything_else():
    doc = {"kind": "Node", "metadata": {"name": "n1", "labels": {"a": "b"}}, "spec": {"bgp": {"ipv4Address": "198.19.0.1/24"}, "orchRefs": [{"x": 1}]}}
    set_v4 = with_field(doc, VXLAN_V4, "198.18.0.0")
    assert set_v4 == {**doc, "spec": {**doc["spec"], "ipv4VXLANTunnelAddr": "198.18.0.0"}}
    assert "ipv4VXLANTunnelAddr" not in doc["spec"]  # the argument is not changed
    set_ipip = with_field(set_v4, IPIP, "198.18.1.0")
    assert set_ipip["spec"]["bgp"] == {"ipv4Address": "198.19.0.1/24", "ipv4IPIPTunnelAddr": "198.18.1.0"}
    assert field_of(set_ipip, IPIP) == "198.18.1.0" and field_of(set_ipip, VXLAN_V6) is None
    assert with_field(with_field(set_ipip, IPIP, None), VXLAN_V4, None) == doc


def test_clearing_the_ipip_address_of_an_otherwise_empty_bgp_removes_bgp():
    doc = {"metadata": {"name": "n1"}, "spec": {}}
    with_ipip = with_field(doc, IPIP, "198.18.1.0")
    assert with_ipip["spec"] == {"bgp": {"ipv4IPIPTunnelAddr": "198.18.1.0"}}
    assert with_field(with_ipip, IPIP, None) == doc
    assert with_field(doc, IPIP, None) == doc  # nothing to clear: nothing added
    assert with_field({"metadata": {"name": "n1"}}, VXLAN_V4, None) == {"metadata": {"name": "n1"}}


# --- what a pass compares ------------------------------------------------------------------------


def test_inputs_change_with_pools_labels_and_fields_not_with_other_node_fields():
    base = view(node_kv(), pool_kv("p", "198.18.0.0/16", vxlanMode="Always"))
    same = view(node_kv(bgp={"ipv4Address": "198.19.0.9/24"}), pool_kv("p", "198.18.0.0/16", vxlanMode="Always"))
    assert ta.inputs(base) == ta.inputs(same)
    for other in (
        view(node_kv(labels={"x": "y"}), pool_kv("p", "198.18.0.0/16", vxlanMode="Always")),
        view(node_kv(ipv4VXLANTunnelAddr="198.18.0.1"), pool_kv("p", "198.18.0.0/16", vxlanMode="Always")),
        view(node_kv(), pool_kv("p", "198.18.0.0/16", vxlanMode="Always", disabled=True)),
        view(node_kv(), pool_kv("p", "198.18.0.0/16", vxlanMode="Always"), pool_kv("q", "198.18.0.0/16")),
    ):
        assert ta.inputs(other) != ta.inputs(base)


def test_inputs_after_a_pass_are_what_the_cache_shows_once_it_sees_the_write():
    before = view(node_kv(), pool_kv("p", "198.18.0.0/16", vxlanMode="Always"))
    after = view(node_kv(ipv4VXLANTunnelAddr="198.18.0.0"), pool_kv("p", "198.18.0.0/16", vxlanMode="Always"))
    held = {VXLAN_V4: ipaddress.ip_address("198.18.0.0"), VXLAN_V6: None, IPIP: None}
    assert ta.inputs_after(ta.inputs(before), held) == ta.inputs(after)
    # A kind the pass did not reconcile keeps what the Node had.
    assert ta.inputs_after(ta.inputs(after), {VXLAN_V6: None}) == ta.inputs(after)


class _NoDatastore:
    def __call__(self):
        raise AssertionError("the pass must not connect")


def test_a_pass_with_settled_inputs_makes_no_etcd_call():
    controller = TunnelAddressController(ME, None, _NoDatastore())
    v = view(node_kv(), pool_kv("p", "198.18.0.0/16", vxlanMode="Always"))
    snapshot = Snapshot({i.key: i for i in (node_kv(), pool_kv("p", "198.18.0.0/16", vxlanMode="Always"))}, 5, True, 1)
    assert controller.due(snapshot)  # no good pass yet
    controller._settled = (ta.inputs(v),)  # noqa: SLF001 - as a good pass leaves it
    now = time.monotonic()
    controller._next_ipam = now + ta.SAFETY_INTERVAL  # noqa: SLF001
    assert not controller.due(snapshot, now=now + ta.SAFETY_INTERVAL - 1)
    assert controller.run_pass(snapshot) is None  # connecting would raise
    assert controller.due(snapshot, now=now + ta.SAFETY_INTERVAL)  # the safety check
    changed = Snapshot({**snapshot.items, keys.pool("q"): pool_kv("q", "198.19.0.0/16")}, 6, True, 2)
    assert controller.due(changed, now=now)


def test_describe_names_the_addresses_held():
    assert ta.describe({VXLAN_V4: ipaddress.ip_address("198.18.0.0"), VXLAN_V6: None}) == "tunnel addresses: VXLAN 198.18.0.0"
    assert ta.describe({VXLAN_V4: None}) == "no tunnel address needed"


# --- the allocator's intended use ----------------------------------------------------------------


def test_a_tunnel_attachment_records_exactly_node_and_type():
    att = Attachment.tunnel("vxlan-tunnel-addr-n1", "n1", "vxlanTunnelAddress")
    assert att.secondary() == {"node": "n1", "type": "vxlanTunnelAddress"}
    assert set(Attachment("net.c1", "n1", "eth0").secondary()) == {"node", "ifname", "timestamp"}
    assert FamilyRequest(4).use == WORKLOAD


def _pool(name: str, cidr: str, uses: tuple[str, ...]) -> IPPool:
    return IPPool.new(name, cidr, 26, allowed_uses=uses)


def test_tunnel_use_takes_pools_allowing_tunnel_named_or_not():
    pools = [_pool("work", "198.18.0.0/24", (WORKLOAD,)), _pool("tun", "198.18.1.0/24", (TUNNEL,)), _pool("both", "198.18.2.0/24", (WORKLOAD, TUNNEL))]
    assert names(usable_pools(pools, 4, ME, {})) == ["both", "work"]
    assert names(usable_pools(pools, 4, ME, {}, use=TUNNEL)) == ["both", "tun"]
    assert names(usable_pools(pools, 4, ME, {}, ("tun",), use=TUNNEL)) == ["tun"]
    with pytest.raises(AddressesExhausted, match="does not allow Tunnel use"):
        usable_pools(pools, 4, ME, {}, ("work",), use=TUNNEL)
    with pytest.raises(AddressesExhausted, match="does not allow Workload use"):
        usable_pools(pools, 4, ME, {}, ("tun",))
    address = ipaddress.ip_address("198.18.1.5")
    assert pool_containing(pools, address) is None
    assert pool_containing(pools, address, TUNNEL).name == "tun"
