"""Records of Calico's etcd data and the key layout (calico_cni/model/records.py and keys.py).

Every record must write back the JSON fields it does not model (other Calico components share the
records); IPAM config defaults differ between an absent key and a present one (as Calico reads
them); times come in RFC 3339 and in Go's time.String() form.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import time
from datetime import datetime, timezone

import pytest

from calico_cni.model import keys
from calico_cni.model.records import (
    CONFIRMED,
    PENDING,
    TUNNEL,
    WORKLOAD,
    Affinity,
    Block,
    CorruptRecord,
    Handle,
    IpamConfig,
    IPPool,
    Node,
    WorkloadEndpoint,
    dumps,
    now_rfc3339,
    parse_reservation,
    parse_time,
)
from calico_ipam.pools import block_cidr_for
from calico_ipam import blocks

UNKNOWN = {"futureField": {"nested": [1, 2, {"x": None}]}, "another_one": "keep me", "n": 3.5, "flag": False}


def load(data: bytes) -> dict:
    return json.loads(data)


def b(doc: dict) -> bytes:
    return json.dumps(doc).encode()


# ------------------------------------------------------------------------------------------------
# Round trips keep unknown fields


def pool_doc() -> dict:
    return {
        "kind": "IPPool",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {
            "name": "p1",
            "uid": "5b0c6a4e-0000-4000-8000-000000000001",
            "creationTimestamp": "2024-01-02T03:04:05Z",
            "labels": {"team": "net"},
            "annotations": {"note": "x"},
            "resourceVersion": "17",
        },
        "spec": {
            "cidr": "198.18.0.0/24",
            "blockSize": 28,
            "ipipMode": "Always",
            "vxlanMode": "CrossSubnet",
            "natOutgoing": True,
            "disabled": True,
            "disableBGPExport": True,
            "nodeSelector": "zone == 'a'",
            "allowedUses": ["Workload"],
            "assignmentMode": "Manual",
            **UNKNOWN,
        },
        "status": {"something": 1},
        **UNKNOWN,
    }


def test_ip_pool_round_trip_keeps_everything():
    doc = pool_doc()
    p = IPPool.from_json("p1", b(doc), revision=9)
    assert (p.name, str(p.cidr), p.block_size, p.disabled, p.node_selector, p.allowed_uses, p.assignment_mode, p.revision) == (
        "p1", "198.18.0.0/24", 28, True, "zone == 'a'", ("Workload",), "Manual", 9,
    )
    assert load(p.to_json()) == doc


def test_ip_pool_changes_keep_unknown_fields():
    doc = pool_doc()
    p = IPPool.from_json("p1", b(doc))
    p.disabled = False
    p.node_selector = "all()"
    out = load(p.to_json())
    assert "disabled" not in out["spec"]
    assert out["spec"]["nodeSelector"] == "all()"
    for k, v in UNKNOWN.items():
        assert out[k] == v and out["spec"][k] == v
    assert out["metadata"] == doc["metadata"] and out["status"] == doc["status"]
    assert out["spec"]["ipipMode"] == "Always" and out["spec"]["natOutgoing"] is True


def test_node_round_trip_keeps_everything():
    doc = {
        "kind": "Node",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "node1", "uid": "u", "labels": {"zone": "a", "kubernetes.io/hostname": "node1"}, "annotations": {"a": "b"}},
        "spec": {"bgp": {"ipv4Address": "198.19.255.1/32"}, "orchRefs": [{"nodeName": "node1", "orchestrator": "k8s"}], **UNKNOWN},
        "status": {"podCIDRs": []},
        **UNKNOWN,
    }
    n = Node.from_json("node1", b(doc), revision=4)
    assert n.labels == {"zone": "a", "kubernetes.io/hostname": "node1"}
    assert n.revision == 4
    assert load(n.to_json()) == doc
    n.labels["rack"] = "r1"
    out = load(n.to_json())
    assert out["metadata"]["labels"] == {"zone": "a", "kubernetes.io/hostname": "node1", "rack": "r1"}
    assert out["spec"] == doc["spec"] and out["metadata"]["annotations"] == {"a": "b"}


def test_node_without_labels():
    n = Node.from_json("n", b({"kind": "Node", "metadata": {"name": "n"}, "spec": {"x": 1}}))
    assert n.labels == {}
    assert load(n.to_json()) == {"kind": "Node", "metadata": {"name": "n"}, "spec": {"x": 1}}
    new = load(Node.new("n2").to_json())
    assert new["kind"] == "Node" and new["apiVersion"] == "projectcalico.org/v3"
    assert new["metadata"]["name"] == "n2" and "labels" not in new["metadata"]
    assert parse_time(new["metadata"]["creationTimestamp"]) is not None


def test_ipam_config_round_trip_keeps_everything():
    doc = {"strict_affinity": True, "auto_allocate_blocks": True, "maxBlocksPerHost": 4, "ipCooldownSeconds": 30, "kubeVirtVMAddressPersistence": "Enabled", **UNKNOWN}
    c = IpamConfig.from_json(b(doc), revision=2)
    assert (c.strict_affinity, c.auto_allocate_blocks, c.max_blocks_per_host, c.ip_cooldown_seconds, c.revision) == (True, True, 4, 30, 2)
    assert load(c.to_json()) == doc


def test_ipam_config_change_keeps_unknown_fields():
    c = IpamConfig.from_json(b({"strict_affinity": True, "kubeVirtVMAddressPersistence": "Enabled"}))
    c.strict_affinity = False
    c.auto_allocate_blocks = True
    out = load(c.to_json())
    assert out["kubeVirtVMAddressPersistence"] == "Enabled"
    assert "strict_affinity" not in out  # false booleans are omitted, like Go's omitempty
    assert out["auto_allocate_blocks"] is True


def test_affinity_round_trip_keeps_everything():
    key = "/calico/ipam/v2/host/node1/ipv4/block/198.18.0.64-26"
    doc = {"state": "pendingDeletion", "deleted": False, **UNKNOWN}
    a = Affinity.from_kv(key, b(doc), revision=8)
    assert (a.node, a.cidr, a.state, a.deleted, a.revision) == ("node1", "198.18.0.64/26", "pendingDeletion", False, 8)
    assert a.key == key
    assert load(a.to_json()) == doc
    a.state = CONFIRMED
    assert load(a.to_json()) == {**doc, "state": "confirmed"}


def test_affinity_without_state_is_confirmed():
    a = Affinity.from_kv("/calico/ipam/v2/host/n/ipv6/block/fd00:198:18::-122", b"{}")
    assert a.state == CONFIRMED and a.cidr == "fd00:198:18::/122" and a.node == "n"
    assert Affinity("n", "198.18.0.0/26").state == PENDING


@pytest.mark.parametrize("value", [b"", b"{}"], ids=["python-ipam-empty", "early-go-port-braces"])
def test_affinity_values_of_old_calico_releases_are_confirmed(value):
    # Before Calico v3.0.7 an affinity carried no state: Calico's Python IPAM wrote an empty value,
    # the early Go port `{}` (libcalico-go commit 9725a759, model/block_affinity.go
    # BlockAffinityValue). Calico v3.30's model.ParseValue (backend/model/keys.go) reads the empty
    # value as `{}`, and ipam.go's getBlockFromAffinity treats the empty state as confirmed.
    a = Affinity.from_kv("/calico/ipam/v2/host/node1/ipv4/block/198.18.0.64-26", value, revision=3)
    assert (a.node, a.cidr, a.state, a.deleted, a.revision) == ("node1", "198.18.0.64/26", CONFIRMED, False, 3)
    # Rewritten (e.g. when released), it takes v3.30's BlockAffinity shape.
    assert load(a.to_json()) == {"state": "confirmed", "deleted": False}


@pytest.mark.parametrize("value", [b" ", b"{", b"[]"])
def test_affinity_values_that_are_neither_json_objects_nor_empty_stay_corrupt(value):
    # Calico v3.30 special-cases only the exact empty value (keys.go ParseValue).
    with pytest.raises(CorruptRecord):
        Affinity.from_kv("/calico/ipam/v2/host/n/ipv4/block/198.18.0.0-26", value)


@pytest.mark.parametrize("key", ["/calico/ipam/v2/handle/x", "/calico/ipam/v2/host/n/ipv4/198.18.0.0-26", "/other/host/n/ipv4/block/198.18.0.0-26"])
def test_affinity_with_a_wrong_key_is_corrupt(key):
    with pytest.raises(CorruptRecord):
        Affinity.from_kv(key, b"{}")


def block_doc() -> dict:
    return {
        "cidr": "198.18.0.0/29",
        "affinity": "host:node1",
        "affinity_claim_time": "2024-01-02T03:04:05Z",
        "strictAffinity": False,
        "hostAffinity": "node1",
        "allocations": [0, None, 1, 0, None, None, None, 2],
        "unallocated": [5, 6, 1, 4],
        "attributes": [
            {"handle_id": "net1.c1", "secondary": {"node": "node1", "ifname": "eth0", "timestamp": "x"}, "alternateOwnerAttrs": {"pod": "old"}},
            {"handle_id": "ipip-tunnel-addr-node1", "secondary": {"node": "node1", "type": "ipipTunnelAddress"}},
            {"releasedAt": "2024-01-02T03:04:06Z", "futureAttr": 1},
        ],
        "sequenceNumber": 1704164645000000123,
        "sequenceNumberForAllocation": {"0": 1704164645000000001, "2": 1704164645000000002, "3": 1704164645000000001},
        "deleted": False,
        **UNKNOWN,
    }


def test_block_round_trip_keeps_everything():
    doc = block_doc()
    key = keys.block("198.18.0.0/29")
    blk = Block.from_kv(key, b(doc), revision=12)
    assert blk.cidr == "198.18.0.0/29" and blk.key == key
    assert blk.affinity == "host:node1" and blk.affine_node == "node1"
    assert blk.allocations == doc["allocations"]
    assert blk.unallocated == [5, 6, 1, 4]
    assert blk.sequence_number == 1704164645000000123
    assert blk.seq_for_alloc == doc["sequenceNumberForAllocation"]
    assert blk.revision == 12
    assert blk.extra == {k: doc[k] for k in ("affinity_claim_time", "strictAffinity", "hostAffinity", *UNKNOWN)}
    assert load(blk.to_json()) == doc


def test_block_changes_keep_unknown_fields_and_attribute_extras():
    doc = block_doc()
    blk = Block.from_kv(keys.block("198.18.0.0/29"), b(doc))
    blocks.assign(blk, 1, "net1.c2", {"node": "node1", "ifname": "eth0"})
    blocks.release(blk, [2])
    out = load(blk.to_json())
    for k in ("affinity_claim_time", "strictAffinity", "hostAffinity", *UNKNOWN):
        assert out[k] == doc[k]
    assert out["attributes"][0]["alternateOwnerAttrs"] == {"pod": "old"}
    assert out["attributes"][1] == doc["attributes"][1]  # the shared entry is not edited by the release
    assert out["attributes"][2] == {"releasedAt": "2024-01-02T03:04:06Z", "futureAttr": 1}


def test_block_from_kv_defaults():
    blk = Block.from_kv("k", b({"cidr": "198.18.0.0/30"}))
    assert blk.allocations == [None] * 4
    assert blk.unallocated == []
    assert blk.attributes == []
    assert blk.sequence_number == 0
    assert blk.seq_for_alloc == {}
    assert blk.affinity is None and blk.affine_node is None
    assert blk.deleted is False
    blk = Block.from_kv("k", b({"cidr": "198.18.0.0/30", "sequenceNumberForAllocation": None, "affinity": "virtual:x"}))
    assert blk.seq_for_alloc == {} and blk.affine_node is None


def test_block_cidr_is_canonical():
    blk = Block.from_kv("k", b({"cidr": "fd00:198:18:0::/126", "allocations": [None] * 4}))
    assert blk.cidr == "fd00:198:18::/126"


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[]",
        b"{}",  # no cidr
        b'{"cidr": "nonsense"}',
        b'{"cidr": "198.18.0.1/30"}',  # host bits set
        b'{"cidr": "198.18.0.0/30", "allocations": [null, null]}',  # wrong length
        b'{"cidr": "198.18.0.0/30", "allocations": ["a", null, null, null]}',
        b'{"cidr": "198.18.0.0/30", "unallocated": ["x"]}',
    ],
)
def test_malformed_block_is_corrupt(value):
    with pytest.raises(CorruptRecord):
        Block.from_kv("/calico/ipam/v2/assignment/ipv4/block/198.18.0.0-30", value)


def test_block_new_json():
    before = time.time_ns()
    out = load(Block.new("198.18.0.0/30", "node1").to_json())
    assert out["cidr"] == "198.18.0.0/30"
    assert out["affinity"] == "host:node1"
    assert out["allocations"] == [None] * 4 and out["unallocated"] == [0, 1, 2, 3] and out["attributes"] == []
    assert out["sequenceNumber"] >= before
    assert out["sequenceNumberForAllocation"] == {} and out["deleted"] is False
    unaffine = load(Block.new("198.18.0.0/30", None).to_json())
    assert unaffine["affinity"] is None


def test_block_new_records_the_claim_time_under_calicos_etcd_name():
    out = load(Block.new("198.18.0.0/30", "node1").to_json())
    assert "affinityClaimTime" not in out
    assert parse_time(out.get("affinity_claim_time")) is not None


def test_block_addresses_and_ordinals():
    blk = Block.new("198.18.0.64/26", None)
    assert str(blk.address(0)) == "198.18.0.64" and str(blk.address(63)) == "198.18.0.127"
    assert blk.ordinal(ipaddress.ip_address("198.18.0.100")) == 36
    with pytest.raises(ValueError):
        blk.ordinal(ipaddress.ip_address("198.18.0.128"))
    assert blk.attribute(0) is None


def test_handle_round_trip_keeps_everything():
    key = "/calico/ipam/v2/handle/net.with.dots.container.id"
    doc = {"block": {"198.18.0.0/26": 2, "fd00:198:18::/122": 1}, "deleted": False, **UNKNOWN}
    h = Handle.from_kv(key, b(doc), revision=3)
    assert h.handle_id == "net.with.dots.container.id"
    assert h.key == key
    assert h.total == 3
    assert load(h.to_json()) == doc
    h.blocks["198.18.0.0/26"] = 1
    assert load(h.to_json())["futureField"] == UNKNOWN["futureField"]


def test_handle_without_blocks():
    h = Handle.from_kv("/calico/ipam/v2/handle/h", b"{}")
    assert h.blocks == {} and h.total == 0 and h.deleted is False


def test_workload_endpoint_round_trip_keeps_everything():
    key = "/calico/resources/v3/projectcalico.org/workloadendpoints/default/node1-cni-c1-eth0"
    doc = {
        "kind": "WorkloadEndpoint",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "node1-cni-c1-eth0", "namespace": "default", "labels": {"projectcalico.org/namespace": "default"}},
        "spec": {"node": "node1", "containerID": "c1", "ipNetworks": ["198.18.0.5/32"], "interfaceName": "cali123", "mac": "aa:bb:cc:dd:ee:ff", "ports": [{"name": "x"}], **UNKNOWN},
        **UNKNOWN,
    }
    w = WorkloadEndpoint.from_kv(key, b(doc), revision=5)
    assert (w.namespace, w.name, w.container_id, w.node, w.ip_networks) == ("default", "node1-cni-c1-eth0", "c1", "node1", ["198.18.0.5/32"])
    assert w.key == key
    assert load(w.to_json()) == doc


def test_every_record_rejects_non_objects():
    for bad in (b"[]", b"garbage", b'"x"'):
        with pytest.raises(CorruptRecord):
            IPPool.from_json("p", bad)
        with pytest.raises(CorruptRecord):
            Node.from_json("n", bad)
        with pytest.raises(CorruptRecord):
            IpamConfig.from_json(bad)
        with pytest.raises(CorruptRecord):
            Affinity.from_kv("/calico/ipam/v2/host/n/ipv4/block/198.18.0.0-26", bad)
        with pytest.raises(CorruptRecord):
            Handle.from_kv("/calico/ipam/v2/handle/h", bad)
        with pytest.raises(CorruptRecord):
            WorkloadEndpoint.from_kv(keys.workload_endpoint("ns", "n"), bad)


def test_dumps_is_compact():
    assert dumps({"a": [1, None], "b": "c"}) == b'{"a":[1,null],"b":"c"}'


# ------------------------------------------------------------------------------------------------
# IP pools: defaults


def test_ip_pool_defaults_on_read():
    p4 = IPPool.from_json("p", b({"spec": {"cidr": "198.18.0.0/16"}}))
    assert (p4.block_size, p4.node_selector, p4.allowed_uses, p4.assignment_mode, p4.disabled, p4.family) == (
        26, "all()", (WORKLOAD, TUNNEL), "Automatic", False, 4,
    )
    p6 = IPPool.from_json("p", b({"spec": {"cidr": "fd00:198:18::/48", "nodeSelector": "", "allowedUses": []}}))
    assert (p6.block_size, p6.node_selector, p6.allowed_uses, p6.family) == (122, "all()", (WORKLOAD, TUNNEL), 6)


@pytest.mark.parametrize("spec", [{}, {"cidr": "bogus"}, {"cidr": None}, {"cidr": ["198.18.0.0/24"]}])
def test_ip_pool_without_a_valid_cidr_is_corrupt(spec):
    with pytest.raises(CorruptRecord, match="p9"):
        IPPool.from_json("p9", b({"spec": spec}))


def test_ip_pool_with_a_numeric_cidr_is_corrupt():
    with pytest.raises(CorruptRecord, match="p9"):
        IPPool.from_json("p9", b({"spec": {"cidr": 5}}))


def test_ip_pool_new_json():
    out = load(IPPool.new("p1", "198.18.0.0/24", 28, node_selector="has(a)").to_json())
    assert out["kind"] == "IPPool" and out["apiVersion"] == "projectcalico.org/v3"
    assert out["metadata"]["name"] == "p1" and out["metadata"]["uid"]
    assert parse_time(out["metadata"]["creationTimestamp"]) is not None
    assert out["spec"] == {
        "cidr": "198.18.0.0/24",
        "blockSize": 28,
        "nodeSelector": "has(a)",
        "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic",
        "ipipMode": "Never",
        "vxlanMode": "Never",
        "natOutgoing": False,
    }
    assert IPPool.new("p", "fd00:198:18::/48").block_size == 122


def test_parse_reservation_skips_bad_entries():
    doc = {"spec": {"reservedCIDRs": ["198.18.0.10/31", "198.18.0.1", "garbage", None, ["x"], "fd00:198:18::/126"]}}
    assert [str(n) for n in parse_reservation("r", b(doc))] == ["198.18.0.10/31", "198.18.0.1/32", "fd00:198:18::/126"]
    assert parse_reservation("r", b({"spec": {}})) == []


def test_parse_reservation_skips_numeric_entries():
    assert parse_reservation("r", b({"spec": {"reservedCIDRs": [5, "198.18.0.1/32"]}})) == [ipaddress.ip_network("198.18.0.1/32")]


# ------------------------------------------------------------------------------------------------
# IPAM config: absent key vs present key (Calico's defaults differ between the two)


def test_ipam_config_defaults_when_the_key_is_absent():
    c = IpamConfig()
    assert c.strict_affinity is False
    assert c.auto_allocate_blocks is True
    assert c.max_blocks_per_host == 0
    assert c.block_cap == 20  # Calico's safeguard when maxBlocksPerHost is not set
    assert c.ip_cooldown_seconds == 0
    assert c.key == "/calico/ipam/v2/config"


def test_ipam_config_present_key_with_booleans_omitted_means_false():
    c = IpamConfig.from_json(b"{}")
    assert c.strict_affinity is False
    assert c.auto_allocate_blocks is False
    assert c.max_blocks_per_host == 0
    assert c.block_cap == 20  # Calico's safeguard when maxBlocksPerHost is not set
    assert c.ip_cooldown_seconds == 0
    c = IpamConfig.from_json(b'{"maxBlocksPerHost": 0}')
    assert c.auto_allocate_blocks is False and c.strict_affinity is False


def test_ipam_config_values():
    c = IpamConfig.from_json(b'{"strict_affinity": true, "auto_allocate_blocks": true, "maxBlocksPerHost": 5, "ipCooldownSeconds": 45}')
    assert (c.strict_affinity, c.auto_allocate_blocks, c.max_blocks_per_host, c.block_cap, c.ip_cooldown_seconds) == (True, True, 5, 5, 45)
    c = IpamConfig.from_json(b'{"maxBlocksPerHost": null, "ipCooldownSeconds": null}')
    assert c.max_blocks_per_host == 0 and c.block_cap == 20 and c.ip_cooldown_seconds == 0


def test_ipam_config_absent_defaults_survive_a_write():
    """Writing the defaults creates a key that reads back the same (auto-allocate stays on)."""
    c = IpamConfig.from_json(IpamConfig().to_json())
    assert (c.strict_affinity, c.auto_allocate_blocks, c.max_blocks_per_host, c.ip_cooldown_seconds) == (False, True, 0, 0)


# ------------------------------------------------------------------------------------------------
# Times


def ts(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2024-01-02T03:04:05Z", ts(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02T03:04:05.5Z", ts(2024, 1, 2, 3, 4, 5, 500000)),
        ("2024-01-02T03:04:05.123456Z", ts(2024, 1, 2, 3, 4, 5, 123456)),
        ("2024-01-02T03:04:05.123456789Z", ts(2024, 1, 2, 3, 4, 5, 123456)),  # Go's RFC3339Nano
        ("2024-01-02T03:04:05+00:00", ts(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02T05:04:05+02:00", ts(2024, 1, 2, 3, 4, 5)),
        ("2024-01-01T20:04:05-07:00", ts(2024, 1, 2, 3, 4, 5)),
    ],
)
def test_parse_time_rfc3339(text, expected):
    assert parse_time(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2024-01-02 03:04:05.123456789 +0000 UTC", ts(2024, 1, 2, 3, 4, 5, 123456)),
        ("2024-01-02 03:04:05 +0000 UTC", ts(2024, 1, 2, 3, 4, 5)),  # whole seconds: Go prints no fraction
        ("2024-01-02 03:04:05.5 +0000 UTC", ts(2024, 1, 2, 3, 4, 5, 500000)),  # trailing zeros trimmed
        ("2024-01-01 20:04:05.25 -0700 MST", ts(2024, 1, 2, 3, 4, 5, 250000)),
        ("2024-01-02 08:34:05 +0530 IST", ts(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02 03:04:05.123456789 +0000 UTC m=+0.000123456", ts(2024, 1, 2, 3, 4, 5, 123456)),  # with a monotonic reading
    ],
)
def test_parse_time_go_string_form(text, expected):
    assert parse_time(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text", [None, "", "garbage", "2024-13-45T00:00:00Z", "yesterday at noon", "2024-01-02 garbage +0000 UTC", "1 2"])
def test_parse_time_garbage_is_none(text):
    assert parse_time(text) is None


def test_now_rfc3339():
    text = now_rfc3339()
    assert text.endswith("Z") and "T" in text
    assert abs(parse_time(text) - time.time()) < 5


# ------------------------------------------------------------------------------------------------
# Keys


def test_resource_keys():
    assert keys.pool("p1") == "/calico/resources/v3/projectcalico.org/ippools/p1"
    assert keys.node("node1") == "/calico/resources/v3/projectcalico.org/nodes/node1"
    assert keys.workload_endpoint("default", "n-cni-c1-eth0") == "/calico/resources/v3/projectcalico.org/workloadendpoints/default/n-cni-c1-eth0"
    assert keys.IPAM_CONFIG == "/calico/ipam/v2/config"
    assert keys.RESERVATIONS == "/calico/resources/v3/projectcalico.org/ipreservations/"


def test_block_keys():
    assert keys.block("198.18.0.64/26") == "/calico/ipam/v2/assignment/ipv4/block/198.18.0.64-26"
    assert keys.block("fd00:198:18::40/122") == "/calico/ipam/v2/assignment/ipv6/block/fd00:198:18::40-122"
    assert keys.blocks(4) == "/calico/ipam/v2/assignment/ipv4/block/"
    assert keys.parse_block(keys.block("198.18.0.64/26")) == "198.18.0.64/26"
    assert keys.parse_block(keys.block("fd00:198:18::40/122")) == "fd00:198:18::40/122"


def test_affinity_keys():
    k4 = keys.affinity("node1", "198.18.0.64/26")
    assert k4 == "/calico/ipam/v2/host/node1/ipv4/block/198.18.0.64-26"
    k6 = keys.affinity("node.with.dots", "fd00:198:18::40/122")
    assert k6 == "/calico/ipam/v2/host/node.with.dots/ipv6/block/fd00:198:18::40-122"
    assert keys.parse_affinity(k4) == ("node1", "198.18.0.64/26")
    assert keys.parse_affinity(k6) == ("node.with.dots", "fd00:198:18::40/122")
    assert keys.host_affinities("n") == "/calico/ipam/v2/host/n/"
    assert keys.host_affinities("n", 6) == "/calico/ipam/v2/host/n/ipv6/block/"
    assert k4.startswith(keys.host_affinities("node1", 4))


@pytest.mark.parametrize(
    "key",
    [
        "/calico/ipam/v2/handle/x",
        "/calico/ipam/v2/host/node1",
        "/calico/ipam/v2/host/node1/ipv4/block",
        "/calico/ipam/v2/host/node1/ipv4/blocks/198.18.0.0-26",
        "/calico/ipam/v2/host/node1/ipv4/block/198.18.0.0-26/extra",
        "/calico/ipam/v1/host/node1/ipv4/block/198.18.0.0-26",
    ],
)
def test_parse_affinity_rejects_other_keys(key):
    assert keys.parse_affinity(key) is None


def test_handle_keys():
    assert keys.handle("net1.c1") == "/calico/ipam/v2/handle/net1.c1"
    assert keys.handle("my.net.with.dots.cid") == keys.HANDLES + "my.net.with.dots.cid"


def test_cidr_helpers():
    assert keys.cidr_segment("198.18.0.0/26") == "198.18.0.0-26"
    assert keys.segment_cidr("198.18.0.0-26") == "198.18.0.0/26"
    assert keys.segment_cidr(keys.cidr_segment("fd00:198:18::/122")) == "fd00:198:18::/122"
    assert keys.family_of("198.18.0.0/26") == 4 and keys.family_of("fd00::/122") == 6
    # What goes into records and keys is Python's canonical CIDR text, whatever form it came in.
    assert str(IPPool.new("p", "fd00:198:18:0:0::/48").cidr) == "fd00:198:18::/48"
    assert block_cidr_for(IPPool.new("q", "198.18.0.0/16", 24), ipaddress.ip_address("198.18.0.5")) == "198.18.0.0/24"


def test_record_keys_match_the_key_helpers():
    assert IPPool.new("p", "198.18.0.0/24").key == keys.pool("p")
    assert Node.new("n").key == keys.node("n")
    assert IpamConfig().key == keys.IPAM_CONFIG
    assert Affinity("n", "198.18.0.0/26").key == keys.affinity("n", "198.18.0.0/26")
    assert Block.new("198.18.0.0/26", "n").key == keys.block("198.18.0.0/26")
    assert Handle("a.b").key == keys.handle("a.b")
    assert WorkloadEndpoint("ns", "w").key == keys.workload_endpoint("ns", "w")


def test_round_trips_do_not_alias_the_input():
    doc = block_doc()
    original = copy.deepcopy(doc)
    blk = Block.from_kv("k", b(doc))
    blocks.assign(blk, 2, "h", {"node": "n"})
    assert doc == original
