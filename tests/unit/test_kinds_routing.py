"""The routing kinds (Node, BGPConfiguration, BGPPeer, BGPFilter) decode as Calico v3.30 does: per
rule one accepted and one refused value (the refusal names the field and the rule), Calico's
defaults, the aliases calicoctl accepts, the `get` columns, and documented-style files."""

from __future__ import annotations

import copy

import pytest

from calico_cni.model import kinds
from calico_cni.model.kinds import routing
from tests.kinds_support import API, refused



def doc(kind: str, spec: dict, name: str = "r1", **extra) -> dict:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec, **extra}


# (kind, name, accepted spec, refused spec, refused path, key phrase)
RULES = [
    # Node
    ("Node", "n1", {"bgp": {"ipv4Address": "198.19.0.1/24"}}, {"bgp": {"ipv4Address": "fd00::1/64"}}, "spec.bgp.ipv4Address", "invalid IPv4 CIDR"),
    ("Node", "n1", {"bgp": {"ipv6Address": "fd00::1/64"}}, {"bgp": {"ipv6Address": "198.19.0.1"}}, "spec.bgp.ipv6Address", "invalid IPv6 CIDR"),
    (
        "Node",
        "n1",
        {"bgp": {"ipv4Address": "198.19.0.1", "asNumber": 64512}},
        {"bgp": {"ipv4Address": "198.19.0.1", "asNumber": 0}},
        "spec.bgp.asNumber",
        "invalid AS number 0",
    ),
    ("Node", "n1", {"bgp": {"asNumber": "1.10"}}, {"bgp": {"asNumber": "1.70000"}}, "spec.bgp.asNumber", "invalid AS number"),
    ("Node", "n1", {"bgp": {"asNumber": 4294967295}}, {"bgp": {"asNumber": 4294967296}}, "spec.bgp.asNumber", "invalid AS number"),
    (
        "Node",
        "n1",
        {"bgp": {"ipv4IPIPTunnelAddr": "198.18.0.1"}},
        {"bgp": {"ipv4IPIPTunnelAddr": "198.18.0.1/32"}},
        "spec.bgp.ipv4IPIPTunnelAddr",
        "invalid IPv4 address",
    ),
    (
        "Node",
        "n1",
        {"bgp": {"routeReflectorClusterID": "224.0.0.1"}},
        {"bgp": {"routeReflectorClusterID": "fd00::1"}},
        "spec.bgp.routeReflectorClusterID",
        "invalid IPv4",
    ),
    ("Node", "n1", {"bgp": {"ipv4Address": "198.19.0.1/24"}}, {"bgp": {}}, "spec.bgp", "Spec.BGP should not be empty"),
    ("Node", "n1", {"bgp": {"ipv4Address": "198.19.0.1/24"}}, {"bgp": {"ipv4Address": ""}}, "spec.bgp", "should not be empty"),
    ("Node", "n1", {"ipv4VXLANTunnelAddr": "198.18.0.1"}, {"ipv4VXLANTunnelAddr": "fd00::1"}, "spec.ipv4VXLANTunnelAddr", "invalid IPv4"),
    ("Node", "n1", {"ipv6VXLANTunnelAddr": "fd00::1"}, {"ipv6VXLANTunnelAddr": "::ffff:198.18.0.1"}, "spec.ipv6VXLANTunnelAddr", "invalid IPv6"),
    ("Node", "n1", {"vxlanTunnelMACAddr": "66:0a:0b:0c:0d:0e"}, {"vxlanTunnelMACAddr": "66:0a:0b:0c:0d"}, "spec.vxlanTunnelMACAddr", "invalid MAC"),
    ("Node", "n1", {"vxlanTunnelMACAddrV6": "660a.0b0c.0d0e"}, {"vxlanTunnelMACAddrV6": "660a0b0c0d0e"}, "spec.vxlanTunnelMACAddrV6", "invalid MAC"),
    ("Node", "n1", {"vxlanTunnelMACAddr": "66-0a-0b-0c-0d-0e"}, {"vxlanTunnelMACAddr": "66:0a:0b:0c:0d:0e\n"}, "spec.vxlanTunnelMACAddr", "invalid MAC"),
    (
        "Node",
        "n1",
        {"wireguard": {"interfaceIPv4Address": "198.18.0.2"}},
        {"wireguard": {"interfaceIPv4Address": "x"}},
        "spec.wireguard.interfaceIPv4Address",
        "invalid IPv4",
    ),
    (
        "Node",
        "n1",
        {"wireguard": {"interfaceIPv6Address": "fd00::2"}},
        {"wireguard": {"interfaceIPv6Address": "198.18.0.2"}},
        "spec.wireguard.interfaceIPv6Address",
        "invalid IPv6",
    ),
    (
        "Node",
        "n1",
        {"addresses": [{"address": "198.19.0.1", "type": "InternalIP"}]},
        {"addresses": [{"address": "198.19.0.1/24"}]},
        "spec.addresses[0].address",
        "not strictly masked",
    ),
    (
        "Node",
        "n1",
        {"addresses": [{"address": "198.19.0.0/24", "type": "CalicoNodeIP"}]},
        {"addresses": [{"address": "198.19.0.1", "type": "Internal"}]},
        "spec.addresses[0].type",
        "expected one of",
    ),
    ("Node", "n1", {"addresses": [{"address": "198.19.0.1"}]}, {"addresses": [{"type": "ExternalIP"}]}, "spec.addresses[0].address", "required"),
    ("Node", "n1", {"orchRefs": [{"nodeName": "k1", "orchestrator": "k8s"}]}, {"orchRefs": [{"node": "k1"}]}, "spec.orchRefs[0].node", "unknown field"),
    ("Node", "n1", {"bgp": {"ipv4Address": "198.19.0.1"}}, {"interfaces": []}, "spec.interfaces", "unknown field"),
    # BGPConfiguration
    (
        "BGPConfiguration",
        "default",
        {"logSeverityScreen": "Warning"},
        {"logSeverityScreen": "warning"},
        "spec.logSeverityScreen",
        "expected one of Debug, Info",
    ),
    ("BGPConfiguration", "default", {"asNumber": 65001}, {"asNumber": -1}, "spec.asNumber", "invalid AS number"),
    ("BGPConfiguration", "default", {"listenPort": 1790}, {"listenPort": 65536}, "spec.listenPort", "out of range"),
    ("BGPConfiguration", "default", {"bindMode": "NodeIP"}, {"bindMode": "nodeip"}, "spec.bindMode", "expected one of None, NodeIP"),
    (
        "BGPConfiguration",
        "default",
        {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]},
        {"serviceClusterIPs": [{"cidr": "10.96.0.1/12"}]},
        "spec.serviceClusterIPs[0].cidr",
        "not strictly masked",
    ),
    (
        "BGPConfiguration",
        "default",
        {"serviceExternalIPs": [{"cidr": "198.51.100.7"}]},
        {"serviceExternalIPs": [{"cidr": "nope"}]},
        "spec.serviceExternalIPs[0].cidr",
        "invalid network",
    ),
    (
        "BGPConfiguration",
        "default",
        {"serviceLoadBalancerIPs": [{"cidr": "fd00:1::/64"}]},
        {"serviceLoadBalancerIPs": [{"cird": "fd00:1::/64"}]},
        "spec.serviceLoadBalancerIPs[0].cird",
        "unknown field",
    ),
    ("BGPConfiguration", "default", {"ignoredInterfaces": ["eth*"]}, {"ignoredInterfaces": ["*"]}, "spec.ignoredInterfaces[0]", "not '*' alone"),
    (
        "BGPConfiguration",
        "default",
        {"localWorkloadPeeringIPV4": "169.254.0.179"},
        {"localWorkloadPeeringIPV4": "fe80::179"},
        "spec.localWorkloadPeeringIPV4",
        "invalid IPv4",
    ),
    (
        "BGPConfiguration",
        "default",
        {"localWorkloadPeeringIPV6": "fe80::179"},
        {"localWorkloadPeeringIPV6": "169.254.0.179"},
        "spec.localWorkloadPeeringIPV6",
        "invalid IPv6",
    ),
    ("BGPConfiguration", "default", {"nodeMeshMaxRestartTime": "120s"}, {"nodeMeshMaxRestartTime": "120"}, "spec.nodeMeshMaxRestartTime", "invalid duration"),
    (
        "BGPConfiguration",
        "default",
        {"communities": [{"name": "bgp-large", "value": "63400:300:100"}], "prefixAdvertisements": [{"cidr": "198.18.0.0/16", "communities": ["bgp-large"]}]},
        {"communities": [{"name": "bgp-large", "value": "63400:300:100"}]},
        "spec.communities",
        "communities are defined but not used",
    ),
    (
        "BGPConfiguration",
        "default",
        {"communities": [{"name": "c", "value": "65535:1"}], "prefixAdvertisements": [{"cidr": "198.18.0.0/16", "communities": ["c"]}]},
        {"communities": [{"name": "c", "value": "65536:1"}]},
        "spec.communities[0].value",
        "16 bit",
    ),
    (
        "BGPConfiguration",
        "default",
        {"communities": [{"name": "c", "value": "1:2"}], "prefixAdvertisements": [{"cidr": "198.18.0.0/16", "communities": ["c"]}]},
        {"communities": [{"name": "c", "value": "one:two"}]},
        "spec.communities[0].value",
        "aa:nn or aa:nn:mm",
    ),
    (
        "BGPConfiguration",
        "default",
        {"communities": [{"name": "c", "value": "1:2"}], "prefixAdvertisements": [{"cidr": "198.18.0.0/16", "communities": ["c"]}]},
        {"communities": [{"value": "1:2"}]},
        "spec.communities[0].name",
        "required",
    ),
    (
        "BGPConfiguration",
        "default",
        {"prefixAdvertisements": [{"cidr": "198.18.0.0/16", "communities": ["4294967295:1:2"]}]},
        {"prefixAdvertisements": [{"cidr": "198.18.0.0/16", "communities": ["undefined-name"]}]},
        "spec.prefixAdvertisements[0].communities[0]",
        "community used is invalid or not defined",
    ),
    (
        "BGPConfiguration",
        "default",
        {"prefixAdvertisements": [{"cidr": "198.18.0.0/16", "communities": ["1:2"]}]},
        {"prefixAdvertisements": [{"cidr": "198.18.0.0/16", "communities": ["1:2:4294967296"]}]},
        "spec.prefixAdvertisements[0].communities[0]",
        "32 bit",
    ),
    (
        "BGPConfiguration",
        "default",
        {"prefixAdvertisements": [{"cidr": "198.18.0.0/16", "communities": []}]},
        {"prefixAdvertisements": [{"cidr": "198.18.0.0/16"}]},
        "spec.prefixAdvertisements[0].communities",
        "required",
    ),
    (
        "BGPConfiguration",
        "default",
        {"nodeToNodeMeshEnabled": True, "nodeMeshMaxRestartTime": "90s"},
        {"nodeToNodeMeshEnabled": False, "nodeMeshMaxRestartTime": "90s"},
        "spec.nodeMeshMaxRestartTime",
        "cannot be set if spec.nodeToNodeMeshEnabled is disabled",
    ),
    (
        "BGPConfiguration",
        "default",
        {"nodeMeshPassword": {"secretKeyRef": {"name": "bgp-secrets", "key": "mesh"}}},
        {"nodeToNodeMeshEnabled": False, "nodeMeshPassword": {"secretKeyRef": {"name": "bgp-secrets", "key": "mesh"}}},
        "spec.nodeMeshPassword",
        "cannot be set if spec.nodeToNodeMeshEnabled is disabled",
    ),
    (
        "BGPConfiguration",
        "node.n1",
        {"logSeverityScreen": "Debug", "listenPort": 1790},
        {"nodeToNodeMeshEnabled": False},
        "spec.nodeToNodeMeshEnabled",
        "Cannot set nodeToNodeMeshEnabled on a non default BGP Configuration",
    ),
    ("BGPConfiguration", "node.n1", {"ignoredInterfaces": ["eth1"]}, {"asNumber": 65001}, "spec.asNumber", "Cannot set ASNumber on a non default"),
    (
        "BGPConfiguration",
        "node.n1",
        {"serviceClusterIPs": []},
        {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]},
        "spec.serviceClusterIPs",
        "Cannot set ServiceClusterIPs on a non default",
    ),
    (
        "BGPConfiguration",
        "node.n1",
        {"serviceExternalIPs": []},
        {"serviceExternalIPs": [{"cidr": "198.51.100.0/24"}]},
        "spec.serviceExternalIPs",
        "non default",
    ),
    (
        "BGPConfiguration",
        "node.n1",
        {"serviceLoadBalancerIPs": []},
        {"serviceLoadBalancerIPs": [{"cidr": "198.51.100.0/24"}]},
        "spec.serviceLoadBalancerIPs",
        "non default",
    ),
    (
        "BGPConfiguration",
        "node.n1",
        {"bindMode": "NodeIP"},
        {"nodeMeshPassword": {"secretKeyRef": {"name": "s", "key": "k"}}},
        "spec.nodeMeshPassword",
        "Cannot set nodeMeshPassword on a non default",
    ),
    (
        "BGPConfiguration",
        "node.n1",
        {"bindMode": "None"},
        {"nodeMeshMaxRestartTime": "2m"},
        "spec.nodeMeshMaxRestartTime",
        "Cannot set nodeMeshMaxRestartTime on a non default",
    ),
    # BGPPeer
    (
        "BGPPeer",
        "p1",
        {"node": "n1", "peerIP": "198.19.0.254", "asNumber": 64513},
        {"node": "n1", "nodeSelector": "all()", "peerIP": "198.19.0.254"},
        "spec.node",
        "Node field must be empty when NodeSelector is specified",
    ),
    ("BGPPeer", "p1", {"node": "n1.example"}, {"node": "N1"}, "spec.node", "invalid name"),
    ("BGPPeer", "p1", {"nodeSelector": "rack == 'a'"}, {"nodeSelector": "rack == "}, "spec.nodeSelector", "invalid selector"),
    ("BGPPeer", "p1", {"peerIP": "198.19.0.254:1790"}, {"peerIP": "198.19.0.254:0"}, "spec.peerIP", "expected <IP>, <IPv4>:<port> or [<IPv6>]:<port>"),
    ("BGPPeer", "p1", {"peerIP": "[fd00::fe]:179"}, {"peerIP": "[fd00::fe]"}, "spec.peerIP", "invalid peerIP"),
    ("BGPPeer", "p1", {"peerIP": "fd00::fe"}, {"peerIP": "peer.example"}, "spec.peerIP", "invalid peerIP"),
    (
        "BGPPeer",
        "p1",
        {"peerSelector": "rr == 'true'"},
        {"peerSelector": "rr == 'true'", "peerIP": "198.19.0.254"},
        "spec.peerIP",
        "PeerIP field must be empty when PeerSelector is specified",
    ),
    (
        "BGPPeer",
        "p1",
        {"peerSelector": "rr == 'true'", "asNumber": 0},
        {"peerSelector": "rr == 'true'", "asNumber": 64513},
        "spec.asNumber",
        "ASNumber field must be empty when PeerSelector is specified",
    ),
    ("BGPPeer", "p1", {"peerIP": "198.19.0.254", "asNumber": "64513"}, {"peerIP": "198.19.0.254", "asNumber": "AS64513"}, "spec.asNumber", "invalid AS number"),
    (
        "BGPPeer",
        "p1",
        {"localWorkloadSelector": "app == 'bgp'", "asNumber": 64520},
        {"localWorkloadSelector": "app == 'bgp'"},
        "spec.asNumber",
        "ASNumber field must NOT be empty when LocalWorkloadSelector",
    ),
    (
        "BGPPeer",
        "p1",
        {"localWorkloadSelector": "app == 'bgp'", "asNumber": 64520},
        {"localWorkloadSelector": "app == 'bgp'", "asNumber": 64520, "peerIP": "198.19.0.9"},
        "spec.peerIP",
        "PeerIP field must be empty when LocalWorkloadSelector",
    ),
    (
        "BGPPeer",
        "p1",
        {"localWorkloadSelector": "app == 'bgp'", "asNumber": 64520},
        {"localWorkloadSelector": "app == 'bgp'", "asNumber": 64520, "peerSelector": "all()"},
        "spec.peerSelector",
        "PeerSelector field must be empty when LocalWorkloadSelector",
    ),
    (
        "BGPPeer",
        "p1",
        {"peerIP": "198.19.0.254", "keepOriginalNextHop": True},
        {"keepOriginalNextHop": "yes"},
        "spec.keepOriginalNextHop",
        "expected true or false",
    ),
    (
        "BGPPeer",
        "p1",
        {"password": {"secretKeyRef": {"name": "bgp-secrets", "key": "rr-password"}}},
        {"password": {"secret": "x"}},
        "spec.password.secret",
        "unknown field",
    ),
    ("BGPPeer", "p1", {"sourceAddress": "None"}, {"sourceAddress": "NodeIP"}, "spec.sourceAddress", "expected one of UseNodeIP, None"),
    ("BGPPeer", "p1", {"maxRestartTime": "2m"}, {"maxRestartTime": "2 minutes"}, "spec.maxRestartTime", "invalid duration"),
    ("BGPPeer", "p1", {"numAllowedLocalASNumbers": 2}, {"numAllowedLocalASNumbers": 2**31}, "spec.numAllowedLocalASNumbers", "out of range"),
    ("BGPPeer", "p1", {"ttlSecurity": 255}, {"ttlSecurity": 256}, "spec.ttlSecurity", "out of range"),
    (
        "BGPPeer",
        "p1",
        {"peerIP": "198.19.1.254", "reachableBy": "198.19.0.1"},
        {"peerIP": "198.19.1.254", "reachableBy": "fd00::1"},
        "spec.reachableBy",
        "address family mismatched",
    ),
    (
        "BGPPeer",
        "p1",
        {"peerIP": "[fd00::fe]:179", "reachableBy": "fd00::1"},
        {"reachableBy": "fd00::1"},
        "spec.reachableBy",
        "must be empty when PeerIP is empty",
    ),
    (
        "BGPPeer",
        "p1",
        {"peerIP": "198.19.1.254", "reachableBy": "198.19.0.1"},
        {"peerIP": "198.19.1.254", "reachableBy": "gateway"},
        "spec.reachableBy",
        "invalid IP address",
    ),
    ("BGPPeer", "p1", {"filters": ["export-pools"]}, {"filters": ["Export_Pools"]}, "spec.filters[0]", "invalid name"),
    # BGPFilter
    (
        "BGPFilter",
        "f1",
        {"exportV4": [{"action": "Accept", "matchOperator": "In", "cidr": "198.18.0.0/16"}]},
        {"exportV4": [{"action": "Accept", "matchOperator": "In", "cidr": "fd00::/64"}]},
        "spec.exportV4[0].cidr",
        "invalid IPv4 network",
    ),
    (
        "BGPFilter",
        "f1",
        {"importV6": [{"action": "Reject", "matchOperator": "NotIn", "cidr": "fd00::/64"}]},
        {"importV6": [{"action": "Reject", "matchOperator": "NotIn", "cidr": "198.18.0.0/16"}]},
        "spec.importV6[0].cidr",
        "invalid IPv6 network",
    ),
    (
        "BGPFilter",
        "f1",
        {"importV4": [{"action": "Accept", "matchOperator": "Equal", "cidr": "198.18.0.0/16"}]},
        {"importV4": [{"action": "Accept", "matchOperator": "Equal", "cidr": "198.18.0.1/16"}]},
        "spec.importV4[0].cidr",
        "not strictly masked",
    ),
    (
        "BGPFilter",
        "f1",
        {"exportV4": [{"action": "Accept"}]},
        {"exportV4": [{"cidr": "198.18.0.0/16", "matchOperator": "In"}]},
        "spec.exportV4[0].action",
        "required",
    ),
    ("BGPFilter", "f1", {"exportV4": [{"action": "Reject"}]}, {"exportV4": [{"action": "Deny"}]}, "spec.exportV4[0].action", "expected one of Accept, Reject"),
    (
        "BGPFilter",
        "f1",
        {"exportV4": [{"action": "Accept", "cidr": "198.18.0.0/16", "matchOperator": "Equal"}]},
        {"exportV4": [{"action": "Accept", "cidr": "198.18.0.0/16"}]},
        "spec.exportV4[0].matchOperator",
        "MatchOperator cannot be empty when CIDR is not",
    ),
    (
        "BGPFilter",
        "f1",
        {"exportV4": [{"action": "Accept", "cidr": "198.18.0.0/16", "matchOperator": "NotEqual"}]},
        {"exportV4": [{"action": "Accept", "matchOperator": "NotEqual"}]},
        "spec.exportV4[0].cidr",
        "CIDR cannot be empty when MatchOperator is not",
    ),
    (
        "BGPFilter",
        "f1",
        {"exportV4": [{"action": "Accept", "cidr": "198.18.0.0/16", "matchOperator": "In"}]},
        {"exportV4": [{"action": "Accept", "matchOperator": "in", "cidr": "198.18.0.0/16"}]},
        "spec.exportV4[0].matchOperator",
        "expected one of Equal",
    ),
    (
        "BGPFilter",
        "f1",
        {"exportV4": [{"action": "Accept", "cidr": "198.18.0.0/16", "matchOperator": "In", "prefixLength": {"min": 24, "max": 32}}]},
        {"exportV4": [{"action": "Accept", "prefixLength": {"max": 32}}]},
        "spec.exportV4[0].cidr",
        "CIDR cannot be empty when PrefixLength is not",
    ),
    (
        "BGPFilter",
        "f1",
        {"exportV4": [{"action": "Accept", "cidr": "198.18.0.0/16", "matchOperator": "In", "prefixLength": {"max": 32}}]},
        {"exportV4": [{"action": "Accept", "cidr": "198.18.0.0/16", "matchOperator": "In", "prefixLength": {"max": 33}}]},
        "spec.exportV4[0].prefixLength.max",
        "out of range",
    ),
    (
        "BGPFilter",
        "f1",
        {"importV4": [{"action": "Accept", "cidr": "198.18.0.0/16", "matchOperator": "In", "prefixLength": {"min": 32}}]},
        {"importV4": [{"action": "Accept", "cidr": "198.18.0.0/16", "matchOperator": "In", "prefixLength": {"min": 33}}]},
        "spec.importV4[0].prefixLength.min",
        "out of range",
    ),
    (
        "BGPFilter",
        "f1",
        {"exportV6": [{"action": "Accept", "cidr": "fd00::/48", "matchOperator": "In", "prefixLength": {"min": 128}}]},
        {"exportV6": [{"action": "Accept", "cidr": "fd00::/48", "matchOperator": "In", "prefixLength": {"min": -1}}]},
        "spec.exportV6[0].prefixLength.min",
        "out of range",
    ),
    (
        "BGPFilter",
        "f1",
        {"exportV4": [{"action": "Accept", "source": "RemotePeers"}]},
        {"exportV4": [{"action": "Accept", "source": "Peers"}]},
        "spec.exportV4[0].source",
        "expected one of RemotePeers",
    ),
    (
        "BGPFilter",
        "f1",
        {"importV4": [{"action": "Reject", "interface": "vxlan.*"}]},
        {"importV4": [{"action": "Reject", "interface": "an-interface-name-too-long"}]},
        "spec.importV4[0].interface",
        "invalid interface",
    ),
]


