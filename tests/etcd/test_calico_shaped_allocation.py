"""Records shaped exactly as Calico writes them go through our allocator and the calico-ipam
plugin, and the outcome is what Calico would do (issue 15, items 4, 5, 7 and 8).

Shapes (libcalico-go v3.30.0 unless a test says otherwise):
- `model.BlockAffinity` (lib/backend/model/block_affinity.go): `{"state": ..., "deleted": ...}`.
  Before Calico v3.0.7 the value carried nothing: Calico's Python IPAM wrote an empty value and
  the early Go port `{}` (libcalico-go commit 9725a759, `BlockAffinityValue = "{}"`). v3.30's
  `model.ParseValue` (backend/model/keys.go) still reads the empty value as `{}`, and ipam.go's
  `getBlockFromAffinity` treats the empty state as confirmed.
- `model.AllocationBlock` (lib/backend/model/block.go): every field written, none omitempty but
  `hostAffinity`; `affinity` is `"host:<node>"` or null. `model.AllocationAttribute`:
  `{"handle_id": ..., "secondary": {...}}`. Calico's CNI plugin (cni-plugin/pkg/ipamplugin) uses
  the handle `<network>.<containerID>` and attributes node, timestamp, namespace, pod.
- `model.IPAMHandle` (lib/backend/model/ipam_handle.go): `{"block": {<cidr>: <count>}, "deleted": false}`.
- `model.IPAMConfig` (lib/backend/model/ipam_config.go): `strict_affinity`, `auto_allocate_blocks`
  and `maxBlocksPerHost`, all omitempty (so a limit of 0 is not written).
- IPPool as v3.30's clientv3 (lib/clientv3/ippool.go) stores it, defaults filled in; v3.31's
  IPPoolSpec adds `namespaceSelector,omitempty` (api/pkg/apis/projectcalico/v3/ippool.go), and its
  validator refuses it on a pool that allows Tunnel, so such pools allow Workload only.
- A pending affinity with no block: what Calico v3.30's `getPendingAffinity` leaves when the
  claiming process dies before `claimAffineBlock` creates the block (ipam_block_reader_writer.go).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from calico_cni.config import ConfigError, ipam_settings
from calico_cni.model import keys
from calico_cni.protocol.errors import INVALID_CONFIG, IPAM_CONFLICT, IPAM_EXHAUSTED
from calico_ipam import allocator
from calico_ipam.allocator import Attachment, FamilyRequest
from calico_ipam.capacity import has_room
from calico_ipam.errors import AddressConflict, AddressesExhausted
from calico_ipam.pools import usable_pools
from tests.conftest import cni_env, run_plugin

NODE = "node1"
CALICO_TS = "2025-05-01 10:00:00.123456789 +0000 UTC"  # Calico's CNI plugin: time.Now().UTC().String()


# ------------------------------------------------------------------------------------------------
# Calico-shaped records


def put(store, key: str, value: bytes | dict) -> None:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    ok, _ = store.client.commit([], [(key, raw)], [])
    assert ok


def raw(store, key: str) -> Any:
    kv = store.client.get(key)
    return None if kv is None else (json.loads(kv.value) if kv.value else kv.value)


def calico_pool(store, name: str, cidr: str, block_size: int, namespace_selector: str | None = None) -> None:
    """An IPPool as Calico's client stores it (v3.30 defaults; v3.31 with a namespaceSelector)."""
    spec: dict[str, Any] = {
        "cidr": cidr, "vxlanMode": "Never", "ipipMode": "Never", "natOutgoing": False, "blockSize": block_size,
        "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"], "assignmentMode": "Automatic",
    }
    if namespace_selector is not None:
        spec.update(namespaceSelector=namespace_selector, allowedUses=["Workload"])
    put(store, keys.pool(name), {
        "kind": "IPPool", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": "2025-05-01T10:00:00Z"},
        "spec": spec,
    })


def calico_config(store, **fields: Any) -> None:
    """`model.IPAMConfig` v3.30: omitempty, so false and 0 are left out."""
    put(store, keys.IPAM_CONFIG, {k: v for k, v in fields.items() if v})


