"""WorkloadEndpoint and HostEndpoint as Calico v3.30 validates them: one accepted and one refused
value per rule, the name made of the identifiers, the labels every write stamps, aliases, columns
and documented-style examples."""

from __future__ import annotations

import copy

import pytest

from calico_cni.model import kinds
from calico_cni.model.kinds.endpoints import WORKLOAD_ENDPOINT, workload_endpoint_name
from calico_cni.model.schema import Invalid
from tests.kinds_support import API, decode, refused

WEP_SPEC = {"node": "node1", "orchestrator": "k8s", "pod": "my-pod", "endpoint": "eth0", "interfaceName": "cali1234567890a", "ipNetworks": ["10.0.0.1/32"]}


def wep(name: str = "node1-k8s-my--pod-eth0", **spec) -> dict:
    """A workload endpoint document; `name=None` gives a placeholder name (the identifiers are
    checked before the name is compared with them)."""
    meta = {"namespace": "prod", "name": name or "placeholder"}
    return {"kind": "WorkloadEndpoint", "metadata": meta, "spec": {**WEP_SPEC, **spec}}


def hep(**spec) -> dict:
    return {"kind": "HostEndpoint", "metadata": {"name": "node1-eth0"}, "spec": spec}


PORT = {"name": "http", "protocol": "TCP", "port": 80}

