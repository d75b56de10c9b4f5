"""Pool choice and block order (calico_ipam/pools.py), without etcd."""

from __future__ import annotations

import ipaddress
import json
import logging

import pytest

from calico_cni.model.records import IpamConfig
from calico_ipam.allocator import block_limit

from calico_cni.model.records import MANUAL, TUNNEL, WORKLOAD, CorruptRecord, IPPool
from calico_cni.plugins.errors import cni_error
from calico_cni.protocol.errors import IPAM_EXHAUSTED
from calico_ipam.errors import AddressesExhausted
from calico_ipam.pools import block_cidr_for, candidate_blocks, pool_containing, usable_pools


def pool(name: str, cidr: str, block_size: int | None = None, **spec) -> IPPool:
    if "allowed_uses" in spec:
        spec["allowed_uses"] = tuple(spec["allowed_uses"])
    return IPPool.new(name, cidr, block_size, **spec)


def names(pools) -> list[str]:
    return [p.name for p in pools]


def addr(text: str):
    return ipaddress.ip_address(text)


def fails(fn, *args, **kwargs) -> AddressesExhausted:
    with pytest.raises(AddressesExhausted) as info:
        fn(*args, **kwargs)
    assert cni_error(info.value).code == IPAM_EXHAUSTED
    return info.value


@pytest.fixture
def pools() -> list[IPPool]:
    # In name order, as the datastore lists them.
    return [
        pool("a-v4", "198.18.0.0/24", 26),
        pool("b-v6", "fd00:198:18::/120", 122),
        pool("c-disabled", "198.18.1.0/24", 26, disabled=True),
        pool("d-manual", "198.18.2.0/24", 26, assignment_mode=MANUAL),
        pool("e-tunnel", "198.18.3.0/24", 26, allowed_uses=[TUNNEL]),
        pool("f-zone-a", "198.18.4.0/24", 26, node_selector="zone == 'a'"),
        pool("g-v4", "198.18.5.0/24", 26),
        pool("h-bad-selector", "198.18.6.0/24", 26, node_selector="zone === 'a'"),
        pool("i-not-gpu", "198.18.7.0/24", 26, node_selector="!has(gpu)"),
    ]


# ------------------------------------------------------------------------------------------------
# usable_pools without named pools


def test_automatic_pools_in_name_order(pools):
    assert names(usable_pools(pools, 4, "node1", {})) == ["a-v4", "g-v4", "i-not-gpu"]
    assert names(usable_pools(pools, 4, "node1", {"zone": "a"})) == ["a-v4", "f-zone-a", "g-v4", "i-not-gpu"]
    assert names(usable_pools(pools, 4, "node1", {"zone": "a", "gpu": "1"})) == ["a-v4", "f-zone-a", "g-v4"]
    assert names(usable_pools(pools, 6, "node1", {})) == ["b-v6"]


def test_excluded_pools(pools):
    out = names(usable_pools(pools, 4, "node1", {"zone": "a"}))
    assert "b-v6" not in out  # other family
    assert "c-disabled" not in out
    assert "d-manual" not in out  # Manual: only when named
    assert "e-tunnel" not in out  # no Workload in allowedUses
    assert "h-bad-selector" not in out


def test_workload_among_several_uses_is_enough():
    p = pool("both", "198.18.0.0/24", allowed_uses=[TUNNEL, WORKLOAD])
    assert usable_pools([p], 4, "n", {}) == [p]


def test_pool_with_unparsable_selector_is_skipped_with_a_logged_error(pools, caplog):
    with caplog.at_level(logging.ERROR):
        usable_pools(pools, 4, "node1", {"zone": "a"})
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("h-bad-selector" in e for e in errors), errors


def test_no_usable_pool_error_names_node_and_pools(pools):
    err = fails(usable_pools, pools[2:6], 4, "node7", {})
    assert "no configured Calico pools for node node7" in err.msg
    for name in ("c-disabled", "d-manual", "e-tunnel", "f-zone-a"):
        assert name in err.details
    assert "zone == 'a'" in err.details  # the selector that did not match
    assert "disabled" in err.details


def test_selector_mismatch_error_shows_the_node_labels():
    err = fails(usable_pools, [pool("z", "198.18.0.0/24", node_selector="zone == 'b'")], 4, "node3", {"zone": "a"})
    assert "node3" in err.msg
    assert "'zone': 'a'" in err.details and "z" in err.details


