"""calico-node's start-up (calico_cni.node.startup) against the real etcd: the Node resource, the
address check, the default pools, ClusterInformation and the FelixConfigurations, the nodename
file, and that a restart with the same settings writes nothing.

The kernel is a stand-in (`FakeHost`: what autodetection would find, which addresses the node
holds), so these tests need no node namespace; tests/namespaces/test_autodetect.py tests the
detection itself. Records are compared with what Calico v3.30's startup.go writes."""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time

import pytest

from calico_cni.datastore.etcd import Range
from calico_cni.model.kinds.ipam import IPPOOL
from calico_cni.model.kinds.routing import NODE
from calico_cni.node import startup
from calico_cni.node.autodetect import AutodetectError
from calico_cni.node.settings import from_args
from calico_cni.node.startup import StartupError
from calico_cni.resources import verbs

R = "/calico/resources/v3/projectcalico.org/"


class FakeHost(startup.Host):
    """The node's kernel as start-up sees it: what each family's detection finds (or why not),
    and the addresses the interfaces hold."""

    def __init__(self, v4: str | None = None, v6: str | None = None, addresses: tuple[str, ...] = (), ipv6: bool = True) -> None:
        self.found = {4: v4, 6: v6}
        self.addresses = [ipaddress.ip_interface(a) for a in (*addresses, *(a for a in (v4, v6) if a))]
        self.ipv6 = ipv6
        self.detections: list[tuple[str, int]] = []

    def detect(self, method, version):
        self.detections.append((method.text, version))
        found = self.found[version]
        return (ipaddress.ip_interface(found), "") if found else (None, "no valid addresses (fake)")

    def local_cidr(self, address, version):
        if "/" in address:
            return ipaddress.ip_interface(address)
        ip = ipaddress.ip_address(address)
        return next((a for a in self.addresses if a.ip == ip), ipaddress.ip_interface(f"{ip}/{ip.max_prefixlen}"))

    def on_host(self, address):
        return any(a.ip == address.ip for a in self.addresses)

    def host_addresses(self, version):
        return [a for a in self.addresses if a.version == version]

    def ipv6_supported(self):
        return self.ipv6


@pytest.fixture
def env(etcd_endpoint, tmp_path):
    """calico-node's environment for node1: the test etcd, its own state directory, the test pools."""
    return {
        "ETCD_ENDPOINTS": etcd_endpoint,
        "NODENAME": "node1",
        "CALICO_STATE_DIR": str(tmp_path / "state"),
        "CALICO_RUN_DIR": str(tmp_path / "run"),
        "CALICO_IPV4POOL_CIDR": "198.18.0.0/16",
        "CALICO_IPV6POOL_CIDR": "fd00:198:18::/48",
    }


def start(store, env: dict, host: FakeHost | None = None, **more: str) -> startup.Registration:
    return startup.run(from_args([], {**env, **more}), store, host or FakeHost())


def doc(store, key: str) -> dict | None:
    kv = store.client.get(R + key)
    return json.loads(kv.value) if kv else None


def revision(store) -> int:
    return store.client.read([Range("/nothing-here")])[1]


def put_node(store, name: str, spec: dict, **metadata) -> None:
    node = verbs.new_resource(NODE, name, spec)
    node.doc["metadata"].update(metadata)
    assert store.commit(puts=[node])


def put_pool(store, name: str, cidr: str) -> None:
    assert store.commit(puts=[verbs.new_resource(IPPOOL, name, {"cidr": cidr, "blockSize": 26 if ":" not in cidr else 122, "ipipMode": "Never", "vxlanMode": "Never", "natOutgoing": False, "nodeSelector": "all()"})])


def write_after_first_list(monkeypatch, kind, write) -> list:
    """Another writer racing start-up: `write` runs right after start-up first lists `kind`. The
    list returned holds True once it has run."""
    real = startup.stored.list_kind
    sneaked = []

    def list_then_sneak(store_, listed, *args):
        result = real(store_, listed, *args)
        if listed is kind and not sneaked:
            sneaked.append(True)
            write()
        return result

    monkeypatch.setattr(startup.stored, "list_kind", list_then_sneak)
    return sneaked


def refused(store, env, host=None, **more) -> str:
    with pytest.raises(StartupError) as info:
        start(store, env, host, **more)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# The Node


