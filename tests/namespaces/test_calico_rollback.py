"""A `calico` ADD that fails after IPAM leaves nothing behind: no link, no route, no endpoint, no
allocation of its own, and it never touches what belongs to someone else."""

from __future__ import annotations

import json
import threading

import pytest

from calico_cni.protocol.errors import TRY_AGAIN_LATER, CniError
from calico_cni.protocol.request import parse_request
from tests import netns
from tests.calico_support import (
    assert_datastore_clean,
    assert_node_clean,
    held_addresses,
    ok,
    pod_env,
    pod_links,
    run_calico,
)
from tests.pools import pools_fixture

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)


pools = pools_fixture(("v4", "198.18.3.0/24", 26), ("v6", "fd00:198:18:3::/112", 122))


def blocker(node, *routes: str) -> None:
    """Another interface on the node that already routes these addresses."""
    netns.ip("-n", node.name, "link", "add", "blk0", "type", "veth", "peer", "name", "blk1")
    netns.ip("-n", node.name, "link", "set", "blk0", "up")
    for route in routes:
        netns.ip("-n", node.name, "-6" if ":" in route else "-4", "route", "add", route, "dev", "blk0")


def routes_via(node, dev: str) -> set[str]:
    return {r["dst"] for v in (4, 6) for r in node.routes(v) if r["dev"] == dev}


def test_conflicting_host_route_is_refused_and_rolled_back(store, pools, node, pod, calico_conf):
    blocker(node, "198.18.3.10/32")
    p = pod()
    run = run_calico(node, "ADD", calico_conf(), pod_env(p, CNI_ARGS="IP=198.18.3.10"))
    assert run.rc != 0
    assert "the node already has a route to 198.18.3.10/32 via dev blk0" in run.out["msg"], run.out
    assert routes_via(node, "blk0") == {"198.18.3.10"}, "the other interface's route is never stolen"
    assert pod_links(p) == []
    assert node.cali_links() == []
    assert_datastore_clean(store)


@pytest.mark.parametrize("protocol", ["bird", "80"])
def test_a_stale_route_of_the_node_daemon_does_not_refuse_the_add(store, pools, node, pod, calico_conf, protocol):
    """A borrowed /32 (/128) learned from a peer (`proto bird`), or one calico-node programmed
    (protocol 80), that has not been withdrawn yet: the ADD that reuses the address here takes its
    place instead of failing, and the pod's route is the plugin's."""
    netns.ip("-n", node.name, "link", "add", "blk0", "type", "veth", "peer", "name", "blk1")
    netns.ip("-n", node.name, "link", "set", "blk0", "up")
    for route in ("198.18.3.12/32", "fd00:198:18:3::12/128"):
        netns.ip("-n", node.name, "-6" if ":" in route else "-4", "route", "add", route, "dev", "blk0", "proto", protocol)
    p = pod()
    run = run_calico(node, "ADD", calico_conf(ipam={"assign_ipv6": "true"}), pod_env(p, CNI_ARGS="IP=198.18.3.12,fd00:198:18:3::12"))
    assert run.rc == 0, run.out
    assert routes_via(node, "blk0") == set(), "the daemon's stale routes were replaced"
    host = run.out["interfaces"][0]["name"]
    assert {"198.18.3.12", "fd00:198:18:3::12"} <= routes_via(node, host)
    mine = [r for v in (4, 6) for r in node.routes(v) if r["dst"] in ("198.18.3.12", "fd00:198:18:3::12")]
    assert len(mine) == 2 and {r.get("protocol") for r in mine} == {None}, mine  # `ip -j` leaves out proto boot, the plugin's


def test_ipv6_failure_rolls_back_ipv4_too(store, pools, node, pod, calico_conf):
    """Dual stack: the IPv6 host route conflicts after the IPv4 part was set up; both go."""
    blocker(node, "fd00:198:18:3::10/128")
    p = pod()
    conf = calico_conf(ipam={"assign_ipv6": "true"})
    run = run_calico(node, "ADD", conf, pod_env(p, CNI_ARGS="IP=198.18.3.11,fd00:198:18:3::10"))
    assert run.rc != 0 and "fd00:198:18:3::10/128" in run.out["msg"]
    assert routes_via(node, "blk0") == {"fd00:198:18:3::10"}
    assert pod_links(p) == []
    assert node.cali_links() == []
    pod_routes = [r for v in (4, 6) for r in node.routes(v) if r["dst"].startswith(("198.18.", "fd00:198:18:")) and r["dev"] != "blk0"]
    assert pod_routes == []
    assert_datastore_clean(store)