# (id, accepted document, refused document, path of the refusal, key phrase of its message)
RULES = [
    ("wep-unknown-field", wep(mac="ee:ee:ee:ee:ee:ee"), wep(macAddress="ee:ee:ee:ee:ee:ee"), "spec.macAddress", "unknown field"),
    ("wep-interface-required", wep(interfaceName="*"), wep(interfaceName=None), "spec.interfaceName", "required field is missing"),
    ("wep-interface", wep(interfaceName="Valid_Iface.0-9"), wep(interfaceName="interfaceTooLong"), "spec.interfaceName", "invalid interface name"),
    ("wep-node", wep(name="node.1-k8s-my--pod-eth0", node="node.1"), wep(name=None, node="Node_1"), "spec.node", "invalid name"),
    ("wep-orchestrator", wep(), wep(name=None, orchestrator="K8S"), "spec.orchestrator", "invalid name"),
    ("wep-pod", wep(name="node1-k8s-web.1-eth0", pod="web.1"), wep(name=None, pod="Web"), "spec.pod", "invalid name"),
    ("wep-endpoint", wep(), wep(name=None, endpoint="eth_0"), "spec.endpoint", "invalid name"),
    ("wep-serviceAccountName", wep(serviceAccountName="default"), wep(serviceAccountName="Default"), "spec.serviceAccountName", "invalid name"),
    ("wep-containerID", wep(containerID="ABC-123"), wep(containerID="abc_123"), "spec.containerID", "invalid container ID"),
    ("wep-workload", wep(workload="w1"), wep(workload="W1"), "spec.workload", "invalid name"),
    ("wep-ipNetworks", wep(ipNetworks=["10.0.0.1", "fd00::1/128"]), wep(ipNetworks=["10.0.0.0/24"]), "spec.ipNetworks[0]", "contains multiple addresses"),
    ("wep-ipNetworks-masked", wep(ipNetworks=["10.0.0.1/32"]), wep(ipNetworks=["10.0.0.1/24"]), "spec.ipNetworks[0]", "not strictly masked"),
    ("wep-ipNetworks-form", wep(ipNetworks=["fd00::1"]), wep(ipNetworks=["10.0.0.300"]), "spec.ipNetworks[0]", "invalid IP network"),
    # Go's ParseCIDR takes a prefix length only, and an address without a zone.
    ("wep-ipNetworks-netmask", wep(ipNetworks=["10.0.0.1/32"]), wep(ipNetworks=["10.0.0.1/255.255.255.255"]), "spec.ipNetworks[0]", "invalid IP network"),
    ("wep-ipNetworks-zone", wep(ipNetworks=["fe80::1"]), wep(ipNetworks=["fe80::1%eth0"]), "spec.ipNetworks[0]", "invalid IP network"),
    (
        "wep-ipNATs-within",
        wep(ipNATs=[{"internalIP": "10.0.0.1", "externalIP": "172.16.0.1"}]),
        wep(ipNATs=[{"internalIP": "10.0.0.2", "externalIP": "172.16.0.1"}]),
        "spec.ipNATs[0]",
        "NAT is not in the endpoint networks",
    ),
    (
        "wep-ipNATs-family",
        wep(ipNATs=[{"internalIP": "10.0.0.1", "externalIP": "172.16.0.1"}]),
        wep(ipNATs=[{"internalIP": "10.0.0.1", "externalIP": "fd00::1"}]),
        "spec.ipNATs[0].externalIP",
        "mismatched IP versions",
    ),
    (
        "wep-ipNATs-address",
        wep(ipNATs=[{"internalIP": "10.0.0.1", "externalIP": "172.16.0.1"}]),
        wep(ipNATs=[{"internalIP": "10.0.0.1/32", "externalIP": "172.16.0.1"}]),
        "spec.ipNATs[0].internalIP",
        "invalid IP address",
    ),
    (
        "wep-ipNATs-both",
        wep(ipNATs=[{"internalIP": "10.0.0.1", "externalIP": "172.16.0.1"}]),
        wep(ipNATs=[{"internalIP": "10.0.0.1"}]),
        "spec.ipNATs[0].externalIP",
        "required field is missing",
    ),
    ("wep-ipv4Gateway", wep(ipv4Gateway="169.254.1.1"), wep(ipv4Gateway="fe80::1"), "spec.ipv4Gateway", "expected an IPv4 address"),
    ("wep-ipv6Gateway", wep(ipv6Gateway="fe80::1"), wep(ipv6Gateway="169.254.1.1"), "spec.ipv6Gateway", "expected an IPv6 address"),
    ("wep-profiles", wep(profiles=["kns.prod", "ksa.prod.default"]), wep(profiles=["Bad_Profile"]), "spec.profiles[0]", "invalid name"),
    ("wep-mac", wep(mac="EE-EE-EE-EE-EE-EE"), wep(mac="ee:ee:ee"), "spec.mac", "invalid MAC address"),
    ("wep-mac-separators", wep(mac="eeee.eeee.eeee"), wep(mac="ee:ee-ee:ee:ee:ee"), "spec.mac", "invalid MAC address"),
    ("wep-port", wep(ports=[PORT]), wep(ports=[{**PORT, "protocol": "ICMP"}]), "spec.ports[0].protocol", "does not support ports"),
    (
        "wep-port-protocol-number",
        wep(ports=[{**PORT, "protocol": 132}]),
        wep(ports=[{**PORT, "protocol": 1}]),
        "spec.ports[0].protocol",
        "does not support ports",
    ),
    (
        "wep-port-protocol-required",
        wep(ports=[{**PORT, "protocol": "UDP"}]),
        wep(ports=[{"name": "http", "port": 80}]),
        "spec.ports[0].protocol",
        "required field is missing",
    ),
    ("wep-port-number", wep(ports=[{**PORT, "port": 65535}]), wep(ports=[{**PORT, "port": 0}]), "spec.ports[0].port", "expected 1 to 65535"),
    (
        "wep-port-name-or-hostPort",
        wep(ports=[{"protocol": "TCP", "port": 80, "hostPort": 8080}]),
        wep(ports=[{"protocol": "TCP", "port": 80}]),
        "spec.ports[0].name",
        "must not be empty if no HostPort",
    ),
    ("wep-port-name", wep(ports=[{**PORT, "name": "metrics-1"}]), wep(ports=[{**PORT, "name": "Metrics"}]), "spec.ports[0].name", "invalid port name"),
    ("wep-port-hostPort", wep(ports=[{**PORT, "hostPort": 65535}]), wep(ports=[{**PORT, "hostPort": 65536}]), "spec.ports[0].hostPort", "expected 0 to 65535"),
    (
        "wep-port-hostIP",
        wep(ports=[{**PORT, "hostPort": 80, "hostIP": "192.0.2.1"}]),
        wep(ports=[{**PORT, "hostPort": 80, "hostIP": "999.999.999.999"}]),
        "spec.ports[0].hostIP",
        "invalid IP network",
    ),
    (
        "wep-allowSpoofedSourcePrefixes",
        wep(allowSpoofedSourcePrefixes=["10.0.0.1", "192.168.0.0/16"]),
        wep(allowSpoofedSourcePrefixes=["10.abcd"]),
        "spec.allowSpoofedSourcePrefixes[0]",
        "invalid CIDR",
    ),
    (
        "wep-qosControls",
        wep(qosControls={"ingressBandwidth": 1000000, "egressMaxConnections": 10}),
        wep(qosControls={"ingressBandwith": 1}),
        "spec.qosControls.ingressBandwith",
        "unknown field",
    ),
    ("wep-name", wep(), wep(name="my-pod"), "metadata.name", "expected name node1-k8s-my--pod-eth0"),
    ("wep-node-required", wep(), wep(name=None, node=None), "spec.node", "field should be assigned"),
    ("wep-k8s-pod-required", wep(), wep(name=None, pod=None, workload="w1"), "spec.pod", "field should be assigned"),
    (
        "wep-cni-containerID-required",
        wep(name="node1-cni-abc123-eth0", orchestrator="cni", containerID="abc123"),
        wep(name=None, orchestrator="cni"),
        "spec.containerID",
        "field should be assigned",
    ),
    (
        "wep-other-workload-required",
        wep(name="node1-openstack-vm1-tap0", orchestrator="openstack", workload="vm1", endpoint="tap0"),
        wep(name=None, orchestrator="openstack"),
        "spec.workload",
        "field should be assigned",
    ),
    ("wep-orchestrator-required", wep(), wep(name=None, orchestrator=None, workload="w1"), "spec.orchestrator", "field should be assigned"),
    ("wep-endpoint-required", wep(), wep(name=None, endpoint=None), "spec.endpoint", "field should be assigned"),
    ("wep-segment-name", wep(name="node1-k8s-a--b-eth0", pod="a-b"), wep(name=None, pod="a-"), "spec.pod", "invalid name"),
    ("hep-node", hep(node="node1", interfaceName="eth0"), hep(interfaceName="eth0"), "spec.node", "no node has been specified"),
    ("hep-node-name", hep(node="node1", interfaceName="eth0"), hep(node="Node1", interfaceName="eth0"), "spec.node", "invalid name"),
    ("hep-interface-or-ips", hep(node="node1", expectedIPs=["192.0.2.10"]), hep(node="node1"), "spec.interfaceName", "no interface or expected IPs"),
    ("hep-interface", hep(node="node1", interfaceName="*"), hep(node="node1", interfaceName="eth:0"), "spec.interfaceName", "invalid interface name"),
    (
        "hep-expectedIPs",
        hep(node="node1", expectedIPs=["fd00::10"]),
        hep(node="node1", expectedIPs=["192.0.2.0/24"]),
        "spec.expectedIPs[0]",
        "invalid IP address",
    ),
    (
        "hep-profiles",
        hep(node="node1", interfaceName="eth0", profiles=["edge"]),
        hep(node="node1", interfaceName="eth0", profiles=["Edge"]),
        "spec.profiles[0]",
        "invalid name",
    ),
    (
        "hep-port",
        hep(node="node1", interfaceName="eth0", ports=[{"name": "ssh", "protocol": "TCP", "port": 22}]),
        hep(node="node1", interfaceName="eth0", ports=[{"name": "ping", "protocol": "ICMP", "port": 1}]),
        "spec.ports[0].protocol",
        "does not support ports",
    ),
    (
        "hep-port-name",
        hep(node="node1", interfaceName="eth0", ports=[{"name": "dns", "protocol": "UDP", "port": 53}]),
        hep(node="node1", interfaceName="eth0", ports=[{"protocol": "UDP", "port": 53}]),
        "spec.ports[0].name",
        "required field is missing",
    ),
    (
        "hep-port-number",
        hep(node="node1", interfaceName="eth0", ports=[{"name": "dns", "protocol": "UDP", "port": 53}]),
        hep(node="node1", interfaceName="eth0", ports=[{"name": "dns", "protocol": "UDP", "port": 0}]),
        "spec.ports[0].port",
        "expected 1 to 65535",
    ),
    (
        "hep-not-namespaced",
        hep(node="node1", interfaceName="eth0"),
        {**hep(node="node1", interfaceName="eth0"), "metadata": {"name": "h", "namespace": "prod"}},
        "metadata.namespace",
        "not namespaced",
    ),
]


