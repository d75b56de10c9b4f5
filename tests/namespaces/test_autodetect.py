"""calico-node's address detection (calico_cni.node.autodetect) in a namespace of the test's own,
with interfaces named as a node's may be (eth0, uplink0, docker0, cali..., veth...): Calico's
methods, its exclusion list and its interface order. Each interface is one end of a veth pair
whose other end (named veth*, so excluded, and holding no address) stays in the same namespace.
Detection runs in the test's thread after entering the namespace; the namespace is removed after
each test, also when it fails."""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import subprocess
import sys
from contextlib import contextmanager

import pytest

from calico_cni.node import autodetect
from calico_cni.node.autodetect import AutodetectError, detect, detect_with_reason
from calico_cni.node.settings import parse_method
from tests import netns

_counter = itertools.count(1)


class Namespace:
    """A namespace of this test with veth-backed interfaces."""

    def __init__(self) -> None:
        self.name = netns.add(f"{netns.PREFIX}adetect{next(_counter)}-{os.getpid()}")
        self.peers = itertools.count(1)

    def interface(self, name: str, *addresses: str, up: bool = True) -> None:
        """Add interface `name` (index above every earlier one) with `addresses` (IPv6 without
        duplicate address detection, so none is tentative)."""
        peer = f"vethp{next(self.peers)}"
        netns.ip("-n", self.name, "link", "add", name, "type", "veth", "peer", "name", peer)
        for address in addresses:
            extra = ("nodad",) if ":" in address else ()
            netns.ip("-n", self.name, "addr", "add", address, "dev", name, *extra)
        if up:
            netns.ip("-n", self.name, "link", "set", peer, "up")
            netns.ip("-n", self.name, "link", "set", name, "up")

    @contextmanager
    def inside(self):
        previous = netns.enter(self.name)
        try:
            yield
        finally:
            netns.leave(previous)

    def detect(self, method: str, version: int = 4):
        with self.inside():
            return detect_with_reason(method, version)


@pytest.fixture
def ns():
    made = Namespace()
    try:
        yield made
    finally:
        netns.delete(made.name)


@pytest.fixture
def host(ns):
    """A node-like namespace: eth0 then uplink0 (both eligible), then docker0 and cali0 (excluded
    by Calico's list) and ens9 holding only a link-local address; created in that order."""
    ns.interface("eth0", "198.19.1.2/24", "fd00:198:19:1::2/64")
    ns.interface("uplink0", "198.19.3.2/24", "fd00:198:19:3::2/64")
    ns.interface("docker0", "198.19.2.1/24", "fd00:198:19:2::1/64")
    ns.interface("cali0", "198.19.4.1/24")
    ns.interface("ens9", "169.254.7.7/16")
    return ns


def iface(text: str):
    return ipaddress.ip_interface(text)


def test_first_found_takes_the_newest_eligible_interface_with_its_prefix(host):
    # Calico walks the interfaces backwards: ens9 (link-local only), cali0 and docker0 (excluded),
    # then uplink0, whose address wins over eth0's. The host bits and the prefix are kept.
    assert host.detect("first-found", 4) == (iface("198.19.3.2/24"), "")
    assert host.detect("", 4) == (iface("198.19.3.2/24"), "")
    # IPv6: the fe80:: addresses of every interface are link-local, not global unicast.
    assert host.detect("first-found", 6) == (iface("fd00:198:19:3::2/64"), "")


def test_first_found_takes_an_interfaces_first_global_address(ns):
    ns.interface("eth0", "169.254.1.1/16", "198.19.1.2/24", "198.19.5.2/26")
    assert ns.detect("first-found") == (iface("198.19.1.2/24"), "")


def test_first_found_ignores_a_down_interfaces_state_as_calico(ns):
    # Calico looks at addresses, not at the link state.
    ns.interface("eth0", "198.19.1.2/24", up=False)
    assert ns.detect("first-found") == (iface("198.19.1.2/24"), "")