@pytest.mark.parametrize("kind,name,good,bad,path,phrase", RULES, ids=[f"{r[0]}:{r[4]}:{i}" for i, r in enumerate(RULES)])
def test_rule(kind, name, good, bad, path, phrase):
    kinds.decode(doc(kind, copy.deepcopy(good), name))
    error = refused(doc(kind, copy.deepcopy(bad), name))
    assert error.path == path
    assert phrase in error.reason


def test_every_refusal_names_field_and_rule():
    error = refused(doc("Node", {"bgp": {"ipv4Address": "198.19.0.1/24", "asNumber": 0}}, "n1"))
    assert str(error) == "spec.bgp.asNumber: invalid AS number 0: expected 1 to 4294967295"


@pytest.mark.parametrize(
    "alias,kind",
    [
        *[(a, "Node") for a in ("node", "nodes", "no", "nos", "Node")],
        *[(a, "BGPConfiguration") for a in ("bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs", "BGPConfiguration")],
        *[(a, "BGPPeer") for a in ("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps", "BGPPeer")],
        *[(a, "BGPFilter") for a in ("bgpfilter", "bgpfilters", "bgpf", "bgpfs", "bf", "bfs", "BGPFilter")],
    ],
)
def test_aliases(alias, kind):
    assert kinds.lookup(alias).name == kind


