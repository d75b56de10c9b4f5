"""Kernel state and result after a `calico` ADD, in real namespaces: the layout of
docs/calico-plugin.md ("What ADD does to the node and the container", "MTU")."""

from __future__ import annotations

import hashlib
import ipaddress
import json

import pytest

from calico_cni.model import keys
from tests import netns
from tests.calico_support import ip_json, ok, pod_env, run_calico, sysctl
from tests.pools import pools_fixture

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

HOST_MAC = "ee:ee:ee:ee:ee:ee"
EUI64_LINK_LOCAL = "fe80::ecee:eeff:feee:eeee"
V4_POOL, V6_POOL = "198.18.0.0/24", "fd00:198:18::/112"

STACKS = {
    "ipv4": {},
    "ipv6": {"assign_ipv4": "false", "assign_ipv6": "true"},
    "dual": {"assign_ipv6": "true"},
}


pools = pools_fixture(("v4", V4_POOL, 26), ("v6", V6_POOL, 122))


def host_veth_name(network: str, container_id: str, ifname: str) -> str:
    return "cali" + hashlib.sha1(f"{network}.{container_id}.{ifname}".encode()).hexdigest()[:11]


def link(ns: str, name: str) -> dict:
    found = [l for l in ip_json(ns, "-d", "link", "show") if l["ifname"] == name]
    assert found, f"no link {name} in {ns}"
    return found[0]


def addresses(ns: str, name: str) -> set[str]:
    entry = ip_json(ns, "addr", "show", "dev", name)[0]
    return {f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])}


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_kernel_state_after_add(stack, store, pools, node, pod, calico_conf):
    p = pod()
    env = pod_env(p)
    conf = calico_conf(ipam=STACKS[stack])
    result = ok(run_calico(node, "ADD", conf, env))
    cid = env["CNI_CONTAINERID"]
    host = host_veth_name("net1", cid, "eth0")
    want4 = stack in ("ipv4", "dual")
    want6 = stack in ("ipv6", "dual")

    # Result layout: host veth first, container second, every address /32 or /128 on it, no gateway
    # (the container routes via 169.254.1.1 and the host end's link-local, not via a pool address).
    assert [i["name"] for i in result["interfaces"]] == [host, "eth0"]
    assert result["interfaces"][0] == {"name": host, "mac": HOST_MAC}
    assert result["interfaces"][1]["sandbox"] == f"{netns.NETNS_DIR}/{p}"
    assert all("mtu" not in i for i in result["interfaces"]), "mtu exists only in 1.1.0 results"
    ips = result["ips"]
    assert [ipaddress.ip_interface(i["address"]).version for i in ips] == [4] * want4 + [6] * want6
    for entry in ips:
        assert entry["interface"] == 1 and "gateway" not in entry and "version" not in entry
        iface = ipaddress.ip_interface(entry["address"])
        assert iface.network.prefixlen == iface.max_prefixlen
        assert iface.ip in ipaddress.ip_network(V4_POOL if iface.version == 4 else V6_POOL)
    v4 = [i["address"] for i in ips if ":" not in i["address"]]
    v6 = [i["address"] for i in ips if ":" in i["address"]]

    # Host end: Calico's name (a hash of the attachment), the attachment in its alias (so DEL deletes
    # only its own links), fixed MAC, up, MTU of the uplink.
    hl = link(node.name, host)
    assert hl["ifalias"] == f"calico:net1/{cid}/eth0"
    assert hl["address"] == HOST_MAC
    assert "UP" in hl["flags"] and hl["mtu"] == 1500
    assert hl["linkinfo"]["info_kind"] == "veth"
    assert {a for a in addresses(node.name, host) if not a.startswith("fe80:")} == set(), "the host end carries no address"

    # Container end: CNI_IFNAME, up, same MTU, paired with the host end, holding exactly the addresses.
    cl = link(p, "eth0")
    assert "UP" in cl["flags"] and cl["mtu"] == 1500 and cl["linkinfo"]["info_kind"] == "veth"
    assert cl["address"] == result["interfaces"][1]["mac"]
    assert cl["link_index"] == hl["ifindex"]
    assert {a for a in addresses(p, "eth0") if not a.startswith("fe80:")} == set(v4 + v6)

    # Host sysctls: proxy ARP/NDP and forwarding, so the host end answers for the container's gateway.
    if want4:
        assert sysctl(node.name, f"net/ipv4/conf/{host}/proxy_arp") == "1"
        assert sysctl(node.name, f"net/ipv4/neigh/{host}/proxy_delay") == "0"
        assert sysctl(node.name, f"net/ipv4/conf/{host}/forwarding") == "1"
        assert sysctl(node.name, f"net/ipv4/conf/{host}/route_localnet") == "1"
    if want6:
        for key, value in (("disable_ipv6", "0"), ("accept_ra", "0"), ("accept_dad", "0"), ("proxy_ndp", "1"), ("forwarding", "1")):
            assert sysctl(node.name, f"net/ipv6/conf/{host}/{key}") == value, key
        for dev in ("all", "default", "lo", "eth0"):
            assert sysctl(p, f"net/ipv6/conf/{dev}/disable_ipv6") == "0", dev
        assert sysctl(p, "net/ipv6/conf/eth0/accept_dad") == "0"
        assert EUI64_LINK_LOCAL + "/64" in addresses(node.name, host)

    # Container routes: 169.254.1.1 link route and default via it; IPv6 default via the host's link-local.
    routes4 = {(r["dst"], r.get("gateway"), r["dev"], r.get("scope")) for r in ip_json(p, "-4", "route", "show")}
    if want4:
        assert routes4 == {("169.254.1.1", None, "eth0", "link"), ("default", "169.254.1.1", "eth0", None)}
    else:
        assert routes4 == set()
    defaults6 = [(r.get("gateway"), r["dev"]) for r in ip_json(p, "-6", "route", "show") if r["dst"] == "default"]
    assert defaults6 == ([(EUI64_LINK_LOCAL, "eth0")] if want6 else [])

    # Host routes: <ip>/32 and /128 dev <host veth>, nothing else new on the node.
    node4 = {(r["dst"], r["dev"], r.get("scope")) for r in node.routes(4) if r["dev"] == host}
    assert node4 == {(a.split("/")[0], host, "link") for a in v4}
    node6 = {(r["dst"], r["dev"]) for r in node.routes(6) if r["dev"] == host and not r["dst"].startswith("fe80")}
    assert node6 == {(a.split("/")[0], host) for a in v6}

    # The workload endpoint, exactly as Calico writes it.
    name = f"node1-cni-{cid.replace('-', '--')}-eth0"
    kv = store.client.get(keys.workload_endpoint("default", name))
    assert kv is not None, f"no endpoint {name}"
    doc = json.loads(kv.value)
    assert doc["kind"] == "WorkloadEndpoint" and doc["apiVersion"] == "projectcalico.org/v3"
    meta = doc["metadata"]
    assert meta["name"] == name and meta["namespace"] == "default" and meta["uid"] and meta["creationTimestamp"]
    assert meta["labels"] == {"projectcalico.org/namespace": "default", "projectcalico.org/orchestrator": "cni"}
    assert doc["spec"] == {
        "orchestrator": "cni",
        "node": "node1",
        "containerID": cid,
        "endpoint": "eth0",
        "ipNetworks": v4 + v6,
        "profiles": ["net1"],
        "interfaceName": host,
        "mac": cl["address"],
    }