def calico_block(store, cidr: str, affinity: str | None, allocated: dict[int, str]) -> None:
    """`model.AllocationBlock` v3.30 after Calico's plugin allocated `allocated` (ordinal ->
    container id) one write each, with the matching `model.IPAMHandle` records."""
    size = ipaddress.ip_network(cidr).num_addresses
    allocations: list[int | None] = [None] * size
    attributes, seq_for, seq = [], {}, 1_746_000_000_000_000_000
    for ordinal, cid in allocated.items():
        allocations[ordinal] = len(attributes)
        attributes.append({"handle_id": f"k8s-pod-network.{cid}",
                           "secondary": {"namespace": "default", "node": NODE, "pod": f"pod-{cid}", "timestamp": CALICO_TS}})
        seq_for[str(ordinal)] = seq
        seq += 1
        put(store, keys.handle(f"k8s-pod-network.{cid}"), {"block": {cidr: 1}, "deleted": False})
    put(store, keys.block(cidr), {
        "cidr": cidr, "affinity": affinity, "allocations": allocations,
        "unallocated": [o for o in range(size) if o not in allocated], "attributes": attributes,
        "sequenceNumber": seq, "sequenceNumberForAllocation": seq_for, "deleted": False,
    })


def att(cid: str, node: str = NODE) -> Attachment:
    return Attachment(keys.attachment_handle("net1", cid), node, "eth0")


def auto(store, cid: str, node: str = NODE, **request: Any) -> allocator.Assigned:
    return allocator.assign(store, att(cid, node), [FamilyRequest(4, **request)])[0]


def specific(store, cid: str, address: str, node: str = NODE) -> allocator.Assigned:
    return allocator.assign(store, att(cid, node), [FamilyRequest(4, address=ipaddress.ip_address(address))])[0]


def add(conf: dict, cid: str, **env: str):
    return run_plugin("calico-ipam", "ADD", conf, cni_env(cid, "eth0", **env))


def ok(run) -> dict:
    assert run.rc == 0, f"exit {run.rc}: {run.stdout} {run.stderr}"
    return run.out


def failed(run, code: int) -> dict:
    assert run.rc != 0 and run.out is not None and run.out["code"] == code, f"exit {run.rc}: {run.stdout} {run.stderr}"
    assert "Traceback" not in run.stdout + run.stderr
    return run.out


def address_of(out: dict) -> ipaddress.IPv4Address:
    (ip,) = out["ips"]
    return ipaddress.ip_interface(ip["address"]).ip


# ------------------------------------------------------------------------------------------------
# Item 4: namespaceSelector (Calico v3.31 IPPoolSpec)


def test_pool_whose_namespace_selector_needs_labels_is_skipped_by_the_plugin(store, ipam_conf):
    # Name order would try "a-team" first; outside Kubernetes the namespace has no labels.
    calico_pool(store, "a-team", "198.18.0.0/24", 26, namespace_selector="team == 'a'")
    calico_pool(store, "b-any", "198.18.1.0/24", 26, namespace_selector="all()")
    got = address_of(ok(add(ipam_conf(), "c1")))
    assert got in ipaddress.ip_network("198.18.1.0/24")
    assert raw(store, keys.pool("a-team"))["spec"]["namespaceSelector"] == "team == 'a'"  # read and kept


@pytest.mark.parametrize("selector, used", [("!has(team)", True), ("has(team)", False), ("team in {'a'}", False)])
def test_namespace_selector_matches_the_empty_label_set(store, selector, used):
    calico_pool(store, "p", "198.18.2.0/24", 26, namespace_selector=selector)
    if used:
        assert auto(store, "c1").address in ipaddress.ip_network("198.18.2.0/24")
    else:
        with pytest.raises(AddressesExhausted, match="no configured Calico pools"):
            auto(store, "c1")


def test_namespace_selector_that_does_not_parse_skips_its_pool_and_the_log_names_it(store, ipam_conf, tmp_path):
    # Written by another tool, past any validator.
    calico_pool(store, "a-broken", "198.18.3.0/24", 26, namespace_selector="team === 'a'")
    calico_pool(store, "b-plain", "198.18.4.0/24", 26)
    assert address_of(ok(add(ipam_conf(), "c1"))) in ipaddress.ip_network("198.18.4.0/24")
    log = (tmp_path / "cni.log").read_text()
    assert "IP pool a-broken is skipped: its namespaceSelector does not parse" in log


def test_only_a_namespace_selected_pool_fails_the_add_naming_it(store, ipam_conf):
    calico_pool(store, "team-a", "198.18.5.0/24", 26, namespace_selector="has(team)")
    out = failed(add(ipam_conf(), "c1"), IPAM_EXHAUSTED)
    assert "team-a" in json.dumps(out) and "namespaceSelector" in json.dumps(out)


def test_named_pool_overrides_the_namespace_selector(store, ipam_conf):
    calico_pool(store, "team-a", "198.18.6.0/24", 26, namespace_selector="has(team)")
    assert address_of(ok(add(ipam_conf(ipv4_pools=["team-a"]), "c1"))) in ipaddress.ip_network("198.18.6.0/24")