def test_a_new_node_is_created_with_its_addresses_and_as(store, env):
    reg = start(store, env, IP="198.19.1.2/24", IP6="fd00:198:19:1::2/64", AS="64600")
    node = doc(store, "nodes/node1")
    assert node["kind"] == "Node" and node["apiVersion"] == "projectcalico.org/v3"
    assert set(node["metadata"]) == {"name", "uid", "creationTimestamp"} and node["metadata"]["name"] == "node1"
    assert node["spec"] == {"bgp": {"ipv4Address": "198.19.1.2/24", "ipv6Address": "fd00:198:19:1::2/64", "asNumber": 64600}}
    assert reg.node.doc == node
    assert (str(reg.ipv4), str(reg.ipv6), reg.as_number) == ("198.19.1.2/24", "fd00:198:19:1::2/64", 64600)
    assert reg.changes[0] == "Node(node1) created"


def test_the_dotted_as_form_is_stored_as_a_number(store, env):
    start(store, env, IP="198.19.1.2/24", AS="1.10")
    assert doc(store, "nodes/node1")["spec"]["bgp"]["asNumber"] == 65546


def test_an_update_keeps_labels_and_every_field_it_does_not_set(store, env):
    put_node(
        store, "node1",
        {"bgp": {"ipv4Address": "198.19.1.9/24", "routeReflectorClusterID": "244.0.0.1", "ipv4IPIPTunnelAddr": "198.18.0.1", "asNumber": 64700},
         "ipv4VXLANTunnelAddr": "198.18.0.2"},
        labels={"rack": "a", "route-reflector": "true"}, annotations={"note": "kept"},
    )  # fmt: skip
    before = doc(store, "nodes/node1")
    reg = start(store, env, IP="198.19.1.2/24")
    after = doc(store, "nodes/node1")
    assert after["metadata"] == before["metadata"]  # uid, creationTimestamp, labels, annotations; none added
    assert after["spec"] == {
        "bgp": {"ipv4Address": "198.19.1.2/24", "routeReflectorClusterID": "244.0.0.1", "ipv4IPIPTunnelAddr": "198.18.0.1", "asNumber": 64700},
        "ipv4VXLANTunnelAddr": "198.18.0.2",
    }
    assert reg.changes[0] == "Node(node1) updated" and reg.as_number == 64700


def test_as_set_replaces_the_stored_one_and_unset_keeps_it(store, env):
    start(store, env, IP="198.19.1.2/24", AS="64600")
    start(store, env, IP="198.19.1.2/24")
    assert doc(store, "nodes/node1")["spec"]["bgp"]["asNumber"] == 64600
    start(store, env, IP="198.19.1.2/24", AS="64601")
    assert doc(store, "nodes/node1")["spec"]["bgp"]["asNumber"] == 64601


def test_a_bare_ip_takes_the_prefix_of_its_interface_else_32(store, env):
    start(store, env, FakeHost(addresses=("198.19.1.2/26",)), IP="198.19.1.2")
    assert doc(store, "nodes/node1")["spec"]["bgp"]["ipv4Address"] == "198.19.1.2/26"
    start(store, env, FakeHost(), IP="198.19.1.3")
    assert doc(store, "nodes/node1")["spec"]["bgp"]["ipv4Address"] == "198.19.1.3/32"


def test_a_bare_ip6_is_a_128_as_calico(store, env):
    start(store, env, FakeHost(addresses=("fd00:198:19:1::2/64",)), IP="198.19.1.2/24", IP6="fd00:198:19:1::2")
    assert doc(store, "nodes/node1")["spec"]["bgp"]["ipv6Address"] == "fd00:198:19:1::2/128"