def test_result_versions(store, pools, node, pod, calico_conf):
    """1.1.0 results carry the MTU on interfaces; 0.3.1 results carry "version" on ips."""
    p1, p2 = pod(), pod()
    new = ok(run_calico(node, "ADD", calico_conf(cni_version="1.1.0", mtu=1400), pod_env(p1)))
    assert new["cniVersion"] == "1.1.0"
    assert [i["mtu"] for i in new["interfaces"]] == [1400, 1400]
    old = ok(run_calico(node, "ADD", calico_conf(cni_version="0.3.1"), pod_env(p2)))
    assert old["cniVersion"] == "0.3.1"
    assert [i["version"] for i in old["ips"]] == ["4"]
    assert all("mtu" not in i for i in old["interfaces"])


def test_container_ifname_may_equal_a_node_interface(store, pools, node, pod, calico_conf):
    """The container end is created inside the container, so naming it like one of the
    node's own interfaces (here the node's uplink) collides with nothing."""
    p = pod()
    result = ok(run_calico(node, "ADD", calico_conf(), pod_env(p, ifname="uplink")))
    assert result["interfaces"][1]["name"] == "uplink"
    assert "UP" in link(p, "uplink")["flags"]
    assert link(node.name, "uplink")["linkinfo"]["info_kind"] == "veth"  # the node's own, untouched
    assert [r for r in node.routes(4) if r["dst"] == "default"][0]["dev"] == "uplink"


