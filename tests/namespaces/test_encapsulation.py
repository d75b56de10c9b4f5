"""calico-node's encapsulation controller (calico_cni.node.encapsulation) against the real kernel in
a node namespace the test makes, fed a cache by hand: the VXLAN device, VTEP neighbour and FDB
entries, block, borrowed and blackhole routes with protocol 80 and CALICO_METRIC, CrossSubnet's
native routes, the MTU file; then the level-triggered repairs (a deleted device, a stale route) and
removals (a node gone, the pool gone), and foreign routes never touched. Traffic over VXLAN between
nodes is the cluster tests' (tests/cluster/test_vxlan.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from typing import Iterator

import pytest

from calico_cni.dataplane.rtnl import CALICO_METRIC, Rtnl
from calico_cni.datastore.etcd import KeyValue
from calico_cni.model import keys
from calico_cni.node.encapsulation import EncapsulationController
from calico_cni.node.route_plan import vtep_mac
from calico_cni.node.syncer import Cache
from tests import netns
from tests.unit.test_route_plan import block, doc, node, pool

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")


@pytest.fixture
def ns() -> Iterator[str]:
    """A node namespace whose uplink (198.19.9.1/24 and fd00:198:19:9::1/64, MTU 1500) is one end
    of a veth pair whose other end is in a second namespace."""
    names = [netns.add(f"{netns.PREFIX}enc{side}-{os.getpid()}") for side in "ab"]
    try:
        netns.ip("link", "add", "uplink0", "netns", names[0], "type", "veth", "peer", "name", "peer0", "netns", names[1])
        netns.ip("-n", names[0], "addr", "add", "198.19.9.1/24", "dev", "uplink0")
        netns.ip("-n", names[0], "addr", "add", "fd00:198:19:9::1/64", "dev", "uplink0", "nodad")
        for name, link in zip(names, ("uplink0", "peer0")):
            netns.ip("-n", name, "link", "set", link, "up")
        yield names[0]
    finally:
        for name in names:
            netns.delete(name)


def ip_json(ns: str, *args: str) -> list:
    return json.loads(netns.ip("-n", ns, "-j", *args).stdout or "[]")


def calico_routes(ns: str, version: int = 4) -> set[str]:
    """Protocol-80 routes as `dst[ via gw] dev|blackhole[ onlink] metric`."""
    out = set()
    for r in ip_json(ns, f"-{version}", "route", "show", "proto", "80"):
        text = r["dst"] if r.get("type") != "blackhole" else f"blackhole {r['dst']}"
        if r.get("gateway"):
            text += f" via {r['gateway']}"
        if r.get("dev"):
            text += f" dev {r['dev']}"
        if "onlink" in r.get("flags", []):
            text += " onlink"
        out.add(f"{text} metric {r.get('metric', 0)}")
    return out


def entries(ns: str, device: str = "vxlan.calico") -> tuple[dict[str, str], set[tuple[str, str]]]:
    """(neighbour tunnel IP -> MAC, {(MAC, dst)}) of the device's permanent entries."""
    neighbours = {n["dst"]: n["lladdr"] for n in ip_json(ns, "neigh", "show", "dev", device) if "PERMANENT" in n.get("state", [])}
    fdb = subprocess.run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", device], capture_output=True, text=True, check=True, timeout=30).stdout
    return neighbours, {(f["mac"], f["dst"]) for f in json.loads(fdb or "[]") if f.get("dst")}


class Recording(Rtnl):
    """An Rtnl that records every request that would change the kernel (anything but a GET),
    and, in `reads`, every other one."""

    READS = (18, 22, 26, 30)  # RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE, RTM_GETNEIGH

    def __init__(self, writes: list[str], reads: list[str] | None = None) -> None:
        super().__init__(Rtnl.open().sock)
        self.writes = writes
        self.reads = reads if reads is not None else []

    def request(self, mtype: int, body: bytes, flags: int = 0, what: str = "netlink request"):
        (self.reads if mtype in self.READS else self.writes).append(what)
        return super().request(mtype, body, flags, what)


class Cluster:
    """The cache a calico-node would have, edited by the test."""

    def __init__(self, *items: tuple[str, bytes]) -> None:
        self.items = dict(items)
        self.cache = Cache()
        self.revision = 1
        self.publish()

    def publish(self) -> None:
        self.revision += 1
        self.cache.replace([KeyValue(k, v, self.revision, self.revision, 1) for k, v in self.items.items()], self.revision)


