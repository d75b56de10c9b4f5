"""calicoctl ipam check, and ipam release --from-report repairing exactly what is still wrong."""

from __future__ import annotations

import json

import pytest

from calico_cni.model import keys
from calico_cni.model.records import CONFIRMED, Affinity
from calico_ipam.allocator import release
from tests.calicoctl_support import add_endpoint, age_allocation, allocate
from tests.pools import create_pool, set_config

EMPTY = ("endpointsWithoutAllocation", "handleCountMismatches", "affinitiesWithoutBlocks", "corruptRecords")


def check(ctl, tmp_path, *args, name="report.json"):
    """Run `ipam check -o <tmp>/<name>`; returns (run, report, path)."""
    path = tmp_path / name
    r = ctl("ipam", "check", "-o", str(path), *args)
    return r, json.loads(path.read_text()), path


@pytest.fixture
def planted(store):
    """Live pods, a young allocation without endpoint, and the three planted problems:
    a leak, an orphan handle and a corrupted block."""
    create_pool(store, "v4", "198.18.0.0/24", 28)
    live = [allocate(store, f"net1.live{i}", node="node1") for i in range(2)]
    for i, a in enumerate(live):
        add_endpoint(store, f"node1-cni-live{i}-eth0", "node1", f"live{i}", a.address)
        age_allocation(store, a)
    other = allocate(store, "net1.other", node="node2")
    add_endpoint(store, "node2-cni-other-eth0", "node2", "other", other.address)
    age_allocation(store, other)
    young = allocate(store, "net1.starting", node="node1")  # an ADD in flight: no endpoint yet
    leak = allocate(store, "net1.leaked", node="node1")
    age_allocation(store, leak)
    # An orphan handle: it says it holds an address, but no block has one for it.
    from calico_cni.model.records import Handle

    assert store.commit(puts=[Handle("net1.orphan", {leak.block: 1})])
    # A corrupted block: node2's block lists an allocated ordinal as free (it would be handed out twice).
    block = store.block(other.block)
    block.unallocated.insert(0, other.ordinal)
    assert store.commit(puts=[block])
    return {"live": live, "other": other, "young": young, "leak": leak}


def test_check_finds_exactly_the_planted_problems(ctl, store, tmp_path, planted):
    leak, other = planted["leak"], planted["other"]
    r, report, _ = check(ctl, tmp_path)
    assert r.rc == 3, r.stderr
    assert r.lines[-1] == "Check complete; found 3 problems."
    assert report["problems"] == 3
    assert [(e["address"], e["handle"], e["block"], e["ordinal"], e["sequence"], e["node"], e["ifname"]) for e in report["leakedAddresses"]] == [
        (str(leak.address), "net1.leaked", leak.block, leak.ordinal, leak.sequence, "node1", "eth0")
    ]
    assert report["leakedAddresses"][0]["ageSeconds"] >= 3600
    assert report["handlesWithoutAddresses"] == [{"handle": "net1.orphan", "recorded": {leak.block: 1}}]
    assert report["inconsistentBlocks"] == [
        {"block": other.block, "problems": [f"ordinal {other.ordinal} ({other.address}) is both allocated and in unallocated"]}
    ]
    for name in EMPTY:
        assert report[name] == [], name
    assert report["withinGracePeriod"] == 1 and report["graceSeconds"] == 60
    assert report["checked"] == {"pools": 1, "blocks": 2, "allocations": 5, "handles": 6, "affinities": 2, "workloadEndpoints": 3}
    assert f"{leak.address}  net1.leaked" in r.stdout and "Handles without addresses: 1" in r.stdout
    assert "1 allocations have no workload endpoint yet but are younger than 60s" in r.stdout