def test_stored_forms_and_defaults():
    """Calico sets no defaults on these kinds; what Go's omitempty drops is not stored, AS numbers
    become numbers and durations take Go's spelling."""
    _, out = kinds.decode(
        doc("BGPPeer", {"peerIP": "198.19.0.254", "asNumber": "1.10", "node": "", "keepOriginalNextHop": False, "filters": [], "maxRestartTime": "90s"})
    )
    assert out["spec"] == {"peerIP": "198.19.0.254", "asNumber": 65546, "maxRestartTime": "1m30s"}
    # A negative duration keeps its sign, as Go's time.Duration writes it.
    _, out = kinds.decode(doc("BGPPeer", {"peerIP": "198.19.0.254", "asNumber": 1, "maxRestartTime": "-90s"}))
    assert out["spec"]["maxRestartTime"] == "-1m30s"
    _, out = kinds.decode(doc("BGPPeer", {"peerSelector": "all()", "asNumber": 0}))
    assert out["spec"] == {"peerSelector": "all()"}
    _, out = kinds.decode(doc("BGPConfiguration", {}, "default"))
    assert out["spec"] == {}
    _, out = kinds.decode(doc("BGPConfiguration", {"listenPort": 0, "logSeverityScreen": ""}, "default"))
    assert out["spec"] == {}
    _, out = kinds.decode(doc("Node", {"bgp": {"ipv4Address": "198.19.0.1/24", "ipv6Address": ""}, "orchRefs": []}, "n1"))
    assert out["spec"] == {"bgp": {"ipv4Address": "198.19.0.1/24"}}