# ------------------------------------------------------------------------------------------------
# Item 5: a specific address in an unclaimed block claims it (Calico v3.30 AssignIP)


def test_specific_address_claims_its_block_through_the_plugin(store, ipam_conf):
    calico_pool(store, "p", "198.18.10.0/24", 26)
    calico_config(store, auto_allocate_blocks=True)
    assert address_of(ok(add(ipam_conf(), "c1", CNI_ARGS="IP=198.18.10.77"))) == ipaddress.ip_address("198.18.10.77")
    block = raw(store, keys.block("198.18.10.64/26"))
    assert block["affinity"] == f"host:{NODE}"
    assert block["allocations"][13] is not None
    # claimAffineBlock then confirmAffinity: the affinity ends confirmed, in v3.30's shape.
    assert raw(store, keys.affinity(NODE, "198.18.10.64/26")) == {"state": "confirmed", "deleted": False}
    # The node's next automatic address comes from that block: it is the node's own now.
    assert address_of(ok(add(ipam_conf(), "c2"))) in ipaddress.ip_network("198.18.10.64/26")
    assert len(store.client.get_prefix(keys.host_affinities(NODE, 4))) == 1


def test_specific_address_claims_whatever_auto_allocate_and_the_block_limit_say(store):
    # AssignIP checks neither AutoAllocateBlocks nor MaxBlocksPerHost (v3.30 ipam.go).
    calico_pool(store, "p", "198.18.11.0/24", 26)
    calico_config(store, strict_affinity=True, auto_allocate_blocks=True, maxBlocksPerHost=1)
    auto(store, "c1")
    got = specific(store, "c2", "198.18.11.200")
    assert len(store.affinities(NODE, 4)) == 2 and store.block(got.block).affine_node == NODE
    calico_config(store, strict_affinity=True)  # auto_allocate_blocks off
    got = specific(store, "c3", "198.18.11.150")
    assert got.block == "198.18.11.128/26" and store.block(got.block).affine_node == NODE
    assert {a.state for a in store.affinities(NODE, 4)} == {"confirmed"}


def test_specific_address_takes_over_a_pending_affinity_left_without_a_block(store):
    calico_pool(store, "p", "198.18.12.0/24", 26)
    put(store, keys.affinity(NODE, "198.18.12.0/26"), {"state": "pending", "deleted": False})
    got = specific(store, "c1", "198.18.12.5")
    assert got.block == "198.18.12.0/26" and store.block(got.block).affine_node == NODE
    assert raw(store, keys.affinity(NODE, "198.18.12.0/26")) == {"state": "confirmed", "deleted": False}


def test_automatic_claim_takes_over_a_pending_affinity_left_without_a_block(store):
    # A /26 pool has one block: the only claim possible is the one the pending affinity names.
    calico_pool(store, "p", "198.18.13.0/26", 26)
    put(store, keys.affinity(NODE, "198.18.13.0/26"), {"state": "pending", "deleted": False})
    got = auto(store, "c1")
    assert got.block == "198.18.13.0/26"
    assert raw(store, keys.affinity(NODE, "198.18.13.0/26")) == {"state": "confirmed", "deleted": False}


def test_strict_affinity_refuses_a_specific_address_in_another_nodes_block_or_an_unaffine_one(store, ipam_conf):
    calico_pool(store, "p", "198.18.14.0/24", 26)
    calico_block(store, "198.18.14.0/26", "host:node2", {0: "aaa"})
    calico_block(store, "198.18.14.64/26", None, {0: "bbb"})  # its affinity was released while in use
    calico_config(store, strict_affinity=True, auto_allocate_blocks=True)
    with pytest.raises(AddressConflict) as err:
        specific(store, "c1", "198.18.14.5")
    assert err.value.msg == "Block host affinity does not match"  # allocationBlock.assign
    with pytest.raises(AddressConflict) as err:
        specific(store, "c2", "198.18.14.70")
    assert err.value.msg == "Attempt to assign from block 198.18.14.64/26 with no affinity"
    out = failed(add(ipam_conf(), "c3", CNI_ARGS="IP=198.18.14.6"), IPAM_CONFLICT)
    assert "Block host affinity does not match" in out["msg"]
    assert store.handle("net1.c1") is None and store.handle("net1.c3") is None
    # Without strict affinity Calico assigns both, claiming neither block.
    calico_config(store, auto_allocate_blocks=True)
    assert store.block(specific(store, "c1", "198.18.14.5").block).affine_node == "node2"
    assert store.block(specific(store, "c2", "198.18.14.70").block).affinity is None
    assert store.affinities(NODE, 4) == []


