"""DEL with etcd unreachable (tear down, journal, succeed; later invocations replay exactly what
was held, never an address reused meanwhile) and ADD with etcd unreachable or silent (error 11,
nothing created)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import threading

import pytest

from tests.calico_support import (
    assert_datastore_clean,
    assert_node_clean,
    held_addresses,
    ok,
    pod_env,
    pod_links,
    run_calico,
)
from tests.calicoctl_support import run_exe
from tests.conftest import FABRIC_ADDRESS, cni_env, run_plugin
from tests.pools import pools_fixture, set_config

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

DEAD = f"http://{FABRIC_ADDRESS}:1"


pools = pools_fixture(("v4", "198.18.40.0/24", 26))


def dead(conf: dict) -> dict:
    return {**conf, "etcd_endpoints": DEAD, "etcd_timeout": 0.5, "etcd_username": "u", "etcd_password": "s3cret-pw"}


def pending(journal: str) -> list[str]:
    d = os.path.join(journal, "pending")
    return sorted(os.path.join(d, f) for f in os.listdir(d)) if os.path.isdir(d) else []


def test_ipam_del_with_etcd_down_is_journaled_and_replayed_exactly(store, pools, ipam_conf, tmp_path):
    journal = str(tmp_path / "journal")
    conf = {**ipam_conf(cni_version="1.1.0"), "release_journal_dir": journal}
    set_config(store, ip_cooldown_seconds=0)
    add = run_plugin("calico-ipam", "ADD", conf, cni_env("c1"))
    address = add.out["ips"][0]["address"].split("/")[0]

    run = run_plugin("calico-ipam", "DEL", {**dead(conf), "etcd_endpoints": DEAD}, cni_env("c1"), timeout=30)
    assert run.rc == 0, run.stdout
    [entry] = pending(journal)
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o600 and stat.S_IMODE(os.stat(journal).st_mode) == 0o700
    text = open(entry).read()
    assert "s3cret-pw" not in text and '"u"' not in text
    doc = json.loads(text)
    assert doc["handle"] == "net1.c1" and [a["address"] for a in doc["allocations"]] == [address]
    assert {"block", "ordinal", "sequence"} <= set(doc["allocations"][0])
    saved = str(tmp_path / "saved.json")
    shutil.copy(entry, saved)
    assert held_addresses(store) == {"net1.c1": [address]}  # not released yet

    assert run_plugin("calico-ipam", "STATUS", conf, {}).rc == 0  # etcd answers: replayed
    assert pending(journal) == [] and held_addresses(store) == {} and store.handles() == []

    # The same container ID is added again and gets the same address (new sequence number).
    assert run_plugin("calico-ipam", "ADD", conf, cni_env("c1", CNI_ARGS=f"IP={address}")).rc == 0
    shutil.copy(saved, entry)  # the old entry is replayed again (a crash before its unlink)
    assert run_plugin("calico-ipam", "STATUS", conf, {}).rc == 0
    assert pending(journal) == []
    assert held_addresses(store) == {"net1.c1": [address]}


def test_replay_without_held_record_spares_a_readded_container(store, pools, ipam_conf, tmp_path):
    journal = str(tmp_path / "journal")
    conf = {**ipam_conf(cni_version="1.1.0"), "release_journal_dir": journal}
    assert run_plugin("calico-ipam", "ADD", conf, cni_env("c1")).rc == 0
    assert run_plugin("calico-ipam", "ADD", conf, cni_env("c2")).rc == 0
    shutil.rmtree(os.path.join(journal, "held"))  # as if ADD was killed before writing it
    for c in ("c1", "c2"):
        assert run_plugin("calico-ipam", "DEL", dead(conf), cni_env(c), timeout=30).rc == 0
    assert all(json.load(open(p))["allocations"] is None for p in pending(journal))
    assert run_plugin("calico-ipam", "ADD", conf, cni_env("c2", "eth0")).rc == 0  # re-added later
    # That ADD replayed first: both old allocations are released, c2's new one is kept.
    assert pending(journal) == []
    assert set(held_addresses(store)) == {"net1.c2"}


def test_a_held_record_truncated_by_a_crash_counts_as_none(store, pools, ipam_conf, tmp_path):
    """Held records are not fsynced (journal.py): a machine crash may leave one empty or cut short.
    DEL with etcd down then journals the release without allocations, and the replay still
    releases exactly the container's addresses."""
    journal = str(tmp_path / "journal")
    conf = {**ipam_conf(cni_version="1.1.0"), "release_journal_dir": journal}
    assert run_plugin("calico-ipam", "ADD", conf, cni_env("c1")).rc == 0
    kept = run_plugin("calico-ipam", "ADD", conf, cni_env("c2")).out["ips"][0]["address"].split("/")[0]
    held = os.path.join(journal, "held")
    for name, cut in zip(sorted(os.listdir(held)), (0, 25)):
        path = os.path.join(held, name)
        with open(path, "r+b") as f:
            f.truncate(cut)
    assert run_plugin("calico-ipam", "DEL", dead(conf), cni_env("c1"), timeout=30).rc == 0
    [entry] = pending(journal)
    assert json.load(open(entry))["allocations"] is None
    assert run_plugin("calico-ipam", "STATUS", conf, {}).rc == 0  # etcd answers: replayed
    assert pending(journal) == [] and held_addresses(store) == {"net1.c2": [kept]}