ME = node("n1", "198.19.9.1/24", "198.18.0.1", v6="fd00:198:19:9::1/64")
SAME_SUBNET = node("n2", "198.19.9.2/24", "198.18.0.65")
OTHER_SUBNET = node("n3", "198.19.10.3/24", "198.18.0.129")
BLOCKS = (block("198.18.0.0/26", "n1", {1: "n1"}), block("198.18.0.64/26", "n2", {1: "n2", 9: "n3"}), block("198.18.0.128/26", "n3", {1: "n3"}))


def controller(tmp_path, cluster: Cluster) -> EncapsulationController:
    return EncapsulationController("n1", cluster.cache, str(tmp_path / "state" / "mtu"))


def run_pass(ns: str, ctl: EncapsulationController, recheck: bool = True) -> list[str]:
    """A pass in `ns`; by default one that compares the kernel with the plan whatever changed
    (the periodic check), so a test sees each repair at once."""
    with netns.inside(ns):
        _plan, problems = ctl.run_pass(ctl.cache.snapshot(), recheck)
    return problems


def test_vxlan_always_programs_device_vteps_routes_and_mtu(ns, tmp_path):
    cluster = Cluster(pool("p", "198.18.0.0/16", vxlan="Always"), ME, SAME_SUBNET, OTHER_SUBNET, *BLOCKS)
    ctl = controller(tmp_path, cluster)
    # Someone else's route into the pools, and a stale one of ours from an earlier run.
    netns.ip("-n", ns, "route", "add", "198.18.9.0/26", "via", "198.19.9.2", "proto", "static")
    netns.ip("-n", ns, "route", "add", "198.18.8.0/26", "via", "198.19.9.2", "proto", "80", "metric", str(CALICO_METRIC))
    assert run_pass(ns, ctl) == []

    [link] = ip_json(ns, "-d", "link", "show", "vxlan.calico")
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["port"], info["learning"], info["local"], info["link"], link["mtu"], link["address"]) == (
        4096, 4789, False, "198.19.9.1", "uplink0", 1450, vtep_mac("n1", 4))
    addresses = {f"{a['local']}/{a['prefixlen']}" for a in ip_json(ns, "addr", "show", "dev", "vxlan.calico")[0]["addr_info"] if a.get("scope") == "global"}
    assert addresses == {"198.18.0.1/32"}
    assert entries(ns) == (
        {"198.18.0.65": vtep_mac("n2", 4), "198.18.0.129": vtep_mac("n3", 4)},
        {(vtep_mac("n2", 4), "198.19.9.2"), (vtep_mac("n3", 4), "198.19.10.3")},
    )
    assert calico_routes(ns) == {
        f"blackhole 198.18.0.0/26 metric {CALICO_METRIC}",
        f"198.18.0.64/26 via 198.18.0.65 dev vxlan.calico onlink metric {CALICO_METRIC}",
        f"198.18.0.73 via 198.18.0.129 dev vxlan.calico onlink metric {CALICO_METRIC}",  # borrowed by n3
        f"198.18.0.128/26 via 198.18.0.129 dev vxlan.calico onlink metric {CALICO_METRIC}",
    }
    assert any(r["dst"] == "198.18.9.0/26" for r in ip_json(ns, "route", "show", "proto", "static")), "a foreign route is never touched"
    assert (tmp_path / "state" / "mtu").read_text() == "1450\n"

    # A second pass changes nothing (no write of any kind reaches the kernel); a deleted device
    # and a deleted route come back.
    writes: list[str] = []
    ctl.open_rtnl = lambda: Recording(writes)
    assert run_pass(ns, ctl) == [] and writes == []
    netns.ip("-n", ns, "link", "del", "vxlan.calico")
    netns.ip("-n", ns, "route", "del", "blackhole", "198.18.0.0/26", "proto", "80", "metric", str(CALICO_METRIC))
    assert run_pass(ns, ctl) == []
    assert any("vxlan" in w for w in writes) and any("198.18.0.0/26" in w for w in writes), writes  # the recorder sees writes
    assert len(calico_routes(ns)) == 4 and len(entries(ns)[0]) == 2