def test_node_status():
    key = "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgMTIzNDU2Nzg="  # 32 bytes
    _, out = kinds.decode(doc("Node", {}, "n1", status={"wireguardPublicKey": key, "podCIDRs": ["198.18.0.0/26"]}))
    assert out["status"] == {"wireguardPublicKey": key, "podCIDRs": ["198.18.0.0/26"]}
    error = refused(doc("Node", {}, "n1", status={"wireguardPublicKey": "c2hvcnQ="}))
    assert error.path == "status.wireguardPublicKey" and "WireGuard public key" in error.reason
    error = refused(doc("BGPPeer", {}, "p1", status={}))
    assert error.path == "status"


def cells(columns, d, context=None):
    """(header, cell) of each column; contextual cells get `context` (the printer's, default none)."""
    return [(c.header, c.cell(d, context or {}) if c.contextual else c.cell(d)) for c in columns]


def test_node_columns():
    node = routing.NODE
    own = doc("Node", {"bgp": {"ipv4Address": "198.19.0.1/24", "ipv6Address": "fd00::1/64", "asNumber": 65001}}, "n1")
    inherited = doc("Node", {"bgp": {"ipv4Address": "198.19.0.2/24"}}, "n2")
    no_bgp = doc("Node", {}, "n3")
    assert [c.header for c in node.columns] == ["NAME"]
    assert cells(node.wide, own) == [("NAME", "n1"), ("ASN", "65001"), ("IPV4", "198.19.0.1/24"), ("IPV6", "fd00::1/64")]
    assert cells(node.wide, inherited) == [("NAME", "n2"), ("ASN", "(64512)"), ("IPV4", "198.19.0.2/24"), ("IPV6", "")]
    assert cells(node.wide, no_bgp) == [("NAME", "n3"), ("ASN", ""), ("IPV4", ""), ("IPV6", "")]
    assert routing.node_asn(inherited, global_as=65000) == "(65000)"
    assert cells(node.wide, inherited, {"global_as": 65000})[1] == ("ASN", "(65000)")
    assert cells(node.wide, own, {"global_as": 65000})[1] == ("ASN", "65001")