# ------------------------------------------------------------------------------------------------
# Item 7: affinities written by Calico before v3.0.7


@pytest.mark.parametrize("value", [b"", b"{}"], ids=["python-ipam-empty", "early-go-port-braces"])
def test_old_affinity_is_the_nodes_own_block(store, ipam_conf, value):
    calico_pool(store, "p", "198.18.20.0/24", 26)
    calico_block(store, "198.18.20.128/26", f"host:{NODE}", {0: "aaa", 1: "bbb"})
    put(store, keys.affinity(NODE, "198.18.20.128/26"), value)
    got = auto(store, "c1")
    assert got.block == "198.18.20.128/26"
    out = ok(add(ipam_conf(), "c2"))
    assert address_of(out) in ipaddress.ip_network("198.18.20.128/26")
    # No block claimed beside it, and the old record is left as it was (already confirmed).
    assert [a.cidr for a in store.affinities(NODE, 4)] == ["198.18.20.128/26"]
    assert store.client.get(keys.affinity(NODE, "198.18.20.128/26")).value == value
    assert sorted(store.block_cidrs(4)) == ["198.18.20.128/26"]


# ------------------------------------------------------------------------------------------------
# Item 8: the block limit (Calico's 20 when none is set; the CNI config's per-request limit)


def test_calicos_limit_of_20_blocks_when_none_is_set(store, ipam_conf):
    """libcalico-go ipam.go autoAssign (v3.22 to v3.32): with no per-request limit and no
    maxBlocksPerHost, a node may hold 20 blocks per family, and at that limit it neither claims nor
    borrows. The CNI config's ipam.max_blocks_per_node is the per-request limit: it may raise the
    limit above 20 when the cluster sets none, as a request's MaxBlocksPerHost does in Calico."""
    calico_pool(store, "p", "198.18.30.0/26", 32)
    calico_config(store, auto_allocate_blocks=True)
    for i in range(20):
        auto(store, f"c{i}")
    refused = failed(add(ipam_conf(), "c20"), IPAM_EXHAUSTED)
    assert "the limit is 20 (Calico's default when no limit is set)" in refused["details"]
    ok(add(ipam_conf(max_blocks_per_node=22), "c20"))
    assert len(store.affinities(NODE, 4)) == 21


def test_max_blocks_per_host_still_limits_and_the_node_does_not_borrow(store):
    calico_pool(store, "p", "198.18.31.0/28", 32)
    auto(store, "other", node="node2")
    allocator.release(store, "net1.other", "eth0")  # node2's block has a free address
    calico_config(store, strict_affinity=True, auto_allocate_blocks=True, maxBlocksPerHost=3)
    for i in range(3):
        auto(store, f"c{i}")
    calico_config(store, auto_allocate_blocks=True, maxBlocksPerHost=3)  # borrowing allowed, but at the limit
    with pytest.raises(AddressesExhausted, match="per host block limit") as err:
        auto(store, "c3")
    assert "the limit is 3 (maxBlocksPerHost)" in err.value.details


def test_cni_config_cap_limits_automatic_addresses_only(store, ipam_conf):
    calico_pool(store, "p", "198.18.32.0/28", 32)
    calico_config(store, auto_allocate_blocks=True)
    for i in range(2):
        auto(store, f"c{i}", max_blocks_per_node=2)
    with pytest.raises(AddressesExhausted, match="per host block limit") as err:
        auto(store, "c2", max_blocks_per_node=2)
    assert "the limit is 2 (the CNI config's ipam.max_blocks_per_node)" in err.value.details
    # Through the plugin: the CNI config's key reaches the allocator, and STATUS says no room.
    refused = failed(add(ipam_conf(max_blocks_per_node=2), "c2"), IPAM_EXHAUSTED)
    assert "ipam.max_blocks_per_node" in refused["details"]
    status = run_plugin("calico-ipam", "STATUS", ipam_conf("1.1.0", max_blocks_per_node=2), {})
    assert status.rc != 0 and status.out["code"] == 50, status.stdout
    assert run_plugin("calico-ipam", "STATUS", ipam_conf("1.1.0", max_blocks_per_node=3), {}).rc == 0
    # The smaller of the two limits applies.
    calico_config(store, auto_allocate_blocks=True, maxBlocksPerHost=1)
    with pytest.raises(AddressesExhausted, match="the limit is 1 \\(maxBlocksPerHost\\)"):
        auto(store, "c2", max_blocks_per_node=5)
    # A specific address is not limited (AssignIP): it claims a block nobody holds.
    free = next(str(a) for a in ipaddress.ip_network("198.18.32.0/28") if f"{a}/32" not in store.block_cidrs(4))
    assert store.block(specific(store, "c3", free).block).affine_node == NODE
    assert len(store.affinities(NODE, 4)) == 3


