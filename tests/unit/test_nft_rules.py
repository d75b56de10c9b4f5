"""The daemon's nftables rendering (calico_cni.node.nft_rules, pure) and its controller
(calico_cni.node.rules) against a fake nft: which sets and rules each cluster gets (Felix's
masq-ipam-pools / all-ipam-pools, natOutgoingAddress, the VXLAN filters, the tunnel-source
masquerade, the VXLAN NOTRACK), deterministic text, and the controller's level-triggered passes
(nothing before the first full list, a re-apply when the table was changed behind its back or the
rendering changed, none otherwise, no nft run at all for a change of IPAM blocks only, nft failures
reported once). The rules' effect on traffic is tested in
tests/namespaces/test_nftables.py with the real nft and kernel."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from calico_cni.datastore.etcd import KeyValue
from calico_cni.dataplane import nftables
from calico_cni.dataplane.nftables import NftError
from calico_cni.model import keys
from calico_cni.node.cluster_view import FELIX_CONFIGURATIONS, ClusterView
from calico_cni.node.nft_rules import tables
from calico_cni.node.nft_tables import NftSet, Section, Table, body, script
from calico_cni.node.parts import PartHealth
from calico_cni.node import rules
from calico_cni.node.rules import RulesController
from calico_cni.node.syncer import Cache

API = "projectcalico.org/v3"
ME = "node-a"


def kv(key: str, kind: str, name: str, spec: dict, revision: int = 1) -> KeyValue:
    value = json.dumps({"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}).encode()
    return KeyValue(key, value, revision, revision, 1)


def pool(name: str, cidr: str, revision: int = 1, **spec) -> KeyValue:
    return kv(keys.POOLS + name, "IPPool", name, {"cidr": cidr, **spec}, revision)


def node(name: str, v4: str | None = None, v6: str | None = None, **spec) -> KeyValue:
    bgp = {k: v for k, v in (("ipv4Address", v4), ("ipv6Address", v6)) if v}
    return kv(keys.NODES + name, "Node", name, {"bgp": bgp, **spec})


def felix(name: str = "default", **spec) -> KeyValue:
    return kv(FELIX_CONFIGURATIONS + name, "FelixConfiguration", name, spec)


def view(*items: KeyValue) -> ClusterView:
    return ClusterView.read({i.key: i for i in items}, ME)


def table_text(*items: KeyValue, family: int = 4) -> str:
    return body(tables(view(*items))[family])


def sets_of(table: Table) -> dict[str, tuple[str, ...]]:
    return {s.name: s.elements for section in table.sections for s in section.sets}


def rules_of(table: Table) -> dict[str, tuple[str, ...]]:
    return {c.name: c.rules for section in table.sections for c in section.chains}


# --- NAT outgoing ------------------------------------------------------------------------------


def test_nat_outgoing_masquerades_masq_pools_to_anything_outside_every_pool():
    t = tables(view(pool("a", "198.18.0.0/20", natOutgoing=True), pool("b", "198.18.16.0/20"), pool("off", "198.18.64.0/20", disabled=True, natOutgoing=True)))[
        4
    ]
    sets = sets_of(t)
    # Disabled pools count as pools and, as in Felix's masq manager, keep their natOutgoing.
    assert sets["all-ipam-pools"] == ("198.18.0.0/19", "198.18.64.0/20")  # a and b touch: merged
    assert sets["masq-ipam-pools"] == ("198.18.0.0/20", "198.18.64.0/20")
    chains = rules_of(t)
    assert chains["nat-postrouting"] == ("jump nat-outgoing",)
    assert chains["nat-outgoing"] == ("ip saddr @masq-ipam-pools ip daddr != @all-ipam-pools masquerade",)
    # Node addresses are not exempt (Felix NATs traffic to them too): nothing mentions them.
    assert "198.19" not in body(t)


def test_no_nat_outgoing_pool_means_no_nat_chain_but_the_pool_sets():
    t = tables(view(pool("a", "198.18.0.0/16")))[4]
    assert sets_of(t) == {"all-ipam-pools": ("198.18.0.0/16",), "masq-ipam-pools": ()}
    assert rules_of(t) == {}


def test_nat_outgoing_address_snats_ipv4_only():
    items = (pool("a", "198.18.0.0/16", natOutgoing=True), pool("b6", "fd00:198:18::/48", natOutgoing=True), felix(natOutgoingAddress="198.19.0.99"))
    ts = tables(view(*items))
    assert rules_of(ts[4])["nat-outgoing"] == ("ip saddr @masq-ipam-pools ip daddr != @all-ipam-pools snat to 198.19.0.99",)
    assert rules_of(ts[6])["nat-outgoing"] == ("ip6 saddr @masq-ipam-pools ip6 daddr != @all-ipam-pools masquerade",)
    assert sets_of(ts[6])["all-ipam-pools"] == ("fd00:198:18::/48",)
    assert sets_of(ts[4])["all-ipam-pools"] == ("198.18.0.0/16",)  # families never mix


def test_overlapping_pools_are_merged_in_the_interval_set():
    """nft refuses overlapping intervals in one set; a pool inside another is absorbed."""
    t = tables(view(pool("big", "198.18.0.0/16", natOutgoing=True), pool("inner", "198.18.4.0/24", natOutgoing=True)))[4]
    assert sets_of(t)["all-ipam-pools"] == ("198.18.0.0/16",)


# --- VXLAN -------------------------------------------------------------------------------------

VXLAN_CLUSTER = (
    pool("vx", "198.18.0.0/16", vxlanMode="Always"),
    node(ME, "198.19.1.1/24", ipv4VXLANTunnelAddr="198.18.0.1"),
    node("node-c", "198.19.2.3/24", ipv4VXLANTunnelAddr="198.18.0.65"),
    node("node-b", "198.19.1.2/24", ipv4VXLANTunnelAddr="198.18.0.129"),
    node("node-new", "198.19.1.9/24"),  # no tunnel address yet: not a VTEP
)


def test_vxlan_filters_accept_only_other_vteps_on_the_port():
    t = tables(view(*VXLAN_CLUSTER))[4]
    assert sets_of(t)["all-vxlan-net"] == ("198.19.1.2", "198.19.2.3")  # sorted, not ourselves
    chains = rules_of(t)
    assert chains["filter-input"] == ("udp dport 4789 ip saddr != @all-vxlan-net fib daddr type local counter drop",)
    assert chains["filter-prerouting"] == ('iifname "cali*" udp dport 4789 counter drop',)
    assert chains["nat-postrouting"] == ('oifname "vxlan.calico" fib saddr . oif type != local fib saddr type local masquerade',)
    # Felix's NOTRACK for VXLAN, both ways (raw PREROUTING and raw OUTPUT).
    assert chains["raw-prerouting"] == chains["raw-output"] == ("udp dport 4789 notrack",)
    text = body(t)
    assert "\t\ttype filter hook prerouting priority raw; policy accept;\n\t\tudp dport 4789 notrack\n" in text
    assert "\t\ttype filter hook output priority raw; policy accept;\n\t\tudp dport 4789 notrack\n" in text


def test_vxlan_port_from_felix_configuration():
    t = tables(view(*VXLAN_CLUSTER, felix(vxlanPort=8472), felix(f"node.{ME}", vxlanPort=4790)))[4]
    assert rules_of(t)["filter-prerouting"] == ('iifname "cali*" udp dport 4790 counter drop',)
    assert rules_of(t)["raw-prerouting"] == rules_of(t)["raw-output"] == ("udp dport 4790 notrack",)


def test_no_vxlan_filters_without_a_vxlan_pool():
    items = (pool("vx", "198.18.0.0/16", vxlanMode="Never"), pool("vx6", "fd00:198:18::/48", vxlanMode="Always"), *VXLAN_CLUSTER[1:])
    t = tables(view(*items))[4]
    assert "all-vxlan-net" not in sets_of(t)
    assert rules_of(t) == {}


def test_no_tunnel_masquerade_before_this_node_has_its_tunnel_address():
    items = (VXLAN_CLUSTER[0], node(ME, "198.19.1.1/24"), *VXLAN_CLUSTER[2:])
    chains = rules_of(tables(view(*items))[4])
    assert "nat-postrouting" not in chains
    assert "filter-input" in chains  # the filters do not wait for it


def test_ipv6_vxlan_uses_its_own_device_and_addresses():
    items = (
        pool("vx6", "fd00:198:18::/48", vxlanMode="CrossSubnet"),
        node(ME, v6="fd00:198:19::1/64", ipv6VXLANTunnelAddr="fd00:198:18::1"),
        node("node-b", "198.19.1.2/24", "fd00:198:19::2/64", ipv6VXLANTunnelAddr="fd00:198:18::41", ipv4VXLANTunnelAddr="198.18.9.9"),
    )
    ts = tables(view(*items))
    assert sets_of(ts[6])["all-vxlan-net"] == ("fd00:198:19::2",)
    assert rules_of(ts[6])["nat-postrouting"] == ('oifname "vxlan-v6.calico" fib saddr . oif type != local fib saddr type local masquerade',)
    assert rules_of(ts[6])["filter-input"] == ("udp dport 4789 ip6 saddr != @all-vxlan-net fib daddr type local counter drop",)
    assert rules_of(ts[6])["raw-prerouting"] == rules_of(ts[6])["raw-output"] == ("udp dport 4789 notrack",)
    assert rules_of(ts[4]) == {}  # no IPv4 VXLAN pool


def test_ipip_in_use_masquerades_wrong_sources_leaving_tunl0():
    me = kv(keys.NODES + ME, "Node", ME, {"bgp": {"ipv4Address": "198.19.1.1/24", "ipv4IPIPTunnelAddr": "198.18.0.1"}})
    items = (pool("ip", "198.18.0.0/16", ipipMode="Always", natOutgoing=True), me, node("node-b", "198.19.1.2/24"))
    chains = rules_of(tables(view(*items))[4])
    assert chains["nat-postrouting"] == ("jump nat-outgoing", 'oifname "tunl0" fib saddr . oif type != local fib saddr type local masquerade')
    assert "filter-input" not in chains  # Felix's IPIP input filter is not part of this issue


# --- text ----------------------------------------------------------------------------------------


def test_text_is_deterministic_whatever_the_order_of_the_datastore():
    a = table_text(*VXLAN_CLUSTER, pool("n", "198.19.128.0/24", natOutgoing=True))
    b = table_text(*reversed((*VXLAN_CLUSTER, pool("n", "198.19.128.0/24", natOutgoing=True))))
    assert a == b


def test_script_replaces_the_table_whole():
    """Felix's names: `ip calico` and `ip6 calico`, and no other table is named."""
    for family, name in ((4, "ip"), (6, "ip6")):
        text = script(tables(view(*VXLAN_CLUSTER))[family])
        lines = text.splitlines()
        assert lines[:3] == [f"table {name} calico {{}}", f"delete table {name} calico", f"table {name} calico {{"]
        assert text.count("table ") == 3
        assert lines[-1] == "}"