def test_no_pool_of_the_family(pools):
    err = fails(usable_pools, [pools[0]], 6, "node1", {})
    assert "node1" in err.msg
    assert "IPv6" in err.details and "no IPv6 pool" in err.details
    err = fails(usable_pools, [], 4, "node2", {})
    assert "node2" in err.msg and "IPv4" in err.details


# ------------------------------------------------------------------------------------------------
# usable_pools with named pools


def test_named_pools_by_name_and_cidr_in_the_given_order(pools):
    out = usable_pools(pools, 4, "node1", {}, ["g-v4", "198.18.0.0/24"])
    assert names(out) == ["g-v4", "a-v4"]
    out = usable_pools(pools, 4, "node1", {}, ["198.18.5.0/24", "a-v4"])
    assert names(out) == ["g-v4", "a-v4"]
    assert names(usable_pools(pools, 6, "node1", {}, ["fd00:198:18::/120"])) == ["b-v6"]


def test_named_manual_pool_is_used(pools):
    assert names(usable_pools(pools, 4, "node1", {}, ["d-manual"])) == ["d-manual"]
    assert names(usable_pools(pools, 4, "node1", {}, ["198.18.2.0/24"])) == ["d-manual"]


def test_named_pools_override_selectors(pools):
    assert names(usable_pools(pools, 4, "node1", {}, ["f-zone-a"])) == ["f-zone-a"]
    assert names(usable_pools(pools, 4, "node1", {"gpu": "1"}, ["i-not-gpu"])) == ["i-not-gpu"]


def test_only_named_pools_are_used(pools):
    assert names(usable_pools(pools, 4, "node1", {"zone": "a"}, ["g-v4"])) == ["g-v4"]


@pytest.mark.parametrize("wanted", ["missing", "198.18.99.0/24", "c-disabled", "198.18.1.0/24", "b-v6", "not/a/cidr"])
def test_named_pool_missing_disabled_or_other_family_is_an_error(pools, wanted):
    err = fails(usable_pools, pools, 4, "node1", {}, ["a-v4", wanted])
    assert f"the given pool ({wanted}) does not exist, or is not enabled" == err.msg
    assert "ipv4_pools" in err.details
    assert "a-v4" in err.details and "g-v4" in err.details  # what does exist
    assert "c-disabled (198.18.1.0/24, disabled)" in err.details


def test_named_pool_without_workload_use_is_an_error(pools):
    err = fails(usable_pools, pools, 4, "node1", {}, ["e-tunnel"])
    assert "e-tunnel" in err.msg and "Workload" in err.msg
    assert "Tunnel" in err.details


def test_named_error_with_no_pool_of_the_family():
    err = fails(usable_pools, [pool("v4", "198.18.0.0/24")], 6, "node1", {}, ["fd00::/64"])
    assert "fd00::/64" in err.msg
    assert "ipv6_pools" in err.details and "none" in err.details


# ------------------------------------------------------------------------------------------------
# Block size (Calico's allowed ranges; a block larger than its pool is refused)


@pytest.mark.parametrize(
    "cidr,block_size",
    [
        ("198.18.0.0/28", 26),  # block larger than the pool
        ("198.18.0.0/16", 19),
        ("198.18.0.0/16", 33),
        ("fd00:198:18::/120", 115),
        ("fd00:198:18::/48", 129),
        ("fd00:198:18::/126", 122),
    ],
)
def test_pool_with_invalid_block_size_is_never_used(cidr, block_size):
    doc = ('{"kind": "IPPool", "spec": {"cidr": "%s", "blockSize": %d}}' % (cidr, block_size)).encode()
    try:
        p = IPPool.from_json("bad", doc)
    except CorruptRecord:
        return  # rejected when read: the store skips it with a logged error
    try:
        usable = usable_pools([p], p.family, "node1", {})
    except AddressesExhausted:
        return  # rejected by the pool choice
    assert usable == []


def test_valid_block_sizes_are_accepted():
    for cidr, size in [("198.18.0.0/20", 20), ("198.18.0.0/24", 32), ("198.18.0.0/24", 24), ("fd00:198:18::/116", 116), ("fd00:198:18::/120", 128)]:
        p = IPPool.new("ok", cidr, size)
        assert usable_pools([p], p.family, "n", {}) == [p]


# ------------------------------------------------------------------------------------------------
# candidate_blocks