def test_calico_del_with_etcd_down_tears_down_and_calicoctl_replays(store, pools, node, pod, calico_conf, tmp_path):
    journal = str(tmp_path / "journal")
    conf = calico_conf(release_journal_dir=journal)
    a, b = pod(), pod()
    ra = ok(run_calico(node, "ADD", conf, pod_env(a)))
    ok(run_calico(node, "ADD", conf, pod_env(b)))
    ok(run_calico(node, "DEL", {**dead(conf), "prevResult": ra}, pod_env(a), timeout=40))
    assert pod_links(a) == [] and len(node.cali_links()) == 1
    assert len(pending(journal)) == 1
    assert len(store.workload_endpoints()) == 2  # the datastore part waits for etcd
    ok(run_calico(node, "DEL", conf, pod_env(b)))  # any invocation that reaches etcd replays
    assert pending(journal) == []
    assert_node_clean(node)
    assert_datastore_clean(store)


def test_calicoctl_replays_the_journal(store, pools, ipam_conf, tmp_path, etcd_endpoint):
    journal = str(tmp_path / "journal")
    conf = {**ipam_conf(), "release_journal_dir": journal}
    assert run_plugin("calico-ipam", "ADD", conf, cni_env("c1")).rc == 0
    assert run_plugin("calico-ipam", "DEL", dead(conf), cni_env("c1"), timeout=30).rc == 0
    assert len(pending(journal)) == 1
    r = run_exe("ipam", "show", env={"ETCD_ENDPOINTS": etcd_endpoint, "CALICO_RELEASE_JOURNAL_DIR": journal})
    assert r.rc == 0, r.stderr
    assert pending(journal) == [] and held_addresses(store) == {}


@pytest.fixture
def silent_etcd():
    """A listener that accepts connections and never answers."""
    server = socket.socket()
    server.bind((FABRIC_ADDRESS, 0))
    server.listen(16)
    conns, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://{FABRIC_ADDRESS}:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for c in conns:
            c.close()
        server.close()


@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_calico_add_with_etcd_unreachable_is_11_and_creates_nothing(kind, silent_etcd, node, pod, calico_conf, tmp_path):
    endpoint = DEAD if kind == "closed" else silent_etcd
    # A per-call deadline longer than the ADD's: the ADD's bound is what ends it.
    conf = calico_conf(release_journal_dir=str(tmp_path / "j"), etcd_endpoints=endpoint, etcd_timeout=30, add_timeout=1.5)
    p = pod()
    links_before = sorted(l["ifname"] for l in node.links())
    routes_before = node.routes(4) + node.routes(6)
    run = run_calico(node, "ADD", conf, pod_env(p), timeout=20)
    assert run.rc != 0 and run.out["code"] == 11, run.stdout
    assert pod_links(p) == []
    assert sorted(l["ifname"] for l in node.links()) == links_before
    assert node.routes(4) + node.routes(6) == routes_before
    assert not os.path.exists(str(tmp_path / "j" / "held"))


def _request(conf: dict, container_id: str = "c1"):
    from calico_cni.protocol.request import CniRequest

    return CniRequest(command="ADD", cni_version=conf["cniVersion"], config=conf, container_id=container_id, ifname="eth0")


