"""calicoctl ipam show, ipam configure and ipam release --ip."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from calico_cni.model.records import Block
from calico_ipam.allocator import release
from tests.calicoctl_support import add_endpoint, allocate
from tests.pools import create_pool, set_config

# ------------------------------------------------------------------------------------------------
# ipam show


def test_show_utilisation_per_pool(ctl, store):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    create_pool(store, "v6", "fd00:198:18::/120", 124)
    for i in range(3):
        allocate(store, f"net1.c{i}")
    r = ctl("ipam", "show")
    assert r.rc == 0, r.stderr
    assert [line.split() for line in r.lines] == [
        ["GROUPING", "CIDR", "IPS", "TOTAL", "IPS", "IN", "USE", "IPS", "FREE"],
        ["IP", "Pool", "198.18.0.0/24", "256", "3", "(1.2%)", "253", "(98.8%)"],
        ["IP", "Pool", "fd00:198:18::/120", "256", "0", "(0.0%)", "256", "(100.0%)"],
    ]
    data = ctl("ipam", "show", "-o", "json").json()
    assert data == {
        "pools": [
            {"name": "v4", "cidr": "198.18.0.0/24", "disabled": False, "total": 256, "inUse": 3, "cooling": 0, "free": 253},
            {"name": "v6", "cidr": "fd00:198:18::/120", "disabled": False, "total": 256, "inUse": 0, "cooling": 0, "free": 256},
        ]
    }
    assert yaml.safe_load(ctl("ipam", "show", "-o", "yaml").stdout) == data


def test_show_blocks(ctl, store):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1", node="node1")
    allocate(store, "net1.c2", node="node1")
    b = allocate(store, "net1.c3", node="node2")
    r = ctl("ipam", "show", "--show-blocks")
    assert r.rc == 0
    rows = [line.split() for line in r.lines]
    assert rows[0][-1] == "AFFINITY"
    assert rows[1][:3] == ["IP", "Pool", "198.18.0.0/24"]
    blocks = {row[1]: row for row in rows[2:]}
    assert blocks[a.block] == ["Block", a.block, "16", "2", "(12.5%)", "14", "(87.5%)", "node1"]
    assert blocks[b.block] == ["Block", b.block, "16", "1", "(6.2%)", "15", "(93.8%)", "node2"]
    data = ctl("ipam", "show", "--show-blocks", "-o", "json").json()
    assert {x["cidr"]: (x["affinity"], x["inUse"]) for x in data["pools"][0]["blocks"]} == {a.block: ("node1", 2), b.block: ("node2", 1)}


def test_show_groups_blocks_without_a_pool(ctl, store):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    orphan = Block.new("198.18.7.0/28", "node1")
    assert store.commit(puts=[orphan])
    data = ctl("ipam", "show", "--show-blocks", "-o", "json").json()
    assert data["pools"][1]["name"] is None and [x["cidr"] for x in data["pools"][1]["blocks"]] == ["198.18.7.0/28"]
    assert "(no pool)" in ctl("ipam", "show", "--show-blocks").stdout


def test_show_mentions_records_it_cannot_parse(ctl, store):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    allocate(store, "net1.c1")
    assert store.client.commit([], [("/calico/ipam/v2/assignment/ipv4/block/198.18.0.240-28", b"[]")])[0]
    r = ctl("ipam", "show")
    assert r.rc == 0 and "1 IPAM records cannot be parsed" in r.stdout
    assert ctl("ipam", "show", "-o", "json").json()["pools"][0]["inUse"] == 1


def test_show_cooling_addresses_are_neither_in_use_nor_free(ctl, store):
    create_pool(store, "v4", "198.18.0.0/28", 28)
    set_config(store, ip_cooldown_seconds=600)
    a = allocate(store, "net1.c1")
    allocate(store, "net1.c2")
    release(store, "net1.c1", None)
    data = ctl("ipam", "show", "-o", "json").json()
    assert (data["pools"][0]["inUse"], data["pools"][0]["cooling"], data["pools"][0]["free"]) == (1, 1, 14)
    assert "1 released addresses are cooling down" in ctl("ipam", "show").stdout
    info = ctl("ipam", "show", "--ip", str(a.address), "-o", "json").json()
    assert info["state"] == "cooling down" and info["releasedAt"]


def test_show_ip(ctl, store):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1", node="node1")
    add_endpoint(store, "node1-cni-c1-eth0", "node1", "c1", a.address)
    info = ctl("ipam", "show", "--ip", str(a.address), "-o", "json").json()
    assert info["state"] == "in use" and info["handle"] == "net1.c1" and info["pool"] == "v4"
    assert info["block"] == a.block and info["ordinal"] == a.ordinal and info["sequence"] == a.sequence
    assert info["attributes"]["node"] == "node1" and info["attributes"]["ifname"] == "eth0" and info["attributes"]["timestamp"]
    assert info["endpoints"] == ["default/node1-cni-c1-eth0"]
    table = {line.split()[0]: line.split()[1:] for line in ctl("ipam", "show", "--ip", str(a.address)).lines[1:]}
    assert table["state"] == ["in", "use"] and table["handle"] == ["net1.c1"] and "node=node1," in table["attributes"]
    free_in_block = a.address + 1
    assert ctl("ipam", "show", "--ip", str(free_in_block), "-o", "json").json()["state"] == "free"
    no_block = ctl("ipam", "show", "--ip", "198.18.0.250", "-o", "json").json()
    assert no_block == {"address": "198.18.0.250", "state": "free", "pool": "v4"}
    assert ctl("ipam", "show", "--ip", "203.0.113.1", "-o", "json").json()["state"] == "not in any IP pool"
    bad = ctl("ipam", "show", "--ip", "not-an-ip")
    assert bad.rc == 1 and "'not-an-ip' is not an IP address" in bad.stderr


def test_show_borrowed(ctl, store):
    create_pool(store, "v4", "198.18.0.0/28", 28)  # one block: node2 must borrow from node1
    own = allocate(store, "net1.c1", node="node1")
    borrowed = allocate(store, "net1.c2", node="node2")
    assert borrowed.block == own.block
    data = ctl("ipam", "show", "--show-borrowed", "-o", "json").json()
    assert data["borrowed"] == [{"address": str(borrowed.address), "node": "node2", "block": own.block, "blockOwner": "node1", "handle": "net1.c2", "endpoints": []}]
    r = ctl("ipam", "show", "--show-borrowed")
    assert "Borrowed addresses (allocated by a node from a block affine to another): 1" in r.stdout
    assert r.lines[-1].split() == [str(borrowed.address), "node2", own.block, "node1", "net1.c2"]


def test_show_configuration(ctl, store):
    r = ctl("ipam", "show", "--show-configuration", "-o", "json")
    assert r.json() == {"strictAffinity": False, "autoAllocateBlocks": True, "maxBlocksPerHost": 0, "ipCooldownSeconds": 0}
    table = ctl("ipam", "show", "--show-configuration")
    assert [line.split()[:2] for line in table.lines] == [
        ["PROPERTY", "VALUE"], ["StrictAffinity", "false"], ["AutoAllocateBlocks", "true"], ["MaxBlocksPerHost", "0"], ["IPCooldownSeconds", "0"],
    ]
    set_config(store, strict_affinity=True, max_blocks_per_host=4, ip_cooldown_seconds=9)
    assert ctl("ipam", "show", "--show-configuration", "-o", "yaml").stdout.splitlines() == [
        "strictAffinity: true", "autoAllocateBlocks: true", "maxBlocksPerHost: 4", "ipCooldownSeconds: 9",
    ]


# ------------------------------------------------------------------------------------------------
# ipam configure


def test_configure_writes_the_config(ctl, store):
    r = ctl("ipam", "configure", "--strictaffinity", "true", "--max-blocks-per-host", "3", "--ip-cooldown-seconds", "30")
    assert r.rc == 0, r.stderr
    assert "IPAM configuration updated" in r.stdout
    config = store.ipam_config()
    assert (config.strict_affinity, config.auto_allocate_blocks, config.max_blocks_per_host, config.ip_cooldown_seconds) == (True, True, 3, 30)
    # Options not given keep their values.
    r = ctl("ipam", "configure", "--auto-allocate-blocks", "false", "-o", "json")
    assert r.json() == {"strictAffinity": True, "autoAllocateBlocks": False, "maxBlocksPerHost": 3, "ipCooldownSeconds": 30}
    config = store.ipam_config()
    assert (config.strict_affinity, config.auto_allocate_blocks, config.max_blocks_per_host, config.ip_cooldown_seconds) == (True, False, 3, 30)
    assert ctl("ipam", "configure", "--strict-affinity=true", "--auto-allocate-blocks=true", "--max-blocks-per-host=0").rc == 0
    assert store.ipam_config().max_blocks_per_host == 0


def test_configure_keeps_fields_it_does_not_model(ctl, store):
    config = store.ipam_config()
    config.extra["futureField"] = {"x": 1}
    assert store.commit(puts=[config])
    assert ctl("ipam", "configure", "--ip-cooldown-seconds", "5").rc == 0
    assert store.ipam_config().extra == {"futureField": {"x": 1}}


@pytest.mark.parametrize(
    "before, args, message",
    [
        ({}, ["--strictaffinity", "false", "--auto-allocate-blocks", "false"], "may not both be off"),
        ({}, ["--auto-allocate-blocks", "false"], "may not both be off"),
        ({"strict_affinity": True, "auto_allocate_blocks": False}, ["--strictaffinity", "false"], "may not both be off"),
        ({}, ["--max-blocks-per-host", "3"], "max-blocks-per-host 3 needs strict affinity"),
        ({"strict_affinity": True, "max_blocks_per_host": 2}, ["--strictaffinity", "false"], "max-blocks-per-host 2 needs strict affinity"),
        ({}, [], "nothing to change"),
    ],
)
def test_configure_rules(ctl, store, before, args, message):
    if before:
        set_config(store, **before)
    stored = store.ipam_config()
    r = ctl("ipam", "configure", *args)
    assert r.rc == 1 and message in r.stderr
    after = store.ipam_config()
    assert (after.strict_affinity, after.auto_allocate_blocks, after.max_blocks_per_host, after.revision) == (
        stored.strict_affinity, stored.auto_allocate_blocks, stored.max_blocks_per_host, stored.revision,
    )


@pytest.mark.parametrize(
    "args",
    [["--max-blocks-per-host", "-1"], ["--ip-cooldown-seconds", "-5"], ["--strictaffinity", "maybe"], ["--max-blocks-per-host", "x"]],
)
def test_configure_rejects_bad_values(ctl, store, args):
    r = ctl("ipam", "configure", *args)
    assert r.rc == 2 and r.stderr.startswith("Error: Invalid value") and r.stderr.count("\n") == 1
    assert store.client.get("/calico/ipam/v2/config") is None


# ------------------------------------------------------------------------------------------------
# ipam release --ip


def test_release_ip(ctl, store):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1")
    b = allocate(store, "net1.c1", ifname="eth1")
    r = ctl("ipam", "release", "--ip", str(a.address))
    assert r.rc == 0, r.stderr
    assert f"Released {a.address} (handle net1.c1, block {a.block})." in r.stdout
    block = store.block(a.block)
    assert block.attribute(a.ordinal) is None and a.ordinal in block.unallocated
    assert block.attribute(b.ordinal)["handle_id"] == "net1.c1"
    assert store.handle("net1.c1").blocks == {a.block: 1}


def test_release_several_ips(ctl, store):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1")
    b = allocate(store, "net1.c2")
    r = ctl("ipam", "release", "--ip", str(a.address), "--ip", str(b.address))
    assert r.rc == 0 and r.stdout.count("Released") == 2
    assert store.handles() == []


def test_release_ip_in_use_needs_force(ctl, store):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1")
    add_endpoint(store, "node1-cni-c1-eth0", "node1", "c1", a.address)
    r = ctl("ipam", "release", "--ip", str(a.address))
    assert r.rc == 1 and "used by workload endpoint default/node1-cni-c1-eth0" in r.stderr and "--force" in r.stderr
    assert store.handle("net1.c1") is not None
    r = ctl("ipam", "release", "--ip", str(a.address), "--force")
    assert r.rc == 0 and store.handle("net1.c1") is None


def test_release_ip_with_a_missing_handle(ctl, store):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1")
    assert store.commit(deletes=[store.handle("net1.c1")])
    r = ctl("ipam", "release", "--ip", str(a.address))
    assert r.rc == 0, r.stderr
    assert store.block(a.block).attribute(a.ordinal) is None and store.handle("net1.c1") is None


def test_release_ip_refusals(ctl, store):
    create_pool(store, "v4", "198.18.0.0/24", 28)
    set_config(store, ip_cooldown_seconds=600)
    a = allocate(store, "net1.c1")
    b = allocate(store, "net1.c2")
    release(store, "net1.c2", None)
    cases = [
        (["--ip", str(a.address + 5)], f"{a.address + 5} is not allocated"),
        (["--ip", "198.18.0.250"], "198.18.0.250 is not allocated"),
        (["--ip", str(b.address)], f"{b.address} was already released"),
        (["--ip", "nope"], "'nope' is not an IP address"),
        (["--ip", str(a.address), "--ip", "nope"], "'nope' is not an IP address"),
        ([], "give either --ip ADDR"),
        (["--ip", str(a.address), "--from-report", "x.json"], "give either --ip ADDR"),
    ]
    for args, message in cases:
        r = ctl("ipam", "release", *args)
        assert r.rc == 1 and message in r.stderr, (args, r.stderr)
    assert store.handle("net1.c1").blocks == {a.block: 1}
    assert ipaddress.ip_address(a.address) in store.block(a.block).network


def test_release_ip_reused_since_it_was_read_is_left_alone(ctl, store, monkeypatch):
    """The address was released and handed to another pod between the command's read and its
    write: the release is keyed by sequence number, so the new pod keeps it and the command fails."""
    from calico_cni.datastore.store import Datastore

    create_pool(store, "v4", "198.18.0.0/24", 28)
    a = allocate(store, "net1.old")
    stale = store.ipam_snapshot()
    release(store, "net1.old", None)
    new = allocate(store, "net1.new", address=str(a.address))
    assert new.ordinal == a.ordinal and new.sequence != a.sequence
    real, calls = Datastore.ipam_snapshot, []

    def first_read_is_stale(self):
        calls.append(1)
        return stale if len(calls) == 1 else real(self)

    monkeypatch.setattr(Datastore, "ipam_snapshot", first_read_is_stale)
    r = ctl("ipam", "release", "--ip", str(a.address))
    assert r.rc == 1 and f"{a.address} changed while it was being released" in r.stderr and "Released" not in r.stdout
    block = store.block(a.block)
    assert block.attribute(a.ordinal)["handle_id"] == "net1.new" and block.seq_for_alloc[str(a.ordinal)] == new.sequence
    assert store.handle("net1.new").blocks == {a.block: 1} and store.handle("net1.old") is None