def test_a_pod_write_that_changes_no_route_leaves_the_kernel_alone_until_the_period(ns, tmp_path):
    """Every pod's allocation anywhere changes a block in the cache; when the plan stays the same,
    a pass within the period plans from what the last full pass read of the kernel and touches it
    not at all (no dump of every link and address per pod), and the periodic check still repairs."""
    cluster = Cluster(pool("p", "198.18.0.0/16", vxlan="Always"), ME, SAME_SUBNET, OTHER_SUBNET, *BLOCKS)
    ctl = controller(tmp_path, cluster)
    assert run_pass(ns, ctl) == []
    cluster.items[BLOCKS[1][0]] = block("198.18.0.64/26", "n2", {1: "n2", 2: "n2", 9: "n3"})[1]  # a pod on n2
    cluster.publish()
    netns.ip("-n", ns, "neigh", "del", "198.18.0.65", "dev", "vxlan.calico")
    writes: list[str] = []
    reads: list[str] = []
    ctl.open_rtnl = lambda: Recording(writes, reads)
    assert run_pass(ns, ctl, recheck=False) == []
    assert writes == [] and reads == [], reads
    assert "198.18.0.65" not in entries(ns)[0], "left alone until the periodic check"
    assert run_pass(ns, ctl, recheck=True) == []
    assert entries(ns)[0]["198.18.0.65"] == vtep_mac("n2", 4)


def test_another_programs_route_in_the_way_is_reported_and_left_alone(ns, tmp_path):
    """Same destination and metric as a planned route, another protocol: the kernel's replace
    would take it; the controller reports it instead (design rule 26)."""
    cluster = Cluster(pool("p", "198.18.0.0/16", vxlan="Always"), ME, SAME_SUBNET, OTHER_SUBNET, *BLOCKS)
    netns.ip("-n", ns, "route", "add", "198.18.0.64/26", "via", "198.19.9.2", "proto", "static", "metric", str(CALICO_METRIC))
    problems = run_pass(ns, controller(tmp_path, cluster))
    assert problems == [f"route 198.18.0.64/26 via 198.18.0.65 dev vxlan.calico onlink: another program's route to 198.18.0.64/26 with metric {CALICO_METRIC} is in the way; left alone"]
    [route] = ip_json(ns, "route", "show", "198.18.0.64/26")
    assert (route["protocol"], route["gateway"]) == ("static", "198.19.9.2")
    assert len(calico_routes(ns)) == 3


def test_ipv6_other_programs_route_is_left_alone_and_a_duplicate_of_ours_removed(ns, tmp_path):
    """IPv6 keeps routes with one destination and metric as multipath siblings: a foreign one is
    reported (the add is refused, never merged or replaced), and a second route of ours for a
    planned destination is removed, the planned one kept."""
    cluster = Cluster(
        pool("p6", "fd00:198:18::/48", vxlan="Always"),
        node("n1", None, v6="fd00:198:19:9::1/64", vxlan6="fd00:198:18::1"),
        node("n2", None, v6="fd00:198:19:9::2/64", vxlan6="fd00:198:18:0:1::1"),
        node("n3", None, v6="fd00:198:19:9::3/64", vxlan6="fd00:198:18:0:2::1"),
        block("fd00:198:18::/122", "n1"), block("fd00:198:18:0:1::/122", "n2"), block("fd00:198:18:0:2::/122", "n3"),
    )
    ctl = controller(tmp_path, cluster)
    netns.ip("-n", ns, "-6", "route", "add", "fd00:198:18:0:2::/122", "via", "fd00:198:19:9::3", "proto", "static", "metric", str(CALICO_METRIC))
    problems = run_pass(ns, ctl)
    # Refused: IPv6 checks an onlink gateway against the table, and the foreign route covers it.
    assert len(problems) == 1 and problems[0].startswith("route fd00:198:18:0:2::/122 via fd00:198:18:0:2::1 dev vxlan-v6.calico onlink: "), problems
    assert [r["protocol"] for r in ip_json(ns, "-6", "route", "show", "fd00:198:18:0:2::/122")] == ["static"]
    netns.ip("-n", ns, "-6", "route", "append", "fd00:198:18:0:1::/122", "via", "fd00:198:19:9::2", "dev", "uplink0",
             "proto", "80", "metric", str(CALICO_METRIC))
    run_pass(ns, ctl)
    routes = ip_json(ns, "-6", "route", "show", "fd00:198:18:0:1::/122")
    assert len(routes) == 1 and routes[0].get("dev") == "vxlan-v6.calico" and "nexthops" not in routes[0], routes