def test_ipv4_is_detected_when_nothing_is_stored_and_ipv6_only_when_asked(store, env):
    host = FakeHost(v4="198.19.3.2/24", v6="fd00:198:19:3::2/64")
    reg = start(store, env, host)
    assert host.detections == [("first-found", 4)]
    assert doc(store, "nodes/node1")["spec"]["bgp"] == {"ipv4Address": "198.19.3.2/24"}
    assert reg.ipv6 is None
    # Stored now: IP empty keeps it without detecting again.
    host = FakeHost(v4="198.19.3.3/24")
    start(store, env, host)
    assert host.detections == [] and doc(store, "nodes/node1")["spec"]["bgp"]["ipv4Address"] == "198.19.3.2/24"
    # IP=autodetect detects again; IP6=autodetect detects IPv6, with its own method.
    host = FakeHost(v4="198.19.3.3/24", v6="fd00:198:19:3::2/64")
    start(store, env, host, IP="autodetect", IP6="autodetect", IP6_AUTODETECTION_METHOD="interface=uplink0")
    assert host.detections == [("first-found", 4), ("interface=uplink0", 6)]
    assert doc(store, "nodes/node1")["spec"]["bgp"] == {"ipv4Address": "198.19.3.3/24", "ipv6Address": "fd00:198:19:3::2/64"}


def test_ip_none_keeps_the_stored_address(store, env):
    start(store, env, IP="198.19.1.2/24", IP6="fd00:198:19:1::2/64")
    host = FakeHost(v4="198.19.9.9/24")
    start(store, env, host, IP="none", IP6="none")
    assert host.detections == []
    assert doc(store, "nodes/node1")["spec"]["bgp"] == {"ipv4Address": "198.19.1.2/24", "ipv6Address": "fd00:198:19:1::2/64"}


def test_detection_failing_with_nothing_stored_is_an_error(store, env):
    text = refused(store, env, FakeHost(), IP_AUTODETECTION_METHOD="cidr=198.19.0.0/16")
    assert text == (
        "could not autodetect an IPv4 address with IP_AUTODETECTION_METHOD=cidr=198.19.0.0/16: no valid addresses (fake): "
        "choose another IP_AUTODETECTION_METHOD or set IP to this node's address"
    )
    assert doc(store, "nodes/node1") is None
    assert "IP6_AUTODETECTION_METHOD=first-found" in refused(store, env, FakeHost(), IP="198.19.1.2/24", IP6="autodetect")


def test_detection_failing_keeps_a_stored_address(store, env):
    start(store, env, IP="198.19.1.2/24")
    start(store, env, FakeHost(), IP="autodetect")
    assert doc(store, "nodes/node1")["spec"]["bgp"]["ipv4Address"] == "198.19.1.2/24"


class MethodCannotWorkHere(FakeHost):
    """A host on which the method cannot work at all (kubernetes-internal-ip, interfaces that
    cannot be read): autodetect raises rather than finding nothing."""

    def detect(self, method, version):
        raise AutodetectError(f"autodetection method {method.text} needs the Kubernetes API", "use first-found")


def test_a_method_that_cannot_work_here_is_a_failed_detection(store, env):
    # As Calico (AutoDetectCIDR returns nil): with nothing stored start-up stops naming the method...
    text = refused(store, env, MethodCannotWorkHere(), IP_AUTODETECTION_METHOD="kubernetes-internal-ip")
    assert text.startswith("could not autodetect an IPv4 address with IP_AUTODETECTION_METHOD=kubernetes-internal-ip: "
                           "autodetection method kubernetes-internal-ip needs the Kubernetes API")
    assert doc(store, "nodes/node1") is None
    # ... and a stored address is kept.
    start(store, env, IP="198.19.1.2/24")
    start(store, env, MethodCannotWorkHere(), IP="autodetect", IP_AUTODETECTION_METHOD="kubernetes-internal-ip")
    assert doc(store, "nodes/node1")["spec"]["bgp"]["ipv4Address"] == "198.19.1.2/24"


def test_a_failed_detection_clears_the_autodetected_addresses_of_an_existing_node(store, env):
    # As Calico's clearNodeIPs: IPv6 cannot be detected (nothing stored), so the autodetected
    # IPv4 address is taken off the node too: no other node keeps peering with it.
    put_node(store, "node1", {"bgp": {"ipv4Address": "198.19.1.5/24"}}, labels={"rack": "a"})
    refused(store, env, FakeHost(v4="198.19.1.2/24"), IP="autodetect", IP6="autodetect")
    node = doc(store, "nodes/node1")
    assert "bgp" not in node["spec"] and node["metadata"]["labels"] == {"rack": "a"}