def test_bgp_peer_columns():
    peer = routing.BGP_PEER
    assert [c.header for c in peer.columns] == [c.header for c in peer.wide] == ["NAME", "PEERIP", "NODE", "ASN"]
    assert [c.cell(doc("BGPPeer", {"peerIP": "198.19.0.254", "asNumber": 64513}, "tor")) for c in peer.wide] == ["tor", "198.19.0.254", "(global)", "64513"]
    assert [c.cell(doc("BGPPeer", {"node": "n1", "peerIP": "198.19.0.9", "asNumber": 64513}, "p")) for c in peer.wide][2] == "n1"
    assert [c.cell(doc("BGPPeer", {"nodeSelector": "all()", "peerSelector": "rr == 'true'"}, "rr")) for c in peer.wide] == ["rr", "", "all()", "0"]


def test_bgp_configuration_and_filter_columns():
    conf = routing.BGP_CONFIGURATION
    assert [c.header for c in conf.columns] == [c.header for c in conf.wide] == ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"]
    assert [
        c.cell(doc("BGPConfiguration", {"logSeverityScreen": "Info", "nodeToNodeMeshEnabled": False, "asNumber": 63400}, "default")) for c in conf.wide
    ] == ["default", "Info", "false", "63400"]
    assert [c.cell(doc("BGPConfiguration", {}, "node.n1")) for c in conf.wide] == ["node.n1", "", "-", "-"]
    flt = routing.BGP_FILTER
    assert [c.header for c in flt.wide] == ["NAME", "NUMEXPORTV4", "NUMIMPORTV4", "NUMEXPORTV6", "NUMIMPORTV6"]
    assert [c.cell(doc("BGPFilter", {"exportV4": [{"action": "Accept"}, {"action": "Reject"}]}, "f")) for c in flt.wide] == ["f", "2", "0", "0", "0"]