def test_device_kept_while_the_tunnel_address_is_pending(ns, tmp_path):
    cluster = Cluster(pool("p", "198.18.0.0/16", vxlan="Always"), ME, SAME_SUBNET, *BLOCKS[:2])
    ctl = controller(tmp_path, cluster)
    assert run_pass(ns, ctl) == []
    cluster.items.update([node("n1", "198.19.9.1/24")])  # the tunnel address released, a new one not yet written
    cluster.publish()
    problems = run_pass(ns, ctl)
    assert len(problems) == 1 and "waiting for node n1's IPv4 VXLAN tunnel address" in problems[0]
    assert ip_json(ns, "link", "show", "vxlan.calico"), "the device is kept"
    assert (tmp_path / "state" / "mtu").read_text() == "1450\n"


def test_node_leaving_cross_subnet_and_pool_removal(ns, tmp_path):
    cluster = Cluster(pool("p", "198.18.0.0/16", vxlan="Always"), ME, SAME_SUBNET, OTHER_SUBNET, *BLOCKS)
    ctl = controller(tmp_path, cluster)
    assert run_pass(ns, ctl) == []

    # n3 leaves (its Node and block gone): its neighbour, FDB entry and routes go with it.
    del cluster.items[OTHER_SUBNET[0]], cluster.items[BLOCKS[2][0]]
    cluster.items[BLOCKS[1][0]] = block("198.18.0.64/26", "n2", {1: "n2"})[1]
    cluster.publish()
    assert run_pass(ns, ctl) == []
    assert entries(ns) == ({"198.18.0.65": vtep_mac("n2", 4)}, {(vtep_mac("n2", 4), "198.19.9.2")})
    assert calico_routes(ns) == {f"blackhole 198.18.0.0/26 metric {CALICO_METRIC}", f"198.18.0.64/26 via 198.18.0.65 dev vxlan.calico onlink metric {CALICO_METRIC}"}

    # CrossSubnet: n2 shares our subnet, so its block is routed natively.
    cluster.items.update([pool("p", "198.18.0.0/16", vxlan="CrossSubnet")])
    cluster.publish()
    assert run_pass(ns, ctl) == []
    assert f"198.18.0.64/26 via 198.19.9.2 dev uplink0 onlink metric {CALICO_METRIC}" in calico_routes(ns)

    # A changed MAC on n2's Node is replaced in both entries.
    cluster.items.update([node("n2", "198.19.9.2/24", "198.18.0.65", vxlanTunnelMACAddr="66:00:00:00:00:02")])
    cluster.publish()
    assert run_pass(ns, ctl) == []
    assert entries(ns) == ({"198.18.0.65": "66:00:00:00:00:02"}, {("66:00:00:00:00:02", "198.19.9.2")})

    # No VXLAN pool any more: the device and every route of ours go.
    cluster.items.update([pool("p", "198.18.0.0/16")])
    cluster.publish()
    assert run_pass(ns, ctl) == []
    assert ip_json(ns, "link", "show") and not [link for link in ip_json(ns, "link", "show") if link["ifname"] == "vxlan.calico"]
    assert calico_routes(ns) == set()


def test_ipv6_pool_makes_vxlan_v6_and_ipip_reports_the_missing_kernel_module(ns, tmp_path):
    cluster = Cluster(
        pool("p6", "fd00:198:18::/48", vxlan="Always"),
        pool("pi", "198.18.0.0/16", ipip="Always"),
        (keys.node("n1"), doc("Node", "n1", bgp={"ipv4Address": "198.19.9.1/24", "ipv6Address": "fd00:198:19:9::1/64", "ipv4IPIPTunnelAddr": "198.18.0.1"},
                              ipv6VXLANTunnelAddr="fd00:198:18::1")),
        node("n2", None, v6="fd00:198:19:9::2/64", vxlan6="fd00:198:18:0:1::1"),
        block("fd00:198:18:0:1::/122", "n2"),
    )
    problems = run_pass(ns, controller(tmp_path, cluster))
    assert len(problems) == 1 and "IPIP pools pi" in problems[0] and "modprobe ipip" in problems[0]
    [link] = ip_json(ns, "-d", "link", "show", "vxlan-v6.calico")
    assert link["mtu"] == 1430 and link["linkinfo"]["info_data"].get("local6", link["linkinfo"]["info_data"].get("local")) == "fd00:198:19:9::1"
    assert calico_routes(ns, 6) == {f"fd00:198:18:0:1::/122 via fd00:198:18:0:1::1 dev vxlan-v6.calico onlink metric {CALICO_METRIC}"}
    # The pod MTU leaves room for the largest overhead in use (IPIP is in use even where it fails).
    assert (tmp_path / "state" / "mtu").read_text() == "1430\n"


