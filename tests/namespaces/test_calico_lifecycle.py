"""ADD, DEL and CHECK of `calico` over an attachment's life: a repeated ADD (runtimes retry) that
changes nothing, DEL in every situation the spec names, old sandboxes whose late DEL must not touch
the new one, several interfaces of one container (each is its own attachment), and a CHECK that
names what is wrong."""

from __future__ import annotations

import pytest

from tests import netns
from tests.calico_support import (
    assert_datastore_clean,
    assert_node_clean,
    held_addresses,
    ip_json,
    ok,
    pod_env,
    pod_links,
    run_calico,
)
from tests.clients.harness import wait_until
from tests.pools import pools_fixture

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

DUAL = {"assign_ipv6": "true"}


pools = pools_fixture(("v4", "198.18.10.0/24", 26), ("v6", "fd00:198:18:10::/112", 122))


def with_prev(conf: dict, result: dict) -> dict:
    return {**conf, "prevResult": result}


def host_link(node, name: str) -> dict | None:
    return next((l for l in node.links() if l["ifname"] == name), None)


# ------------------------------------------------------------------------------------------------
# DEL


def test_del_leaves_nothing(store, pools, node, pod, calico_conf):
    conf = calico_conf(ipam=DUAL)
    a, b = pod(), pod()
    ra = ok(run_calico(node, "ADD", conf, pod_env(a)))
    rb = ok(run_calico(node, "ADD", conf, pod_env(b)))
    ok(run_calico(node, "DEL", with_prev(conf, ra), pod_env(a)))

    # a is gone entirely, b is untouched.
    assert pod_links(a) == []
    assert [l["ifname"] for l in node.cali_links()] == [rb["interfaces"][0]["name"]]
    b_addresses = {i["address"].split("/")[0] for i in rb["ips"]}
    routed = {r["dst"] for v in (4, 6) for r in node.routes(v) if r["dst"].startswith(("198.18.", "fd00:198:18:"))}
    assert routed == b_addresses
    assert [e.container_id for e in store.workload_endpoints()] == [pod_env(b)["CNI_CONTAINERID"]]
    assert set(held_addresses(store)) == {f"net1.{pod_env(b)['CNI_CONTAINERID']}"}

    ok(run_calico(node, "DEL", with_prev(conf, rb), pod_env(b)))
    assert pod_links(b) == []
    assert_node_clean(node)
    assert_datastore_clean(store)
    # Repeated DEL succeeds and changes nothing.
    ok(run_calico(node, "DEL", conf, pod_env(b)))
    ok(run_calico(node, "DEL", with_prev(conf, rb), pod_env(b)))
    assert_datastore_clean(store)


def test_del_with_empty_netns_cleans_from_stored_state(store, pools, node, pod, calico_conf):
    """containerd sends DEL with CNI_NETNS empty: the host veth is found by its alias."""
    conf = calico_conf(ipam=DUAL)
    p = pod()
    ok(run_calico(node, "ADD", conf, pod_env(p)))
    ok(run_calico(node, "DEL", conf, pod_env(p, CNI_NETNS="")))
    assert pod_links(p) == [], "deleting the host end takes the container end with it"
    assert_node_clean(node)
    assert_datastore_clean(store)


def test_del_after_netns_is_gone(store, pools, node, pod, calico_conf):
    conf = calico_conf(ipam=DUAL)
    p = pod()
    env = pod_env(p)
    ok(run_calico(node, "ADD", conf, env))
    netns.delete(p)
    ok(run_calico(node, "DEL", conf, env))
    assert_node_clean(node)
    assert_datastore_clean(store)
    ok(run_calico(node, "DEL", conf, env))


def test_del_when_add_never_happened(store, pools, node, pod, calico_conf):
    p = pod()
    ok(run_calico(node, "DEL", calico_conf(), pod_env(p)))
    ok(run_calico(node, "DEL", calico_conf(), pod_env(p, CNI_NETNS="")))
    ok(run_calico(node, "DEL", calico_conf(), pod_env(p, CNI_NETNS="/var/run/netns/calico-test-never-there")))
    assert_datastore_clean(store)


# ------------------------------------------------------------------------------------------------
# ADD


