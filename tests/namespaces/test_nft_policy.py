"""node.nft_policy's section with the real nft and kernel, in namespaces these tests make: the
kernel accepts the tables compiled from a varied view (both families, every rule field, named
ports, logs, many endpoints), and traffic between pods wired the Calico way obeys a policy:

    pod a (198.18.0.1, fd00:198:18::1, role=friend) -- calia |
    pod b (198.18.0.2, fd00:198:18::2, app=b)       -- calib | node (uplink up0 198.19.0.1/24, default routes)
    pod c (198.18.0.3, fd00:198:18::3)              -- calic |

b's ingress allows ICMP (ICMPv6) from role == 'friend' only; every pod's profile allows the rest.
"""

from __future__ import annotations

import os

import pytest

from calico_cni.dataplane import nftables
from calico_cni.node.nft_policy import PolicyCompiler, PolicySettings
from calico_cni.node.nft_tables import FAMILIES, Table, script
from calico_cni.node.policy_view import PolicyView
from tests import netns
from tests.namespaces.test_nftables import counters, inside, ping, sh
from tests.policy_support import stored, wep

ME = "node1"
# Calico's host-side veth MAC, and the link-local address the pod's IPv6 default route goes via.
HOST_VETH_MAC, HOST_VETH_LL = "ee:ee:ee:ee:ee:ee", "fe80::ecee:eeff:feee:eeee"
ALLOW_ALL = {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}


def compiled(records, settings: PolicySettings = PolicySettings()) -> dict[int, Table]:
    compiler = PolicyCompiler()
    view = PolicyView.read(dict(records))
    tables = {family: Table(FAMILIES[family], (compiler.section(view, ME, family, settings),)) for family in FAMILIES}
    assert compiler.problems == [] and view.problems == ()
    return tables