# Calico's DEFAULT_INTERFACES_TO_EXCLUDE, one interface name each (lo is the namespace's own, and
# "local0" shows that Calico's ^lo excludes more than lo).
EXCLUDED = (
    "docker1", "cbr0", "dummy0", "podman0", "virbr0", "lxcbr0", "veth1", "local0", "br-1a2b",
    "cali1234", "tunl0", "flannel.1", "kube-ipvs0", "cni0", "vxlan.calico", "vxlan-v6.calico",
    "wireguard.cali", "wg-v6.cali", "nodelocaldns",
)  # fmt: skip


def test_first_found_skips_every_interface_of_calicos_exclusion_list(ns):
    netns.ip("-n", ns.name, "addr", "add", "198.19.0.9/32", "dev", "lo")
    for n, name in enumerate(EXCLUDED, start=1):
        ns.interface(name, f"198.19.{n}.1/24", f"fd00:198:19:{n:x}::1/64")
    for version in (4, 6):
        # Every interface is excluded (lo too, though it holds a global address).
        assert ns.detect("first-found", version) == (None, "no valid host interfaces found")
        # skip-interface= excludes them too, on top of its own.
        assert ns.detect("skip-interface=nothing", version)[0] is None
    # An interface that no rule excludes but holds no address of the family is looked at.
    ns.interface("enp0s2", "fd00:198:19:ff::1/64")
    found, reason = ns.detect("first-found", 4)
    assert found is None and reason == "no valid IPv4 addresses found on the host interfaces (looked at enp0s2)"
    # One more that no rule excludes is found.
    ns.interface("enp0s1", "198.19.200.1/24")
    assert ns.detect("first-found") == (iface("198.19.200.1/24"), "")


def test_the_exclusion_list_is_calicos():
    assert len(EXCLUDED) == len(autodetect.DEFAULT_INTERFACES_TO_EXCLUDE)
    for name, pattern in zip(EXCLUDED, autodetect.DEFAULT_INTERFACES_TO_EXCLUDE):
        assert autodetect._matches([pattern], name), (name, pattern)


def test_nothing_found_when_there_is_no_interface_but_lo(ns):
    assert ns.detect("first-found") == (None, "no valid host interfaces found")
    with ns.inside():
        assert detect("first-found", 4) is None


def test_interface_method(host):
    assert host.detect("interface=eth0") == (iface("198.19.1.2/24"), "")
    assert host.detect("interface=eth.*", 6) == (iface("fd00:198:19:1::2/64"), "")
    # Several regexes; the newest matching interface wins, as for first-found.
    assert host.detect("interface=eth0,uplink.*") == (iface("198.19.3.2/24"), "")
    # interface= applies no exclusion list: docker0 and cali0 can be chosen with it.
    assert host.detect("interface=docker0") == (iface("198.19.2.1/24"), "")
    assert host.detect("interface=cali.*") == (iface("198.19.4.1/24"), "")
    # Regexes are searched in the name, as Go's MatchString.
    assert host.detect("interface=link") == (iface("198.19.3.2/24"), "")
    assert host.detect("interface=^wlan") == (None, "no valid host interfaces found")
    assert host.detect("interface=ens9")[0] is None  # only a link-local address


def test_skip_interface_method(host):
    assert host.detect("skip-interface=uplink.*") == (iface("198.19.1.2/24"), "")
    assert host.detect("skip-interface=uplink0, eth0")[0] is None
    assert host.detect("skip-interface=nomatch") == (iface("198.19.3.2/24"), "")


def test_cidr_method(host):
    assert host.detect("cidr=198.19.1.0/24") == (iface("198.19.1.2/24"), "")
    assert host.detect("cidr=198.19.1.0/24,198.19.3.0/24") == (iface("198.19.3.2/24"), "")
    # cidr= applies no exclusion list.
    assert host.detect("cidr=198.19.2.0/24") == (iface("198.19.2.1/24"), "")
    assert host.detect("cidr=fd00:198:19:2::/64", 6) == (iface("fd00:198:19:2::1/64"), "")
    assert host.detect("cidr=10.0.0.0/8")[0] is None
    # A CIDR of the other family matches nothing.
    assert host.detect("cidr=fd00:198:19::/48", 4)[0] is None