@pytest.mark.parametrize("garbage", ["not-an-ip", "fd00:198:19::2/64"])
def test_a_stored_address_that_is_not_one_stops_start_up_unless_replaced(store, env, garbage):
    # Written by hand (calicoctl would refuse it). Calico's validateIP terminates on it; the
    # message says how to replace it, and IP= or a successful detection does.
    store.client.commit([], [(R + "nodes/node1", json.dumps({"kind": "Node", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "node1"}, "spec": {"bgp": {"ipv4Address": garbage}}}).encode())])
    before = revision(store)
    text = refused(store, env, FakeHost())
    assert text == f"the IPv4 address {garbage!r} stored in Node(node1) is not an IPv4 address: set IP to this node's address (or to autodetect) to replace it"
    assert revision(store) == before
    start(store, env, FakeHost(v4="198.19.3.2/24"), IP="autodetect")
    assert doc(store, "nodes/node1")["spec"]["bgp"] == {"ipv4Address": "198.19.3.2/24"}


def test_neither_ipv4_nor_ipv6_is_an_error(store, env):
    text = refused(store, env, IP="none", IP6="none")
    assert text == (
        "no IPv4 or IPv6 address configured or detected, required for Calico networking: "
        "set IP (and/or IP6) to this node's address or to autodetect, or CALICO_NETWORKING_BACKEND=none"
    )
    assert doc(store, "nodes/node1") is None


def test_an_ipv6_only_node(store, env):
    reg = start(store, env, IP="none", IP6="fd00:198:19:1::2/64")
    assert doc(store, "nodes/node1")["spec"]["bgp"] == {"ipv6Address": "fd00:198:19:1::2/64"}
    assert reg.ipv4 is None and str(reg.ipv6) == "fd00:198:19:1::2/64"


def test_backend_none_leaves_addresses_and_as_alone(store, env):
    host = FakeHost(v4="198.19.3.2/24")
    reg = start(store, env, host, CALICO_NETWORKING_BACKEND="none", IP="198.19.1.2/24", AS="64600")
    assert host.detections == []
    assert doc(store, "nodes/node1")["spec"] == {}  # registered, with no BGP settings
    assert reg.ipv4 is None and reg.as_number is None
    start(store, env, IP="198.19.1.2/24")
    start(store, env, CALICO_NETWORKING_BACKEND="none", IP="198.19.9.9/24", AS="64600")
    assert doc(store, "nodes/node1")["spec"] == {"bgp": {"ipv4Address": "198.19.1.2/24"}}


def test_the_kubernetes_node_reference(store, env):
    start(store, env, IP="198.19.1.2/24", CALICO_K8S_NODE_REF="k8s-node-1")
    assert doc(store, "nodes/node1")["spec"]["orchRefs"] == [{"nodeName": "k8s-node-1", "orchestrator": "k8s"}]


# --------------------------------------------------------------------------------------------
# Another node's address


def test_an_address_another_node_has_is_refused(store, env):
    put_node(store, "node2", {"bgp": {"ipv4Address": "198.19.1.2/24", "ipv6Address": "fd00:198:19:1::2/64"}})
    before = revision(store)
    text = refused(store, env, IP="198.19.1.2/26")
    assert text == (
        "Calico node 'node2' is already using the IPv4 address 198.19.1.2: "
        "give this node another address, or set DISABLE_NODE_IP_CHECK=true if the address is meant to be shared"
    )
    assert revision(store) == before
    text = refused(store, env, IP="198.19.1.3/24", IP6="fd00:198:19:1::2/64")
    assert text.startswith("Calico node 'node2' is already using the IPv6 address fd00:198:19:1::2: ")
    assert doc(store, "nodes/node1") is None
    # DISABLE_NODE_IP_CHECK lets it through.
    start(store, env, IP="198.19.1.2/24", DISABLE_NODE_IP_CHECK="true")
    assert doc(store, "nodes/node1")["spec"]["bgp"]["ipv4Address"] == "198.19.1.2/24"


def test_the_address_check_runs_only_when_the_address_changes(store, env):
    # As Calico: two nodes that already share an address (set so by an operator) still restart.
    start(store, env, IP="198.19.1.2/24")
    put_node(store, "node2", {"bgp": {"ipv4Address": "198.19.1.2/24"}})
    assert start(store, env, IP="198.19.1.2/24").changes == ()