def test_repeated_add_returns_the_existing_result(store, pools, node, pod, calico_conf):
    """A repeated ADD (runtimes retry): same result, no second address, nothing changed."""
    conf = calico_conf(ipam=DUAL)
    p = pod()
    env = pod_env(p)
    first = ok(run_calico(node, "ADD", conf, env))
    links_before = {l["ifname"]: l["ifindex"] for l in node.links()}
    pod_before = ip_json(p, "addr", "show")
    endpoint_before = store.workload_endpoints()[0]
    held_before = held_addresses(store)

    again = ok(run_calico(node, "ADD", conf, env))
    assert again == first
    assert {l["ifname"]: l["ifindex"] for l in node.links()} == links_before
    assert ip_json(p, "addr", "show") == pod_before
    endpoint = store.workload_endpoints()[0]
    assert endpoint.revision == endpoint_before.revision
    assert held_addresses(store) == held_before and sum(map(len, held_before.values())) == 2


def test_add_fails_when_the_interface_exists(store, pools, node, pod, calico_conf):
    """An ADD whose CNI_IFNAME exists for another attachment fails and takes nothing."""
    p = pod()
    netns.ip("-n", p, "link", "add", "eth0", "type", "veth", "peer", "name", "other")
    run = run_calico(node, "ADD", calico_conf(), pod_env(p))
    assert run.rc != 0
    assert "eth0 already exists" in run.out["msg"]
    assert sorted(pod_links(p)) == ["eth0", "other"]
    assert_node_clean(node)
    assert_datastore_clean(store)
    # Runtimes clean up a failed ADD with DEL: it must not delete the interface it does not own.
    ok(run_calico(node, "DEL", calico_conf(), pod_env(p)))
    assert sorted(pod_links(p)) == ["eth0", "other"]


def test_two_interfaces_of_one_container(store, pools, node, pod, calico_conf):
    """(network, container, ifname) is the attachment; eth1 of the same container is another."""
    conf = calico_conf()
    p = pod()
    r0 = ok(run_calico(node, "ADD", conf, pod_env(p, container_id="ctr-multi")))
    r1 = ok(run_calico(node, "ADD", conf, pod_env(p, container_id="ctr-multi", ifname="eth1")))
    assert r0["interfaces"][0]["name"] != r1["interfaces"][0]["name"]
    assert r0["ips"] != r1["ips"]
    assert sorted(pod_links(p)) == ["eth0", "eth1"]
    assert sorted(e.name for e in store.workload_endpoints()) == ["node1-cni-ctr--multi-eth0", "node1-cni-ctr--multi-eth1"]
    # eth0 keeps the preferred default route; eth1 has its own, with a higher metric.
    defaults = {r["dev"]: r.get("metric", 0) for r in ip_json(p, "-4", "route", "show", "default")}
    assert set(defaults) == {"eth0", "eth1"} and defaults["eth0"] < defaults["eth1"]
    ok(run_calico(node, "CHECK", with_prev(conf, r1), pod_env(p, container_id="ctr-multi", ifname="eth1")))

    ok(run_calico(node, "DEL", conf, pod_env(p, container_id="ctr-multi", ifname="eth1")))
    assert pod_links(p) == ["eth0"]
    assert [e.name for e in store.workload_endpoints()] == ["node1-cni-ctr--multi-eth0"]
    assert list(held_addresses(store).values()) == [[r0["ips"][0]["address"].split("/")[0]]]
    ok(run_calico(node, "CHECK", with_prev(conf, r0), pod_env(p, container_id="ctr-multi")))


K8S = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-0"


def test_late_del_of_an_old_sandbox_spares_the_new_one(store, pools, node, pod, calico_conf):
    """A pod's sandbox is replaced; the old sandbox's late DEL removes nothing of the new one (its
    records are told apart by container ID)."""
    conf = calico_conf()
    old, new = pod(), pod()
    old_env = pod_env(old, container_id="sandbox-old", CNI_ARGS=K8S)
    new_env = pod_env(new, container_id="sandbox-new", CNI_ARGS=K8S)
    old_veth = ok(run_calico(node, "ADD", conf, old_env))["interfaces"][0]["name"]
    netns.delete(old)  # the old sandbox died; its veth pair goes with it
    # The kernel removes the dead namespace's devices asynchronously: an ADD through the agent can
    # come before that (and is refused: the link's alias still names the old sandbox's attachment).
    wait_until(lambda: host_link(node, old_veth) is None, "the kernel to remove the old sandbox's veth")
    added = ok(run_calico(node, "ADD", conf, new_env))
    veth = added["interfaces"][0]["name"]

    for netns_value in (old_env["CNI_NETNS"], ""):
        ok(run_calico(node, "DEL", conf, {**old_env, "CNI_NETNS": netns_value}))
        endpoint = store.workload_endpoint("shop", "node1-k8s-cart--0-eth0")
        assert endpoint is not None and endpoint.container_id == "sandbox-new"
        assert host_link(node, veth) is not None, "the new sandbox's veth must survive"
        assert set(held_addresses(store)) == {"net1.sandbox-new"}
    ok(run_calico(node, "CHECK", with_prev(conf, added), new_env))

    ok(run_calico(node, "DEL", conf, new_env))
    assert_node_clean(node)
    assert_datastore_clean(store)