def test_an_empty_cluster_gives_an_empty_table_per_family():
    ts = tables(view())
    assert (
        body(ts[6])
        == "table ip6 calico {\n\tset all-ipam-pools {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t}\n\tset masq-ipam-pools {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t}\n}\n"
    )


def test_sections_compose_and_refuse_a_name_given_twice():
    extra = Section(sets=(NftSet("all-ipam-pools", (), True),))
    base = tables(view())[4]
    with pytest.raises(ValueError, match="all-ipam-pools"):
        body(Table(base.family, (*base.sections, extra)))
    other = Section(sets=(NftSet("policy-set", ("198.18.0.1",), False),))
    assert "set policy-set" in body(Table(base.family, (*base.sections, other)))


# --- the controller ------------------------------------------------------------------------------


class FakeNft:
    """nft's tables as text: `apply` stores a whole script's table body (as nft would list it),
    and appends a delta's commands to it (so the listing changes as the kernel's would)."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], str] = {}
        self.applied: list[str] = []
        self.listed = 0
        self.fail: str | None = None
        self.generations = 1  # the kernel's ruleset generation: one more at every commit

    def generation(self) -> int:
        if self.fail:
            raise NftError(self.fail)
        return self.generations

    def tamper(self, family: str, name: str = "calico") -> None:
        """Someone else deletes the table (a commit of theirs)."""
        del self.tables[(family, name)]
        self.generations += 1

    def apply(self, text: str) -> None:
        if self.fail:
            raise NftError(self.fail)
        self.applied.append(text)
        self.generations += 1
        lines = text.splitlines(keepends=True)
        i = 0
        while i < len(lines):
            words = lines[i].split()
            if words[0] == "table" and words[-1] == "{}":
                # A whole table: "table F N {}", "delete table F N", then its body up to "}".
                end = lines.index("}\n", i + 2)
                self.tables[(words[1], words[2])] = "".join(lines[i + 2 : end + 1])
                i = end + 1
            else:  # "<verb> <object> <family> <table> ...": a delta's command
                self.tables[(words[2], words[3])] += lines[i]
                i += 1

    def list_table(self, family: str, name: str) -> str | None:
        self.listed += 1
        if self.fail:
            raise NftError(self.fail)
        return self.tables.get((family, name))


def whole_tables(text: str) -> list[str]:
    """The families of the tables a script writes whole."""
    return [line.split()[1] for line in text.splitlines() if line.startswith("table ") and line.endswith(" {}")]


def synced_cache(*items: KeyValue) -> Cache:
    cache = Cache()
    cache.replace(items, 10)
    return cache


def test_controller_applies_each_family_once_and_again_only_on_change():
    cache = synced_cache(pool("a", "198.18.0.0/16", natOutgoing=True))
    nft = FakeNft()
    c = RulesController(ME, cache, nft=nft)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    # Both tables whole, in one nft run (one transaction).
    assert len(nft.applied) == 1 and whole_tables(nft.applied[0]) == ["ip", "ip6"]
    assert c.run_pass(cache.snapshot(), now=rules.PERIOD) is None
    assert len(nft.applied) == 1  # nothing changed: nothing written
    # Someone flushes our table: the next kernel check writes it again.
    nft.tamper("ip")
    assert c.run_pass(cache.snapshot(), now=2 * rules.PERIOD) is None
    assert len(nft.applied) == 2 and whole_tables(nft.applied[-1]) == ["ip"] and "masq-ipam-pools" in nft.tables[("ip", "calico")]
    # The datastore changes: the new rendering is written at once.
    cache.replace([pool("a", "198.18.0.0/16", revision=11)], 11)
    assert c.run_pass(cache.snapshot(), now=2 * rules.PERIOD + 0.1) is None
    # Only what changed: the NAT chains go, the pool sets are refilled, nothing else is touched.
    assert len(nft.applied) == 3 and nft.applied[-1].splitlines() == [
        "flush set ip calico masq-ipam-pools",
        "flush chain ip calico nat-postrouting",
        "flush chain ip calico nat-outgoing",
        "delete chain ip calico nat-postrouting",
        "delete chain ip calico nat-outgoing",
    ]


def block(cidr: str, revision: int) -> KeyValue:
    """An IPAM block record: the rules never read it, so its content does not matter here."""
    name = cidr.replace("/", "-")
    return KeyValue(keys.IPAM + "assignment/ipv4/block/" + name, b'{"cidr": "%s"}' % cidr.encode(), revision, revision, 1)


def test_a_change_of_blocks_only_runs_no_nft_until_the_period_passes(monkeypatch):
    """Every pod written anywhere changes a block and so the cache's version: that must cost no
    nft run (no apply, no listing); the periodic kernel check still comes once PERIOD passed."""
    base = (pool("a", "198.18.0.0/16", natOutgoing=True, vxlanMode="Always"), node(ME, "198.19.1.1/24"), node("node-b", "198.19.1.2/24"))
    cache = synced_cache(*base, block("198.18.0.0/26", 10))
    nft = FakeNft()
    c = RulesController(ME, cache, nft=nft)
    assert c.run_pass(cache.snapshot(), now=100.0) is None
    applied, listed = len(nft.applied), nft.listed
    assert applied == 1 and listed == 2  # one apply for both, and one listing per family
    reads = []
    real_read = ClusterView.read
    monkeypatch.setattr(rules.ClusterView, "read", lambda items, nodename: reads.append(sorted(items)) or real_read(items, nodename))
    for revision in range(11, 14):  # pods come and go: the block changes, and a new block appears
        cache.replace((*base, block("198.18.0.0/26", revision), block("198.18.0.64/26", revision)), revision)
        assert c.run_pass(cache.snapshot(), now=100.0 + (revision - 10)) is None
    assert (len(nft.applied), nft.listed) == (applied, listed)
    assert reads == []  # nor was anything parsed again
    # PERIOD after the last kernel check, nothing committed by anyone since (the ruleset's
    # generation has not moved): no listing either.
    assert c.run_pass(cache.snapshot(), now=100.0 + rules.PERIOD) is None
    assert (len(nft.applied), nft.listed) == (applied, listed)
    # Another program commits to its own table: both tables are listed at the next check (and,
    # unchanged, not written).
    nft.generations += 1
    assert c.run_pass(cache.snapshot(), now=100.0 + 2 * rules.PERIOD) is None
    assert (len(nft.applied), nft.listed) == (applied, listed + 2)
    # A change of a record the rules read is written at once, whatever the time.
    cache.replace((pool("a", "198.18.0.0/16", vxlanMode="Always", revision=20), *base[1:]), 20)
    assert c.run_pass(cache.snapshot(), now=100.0 + 2 * rules.PERIOD + 0.1) is None
    assert reads == [sorted(k.key for k in base)]  # read without the blocks
    # Only the IPv4 table changed: it alone is written, as a delta, and its listing is taken at once
    # (the one later checks compare with).
    assert (len(nft.applied), nft.listed) == (applied + 1, listed + 3)
    assert " ip calico " in nft.applied[-1] and "delete chain ip calico nat-outgoing" in nft.applied[-1]
    assert c.run_pass(cache.snapshot(), now=100.0 + 3 * rules.PERIOD) is None
    assert (len(nft.applied), nft.listed) == (applied + 1, listed + 3)  # nothing committed since: no listing


def test_a_commit_of_another_program_between_our_write_and_the_check_means_a_whole_write():
    """We wrote, then someone committed before we could list: whether they touched our table
    cannot be told, so the check writes it whole; a listing equal to ours changes nothing."""
    cache = synced_cache(pool("a", "198.18.0.0/16", natOutgoing=True))
    nft = FakeNft()
    c = RulesController(ME, cache, nft=nft)
    assert c.run_pass(cache.snapshot(), now=0.0) is None  # written, then listed at once
    cache.replace([pool("a", "198.18.0.0/16", revision=11)], 11)
    assert c.run_pass(cache.snapshot(), now=0.1, check=False) is None  # a delta, as a request writes: not listed
    nft.generations += 1  # someone else's commit
    assert c.run_pass(cache.snapshot(), now=rules.PERIOD + 1) is None
    assert whole_tables(nft.applied[-1]) == ["ip"]  # the IPv4 table whole
    assert sum("ip6" in whole_tables(t) for t in nft.applied) == 1  # the IPv6 one was listed, and equal


def test_controller_reports_nft_failures_once_and_recovers(caplog):
    cache = synced_cache(pool("a", "198.18.0.0/16"))
    nft = FakeNft()
    nft.fail = "nft is not installed: install Debian's nftables package"
    c = RulesController(ME, cache, nft=nft)
    with caplog.at_level(logging.ERROR, logger="calico_cni.node.rules"):
        for _ in range(3):
            failure = c.run_pass(cache.snapshot())
    assert failure == "table ip calico and table ip6 calico not programmed: nft is not installed: install Debian's nftables package"
    assert len([r for r in caplog.records if "ip calico and table ip6 calico not programmed" in r.getMessage()]) == 1
    nft.fail = None
    assert c.run_pass(cache.snapshot()) is None
    assert len(nft.applied) == 1


def test_controller_changes_nothing_before_the_first_full_list():
    cache = Cache()
    nft = FakeNft()
    c = RulesController(ME, cache, nft=nft)
    stop, health = threading.Event(), PartHealth()
    thread = threading.Thread(target=c.run, args=(stop, health), daemon=True)
    thread.start()
    try:
        cache.wait(0, 0.3)
        assert nft.applied == [] and not health.ready
        assert health.detail == "waiting for the first full list of the datastore"
        cache.replace([pool("a", "198.18.0.0/16")], 5)
        deadline = threading.Event()
        for _ in range(100):  # a functional wait for the pass, not a timing assertion
            if health.ready:
                break
            deadline.wait(0.05)
        assert health.ready and len(nft.applied) == 1
    finally:
        stop.set()
        cache.replace([], 6)  # wakes the loop from its wait, so it sees `stop` now
        thread.join(10)
    assert not thread.is_alive()


def _fake_nft(tmp_path, monkeypatch, shell: str) -> None:
    """nftables runs `shell` (a /bin/sh script) in place of nft."""
    fake = tmp_path / "nft"
    fake.write_text("#!/bin/sh\n" + shell + "\n")
    fake.chmod(0o755)
    monkeypatch.setattr(nftables, "NFT", str(fake))


def test_nft_missing_slow_or_refusing_is_one_nft_error(tmp_path, monkeypatch):
    """Listings run the nft command (rulesets go through libnftables in-process: its errors are
    tested in tests/namespaces/test_nftables.py)."""
    monkeypatch.setattr(nftables, "NFT", str(tmp_path / "absent"))
    with pytest.raises(NftError, match="is not installed"):
        nftables.list_table("ip", "calico")
    _fake_nft(tmp_path, monkeypatch, "sleep 5")
    with pytest.raises(NftError, match=r"did not finish within 0.2 s"):
        nftables.list_table("ip", "calico", timeout=0.2)
    _fake_nft(tmp_path, monkeypatch, "echo 'Error: Could not process rule: No such file or directory' >&2; exit 1")
    assert nftables.list_table("ip", "calico") is None
    _fake_nft(tmp_path, monkeypatch, "echo 'Error: Operation not permitted' >&2; exit 1")
    with pytest.raises(NftError, match="could not list table ip calico: Error: Operation not permitted"):
        nftables.list_table("ip", "calico")
    with pytest.raises(NftError, match="not a table name"):
        nftables.list_table("ip", "bad name")


def test_a_delta_on_a_table_someone_flushed_is_not_taken_for_our_work():
    """Someone flushes our table, then our next delta applies cleanly on what is left: the check
    must not adopt that listing as ours (policy would stay gone), but write the table whole."""
    cache = synced_cache(pool("a", "198.18.0.0/16", natOutgoing=True))
    nft = FakeNft()
    c = RulesController(ME, cache, nft=nft)
    assert c.run_pass(cache.snapshot(), now=0.0) is None  # written whole, listing adopted
    nft.tables[("ip", "calico")] = ""  # flushed behind our back (a commit of theirs)
    nft.generations += 1
    cache.replace([pool("a", "198.18.0.0/16", natOutgoing=True, vxlanMode="Always", revision=11)], 11)
    assert c.run_pass(cache.snapshot(), now=0.1) is None
    assert whole_tables(nft.applied[-2]) == [], "first our delta"
    assert whole_tables(nft.applied[-1]) == ["ip"] and "nat-outgoing" in nft.tables[("ip", "calico")]


def test_a_missing_table_is_written_again_even_without_a_generation():
    """With the generation unreadable, a deleted table (listing None) is never "adopted": the check
    writes it whole."""

    class Blind(FakeNft):
        def generation(self) -> int:
            raise NftError("cannot read the nftables generation")

    cache = synced_cache(pool("a", "198.18.0.0/16", natOutgoing=True))
    nft = Blind()
    c = RulesController(ME, cache, nft=nft)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    del nft.tables[("ip", "calico")]
    assert c.run_pass(cache.snapshot(), now=rules.PERIOD) is None
    assert whole_tables(nft.applied[-1]) == ["ip"] and ("ip", "calico") in nft.tables
