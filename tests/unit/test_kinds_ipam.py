"""IPPool and IPReservation decode as Calico v3.30 does (plus the ranges `ippool create` always
refused): per rule one accepted and one refused value (the refusal names the field and the rule),
Calico's defaults, the aliases calicoctl accepts, the `get` columns. The metadata rules every kind
shares (names, labels, namespace, apiVersion, kind, unknown fields) are tested here too."""

from __future__ import annotations

import pytest

from calico_cni.model import kinds
from calico_cni.model.kinds import ipam
from tests.kinds_support import API
from tests.kinds_support import refused as refusal


def pool(spec: dict, name: str = "p1", **meta) -> dict:
    return {"apiVersion": API, "kind": "IPPool", "metadata": {"name": name, **meta}, "spec": spec}


# (accepted spec, refused spec, refused path, key phrase)
POOL_RULES = [
    ({"cidr": "198.18.0.0/24"}, {"cidr": "198.18.0.0"}, "spec.cidr", "give a prefix length"),
    ({"cidr": "198.18.0.0/24"}, {"cidr": "banana/24"}, "spec.cidr", "expected an IPv4 or IPv6 network"),
    ({"cidr": "198.18.0.0/24"}, {"cidr": "198.18.0.0/33"}, "spec.cidr", "invalid CIDR"),
    ({"cidr": "198.18.0.0/24"}, {"cidr": "198.18.0.1/24"}, "spec.cidr", "not strictly masked: the network is 198.18.0.0/24"),
    ({"cidr": "198.18.0.0/24"}, {"cidr": "169.254.1.0/24"}, "spec.cidr", "overlaps with IPv4 Link Local range 169.254.0.0/16"),
    ({"cidr": "fd00:198:18::/64"}, {"cidr": "fe80::/64"}, "spec.cidr", "overlaps with IPv6 Link Local range fe80::/10"),
    ({"cidr": "198.18.0.0/24"}, {"cidr": "127.0.0.0/24"}, "spec.cidr", "reserved IPv4 range 127.0.0.0/8"),
    ({"cidr": "198.18.0.0/24"}, {"cidr": "224.0.0.0/24"}, "spec.cidr", "reserved IPv4 range 224.0.0.0/4"),
    ({"cidr": "fd00:198:18::/120"}, {"cidr": "::ffff:198.18.0.0/120"}, "spec.cidr", "reserved IPv6 range ::ffff:0:0/96"),
    ({"cidr": "198.18.0.0/16", "blockSize": 20}, {"cidr": "198.18.0.0/16", "blockSize": 19}, "spec.blockSize", "between 20 and 32"),
    ({"cidr": "198.18.0.0/16", "blockSize": 32}, {"cidr": "198.18.0.0/16", "blockSize": 33}, "spec.blockSize", "between 20 and 32"),
    ({"cidr": "fd00:198:18::/48", "blockSize": 116}, {"cidr": "fd00:198:18::/48", "blockSize": 26}, "spec.blockSize", "between 116 and 128"),
    ({"cidr": "198.18.0.0/24", "blockSize": 24}, {"cidr": "198.18.0.0/24", "blockSize": 22}, "spec.cidr", "too small for use with Calico IPAM"),
    ({"cidr": "198.18.0.0/26"}, {"cidr": "198.18.0.0/28"}, "spec.cidr", "too small"),
    ({"cidr": "198.18.0.0/24", "blockSize": 26}, {"cidr": "198.18.0.0/24", "blockSize": "26"}, "spec.blockSize", "expected an integer"),
    ({"cidr": "198.18.0.0/24", "nodeSelector": "zone == 'a'"}, {"cidr": "198.18.0.0/24", "nodeSelector": "zone =="}, "spec.nodeSelector", "invalid selector"),
    ({"cidr": "198.18.0.0/24", "vxlanMode": "CrossSubnet"}, {"cidr": "198.18.0.0/24", "vxlanMode": "always"}, "spec.vxlanMode", "expected one of Never, Always, CrossSubnet"),
    ({"cidr": "198.18.0.0/24", "ipipMode": "Always"}, {"cidr": "198.18.0.0/24", "ipipMode": "Sometimes"}, "spec.ipipMode", "expected one of"),
    ({"cidr": "198.18.0.0/24", "ipipMode": "Always"}, {"cidr": "198.18.0.0/24", "ipipMode": "Always", "vxlanMode": "Always"}, "spec.vxlanMode", "Cannot enable both VXLAN and IPIP"),
    ({"cidr": "fd00:198:18::/64", "vxlanMode": "Always"}, {"cidr": "fd00:198:18::/64", "ipipMode": "Always"}, "spec.ipipMode", "IPIP is not supported on an IPv6 IP pool"),
    ({"cidr": "198.18.0.0/24", "allowedUses": ["Tunnel"]}, {"cidr": "198.18.0.0/24", "allowedUses": ["Storage"]}, "spec.allowedUses[0]", "expected one of Workload, Tunnel, LoadBalancer"),
    ({"cidr": "198.18.0.0/24", "assignmentMode": "Manual"}, {"cidr": "198.18.0.0/24", "assignmentMode": "Sometimes"}, "spec.assignmentMode", "expected one of Automatic, Manual"),
    ({"cidr": "198.18.0.0/24", "natOutgoing": True}, {"cidr": "198.18.0.0/24", "natOutgoing": "yes"}, "spec.natOutgoing", "expected true or false"),
    ({"cidr": "198.18.0.0/24", "disabled": True}, {"cidr": "198.18.0.0/24", "disabled": 1}, "spec.disabled", "expected true or false"),
    ({"cidr": "198.18.0.0/24", "disableBGPExport": True}, {"cidr": "198.18.0.0/24", "disableBGPExport": "true"}, "spec.disableBGPExport", "expected true or false"),
    # A LoadBalancer pool holds service addresses only: no pods or tunnels, no encapsulation, exported over BGP, every node.
    ({"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"]}, {"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer", "Workload"]}, "spec.allowedUses", "LoadBalancer cannot be used at the same time as: Workload"),
    ({"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"]}, {"cidr": "198.18.0.0/24", "allowedUses": ["Tunnel", "LoadBalancer"]}, "spec.allowedUses", "LoadBalancer cannot be used at the same time as: Tunnel"),
    ({"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"], "ipipMode": "Never"}, {"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"], "ipipMode": "Always"}, "spec.ipipMode", "must be Never on a LoadBalancer IP pool"),
    ({"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"], "vxlanMode": "Never"}, {"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"], "vxlanMode": "CrossSubnet"}, "spec.vxlanMode", "must be Never on a LoadBalancer IP pool"),
    ({"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"], "disableBGPExport": False}, {"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"], "disableBGPExport": True}, "spec.disableBGPExport", "cannot be set on a LoadBalancer IP pool"),
    ({"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"], "nodeSelector": "all()"}, {"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"], "nodeSelector": "zone == 'a'"}, "spec.nodeSelector", "must have nodeSelector all()"),
    # namespaceSelector: a Calico v3.31 field (IPPoolSpec `namespaceSelector,omitempty`, selector-validated), with
    # v3.31's validator rules: not on a pool that allows Tunnel (the default uses include it), no global().
    ({"cidr": "198.18.0.0/24", "allowedUses": ["Workload"], "namespaceSelector": "team == 'a'"}, {"cidr": "198.18.0.0/24", "allowedUses": ["Workload"], "namespaceSelector": "team =="}, "spec.namespaceSelector", "invalid selector"),
    ({"cidr": "198.18.0.0/24", "allowedUses": ["Workload"], "namespaceSelector": "has(team)"}, {"cidr": "198.18.0.0/24", "namespaceSelector": "has(team)"}, "spec.namespaceSelector", "AllowedUse Tunnel cannot have namespaceSelector"),
    ({"cidr": "198.18.0.0/24", "allowedUses": ["Workload"], "namespaceSelector": "all()"}, {"cidr": "198.18.0.0/24", "allowedUses": ["Workload"], "namespaceSelector": "global()"}, "spec.namespaceSelector", "global() selector is not valid"),
    ({"cidr": "198.18.0.0/24", "namespaceSelector": ""}, {"cidr": "198.18.0.0/24", "allowedUses": ["Workload"], "namespaceSelector": 3}, "spec.namespaceSelector", "expected a string"),
    ({"cidr": "198.18.0.0/24"}, {"cidr": "198.18.0.0/24", "blockSizee": 26}, "spec.blockSizee", "unknown field"),
    ({"cidr": "198.18.0.0/24"}, {"blocksize": 26}, "spec.blocksize", "unknown field"),
    ({"cidr": "198.18.0.0/24"}, {}, "spec.cidr", "required field is missing"),
]