# Files shaped like Calico's documented examples, written from the field lists.
EXAMPLES = [
    # A global peer: every node peers with the top-of-rack router.
    doc("BGPPeer", {"peerIP": "198.19.0.254", "asNumber": 64567}, "tor-global"),
    # A per-node peer, with a password, a restart time and filters.
    doc(
        "BGPPeer",
        {
            "node": "rack1-host1",
            "peerIP": "198.19.1.254:1790",
            "asNumber": 64567,
            "password": {"secretKeyRef": {"name": "bgp-secrets", "key": "rack1-password"}},
            "sourceAddress": "UseNodeIP",
            "maxRestartTime": "2m0s",
            "ttlSecurity": 1,
            "reachableBy": "198.19.1.1",
            "filters": ["export-pools"],
        },
        "rack1-tor",
    ),
    # Route reflectors: every node peers with the nodes labelled as reflectors.
    doc("BGPPeer", {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}, "peer-with-route-reflectors"),
    # The cluster's default: mesh off, its own AS, services advertised.
    doc(
        "BGPConfiguration",
        {
            "logSeverityScreen": "Info",
            "nodeToNodeMeshEnabled": False,
            "asNumber": 63400,
            "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}],
            "serviceExternalIPs": [{"cidr": "104.244.42.129/32"}, {"cidr": "172.217.3.0/24"}],
            "listenPort": 178,
            "bindMode": "NodeIP",
            "communities": [{"name": "bgp-large-community", "value": "63400:300:100"}],
            "prefixAdvertisements": [{"cidr": "172.218.4.0/26", "communities": ["bgp-large-community", "63400:120"]}],
        },
        "default",
    ),
    # One node's own settings.
    doc("BGPConfiguration", {"logSeverityScreen": "Debug", "listenPort": 1790, "ignoredInterfaces": ["iface-1", "iface-2*"]}, "node.rack1-host1"),
    doc(
        "BGPFilter",
        {
            "exportV4": [{"action": "Accept", "matchOperator": "In", "cidr": "198.18.0.0/16"}, {"action": "Reject", "interface": "*.calico"}],
            "importV4": [{"action": "Reject", "matchOperator": "NotIn", "cidr": "10.0.0.0/8", "prefixLength": {"min": 16, "max": 24}}],
            "exportV6": [{"action": "Accept", "matchOperator": "Equal", "cidr": "fd00:198:18::/48", "source": "RemotePeers"}],
            "importV6": [{"action": "Reject"}],
        },
        "export-pools",
    ),
    doc(
        "Node",
        {
            "bgp": {
                "ipv4Address": "198.19.0.11/24",
                "ipv6Address": "fd00:198:19::11/64",
                "asNumber": 64512,
                "ipv4IPIPTunnelAddr": "198.18.12.0",
                "routeReflectorClusterID": "224.0.0.1",
            },
            "ipv4VXLANTunnelAddr": "198.18.12.1",
            "vxlanTunnelMACAddr": "66:c1:ce:d6:2a:f1",
            "orchRefs": [{"nodeName": "rack1-host1", "orchestrator": "k8s"}],
            "addresses": [{"address": "198.19.0.11", "type": "CalicoNodeIP"}],
        },
        "rack1-host1",
        status={"podCIDRs": ["198.18.12.0/24"]},
    ),
]


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e['kind']}:{e['metadata']['name']}" for e in EXAMPLES])
def test_documented_examples_decode_unchanged(example):
    kind, out = kinds.decode(copy.deepcopy(example))
    assert out == example
    assert kind.name == example["kind"]