def _drop_nones(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    doc["spec"] = {k: v for k, v in doc["spec"].items() if v is not None}
    return doc


@pytest.mark.parametrize(("accepted", "refused_doc", "path", "phrase"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule(accepted: dict, refused_doc: dict, path: str, phrase: str) -> None:
    decode(_drop_nones(accepted))
    error = refused(_drop_nones(refused_doc))
    assert error.path == path, str(error)
    assert phrase in error.reason, str(error)


# --- the name and the labels


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ({"node": "node1", "orchestrator": "k8s", "pod": "my-pod", "endpoint": "eth0"}, "node1-k8s-my--pod-eth0"),
        ({"node": "node-1", "orchestrator": "cni", "containerID": "abc123", "endpoint": "eth0"}, "node--1-cni-abc123-eth0"),
        ({"node": "node1", "orchestrator": "libnetwork", "endpoint": "ep1"}, "node1-libnetwork-libnetwork-ep1"),
        ({"node": "node1", "orchestrator": "openstack", "workload": "vm-1", "endpoint": "tap0"}, "node1-openstack-vm--1-tap0"),
    ],
    ids=["k8s", "cni", "libnetwork", "other"],
)
def test_workload_endpoint_name(spec: dict, name: str) -> None:
    assert workload_endpoint_name(spec) == name


def test_an_identifier_may_not_begin_or_end_with_a_dash() -> None:
    # The names' own rule refuses these first when a document is decoded; Calico's name builder
    # refuses them too.
    with pytest.raises(Invalid) as info:
        workload_endpoint_name({"node": "node1", "orchestrator": "k8s", "pod": "-a", "endpoint": "eth0"})
    assert info.value.path == "spec.pod" and "must not begin or end with a '-'" in info.value.reason


def test_a_missing_name_is_made_from_the_identifiers() -> None:
    doc = {"apiVersion": API, "kind": "WorkloadEndpoint", "metadata": {"namespace": "prod"}, "spec": dict(WEP_SPEC)}
    WORKLOAD_ENDPOINT.prepare(doc)
    assert doc["metadata"]["name"] == "node1-k8s-my--pod-eth0"


def test_every_write_stamps_the_namespace_and_orchestrator_labels() -> None:
    given = wep()
    given["metadata"]["labels"] = {"app": "web", "projectcalico.org/namespace": "spoofed"}
    doc = decode(given)
    assert doc["metadata"]["labels"] == {"app": "web", "projectcalico.org/namespace": "prod", "projectcalico.org/orchestrator": "k8s"}
    given = wep()
    del given["metadata"]["namespace"]
    assert decode(given)["metadata"]["labels"]["projectcalico.org/namespace"] == "default"


def test_host_endpoint_gets_no_stamped_labels() -> None:
    doc = decode(hep(node="node1", interfaceName="eth0"))
    assert "labels" not in doc["metadata"]


# --- aliases and columns


@pytest.mark.parametrize(
    ("kind", "aliases"),
    [
        ("WorkloadEndpoint", ["workloadendpoint", "workloadendpoints", "wep", "weps", "WorkloadEndpoint"]),
        ("HostEndpoint", ["hostendpoint", "hostendpoints", "hep", "heps", "HostEndpoint"]),
    ],
)
def test_aliases(kind: str, aliases: list) -> None:
    for alias in aliases:
        assert kinds.lookup(alias).name == kind, alias
    assert kinds.lookup(kind).namespaced is (kind == "WorkloadEndpoint")


def cells(doc: dict, wide: bool = False) -> dict:
    kind = kinds.by_kind(doc["kind"])
    return {c.header: c.cell(doc) for c in (kind.wide if wide else kind.columns)}


def test_workload_endpoint_columns() -> None:
    doc = decode(
        wep(
            ipNetworks=["10.0.0.1/32", "fd00::1/128"],
            profiles=["kns.prod", "ksa.prod.default"],
            ipNATs=[{"internalIP": "10.0.0.1", "externalIP": "172.16.0.1"}],
        )
    )
    assert cells(doc) == {"WORKLOAD": "my-pod", "NODE": "node1", "NETWORKS": "10.0.0.1/32,fd00::1/128", "INTERFACE": "cali1234567890a"}
    assert cells(doc, wide=True) == {
        "NAME": "node1-k8s-my--pod-eth0",
        "WORKLOAD": "my-pod",
        "NODE": "node1",
        "NETWORKS": "10.0.0.1/32,fd00::1/128",
        "INTERFACE": "cali1234567890a",
        "PROFILES": "kns.prod,ksa.prod.default",
        "NATS": "{10.0.0.1 172.16.0.1}",
    }
    other = decode(wep(name="node1-openstack-vm1-tap0", orchestrator="openstack", workload="vm1", endpoint="tap0", ipNetworks=None))
    assert cells(other) == {"WORKLOAD": "vm1", "NODE": "node1", "NETWORKS": "", "INTERFACE": "cali1234567890a"}


def test_host_endpoint_columns() -> None:
    doc = decode(hep(node="node1", interfaceName="eth0", expectedIPs=["192.0.2.10", "fd00::10"], profiles=["edge"]))
    assert cells(doc) == {"NAME": "node1-eth0", "NODE": "node1"}
    assert cells(doc, wide=True) == {"NAME": "node1-eth0", "NODE": "node1", "INTERFACE": "eth0", "IPS": "192.0.2.10,fd00::10", "PROFILES": "edge"}


# --- documented-style examples


def test_workload_endpoint_example() -> None:
    kind, doc = kinds.decode(
        {
            "apiVersion": API,
            "kind": "WorkloadEndpoint",
            "metadata": {"name": "node1-k8s-frontend--5gs43-eth0", "namespace": "storefront", "labels": {"app": "frontend"}},
            "spec": {
                "node": "node1",
                "orchestrator": "k8s",
                "pod": "frontend-5gs43",
                "endpoint": "eth0",
                "containerID": "5c5c6ea3b2c5e0b1",
                "serviceAccountName": "default",
                "interfaceName": "cali0ef24ba6a0b",
                "mac": "ca:fe:1d:52:bb:e9",
                "ipNetworks": ["192.168.0.5/32"],
                "profiles": ["kns.storefront", "ksa.storefront.default"],
                "ports": [{"name": "http", "protocol": "TCP", "port": 8080}, {"protocol": "UDP", "port": 5353, "hostPort": 5353, "hostIP": "0.0.0.0"}],
                "allowSpoofedSourcePrefixes": ["198.51.100.0/24"],
            },
        }
    )
    assert kind.name == "WorkloadEndpoint"
    assert doc["metadata"]["labels"] == {"app": "frontend", "projectcalico.org/namespace": "storefront", "projectcalico.org/orchestrator": "k8s"}


def test_host_endpoint_example() -> None:
    kind, doc = kinds.decode(
        {
            "apiVersion": API,
            "kind": "HostEndpoint",
            "metadata": {"name": "node1-eth0", "labels": {"environment": "production"}},
            "spec": {
                "node": "node1",
                "interfaceName": "eth0",
                "expectedIPs": ["192.0.2.10"],
                "profiles": ["edge"],
                "ports": [{"name": "ssh", "protocol": "TCP", "port": 22}, {"name": "dns", "protocol": "UDP", "port": 53}],
            },
        }
    )
    assert kind.name == "HostEndpoint" and doc["spec"]["ports"][1] == {"name": "dns", "protocol": "UDP", "port": 53}