def test_mtu_sources(store, pools, nodes, calico_conf, tmp_path):
    """The MTU's sources in order: the mtu key, else the MTU file, else the default route's device, else 1500."""
    from tests.calico_support import make_pod

    n = nodes(uplink_mtu=1420)
    mtu_file = tmp_path / "mtu"

    def mtu_of(conf, **env):
        p = make_pod(n)
        result = ok(run_calico(n, "ADD", conf, pod_env(p, **env)))
        return link(p, "eth0")["mtu"], link(n.name, result["interfaces"][0]["name"])["mtu"]

    assert mtu_of(calico_conf()) == (1420, 1420), "the default route's device"
    mtu_file.write_text("1380\n")
    assert mtu_of(calico_conf(), CALICO_MTU_FILE=str(mtu_file)) == (1380, 1380), "the MTU file"
    assert mtu_of(calico_conf(mtu=1300), CALICO_MTU_FILE=str(mtu_file)) == (1300, 1300), "the mtu key"
    assert mtu_of(calico_conf(mtu_file=str(mtu_file)), CALICO_MTU_FILE=str(tmp_path / "absent")) == (1380, 1380), "mtu_file over the environment"
    netns.ip("-n", n.name, "route", "del", "default")
    assert mtu_of(calico_conf()) == (1500, 1500), "no default route: 1500"

    mtu_file.write_text("jumbo")
    p = make_pod(n)
    env = pod_env(p, CALICO_MTU_FILE=str(mtu_file))
    bad = run_calico(n, "ADD", calico_conf(), env)
    assert bad.rc != 0 and bad.out["code"] == 7 and str(mtu_file) in bad.out["msg"]
    assert [l for l in ip_json(p, "link", "show") if l["ifname"] != "lo"] == [], "no interface before the MTU is decided"
    assert store.handle(f"net1.{env['CNI_CONTAINERID']}") is None, "no address before the MTU is decided"


def test_allow_ip_forwarding(store, pools, node, pod, calico_conf):
    p1, p2 = pod(), pod()
    ok(run_calico(node, "ADD", calico_conf(ipam=STACKS["dual"]), pod_env(p1)))
    assert sysctl(p1, "net/ipv4/ip_forward") == "0"
    conf = calico_conf(ipam=STACKS["dual"], container_settings={"allow_ip_forwarding": True})
    ok(run_calico(node, "ADD", conf, pod_env(p2)))
    assert sysctl(p2, "net/ipv4/ip_forward") == "1"
    assert sysctl(p2, "net/ipv6/conf/all/forwarding") == "1"


def test_kubernetes_names(store, pools, node, pod, calico_conf):
    """K8S_POD_NAMESPACE and K8S_POD_NAME give Calico's k8s endpoint and veth names."""
    p = pod()
    env = pod_env(p, CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=web-apps;K8S_POD_NAME=front-end-7f9;K8S_POD_UID=abc")
    result = ok(run_calico(node, "ADD", calico_conf(node="node-a"), env))
    host = "cali" + hashlib.sha1(b"web-apps.front-end-7f9").hexdigest()[:11]
    assert result["interfaces"][0]["name"] == host
    assert link(node.name, host)["ifalias"] == f"calico:net1/{env['CNI_CONTAINERID']}/eth0"
    endpoint = store.workload_endpoint("web-apps", "node--a-k8s-front--end--7f9-eth0")
    assert endpoint is not None
    assert endpoint.doc["metadata"]["labels"] == {"projectcalico.org/namespace": "web-apps", "projectcalico.org/orchestrator": "k8s"}
    assert endpoint.spec["orchestrator"] == "k8s" and endpoint.spec["pod"] == "front-end-7f9"
    # The network's profile, as Calico's plugin names it without policy.type k8s (issue 15 item 2;
    # kns.web-apps before, a profile nobody created); tests/namespaces/test_profiles.py has the rest.
    assert endpoint.spec["profiles"] == ["net1"]
    # The allocation records the pod, so an operator (and calicoctl ipam check) can tell whose it is.
    attrs = [a for b in store.all_blocks() for a in b.attributes if a.get("handle_id") == f"net1.{env['CNI_CONTAINERID']}"]
    assert attrs and attrs[0]["secondary"]["pod"] == "front-end-7f9" and attrs[0]["secondary"]["namespace"] == "web-apps"


def test_node_name_from_nodename_file(store, pools, node, pod, calico_conf, tmp_path):
    """The node's name: without `nodename`, the contents of `nodename_file`; a missing file is an error
    before anything is created (unless nodename_file_optional)."""
    name_file = tmp_path / "nodename"
    name_file.write_text("worker-7\n")
    conf = calico_conf()
    del conf["nodename"]
    p = pod()
    env = pod_env(p)
    ok(run_calico(node, "ADD", {**conf, "nodename_file": str(name_file)}, env))
    endpoints = store.workload_endpoints()
    assert [(e.name, e.node) for e in endpoints] == [(f"worker--7-cni-{env['CNI_CONTAINERID'].replace('-', '--')}-eth0", "worker-7")]

    p2 = pod()
    run = run_calico(node, "ADD", {**conf, "nodename_file": str(tmp_path / "missing")}, pod_env(p2))
    assert run.rc != 0 and run.out["code"] == 7 and "missing" in run.out["msg"]
    assert ip_json(p2, "link", "show")[1:] == []
    assert len(store.workload_endpoints()) == 1 and len(store.handles()) == 1
