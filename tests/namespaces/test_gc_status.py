"""CNI 1.1 GC and STATUS of `calico` and `calico-ipam`, executed directly (no runtime here sends
them): GC releases exactly the dead attachments of its network on its node, is idempotent, never
frees an address allocated after its read, and is forwarded to a delegated IPAM plugin; STATUS
says which of etcd / pools / space is missing."""

from __future__ import annotations

import os
import stat

import pytest

from calico_ipam.reconcile import Live, reconcile
from calico_ipam import allocator
from calico_ipam.allocator import Attachment, FamilyRequest
from tests.calico_support import held_addresses, ok, pod_env, pod_links, run_calico
from tests.conftest import cni_env, run_plugin
from tests.pools import create_pool, pools_fixture

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)


pools = pools_fixture(("v4", "198.18.20.0/24", 26))


def gc_conf(conf: dict, live: list[tuple[str, str]]) -> dict:
    return {**conf, "cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"containerID": c, "ifname": i} for c, i in live]}


def cid(pod_name: str) -> str:
    return pod_env(pod_name)["CNI_CONTAINERID"]


def test_calico_gc_releases_only_dead_attachments_of_its_network_and_node(store, pools, node, pod, calico_conf, tmp_path):
    journal = str(tmp_path / "journal")
    conf = calico_conf(release_journal_dir=journal)
    other_net = calico_conf(name="net2", release_journal_dir=journal)
    live, dead1, dead2, net2 = pod(), pod(), pod(), pod()
    results = {p: ok(run_calico(node, "ADD", conf, pod_env(p))) for p in (live, dead1, dead2)}
    results[net2] = ok(run_calico(node, "ADD", other_net, pod_env(net2)))
    # An allocation of net1 on another node, with the container ID of a dead one here (another
    # interface: a repeated ADD of one attachment returns what it holds wherever that is).
    other_node = {**conf, "type": "calico-ipam", "nodename": "node2", "release_journal_dir": str(tmp_path / "node2-journal")}
    ok(run_plugin("calico-ipam", "ADD", other_node, cni_env(cid(dead1), "eth1")))
    assert len(os.listdir(os.path.join(journal, "held"))) == 4

    for _ in range(2):  # the second run finds nothing left to do
        ok(run_calico(node, "GC", gc_conf(conf, [(cid(live), "eth0")]), {"CNI_PATH": pod_env(live)["CNI_PATH"]}))
        held = held_addresses(store)
        assert set(held) == {f"net1.{cid(live)}", f"net2.{cid(net2)}", f"net1.{cid(dead1)}"}
        # The node2 allocation of net1.<dead1> survives: another node's.
        assert [str(b.affine_node) for b in store.all_blocks() if any(
            (b.attribute(o) or {}).get("handle_id") == f"net1.{cid(dead1)}" for o in range(b.size))] == ["node2"]
        assert sorted(e.container_id for e in store.workload_endpoints()) == sorted([cid(live), cid(net2)])
        assert {h.handle_id for h in store.handles()} == set(held)
        cali = {l["ifname"] for l in node.cali_links()}
        assert results[live]["interfaces"][0]["name"] in cali and len(cali) == 2
        assert pod_links(dead1) == [] and pod_links(dead2) == [] and pod_links(live) == ["eth0"]
        routed = {r["dst"] for r in node.routes(4) if r["dst"].startswith("198.18.")}
        assert routed == {results[p]["ips"][0]["address"].split("/")[0] for p in (live, net2)}
        assert len(os.listdir(os.path.join(journal, "held"))) == 2  # live's and net2's
    # The live attachment is intact.
    ok(run_calico(node, "CHECK", {**conf, "prevResult": results[live]}, pod_env(live)))


def test_calico_ipam_gc_and_interface_granularity(store, pools, ipam_conf, tmp_path):
    conf = {**ipam_conf(cni_version="1.1.0"), "release_journal_dir": str(tmp_path / "j")}
    for c, i in (("a", "eth0"), ("a", "eth1"), ("b", "eth0")):
        ok_run = run_plugin("calico-ipam", "ADD", conf, cni_env(c, i))
        assert ok_run.rc == 0, ok_run.stdout
    run = run_plugin("calico-ipam", "GC", gc_conf(conf, [("a", "eth1")]), {"CNI_PATH": cni_env()["CNI_PATH"]})
    assert run.rc == 0, run.stdout
    assert {h: len(v) for h, v in held_addresses(store).items()} == {"net1.a": 1}
    assert allocator.held_by(store, "net1.a", "eth1") and not allocator.held_by(store, "net1.a", "eth0")
    assert [h.handle_id for h in store.handles()] == ["net1.a"]


def test_gc_without_valid_attachments_changes_nothing(store, pools, ipam_conf):
    conf = ipam_conf(cni_version="1.1.0")
    assert run_plugin("calico-ipam", "ADD", conf, cni_env("a")).rc == 0
    run = run_plugin("calico-ipam", "GC", conf, {})
    assert run.rc != 0 and run.out["code"] == 7 and "valid-attachments" in run.out["msg"]
    assert set(held_addresses(store)) == {"net1.a"}


def test_gc_never_frees_an_address_allocated_after_its_read(store, pools, monkeypatch):
    """GC reads at one revision; the dead attachment's address is released and given to a new
    attachment before GC writes: the new allocation (same block and ordinal, new sequence
    number) survives."""
    dead = Attachment("net1.dead", "node1", "eth0", network="net1")
    [old] = allocator.assign(store, dead, [FamilyRequest(4)])
    stale = store.ipam_snapshot()
    allocator.release(store, "net1.dead", None)
    fresh = Attachment("net1.fresh", "node1", "eth0", network="net1")
    [new] = allocator.assign(store, fresh, [FamilyRequest(4, address=old.address)])
    assert (new.block, new.ordinal) == (old.block, old.ordinal) and new.sequence != old.sequence
    monkeypatch.setattr(store, "ipam_snapshot", lambda: stale)
    report = reconcile(store, "net1", "node1", Live.of([("fresh", "eth0")]))
    assert report.released == []
    monkeypatch.undo()
    assert held_addresses(store) == {"net1.fresh": [str(old.address)]}


def test_gc_is_forwarded_to_a_delegated_ipam_plugin(store, pools, node, pod, calico_conf, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "calls"
    stub = bindir / "stub-ipam"
    stub.write_text(f"#!/bin/sh\necho \"$CNI_COMMAND\" >> {record}\ncat > /dev/null\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    conf = calico_conf(cni_version="1.1.0", ipam={"type": "stub-ipam"}, release_journal_dir=str(tmp_path / "j"))
    env = {"CNI_PATH": str(bindir)}
    ok(run_calico(node, "GC", gc_conf(conf, []), env))
    ok(run_calico(node, "STATUS", conf, env))
    assert record.read_text().split() == ["GC", "STATUS"]


# ------------------------------------------------------------------------------------------------
# STATUS


def status(conf: dict):
    return run_plugin(conf["type"], "STATUS", {**conf, "cniVersion": "1.1.0"}, {"CNI_PATH": cni_env()["CNI_PATH"]}, timeout=30)


def test_status_ok_with_a_usable_pool(store, pools, ipam_conf, calico_conf):
    for conf in (ipam_conf(), calico_conf()):
        run = status(conf)
        assert run.rc == 0 and run.stdout == "", run.stdout


def test_status_no_usable_pool(store, ipam_conf):
    run = status(ipam_conf())
    assert run.rc != 0 and run.out["code"] == 50 and run.out["msg"].startswith("no usable pool"), run.out
    create_pool(store, "elsewhere", "198.18.21.0/24", 26, node_selector="rack == 'b'")
    run = status(ipam_conf())
    assert run.out["code"] == 50 and run.out["msg"].startswith("no usable pool"), run.out


def test_status_pools_full(store, ipam_conf):
    create_pool(store, "tiny", "198.18.22.0/31", 31)
    conf = ipam_conf(cni_version="1.1.0")
    assert status(conf).rc == 0
    for c in ("a", "b"):
        assert run_plugin("calico-ipam", "ADD", conf, cni_env(c)).rc == 0
    run = status(conf)
    assert run.rc != 0 and run.out["code"] == 50 and run.out["msg"].startswith("pools full"), run.out
    assert run_plugin("calico-ipam", "DEL", conf, cni_env("a")).rc == 0
    assert status(conf).rc == 0


def test_status_etcd_unreachable(ipam_conf, calico_conf):
    for conf in (ipam_conf(), calico_conf()):
        run = status({**conf, "etcd_endpoints": "http://127.0.0.1:1", "etcd_timeout": 1})
        assert run.rc != 0 and run.out["code"] == 50 and run.out["msg"].startswith("etcd unreachable"), run.out