def test_release_from_report_repairs_them(ctl, store, tmp_path, planted):
    leak, other, young = planted["leak"], planted["other"], planted["young"]
    _, _, path = check(ctl, tmp_path)
    r = ctl("ipam", "release", "--from-report", str(path))
    assert r.rc == 0, r.stderr
    assert f"Released {leak.address} (handle net1.leaked, block {leak.block}, sequence {leak.sequence})." in r.stdout
    assert f"Repaired the bookkeeping of block {other.block}." in r.stdout
    assert "Repaired handle: deleted handle net1.orphan" in r.stdout
    assert r.lines[-1] == "Repaired 3 problems; skipped 0 that are gone; 0 need a person."
    # The leak is free, the orphan handle gone, the block consistent; nothing else was touched.
    assert store.block(leak.block).attribute(leak.ordinal) is None and store.handle("net1.leaked") is None
    assert store.handle("net1.orphan") is None
    block = store.block(other.block)
    assert other.ordinal not in block.unallocated and block.attribute(other.ordinal)["handle_id"] == "net1.other"
    assert sorted(block.unallocated) == [o for o in range(16) if o != other.ordinal]
    for a, handle in [(planted["live"][0], "net1.live0"), (planted["live"][1], "net1.live1"), (young, "net1.starting"), (other, "net1.other")]:
        assert store.block(a.block).attribute(a.ordinal)["handle_id"] == handle
        assert store.handle(handle).blocks == {a.block: 1}
    r2, report, _ = check(ctl, tmp_path, name="after.json")
    assert r2.rc == 0 and report["problems"] == 0 and r2.lines[-1] == "Check complete; found 0 problems."
    # Running the same report again changes nothing.
    again = ctl("ipam", "release", "--from-report", str(path))
    assert again.rc == 0 and again.lines[-1] == "Repaired 0 problems; skipped 3 that are gone; 0 need a person."


def test_grace_option(ctl, store, tmp_path, planted):
    r, report, _ = check(ctl, tmp_path, "--grace", "0")
    assert report["graceSeconds"] == 0 and report["withinGracePeriod"] == 0
    assert sorted(e["handle"] for e in report["leakedAddresses"]) == ["net1.leaked", "net1.starting"]
    r, report, _ = check(ctl, tmp_path, "--grace", "7200")
    assert report["leakedAddresses"] == [] and report["withinGracePeriod"] == 2 and report["problems"] == 2
    assert ctl("ipam", "check", "--grace", "-1").rc == 2


def test_check_json_on_stdout(ctl, store, planted):
    r = ctl("ipam", "check", "-o", "-")
    assert r.rc == 3
    assert json.loads(r.stdout)["problems"] == 3


def test_check_on_a_healthy_datastore(ctl, store, tmp_path):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1")
    add_endpoint(store, "node1-cni-c1-eth0", "node1", "c1", a.address)
    r = ctl("ipam", "check")
    assert r.rc == 0 and r.lines[-1] == "Check complete; found 0 problems."
    assert ctl("ipam", "check", "-o", str(tmp_path / "no" / "such" / "dir.json")).rc == 1


def test_report_is_keyed_by_sequence_so_reused_addresses_are_never_freed(ctl, store, tmp_path):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    a = allocate(store, "net1.a")
    b = allocate(store, "net1.b")
    c = allocate(store, "net1.c")
    for x in (a, b, c):
        age_allocation(store, x)
    _, report, path = check(ctl, tmp_path)
    assert sorted(e["handle"] for e in report["leakedAddresses"]) == ["net1.a", "net1.b", "net1.c"]
    # a: a late DEL releases it and another pod gets the same address (no endpoint yet: young).
    release(store, "net1.a", None)
    reused = allocate(store, "net1.new", address=str(a.address))
    # b: released and given to the same handle again (a new allocation: new sequence number), old.
    release(store, "net1.b", None)
    again = allocate(store, "net1.b", address=str(b.address))
    age_allocation(store, again)
    assert again.ordinal == b.ordinal and again.sequence != b.sequence
    # c: its pod's endpoint appeared after the report.
    add_endpoint(store, "node1-cni-c-eth0", "node1", "c", c.address)
    r = ctl("ipam", "release", "--from-report", str(path))
    assert r.rc == 0, r.stderr
    assert r.lines[-1] == "Repaired 0 problems; skipped 3 that are gone; 0 need a person."
    for x, handle in [(reused, "net1.new"), (again, "net1.b"), (c, "net1.c")]:
        block = store.block(x.block)
        assert block.attribute(x.ordinal)["handle_id"] == handle and block.seq_for_alloc[str(x.ordinal)] == x.sequence
        assert store.handle(handle).blocks == {x.block: 1}