@pytest.mark.parametrize("accepted, refused, path, phrase", POOL_RULES, ids=[f"{r[2]}-{r[3][:24]}" for r in POOL_RULES])
def test_pool_rule(accepted, refused, path, phrase):
    kinds.decode(pool(accepted))
    err = refusal(pool(refused))
    assert err.path == path and phrase in err.reason, str(err)


# (accepted document change, refused document change, path, phrase): metadata and envelope rules.
def _with(**changes):
    doc = pool({"cidr": "198.18.0.0/24"})
    for key, value in changes.items():
        if key.startswith("meta_"):
            doc["metadata"][key[5:]] = value
        else:
            doc[key] = value
    return doc


ENVELOPE_RULES = [
    (_with(meta_name="pool-1.a"), _with(meta_name="Pool_1"), "metadata.name", "invalid name 'Pool_1'"),
    (_with(meta_name="p" * 253), _with(meta_name="p" * 254), "metadata.name", "at most 253"),
    (_with(meta_labels={"example.com/zone": "a"}), _with(meta_labels={"bad key!": "a"}), "metadata.labels.bad key!", "invalid label key"),
    (_with(meta_labels={"zone": "a-1"}), _with(meta_labels={"zone": "-a"}), "metadata.labels.zone", "invalid label value"),
    (_with(meta_annotations={"note": "any text at all"}), _with(meta_annotations={"note": 5}), "metadata.annotations.note", "expected a string"),
    (_with(), _with(meta_namespace="prod"), "metadata.namespace", "IPPool is not namespaced"),
    (_with(), _with(meta_nickname="x"), "metadata.nickname", "unknown field"),
    (_with(apiVersion=API), _with(apiVersion="projectcalico.org/v1"), "apiVersion", "expected projectcalico.org/v3"),
    (_with(kind="IPPool"), _with(kind="IPPools"), "kind", "unknown resource kind 'IPPools'"),
    (_with(kind="IPPool"), _with(kind="List"), "kind", "generic 'List' is not a Calico v3 resource"),
    (_with(), _with(status={}), "status", "unknown field"),
    (_with(), _with(specs={}), "specs", "unknown field"),
]