def test_can_reach_method(host):
    # The kernel's source address towards the destination, with the interface's prefix.
    assert host.detect("can-reach=198.19.1.77") == (iface("198.19.1.2/24"), "")
    assert host.detect("can-reach=198.19.2.77") == (iface("198.19.2.1/24"), "")
    assert host.detect("can-reach=fd00:198:19:3::77", 6) == (iface("fd00:198:19:3::2/64"), "")
    assert host.detect("can-reach=[fd00:198:19:1::77]", 6) == (iface("fd00:198:19:1::2/64"), "")


def test_can_reach_without_a_route(host):
    found, reason = host.detect("can-reach=203.0.113.1")
    assert found is None and reason.startswith("connecting to 203.0.113.1: ") and "unreachable" in reason
    # An address of the other family cannot be reached over this one.
    found, reason = host.detect("can-reach=fd00:198:19:1::77", 4)
    assert found is None and reason.startswith("connecting to fd00:198:19:1::77: ")


def test_can_reach_a_source_address_on_no_interface(ns):
    # A local route makes 198.19.77.7 the node's own without any interface holding it; a route
    # preferring it as source makes the kernel pick it, but no interface gives it a prefix.
    ns.interface("eth0", "198.19.1.2/24")
    netns.ip("-n", ns.name, "route", "add", "local", "198.19.77.7/32", "dev", "lo", "table", "local")
    netns.ip("-n", ns.name, "route", "add", "203.0.113.0/24", "dev", "eth0", "src", "198.19.77.7")
    found, reason = ns.detect("can-reach=203.0.113.9")
    assert found is None
    assert reason == "autodetected IPv4 address does not match any addresses found on local interfaces: 198.19.77.7"


def test_kubernetes_internal_ip_is_a_clear_error(ns):
    with ns.inside(), pytest.raises(AutodetectError) as info:
        detect("kubernetes-internal-ip", 4)
    assert "needs the Kubernetes API" in str(info.value)
    assert "first-found" in str(info.value)


def test_interfaces_that_cannot_be_read_are_an_autodetect_error(monkeypatch):
    # Not provokable in a test namespace (netlink always answers there): the error is stood in.
    def refuse():
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(autodetect.Rtnl, "open", refuse)
    for method in ("first-found", "interface=eth0", "cidr=198.19.0.0/16"):
        with pytest.raises(AutodetectError) as info:
            detect_with_reason(method, 4)
        assert str(info.value) == "cannot list this node's interfaces and addresses: [Errno 1] Operation not permitted"


def test_a_parsed_method_is_taken_as_it_is(host):
    with host.inside():
        assert detect(parse_method("interface=eth0"), 4) == iface("198.19.1.2/24")


def test_local_cidr_takes_the_prefix_of_the_interface_holding_the_address(host):
    with host.inside():
        assert autodetect.local_cidr("198.19.3.2", 4) == iface("198.19.3.2/24")
        # Also from an interface Calico's first-found excludes (GetLocalCIDR looks at all).
        assert autodetect.local_cidr("198.19.2.1", 4) == iface("198.19.2.1/24")
        assert autodetect.local_cidr("fd00:198:19:1::2", 6) == iface("fd00:198:19:1::2/64")
        # Not on the host: a /32 (/128).
        assert autodetect.local_cidr("198.19.9.9", 4) == iface("198.19.9.9/32")
        assert autodetect.local_cidr("fd00:198:19:9::9", 6) == iface("fd00:198:19:9::9/128")
        # Given with a prefix: kept as given.
        assert autodetect.local_cidr("198.19.3.2/16", 4) == iface("198.19.3.2/16")


def test_on_host_and_host_addresses(host):
    with host.inside():
        assert autodetect.on_host(iface("198.19.1.2/24"))
        assert autodetect.on_host(iface("198.19.1.2/32"))  # the address counts, not the prefix
        assert not autodetect.on_host(iface("198.19.1.3/24"))
        found = autodetect.host_addresses(4)
    assert {str(a) for a in found} >= {"127.0.0.1/8", "198.19.1.2/24", "198.19.3.2/24", "198.19.2.1/24", "198.19.4.1/24", "169.254.7.7/16"}
    assert all(a.version == 4 for a in found)


def test_interfaces_are_listed_newest_first(host):
    with host.inside():
        names = [i.name for i in autodetect.interfaces(4)]
        indexes = [i.index for i in autodetect.interfaces(4)]
    assert indexes == sorted(indexes, reverse=True)
    assert [n for n in names if not n.startswith("vethp")] == ["ens9", "cali0", "docker0", "uplink0", "eth0", "lo"]


