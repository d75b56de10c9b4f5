"""calico_cni.node.bgp_peers: who a node speaks BGP with, as Calico v3.30's confd works it out
(client.go updatePeersV1, nodesWithIPPortAndAS, nodeAsBGPPeers): the nodes as BGP sees them, the
mesh, BGPPeers expanded into sessions with Calico's first-wins rules and reverse peerings, and the
reading of each BGPPeer with what cannot be rendered named. Pure: no network, no BIRD."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from calico_cni.node import bgp_peers
from calico_cni.node.bgp_peers import Cluster, NodeInfo, Session, expand, mesh_sessions, read_node, read_peer, read_peers

API = "projectcalico.org/v3"
ip = ipaddress.ip_address


def node_doc(name: str, v4: str | None = None, v6: str | None = None, labels: dict | None = None, **bgp: Any) -> dict:
    spec_bgp = {k: v for k, v in (("ipv4Address", v4), ("ipv6Address", v6)) if v} | bgp
    return {"apiVersion": API, "kind": "Node", "metadata": {"name": name, "labels": labels or {}}, "spec": {"bgp": spec_bgp}}


def peer_doc(name: str, **spec: Any) -> dict:
    return {"apiVersion": API, "kind": "BGPPeer", "metadata": {"name": name}, "spec": spec}


def cluster(*docs: dict, global_as: int = 64512, global_port: int = 0, node_ports: dict | None = None) -> Cluster:
    problems: list[str] = []
    nodes = {d["metadata"]["name"]: read_node(d["metadata"]["name"], d, problems) for d in docs}
    assert problems == []
    return Cluster(nodes, global_as, global_port, node_ports or {})  # type: ignore[arg-type]


def peers(*docs: dict) -> list[bgp_peers.PeerSpec]:
    problems: list[str] = []
    out = read_peers(list(docs), problems)
    assert problems == []
    return out


def sessions_of(found: list[Session]) -> list[tuple[str, str, int, int]]:
    return [(s.kind, str(s.ip), s.asn, s.port) for s in found]


THREE = (node_doc("n1", "198.19.0.1/24", "fd00:198:19::1/64"), node_doc("n2", "198.19.0.2/24", "fd00:198:19::2/64"), node_doc("n3", "198.19.0.3/24"))


# --- nodes ---------------------------------------------------------------------------------------


def test_node_addresses_lose_their_prefix_and_keep_as_and_reflector_id() -> None:
    problems: list[str] = []
    info = read_node("n1", node_doc("n1", "198.19.0.1/24", "fd00:198:19::1/64", labels={"rack": "a"}, asNumber=65001, routeReflectorClusterID="224.0.0.1"), problems)
    assert info == NodeInfo("n1", {"rack": "a"}, ip("198.19.0.1"), ip("fd00:198:19::1"), 65001, "224.0.0.1")  # type: ignore[arg-type]
    assert problems == []


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("255.255.255.255/32", "the broadcast address"),
        ("127.0.0.1/8", "not a unicast address of another host"),
        ("0.0.0.0/0", "not a unicast address of another host"),
        ("169.254.0.7/16", "link-local (BIRD needs an interface for it)"),
    ],
)
def test_a_node_address_bgp_cannot_use_is_dropped_and_named(address, reason) -> None:
    problems: list[str] = []
    info = read_node("n1", node_doc("n1", address, "fd00:198:19::1/64"), problems)
    assert info is not None and info.ipv4 is None and info.ipv6 == ip("fd00:198:19::1")
    assert problems == [f"Node(n1): spec.bgp.ipv4Address {address.split('/')[0]} is {reason}; not used for BGP"]


def test_a_document_of_another_kind_is_named_and_left_out() -> None:
    problems: list[str] = []
    assert read_node("n1", {**node_doc("n1", "198.19.0.1/24"), "kind": "IPPool"}, problems) is None
    assert problems == ["Node(n1): stored as kind 'IPPool', not Node; left out of the BIRD configuration"]


# --- the mesh ------------------------------------------------------------------------------------


def test_mesh_leaves_out_this_node_reflectors_and_missing_families() -> None:
    found = cluster(*THREE, node_doc("rr", "198.19.0.9/24", routeReflectorClusterID="224.0.0.1"), node_ports={"n2": 1790})
    problems: list[str] = []
    mesh = mesh_sessions(found, found.nodes["n1"], 120, problems)
    assert sessions_of(mesh) == [("Mesh", "198.19.0.2", 64512, 1790), ("Mesh", "198.19.0.3", 64512, 0), ("Mesh", "fd00:198:19::2", 64512, 1790)]
    assert {s.restart_time for s in mesh} == {120} and problems == []
    assert [s.name for s in mesh] == ["Mesh_198_19_0_2", "Mesh_198_19_0_3", "Mesh_fd00_198_19__2"]  # no _port_ in a mesh name


# --- which nodes a peerIP designates (nodesWithIPPortAndAS) --------------------------------------


def test_nodes_at_match_the_address_and_the_as_or_the_clusters() -> None:
    found = cluster(node_doc("a", "198.19.0.1/24"), node_doc("b", "198.19.0.2/24", asNumber=65002))
    assert found.nodes_at(ip("198.19.0.1"), 0, 0) == ["a"]  # no AS given: the cluster's
    assert found.nodes_at(ip("198.19.0.1"), 64512, 0) == ["a"]
    assert found.nodes_at(ip("198.19.0.1"), 65002, 0) == []
    assert found.nodes_at(ip("198.19.0.2"), 65002, 0) == ["b"]
    assert found.nodes_at(ip("198.19.0.2"), 0, 0) == []


@pytest.mark.parametrize(
    ("global_port", "own_port", "asked", "matches"),
    [
        (0, None, 1790, True),  # nothing set: any port
        (0, 1790, 1790, True),
        (0, 1790, 1791, False),
        (1790, None, 1790, True),
        (1790, None, 1791, False),
        (1790, 1791, 1791, False),  # Calico's quirk: the node's own port matches, the cluster's does not
        (1790, 1791, 1790, False),
    ],
)
def test_a_peer_port_must_be_the_nodes_listen_port_as_calico_checks_it(global_port, own_port, asked, matches) -> None:
    found = cluster(node_doc("a", "198.19.0.1/24"), global_port=global_port, node_ports={"a": own_port} if own_port else {})
    assert found.nodes_at(ip("198.19.0.1"), 0, asked) == (["a"] if matches else [])


# --- expansion -----------------------------------------------------------------------------------


def test_a_peer_ip_without_a_port_dials_the_calico_node_on_its_listen_port() -> None:
    found = cluster(*THREE, node_ports={"n3": 1791})
    assert sessions_of(expand(found, "n1", peers(peer_doc("p", peerIP="198.19.0.3", asNumber=64512)))) == [("Global", "198.19.0.3", 64512, 1791)]
    # Another AS: not that node, so BGP's port.
    assert sessions_of(expand(found, "n1", peers(peer_doc("p", peerIP="198.19.0.3", asNumber=65000)))) == [("Global", "198.19.0.3", 65000, 0)]


def test_global_peer_wins_over_a_node_peer_to_the_same_address_and_port_only() -> None:
    found = cluster(*THREE)
    given = peers(
        peer_doc("a-node", node="n1", peerIP="198.19.0.254", asNumber=65001),
        peer_doc("b-node-port", node="n1", peerIP="198.19.0.254:1790", asNumber=65002),
        peer_doc("z-global", peerIP="198.19.0.254", asNumber=65000),
    )
    assert sessions_of(expand(found, "n1", given)) == [("Global", "198.19.0.254", 65000, 0), ("Node", "198.19.0.254", 65002, 1790)]


def test_first_peer_by_name_wins_for_the_same_address_and_port() -> None:
    given = peers(peer_doc("b", peerIP="198.19.0.254", asNumber=65002), peer_doc("a", peerIP="198.19.0.254", asNumber=65001))
    assert sessions_of(expand(cluster(*THREE), "n1", given)) == [("Global", "198.19.0.254", 65001, 0)]


def test_an_explicit_peering_wins_over_the_reverse_one() -> None:
    found = cluster(*THREE)
    given = peers(
        peer_doc("n1-to-n3", node="n1", peerIP="198.19.0.3", asNumber=64512, ttlSecurity=1),
        peer_doc("n3-to-n1", node="n3", peerIP="198.19.0.1", asNumber=64512, ttlSecurity=5),
    )
    # n1 gets n1-to-n3 forward and the reverse of n3-to-n1: the same address, so the forward one stays.
    [session] = expand(found, "n1", given)
    assert (session.kind, str(session.ip), session.ttl_security, session.origin) == ("Node", "198.19.0.3", 1, "BGPPeer(n1-to-n3)")


def test_reverse_peering_of_a_peer_ip_with_a_port_needs_the_nodes_port() -> None:
    given = peers(peer_doc("to-n3", node="n1", peerIP="198.19.0.3:1791", asNumber=64512))
    assert sessions_of(expand(cluster(*THREE, node_ports={"n3": 1791}), "n3", given)) == [("Node", "198.19.0.1", 64512, 0)]
    assert expand(cluster(*THREE, node_ports={"n3": 1790}), "n3", given) == []


def test_reverse_peering_of_a_selector_covers_both_families_and_a_peer_ip_only_its_own() -> None:
    found = cluster(*THREE)
    by_selector = peers(peer_doc("sel", node="n2", peerSelector="all()"))
    assert sessions_of(expand(found, "n1", by_selector)) == [("Node", "198.19.0.2", 64512, 0), ("Node", "fd00:198:19::2", 64512, 0)]
    by_ip = peers(peer_doc("v6", node="n2", peerIP="fd00:198:19::1", asNumber=64512))
    assert sessions_of(expand(found, "n1", by_ip)) == [("Node", "fd00:198:19::2", 64512, 0)]


def test_reverse_peering_of_a_node_peer_for_a_missing_node_is_nothing() -> None:
    given = peers(peer_doc("ghost", node="gone", peerIP="198.19.0.1", asNumber=64512))
    assert expand(cluster(*THREE), "n1", given) == []


def test_selected_nodes_bring_their_as_port_and_reflector_id_and_the_peers_options() -> None:
    found = cluster(*THREE, node_doc("rr", "198.19.0.9/24", labels={"rr": "true"}, asNumber=65009, routeReflectorClusterID="224.0.0.1"), node_ports={"rr": 1799})
    given = peers(peer_doc("to-rr", nodeSelector="all()", peerSelector="rr == 'true'", ttlSecurity=2, maxRestartTime="30s", sourceAddress="None", filters=["f"]))
    [session] = expand(found, "n1", given)
    assert (session.kind, str(session.ip), session.asn, session.port, session.rr_cluster_id) == ("Node", "198.19.0.9", 65009, 1799, "224.0.0.1")
    assert (session.ttl_security, session.restart_time, session.use_node_ip, session.filters) == (2, 30, False, ("f",))
    assert not session.calico_node and not session.keep_next_hop and session.reachable_by is None


def test_a_peer_ip_session_carries_every_option() -> None:
    spec = dict(peerIP="198.20.0.1:1790", asNumber=65000, keepOriginalNextHop=True, ttlSecurity=3, numAllowedLocalASNumbers=2, reachableBy="198.19.0.254", maxRestartTime="1m", filters=["f"])
    [session] = expand(cluster(*THREE), "n1", peers(peer_doc("tor", **spec)))
    assert session == Session(
        "Global", ip("198.20.0.1"), 65000, 1790, "BGPPeer(tor)", True, False, True, 3, 2, ip("198.19.0.254"), 60, "", ("f",)
    )
    assert session.name == "Global_198_20_0_1_port_1790"


# --- reading a BGPPeer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"node": "n1"}, "BGPPeer(p): neither spec.peerIP nor spec.peerSelector is set; this peer is not rendered"),
        ({"peerIP": "198.19.0.255", "asNumber": 1, "numAllowedLocalASNumbers": -3}, "BGPPeer(p): spec.numAllowedLocalASNumbers -3 is negative; this peer is not rendered"),
        ({"peerIP": "255.255.255.255", "asNumber": 1}, "BGPPeer(p): spec.peerIP 255.255.255.255 is the broadcast address; this peer is not rendered"),
        ({"peerIP": "198.19.0.255", "asNumber": 1, "maxRestartTime": "-1s"}, "BGPPeer(p): spec.maxRestartTime -1s is outside 0s to 4095s (BGP's restart time field); not rendered"),
    ],
)
def test_peers_that_cannot_be_rendered_say_why(spec, problem) -> None:
    problems: list[str] = []
    found = read_peer(peer_doc("p", **spec), "#0", problems)
    assert problems == [problem]
    if "maxRestartTime" in spec:  # only the restart time is left out
        assert found is not None and found.restart_time is None
    else:
        assert found is None


def test_a_selector_the_parser_refuses_is_named(mocker) -> None:
    # The decoder parses selectors with the same parser, so only a parser failing the second time
    # reaches this branch.
    mocker.patch.object(bgp_peers, "parse", side_effect=bgp_peers.SelectorError("boom"))
    problems: list[str] = []
    assert read_peer(peer_doc("p", nodeSelector="all()", peerIP="198.19.0.9", asNumber=1), "#0", problems) is None
    assert problems == ["BGPPeer(p): spec.nodeSelector: boom; this peer is not rendered"]


def test_a_broken_document_is_named_by_its_place_in_the_list() -> None:
    problems: list[str] = []
    assert read_peers([None, {"metadata": {"name": 7}}], problems) == []
    assert problems[0] == "BGPPeer(#0): not a JSON object; left out of the BIRD configuration"
    assert problems[1].startswith("BGPPeer(#1): metadata.name")


@pytest.mark.parametrize(("text", "seconds"), [("-1.5s", -2), ("-1.4s", -1), ("2.5s", 3), ("1h1m1.5s", 3662), ("0s", 0)])
def test_durations_round_half_away_from_zero_as_go_math_round(text, seconds) -> None:
    assert bgp_peers.duration_seconds(text) == seconds


def test_labels_quote_names_that_are_not_plain() -> None:
    assert bgp_peers.label("BGPPeer", "tor-1.rack") == "BGPPeer(tor-1.rack)"
    assert bgp_peers.label("BGPPeer", "a b") == "BGPPeer('a b')"
    assert bgp_peers.label("BGPPeer", None) == "BGPPeer(None)"


@pytest.mark.parametrize(
    ("kind", "calico_node", "one_way"),
    [("Mesh", False, True), ("Global", True, True), ("Global", False, False), ("Node", True, False), ("Node", False, False)],
)
def test_the_higher_address_connects_in_the_mesh_and_to_a_global_peer_that_is_a_calico_node(kind, calico_node, one_way) -> None:
    assert Session(kind, ip("198.19.0.9"), 64512, calico_node=calico_node).higher_address_connects is one_way