def test_host_veth_of_another_attachment_is_never_taken(store, pools, node, pod, calico_conf):
    """While the old sandbox still lives, its veth (same pod, same name; its alias names the old
    attachment) is not deleted:
    the new sandbox's ADD fails, saying whose link it is, and allocates nothing."""
    conf = calico_conf()
    old, new = pod(), pod()
    old_env = pod_env(old, container_id="sandbox-old", CNI_ARGS=K8S)
    first = ok(run_calico(node, "ADD", conf, old_env))
    veth = first["interfaces"][0]["name"]
    run = run_calico(node, "ADD", conf, pod_env(new, container_id="sandbox-new", CNI_ARGS=K8S))
    assert run.rc != 0
    assert f"host interface {veth} already exists" in run.out["msg"]
    assert "calico:net1/sandbox-old/eth0" in run.out.get("details", "")
    assert host_link(node, veth)["ifalias"] == "calico:net1/sandbox-old/eth0"
    assert pod_links(new) == []
    assert set(held_addresses(store)) == {"net1.sandbox-old"}
    ok(run_calico(node, "CHECK", with_prev(conf, first), old_env))


# ------------------------------------------------------------------------------------------------
# CHECK


def test_check_passes_after_add(store, pools, node, pod, calico_conf):
    for version in ("0.4.0", "1.0.0"):
        conf = calico_conf(cni_version=version, ipam=DUAL)
        p = pod()
        result = ok(run_calico(node, "ADD", conf, pod_env(p)))
        run = run_calico(node, "CHECK", with_prev(conf, result), pod_env(p))
        assert run.rc == 0 and run.stdout == "", run.stdout + run.stderr


def _first(result: dict, version: int) -> str:
    return next(i["address"] for i in result["ips"] if (":" in i["address"]) == (version == 6))


