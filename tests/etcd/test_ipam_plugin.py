"""The installed calico-ipam executable, run as a runtime runs it (env + stdin), against real etcd."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from calico_cni.config import EtcdSettings
from calico_cni.datastore.etcd import EtcdClient
from calico_cni.datastore.store import Datastore
from calico_ipam import allocator
from calico_ipam.allocator import Attachment, FamilyRequest
from tests.conftest import cni_env, run_plugin
from tests.pools import create_pool

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)


def add(conf, cid="c1", ifname="eth0", **env):
    return run_plugin("calico-ipam", "ADD", conf, cni_env(cid, ifname, **env))


def delete(conf, cid="c1", ifname="eth0", **env):
    return run_plugin("calico-ipam", "DEL", conf, cni_env(cid, ifname, **env))


def check(conf, prev, cid="c1", ifname="eth0"):
    return run_plugin("calico-ipam", "CHECK", {**conf, "prevResult": prev}, cni_env(cid, ifname))


def ok(run):
    assert run.rc == 0, f"exit {run.rc}: {run.stdout} {run.stderr}"
    assert "Traceback" not in run.stdout + run.stderr
    return run.out


def failed(run, code=None):
    assert run.rc != 0, run.stdout
    assert run.out is not None and set(run.out) >= {"cniVersion", "code", "msg"}, run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    if code is not None:
        assert run.out["code"] == code, run.out
    return run.out


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_result_shape_per_version(store, ipam_conf, version):
    create_pool(store, "p1", "198.18.0.0/24")
    out = ok(add(ipam_conf(version)))
    assert out["cniVersion"] == version
    (ip,) = out["ips"]
    assert ipaddress.ip_interface(ip["address"]).network.prefixlen == 26
    if version.startswith("0."):
        assert ip["version"] == "4"
    else:
        assert "version" not in ip
    assert "interfaces" not in out and "interface" not in ip


def test_add_dual_stack_and_repeat(store, ipam_conf):
    create_pool(store, "p4", "198.18.0.0/24")
    create_pool(store, "p6", "fd00:198:18::/64")
    conf = ipam_conf(assign_ipv6="true")
    first = ok(add(conf))
    assert [ipaddress.ip_interface(i["address"]).version for i in first["ips"]] == [4, 6]
    assert ok(add(conf)) == first  # a repeated ADD returns what the attachment holds
    assert store.handle("net1.c1").total == 2


def test_ipv6_only(store, ipam_conf):
    create_pool(store, "p6", "fd00:198:18::/64")
    out = ok(add(ipam_conf(assign_ipv4="false", assign_ipv6="true")))
    assert ipaddress.ip_interface(out["ips"][0]["address"]).version == 6


def test_del_releases_and_is_idempotent(store, ipam_conf):
    create_pool(store, "p1", "198.18.0.0/24")
    conf = ipam_conf()
    ok(add(conf))
    ok(delete(conf))
    assert store.handle("net1.c1") is None
    ok(delete(conf))
    ok(delete(conf, cid="never-added"))
    assert all(b.allocations == [None] * b.size for b in store.all_blocks(4))


def test_del_without_netns(store, ipam_conf):
    create_pool(store, "p1", "198.18.0.0/24")
    conf = ipam_conf()
    ok(add(conf))
    ok(delete(conf, CNI_NETNS=""))
    assert store.handle("net1.c1") is None


def test_del_releases_calico_legacy_handles(store, ipam_conf):
    create_pool(store, "p1", "198.18.0.0/24")
    allocator.assign(store, Attachment("c1", "node1", "eth0"), [FamilyRequest(4)])
    allocator.assign(store, Attachment("ns1.pod1", "node1", "eth0"), [FamilyRequest(4)])
    conf = ipam_conf()
    ok(delete(conf, cid="c1"))
    assert store.handle("c1") is None
    ok(delete(conf, cid="c2", CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1"))
    assert store.handle("ns1.pod1") is None


def test_kubernetes_attributes(store, ipam_conf):
    create_pool(store, "p1", "198.18.0.0/24")
    out = ok(add(ipam_conf(), CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_UID=x"))
    ip = ipaddress.ip_interface(out["ips"][0]["address"]).ip
    (cidr,) = store.handle("net1.c1").blocks
    block = store.block(cidr)
    secondary = block.attribute(block.ordinal(ip))["secondary"]
    assert secondary["namespace"] == "ns1" and secondary["pod"] == "web-0"
    assert secondary["ifname"] == "eth0" and secondary["node"] == "node1"
    assert secondary["network"] == "net1"


def test_check(store, ipam_conf):
    create_pool(store, "p1", "198.18.0.0/24")
    conf = ipam_conf("0.4.0")
    prev = ok(add(conf))
    assert ok(check(conf, prev)) is None
    wrong = {**prev, "ips": [{"version": "4", "address": "198.18.0.200/26"}]}
    out = failed(check(conf, wrong))
    assert "198.18.0.200 is in prevResult but not allocated to net1.c1 (eth0)" in out["msg"]
    assert f"holds {prev['ips'][0]['address'].split('/')[0]}, which is not in prevResult" in out["msg"]
    ok(delete(conf))
    assert "not allocated" in failed(check(conf, prev))["msg"]


def test_check_needs_040(store, ipam_conf):
    out = failed(check(ipam_conf("0.3.1"), {"ips": []}), code=1)
    assert "CHECK" in out["msg"]


def test_specific_address_from_cni_args(store, ipam_conf):
    create_pool(store, "p1", "198.18.0.0/24")
    conf = ipam_conf()
    out = ok(add(conf, CNI_ARGS="IP=198.18.0.42"))
    assert out["ips"][0]["address"] == "198.18.0.42/26"
    taken = failed(add(conf, cid="c2", CNI_ARGS="IP=198.18.0.42"))
    assert taken["msg"] == "Address already assigned in block" and "net1.c1" in taken["details"]
    outside = failed(add(conf, cid="c3", CNI_ARGS="IP=198.18.7.1"))
    assert outside["msg"] == "The provided IP address is not in a configured pool"
    bad = failed(add(conf, cid="c4", CNI_ARGS="IP=not-an-ip"), code=4)
    assert "not-an-ip" in bad["msg"]


def test_specific_addresses_from_runtime_config(store, ipam_conf):
    create_pool(store, "p4", "198.18.0.0/24")
    create_pool(store, "p6", "fd00:198:18::/64")
    conf = {**ipam_conf(), "runtimeConfig": {"ips": ["198.18.0.9/24", "fd00:198:18::9"]}}
    out = ok(add(conf))
    assert [i["address"] for i in out["ips"]] == ["198.18.0.9/26", "fd00:198:18::9/122"]
    two = {**ipam_conf(), "runtimeConfig": {"ips": ["198.18.0.10", "198.18.0.11"]}}
    assert "one requested address per IP family" in failed(add(two, cid="c2"), code=7)["msg"]


def test_named_pool_in_config(store, ipam_conf):
    create_pool(store, "a", "198.18.0.0/24")
    create_pool(store, "b", "198.18.1.0/24")
    out = ok(add(ipam_conf(ipv4_pools=["b"])))
    assert ipaddress.ip_interface(out["ips"][0]["address"]) in ipaddress.ip_network("198.18.1.0/24")
    missing = failed(add(ipam_conf(ipv4_pools=["zzz"]), cid="c2"))
    assert missing["msg"] == "the given pool (zzz) does not exist, or is not enabled"


def test_no_pool(store, ipam_conf):
    out = failed(add(ipam_conf()))
    assert out["msg"] == "no configured Calico pools for node node1"
    assert "calicoctl ippool create" in out["details"]


def test_pool_exhausted_leaves_no_partial_state(store, ipam_conf):
    create_pool(store, "p1", "198.18.0.0/29", block_size=29)
    conf = ipam_conf()
    got = {ok(add(conf, cid=f"c{i}"))["ips"][0]["address"] for i in range(8)}
    assert len(got) == 8
    before = {kv.key: kv.value for kv in store.client.get_prefix("/calico/")}
    out = failed(add(conf, cid="c8"), code=101)
    assert out["msg"] == "Assigned 0 out of 1 requested IPv4 addresses; No IPs available in pools: [198.18.0.0/29]"
    assert "node1" in out["details"]
    after = {kv.key: kv.value for kv in store.client.get_prefix("/calico/")}
    assert after == before
    assert store.handle("net1.c8") is None


def test_dual_stack_failure_keeps_nothing(store, ipam_conf):
    create_pool(store, "p4", "198.18.0.0/24")
    create_pool(store, "p6", "fd00:198:18::/126", block_size=126)
    conf = ipam_conf(assign_ipv6="true")
    for i in range(4):
        ok(add(conf, cid=f"c{i}"))
    out = failed(add(conf, cid="c4"))
    assert "IPv6" in out["msg"]
    assert store.handle("net1.c4") is None
    used4 = sum(1 for b in store.all_blocks(4) for a in b.allocations if a is not None)
    assert used4 == 4


def test_config_errors(store, ipam_conf):
    conf = ipam_conf()
    bad = {**conf, "ipam": {"type": "calico-ipam", "assign_ipv4": "maybe"}}
    assert "assign_ipv4" in failed(add(bad), code=7)["msg"]
    none = {**conf, "ipam": {"type": "calico-ipam", "assign_ipv4": "false"}}
    assert failed(add(none), code=7)
    no_etcd = {k: v for k, v in conf.items() if k != "etcd_endpoints"}
    assert "etcd" in failed(add(no_etcd), code=7)["msg"]
    wrong_store = {**conf, "datastore_type": "kubernetes"}
    assert "datastore_type" in failed(add(wrong_store), code=7)["msg"]
    no_node = {k: v for k, v in conf.items() if k != "nodename"}
    no_node["nodename_file"] = "/nonexistent/nodename"
    assert "nodename" in failed(add(no_node), code=7)["details"]


def test_nodename_file(store, ipam_conf, tmp_path):
    create_pool(store, "p1", "198.18.0.0/24")
    path = tmp_path / "nodename"
    path.write_text("from-file\n")
    conf = {k: v for k, v in ipam_conf().items() if k != "nodename"}
    conf["nodename_file"] = str(path)
    ok(add(conf))
    assert store.affinities("from-file", 4)


def test_etcd_closed_port_gives_try_again_later(ipam_conf):
    conf = {**ipam_conf(), "etcd_endpoints": "http://127.0.0.1:1", "etcd_timeout": 1}
    out = failed(add(conf), code=11)
    assert "http://127.0.0.1:1" in out["msg"] and "try again later" in out["msg"]


def test_etcd_that_never_answers_gives_try_again_later(ipam_conf):
    """A listener that accepts connections and never speaks: the deadline turns it into error 11."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        conf = {**ipam_conf(), "etcd_endpoints": endpoint, "etcd_timeout": 1}
        # ADD (DEL with etcd unreachable succeeds and journals its release: issue 7, tests/test_journal.py).
        out = failed(run_plugin("calico-ipam", "ADD", conf, cni_env(), timeout=30), code=11)
        assert endpoint in out["msg"] and "deadline" in out["details"]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_no_lease_or_lock_is_taken(store, ipam_conf, etcd_endpoint):
    create_pool(store, "p1", "198.18.0.0/24")
    conf = ipam_conf()
    ok(add(conf))
    ok(delete(conf))
    leases = subprocess.run(["etcdctl", f"--endpoints={etcd_endpoint}", "lease", "list", "-w", "json"],
                            capture_output=True, text=True, env={"ETCDCTL_API": "3"}, check=True)
    assert not json.loads(leases.stdout).get("leases")