def test_host_mtu_follows_felix_pattern_then_the_node_address_interface_then_the_default_route(ns):
    from calico_cni.dataplane.rtnl import Rtnl
    from calico_cni.node.encapsulation import host_mtu
    from calico_cni.node.route_plan import Uplink

    def measured(uplink: str | None) -> int:
        with netns.inside(ns), Rtnl.open() as rtnl:
            links = {link.name: link for link in rtnl.links()}
            uplinks = {4: Uplink(links[uplink].index, uplink)} if uplink else {}
            return host_mtu(rtnl, links, uplinks)

    netns.ip("-n", ns, "link", "set", "uplink0", "mtu", "1480")
    assert measured("uplink0") == 1480, "the interface holding the node address"
    assert measured("lo") == 1500, "a node address on lo: no default route, so 1500"
    netns.ip("-n", ns, "route", "add", "default", "via", "198.19.9.2", "dev", "uplink0")
    assert measured("lo") == 1480, "a node address on lo: the default route's device"
    netns.ip("-n", ns, "link", "add", "eth9", "mtu", "1400", "type", "veth", "peer", "name", "eth9p", "mtu", "1400")
    assert measured("uplink0") == 1480, "an interface Felix's pattern names counts only when up"
    netns.ip("-n", ns, "link", "set", "eth9", "up")
    assert measured("uplink0") == 1400, "the smallest up interface Felix's pattern names"


def test_a_conflist_mtu_above_the_encapsulation_is_warned_about_once(ns, tmp_path, caplog):
    net_d = tmp_path / "net.d"
    net_d.mkdir()
    conflist = net_d / "10-calico.conflist"
    conflist.write_text(json.dumps({"name": "k8s", "plugins": [{"type": "calico", "mtu": 1500}, {"type": "portmap", "mtu": 9000}]}))
    (net_d / "20-other.conf").write_text(json.dumps({"type": "bridge", "mtu": 9000}))
    (net_d / "30-broken.conflist").write_text("{")
    cluster = Cluster(pool("p", "198.18.0.0/16", vxlan="Always"), ME, SAME_SUBNET, *BLOCKS[:2])
    ctl = EncapsulationController("n1", cluster.cache, str(tmp_path / "state" / "mtu"), str(net_d))
    with caplog.at_level(logging.WARNING, "calico_cni.node.encapsulation"):
        assert run_pass(ns, ctl) == [], "a warning, not a problem: the node stays ready"
        assert run_pass(ns, ctl) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"encapsulation: {conflist}: the calico plugin's mtu 1500 is above 1450, what the encapsulation in use leaves room for; "
                        "new pods get 1500 and lose or fragment large packets to other nodes: lower it, or remove it so that pods get the MTU file's"]
    caplog.clear()
    conflist.write_text(json.dumps({"name": "k8s", "plugins": [{"type": "calico", "mtu": 1450}]}))
    with caplog.at_level(logging.INFO, "calico_cni.node.encapsulation"):
        assert run_pass(ns, ctl) == []
    assert any("resolved" in r.getMessage() for r in caplog.records)


def test_mtu_file_is_written_only_when_it_does_not_hold_the_mtu(tmp_path):
    path = tmp_path / "mtu"
    ctl = EncapsulationController("n1", Cache(), str(path))
    path.write_text("not an mtu\n")
    problems: list[str] = []
    ctl._write_mtu(1450, problems)
    assert path.read_text() == "1450\n" and problems == []
    os.utime(path, (0, 0))
    ctl._write_mtu(1450, problems)
    assert os.stat(path).st_mtime == 0 and problems == []
    ctl._write_mtu(1430, problems)
    assert path.read_text() == "1430\n" and problems == []


def test_a_change_of_the_plan_within_the_period_reads_the_kernel_again(ns, tmp_path):
    """The shortcut holds only while the plan is the one applied: a block of a new node (a new
    route) makes the pass read the kernel and program it at once."""
    cluster = Cluster(pool("p", "198.18.0.0/16", vxlan="Always"), ME, SAME_SUBNET, OTHER_SUBNET, *BLOCKS)
    ctl = controller(tmp_path, cluster)
    assert run_pass(ns, ctl) == []
    before = len(calico_routes(ns))
    key, value = block("198.18.0.192/26", "n2", {1: "n2"})
    cluster.items[key] = value
    cluster.publish()
    assert run_pass(ns, ctl, recheck=False) == []
    assert len(calico_routes(ns)) == before + 1