def test_a_conflicting_autodetected_address_clears_the_stored_one(store, env):
    put_node(store, "node1", {"bgp": {"ipv4Address": "198.19.1.5/24", "asNumber": 64600}})
    put_node(store, "node2", {"bgp": {"ipv4Address": "198.19.1.2/24"}})
    refused(store, env, FakeHost(v4="198.19.1.2/24"), IP="autodetect")
    assert doc(store, "nodes/node1")["spec"]["bgp"] == {"asNumber": 64600}
    # An explicit address that conflicts leaves the stored one.
    put_node(store, "node3", {"bgp": {"ipv4Address": "198.19.1.7/24"}})
    start(store, env, IP="198.19.1.5/24")
    refused(store, env, IP="198.19.1.7/24")
    assert doc(store, "nodes/node1")["spec"]["bgp"]["ipv4Address"] == "198.19.1.5/24"


def test_the_check_and_the_write_are_one_transaction(store, env, monkeypatch):
    # node2 takes the address right after node1's check listed the nodes: node1's write must
    # then fail its compare, re-read, and refuse the address.
    sneaked = write_after_first_list(monkeypatch, NODE, lambda: put_node(store, "node2", {"bgp": {"ipv4Address": "198.19.1.2/24"}}))
    assert refused(store, env, IP="198.19.1.2/24").startswith("Calico node 'node2' is already using the IPv4 address 198.19.1.2")
    assert sneaked and doc(store, "nodes/node1") is None


def test_a_node_with_an_unreadable_address_does_not_block_others(store, env):
    store.client.commit([], [(R + "nodes/broken", json.dumps({"kind": "Node", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "broken"}, "spec": {"bgp": {"ipv4Address": "not-an-ip"}}}).encode())])
    start(store, env, IP="198.19.1.2/24")
    assert doc(store, "nodes/node1")["spec"]["bgp"]["ipv4Address"] == "198.19.1.2/24"


# --------------------------------------------------------------------------------------------
# Default pools


def pools(store) -> dict[str, dict]:
    kvs = store.client.get_prefix(R + "ippools/")
    return {json.loads(kv.value)["metadata"]["name"]: json.loads(kv.value)["spec"] for kv in kvs}


def test_default_pools_are_created_when_there_are_none(store, env):
    reg = start(store, env, IP="198.19.1.2/24")
    found = pools(store)
    assert found["default-ipv4-ippool"] == {
        "cidr": "198.18.0.0/16", "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never", "natOutgoing": True,
        "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"], "assignmentMode": "Automatic",
    }  # fmt: skip
    assert found["default-ipv6-ippool"] == {
        "cidr": "fd00:198:18::/48", "blockSize": 122, "ipipMode": "Never", "vxlanMode": "Never",
        "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"], "assignmentMode": "Automatic",
    }  # fmt: skip
    assert "IPPool(default-ipv4-ippool) created" in reg.changes and "IPPool(default-ipv6-ippool) created" in reg.changes


def test_pool_variables_shape_the_default_pools(store, env):
    start(
        store, env, IP="198.19.1.2/24",
        CALICO_IPV4POOL_BLOCK_SIZE="28", CALICO_IPV4POOL_IPIP="CrossSubnet", CALICO_IPV4POOL_NAT_OUTGOING="false",
        CALICO_IPV4POOL_DISABLE_BGP_EXPORT="true", CALICO_IPV4POOL_NODE_SELECTOR="rack == 'a'",
        CALICO_IPV6POOL_BLOCK_SIZE="120", CALICO_IPV6POOL_VXLAN="always", CALICO_IPV6POOL_NAT_OUTGOING="true",
    )  # fmt: skip
    v4, v6 = pools(store)["default-ipv4-ippool"], pools(store)["default-ipv6-ippool"]
    assert (v4["blockSize"], v4["ipipMode"], v4["vxlanMode"], v4.get("natOutgoing", False), v4["disableBGPExport"], v4["nodeSelector"]) == (28, "CrossSubnet", "Never", False, True, "rack == 'a'")
    assert (v6["blockSize"], v6["ipipMode"], v6["vxlanMode"], v6["natOutgoing"]) == (120, "Never", "Always", True)