def test_foreign_host_link_is_left_alone(store, pools, node, pod, calico_conf):
    """A host link with the wanted name that belongs to another attachment: ADD fails after IPAM,
    releases its address, and the link is untouched."""
    from calico_cni.workload import Identity

    p = pod()
    env = pod_env(p)
    name = Identity("net1", env["CNI_CONTAINERID"], "eth0", "node1").host_veth
    netns.ip("-n", node.name, "link", "add", name, "type", "veth", "peer", "name", "peer0")
    netns.ip("-n", node.name, "link", "set", name, "alias", "calico:othernet/other-container/eth0")
    run = run_calico(node, "ADD", calico_conf(), env)
    assert run.rc != 0 and f"host interface {name} already exists" in run.out["msg"]
    assert [(l["ifname"], l.get("ifalias")) for l in node.cali_links()] == [(name, "calico:othernet/other-container/eth0")]
    assert pod_links(p) == []
    assert_datastore_clean(store)


def test_leftover_host_link_of_the_same_attachment_is_replaced(store, pools, node, pod, calico_conf):
    """A stale host veth carrying this very attachment's alias (a crashed earlier ADD) is removed."""
    from calico_cni.workload import Identity

    p = pod()
    env = pod_env(p)
    ident = Identity("net1", env["CNI_CONTAINERID"], "eth0", "node1")
    netns.ip("-n", node.name, "link", "add", ident.host_veth, "type", "veth", "peer", "name", "peer0")
    netns.ip("-n", node.name, "link", "set", ident.host_veth, "alias", ident.alias)
    result = ok(run_calico(node, "ADD", calico_conf(), env))
    assert result["interfaces"][0]["name"] == ident.host_veth
    assert "peer0" not in [l["ifname"] for l in node.links()]
    ok(run_calico(node, "CHECK", {**calico_conf(), "prevResult": result}, env))


def test_failed_retry_keeps_the_earlier_adds_addresses(store, pools, node, pod, calico_conf):
    """A failing ADD releases only what it allocated itself, never what an earlier ADD of
    the same attachment holds."""
    conf = calico_conf()
    p = pod()
    env = pod_env(p, CNI_ARGS="IP=198.18.3.20")
    ok(run_calico(node, "ADD", conf, env))
    netns.ip("-n", p, "link", "del", "eth0")  # the interface is lost; the endpoint and address remain
    blocker(node)
    netns.ip("-n", node.name, "route", "add", "198.18.3.20/32", "dev", "blk0")
    run = run_calico(node, "ADD", conf, env)
    assert run.rc != 0 and "198.18.3.20/32" in run.out["msg"]
    assert held_addresses(store) == {f"net1.{env['CNI_CONTAINERID']}": ["198.18.3.20"]}
    assert pod_links(p) == [] and node.cali_links() == []
    # Once the conflict is gone, the retry succeeds with the same address.
    netns.ip("-n", node.name, "route", "del", "198.18.3.20/32")
    result = ok(run_calico(node, "ADD", conf, env))
    assert [i["address"] for i in result["ips"]] == ["198.18.3.20/32"]


def test_endpoint_write_failure_rolls_back_everything(store, pools, node, pod, calico_conf, monkeypatch):
    """The last step (the endpoint write) fails: links, routes and the allocation are removed.

    Runs ADD in this process, on a thread inside the node's namespace, with the endpoint write
    made to fail.
    """
    import calico_cni.plugins.calico as plugin
    from calico_cni.plugins.services import Services

    def failing_write(*args, **kwargs):
        raise CniError(TRY_AGAIN_LATER, "injected: endpoint write failed")

    monkeypatch.setattr(plugin, "_write_endpoint", failing_write)
    p = pod()
    conf = calico_conf(ipam={"assign_ipv6": "true"})
    env = {"CNI_COMMAND": "ADD", **pod_env(p)}
    request = parse_request("ADD", env, json.dumps(conf).encode())
    outcome: dict = {}

    def in_node() -> None:
        fd = netns.enter(node.name)
        try:
            outcome["result"] = plugin.add(request, Services.in_process())
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc
        finally:
            netns.leave(fd)

    thread = threading.Thread(target=in_node)
    thread.start()
    thread.join(60)
    assert isinstance(outcome.get("error"), CniError) and "injected" in outcome["error"].msg, outcome
    assert pod_links(p) == []
    assert_node_clean(node)
    assert_datastore_clean(store)