@pytest.mark.parametrize("value, expected", [(None, 0), (0, 0), (7, 7)])
def test_cni_config_key_max_blocks_per_node(value, expected):
    ipam = {"type": "calico-ipam"} if value is None else {"type": "calico-ipam", "max_blocks_per_node": value}
    assert ipam_settings({"ipam": ipam}).max_blocks_per_node == expected


@pytest.mark.parametrize("value", [-1, True, "3", 2.5])
def test_cni_config_key_max_blocks_per_node_refuses_what_is_not_a_count(store, ipam_conf, value):
    with pytest.raises(ConfigError, match="ipam.max_blocks_per_node"):
        ipam_settings({"ipam": {"type": "calico-ipam", "max_blocks_per_node": value}})
    # Through the plugin: error 7 naming the key, and nothing allocated.
    refused = failed(add(ipam_conf(max_blocks_per_node=value), "c1"), INVALID_CONFIG)
    assert refused["msg"].startswith("ipam.max_blocks_per_node must be a whole number"), refused
    assert store.client.get_prefix(keys.IPAM, keys_only=True) == []


# ------------------------------------------------------------------------------------------------
# Releases compare the handle; a specific address on an entry we cannot classify is a conflict


def test_a_release_under_another_handle_frees_nothing_even_with_the_right_sequence_number(store):
    """Calico's release compares the handle (v3.30 ipam_block.go release): the sequence number
    alone must not free another pod's address (old Calico data may have none to compare)."""
    calico_pool(store, "p", "198.18.50.0/26", 26)
    calico_block(store, "198.18.50.0/26", f"host:{NODE}", {0: "aaa", 1: "bbb"})
    block = store.block("198.18.50.0/26")
    seq = block.seq_for_alloc["0"]
    released = allocator.release_exact(store, "k8s-pod-network.bbb", [allocator.Assigned(block.address(0), block.cidr, 0, seq)])
    assert released == []
    after = store.block("198.18.50.0/26")
    assert after.attribute(0)["handle_id"] == "k8s-pod-network.aaa" and after.attribute(1)["handle_id"] == "k8s-pod-network.bbb"


def test_a_specific_address_on_a_dangling_entry_is_a_conflict_not_a_crash(store, ipam_conf):
    """An allocation pointing past the attributes list (no owner known) stays allocated: asking for
    it is Calico's 'Address already assigned in block' with the CNI conflict code."""
    calico_pool(store, "p", "198.18.51.0/26", 26)
    calico_block(store, "198.18.51.0/26", f"host:{NODE}", {0: "aaa"})
    doc = raw(store, keys.block("198.18.51.0/26"))
    doc["allocations"][5] = 7  # no attribute entry 7
    doc["unallocated"].remove(5)
    put(store, keys.block("198.18.51.0/26"), doc)
    with pytest.raises(AddressConflict, match="Address already assigned in block"):
        specific(store, "c1", "198.18.51.5")
    refused = failed(add(ipam_conf(), "c1", CNI_ARGS="IP=198.18.51.5"), IPAM_CONFLICT)
    assert "dangling" in refused["details"]


def test_the_block_limit_counts_the_blocks_of_the_usable_pools_only(store):
    """autoAssign (v3.30) counts the node's affine blocks filtered by the pools of the request:
    blocks the node holds in a pool it may not use now do not use up its limit."""
    calico_pool(store, "a", "198.18.52.0/28", 32)
    calico_pool(store, "b", "198.18.53.0/28", 32)
    calico_config(store, strict_affinity=True, auto_allocate_blocks=True, maxBlocksPerHost=2)
    for i in range(2):
        allocator.assign(store, att(f"a{i}"), [FamilyRequest(4, ("a",))])
    assert not _room(store, ("a",)) and _room(store, ("b",))  # STATUS counts as the allocator does
    got = allocator.assign(store, att("b0"), [FamilyRequest(4, ("b",))])[0]
    assert got.address in ipaddress.ip_network("198.18.53.0/28")
    with pytest.raises(AddressesExhausted, match="per host block limit"):
        allocator.assign(store, att("a2"), [FamilyRequest(4, ("a",))])


def _room(store, pool_names) -> bool:
    """What STATUS decides for an ADD limited to `pool_names` on NODE (capacity.has_room)."""
    view = store.ipam_view(NODE, [4], None)
    pools = usable_pools(view.pools, 4, NODE, {}, pool_names)
    return has_room(store, view, pools, 4, NODE)