def test_other_problem_kinds_and_their_repair(ctl, store, tmp_path):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    miscounted = allocate(store, "net1.miscounted")
    add_endpoint(store, "node1-cni-miscounted-eth0", "node1", "miscounted", miscounted.address)
    handle = store.handle("net1.miscounted")
    handle.blocks[miscounted.block] = 5
    assert store.commit(puts=[handle])
    headless = allocate(store, "net1.headless")  # leaked, and its handle record is gone
    age_allocation(store, headless)
    assert store.commit(deletes=[store.handle("net1.headless")])
    add_endpoint(store, "node1-cni-ghost-eth0", "node1", "ghost", "198.18.0.200")
    assert store.commit(puts=[Affinity("node9", "198.18.0.64/28", CONFIRMED)])
    assert store.client.commit([], [(keys.block("198.18.0.96/28"), b"{not json")])[0]
    tunnel = allocate(store, "ipip-tunnel-addr-node1")
    age_allocation(store, tunnel)
    node = store.node("node1")
    node.doc.setdefault("spec", {})["bgp"] = {"ipv4IPIPTunnelAddr": str(tunnel.address)}
    assert store.commit(puts=[node])

    r, report, path = check(ctl, tmp_path)
    assert r.rc == 3
    assert [e["handle"] for e in report["leakedAddresses"]] == ["net1.headless"]
    assert report["handleCountMismatches"] == [
        {"handle": "net1.headless", "recorded": None, "actual": {headless.block: 1}},
        {"handle": "net1.miscounted", "recorded": {miscounted.block: 5}, "actual": {miscounted.block: 1}},
    ]
    assert report["endpointsWithoutAllocation"] == [
        {"endpoint": "default/node1-cni-ghost-eth0", "node": "node1", "containerID": "ghost", "address": "198.18.0.200", "reason": "no allocation block holds the address"}
    ]
    assert report["affinitiesWithoutBlocks"] == [{"node": "node9", "block": "198.18.0.64/28", "state": "confirmed", "reason": "the block does not exist"}]
    assert [e["key"] for e in report["corruptRecords"]] == [keys.block("198.18.0.96/28")]
    assert report["handlesWithoutAddresses"] == [] and report["inconsistentBlocks"] == []
    assert report["problems"] == 6 and r.lines[-1] == "Check complete; found 6 problems."

    r = ctl("ipam", "release", "--from-report", str(path))
    assert r.rc == 0, r.stderr
    assert "Repaired handle: recreated handle net1.headless" in r.stdout
    assert "Repaired handle: rewrote handle net1.miscounted" in r.stdout
    assert f"Released {headless.address} (handle net1.headless" in r.stdout
    assert "Deleted the affinity of node node9 to block 198.18.0.64/28." in r.stdout
    assert "Needs a person: workload endpoint default/node1-cni-ghost-eth0 claims 198.18.0.200" in r.stdout
    assert r.lines[-1] == "Repaired 4 problems; skipped 0 that are gone; 2 need a person."
    assert store.handle("net1.miscounted").blocks == {miscounted.block: 1}
    assert store.handle("net1.headless") is None and store.block(headless.block).attribute(headless.ordinal) is None
    assert store.affinities("node9") == []
    assert store.block(tunnel.block).attribute(tunnel.ordinal)["handle_id"] == "ipip-tunnel-addr-node1"
    _, after, _ = check(ctl, tmp_path, name="after.json")
    assert after["problems"] == 2
    assert len(after["endpointsWithoutAllocation"]) == 1 and len(after["corruptRecords"]) == 1


