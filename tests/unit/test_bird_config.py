"""calico_cni.node.bird_config (and bgp_peers): the BIRD 2 configuration a node renders from the
datastore, rule by rule as Calico v3.30's confd renders it: router id, kernel/device/direct/static
protocols, export and kernel filters, the node-to-node mesh, global, per-node, selector and reverse
peerings, route reflectors, BGPFilters, communities, and hostile input that must never reach the
text. Every rendered configuration is also checked by the real BIRD (`bird -p -c`), so it is BIRD 2
syntax for sure, and rendered twice to show equal inputs give equal text. Pure: no network, no
root."""

from __future__ import annotations

import copy
import hashlib
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calico_cni.node import bgp_peers
from calico_cni.node.bird_config import Rendered, RoutingInputs, hash_router_id, interface_glob, render

BIRD = shutil.which("bird") or "/usr/sbin/bird"
API = "projectcalico.org/v3"


# --- documents ------------------------------------------------------------------------------------


def node(name: str, v4: str | None = None, v6: str | None = None, labels: dict | None = None, **bgp: Any) -> dict:
    spec_bgp = {k: v for k, v in (("ipv4Address", v4), ("ipv6Address", v6)) if v}
    spec_bgp.update(bgp)
    meta: dict = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": API, "kind": "Node", "metadata": meta, "spec": {"bgp": spec_bgp} if spec_bgp else {}}


def resource(kind: str, name: str, **spec: Any) -> dict:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def pool(name: str, cidr: str, **spec: Any) -> dict:
    return resource("IPPool", name, cidr=cidr, **spec)


def peer(name: str, **spec: Any) -> dict:
    return resource("BGPPeer", name, **spec)


def config(name: str = "default", **spec: Any) -> dict:
    return resource("BGPConfiguration", name, **spec)


def three_nodes(**extra: dict) -> dict[str, dict]:
    """n1..n3 at 198.19.0.N/24 and fd00:198:19::N/64; `extra` replaces a node's document."""
    nodes = {f"n{i}": node(f"n{i}", f"198.19.0.{i}/24", f"fd00:198:19::{i}/64") for i in (1, 2, 3)}
    nodes.update(extra)
    return nodes


POOLS = [pool("v4", "198.18.0.0/16"), pool("v6", "fd00:198:18::/48")]


def inputs(
    me: str = "n1",
    nodes: dict | None = None,
    configs: dict | None = None,
    peers: list | None = None,
    filters: dict | None = None,
    pools: list | None = None,
    blocks: list | None = None,
    router_id: str | None = None,
) -> RoutingInputs:
    return RoutingInputs(
        node=me,
        nodes=three_nodes() if nodes is None else nodes,
        bgp_configurations={c["metadata"]["name"]: c for c in configs} if isinstance(configs, list) else (configs or {}),
        peers=peers or [],
        filters=filters or {},
        pools=POOLS if pools is None else pools,
        blocks=blocks or [],
        router_id=router_id,
    )