def test_thirty_concurrent_adds_on_one_node(store, ipam_conf):
    create_pool(store, "p1", "198.18.0.0/22", block_size=28)
    conf = ipam_conf()
    with ThreadPoolExecutor(30) as pool:
        runs = list(pool.map(lambda i: add(conf, cid=f"burst{i}"), range(30)))
    addresses = [ipaddress.ip_interface(ok(r)["ips"][0]["address"]).ip for r in runs]
    assert len(set(addresses)) == 30
    mine = [ipaddress.ip_network(a.cidr) for a in store.affinities("node1", 4)]
    assert all(any(a in net for net in mine) for a in addresses)
    # Concurrent claims serialise: the node took only the blocks it needed (16 addresses each).
    assert len(mine) == 2
    for block in store.all_blocks(4):
        assert block.affine_node == "node1"


def test_eight_nodes_twenty_five_concurrent_adds_each(store, etcd_endpoint):
    """200 concurrent allocations on 8 simulated nodes, each with its own etcd connection."""
    create_pool(store, "p1", "198.18.0.0/20", block_size=27)
    nodes = [f"sim{n}" for n in range(8)]
    results: dict[str, list] = {n: [] for n in nodes}
    errors = []
    barrier = threading.Barrier(200)

    def worker(node: str, i: int):
        ds = Datastore(EtcdClient(EtcdSettings((etcd_endpoint,))))
        try:
            barrier.wait()
            got = allocator.assign(ds, Attachment(f"net1.{node}-{i}", node, "eth0"), [FamilyRequest(4)])
            results[node].append(got[0].address)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            ds.close()

    threads = [threading.Thread(target=worker, args=(n, i)) for n in nodes for i in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    everything = [a for n in nodes for a in results[n]]
    assert len(everything) == 200 and len(set(everything)) == 200
    for node in nodes:
        mine = [ipaddress.ip_network(a.cidr) for a in store.affinities(node, 4)]
        assert len(mine) == 1  # 25 addresses fit one /27 block
        assert all(any(a in net for net in mine) for a in results[node]), node
    blocks = store.all_blocks(4)
    assert sorted(b.affine_node for b in blocks) == sorted(nodes)


def test_failover_to_a_live_endpoint(store, ipam_conf, etcd_endpoint):
    create_pool(store, "p1", "198.18.0.0/24")
    for endpoints in (f"http://127.0.0.1:1,{etcd_endpoint}", f"{etcd_endpoint},http://127.0.0.1:1"):
        conf = {**ipam_conf(), "etcd_endpoints": endpoints}
        for i in range(3):
            ok(add(conf, cid=f"c{i}"))
            ok(delete(conf, cid=f"c{i}"))


def test_add_timeout_bounds_a_standalone_calico_ipam(ipam_conf):
    """add_timeout bounds the whole invocation even when etcd_timeout is longer, and the error
    says which deadline fired."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        conf = {**ipam_conf(), "etcd_endpoints": endpoint, "etcd_timeout": 30, "add_timeout": 1}
        out = failed(run_plugin("calico-ipam", "ADD", conf, cni_env(), timeout=20), code=11)
        assert "add_timeout" in out["details"]
        bad = {**ipam_conf(), "add_timeout": 600}
        assert "add_timeout" in failed(add(bad), code=7)["msg"]
    finally:
        server.close()
