"""calicoctl ippool: create (and every validation rule, as the IPPool kind checks it), enable,
disable, delete; pools listed and shown with `calicoctl get ippools` / `get ippool NAME`."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from calico_cni.model.records import CONFIRMED, Affinity, Block
from calico_ipam.errors import AddressesExhausted
from tests.calicoctl_support import add_endpoint, allocate
from tests.pools import create_pool, label_node


def test_create_writes_a_pool_the_allocator_uses(ctl, store):
    r = ctl("ippool", "create", "pool1", "--cidr", "198.18.0.0/24", "--block-size", "28")
    assert r.rc == 0, r.stderr
    assert "Created IP pool pool1" in r.stdout
    pool = store.pool("pool1")
    assert (str(pool.cidr), pool.block_size, pool.disabled, pool.node_selector) == ("198.18.0.0/24", 28, False, "all()")
    assert pool.allowed_uses == ("Workload", "Tunnel") and pool.assignment_mode == "Automatic"
    assert pool.doc["kind"] == "IPPool" and pool.doc["metadata"]["name"] == "pool1" and pool.doc["metadata"]["uid"]
    a = allocate(store, "net1.c1")
    assert a.address in ipaddress.ip_network("198.18.0.0/24") and a.prefixlen == 28


def test_create_with_every_option(ctl, store):
    r = ctl(
        "ippool", "create", "v6", "--cidr", "fd00:198:18::/64", "--node-selector", "zone == 'a'", "--disabled",
        "--allowed-uses", "workload", "--assignment-mode", "manual", "-o", "json",
    )
    assert r.rc == 0, r.stderr
    assert r.json()["spec"]["cidr"] == "fd00:198:18::/64"
    pool = store.pool("v6")
    assert (pool.block_size, pool.node_selector, pool.disabled, pool.allowed_uses, pool.assignment_mode) == (122, "zone == 'a'", True, ("Workload",), "Manual")


def test_default_block_sizes(ctl, store):
    assert ctl("ippool", "create", "a", "--cidr", "198.18.0.0/16").rc == 0
    assert ctl("ippool", "create", "b", "--cidr", "fd00:198:18::/48").rc == 0
    assert store.pool("a").block_size == 26 and store.pool("b").block_size == 122


def test_allowed_uses_comma_separated_or_repeated(ctl, store):
    assert ctl("ippool", "create", "a", "--cidr", "198.18.0.0/24", "--allowed-uses", "Tunnel,workload").rc == 0
    assert ctl("ippool", "create", "b", "--cidr", "198.18.1.0/24", "--allowed-uses", "Tunnel", "--allowed-uses", "Tunnel").rc == 0
    assert store.pool("a").allowed_uses == ("Tunnel", "Workload")
    assert store.pool("b").allowed_uses == ("Tunnel",)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cidr", "198.18.0.0"], "give a prefix length"),
        (["--cidr", "198.18.0.0/33"], "invalid CIDR '198.18.0.0/33': expected an IPv4 or IPv6 network"),
        (["--cidr", "banana/24"], "invalid CIDR 'banana/24': expected an IPv4 or IPv6 network"),
        (["--cidr", "198.18.0.1/24"], "IPPool CIDR is not strictly masked: the network is 198.18.0.0/24"),
        (["--cidr", "169.254.0.0/24"], "overlaps with IPv4 Link Local range 169.254.0.0/16"),
        (["--cidr", "127.0.0.0/24"], "reserved IPv4 range 127.0.0.0/8"),
        (["--cidr", "224.0.0.0/24"], "reserved IPv4 range 224.0.0.0/4"),
        (["--cidr", "fe80::/64"], "overlaps with IPv6 Link Local range fe80::/10"),
        (["--cidr", "::ffff:198.18.0.0/120"], "reserved IPv6 range ::ffff:0:0/96"),
        (["--cidr", "198.18.0.0/16", "--block-size", "19"], "spec.blockSize: IPv4 block size must be between 20 and 32, got 19"),
        (["--cidr", "198.18.0.0/16", "--block-size", "33"], "spec.blockSize: IPv4 block size must be between 20 and 32, got 33"),
        (["--cidr", "fd00:198:18::/48", "--block-size", "26"], "spec.blockSize: IPv6 block size must be between 116 and 128, got 26"),
        (["--cidr", "fd00:198:18::/48", "--block-size", "129"], "IPv6 block size must be between 116 and 128"),
        (["--cidr", "198.18.0.0/24", "--block-size", "22"], "IP pool size is too small for use with Calico IPAM: 198.18.0.0/24 must be equal to or greater than the block size /22"),
        (["--cidr", "fd00:198:18::/120", "--block-size", "118"], "IP pool size is too small for use with Calico IPAM: fd00:198:18::/120"),
        (["--cidr", "198.18.0.0/28"], "IP pool size is too small for use with Calico IPAM: 198.18.0.0/28 must be equal to or greater than the block size /26"),
        (["--cidr", "198.18.0.0/24", "--node-selector", "zone =="], "spec.nodeSelector: invalid selector 'zone =='"),
        (["--cidr", "198.18.0.0/24", "--node-selector", "has(zone"], "spec.nodeSelector: invalid selector 'has(zone'"),
        (["--cidr", "198.18.0.0/24", "--allowed-uses", "Storage"], "invalid allowed use 'Storage'"),
        (["--cidr", "198.18.0.0/24", "--allowed-uses", ","], "invalid allowed use"),
        (["--cidr", "198.18.0.0/24", "--assignment-mode", "Sometimes"], "invalid assignment mode"),
    ],
)
def test_create_validation(ctl, store, args, message):
    r = ctl("ippool", "create", "p", *args)
    assert r.rc == 1
    assert message in r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: ")
    assert store.pools() == []


@pytest.mark.parametrize("name", ["Pool1", "pool_1", "-pool", "pool/x", "a" * 254])
def test_create_rejects_bad_names(ctl, store, name):
    r = ctl("ippool", "create", "--cidr", "198.18.0.0/24", "--", name)
    assert r.rc == 1 and f"metadata.name: invalid name {name!r}" in r.stderr
    assert store.pools() == []


@pytest.mark.parametrize(
    "existing, new",
    [
        ("198.18.0.0/24", "198.18.0.0/25"),
        ("198.18.0.0/24", "198.18.0.128/25"),
        ("198.18.0.0/24", "198.18.0.0/16"),
        ("198.18.0.0/24", "198.18.0.0/24"),
        ("fd00:198:18::/64", "fd00:198:18::/120"),
    ],
)
def test_create_refuses_overlap(ctl, store, existing, new):
    create_pool(store, "old", existing, 122 if ":" in existing else 26)
    r = ctl("ippool", "create", "new", "--cidr", new, "--block-size", "122" if ":" in new else "26")
    assert r.rc == 1 and f"IPPool(new) CIDR {new} overlaps with IPPool(old) CIDR {existing}" in r.stderr
    assert [p.name for p in store.pools()] == ["old"]


def test_adjacent_and_other_family_pools_do_not_overlap(ctl, store):
    assert ctl("ippool", "create", "a", "--cidr", "198.18.0.0/24").rc == 0
    assert ctl("ippool", "create", "b", "--cidr", "198.18.1.0/24").rc == 0
    assert ctl("ippool", "create", "c", "--cidr", "fd00:198:18::/64").rc == 0
    assert [p.name for p in store.pools()] == ["a", "b", "c"]


def test_create_refuses_an_existing_name(ctl, store):
    create_pool(store, "p", "198.18.0.0/24")
    r = ctl("ippool", "create", "p", "--cidr", "198.18.5.0/24")
    assert r.rc == 1 and "resource already exists: IPPool(p)" in r.stderr
    assert str(store.pool("p").cidr) == "198.18.0.0/24"


def test_get_ippools_in_every_format(ctl, store):
    create_pool(store, "b", "198.18.1.0/24", 28, node_selector="zone == 'a'")
    create_pool(store, "a", "fd00:198:18::/64", disabled=True)
    r = ctl("get", "ippools")
    assert r.rc == 0
    assert r.lines[0].split() == ["NAME", "CIDR", "SELECTOR"]
    assert r.lines[1].split() == ["a", "fd00:198:18::/64", "all()"]
    assert r.lines[2].split() == ["b", "198.18.1.0/24", "zone", "==", "'a'"]
    wide = ctl("get", "ippools", "-o", "wide")
    assert wide.rc == 0
    assert wide.lines[0].split() == ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR", "ASSIGNMENTMODE"]
    assert wide.lines[1].split() == ["a", "fd00:198:18::/64", "false", "Never", "Never", "true", "false", "all()", "Automatic"]
    assert wide.lines[2].split() == ["b", "198.18.1.0/24", "false", "Never", "Never", "false", "false", "zone", "==", "'a'", "Automatic"]
    listed = ctl("get", "ippools", "-o", "json").json()
    assert listed["kind"] == "IPPoolList"
    docs = listed["items"]
    assert [d["metadata"]["name"] for d in docs] == ["a", "b"]
    assert docs[1]["spec"]["nodeSelector"] == "zone == 'a'" and docs[0]["spec"]["disabled"] is True
    # What the table no longer shows (block size, allowed uses) is in the documents.
    assert (docs[0]["spec"]["blockSize"], docs[1]["spec"]["blockSize"]) == (122, 28)
    assert docs[0]["spec"]["allowedUses"] == docs[1]["spec"]["allowedUses"] == ["Workload", "Tunnel"]
    assert docs[1]["metadata"]["resourceVersion"] == str(store.pool("b").revision)
    assert yaml.safe_load(ctl("get", "ippools", "-o", "yaml").stdout) == listed
    one = ctl("get", "ippool", "b", "-o", "yaml")
    assert yaml.safe_load(one.stdout) == docs[1]
    table = ctl("get", "ippool", "b")
    assert len(table.lines) == 2 and table.lines[1].startswith("b ")
    missing = ctl("get", "ippool", "nope")
    assert missing.rc == 1 and "resource does not exist: IPPool(nope)" in missing.stderr


def test_get_ippools_when_empty_prints_only_the_header(ctl, store):
    r = ctl("get", "ippools")
    assert r.rc == 0 and len(r.lines) == 1
    assert ctl("get", "ippools", "-o", "json").json()["items"] == []


def test_disable_stops_allocation_and_enable_restores_it(ctl, store):
    create_pool(store, "p", "198.18.0.0/24")
    r = ctl("ippool", "disable", "p")
    assert r.rc == 0 and "IP pool p disabled" in r.stdout
    assert store.pool("p").disabled
    assert "already disabled" in ctl("ippool", "disable", "p").stdout
    with pytest.raises(AddressesExhausted, match="no configured Calico pools"):
        allocate(store, "net1.c1")
    r = ctl("ippool", "enable", "p")
    assert r.rc == 0 and "IP pool p enabled" in r.stdout and not store.pool("p").disabled
    assert "already enabled" in ctl("ippool", "enable", "p").stdout
    allocate(store, "net1.c1")
    assert ctl("ippool", "enable", "nope").rc == 1


def test_enable_keeps_fields_it_does_not_model(ctl, store):
    pool = create_pool(store, "p", "198.18.0.0/24")
    pool.doc["spec"]["natOutgoing"] = True
    pool.doc["spec"]["disableBGPExport"] = True
    pool.doc["metadata"]["labels"] = {"team": "x"}
    assert store.commit(puts=[pool])
    assert ctl("ippool", "disable", "p").rc == 0
    doc = store.pool("p").doc
    assert doc["spec"]["natOutgoing"] is True and doc["spec"]["disableBGPExport"] is True and doc["metadata"]["labels"] == {"team": "x"}


def test_node_selector_follows_node_labels(ctl, store):
    assert ctl("ippool", "create", "p", "--cidr", "198.18.0.0/24", "--node-selector", "zone == 'a'").rc == 0
    label_node(store, "node1", zone="b")
    with pytest.raises(AddressesExhausted, match="no configured Calico pools for node node1"):
        allocate(store, "net1.c1")
    assert ctl("label", "nodes", "node1", "zone=a", "--overwrite").rc == 0
    assert allocate(store, "net1.c1").address in ipaddress.ip_network("198.18.0.0/24")


def test_delete_an_unused_pool_removes_its_blocks_and_affinities(ctl, store):
    create_pool(store, "p", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1")
    create_pool(store, "other", "198.18.1.0/24", 28)
    from calico_ipam.allocator import release

    release(store, "net1.c1", None)  # the node keeps its (now empty) affine block
    assert store.block(a.block) is not None and store.affinities("node1")
    keep = allocate(store, "net1.c2", address="198.18.1.5")
    r = ctl("ippool", "delete", "p")
    assert r.rc == 0, r.stderr
    assert "Deleted IP pool p (198.18.0.0/24): released 0 addresses, removed 1 blocks." in r.stdout
    assert store.pool("p") is None and store.block(a.block) is None
    assert [x.cidr for x in store.affinities("node1")] == [keep.block]
    assert store.block(keep.block) is not None and store.pool("other") is not None


def test_delete_is_refused_while_addresses_are_allocated(ctl, store):
    create_pool(store, "p", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1")
    r = ctl("ippool", "delete", "p")
    assert r.rc == 1
    assert f"IP pool p still has 1 allocated addresses: {a.address} (net1.c1)" in r.stderr and "--force" in r.stderr
    pool = store.pool("p")
    assert pool is not None and not pool.disabled
    assert store.handle("net1.c1").blocks == {a.block: 1}


def test_refused_delete_leaves_a_disabled_pool_disabled(ctl, store):
    create_pool(store, "p", "198.18.0.0/24", 28)
    allocate(store, "net1.c1")
    assert ctl("ippool", "disable", "p").rc == 0
    assert ctl("ippool", "delete", "p").rc == 1
    assert store.pool("p").disabled


def test_delete_force_releases_and_says_what(ctl, store):
    create_pool(store, "p", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1")
    b = allocate(store, "net1.c2", node="node2")
    add_endpoint(store, "node1-cni-c1-eth0", "node1", "c1", a.address)
    r = ctl("ippool", "delete", "p", "--force")
    assert r.rc == 0, r.stderr
    assert f"Releasing {a.address} (handle net1.c1, node node1, used by workload endpoint default/node1-cni-c1-eth0)" in r.stdout
    assert f"Releasing {b.address} (handle net1.c2, node node2)" in r.stdout
    assert "released 2 addresses, removed 2 blocks" in r.stdout
    assert store.pool("p") is None and store.all_blocks() == [] and store.handles() == [] and store.affinities() == []


def test_delete_missing_pool(ctl, store):
    r = ctl("ippool", "delete", "nope")
    assert r.rc == 1 and "resource does not exist: IPPool(nope)" in r.stderr


def test_pool_commands_leave_unrelated_blocks_alone(ctl, store):
    create_pool(store, "p", "198.18.0.0/24", 28)
    stray = Block.new("198.18.9.0/28", "node9")
    assert store.commit(puts=[stray, Affinity("node9", stray.cidr, CONFIRMED)])
    assert ctl("ippool", "delete", "p").rc == 0
    assert store.block(stray.cidr) is not None and store.affinities("node9")


def test_create_rechecks_overlap_when_a_pool_appears_concurrently(ctl, store, monkeypatch):
    """The overlap check and the write are one compare-and-swap: a pool created between them
    makes the write fail, and the retry sees the overlap."""
    from calico_cni.datastore import resources as stored
    from calico_cni.model.kinds.ipam import IPPOOL

    stale = stored.list_kind(store, IPPOOL)  # what the command reads first: no pool yet
    create_pool(store, "first", "198.18.0.0/24")  # then another operator creates one
    real = stored.list_kind
    calls = []

    def racing(store, kind, namespace=None):
        if kind is not IPPOOL:
            return real(store, kind, namespace)
        calls.append(1)
        return stale if len(calls) == 1 else real(store, kind, namespace)

    monkeypatch.setattr(stored, "list_kind", racing)
    r = ctl("ippool", "create", "second", "--cidr", "198.18.0.128/25")
    assert len(calls) == 2
    assert r.rc == 1 and "IPPool(second) CIDR 198.18.0.128/25 overlaps with IPPool(first) CIDR 198.18.0.0/24" in r.stderr
    assert [p.name for p in store.pools()] == ["first"]


def _allocations_seen_late(monkeypatch, checks_blind: int):
    """Make `ippool delete`'s first `checks_blind` looks at the pool's allocations see none, as if
    they were made just after each look."""
    from calico_ipam import repair

    real, calls = repair.pool_allocations, []

    def late(snapshot, pool):
        calls.append(1)
        return [] if len(calls) <= checks_blind else real(snapshot, pool)

    monkeypatch.setattr(repair, "pool_allocations", late)


def test_delete_refused_after_disabling_re_enables_the_pool(ctl, store, monkeypatch):
    create_pool(store, "p", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1")
    _allocations_seen_late(monkeypatch, 1)
    r = ctl("ippool", "delete", "p")
    assert r.rc == 1 and f"IP pool p still has 1 allocated addresses: {a.address} (net1.c1)" in r.stderr
    assert not store.pool("p").disabled
    assert store.handle("net1.c1").blocks == {a.block: 1}


def test_delete_stops_at_a_block_that_gained_an_allocation(ctl, store, monkeypatch):
    create_pool(store, "p", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1")
    _allocations_seen_late(monkeypatch, 2)
    r = ctl("ippool", "delete", "p")
    assert r.rc == 1 and f"block {a.block} of IP pool p has new allocations ({a.address}, ...); the pool is left disabled" in r.stderr
    assert store.pool("p").disabled and store.block(a.block) is not None
    assert store.handle("net1.c1").blocks == {a.block: 1}


def test_delete_force_releases_an_allocation_made_meanwhile(ctl, store, monkeypatch):
    create_pool(store, "p", "198.18.0.0/24", 28)
    a = allocate(store, "net1.c1")
    _allocations_seen_late(monkeypatch, 2)
    r = ctl("ippool", "delete", "p", "--force")
    assert r.rc == 0, r.stderr
    assert f"Releasing {a.address} (handle net1.c1), allocated meanwhile" in r.stdout
    assert "removed 1 blocks" in r.stdout
    assert "released 1 addresses" in r.stdout  # the one released meanwhile counts
    assert store.pool("p") is None and store.all_blocks() == [] and store.handles() == [] and store.affinities() == []