@pytest.mark.parametrize("accepted, refused, path, phrase", ENVELOPE_RULES, ids=[f"{r[2]}-{r[3][:20]}" for r in ENVELOPE_RULES])
def test_envelope_rule(accepted, refused, path, phrase):
    kinds.decode(accepted)
    err = refusal(refused)
    assert err.path == path and phrase in err.reason, str(err)


def test_missing_name_and_missing_spec():
    assert refusal({"apiVersion": API, "kind": "IPPool", "metadata": {}, "spec": {"cidr": "198.18.0.0/24"}}).path == "metadata.name"
    assert refusal({"apiVersion": API, "kind": "IPPool", "metadata": {"name": "p"}}).path == "spec"


def test_pool_defaults_are_calicos():
    _, v4 = kinds.decode(pool({"cidr": "198.18.0.0/16"}))
    assert v4["spec"] == {
        "cidr": "198.18.0.0/16", "blockSize": 26, "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic", "ipipMode": "Never", "vxlanMode": "Never",
    }
    _, v6 = kinds.decode(pool({"cidr": "fd00:198:18::/48"}))
    assert v6["spec"]["blockSize"] == 122
    _, disabled = kinds.decode(pool({"cidr": "198.18.0.0/28", "disabled": True}))
    assert disabled["spec"]["disabled"] is True  # a disabled pool may be smaller than its blocks, as in Calico