def test_a_failed_replay_keeps_its_entry_for_the_next_invocation(store, pools, ipam_conf, tmp_path, monkeypatch):
    """A replay that fails for another reason than etcd being unreachable is logged and kept; an
    unreadable entry does not stop the others."""
    from calico_cni.journal import Journal
    from calico_ipam.replay import replay_quietly
    from calico_ipam import allocator

    conf = {**ipam_conf(), "release_journal_dir": str(tmp_path / "journal")}
    got = allocator.assign(store, allocator.Attachment("net1.c1", "node1", "eth0"), [allocator.FamilyRequest(4)])
    journal = Journal(conf["release_journal_dir"])
    journal.record_held("net1", "c1", "eth0", "net1.c1", got, ["http://e:2379"])
    entry = journal.add_pending("net1", "c1", "eth0", "net1.c1", ["http://e:2379"], journal.held("net1", "c1", "eth0"))
    with open(os.path.join(journal.pending_dir, "0-unreadable.json"), "w") as f:
        f.write("{not json")

    def broken(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(allocator, "release_exact", broken)
    replay_quietly(store, Journal(conf["release_journal_dir"]))  # logged, not raised
    assert os.path.exists(entry) and held_addresses(store) == {"net1.c1": [str(got[0].address)]}
    monkeypatch.undo()
    replay_quietly(store, Journal(conf["release_journal_dir"]))
    assert not os.path.exists(entry) and held_addresses(store) == {}


def test_in_process_rollback_with_etcd_unreachable_is_journaled_exactly(store, pools, ipam_conf, tmp_path, monkeypatch):
    """The calico plugin's rollback of its own allocation, with etcd gone: the exact allocations
    are recorded, and the replay releases them and nothing that was held before."""
    from calico_cni.config import calico_settings
    from calico_cni.datastore.errors import DatastoreUnavailable
    from calico_cni.plugins.ipam_backend import InProcessIpam
    from calico_cni.journal import Journal
    from calico_ipam.replay import replay_quietly
    from calico_ipam import allocator

    conf = {**ipam_conf(), "release_journal_dir": str(tmp_path / "journal")}
    settings, memory = calico_settings(conf, {}, resolve_node=True), allocator.BlockMemory()
    earlier = InProcessIpam(_request(conf, "c0"), settings, store, memory)
    earlier.validate()
    earlier.add()
    ipam = InProcessIpam(_request(conf), settings, store, memory)
    ipam.validate()
    ipam.add()
    [new] = ipam.new

    def unreachable(*args, **kwargs):
        raise DatastoreUnavailable(("http://e:2379",), "injected")

    monkeypatch.setattr(allocator, "release_exact", unreachable)
    ipam.undo()
    monkeypatch.undo()
    [entry] = pending(conf["release_journal_dir"])
    doc = json.load(open(entry))
    assert doc["handle"] == "net1.c1"
    assert doc["allocations"] == [{"address": str(new.address), "block": new.block, "ordinal": new.ordinal, "sequence": new.sequence}]
    assert Journal(conf["release_journal_dir"]).pending() == [entry]
    replay_quietly(store, Journal(conf["release_journal_dir"]))
    assert pending(conf["release_journal_dir"]) == []
    assert held_addresses(store) == {"net1.c0": [str(earlier.assigned[0].address)]}


def test_replay_without_held_record_spares_a_container_whose_interface_has_an_endpoint(store, pools, tmp_path):
    """An entry that recorded no allocations is left alone while the container's interface has a
    workload endpoint again; an endpoint of another interface of the container does not spare it."""
    from calico_cni.journal import Journal
    from calico_cni.model.records import WorkloadEndpoint
    from calico_ipam import allocator
    from calico_ipam.replay import replay_quietly

    got = allocator.assign(store, allocator.Attachment("net1.c1", "node1", "eth0"), [allocator.FamilyRequest(4)])
    journal = Journal(str(tmp_path / "journal"))

    def endpoint(ifname: str) -> WorkloadEndpoint:
        wep = WorkloadEndpoint("default", f"node1-cni-c1-{ifname}", {"spec": {"node": "node1", "containerID": "c1", "endpoint": ifname}})
        assert store.commit(puts=[wep])
        return store.workload_endpoint("default", wep.name)

    eth0 = endpoint("eth0")
    journal.add_pending("net1", "c1", "eth0", "net1.c1", [], None)
    replay_quietly(store, journal)
    assert journal.pending() == [] and held_addresses(store) == {"net1.c1": [str(got[0].address)]}

    assert store.commit(deletes=[eth0])
    endpoint("eth1")
    journal.add_pending("net1", "c1", "eth0", "net1.c1", [], None)
    replay_quietly(store, journal)
    assert journal.pending() == [] and held_addresses(store) == {}