@pytest.fixture
def checked(tmp_path: Path) -> Callable[[RoutingInputs], Rendered]:
    """render() whose text BIRD 2 itself accepts (`bird -p`), and which renders the same twice."""
    assert Path(BIRD).exists(), "BIRD 2 is needed for these tests: apt-get install bird2 (scripts/setup-deps.sh)"
    count = iter(range(1000))

    def run(given: RoutingInputs) -> Rendered:
        rendered = render(given)
        assert render(given) == rendered
        path = tmp_path / f"bird{next(count)}.conf"
        path.write_text(rendered.text)
        done = subprocess.run([BIRD, "-p", "-c", str(path)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"bird -p refused it: {done.stderr}\n{rendered.text}"
        return rendered

    return run


def protocol(text: str, name: str) -> str:
    """The block of `protocol ... <name> ...` up to its closing brace at the start of a line."""
    match = re.search(rf"^protocol \w+ {re.escape(name)}( from \w+)? {{\n.*?^}}\n", text, re.M | re.S)
    assert match, f"no protocol {name} in:\n{text}"
    return match.group(0)


def function(text: str, name: str) -> str:
    match = re.search(rf"^(function|filter) {re.escape(name)}(?=[\s(]).*?^}}\n", text, re.M | re.S)
    assert match, f"no function/filter {name} in:\n{text}"
    return match.group(0)


def bgp_names(text: str) -> list[str]:
    return re.findall(r"^protocol bgp (\S+) from bgp_template", text, re.M)


# --- router id, logging, base protocols ----------------------------------------------------------


def test_router_id_is_the_node_ipv4_address(checked) -> None:
    assert "\nrouter id 198.19.0.1;\n" in checked(inputs()).text


def test_router_id_hash_is_sha256_of_the_node_name_out_of_the_multicast_range(checked) -> None:
    text = checked(inputs(router_id="hash")).text
    digest = hashlib.sha256(b"n1").digest()
    first = digest[0] - 32 if digest[0] > 223 else digest[0]
    assert f"\nrouter id {first}.{digest[1]}.{digest[2]}.{digest[3]};\n" in text
    # A name whose hash starts above 223 is lowered by 32 (found by search, not assumed).
    high = next(n for n in (f"node-{i}" for i in range(1000)) if hashlib.sha256(n.encode()).digest()[0] > 223)
    assert int(hash_router_id(high).split(".")[0]) == hashlib.sha256(high.encode()).digest()[0] - 32


def test_router_id_hash_of_a_name_that_is_not_utf8_hashes_its_bytes(checked) -> None:
    # Python reads a NODENAME holding invalid UTF-8 with surrogate escapes; Go hashes the raw bytes.
    digest = hashlib.sha256(b"node-\xff").digest()
    assert hash_router_id("node-\udcff") == ".".join(str(b) for b in (digest[0] - 32 if digest[0] > 223 else digest[0], *digest[1:4]))
    name = "node-\udcff"
    rendered = checked(inputs(me=name, router_id="hash"))
    assert f"\nrouter id {hash_router_id(name)};\n" in rendered.text


def test_router_id_literal(checked) -> None:
    assert "\nrouter id 10.255.0.7;\n" in checked(inputs(router_id="10.255.0.7")).text


def test_ipv6_only_node_without_router_id_renders_no_bgp_and_says_why(checked) -> None:
    nodes = three_nodes(n1=node("n1", v6="fd00:198:19::1/64"))
    rendered = checked(inputs(nodes=nodes))
    assert "router id" not in rendered.text and "protocol bgp" not in rendered.text and "template bgp" not in rendered.text
    assert "protocol kernel kernel6" in rendered.text
    assert any(p.startswith("Node(n1): no IPv4 address and no CALICO_ROUTER_ID") for p in rendered.problems)


def test_ipv6_only_node_with_hashed_router_id_has_the_ipv6_mesh_only(checked) -> None:
    nodes = three_nodes(n1=node("n1", v6="fd00:198:19::1/64"))
    rendered = checked(inputs(nodes=nodes, router_id="hash"))
    assert bgp_names(rendered.text) == ["Mesh_fd00_198_19__2", "Mesh_fd00_198_19__3"]
    assert rendered.problems == ()


@pytest.mark.parametrize(
    ("default", "own", "line"),
    [
        (None, None, "debug protocols { states };"),
        ("Debug", None, "debug protocols all;"),
        ("Info", None, "debug protocols { states };"),
        ("Warning", None, None),
        ("Info", "Debug", "debug protocols all;"),
        ("Debug", "Error", None),
    ],
)
def test_log_severity_sets_protocol_debugging(checked, default, own, line) -> None:
    configs = [config("default", **({"logSeverityScreen": default} if default else {}))]
    if own:
        configs.append(config("node.n1", logSeverityScreen=own))
    text = checked(inputs(configs=configs)).text
    found = re.findall(r"^debug protocols .*$", text, re.M)
    assert found == ([line] if line else [])


def test_kernel_device_and_direct_protocols(checked) -> None:
    text = checked(inputs(configs=[config(ignoredInterfaces=["eth9", "veth*"])])).text
    for family in (4, 6):
        assert protocol(text, f"kernel{family}") == (
            f"protocol kernel kernel{family} {{\n  learn;\n  persist;\n  scan time 2;\n  graceful restart;\n  merge paths on;\n"
            f"  ipv{family} {{\n    import all;\n    export filter calico_kernel_programming_v{family};\n  }};\n}}\n"
        )
    assert "protocol device {\n  scan time 2;\n}\n" in text
    assert '  interface -"eth9", -"veth*", -"cali*", -"kube-ipvs*", "*";\n' in text


def test_direct_protocol_without_ignored_interfaces(checked) -> None:
    assert '  interface -"cali*", -"kube-ipvs*", "*";\n' in checked(inputs()).text


def test_bgp_template_carries_the_node_as_and_calico_timers(checked) -> None:
    nodes = three_nodes(n1=node("n1", "198.19.0.1/24", asNumber=65001))
    text = checked(inputs(nodes=nodes)).text
    assert (
        "template bgp bgp_template {\n"
        '  description "Connection to BGP peer";\n'
        "  local as 65001;\n"
        "  graceful restart on;\n"
        "  connect delay time 2;\n"
        "  connect retry time 5;\n"
        "  error wait time 5,30;\n"
        "}\n"
    ) in text


def test_cluster_as_number_then_64512(checked) -> None:
    assert "  local as 64512;\n" in checked(inputs()).text
    assert "  local as 65100;\n" in checked(inputs(configs=[config(asNumber=65100)])).text


# --- blocks, pools, services ---------------------------------------------------------------------


def test_blocks_are_blackholed_and_exported_as_aggregates_only(checked) -> None:
    blocks = ["198.18.0.0/26", "198.18.3.7/32", "fd00:198:18::/122", "fd00:198:18::9/128"]
    text = checked(inputs(blocks=blocks)).text
    assert protocol(text, "static4") == "protocol static static4 {\n  ipv4;\n  route 198.18.0.0/26 blackhole;\n}\n"
    assert protocol(text, "static6") == "protocol static static6 {\n  ipv6;\n  route fd00:198:18::/122 blackhole;\n}\n"
    assert function(text, "calico_aggr_v4") == (
        "function calico_aggr_v4() {\n"
        "  if ( net = 198.18.0.0/26 ) then { accept; }\n"
        "  if ( net ~ 198.18.0.0/26 ) then { reject; }\n"
        "  if ( net = 198.18.3.7/32 ) then { accept; }\n"
        "  if ( net ~ 198.18.3.7/32 ) then { reject; }\n"
        "}\n"
    )
    assert "if ( net = fd00:198:18::/122 ) then { accept; }" in function(text, "calico_aggr_v6")


def test_export_function_rejects_disabled_pools_and_accepts_only_pools(checked) -> None:
    pools = [*POOLS, pool("quiet", "198.20.0.0/24", disableBGPExport=True)]
    text = checked(inputs(pools=pools)).text
    assert function(text, "calico_export_to_bgp_peers_v4") == (
        "function calico_export_to_bgp_peers_v4(bool internal_peer) {\n"
        "  if ( net ~ 198.20.0.0/24 ) then { reject; }\n"
        "  if internal_peer then {\n"
        '    if ((ifname ~ "*.cali") || (ifname ~ "*.calico")) then { reject; }\n'
        "  }\n"
        '  if ( ifname ~ "bpf*.cali" ) then { reject; }\n'
        "  apply_communities_v4();\n"
        "  calico_aggr_v4();\n"
        "  if ( net ~ 198.18.0.0/16 ) then { accept; }\n"
        "}\n"
    )
    assert "  if ( net ~ fd00:198:18::/48 ) then { accept; }\n" in function(text, "calico_export_to_bgp_peers_v6")


def test_encapsulated_pools_are_kept_out_of_the_kernel_and_reported(checked) -> None:
    pools = [*POOLS, pool("ipip", "198.21.0.0/16", ipipMode="Always"), pool("vx", "198.22.0.0/16", vxlanMode="CrossSubnet"), pool("vx6", "fd00:198:22::/48", vxlanMode="Always")]
    rendered = checked(inputs(pools=pools))
    kernel4 = function(rendered.text, "calico_kernel_programming_v4")
    assert "if ( net ~ 198.21.0.0/16 ) then { reject; }" in kernel4 and "if ( net ~ 198.22.0.0/16 ) then { reject; }" in kernel4
    assert "198.18.0.0/16" not in kernel4
    assert "if ( net ~ fd00:198:22::/48 ) then { reject; }" in function(rendered.text, "calico_kernel_programming_v6")
    assert rendered.unrouted_pools == ("198.21.0.0/16", "198.22.0.0/16", "fd00:198:22::/48")
    # They are still advertised, as Calico advertises them.
    assert "if ( net ~ 198.21.0.0/16 ) then { accept; }" in function(rendered.text, "calico_export_to_bgp_peers_v4")


def test_kernel_filter_keeps_interface_routes_out(checked) -> None:
    assert "  if ( source = RTS_DEVICE ) then { reject; }\n" in function(checked(inputs()).text, "calico_kernel_programming_v4")


def test_service_ranges_are_blackholed_exported_and_kept_out_of_the_kernel(checked) -> None:
    svc = config(
        serviceClusterIPs=[{"cidr": "10.96.0.0/12"}, {"cidr": "fd00:96::/108"}],
        serviceExternalIPs=[{"cidr": "203.0.113.0/24"}, {"cidr": "203.0.114.5/32"}],
        serviceLoadBalancerIPs=[{"cidr": "198.51.100.0/24"}, {"cidr": "198.51.101.1/32"}],
    )
    text = checked(inputs(configs=[svc])).text
    ranges = ["10.96.0.0/12", "203.0.113.0/24", "198.51.100.0/24"]
    for cidr in ranges:
        assert f"  route {cidr} blackhole;\n" in protocol(text, "static4")
        assert f"  if ( net ~ {cidr} ) then {{ accept; }}\n" in function(text, "calico_export_to_bgp_peers_v4")
        assert f"  if ( net ~ {cidr} ) then {{ reject; }}\n" in function(text, "calico_kernel_programming_v4")
    # Single external and load-balancer addresses are advertised per Service by Calico: not here.
    assert "203.0.114.5" not in text and "198.51.101.1" not in text
    assert "  route fd00:96::/108 blackhole;\n" in protocol(text, "static6")


def test_node_excluded_from_service_advertisement_still_keeps_them_out_of_the_kernel(checked) -> None:
    nodes = three_nodes(n1=node("n1", "198.19.0.1/24", labels={"node.kubernetes.io/exclude-from-external-load-balancers": "true"}))
    text = checked(inputs(nodes=nodes, configs=[config(serviceClusterIPs=[{"cidr": "10.96.0.0/12"}])])).text
    assert "10.96.0.0/12" not in protocol(text, "static4")
    assert "10.96.0.0/12" not in function(text, "calico_export_to_bgp_peers_v4")
    assert "  if ( net ~ 10.96.0.0/12 ) then { reject; }\n" in function(text, "calico_kernel_programming_v4")


def test_route_reflector_accepts_load_balancer_ranges_including_single_addresses(checked) -> None:
    nodes = three_nodes(n1=node("n1", "198.19.0.1/24", routeReflectorClusterID="224.0.0.1"))
    lb = config(serviceLoadBalancerIPs=[{"cidr": "198.51.101.1/32"}])
    text = checked(inputs(nodes=nodes, configs=[lb])).text
    assert "  if ( net ~ 198.51.101.1/32 ) then { accept; }\n" in function(text, "calico_export_to_bgp_peers_v4")
    assert "198.51.101.1" not in protocol(text, "static4")


def test_prefix_advertisements_add_communities_by_value_and_by_name(checked) -> None:
    cfg = config(
        communities=[{"name": "big", "value": "65001:300:7"}],
        prefixAdvertisements=[
            {"cidr": "198.18.0.0/16", "communities": ["65001:100", "big"]},
            {"cidr": "fd00:198:18::/48", "communities": ["65001:600"]},
        ],
    )
    text = checked(inputs(configs=[cfg])).text
    assert function(text, "apply_communities_v4") == (
        "function apply_communities_v4() {\n"
        "  if ( net ~ 198.18.0.0/16 ) then {\n"
        "    bgp_community.add((65001, 100));\n"
        "    bgp_large_community.add((65001, 300, 7));\n"
        "  }\n"
        "}\n"
    )
    assert "    bgp_community.add((65001, 600));\n" in function(text, "apply_communities_v6")


def test_node_prefix_advertisements_replace_the_clusters(checked) -> None:
    configs = [
        config(prefixAdvertisements=[{"cidr": "198.18.0.0/16", "communities": ["65001:100"]}]),
        config("node.n1", prefixAdvertisements=[{"cidr": "198.18.0.0/24", "communities": ["65001:200"]}]),
    ]
    text = function(checked(inputs(configs=configs)).text, "apply_communities_v4")
    assert "65001, 200" in text and "65001, 100" not in text


# --- the mesh -------------------------------------------------------------------------------------


def test_a_node_with_fields_of_a_later_calico_release_stays_in_the_mesh(checked) -> None:
    """Fields a newer Calico writes (in spec, spec.bgp, metadata, or a top-level status) are read
    past, not a reason to drop the node: it would vanish from every other node's mesh."""
    later = node("n3", "198.19.0.3/24", "fd00:198:19::3/64")
    later["spec"]["futureField"] = {"x": 1}
    later["spec"]["bgp"]["futureBGPField"] = True
    later["metadata"]["futureMeta"] = "y"
    later["futureTopLevel"] = 1
    rendered = checked(inputs(me="n2", nodes=three_nodes(n3=later)))
    assert "Mesh_198_19_0_3" in bgp_names(rendered.text) and not any("n3" in p for p in rendered.problems), rendered.problems


def test_mesh_of_three_nodes(checked) -> None:
    text = checked(inputs(me="n2")).text
    assert bgp_names(text) == ["Mesh_198_19_0_1", "Mesh_198_19_0_3", "Mesh_fd00_198_19__1", "Mesh_fd00_198_19__3"]
    assert protocol(text, "Mesh_198_19_0_1") == (
        "protocol bgp Mesh_198_19_0_1 from bgp_template {\n"
        "  neighbor 198.19.0.1 as 64512;\n"
        "  source address 198.19.0.2;\n"
        "  ipv4 {\n"
        "    gateway recursive;\n"
        "    add paths on;\n"
        "    import all;\n"
        "    export filter { calico_export_to_bgp_peers_v4(true); reject; };\n"
        "  };\n"
        "}\n"
    )
    # The peer whose address sorts after ours dials us.
    assert "  passive on;\n" in protocol(text, "Mesh_198_19_0_3")
    assert "  passive on;\n" not in protocol(text, "Mesh_198_19_0_1")
    v6 = protocol(text, "Mesh_fd00_198_19__3")
    assert "  neighbor fd00:198:19::3 as 64512;\n  source address fd00:198:19::2;\n  passive on;\n  ipv6 {\n" in v6
    assert "calico_export_to_bgp_peers_v6(true)" in v6


def test_mesh_passive_side_compares_address_strings_not_numbers(checked) -> None:
    nodes = {"a": node("a", "198.19.0.9/24"), "b": node("b", "198.19.0.10/24")}
    # "198.19.0.10" sorts before "198.19.0.9": node a dials, node b waits.
    assert "passive on" not in protocol(checked(inputs(me="a", nodes=nodes)).text, "Mesh_198_19_0_10")
    assert "passive on" in protocol(checked(inputs(me="b", nodes=nodes)).text, "Mesh_198_19_0_9")


def test_mesh_uses_each_peers_own_as_and_listen_port(checked) -> None:
    nodes = three_nodes(n2=node("n2", "198.19.0.2/24", asNumber=65002))
    configs = [config(listenPort=1790), config("node.n3", listenPort=1791)]
    text = checked(inputs(nodes=nodes, configs=configs)).text
    assert "  neighbor 198.19.0.2 port 1790 as 65002;\n" in protocol(text, "Mesh_198_19_0_2")
    assert "  neighbor 198.19.0.3 port 1791 as 64512;\n" in protocol(text, "Mesh_198_19_0_3")
    assert "  local port 1790 as 64512;\n" in text


def test_own_listen_port_wins_over_the_clusters(checked) -> None:
    text = checked(inputs(configs=[config(listenPort=1790), config("node.n1", listenPort=1800)])).text
    assert "  local port 1800 as 64512;\n" in text


def test_mesh_restart_time(checked) -> None:
    text = checked(inputs(configs=[config(nodeMeshMaxRestartTime="2m30s")])).text
    assert "  graceful restart time 150;\n" in protocol(text, "Mesh_198_19_0_2")


def test_mesh_off(checked) -> None:
    text = checked(inputs(configs=[config(nodeToNodeMeshEnabled=False)])).text
    assert bgp_names(text) == []


def test_route_reflectors_are_left_out_of_the_mesh_and_render_none(checked) -> None:
    nodes = three_nodes(n3=node("n3", "198.19.0.3/24", routeReflectorClusterID="224.0.0.1"))
    assert bgp_names(checked(inputs(nodes=nodes)).text) == ["Mesh_198_19_0_2", "Mesh_fd00_198_19__2"]
    assert bgp_names(checked(inputs(me="n3", nodes=nodes)).text) == []


def test_mesh_only_in_families_both_ends_have(checked) -> None:
    nodes = three_nodes(n2=node("n2", "198.19.0.2/24"), n3=node("n3", v6="fd00:198:19::3/64"))
    assert bgp_names(checked(inputs(nodes=nodes)).text) == ["Mesh_198_19_0_2", "Mesh_fd00_198_19__3"]


def test_mesh_password_cannot_be_read_so_the_mesh_is_not_rendered(checked) -> None:
    cfg = config(nodeMeshPassword={"secretKeyRef": {"name": "bgp", "key": "mesh"}})
    rendered = checked(inputs(configs=[cfg]))
    assert bgp_names(rendered.text) == []
    assert "BGPConfiguration(default): spec.nodeMeshPassword needs the Kubernetes API (etcd mode has no secrets); the node-to-node mesh is not rendered" in rendered.problems


def test_a_second_node_with_the_same_address_is_reported_and_left_out(checked) -> None:
    nodes = three_nodes(n4=node("n4", "198.19.0.2/24"), n5=node("n5", "198.19.0.1/24"))
    rendered = checked(inputs(nodes=nodes))
    assert bgp_names(rendered.text).count("Mesh_198_19_0_2") == 1
    assert "Node(n4): its IPv4 address 198.19.0.2 is also node n2's; left out of the mesh" in rendered.problems
    assert "Node(n5): its IPv4 address 198.19.0.1 is also node n1's; left out of the mesh" in rendered.problems


# --- BGPPeers -------------------------------------------------------------------------------------


def test_global_peer(checked) -> None:
    rendered = checked(inputs(peers=[peer("tor", peerIP="198.19.0.254", asNumber=65000)]))
    assert protocol(rendered.text, "Global_198_19_0_254") == (
        "protocol bgp Global_198_19_0_254 from bgp_template {\n"
        "  ttl security off;\n"
        "  multihop;\n"
        "  neighbor 198.19.0.254 as 65000;\n"
        "  source address 198.19.0.1;\n"
        "  ipv4 {\n"
        "    gateway recursive;\n"
        "    add paths on;\n"
        "    import filter { accept; };\n"
        "    export filter { calico_export_to_bgp_peers_v4(false); reject; };\n"
        "  };\n"
        "}\n"
    )
    # Every node has it.
    assert "Global_198_19_0_254" in bgp_names(checked(inputs(me="n3", peers=[peer("tor", peerIP="198.19.0.254", asNumber=65000)])).text)


def test_peer_with_port_ipv6_and_same_as(checked) -> None:
    peers = [peer("a", peerIP="198.19.0.254:1790", asNumber=65000), peer("b", peerIP="[fd00:198:19::fe]:1791", asNumber=64512)]
    text = checked(inputs(peers=peers)).text
    assert "  neighbor 198.19.0.254 port 1790 as 65000;\n" in protocol(text, "Global_198_19_0_254_port_1790")
    six = protocol(text, "Global_fd00_198_19__fe_port_1791")
    assert "  neighbor fd00:198:19::fe port 1791 as 64512;\n  source address fd00:198:19::1;\n" in six
    assert "export filter { calico_export_to_bgp_peers_v6(true); reject; };" in six


def test_peer_options(checked) -> None:
    spec = dict(peerIP="198.19.0.254", asNumber=65000, keepOriginalNextHop=True, ttlSecurity=2, maxRestartTime="90s", numAllowedLocalASNumbers=3, sourceAddress="None")
    block = protocol(checked(inputs(peers=[peer("tor", **spec)])).text, "Global_198_19_0_254")
    assert "  ttl security on;\n  multihop 2;\n  neighbor 198.19.0.254 as 65000;\n" in block
    assert "source address" not in block
    assert "  graceful restart time 90;\n" in block and "  allow local as 3;\n" in block
    assert "    next hop keep;\n" in block


def test_next_hop_keep_only_for_external_peers(checked) -> None:
    block = protocol(checked(inputs(peers=[peer("rr", peerIP="198.19.0.254", asNumber=64512, keepOriginalNextHop=True)])).text, "Global_198_19_0_254")
    assert "next hop keep" not in block


def test_reachable_by_adds_a_static_route_to_the_peer(checked) -> None:
    text = checked(inputs(peers=[peer("far", peerIP="198.20.5.1", asNumber=65000, reachableBy="198.19.0.254")])).text
    assert "  route 198.20.5.1/32 via 198.19.0.254;\n" in protocol(text, "static4")


def test_per_node_peer_by_name_and_by_selector(checked) -> None:
    nodes = three_nodes(n2=node("n2", "198.19.0.2/24", labels={"rack": "a"}))
    peers = [peer("one", node="n1", peerIP="198.19.0.250", asNumber=65000), peer("rack", nodeSelector="rack == 'a'", peerIP="198.19.0.251", asNumber=65000)]
    n1 = checked(inputs(nodes=nodes, peers=peers)).text
    n2 = checked(inputs(me="n2", nodes=nodes, peers=peers)).text
    n3 = checked(inputs(me="n3", nodes=nodes, peers=peers)).text
    assert "Node_198_19_0_250" in bgp_names(n1) and "Node_198_19_0_251" not in bgp_names(n1)
    assert "Node_198_19_0_251" in bgp_names(n2) and "Node_198_19_0_250" not in bgp_names(n2)
    assert not [n for n in bgp_names(n3) if n.startswith("Node_")]
    assert protocol(n1, "Node_198_19_0_250").startswith("protocol bgp Node_198_19_0_250 from bgp_template {\n  ttl security off;\n  multihop;\n  neighbor 198.19.0.250 as 65000;\n")


def test_node_peer_skipped_when_a_global_peer_has_the_same_address(checked) -> None:
    peers = [peer("glob", peerIP="198.19.0.254", asNumber=65000), peer("mine", node="n1", peerIP="198.19.0.254", asNumber=65001)]
    names = bgp_names(checked(inputs(peers=peers)).text)
    assert "Global_198_19_0_254" in names and "Node_198_19_0_254" not in names


def test_peer_selector_peers_with_each_matching_node(checked) -> None:
    nodes = three_nodes(
        n2=node("n2", "198.19.0.2/24", "fd00:198:19::2/64", labels={"edge": "yes"}, asNumber=65002),
        n3=node("n3", "198.19.0.3/24", labels={"edge": "yes"}),
    )
    configs = [config(nodeToNodeMeshEnabled=False), config("node.n3", listenPort=1791)]
    peers = [peer("edges", node="n1", peerSelector="edge == 'yes'")]
    text = checked(inputs(nodes=nodes, configs=configs, peers=peers)).text
    assert bgp_names(text) == ["Node_198_19_0_2", "Node_198_19_0_3_port_1791", "Node_fd00_198_19__2"]
    assert "  neighbor 198.19.0.2 as 65002;\n" in protocol(text, "Node_198_19_0_2")
    assert "  neighbor 198.19.0.3 port 1791 as 64512;\n" in protocol(text, "Node_198_19_0_3_port_1791")


def test_reverse_peering_of_a_peer_ip_that_is_a_calico_node(checked) -> None:
    peers = [peer("to-n3", node="n1", peerIP="198.19.0.3", asNumber=64512)]
    configs = [config(nodeToNodeMeshEnabled=False)]
    assert bgp_names(checked(inputs(configs=configs, peers=peers)).text) == ["Node_198_19_0_3"]
    # n3 peers back with n1 over IPv4 only (the family of the peerIP), n2 has nothing.
    assert bgp_names(checked(inputs(me="n3", configs=configs, peers=peers)).text) == ["Node_198_19_0_1"]
    assert bgp_names(checked(inputs(me="n2", configs=configs, peers=peers)).text) == []


def test_no_reverse_peering_when_the_as_differs(checked) -> None:
    peers = [peer("to-n3", node="n1", peerIP="198.19.0.3", asNumber=65099)]
    assert bgp_names(checked(inputs(me="n3", configs=[config(nodeToNodeMeshEnabled=False)], peers=peers)).text) == []


def test_global_peer_that_is_a_calico_node_waits_when_its_address_sorts_after_ours(checked) -> None:
    peers = [peer("to-n3", peerIP="198.19.0.3", asNumber=64512)]
    configs = [config(nodeToNodeMeshEnabled=False)]
    n1 = checked(inputs(configs=configs, peers=peers)).text
    assert "  passive on;\n" in protocol(n1, "Global_198_19_0_3")
    # n3 is the peer: the reverse peerings make it peer with every other node (not itself).
    assert bgp_names(checked(inputs(me="n3", configs=configs, peers=peers)).text) == ["Node_198_19_0_1", "Node_198_19_0_2"]


def route_reflector_cluster(cluster_ids: dict[str, str]) -> tuple[dict, list, list]:
    nodes = three_nodes(
        **{
            name: node(name, f"198.19.0.{name[1]}/24", f"fd00:198:19::{name[1]}/64", labels={"rr": "true"}, routeReflectorClusterID=cid)
            for name, cid in cluster_ids.items()
        }
    )
    return nodes, [config(nodeToNodeMeshEnabled=False)], [peer("to-rr", nodeSelector="all()", peerSelector="rr == 'true'")]


def test_route_reflector_and_clients(checked) -> None:
    nodes, configs, peers = route_reflector_cluster({"n1": "224.0.0.1"})
    rr = checked(inputs(nodes=nodes, configs=configs, peers=peers)).text
    assert bgp_names(rr) == ["Node_198_19_0_2", "Node_198_19_0_3", "Node_fd00_198_19__2", "Node_fd00_198_19__3"]
    assert "  rr client;\n  rr cluster id 224.0.0.1;\n" in protocol(rr, "Node_198_19_0_2")
    assert "  rr client;\n  rr cluster id 224.0.0.1;\n" in protocol(rr, "Node_fd00_198_19__3")
    client = checked(inputs(me="n2", nodes=nodes, configs=configs, peers=peers)).text
    assert bgp_names(client) == ["Node_198_19_0_1", "Node_fd00_198_19__1"]  # the reflector only: not the other client
    assert "rr client" not in client


def test_route_reflectors_of_one_cluster_peer_as_non_clients(checked) -> None:
    nodes, configs, peers = route_reflector_cluster({"n1": "224.0.0.1", "n2": "224.0.0.1"})
    text = checked(inputs(nodes=nodes, configs=configs, peers=peers)).text
    assert "rr client" not in protocol(text, "Node_198_19_0_2")
    assert "  rr client;\n" in protocol(text, "Node_198_19_0_3")


def test_bgp_filters_are_functions_called_by_the_peers_filters(checked) -> None:
    filters = {
        "edge": resource(
            "BGPFilter",
            "edge",
            exportV4=[{"action": "Reject", "matchOperator": "In", "cidr": "198.18.5.0/24", "prefixLength": {"min": 26}}],
            importV4=[{"action": "Accept", "source": "RemotePeers", "interface": "eth*"}, {"action": "Reject"}],
            importV6=[{"action": "Reject", "matchOperator": "NotEqual", "cidr": "fd00:198:18::/48"}],
        )
    }
    peers = [peer("tor", peerIP="198.19.0.254", asNumber=65000, filters=["edge"]), peer("tor6", peerIP="fd00:198:19::fe", asNumber=65000, filters=["edge"])]
    text = checked(inputs(peers=peers, filters=filters)).text
    assert function(text, "'bgp_edge_exportFilterV4'") == "function 'bgp_edge_exportFilterV4'() {\n  if ((net ~ [ 198.18.5.0/24{26,32} ])) then { reject; }\n}\n"
    assert function(text, "'bgp_edge_importFilterV4'") == (
        "function 'bgp_edge_importFilterV4'() {\n"
        '  if (((defined(source))&&(source ~ [ RTS_BGP ]))&&((defined(ifname))&&(ifname ~ "eth*"))) then { accept; }\n'
        "  reject;\n"
        "}\n"
    )
    v4 = protocol(text, "Global_198_19_0_254")
    assert "    import filter { 'bgp_edge_importFilterV4'(); accept; };\n" in v4
    assert "    export filter { 'bgp_edge_exportFilterV4'(); calico_export_to_bgp_peers_v4(false); reject; };\n" in v4
    v6 = protocol(text, "Global_fd00_198_19__fe")
    assert "    import filter { 'bgp_edge_importFilterV6'(); accept; };\n" in v6
    assert "    export filter { calico_export_to_bgp_peers_v6(false); reject; };\n" in v6  # no exportV6 rules


def test_long_bgp_filter_names_are_cut_to_a_bird_symbol(checked) -> None:
    name = "a" * 80
    filters = {name: resource("BGPFilter", name, exportV4=[{"action": "Reject"}])}
    text = checked(inputs(peers=[peer("tor", peerIP="198.19.0.254", asNumber=65000, filters=[name])], filters=filters)).text
    symbol = re.search(r"^function '([^']+)'", text, re.M).group(1)
    assert len(symbol) == 64 and symbol.endswith("_exportFilterV4") and symbol.startswith("bgp_aaaa")


def test_a_missing_bgp_filter_is_reported(checked) -> None:
    rendered = checked(inputs(peers=[peer("tor", peerIP="198.19.0.254", asNumber=65000, filters=["gone"])]))
    assert "BGPPeer(tor): BGPFilter 'gone' does not exist; the peer is rendered without it" in rendered.problems


def test_a_peer_whose_bgp_filter_cannot_be_rendered_is_not_rendered(checked) -> None:
    # Rendering the peer without the filter would export (or import) what the operator filtered out;
    # Calico renders such a filter, BIRD refuses the whole configuration and keeps the old one.
    empty_range = {"action": "Reject", "matchOperator": "In", "cidr": "198.18.0.0/16", "prefixLength": {"min": 30, "max": 20}}
    filters = {"bad": resource("BGPFilter", "bad", exportV4=[empty_range]), "good": resource("BGPFilter", "good", exportV4=[{"action": "Reject"}])}
    peers = [peer("tor", peerIP="198.19.0.254", asNumber=65000, filters=["good", "bad"]), peer("tor2", peerIP="198.19.0.253", asNumber=65000, filters=["good"])]
    rendered = checked(inputs(peers=peers, filters=filters))
    assert "Global_198_19_0_254" not in bgp_names(rendered.text) and "Global_198_19_0_253" in bgp_names(rendered.text)
    assert "BGPPeer(tor): BGPFilter 'bad' was left out of the BIRD configuration; this peer is not rendered" in rendered.problems
    assert any(p.startswith("BGPFilter(bad): prefixLength selects nothing") for p in rendered.problems), rendered.problems


def test_a_prefix_length_with_equal_leaves_the_filter_out(checked) -> None:
    rule = {"action": "Reject", "matchOperator": "Equal", "cidr": "198.18.0.0/16", "prefixLength": {"min": 24}}
    rendered = checked(inputs(filters={"f": resource("BGPFilter", "f", exportV4=[rule])}))
    assert "bgp_f_" not in rendered.text
    assert "BGPFilter(f): prefixLength needs matchOperator In or NotIn (BIRD compares a prefix with a set only by ~); left out of the BIRD configuration" in rendered.problems


def test_a_gateway_bgp_cannot_use_is_named_and_no_route_rendered(checked) -> None:
    rendered = checked(inputs(peers=[peer("far", peerIP="fd00:198:20::1", asNumber=65000, reachableBy="fe80::1")]))
    assert "Global_fd00_198_20__1" in bgp_names(rendered.text) and "fe80::1" not in rendered.text
    assert "BGPPeer(far): spec.reachableBy fe80::1 is link-local (BIRD needs an interface for it); no route to the peer is rendered" in rendered.problems


def test_listen_port_and_bind_mode_node_ip(checked) -> None:
    cfg = config(listenPort=1790, bindMode="NodeIP")
    rendered = checked(inputs(configs=[cfg], peers=[peer("tor", peerIP="198.19.0.254", asNumber=65000, sourceAddress="None")]))
    assert "  local port 1790 as 64512;\n" in rendered.text
    for name in bgp_names(rendered.text):
        assert "  strict bind on;\n" in protocol(rendered.text, name)
    assert "  source address 198.19.0.1;\n" in protocol(rendered.text, "Global_198_19_0_254")
    assert any(p.startswith("BGPPeer(tor): sourceAddress None cannot hold with bindMode NodeIP") for p in rendered.problems)


# --- what cannot be rendered, and hostile input ----------------------------------------------------


def test_peer_password_needs_kubernetes_so_the_peer_is_not_rendered(checked) -> None:
    rendered = checked(inputs(peers=[peer("secret", peerIP="198.19.0.254", asNumber=65000, password={"secretKeyRef": {"name": "s", "key": "k"}})]))
    assert "198.19.0.254" not in rendered.text
    assert rendered.problems == ("BGPPeer(secret): spec.password.secretKeyRef needs the Kubernetes API (etcd mode has no secrets); this peer is not rendered",)


HOSTILE_PEERS = [
    (peer("bad-ip", peerIP="198.19.0.300", asNumber=65000), "198.19.0.300", "BGPPeer(bad-ip): spec.peerIP"),
    (peer("inject", peerIP='1.2.3.4 as 1; }; protocol bgp x { neighbor 6.6.6.6', asNumber=65000), "6.6.6.6", "BGPPeer(inject): spec.peerIP"),
    (peer("big-as", peerIP="198.19.0.254", asNumber=4294967296), "198.19.0.254", "BGPPeer(big-as): spec.asNumber"),
    (peer("bad-sel", peerSelector="rack == ", nodeSelector="all()"), "Node_", "BGPPeer(bad-sel): spec.peerSelector"),
    (peer("no-as", peerIP="198.19.0.254"), "198.19.0.254", "BGPPeer(no-as): spec.peerIP needs spec.asNumber"),
    (peer("link-local", peerIP="fe80::1", asNumber=65000), "fe80::1", "BGPPeer(link-local): spec.peerIP fe80::1 is link-local"),
    (peer("zone", peerIP="fd00::1%eth0", asNumber=65000), "fd00::1", "BGPPeer(zone): spec.peerIP"),
    (peer("ttl", peerIP="198.19.0.254", asNumber=65000, ttlSecurity=256), "198.19.0.254", "BGPPeer(ttl): spec.ttlSecurity"),
    (peer("long-restart", peerIP="198.19.0.254", asNumber=65000, maxRestartTime="2h"), "graceful restart time", "BGPPeer(long-restart): spec.maxRestartTime 2h0m0s is outside"),
    (peer("neg-local-as", peerIP="198.19.0.254", asNumber=65000, numAllowedLocalASNumbers=-1), "198.19.0.254", "BGPPeer(neg-local-as): spec.numAllowedLocalASNumbers -1"),
    (peer("workloads", localWorkloadSelector="app == 'x'", asNumber=65000), "Local_", "BGPPeer(workloads): spec.localWorkloadSelector"),
    (peer("both", node="n1", nodeSelector="all()", peerIP="198.19.0.254", asNumber=65000), "198.19.0.254", "BGPPeer(both): spec.node"),
    ({"kind": "BGPPeer", "metadata": {"name": "x\ny"}, "spec": {"peerIP": "198.19.0.254", "asNumber": 65000}}, "198.19.0.254", "BGPPeer('x\\ny'): metadata.name"),
    ("not an object", "Global_", "BGPPeer(#0): not a JSON object"),
    # A long digit string: the decoder's ip:port pattern refuses it in linear time (no backtracking).
    (peer("long", peerIP="9" * 2000 + "x", asNumber=65000), "9999", "BGPPeer(long): spec.peerIP: invalid peerIP"),
]


@pytest.mark.parametrize(("doc", "absent", "problem"), HOSTILE_PEERS, ids=[str(i) for i in range(len(HOSTILE_PEERS))])
def test_hostile_peers_never_reach_the_text_and_are_named(checked, doc, absent, problem) -> None:
    rendered = checked(inputs(peers=[doc]))
    assert absent not in rendered.text
    assert any(p.startswith(problem) for p in rendered.problems), rendered.problems
    # The rest of the configuration is intact.
    assert "Mesh_198_19_0_2" in bgp_names(rendered.text)


HOSTILE_NODES = [
    (node("n2", "198.19.0.256/24"), "Node(n2): spec.bgp.ipv4Address"),
    (node("n2", "198.19.0.2/24", asNumber="65536.1"), "Node(n2): spec.bgp.asNumber"),
    (node("n2", "198.19.0.2/24", routeReflectorClusterID='1.2.3.4; }'), "Node(n2): spec.bgp.routeReflectorClusterID"),
    (node("n2", v6="fd00::2%x;}/64"), "Node(n2): spec.bgp.ipv6Address"),
    (node("n2", "224.0.0.9/24"), "Node(n2): spec.bgp.ipv4Address 224.0.0.9 is not a unicast address"),
]


@pytest.mark.parametrize(("doc", "problem"), HOSTILE_NODES, ids=[str(i) for i in range(len(HOSTILE_NODES))])
def test_hostile_nodes_are_left_out_of_the_mesh_and_named(checked, doc, problem) -> None:
    rendered = checked(inputs(nodes=three_nodes(n2=doc)))
    assert "Mesh_198_19_0_3" in bgp_names(rendered.text)
    assert not [n for n in bgp_names(rendered.text) if n.startswith(("Mesh_198_19_0_2", "Mesh_224", "Mesh_fd00__2"))]
    assert any(p.startswith(problem) for p in rendered.problems), rendered.problems


def test_link_local_node_ipv6_address_is_dropped_but_its_ipv4_kept(checked) -> None:
    rendered = checked(inputs(nodes=three_nodes(n2=node("n2", "198.19.0.2/24", "fe80::2/64"))))
    assert "Mesh_198_19_0_2" in bgp_names(rendered.text) and "fe80" not in rendered.text
    assert "Node(n2): spec.bgp.ipv6Address fe80::2 is link-local (BIRD needs an interface for it); not used for BGP" in rendered.problems


HOSTILE_OTHERS = [
    ({"configs": [config(ignoredInterfaces=['eth0"; protocol static x {'])]}, "protocol static x", "BGPConfiguration(default): spec.ignoredInterfaces"),
    ({"configs": [config(serviceClusterIPs=[{"cidr": "10.96.0.0/12; route 6.6.6.0/24"}])]}, "6.6.6.0", "BGPConfiguration(default): spec.serviceClusterIPs"),
    ({"configs": [config(asNumber=0)]}, "as 0", "BGPConfiguration(default): spec.asNumber"),
    ({"configs": [config("node.n1", asNumber=65001)]}, "65001", "BGPConfiguration(node.n1): spec.asNumber"),
    ({"blocks": ["fd00:198:18::%x;}/122"]}, "%x", "block affinity 'fd00:198:18::%x;}/122': not a network"),
    ({"blocks": ["198.18.0.1/26"]}, "198.18.0.1/26", "block affinity '198.18.0.1/26': not a network"),
    ({"pools": [pool("evil", "198.18.0.0/16 ) then { accept; } if ( net ~ 0.0.0.0/0")]}, "0.0.0.0/0", "IPPool(evil): spec.cidr"),
    ({"router_id": "1.2.3.4; protocol"}, "protocol;", "CALICO_ROUTER_ID '1.2.3.4; protocol'"),
    ({"filters": {"f": resource("BGPFilter", "f", exportV4=[{"action": "Reject", "interface": 'eth0"; }'}])}}, 'eth0"', "BGPFilter(f): spec.exportV4[0].interface"),
    ({"filters": {"x'y": resource("BGPFilter", "good", exportV4=[{"action": "Reject"}])}}, "x'y", "BGPFilter(\"x'y\"): stored under another name"),
    (
        {"filters": {"f": resource("BGPFilter", "f", exportV4=[{"action": "Reject", "matchOperator": "In", "cidr": "198.18.0.0/16", "prefixLength": {"min": 30, "max": 20}}])}},
        "'bgp_f_",
        "BGPFilter(f): prefixLength selects nothing",
    ),
    (
        {"configs": [config(prefixAdvertisements=[{"cidr": "198.18.0.0/16", "communities": ["65001:100)); bgp_path.prepend((6"]}])]},
        "prepend",
        "BGPConfiguration(default): spec.prefixAdvertisements[0].communities[0]",
    ),
]


@pytest.mark.parametrize(("given", "absent", "problem"), HOSTILE_OTHERS, ids=[str(i) for i in range(len(HOSTILE_OTHERS))])
def test_other_hostile_input_never_reaches_the_text_and_is_named(checked, given, absent, problem) -> None:
    rendered = checked(inputs(**given))
    assert absent not in rendered.text
    assert any(p.startswith(problem) for p in rendered.problems), rendered.problems


# Values the decoder itself fails on in ways other than Invalid: Python's 4300-digit limit on int(),
# and the recursion limit on a deeply nested selector. One such resource must be left out and named,
# never stop the rendering (a raise would stop the routing controller for every resource).
DIGITS = "9" * 5000
DEEP_SELECTOR = "!(" * 400 + "all()" + ")" * 400
DECODER_FAILURES = [
    ({"nodes": three_nodes(n2=node("n2", "198.19.0.2/24", asNumber=DIGITS))}, "Node(n2): "),
    ({"configs": [config(nodeMeshMaxRestartTime=DIGITS + "s")]}, "BGPConfiguration(default): "),
    ({"configs": [config(communities=[{"name": "c", "value": DIGITS + ":1"}], prefixAdvertisements=[{"cidr": "198.18.0.0/16", "communities": ["c"]}])]}, "BGPConfiguration(default): "),
    ({"peers": [peer("deep", nodeSelector=DEEP_SELECTOR, peerIP="198.19.0.254", asNumber=65000)]}, "BGPPeer(deep): "),
    ({"pools": [*POOLS, pool("deep", "198.20.0.0/16", nodeSelector=DEEP_SELECTOR)]}, "IPPool(deep): "),
]


@pytest.mark.parametrize(("given", "problem"), DECODER_FAILURES, ids=[str(i) for i in range(len(DECODER_FAILURES))])
def test_a_resource_the_decoder_fails_on_is_left_out_and_named(checked, given, problem) -> None:
    rendered = checked(inputs(**given))
    assert "Mesh_198_19_0_3" in bgp_names(rendered.text)
    assert "198.19.0.254" not in rendered.text and "198.20.0.0" not in rendered.text
    assert any(p.startswith(problem) and "could not be read" in p for p in rendered.problems), rendered.problems


def test_problems_are_single_printable_lines_of_bounded_length(checked) -> None:
    # Problems go to the daemon's log: a name or field holding a newline or an escape sequence must
    # not forge a log line, and a huge value must not flood the log.
    nodes = three_nodes(**{"evil\nERROR forged": node("n4", "198.19.0.2/24")})
    peers = [
        peer("tor", peerIP="198.19.0.254", asNumber=65000, node="x\rERROR forged"),
        peer("x" * 100000, peerIP="198.19.0.253", asNumber=65000),
    ]
    rendered = checked(inputs(nodes=nodes, peers=peers, configs=[config(ignoredInterfaces=["eth0\x1b[31m"])]))
    assert len(rendered.problems) == 4, rendered.problems
    for problem in rendered.problems:
        assert problem.isprintable() and len(problem) <= 1100, problem
    assert any("evil\\nERROR forged" in p for p in rendered.problems), rendered.problems
    assert any("x\\rERROR forged" in p for p in rendered.problems), rendered.problems
    assert any("\\x1b[31m" in p for p in rendered.problems), rendered.problems


def test_a_bgp_configuration_neither_default_nor_per_node_is_named_and_ignored(checked) -> None:
    rendered = checked(inputs(configs=[config("global", listenPort=1790)]))
    assert "1790" not in rendered.text
    assert rendered.problems == ("BGPConfiguration(global): only 'default' and 'node.<node name>' are read; this one is ignored",)


def test_an_invalid_default_bgp_configuration_counts_as_absent(checked) -> None:
    rendered = checked(inputs(configs=[config(nodeToNodeMeshEnabled=False, logSeverityScreen="Loud")]))
    assert "Mesh_198_19_0_2" in bgp_names(rendered.text)  # Calico drops a value it cannot parse
    assert any(p.startswith("BGPConfiguration(default): spec.logSeverityScreen") for p in rendered.problems)


@pytest.mark.parametrize("router_id", ["hash", None])
def test_this_node_missing_renders_no_bgp_but_a_valid_configuration(checked, router_id) -> None:
    rendered = checked(inputs(me="n9", router_id=router_id, blocks=["198.18.0.0/26"]))
    assert bgp_names(rendered.text) == [] and "route 198.18.0.0/26 blackhole;" in rendered.text
    assert rendered.problems == ("Node(n9): this node is not in the datastore; no BGP session is rendered",)


def test_equal_inputs_in_any_order_give_byte_equal_text(checked) -> None:
    nodes = {f"n{i}": node(f"n{i}", f"198.19.0.{i}/24", f"fd00:198:19::{i}/64", labels={"rr": "true"} if i == 4 else None) for i in range(1, 9)}
    peers = [peer(f"p{i}", peerIP=f"198.19.1.{i}", asNumber=65000 + i) for i in range(6)] + [peer("sel", nodeSelector="all()", peerSelector="rr == 'true'")]
    pools = [pool(f"pool{i}", f"198.18.{i * 16}.0/20") for i in range(5)]
    blocks = [f"198.18.{i}.0/26" for i in range(8)]
    first = checked(inputs(nodes=nodes, peers=peers, pools=pools, blocks=blocks))
    shuffle = random.Random(7).shuffle
    for _ in range(3):
        items = list(nodes.items())
        shuffle(items)
        shuffle(peers)
        shuffle(pools)
        shuffle(blocks)
        again = render(inputs(nodes=dict(items), peers=list(peers), pools=list(pools), blocks=list(blocks)))
        assert again.text == first.text


# --- the last line of defence: values are re-checked where they become text ------------------------


def _undecoded(doc: dict) -> tuple[None, dict]:
    """A decoder that lets everything through (with the defaults render reads)."""
    out = copy.deepcopy(doc)
    if out["kind"] == "IPPool":
        out["spec"] = {"ipipMode": "Never", "vxlanMode": "Never", **out["spec"]}
    return None, out


# What the decoder refuses today, as it would reach the renderer if a decoder let it through.
UNDECODED = [
    ({"nodes": three_nodes(n2=node("n2", "198.19.0.2%x;}/24"))}, "x;}", "Node(n2): '198.19.0.2%x;}/24' is not a plain address"),
    ({"nodes": three_nodes(n2=node("n2", "198.19.0.2/24", routeReflectorClusterID="1.2.3.4%x"))}, "%x", "Node(n2): '1.2.3.4%x' is not a plain address"),
    ({"peers": [peer("p", peerIP="[fd00::9%x]:179", asNumber=65000)]}, "%x", "BGPPeer(p): spec.peerIP '[fd00::9%x]:179' is not an address with an optional port"),
    ({"peers": [peer("p", peerIP="198.19.0.9 ", asNumber=65000)]}, "198.19.0.9", "BGPPeer(p): spec.peerIP '198.19.0.9 ' is not an address with an optional port"),
    ({"peers": [peer("p", peerIP="fd00::9", asNumber=65000, reachableBy="fd00::1%x")]}, "fd00::9", "BGPPeer(p): 'fd00::1%x' is not a plain address"),
    ({"pools": [pool("p", "198.18.0.1/16")]}, "198.18.0.", "IPPool(p): 198.18.0.1/16 has host bits set"),
    ({"configs": [config(serviceClusterIPs=[{"cidr": "10.96.0.0/12%x"}])]}, "10.96.", "BGPConfiguration(default): '10.96.0.0/12%x' is not a plain address"),
    ({"configs": [config(ignoredInterfaces=['eth0"'])]}, 'eth0"', "BGPConfiguration(default): interface 'eth0\"'"),
    ({"filters": {"f": resource("BGPFilter", "f", exportV4=[{"action": "Reject", "interface": 'eth0"'}])}}, 'eth0"', "BGPFilter(f): interface 'eth0\"'"),
]


@pytest.mark.parametrize(("given", "absent", "problem"), UNDECODED, ids=[str(i) for i in range(len(UNDECODED))])
def test_values_the_decoder_let_through_are_checked_again_where_they_become_text(checked, mocker, given, absent, problem) -> None:
    mocker.patch.object(bgp_peers.kinds, "decode", side_effect=_undecoded)
    rendered = checked(inputs(**given))
    assert absent not in rendered.text
    assert any(p.startswith(problem) for p in rendered.problems), rendered.problems


@pytest.mark.parametrize("text", ["fd00::1%eth0", "fd00::1%x;}", "198.19.0.1 ", 3232235777, None, "198.19.0.01"])
def test_only_plain_addresses_are_read(text) -> None:
    with pytest.raises(ValueError):
        bgp_peers.address(text)


@pytest.mark.parametrize("text", ["fd00::%x;}/64", "198.18.0.1/24", "198.18.0.0/24 ", 7, "198.18.0.0/33"])
def test_only_plain_networks_are_read(text) -> None:
    with pytest.raises(ValueError):
        bgp_peers.network(text)


def test_ipv4_mapped_addresses_read_as_ipv4() -> None:
    assert str(bgp_peers.address("::ffff:198.19.0.7")) == "198.19.0.7"


@pytest.mark.parametrize("text", ['eth0"', "eth0;", "", "a" * 16, "eth 0", "é"])
def test_interface_globs_are_checked_where_they_are_quoted(text) -> None:
    with pytest.raises(ValueError):
        interface_glob(text)
    assert interface_glob("veth*.cali-1_2") == "veth*.cali-1_2"


@pytest.mark.parametrize(("text", "seconds"), [("1m30s", 90), ("1.5s", 2), ("1.4s", 1), ("500ms", 1), ("499ms", 0), ("1h0m0s", 3600), ("-2s", -2)])
def test_durations_round_to_seconds_as_calico_does(text, seconds) -> None:
    assert bgp_peers.duration_seconds(text) == seconds


# --- fuzzing: any stored value, anywhere ----------------------------------------------------------
#
# Each example starts from a valid cluster and changes one to four places in its documents: a value
# replaced by any JSON value (null, lists, objects, huge or negative numbers, floats, any text), a
# string with a hostile fragment inserted, 5000 digits put before it or nested 400 deep, a key
# removed or renamed. render() must not raise, its text must pass `bird -p` (the `checked` fixture)
# and hold no '@': every hostile fragment carries one, and no value allowed into BIRD's text (an
# address, a number, a checked name or interface glob) can.

MARK = "@"
FRAGMENTS = [
    MARK,
    f'{MARK}"',
    f"{MARK}'",
    f"{MARK};",
    f"{MARK}}}",
    f"{MARK}{{",
    f"{MARK}\n",
    f"%{MARK}",
    f"{MARK}\x00",
    f"{MARK}\u2028",
    f'{MARK}"; }}; protocol bgp x {{ neighbor 6.6.6.6 as 1; }}',
    f" as 1; }}; protocol static {MARK} {{ route 0.0.0.0/0 blackhole; ",
    f") then {{ accept; }} if ( net ~ 0.0.0.0/0 {MARK}",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([-1, 0, 2**31, 2**32, 2**64, 10**30, "9" * 5000]),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(FRAGMENTS),
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def clusters() -> list[dict[str, Any]]:
    """Valid starting points (RoutingInputs' fields) that between them use every field render reads."""
    rr = three_nodes(n2=node("n2", "198.19.0.2/24", "fd00:198:19::2/64", labels={"rr": "true"}, routeReflectorClusterID="224.0.0.1", asNumber=65002))
    full = {
        "nodes": rr,
        "configs": {
            "default": config(
                asNumber=65000,
                listenPort=1790,
                logSeverityScreen="Debug",
                bindMode="NodeIP",
                ignoredInterfaces=["eth9", "veth*"],
                nodeMeshMaxRestartTime="2m",
                serviceClusterIPs=[{"cidr": "10.96.0.0/12"}],
                serviceExternalIPs=[{"cidr": "203.0.113.0/24"}],
                serviceLoadBalancerIPs=[{"cidr": "198.51.100.0/24"}, {"cidr": "198.51.101.1/32"}],
                communities=[{"name": "big", "value": "65001:300:7"}],
                prefixAdvertisements=[{"cidr": "198.18.0.0/16", "communities": ["65001:100", "big"]}],
            ),
            "node.n1": config("node.n1", listenPort=1791, logSeverityScreen="Info", prefixAdvertisements=[{"cidr": "fd00:198:18::/48", "communities": ["65001:7"]}]),
        },
        "peers": [
            peer("tor", peerIP="198.19.0.254:1790", asNumber=65100, filters=["edge"], keepOriginalNextHop=True, ttlSecurity=3, maxRestartTime="90s", numAllowedLocalASNumbers=2, reachableBy="198.19.0.253"),
            peer("rr", nodeSelector="all()", peerSelector="rr == 'true'"),
            peer("one", node="n1", peerIP="198.19.0.3", asNumber=64512, sourceAddress="None"),
            peer("v6", nodeSelector="has(rr) || !has(rr)", peerIP="[fd00:198:19::fe]:179", asNumber=65000, filters=["edge"]),
        ],
        "filters": {
            "edge": resource(
                "BGPFilter",
                "edge",
                exportV4=[{"action": "Reject", "matchOperator": "In", "cidr": "198.18.5.0/24", "prefixLength": {"min": 26, "max": 30}}],
                importV4=[{"action": "Accept", "source": "RemotePeers", "interface": "eth*"}, {"action": "Reject"}],
                importV6=[{"action": "Reject", "matchOperator": "NotEqual", "cidr": "fd00:198:18::/48"}],
            )
        },
        "pools": [*POOLS, pool("ipip", "198.20.0.0/16", ipipMode="Always", disableBGPExport=True), pool("vx6", "fd00:198:20::/48", vxlanMode="Always")],
        "blocks": ["198.18.0.0/26", "198.18.1.1/32", "fd00:198:18::/122"],
    }
    six = {"nodes": {f"n{i}": node(f"n{i}", v6=f"fd00:198:19::{i}/64") for i in (1, 2, 3)}, "router_id": "hash", "blocks": ["fd00:198:18::/122"]}
    return [full, six, {"me": "n2", "nodes": rr, "peers": full["peers"], "configs": {"default": config(nodeToNodeMeshEnabled=False)}}]


def _places(tree: Any, path: tuple = ()) -> list[tuple]:
    """Every place in the documents: (container, key) paths, below the RoutingInputs' own fields."""
    out = [path] if len(path) >= 2 else []
    children = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in children:
        out += _places(value, (*path, key))
    return out


def _mutate(fields: dict, data: st.DataObject) -> None:
    # The kind of document first, so that the kinds with few fields are changed as often as nodes.
    kind = data.draw(st.sampled_from([k for k in sorted(fields) if _places(fields[k], (k,))]), label="kind")
    place = data.draw(st.sampled_from(_places(fields[kind], (kind,))), label="place")
    parent = fields
    for key in place[:-1]:
        parent = parent[key]
    key, value = place[-1], parent[place[-1]]
    how = data.draw(st.sampled_from(["replace", "corrupt", "swell", "nest", "drop", "rename"]), label="how")
    if how == "corrupt" and isinstance(value, str):
        at = data.draw(st.integers(0, len(value)), label="at")
        parent[key] = value[:at] + data.draw(st.sampled_from(FRAGMENTS), label="fragment") + value[at:]
    elif how == "swell" and isinstance(value, str):
        parent[key] = "9" * 5000 + value  # past Python's 4300-digit int() limit where the value is a number
    elif how == "nest" and isinstance(value, str):
        parent[key] = "!(" * 400 + value + ")" * 400  # past the recursion limit where the value is a selector
    elif how == "drop" and isinstance(parent, dict):
        del parent[key]
    elif how == "rename" and isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8) | st.sampled_from(FRAGMENTS), label="new key")] = parent.pop(key)
    else:
        parent[key] = data.draw(JSON, label="value")


FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _check_hostile(rendered: Rendered) -> None:
    assert MARK not in rendered.text, rendered.text
    for problem in rendered.problems:
        assert problem.isprintable(), problem


@FUZZ
@given(start=st.sampled_from(range(len(clusters()))), changes=st.integers(1, 4), data=st.data())
def test_fuzzed_documents_never_raise_and_never_reach_the_text(checked, start, changes, data) -> None:
    fields = copy.deepcopy(clusters()[start])
    for _ in range(changes):
        _mutate(fields, data)
    _check_hostile(checked(inputs(**fields)))


@FUZZ
@given(me=st.text(max_size=12) | st.sampled_from(["n1", "n2", *FRAGMENTS]), router_id=st.none() | st.text(max_size=16) | st.sampled_from(["hash", "10.0.0.1", *FRAGMENTS]))
def test_fuzzed_node_name_and_router_id_never_raise_and_never_reach_the_text(checked, me, router_id) -> None:
    _check_hostile(checked(inputs(**{**clusters()[0], "me": me, "router_id": router_id})))