BREAKAGES = {
    # name: (how to break it, what the CHECK error must say)
    "container default route": (
        lambda n, p, r: netns.ip("-n", p, "route", "del", "default"),
        lambda r: "route 0.0.0.0/0 via 169.254.1.1 dev eth0 is missing",
    ),
    "container IPv6 default route": (
        lambda n, p, r: netns.ip("-n", p, "-6", "route", "del", "default"),
        lambda r: "route ::/0 via",
    ),
    "container gateway route": (
        lambda n, p, r: netns.ip("-n", p, "route", "del", "169.254.1.1"),
        lambda r: "route 169.254.1.1 dev eth0 is missing",
    ),
    "container address": (
        lambda n, p, r: netns.ip("-n", p, "addr", "del", _first(r, 4), "dev", "eth0"),
        lambda r: f"address {_first(r, 4)} is missing from eth0",
    ),
    "container IPv6 address": (
        lambda n, p, r: netns.ip("-n", p, "addr", "del", _first(r, 6), "dev", "eth0"),
        lambda r: f"address {_first(r, 6)} is missing from eth0",
    ),
    "host route": (
        lambda n, p, r: netns.ip("-n", n.name, "route", "del", _first(r, 4).split("/")[0]),
        lambda r: f"the node has no route {_first(r, 4)} dev {r['interfaces'][0]['name']}",
    ),
    "host veth down": (
        lambda n, p, r: netns.ip("-n", n.name, "link", "set", r["interfaces"][0]["name"], "down"),
        lambda r: f"host interface {r['interfaces'][0]['name']} is down",
    ),
    "container interface": (
        lambda n, p, r: netns.ip("-n", p, "link", "del", "eth0"),
        lambda r: "interface eth0 does not exist",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_check_names_what_was_removed_by_hand(breakage, store, pools, node, pod, calico_conf):
    conf = calico_conf(ipam=DUAL)
    p = pod()
    result = ok(run_calico(node, "ADD", conf, pod_env(p)))
    ok(run_calico(node, "CHECK", with_prev(conf, result), pod_env(p)))
    breaker, expected = BREAKAGES[breakage]
    breaker(node, p, result)
    run = run_calico(node, "CHECK", with_prev(conf, result), pod_env(p))
    assert run.rc != 0 and run.out["code"] == 103, run.stdout
    assert expected(result) in run.out["msg"], run.out["msg"]


def test_check_names_datastore_discrepancies(store, pools, node, pod, calico_conf):
    conf = calico_conf()
    p = pod()
    env = pod_env(p)
    result = ok(run_calico(node, "ADD", conf, env))
    address = _first(result, 4).split("/")[0]
    endpoint = store.workload_endpoints()[0]

    # The endpoint is gone.
    assert store.commit(deletes=[endpoint])
    run = run_calico(node, "CHECK", with_prev(conf, result), env)
    assert run.rc != 0 and f"workload endpoint default/{endpoint.name} does not exist" in run.out["msg"]

    # IPAM no longer holds the address (released behind the plugin's back).
    from calico_ipam import allocator

    allocator.release(store, f"net1.{env['CNI_CONTAINERID']}", None)
    run = run_calico(node, "CHECK", with_prev(conf, result), env)
    assert run.rc != 0 and f"{address} is in prevResult but not allocated" in run.out["msg"], run.out["msg"]
    # Both discrepancies are named in one answer.
    assert "does not exist" in run.out["msg"]


def test_check_against_a_different_prev_result(store, pools, node, pod, calico_conf):
    """CHECK compares with prevResult: an address the container does not have is named."""
    conf = calico_conf()
    p = pod()
    result = ok(run_calico(node, "ADD", conf, pod_env(p)))
    forged = {**result, "ips": [{"interface": 1, "address": "198.18.10.250/32"}]}
    run = run_calico(node, "CHECK", with_prev(conf, forged), pod_env(p))
    assert run.rc != 0
    assert "address 198.18.10.250/32 is missing from eth0" in run.out["msg"]
    assert "ipNetworks" in run.out["msg"]


def test_del_removes_a_pair_whose_alias_was_never_set(store, pools, node, pod, calico_conf):
    """An ADD killed between creating the pair and setting the alias: DEL with the netns finds the
    pair from the container side (its peer has this attachment's name and no alias)."""
    conf = calico_conf()
    p = pod()
    result = ok(run_calico(node, "ADD", conf, pod_env(p)))
    veth = result["interfaces"][0]["name"]
    netns.ip("-n", node.name, "link", "set", "dev", veth, "alias", "")
    assert not host_link(node, veth).get("ifalias")
    ok(run_calico(node, "DEL", conf, pod_env(p)))
    assert pod_links(p) == []
    assert_node_clean(node)
    assert_datastore_clean(store)


def test_netns_that_is_a_fifo_is_refused_without_hanging(store, pools, node, calico_conf, tmp_path):
    """Opening a FIFO blocks until a writer appears: CNI_NETNS is checked before it is opened."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    env = pod_env("none", CNI_NETNS=str(fifo))
    run = run_calico(node, "ADD", calico_conf(), env, timeout=20)
    assert run.rc != 0 and run.out["code"] == 4 and "is not a network namespace" in run.out["msg"]
    ok(run_calico(node, "DEL", calico_conf(), env, timeout=20))
    assert_datastore_clean(store)


def test_concurrent_adds_and_dels_on_one_node(store, pools, node, pod, calico_conf):
    """Ten pods wired at once, then removed at once: distinct addresses, every pod works, nothing left."""
    from concurrent.futures import ThreadPoolExecutor

    conf = calico_conf(ipam=DUAL)
    pods = [pod() for _ in range(10)]
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda p: run_calico(node, "ADD", conf, pod_env(p)), pods))
    for run in results:
        ok(run)
    addresses = [i["address"] for run in results for i in run.out["ips"]]
    assert len(addresses) == len(set(addresses)) == 20
    assert len(node.cali_links()) == 10
    with ThreadPoolExecutor(10) as pool:
        checks = list(pool.map(lambda pr: run_calico(node, "CHECK", with_prev(conf, pr[1].out), pod_env(pr[0])), zip(pods, results)))
    for run in checks:
        ok(run)
    with ThreadPoolExecutor(10) as pool:
        for run in pool.map(lambda p: run_calico(node, "DEL", conf, pod_env(p)), pods):
            ok(run)
    assert_node_clean(node)
    assert_datastore_clean(store)