def test_a_default_pool_only_for_a_family_without_pools(store, env):
    put_pool(store, "mine", "198.18.0.0/20")
    # The default pool would not overlap it: it is left out because an IPv4 pool exists.
    start(store, env, IP="198.19.1.2/24", CALICO_IPV4POOL_CIDR="198.18.128.0/17")
    assert set(pools(store)) == {"mine", "default-ipv6-ippool"}
    put_pool(store, "mine6", "fd00:198:18:1::/64")
    store.client.commit([], [], [R + "ippools/default-ipv6-ippool"])
    start(store, env, IP="198.19.1.2/24", CALICO_IPV4POOL_CIDR="198.18.128.0/17")
    assert set(pools(store)) == {"mine", "mine6"}


def test_an_ipv4_pool_another_writer_creates_meanwhile_is_not_an_error(store, env, monkeypatch):
    # Two nodes starting at once: the other creates an IPv4 pool (overlapping ours) after this
    # start-up listed none. Its create is refused for the overlap; a pool of the family exists
    # now, which is all start-up wanted, so it goes on (as Calico ignores AlreadyExists).
    sneaked = write_after_first_list(monkeypatch, IPPOOL, lambda: put_pool(store, "other-nodes-pool", "198.18.0.0/20"))
    reg = start(store, env, IP="198.19.1.2/24")
    assert sneaked and set(pools(store)) == {"other-nodes-pool", "default-ipv6-ippool"}
    assert "IPPool(default-ipv4-ippool) created" not in reg.changes


def test_a_stored_pool_with_an_unreadable_cidr_counts_for_no_family(store, env):
    # As Calico (it skips such a pool with a warning): the default pools are still created.
    bad = {"kind": "IPPool", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "broken"}, "spec": {"cidr": "not-a-cidr"}}
    store.client.commit([], [(R + "ippools/broken", json.dumps(bad).encode())])
    start(store, env, IP="198.19.1.2/24")
    assert set(pools(store)) == {"broken", "default-ipv4-ippool", "default-ipv6-ippool"}


def test_no_default_pools_and_none(store, env):
    start(store, env, IP="198.19.1.2/24", NO_DEFAULT_POOLS="true", CALICO_IPV4POOL_CIDR="", CALICO_IPV6POOL_CIDR="")
    assert pools(store) == {}
    start(store, env, IP="198.19.1.2/24", CALICO_IPV4POOL_CIDR="none")
    assert set(pools(store)) == {"default-ipv6-ippool"}


def test_no_ipv6_pool_without_ipv6(store, env):
    start(store, env, IP="198.19.1.2/24", FELIX_IPV6SUPPORT="false")
    assert set(pools(store)) == {"default-ipv4-ippool"}


def test_no_ipv6_pool_when_the_kernel_has_no_ipv6(store, env):
    start(store, env, FakeHost(ipv6=False), IP="198.19.1.2/24")
    assert set(pools(store)) == {"default-ipv4-ippool"}


def test_the_default_cidrs_when_none_is_given(store, env):
    env = {k: v for k, v in env.items() if not k.endswith("POOL_CIDR")}
    start(store, env, FakeHost(addresses=("192.168.7.1/24",)), IP="198.19.1.2/24")
    found = pools(store)
    # 192.168.0.0/16 holds a host address: Calico's first free fallback.
    assert found["default-ipv4-ippool"]["cidr"] == "172.16.0.0/16"
    v6 = ipaddress.ip_network(found["default-ipv6-ippool"]["cidr"])
    assert v6.prefixlen == 48 and v6.network_address.packed[0] == 0xFD


def test_an_invalid_pool_from_the_environment_is_refused_with_its_reason(store, env):
    text = refused(store, env, IP="198.19.1.2/24", CALICO_IPV4POOL_CIDR="198.18.0.0/28")
    assert text.startswith("cannot create the default IPv4 pool default-ipv4-ippool: CALICO_IPV4POOL_CIDR=198.18.0.0/28 (IPPool default-ipv4-ippool): ")
    assert "IP pool size is too small" in text
    assert pools(store) == {}
    text = refused(store, env, IP="198.19.1.2/24", CALICO_IPV4POOL_IPIP="Always", CALICO_IPV4POOL_VXLAN="Always")
    assert "Cannot enable both VXLAN and IPIP on the same IPPool" in text
    text = refused(store, env, IP="198.19.1.2/24", CALICO_IPV6POOL_CIDR="fe80::/64")
    assert text.startswith("cannot create the default IPv6 pool default-ipv6-ippool: ") and "Link Local" in text
    assert set(pools(store)) == {"default-ipv4-ippool"}  # the valid one was created first