def test_pool_fields_that_cannot_change():
    old = kinds.decode(pool({"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"]}))[1]
    assert "CIDR cannot be modified" in ipam.IPPOOL.immutable(old, kinds.decode(pool({"cidr": "198.18.1.0/24"}))[1])
    assert "BlockSize cannot be modified" in ipam.IPPOOL.immutable(old, kinds.decode(pool({"cidr": "198.18.0.0/24", "blockSize": 28}))[1])
    assert "from LoadBalancer" in ipam.IPPOOL.immutable(old, kinds.decode(pool({"cidr": "198.18.0.0/24", "allowedUses": ["Workload"]}))[1])
    assert ipam.IPPOOL.immutable(old, kinds.decode(pool({"cidr": "198.18.0.0/24", "allowedUses": ["LoadBalancer"], "disabled": True}))[1]) is None


def test_reservation_rules():
    ok = {"apiVersion": API, "kind": "IPReservation", "metadata": {"name": "r"}, "spec": {"reservedCIDRs": ["198.18.0.0/28", "198.18.1.1"]}}
    kinds.decode(ok)
    bad = {**ok, "spec": {"reservedCIDRs": ["198.18.0.0/28", "nope"]}}
    err = refusal(bad)
    assert err.path == "spec.reservedCIDRs[1]" and "invalid CIDR" in err.reason


@pytest.mark.parametrize("alias", ["ippool", "ippools", "IPPool", "ipp", "ipps", "pool", "pools", "IPPOOLS"])
def test_pool_aliases(alias):
    assert kinds.lookup(alias) is ipam.IPPOOL


@pytest.mark.parametrize("alias", ["ipreservation", "ipreservations", "reservation", "reservations", "IPReservation"])
def test_reservation_aliases(alias):
    assert kinds.lookup(alias) is ipam.IPRESERVATION


def test_pool_columns():
    _, d = kinds.decode(pool({"cidr": "198.18.0.0/24", "vxlanMode": "Always", "natOutgoing": True}))
    assert [(c.header, c.cell(d)) for c in ipam.IPPOOL.columns] == [("NAME", "p1"), ("CIDR", "198.18.0.0/24"), ("SELECTOR", "all()")]
    assert [(c.header, c.cell(d)) for c in ipam.IPPOOL.wide] == [
        ("NAME", "p1"), ("CIDR", "198.18.0.0/24"), ("NAT", "true"), ("IPIPMODE", "Never"), ("VXLANMODE", "Always"),
        ("DISABLED", "false"), ("DISABLEBGPEXPORT", "false"), ("SELECTOR", "all()"), ("ASSIGNMENTMODE", "Automatic"),
    ]
    # A record written by another tool without the modes shows "Never", as calicoctl does.
    bare = {"metadata": {"name": "x"}, "spec": {"cidr": "198.18.0.0/24"}}
    assert [c.cell(bare) for c in ipam.IPPOOL.wide][3:5] == ["Never", "Never"]


def test_every_kind_has_a_unique_set_of_names():
    seen: dict[str, str] = {}
    for kind in kinds.KINDS:
        for alias in kind.names():
            assert alias not in seen, f"{alias} names both {seen[alias]} and {kind.name}"
            seen[alias] = kind.name
        assert kinds.lookup(kind.name) is kind and kinds.lookup(kind.plural) is kind


@pytest.mark.parametrize(
    "document",
    [
        _with(meta_name="pool\n"),
        _with(meta_labels={"zone": "a\n"}),
        _with(meta_labels={"zone\n": "a"}),
        pool({"cidr": "198.18.0.0/24", "nodeSelector": "all()"}, name="p\n"),
    ],
)
def test_a_trailing_newline_does_not_pass_a_pattern(document):
    """Calico's patterns match the whole text (Go's `$`); Python's `$` would let "x\\n" through."""
    assert refusal(document).path.startswith("metadata.")


def test_pool_namespace_selector_is_kept():
    # Calico v3.31 writes it as given (IPPoolSpec NamespaceSelector, no default): decoded, it stays.
    _, doc = kinds.decode(pool({"cidr": "198.18.0.0/24", "allowedUses": ["Workload"], "namespaceSelector": "team in {'a', 'b'}"}))
    assert doc["spec"]["namespaceSelector"] == "team in {'a', 'b'}"
    _, doc = kinds.decode(pool({"cidr": "198.18.0.0/24"}))
    assert "namespaceSelector" not in doc["spec"]  # never defaulted