def test_a_long_digit_peer_ip_is_refused_without_backtracking():
    """Calico's ip:port pattern, copied with its unescaped dots, backtracks for hours on a long
    digit string in Python's regexp: a BGPPeer with one would hang calicoctl and every node's
    routing. The check runs in a child with a bound so a regression fails instead of hanging."""
    import subprocess
    import sys

    code = "from calico_cni.model.kinds.routing import split_peer_ip; print(split_peer_ip('9' * 3000 + 'x'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert proc.stdout.strip() == "None", proc.stderr


def test_stored_records_are_decoded_past_fields_of_a_later_release_files_are_not():
    from calico_cni.model import kinds
    from calico_cni.model.schema import Invalid, unknown_fields_skipped

    doc = {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "n1", "later": 1},
           "spec": {"bgp": {"ipv4Address": "198.19.0.1/24", "later": True}, "later": {}}, "later": 2}
    with pytest.raises(Invalid, match="unknown field"):
        kinds.decode(doc)
    with unknown_fields_skipped():
        _, out = kinds.decode(doc)
    assert out["spec"]["bgp"] == {"ipv4Address": "198.19.0.1/24"} and "later" not in out
    with pytest.raises(Invalid, match="unknown field"):
        kinds.decode(doc)  # only inside the block
    bad = {**doc, "spec": {"bgp": {"ipv4Address": "not an address"}}}
    with unknown_fields_skipped(), pytest.raises(Invalid, match="spec.bgp.ipv4Address"):
        kinds.decode(bad)  # known fields are still checked