def test_default_ipv4_cidr_choice():
    assert startup.default_ipv4_cidr([]) == "192.168.0.0/16"
    taken = [ipaddress.ip_interface(a) for a in ("192.168.1.1/24", "172.16.0.1/12", "172.17.5.5/32", "10.0.0.1/8")]
    assert startup.default_ipv4_cidr(taken) == "172.18.0.0/16"
    every = [ipaddress.ip_interface("192.168.0.1/16")] + [ipaddress.ip_interface(f"172.{i}.0.1/16") for i in range(16, 32)]
    assert startup.default_ipv4_cidr(every) == "192.168.0.0/16"


def test_random_ula_prefix():
    assert startup.random_ula_prefix(lambda n: bytes(range(1, n + 1))) == "fd01:203:405::/48"
    assert startup.random_ula_prefix() != startup.random_ula_prefix()


# --------------------------------------------------------------------------------------------
# Cluster records


def test_cluster_information_tiers_and_felix_configurations(store, env):
    start(store, env, IP="198.19.1.2/24", CLUSTER_TYPE="k8s,bgp")
    info = doc(store, "clusterinformations/default")["spec"]
    assert info["datastoreReady"] is True and info["clusterType"] == "k8s,bgp" and len(info["clusterGUID"]) == 32
    assert doc(store, "tiers/default")["spec"] == {"order": 1_000_000.0, "defaultAction": "Deny"}
    assert doc(store, "felixconfigurations/default")["spec"] == {"reportingInterval": "0s", "logSeverityScreen": "Info"}
    assert doc(store, "felixconfigurations/node.node1")["spec"] == {"defaultEndpointToHostAction": "Return"}


def test_felix_configurations_keep_what_operators_set_and_get_what_they_lack(store, env):
    from calico_cni.model.kinds.config import FELIX_CONFIGURATION

    assert store.commit(puts=[
        verbs.new_resource(FELIX_CONFIGURATION, "default", {"logSeverityScreen": "Debug", "bpfEnabled": False}),
        verbs.new_resource(FELIX_CONFIGURATION, "node.node1", {"defaultEndpointToHostAction": "Drop"}),
    ])  # fmt: skip
    reg = start(store, env, IP="198.19.1.2/24")
    assert doc(store, "felixconfigurations/default")["spec"] == {"logSeverityScreen": "Debug", "bpfEnabled": False, "reportingInterval": "0s"}
    assert doc(store, "felixconfigurations/node.node1")["spec"] == {"defaultEndpointToHostAction": "Drop"}
    assert "FelixConfiguration(default) updated" in reg.changes
    assert not any("node.node1" in c for c in reg.changes)


# --------------------------------------------------------------------------------------------
# The nodename file and restarts


def test_the_nodename_file(store, env, tmp_path):
    start(store, env, IP="198.19.1.2/24")
    path = tmp_path / "state" / "nodename"
    assert path.read_text() == "node1"  # no newline, as Calico writes it
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    # Elsewhere with CALICO_NODENAME_FILE, its directories created; a stale name replaced.
    other = tmp_path / "deep" / "dir" / "nodename"
    start(store, env, IP="198.19.1.2/24", CALICO_NODENAME_FILE=str(other))
    assert other.read_text() == "node1"
    other.write_text("old-name")
    inode = other.stat().st_ino
    start(store, env, IP="198.19.1.2/24", CALICO_NODENAME_FILE=str(other), NODENAME="node1")
    assert other.read_text() == "node1" and other.stat().st_ino != inode  # renamed into place
    assert sorted(os.listdir(other.parent)) == ["nodename"]  # no temporary file left


def test_a_nodename_file_that_is_not_a_regular_file_does_not_hang_start_up(store, env, tmp_path):
    # A FIFO where the nodename file goes (a mistaken CALICO_NODENAME_FILE): reading it to compare
    # would block until a writer comes. It is replaced by the file instead.
    fifo = tmp_path / "nodename"
    os.mkfifo(fifo)
    done = []
    thread = threading.Thread(target=lambda: done.append(start(store, env, IP="198.19.1.2/24", CALICO_NODENAME_FILE=str(fifo))), daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "w"):  # release the blocked reader
            pass
        thread.join(10)
        pytest.fail("start-up blocked reading the nodename FIFO")
    assert done and fifo.read_text() == "node1" and fifo.is_file()