def test_affinity_to_a_block_of_another_node(ctl, store, tmp_path):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1", node="node1")
    add_endpoint(store, "node1-cni-c1-eth0", "node1", "c1", a.address)
    assert store.commit(puts=[Affinity("node2", a.block, CONFIRMED)])
    _, report, path = check(ctl, tmp_path)
    assert report["affinitiesWithoutBlocks"] == [{"node": "node2", "block": a.block, "state": "confirmed", "reason": "the block is affine to host:node1"}]
    assert ctl("ipam", "release", "--from-report", str(path)).rc == 0
    assert store.affinities("node2") == [] and [x.cidr for x in store.affinities("node1")] == [a.block]


def test_endpoints_of_released_and_free_addresses(ctl, store, tmp_path):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    set_config(store, ip_cooldown_seconds=600)
    a = allocate(store, "net1.c1")
    add_endpoint(store, "node1-cni-c1-eth0", "node1", "c1", a.address)
    release(store, "net1.c1", None)  # cooling down, still in the block
    add_endpoint(store, "node1-cni-c2-eth0", "node1", "c2", a.address + 5)  # never allocated
    _, report, path = check(ctl, tmp_path)
    reasons = {e["address"]: e["reason"] for e in report["endpointsWithoutAllocation"]}
    assert reasons[str(a.address + 5)] == "the address is free"
    assert reasons[str(a.address)].startswith("the address was released at 20")
    assert len(reasons) == 2 and report["problems"] == 2
    r = ctl("ipam", "release", "--from-report", str(path))
    assert r.rc == 0 and r.lines[-1] == "Repaired 0 problems; skipped 0 that are gone; 2 need a person."


def test_from_report_rejects_bad_files(ctl, store, tmp_path):
    bad = tmp_path / "bad.json"
    for content, message in [
        ("{", "is not valid JSON"),
        ("[]", "is not a calicoctl ipam check report"),
        (json.dumps({"version": 1}), "is not a valid ipam check report"),
        (json.dumps({"version": 1, "etcdRevision": 1, "graceSeconds": 60, "generatedAt": "x", "leakedAddresses": [{"handle": "h"}]}), "is not a valid ipam check report"),
        (json.dumps({"version": 1, "etcdRevision": 1, "graceSeconds": 60, "generatedAt": "x", "leakedAddresses": "all"}), "is not a valid ipam check report"),
    ]:
        bad.write_text(content)
        r = ctl("ipam", "release", "--from-report", str(bad))
        assert r.rc == 1 and message in r.stderr, (content, r.stderr)
        assert r.stderr.count("\n") == 1
    r = ctl("ipam", "release", "--from-report", str(tmp_path / "missing.json"))
    assert r.rc == 1 and "cannot read" in r.stderr


def test_affinity_to_a_block_that_does_not_parse_is_not_stray(ctl, store, tmp_path):
    """The block exists (it is reported as corrupt); its affinity is not also 'without its block',
    so `release --from-report` never deletes the affinity of a block that is there."""
    create_pool(store, "v4", "198.18.0.0/24", 28)
    assert store.commit(puts=[Affinity("node1", "198.18.0.96/28", CONFIRMED), Affinity("node1", "198.18.0.112/28", CONFIRMED)])
    assert store.client.commit([], [(keys.block("198.18.0.96/28"), b"{not json")])[0]
    r, report, path = check(ctl, tmp_path)
    assert r.rc == 3
    assert [e["key"] for e in report["corruptRecords"]] == [keys.block("198.18.0.96/28")]
    assert [e["block"] for e in report["affinitiesWithoutBlocks"]] == ["198.18.0.112/28"]
    assert ctl("ipam", "release", "--from-report", str(path)).rc == 0
    assert [a.cidr for a in store.affinities("node1")] == ["198.18.0.96/28"]