def varied() -> list:
    """Every rule field in both families, named ports, logs, tiers, namespaced and global policies
    and sets, and 60 endpoints (30 here)."""
    rules = [
        {"action": "Log", "protocol": "TCP", "source": {"selector": "role == 'a'", "ports": ["1000:2000", "metrics"]}, "destination": {"ports": [80, "http"]}},
        {"action": "Allow", "protocol": "UDP", "notProtocol": "TCP", "destination": {"notPorts": [53, "dns"], "notSelector": "quarantine == 'yes'"}},
        {"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}, "source": {"nets": ["198.18.0.0/16"], "notNets": ["198.18.5.0/24"]}},
        {"action": "Deny", "protocol": "ICMPv6", "notICMP": {"type": 128, "code": 0}},
        {"action": "Pass", "ipVersion": 6, "source": {"nets": ["fd00:198:18::/48"], "namespaceSelector": "team == 'x'"}},
        {"action": "Allow", "protocol": "SCTP", "source": {"namespaceSelector": "global()"}, "destination": {"ports": ["http"]}},
        {"action": "Allow", "protocol": 99},
    ]
    records = [
        stored("Tier", "default", {}),
        stored("Tier", "security", {"order": 10}),
        stored("Tier", "platform", {"order": 5, "defaultAction": "Pass"}),
        stored("GlobalNetworkPolicy", "security.all-rules", {"tier": "security", "ingress": rules, "egress": rules}),
        stored("GlobalNetworkPolicy", "platform.pass", {"tier": "platform", "selector": "app == 'w1'", "ingress": [{"action": "Pass"}]}),
        stored("NetworkPolicy", "np", {"ingress": rules, "egress": [{"action": "Allow", "destination": {"selector": "role == 'a'"}}]}, "prod"),
        stored("NetworkSet", "office", {"nets": ["198.51.100.0/24", "2001:db8::/32"]}, "prod", labels={"role": "a"}),
        stored("GlobalNetworkSet", "dns", {"nets": ["192.0.2.53/32"]}, labels={"role": "a"}),
        stored("Profile", "kns.prod", ALLOW_ALL),
    ]
    ports = [
        {"name": "http", "protocol": "TCP", "port": 8080},
        {"name": "metrics", "protocol": "TCP", "port": 9090},
        {"name": "dns", "protocol": "UDP", "port": 53},
    ]
    for i in range(60):
        records.append(
            wep(
                f"w{i}",
                labels={"role": "a" if i % 3 == 0 else "b", "app": f"w{i % 5}"},
                profiles=["kns.prod", "missing"] if i % 7 == 0 else ["kns.prod"],
                node=ME if i % 2 == 0 else "node2",
                interfaceName=f"caliw{i}",
                ipNetworks=[f"198.18.{i}.1/32", f"fd00:198:18::{i + 1:x}/128"],
                ports=ports if i % 4 == 0 else [],
            )
        )
    return records


@pytest.fixture
def bare():
    name = f"{netns.PREFIX}nftpol-{os.getpid()}"
    try:
        netns.add(name)  # inside the try: a namespace made but not brought up is removed too
        with inside(name):
            yield name
    finally:
        netns.delete(name)


def test_the_kernel_accepts_a_varied_view_in_both_families_and_a_second_write_changes_nothing(bare):
    tables = compiled(varied())
    listed = {}
    for _ in range(2):
        for family, table in tables.items():
            nftables.apply(script(table))
            text = nftables.list_table(table.family, "calico")
            assert listed.setdefault(family, text) == text
    assert "tw-caliw0" in listed[4] and "pi-security.security.all-rules" not in listed[4]
    assert "pi-security.all-rules" in listed[6] and "fd00:198:18::1" in listed[6]
    assert "calico-packet" in listed[4] and "inet_proto . inet_service" in listed[6]


def test_the_kernel_accepts_long_names_hashed(bare):
    long = "p" + "-long" * 40
    namespace = "n" * 63
    records = [
        stored("Tier", "default", {}),
        stored("GlobalNetworkPolicy", long, {"ingress": [{"action": "Allow", "source": {"selector": f"x == '{long}'"}}]}),
        stored("NetworkPolicy", long, {"ingress": [{"action": "Allow"}], "egress": [{"action": "Deny"}]}, namespace),
        stored("Profile", f"ksa.{namespace}.{long[:150]}", ALLOW_ALL),
        wep("w", namespace=namespace, profiles=[f"ksa.{namespace}.{long[:150]}"], node=ME, interfaceName="cali0123456789a"),
    ]
    tables = compiled(records)
    for table in tables.values():
        nftables.apply(script(table))
    listed = nftables.list_table("ip", "calico") or ""
    names = [c.name for c in tables[4].sections[0].chains]
    assert len([n for n in names if "_" in n]) == 5  # both policies' pi-, the NP's po-, the profile's pri- and pro-
    assert all(f"chain {n} {{" in listed for n in names)


@pytest.fixture
def pods():
    """The node and three pods of the module docstring."""
    tag = os.getpid()
    names = {role: f"{netns.PREFIX}pol{role}-{tag}" for role in ("node", "a", "b", "c")}
    try:
        for name in names.values():
            netns.add(name)
        node = names["node"]
        netns.ip("-n", node, "link", "add", "up0", "type", "veth", "peer", "name", "up1")
        netns.ip("-n", node, "addr", "add", "198.19.0.1/24", "dev", "up0")
        netns.ip("-n", node, "addr", "add", "fd00:198:19::1/64", "dev", "up0", "nodad")
        for dev in ("up0", "up1"):
            netns.ip("-n", node, "link", "set", dev, "up")
        # Proxy ARP answers only for addresses routed through another interface: a default route.
        netns.ip("-n", node, "route", "add", "default", "via", "198.19.0.2", "dev", "up0")
        netns.ip("-n", node, "-6", "route", "add", "default", "via", "fd00:198:19::2", "dev", "up0")
        sh(node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        for i, pod in enumerate(("a", "b", "c"), start=1):
            ns, host, addr = names[pod], f"cali{pod}", f"198.18.0.{i}"
            netns.ip("-n", node, "link", "add", host, "address", HOST_VETH_MAC, "type", "veth", "peer", "name", "eth0", "netns", ns)
            # No DAD on the veth pair, so the link-local addresses are usable at once.
            sh(node, "sysctl", "-q", "-w", f"net.ipv6.conf.{host}.accept_dad=0")
            sh(ns, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_dad=0")
            netns.ip("-n", node, "link", "set", host, "up")
            sh(node, "sysctl", "-q", "-w", f"net.ipv4.conf.{host}.proxy_arp=1", f"net.ipv4.conf.{host}.forwarding=1", f"net.ipv4.neigh.{host}.proxy_delay=0")
            netns.ip("-n", node, "route", "add", f"{addr}/32", "dev", host)
            netns.ip("-n", node, "-6", "route", "add", f"fd00:198:18::{i}/128", "dev", host)
            netns.ip("-n", ns, "addr", "add", f"fd00:198:18::{i}/128", "dev", "eth0", "nodad")
            netns.ip("-n", ns, "addr", "add", f"{addr}/32", "dev", "eth0")
            netns.ip("-n", ns, "link", "set", "eth0", "up")
            netns.ip("-n", ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
            netns.ip("-n", ns, "route", "add", "default", "via", "169.254.1.1")
            netns.ip("-n", ns, "-6", "route", "add", "default", "via", HOST_VETH_LL, "dev", "eth0")
        yield names
    finally:
        for name in names.values():
            netns.delete(name)


def pod_records(b_policy: dict) -> list:
    return [
        stored("Tier", "default", {}),
        stored("Profile", "kns.prod", ALLOW_ALL),
        stored("GlobalNetworkPolicy", "b-ingress", {"selector": "app == 'b'", "types": ["Ingress"], **b_policy}),
        wep("a", labels={"role": "friend"}, profiles=["kns.prod"], node=ME, interfaceName="calia", ipNetworks=["198.18.0.1/32", "fd00:198:18::1/128"]),
        wep("b", labels={"app": "b"}, profiles=["kns.prod"], node=ME, interfaceName="calib", ipNetworks=["198.18.0.2/32", "fd00:198:18::2/128"]),
        wep("c", profiles=["kns.prod"], node=ME, interfaceName="calic", ipNetworks=["198.18.0.3/32", "fd00:198:18::3/128"]),
    ]


def program(node: str, records) -> None:
    with inside(node):
        for table in compiled(records).values():
            nftables.apply(script(table))


def test_pods_ping_as_the_policy_says(pods):
    node = pods["node"]
    program(node, pod_records({"ingress": [{"action": "Allow", "protocol": "ICMP", "source": {"selector": "role == 'friend'"}}]}))
    assert ping(pods["a"], "198.18.0.2")  # friend to b: allowed by b's policy
    assert not ping(pods["c"], "198.18.0.2")  # c to b: end-of-tier drop
    assert ping(pods["b"], "198.18.0.3") and ping(pods["c"], "198.18.0.1")  # profiles allow the rest
    dropped = dict(counters(node, "ip", "calico", "tw-calib"))
    assert dropped["meta mark & 0x00020000 == 0x00000000 drop"] >= 1
    # The policy now denies the friend first: the same ping is dropped.
    program(node, pod_records({"ingress": [{"action": "Deny", "source": {"selector": "role == 'friend'"}}, {"action": "Allow"}]}))
    assert not ping(pods["a"], "198.18.0.2") and ping(pods["c"], "198.18.0.2")


def test_an_unknown_pod_interface_and_a_spoofed_source_are_dropped(pods):
    node = pods["node"]
    records = [r for r in pod_records({"ingress": [{"action": "Allow"}]}) if not r[0].endswith("-k8s-c-eth0")]
    assert len(records) == 5
    program(node, records)
    assert ping(pods["a"], "198.18.0.2")
    assert not ping(pods["c"], "198.18.0.2")  # calic has no endpoint: the dispatch drops
    # a sends as b: the reverse path of 198.18.0.2 is calib, not calia.
    netns.ip("-n", pods["a"], "addr", "add", "198.18.0.2/32", "dev", "eth0")
    assert not ping(pods["a"], "198.18.0.3", "-I", "198.18.0.2")
    spoofed = dict(counters(node, "ip", "calico", "policy-antispoof"))
    assert spoofed['iifname "cali*" fib saddr . iif oif missing drop'] >= 1


def test_ipv6_pods_ping_as_the_policy_says(pods):
    node = pods["node"]
    program(node, pod_records({"ingress": [{"action": "Allow", "protocol": "ICMPv6", "source": {"selector": "role == 'friend'"}}]}))
    assert ping(pods["a"], "fd00:198:18::2")  # friend to b: allowed (neighbour discovery through wl-to-host too)
    assert not ping(pods["c"], "fd00:198:18::2")  # c to b: end-of-tier drop
    assert ping(pods["b"], "fd00:198:18::3")
    assert not ping(pods["a"], "198.18.0.2")  # the ICMPv6 rule does not allow IPv4's ICMP
    dropped = dict(counters(node, "ip6", "calico", "tw-calib"))
    assert dropped["meta mark & 0x00020000 == 0x00000000 drop"] >= 1