def test_a_nodename_file_that_cannot_be_written_is_a_startup_error(store, env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    text = refused(store, env, IP="198.19.1.2/24", CALICO_NODENAME_FILE=str(blocker / "nodename"))
    assert text.startswith(f"cannot write the node name to {blocker}/nodename: ")


def test_a_state_directory_that_cannot_be_made_is_a_startup_error(store, env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    text = refused(store, env, IP="198.19.1.2/24", CALICO_STATE_DIR=str(blocker / "state"))
    assert text.startswith(f"cannot create the state directory {blocker}/state: ")


def test_the_stored_name_is_used_on_restart(store, env, tmp_path):
    start(store, env, IP="198.19.1.2/24")
    env = {k: v for k, v in env.items() if k != "NODENAME"}
    reg = start(store, env, IP="198.19.1.2/24", HOSTNAME="other-host")
    assert reg.node.name == "node1" and reg.changes == ()


def test_a_restart_with_the_same_settings_writes_nothing(store, env, tmp_path):
    settings = {"IP": "198.19.1.2/24", "IP6": "fd00:198:19:1::2/64", "AS": "64600", "CALICO_K8S_NODE_REF": "k8s-node-1"}
    first = start(store, env, **settings)
    assert len(first.changes) >= 7
    before = revision(store)
    nodename = tmp_path / "state" / "nodename"
    inode = nodename.stat().st_ino
    os.utime(nodename, (1, 1))
    second = start(store, env, **settings)
    assert second.changes == ()
    assert revision(store) == before
    # The nodename file is not rewritten, only touched: its time is the start time the
    # -bird-ready probe reads, as Calico's rewrite at every start makes it.
    assert nodename.stat().st_ino == inode and nodename.read_text() == "node1"
    assert nodename.stat().st_mtime > time.time() - 60
    assert second.node.doc == first.node.doc and second.node.revision == first.node.revision
    # And so with autodetection finding the same address.
    host = FakeHost(v4="198.19.1.2/24", v6="fd00:198:19:1::2/64")
    assert start(store, env, host, IP="autodetect", IP6="autodetect", AS="64600", CALICO_K8S_NODE_REF="k8s-node-1").changes == ()
    assert revision(store) == before


def test_an_unreachable_etcd_is_not_a_startup_error(env):
    from calico_cni.config import EtcdSettings
    from calico_cni.datastore.errors import DatastoreUnavailable
    from calico_cni.datastore.store import connect

    down = connect(EtcdSettings(("http://198.19.0.1:1",), timeout=0.5))
    try:
        with pytest.raises(DatastoreUnavailable):
            start(down, env, IP="198.19.1.2/24")
    finally:
        down.close()


def test_clearing_the_addresses_after_a_lost_race_logs_what_the_write_that_stuck_cleared(store, monkeypatch, caplog):
    # Someone changes the Node between start-up's read and its write: the change is made again
    # from a fresh read, and only what that write cleared is logged, once.
    from calico_cni.datastore import resources as stored
    from calico_cni.datastore.resources import Ref

    put_node(store, "node1", {"bgp": {"ipv4Address": "198.19.1.5/24", "ipv6Address": "fd00:198:19::5/64"}})
    commit = store.commit
    raced = []

    def racing_commit(*args, **kwargs):
        if not raced:
            raced.append(True)
            other = stored.get(store, Ref(NODE, "node1"))
            other.doc["spec"]["bgp"]["ipv4Address"] = "198.19.1.6/24"
            assert commit(puts=[other])
        return commit(*args, **kwargs)

    monkeypatch.setattr(store, "commit", racing_commit)
    with caplog.at_level("INFO", logger=startup.log.name):
        startup._clear_addresses(store, "node1", {4})
    assert raced and doc(store, "nodes/node1")["spec"]["bgp"] == {"ipv6Address": "fd00:198:19::5/64"}
    cleared = [r.getMessage() for r in caplog.records if "cleared" in r.getMessage()]
    assert cleared == ["cleared the out-of-date ipv4Address 198.19.1.6/24 of Node(node1)"]
