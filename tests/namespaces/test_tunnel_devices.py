"""The netlink layer of the VXLAN work against the real kernel: vxlan devices (dataplane.tunnels),
neighbour and FDB entries, calico-node's routes (blackhole, onlink, protocol 80) and tunl0's
failure path. Every expectation is read back with `ip`/`bridge -j`, independently of rtnl's
decoder, and two namespaces ping each other's tunnel addresses over VXLAN to prove the encoding
end to end."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace

import pytest

from calico_cni.dataplane import rtnl_tunnels, tunnels
from calico_cni.dataplane.rtnl import CALICO_METRIC, NLM_F_EXCL, RTM_NEWLINK, RTN_BLACKHOLE, RTPROT_CALICO, Rtnl
from calico_cni.dataplane.rtnl_tunnels import AF_BRIDGE
from calico_cni.dataplane.tunnels import TunnelError, VxlanDevice
from tests import netns

ip4 = ipaddress.ip_address
MAC_A, MAC_B = "66:0a:0a:0a:0a:01", "66:0b:0b:0b:0b:02"


def run_json(ns: str, *args: str, tool: str = "ip") -> list | dict:
    """`ip -j` / `bridge -j` in a namespace, parsed (empty output: an empty list)."""
    out = subprocess.run([tool, "-n", ns, "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


@contextlib.contextmanager
def rtnl_in(ns: str, kind: type[Rtnl] = Rtnl) -> Iterator[Rtnl]:
    """An rtnl socket created inside `ns` (a socket stays in the namespace it was made in)."""
    previous = netns.enter(ns)
    try:
        sock = kind.open()
    finally:
        netns.leave(previous)
    with sock:
        yield sock


@pytest.fixture
def nodes():
    """Two node namespaces joined by a veth pair (up-a 198.19.9.1/24, fd00:198:19:9::1/64 and
    up-b .2 / ::2), each with an rtnl socket: {name: (namespace, rtnl)}."""
    names = [netns.add(f"{netns.PREFIX}tun{side}-{os.getpid()}") for side in "ab"]
    try:
        netns.ip("link", "add", "up-a", "netns", names[0], "type", "veth", "peer", "name", "up-b", "netns", names[1])
        for ns, side, host in ((names[0], "a", 1), (names[1], "b", 2)):
            netns.ip("-n", ns, "addr", "add", f"198.19.9.{host}/24", "dev", f"up-{side}")
            netns.ip("-n", ns, "addr", "add", f"fd00:198:19:9::{host}/64", "dev", f"up-{side}", "nodad")
            netns.ip("-n", ns, "link", "set", f"up-{side}", "up")
        with rtnl_in(names[0]) as ra, rtnl_in(names[1]) as rb:
            yield {"a": (names[0], ra), "b": (names[1], rb)}
    finally:
        for ns in names:
            netns.delete(ns)


def vxlan_want(rtnl: Rtnl, side: str, **changes) -> VxlanDevice:
    host = 1 if side == "a" else 2
    want = VxlanDevice(
        name="vxlan.calico",
        vni=4096,
        port=4789,
        local=ip4(f"198.19.9.{host}"),
        parent_index=rtnl.link(f"up-{side}").index,
        mac=MAC_A if side == "a" else MAC_B,
        mtu=1450,
        address=ipaddress.ip_interface(f"198.18.{0 if side == 'a' else 64}.1/32"),
    )
    return replace(want, **changes)


def link_json(ns: str, name: str) -> dict:
    return run_json(ns, "-d", "link", "show", "dev", name)[0]


def global_addresses(ns: str, name: str) -> set[str]:
    info = run_json(ns, "addr", "show", "dev", name)[0]
    return {f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a.get("scope") == "global"}


def test_vxlan_device_as_calico_makes_it(nodes):
    ns, rtnl = nodes["a"]
    want = vxlan_want(rtnl, "a")
    changes = tunnels.ensure_vxlan(rtnl, want)
    assert any(c.startswith("created vxlan.calico") for c in changes), changes
    info = link_json(ns, "vxlan.calico")
    data = info["linkinfo"]["info_data"]
    assert info["linkinfo"]["info_kind"] == "vxlan"
    assert (data["id"], data["port"], data["learning"], data["local"], data["link"]) == (4096, 4789, False, "198.19.9.1", "up-a")
    assert (info["address"], info["mtu"], "UP" in info["flags"]) == (MAC_A, 1450, True)
    assert global_addresses(ns, "vxlan.calico") == {"198.18.0.1/32"}
    # rtnl's decoder reads back what `ip` reports.
    link, vx = rtnl_tunnels.vxlan_link(rtnl, "vxlan.calico")
    assert link.kind == "vxlan" and not hasattr(link, "vxlan")  # the plugin path's Link stays lean
    assert (vx.vni, vx.port, vx.local, vx.parent_index, vx.learning) == (4096, 4789, ip4("198.19.9.1"), want.parent_index, False)
    assert tunnels.ensure_vxlan(rtnl, want) == []


def test_vni_or_mac_change_recreates_mtu_change_does_not(nodes):
    ns, rtnl = nodes["a"]
    want = vxlan_want(rtnl, "a")
    tunnels.ensure_vxlan(rtnl, want)
    first = link_json(ns, "vxlan.calico")["ifindex"]

    changes = tunnels.ensure_vxlan(rtnl, replace(want, mtu=1400))
    assert changes == ["set vxlan.calico MTU 1450 -> 1400"]
    assert link_json(ns, "vxlan.calico")["ifindex"] == first

    changes = tunnels.ensure_vxlan(rtnl, replace(want, mtu=1400, vni=4097))
    assert any("vni 4096 -> 4097" in c for c in changes), changes
    info = link_json(ns, "vxlan.calico")
    second = info["ifindex"]
    assert second != first and info["linkinfo"]["info_data"]["id"] == 4097 and info["mtu"] == 1400
    assert global_addresses(ns, "vxlan.calico") == {"198.18.0.1/32"}

    changes = tunnels.ensure_vxlan(rtnl, replace(want, mtu=1400, vni=4097, mac="66:0a:0a:0a:0a:99"))
    assert any("mac" in c for c in changes), changes
    info = link_json(ns, "vxlan.calico")
    assert info["ifindex"] != second and info["address"] == "66:0a:0a:0a:0a:99"


def test_learning_turned_on_by_hand_recreates(nodes):
    ns, rtnl = nodes["a"]
    want = vxlan_want(rtnl, "a")
    tunnels.ensure_vxlan(rtnl, want)
    netns.ip("-n", ns, "link", "set", "vxlan.calico", "type", "vxlan", "learning")
    assert link_json(ns, "vxlan.calico")["linkinfo"]["info_data"]["learning"] is True
    assert any("learning True -> False" in c for c in tunnels.ensure_vxlan(rtnl, want))
    assert link_json(ns, "vxlan.calico")["linkinfo"]["info_data"]["learning"] is False


def test_addresses_made_exact(nodes):
    ns, rtnl = nodes["a"]
    want = vxlan_want(rtnl, "a")
    tunnels.ensure_vxlan(rtnl, want)
    netns.ip("-n", ns, "addr", "add", "198.18.7.7/32", "dev", "vxlan.calico")
    netns.ip("-n", ns, "addr", "add", "fd00:198:18:7::7/128", "dev", "vxlan.calico", "nodad")
    changes = tunnels.ensure_vxlan(rtnl, want)
    assert sorted(changes) == ["removed address 198.18.7.7/32 from vxlan.calico", "removed address fd00:198:18:7::7/128 from vxlan.calico"]
    assert global_addresses(ns, "vxlan.calico") == {"198.18.0.1/32"}
    # A tunnel address that moved: the old one goes, the new one comes; none at all: none left.
    tunnels.ensure_vxlan(rtnl, replace(want, address=ipaddress.ip_interface("198.18.0.2/32")))
    assert global_addresses(ns, "vxlan.calico") == {"198.18.0.2/32"}
    tunnels.ensure_vxlan(rtnl, replace(want, address=None))
    assert global_addresses(ns, "vxlan.calico") == set()


def test_ipv6_device_keeps_its_link_local_address(nodes):
    ns, rtnl = nodes["a"]
    want = replace(vxlan_want(rtnl, "a"), name="vxlan-v6.calico", local=ip4("fd00:198:19:9::1"), mtu=1430, address=ipaddress.ip_interface("fd00:198:18::1/128"))
    tunnels.ensure_vxlan(rtnl, want)
    info = link_json(ns, "vxlan-v6.calico")
    assert info["linkinfo"]["info_data"].get("local6", info["linkinfo"]["info_data"].get("local")) == "fd00:198:19:9::1"
    assert rtnl_tunnels.vxlan_link(rtnl, "vxlan-v6.calico")[1].local == ip4("fd00:198:19:9::1")
    assert global_addresses(ns, "vxlan-v6.calico") == {"fd00:198:18::1/128"}
    addresses = run_json(ns, "addr", "show", "dev", "vxlan-v6.calico")[0]["addr_info"]
    assert [a for a in addresses if a["local"] == "fd00:198:18::1"][0].get("tentative") is None  # nodad
    assert any(a["local"].startswith("fe80:") for a in addresses)
    assert tunnels.ensure_vxlan(rtnl, want) == []
    assert any(a["local"].startswith("fe80:") for a in run_json(ns, "addr", "show", "dev", "vxlan-v6.calico")[0]["addr_info"])


def test_port_taken_by_another_vxlan_device_is_reported(nodes):
    ns, rtnl = nodes["a"]
    netns.ip("-n", ns, "link", "add", "flannel.1", "type", "vxlan", "id", "4096", "dstport", "4789", "dev", "up-a")
    with pytest.raises(TunnelError, match=r"flannel\.1 \(VNI 4096\).*vxlanPort/vxlanVNI.*remove that device"):
        tunnels.ensure_vxlan(rtnl, vxlan_want(rtnl, "a"))
    assert "vxlan.calico" not in {link["ifname"] for link in run_json(ns, "link", "show")}
    assert link_json(ns, "flannel.1")["linkinfo"]["info_data"]["id"] == 4096
    # Another VNI on the same port is no conflict (the kernel shares the socket).
    assert tunnels.ensure_vxlan(rtnl, vxlan_want(rtnl, "a", vni=4097))


class RacedRtnl(Rtnl):
    """An rtnl socket that runs `race` (another program's action) just before its first request to
    create a link, so that the kernel refuses the creation for real."""

    race: list = []

    def request(self, mtype: int, body: bytes, flags: int = 0, what: str = "netlink request") -> list[tuple[int, bytes]]:
        if mtype == RTM_NEWLINK and flags & NLM_F_EXCL and self.race:
            self.race.pop()()
        return super().request(mtype, body, flags, what)


def test_name_taken_while_creating_is_not_reported_as_a_port_conflict(nodes):
    ns, rtnl = nodes["a"]
    want = vxlan_want(rtnl, "a")
    # Another program creates a VXLAN device of that name between the check and the creation, on
    # another port: EEXIST can only mean the name.
    racer = ("link", "add", "vxlan.calico", "type", "vxlan", "id", "7", "dstport", "4790", "dev", "up-a")
    with rtnl_in(ns, RacedRtnl) as raced:
        raced.race = [lambda: netns.ip("-n", ns, *racer)]
        with pytest.raises(TunnelError, match=r"cannot create vxlan\.calico: a vxlan link of that name \(index \d+\) appeared") as caught:
            tunnels.ensure_vxlan(raced, want)
    assert "port" not in str(caught.value)
    assert link_json(ns, "vxlan.calico")["linkinfo"]["info_data"]["id"] == 7  # the other program's, left alone
    # The next pass takes the VXLAN device over (its settings differ: recreated).
    assert any("vni 7 -> 4096" in c for c in tunnels.ensure_vxlan(rtnl, want))
    assert link_json(ns, "vxlan.calico")["linkinfo"]["info_data"]["id"] == 4096


def test_foreign_link_with_the_name_is_refused_and_left_alone(nodes):
    ns, rtnl = nodes["a"]
    netns.ip("-n", ns, "link", "add", "vxlan.calico", "type", "veth", "peer", "name", "other0")
    with pytest.raises(TunnelError, match=r"veth link named vxlan\.calico.*not calico-node's"):
        tunnels.ensure_vxlan(rtnl, vxlan_want(rtnl, "a"))
    assert tunnels.remove_device(rtnl, "vxlan.calico") is False
    assert link_json(ns, "vxlan.calico")["linkinfo"]["info_kind"] == "veth"


def test_remove_device(nodes):
    ns, rtnl = nodes["a"]
    tunnels.ensure_vxlan(rtnl, vxlan_want(rtnl, "a"))
    assert tunnels.remove_device(rtnl, "vxlan.calico") is True
    assert "vxlan.calico" not in {link["ifname"] for link in run_json(ns, "link", "show")}
    assert tunnels.remove_device(rtnl, "vxlan.calico") is False


def test_neighbours_and_fdb_entries(nodes):
    ns, rtnl = nodes["a"]
    tunnels.ensure_vxlan(rtnl, vxlan_want(rtnl, "a"))
    index = rtnl.link("vxlan.calico").index
    rtnl_tunnels.set_neighbour(rtnl, index, ip4("198.18.64.1"), MAC_B)
    rtnl_tunnels.set_fdb(rtnl, index, MAC_B, ip4("198.19.9.2"))
    neigh = run_json(ns, "neigh", "show", "dev", "vxlan.calico")
    assert [(n["dst"], n["lladdr"], n["state"]) for n in neigh] == [("198.18.64.1", MAC_B, ["PERMANENT"])]
    fdb = run_json(ns, "fdb", "show", "dev", "vxlan.calico", tool="bridge")
    assert [(f["mac"], f["dst"], f["state"], "self" in f["flags"]) for f in fdb] == [(MAC_B, "198.19.9.2", "permanent", True)]
    assert tunnels.permanent_neighbours(rtnl, index, 4) == {ip4("198.18.64.1"): MAC_B}
    assert tunnels.fdb_entries(rtnl, index) == {(MAC_B, ip4("198.19.9.2"))}
    assert [n.family for n in rtnl_tunnels.neighbours(rtnl, index, AF_BRIDGE)] == [AF_BRIDGE]

    # Replace: a node that moved keeps one entry, with its new address and MAC.
    rtnl_tunnels.set_fdb(rtnl, index, MAC_B, ip4("198.19.9.3"))
    rtnl_tunnels.set_neighbour(rtnl, index, ip4("198.18.64.1"), "66:0b:0b:0b:0b:03")
    assert [f["dst"] for f in run_json(ns, "fdb", "show", "dev", "vxlan.calico", tool="bridge")] == ["198.19.9.3"]
    assert [n["lladdr"] for n in run_json(ns, "neigh", "show", "dev", "vxlan.calico")] == ["66:0b:0b:0b:0b:03"]

    assert rtnl_tunnels.delete_fdb(rtnl, index, MAC_B, ip4("198.19.9.3")) is True
    assert rtnl_tunnels.delete_fdb(rtnl, index, MAC_B, ip4("198.19.9.3")) is False
    assert rtnl_tunnels.delete_neighbour(rtnl, index, ip4("198.18.64.1")) is True
    assert rtnl_tunnels.delete_neighbour(rtnl, index, ip4("198.18.64.1")) is False
    assert run_json(ns, "neigh", "show", "dev", "vxlan.calico") == []
    assert run_json(ns, "fdb", "show", "dev", "vxlan.calico", tool="bridge") == []


def test_sync_vteps_makes_entries_exact(nodes):
    ns, rtnl = nodes["a"]
    tunnels.ensure_vxlan(rtnl, vxlan_want(rtnl, "a"))
    link = rtnl.link("vxlan.calico")
    stale_mac = "66:0c:0c:0c:0c:0c"
    rtnl_tunnels.set_neighbour(rtnl, link.index, ip4("198.18.128.1"), stale_mac)
    rtnl_tunnels.set_fdb(rtnl, link.index, stale_mac, ip4("198.19.9.9"))
    want = {ip4("198.18.64.1"): (MAC_B, ip4("198.19.9.2"))}
    changes = tunnels.sync_vteps(rtnl, link, 4, want)
    assert len(changes) == 4, changes
    assert {(n["dst"], n["lladdr"]) for n in run_json(ns, "neigh", "show", "dev", "vxlan.calico")} == {("198.18.64.1", MAC_B)}
    assert {(f["mac"], f["dst"]) for f in run_json(ns, "fdb", "show", "dev", "vxlan.calico", tool="bridge")} == {(MAC_B, "198.19.9.2")}
    assert tunnels.sync_vteps(rtnl, link, 4, want) == []


def test_calico_routes_blackhole_onlink_protocol_filter_and_delete(nodes):
    ns, rtnl = nodes["a"]
    tunnels.ensure_vxlan(rtnl, vxlan_want(rtnl, "a"))
    index = rtnl.link("vxlan.calico").index
    own, remote = ipaddress.ip_network("198.18.0.0/26"), ipaddress.ip_network("198.18.64.0/26")
    rtnl.add_route(own, 0, priority=CALICO_METRIC, protocol=RTPROT_CALICO, route_type=RTN_BLACKHOLE)
    rtnl.add_route(remote, index, ip4("198.18.64.1"), priority=CALICO_METRIC, protocol=RTPROT_CALICO, onlink=True)
    shown = {r["dst"]: r for r in run_json(ns, "-4", "route", "show", "proto", "80")}
    assert shown["198.18.0.0/26"]["type"] == "blackhole" and shown["198.18.0.0/26"]["metric"] == CALICO_METRIC
    assert shown["198.18.64.0/26"]["gateway"] == "198.18.64.1" and shown["198.18.64.0/26"]["dev"] == "vxlan.calico"
    assert "onlink" in shown["198.18.64.0/26"]["flags"]

    ours = {r.dst: r for r in rtnl.routes(4, protocol=RTPROT_CALICO)}
    assert set(ours) == {own, remote}
    assert ours[remote].onlink and not ours[own].onlink and ours[own].type_name == "blackhole" and ours[own].oif == 0
    assert all(r.protocol != RTPROT_CALICO for r in rtnl.routes(4, protocol=2))  # the kernel's own

    # A route of another protocol to the same destination is not the one deleted.
    netns.ip("-n", ns, "route", "add", "blackhole", "198.18.64.0/26", "metric", "100", "proto", "static")
    assert rtnl.delete_route(ours[remote]) is True
    assert rtnl.delete_route(ours[remote]) is False
    left = run_json(ns, "-4", "route", "show", "198.18.64.0/26")
    assert [(r["type"], r.get("protocol")) for r in left] == [("blackhole", "static")]
    assert rtnl.delete_route(ours[own]) is True
    assert run_json(ns, "-4", "route", "show", "proto", "80") == []


def test_ipv6_calico_routes(nodes):
    ns, rtnl = nodes["a"]
    rtnl.add_route(ipaddress.ip_network("fd00:198:18::/122"), 0, priority=CALICO_METRIC, protocol=RTPROT_CALICO, route_type=RTN_BLACKHOLE)
    (route,) = rtnl.routes(6, protocol=RTPROT_CALICO)
    assert (route.type_name, route.priority) == ("blackhole", CALICO_METRIC)
    assert [r["type"] for r in run_json(ns, "-6", "route", "show", "proto", "80")] == ["blackhole"]
    assert rtnl.delete_route(route) is True
    assert run_json(ns, "-6", "route", "show", "proto", "80") == []


def test_ipip_reports_the_missing_module(nodes):
    ns, rtnl = nodes["a"]
    if "ipip" in {link.get("linkinfo", {}).get("info_kind") for link in run_json(ns, "-d", "link", "show")}:
        pytest.skip("this kernel has ipip")  # the failure path below is what this machine can test
    with pytest.raises(TunnelError, match=r"no ipip module.*modprobe ipip") as caught:
        tunnels.ensure_ipip(rtnl, 1480, ipaddress.ip_interface("198.18.0.1/32"))
    assert "\n" not in str(caught.value)
    assert "tunl0" not in {link["ifname"] for link in run_json(ns, "link", "show")}


def program_node(rtnl: Rtnl, side: str, version: int) -> None:
    """A node's VXLAN dataplane for one peer, as the daemon will program it: device, the peer's
    neighbour and FDB entries, and the route to its block via its tunnel address, onlink."""
    peer = "b" if side == "a" else "a"
    host, peer_host = (1, 2) if side == "a" else (2, 1)
    if version == 4:
        want = vxlan_want(rtnl, side)
        peer_tunnel, peer_node = ip4(f"198.18.{64 if peer == 'b' else 0}.1"), ip4(f"198.19.9.{peer_host}")
        peer_block = ipaddress.ip_network(f"198.18.{64 if peer == 'b' else 0}.0/26")
    else:
        want = replace(
            vxlan_want(rtnl, side),
            name="vxlan-v6.calico",
            local=ip4(f"fd00:198:19:9::{host}"),
            mac=(MAC_A if side == "a" else MAC_B)[:-2] + "66",
            mtu=1430,
            address=ipaddress.ip_interface(f"fd00:198:18:{host}::1/128"),
        )
        peer_tunnel, peer_node = ip4(f"fd00:198:18:{peer_host}::1"), ip4(f"fd00:198:19:9::{peer_host}")
        peer_block = ipaddress.ip_network(f"fd00:198:18:{peer_host}::/122")
    peer_mac = ((MAC_B if side == "a" else MAC_A)[:-2] + "66") if version == 6 else (MAC_B if side == "a" else MAC_A)
    tunnels.ensure_vxlan(rtnl, want)
    link = rtnl.link(want.name)
    tunnels.sync_vteps(rtnl, link, version, {peer_tunnel: (peer_mac, peer_node)})
    rtnl.add_route(peer_block, link.index, peer_tunnel, priority=CALICO_METRIC, protocol=RTPROT_CALICO, onlink=True)


def packets(ns: str, name: str) -> tuple[int, int]:
    stats = run_json(ns, "-s", "link", "show", "dev", name)[0]["stats64"]
    return stats["tx"]["packets"], stats["rx"]["packets"]


@pytest.mark.parametrize("version", [4, 6])
def test_two_nodes_ping_over_vxlan(nodes, version):
    (ns_a, ra), (ns_b, rb) = nodes["a"], nodes["b"]
    program_node(ra, "a", version)
    program_node(rb, "b", version)
    name = "vxlan.calico" if version == 4 else "vxlan-v6.calico"
    src, dst = ("198.18.0.1", "198.18.64.1") if version == 4 else ("fd00:198:18:1::1", "fd00:198:18:2::1")
    ping = subprocess.run(["ip", "netns", "exec", ns_a, "ping", f"-{version}", "-c", "1", "-w", "10", "-I", src, dst], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert packets(ns_a, name)[0] >= 1 and packets(ns_b, name)[1] >= 1  # it went through the tunnel