# --------------------------------------------------------------------------------------------
# Start-up in a node namespace, with the kernel's answers (not a stand-in)


def start_in(node, env: dict) -> subprocess.CompletedProcess:
    """calico-node's settings and start-up run in `node`'s namespace (where the node's daemon runs),
    reaching the test etcd through the node's uplink."""
    code = "import os, sys\n" \
        "from calico_cni.datastore.store import connect\n" \
        "from calico_cni.node import settings, startup\n" \
        "s = settings.from_args([], os.environ)\n" \
        "store = connect(s.etcd)\n" \
        "try:\n" \
        "    reg = startup.run(s, store)\n" \
        "except startup.StartupError as exc:\n" \
        "    print(exc, file=sys.stderr); sys.exit(1)\n" \
        "finally:\n" \
        "    store.close()\n" \
        "print(reg.ipv4)\n"  # fmt: skip
    return subprocess.run(["nsenter", f"--net={node.path}", sys.executable, "-c", code], env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60)


def test_startup_registers_the_address_detected_in_the_node_namespace(nodes, store, etcd_endpoint, tmp_path):
    node = nodes()  # its address is a /32 on lo; its uplink holds none
    env = {
        "ETCD_ENDPOINTS": etcd_endpoint, "NODENAME": "node1", "CALICO_STATE_DIR": str(tmp_path / "state"),
        "CALICO_IPV4POOL_CIDR": "198.18.0.0/16", "CALICO_IPV6POOL_CIDR": "none",
    }  # fmt: skip
    # first-found excludes lo, and nothing else holds an address: start-up refuses, naming the method.
    proc = start_in(node, env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("could not autodetect an IPv4 address with IP_AUTODETECTION_METHOD=first-found: no valid IPv4 addresses found")
    assert store.client.get("/calico/resources/v3/projectcalico.org/nodes/node1") is None
    # cidr= looks at every interface, lo too.
    proc = start_in(node, {**env, "IP_AUTODETECTION_METHOD": "cidr=198.19.0.0/16"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{node.address}/32"
    stored = json.loads(store.client.get("/calico/resources/v3/projectcalico.org/nodes/node1").value)
    assert stored["spec"]["bgp"] == {"ipv4Address": f"{node.address}/32"}
    # A bare IP= held by an interface takes that interface's prefix.
    # (On an interface of its own: an address on the uplink would become the source towards etcd,
    # which the fabric has no route back to.)
    netns.ip("-n", node.name, "link", "add", "eth1", "type", "veth", "peer", "name", "vethx1")
    netns.ip("-n", node.name, "addr", "add", "198.19.250.7/28", "dev", "eth1")
    proc = start_in(node, {**env, "IP": "198.19.250.7"})
    assert proc.returncode == 0 and proc.stdout.strip() == "198.19.250.7/28", proc.stderr


def test_startup_with_a_method_that_needs_kubernetes(nodes, store, etcd_endpoint, tmp_path):
    # kubernetes-internal-ip is Calico's, but needs the Kubernetes API: as a detection that found
    # nothing, start-up stops with a message naming the method (not a traceback), or keeps the
    # address the node already has.
    node = nodes()
    env = {
        "ETCD_ENDPOINTS": etcd_endpoint, "NODENAME": "node1", "CALICO_STATE_DIR": str(tmp_path / "state"),
        "CALICO_IPV4POOL_CIDR": "198.18.0.0/16", "CALICO_IPV6POOL_CIDR": "none", "IP_AUTODETECTION_METHOD": "kubernetes-internal-ip",
    }  # fmt: skip
    proc = start_in(node, env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("could not autodetect an IPv4 address with IP_AUTODETECTION_METHOD=kubernetes-internal-ip: "
                                  "autodetection method kubernetes-internal-ip needs the Kubernetes API"), proc.stderr
    proc = start_in(node, {**env, "IP": f"{node.address}/32"})
    assert proc.returncode == 0, proc.stderr
    proc = start_in(node, {**env, "IP": "autodetect"})
    assert proc.returncode == 0 and proc.stdout.strip() == f"{node.address}/32", proc.stderr