@pytest.mark.parametrize(
    "cidr,block_size,count",
    [
        ("198.18.0.0/24", 26, 4),
        ("198.18.0.0/16", 26, 1024),
        ("198.18.0.0/24", 24, 1),
        ("198.18.0.0/28", 32, 16),
        ("fd00:198:18::/120", 122, 4),
        ("fd00:198:18::/112", 122, 1024),
    ],
)
@pytest.mark.parametrize("node", ["node1", "node2", "a-much-longer-node-name.example.com", ""])
def test_candidate_blocks_cover_every_block_exactly_once(cidr, block_size, count, node):
    p = IPPool.new("p", cidr, block_size)
    out = list(candidate_blocks(p, node))
    assert len(out) == count
    assert len(set(out)) == count
    expected = {str(n) for n in p.cidr.subnets(new_prefix=block_size)}
    assert set(out) == expected
    # Every string is a canonical block CIDR inside the pool.
    for text in out:
        net = ipaddress.ip_network(text)
        assert str(net) == text and net.prefixlen == block_size and net.subnet_of(p.cidr)


def test_candidate_blocks_are_sequential_with_wrap_around():
    p = IPPool.new("p", "198.18.0.0/24", 28)
    out = [ipaddress.ip_network(c) for c in candidate_blocks(p, "node1")]
    index = [(int(n.network_address) - int(p.cidr.network_address)) // 16 for n in out]
    assert all(index[i + 1] == (index[i] + 1) % 16 for i in range(15))


def test_candidate_blocks_start_at_different_places_for_different_nodes():
    p = IPPool.new("p", "198.18.0.0/16", 26)
    starts = {next(candidate_blocks(p, f"node{i}")) for i in range(20)}
    assert len(starts) >= 15  # 20 nodes over 1024 blocks: collisions are rare
    assert next(candidate_blocks(p, "node1")) != next(candidate_blocks(p, "node2"))


def test_candidate_blocks_are_deterministic_per_node():
    p = IPPool.new("p", "fd00:198:18::/112", 122)
    assert list(candidate_blocks(p, "node1")) == list(candidate_blocks(p, "node1"))


def test_candidate_blocks_is_lazy():
    """A huge IPv6 pool must not be materialised to get the first candidates."""
    p = IPPool.new("big", "fd00:198:18::/48", 122)
    it = candidate_blocks(p, "node1")
    first = [next(it) for _ in range(3)]
    assert len(set(first)) == 3
    assert all(ipaddress.ip_network(c).subnet_of(p.cidr) for c in first)


# ------------------------------------------------------------------------------------------------
# pool_containing and block_cidr_for


def test_pool_containing(pools):
    assert pool_containing(pools, addr("198.18.0.7")).name == "a-v4"
    assert pool_containing(pools, addr("198.18.5.255")).name == "g-v4"
    assert pool_containing(pools, addr("fd00:198:18::5")).name == "b-v6"
    assert pool_containing(pools, addr("198.18.2.1")).name == "d-manual"  # a specific address may come from a Manual pool
    assert pool_containing(pools, addr("198.18.4.1")).name == "f-zone-a"  # selectors do not apply to specific addresses


def test_pool_containing_excludes_disabled_tunnel_and_unknown(pools):
    assert pool_containing(pools, addr("198.18.1.1")) is None  # disabled
    assert pool_containing(pools, addr("198.18.3.1")) is None  # Tunnel only
    assert pool_containing(pools, addr("198.19.0.1")) is None
    assert pool_containing(pools, addr("fd00:198:19::1")) is None
    assert pool_containing([], addr("198.18.0.1")) is None


def test_pool_containing_prefers_an_enabled_pool_over_a_disabled_overlap():
    disabled = pool("a", "198.18.0.0/16", disabled=True)
    enabled = pool("b", "198.18.0.0/24")
    assert pool_containing([disabled, enabled], addr("198.18.0.9")) is enabled
    assert pool_containing([disabled, enabled], addr("198.18.1.9")) is None


def test_block_cidr_for():
    p4 = IPPool.new("p", "198.18.0.0/16", 26)
    assert block_cidr_for(p4, addr("198.18.3.77")) == "198.18.3.64/26"
    assert block_cidr_for(p4, addr("198.18.0.0")) == "198.18.0.0/26"
    p6 = IPPool.new("p6", "fd00:198:18::/48", 122)
    assert block_cidr_for(p6, addr("fd00:198:18::1:45")) == "fd00:198:18::1:40/122"
    assert block_cidr_for(p6, addr("fd00:198:18::1:45")) in set(candidate_blocks(IPPool.new("p6", "fd00:198:18::1:0/112", 122), "n"))


# ------------------------------------------------------------------------------------------------
# namespaceSelector (Calico v3.31 and later, read and kept)


def v331_pool(name: str, cidr: str, namespace_selector) -> IPPool:
    """An IPPool as Calico v3.31's client stores it (api/pkg/apis/projectcalico/v3/ippool.go
    IPPoolSpec: `namespaceSelector,omitempty`, the defaults of clientv3/ippool.go; v3.31's
    validator refuses a namespaceSelector on a pool that allows Tunnel, so Workload only)."""
    spec = {
        "cidr": cidr, "blockSize": 26, "nodeSelector": "all()", "allowedUses": ["Workload"], "ipipMode": "Never",
        "vxlanMode": "Never", "natOutgoing": False, "assignmentMode": "Automatic",
    }
    if namespace_selector is not None:
        spec["namespaceSelector"] = namespace_selector
    doc = {"kind": "IPPool", "apiVersion": "projectcalico.org/v3", "metadata": {"name": name}, "spec": spec}
    return IPPool.from_json(name, json.dumps(doc).encode())


@pytest.mark.parametrize(
    "namespace_selector, used",
    [
        (None, True),  # absent: every namespace (SelectsNamespace with an empty selector)
        ("", True),
        ("all()", True),
        ("!has(team)", True),
        ("team != 'a'", True),  # an absent label is not equal to 'a'
        ("has(team)", False),  # no namespace labels outside Kubernetes
        ("team == 'a'", False),
        ("team in {'a', 'b'}", False),
    ],
)
def test_namespace_selector_is_matched_against_no_labels(namespace_selector, used):
    p = v331_pool("ns", "198.18.0.0/24", namespace_selector)
    other = v331_pool("z-plain", "198.18.1.0/24", None)
    assert names(usable_pools([p, other], 4, "node1", {"zone": "a"})) == (["ns", "z-plain"] if used else ["z-plain"])


def test_namespace_selector_that_does_not_parse_skips_the_pool_with_a_logged_error(caplog):
    bad = v331_pool("bad-ns", "198.18.0.0/24", "team === 'a'")
    plain = v331_pool("plain", "198.18.1.0/24", None)
    with caplog.at_level(logging.ERROR):
        assert names(usable_pools([bad, plain], 4, "node1", {})) == ["plain"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("bad-ns" in e and "namespaceSelector" in e for e in errors), errors
    # Not a string at all (another tool's record): skipped the same way.
    caplog.clear()
    odd = v331_pool("odd-ns", "198.18.2.0/24", ["has(x)"])
    with caplog.at_level(logging.ERROR):
        assert names(usable_pools([odd, plain], 4, "node1", {})) == ["plain"]
    assert any("odd-ns" in r.getMessage() for r in caplog.records)


def test_only_namespace_selected_pools_is_no_pool_and_the_error_says_why():
    err = fails(usable_pools, [v331_pool("team-a", "198.18.0.0/24", "team == 'a'")], 4, "node1", {})
    assert "team-a" in err.details and "namespaceSelector \"team == 'a'\"" in err.details
    assert "namespace's labels {}" in err.details


def test_named_pools_override_the_namespace_selector():
    # As Calico's requested pools do (v3.31 ipam.go: requested pools are used unconditionally).
    p = v331_pool("team-a", "198.18.0.0/24", "team == 'a'")
    assert names(usable_pools([p], 4, "node1", {}, ["team-a"])) == ["team-a"]


def test_namespace_selector_is_kept_when_the_pool_is_rewritten():
    p = v331_pool("team-a", "198.18.0.0/24", "team == 'a'")
    assert json.loads(p.to_json())["spec"]["namespaceSelector"] == "team == 'a'"


@pytest.mark.parametrize(
    "cluster, request_limit, limit",
    [
        (0, 0, 20),  # neither set: Calico's safeguard
        (5, 0, 5),  # the cluster's when the request sets none
        (0, 30, 30),  # the request's when the cluster sets none (it may exceed 20, as in Calico)
        (5, 3, 3),  # the request's when it is more restrictive
        (5, 8, 5),  # the cluster's when it is more restrictive
    ],
)
def test_block_limit_merges_as_calicos_auto_assign(cluster, request_limit, limit):
    """libcalico-go ipam.go autoAssign (v3.30): per-request MaxBlocksPerHost merged with the
    cluster's maxBlocksPerHost, 20 when neither is set."""
    assert block_limit(IpamConfig(max_blocks_per_host=cluster), request_limit) == limit
