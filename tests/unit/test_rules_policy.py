"""The rules controller with network policy (calico_cni.node.rules, against a fake nft and a fake
datastore; the kernel side is tested in tests/policy): nothing is written until the profiles
existing endpoints lack are created and in the cache, then policy goes in and the marker file is
written; a request's endpoint is programmed before the request answers, held as pending until the
watch brings it; a request before the first programming waits a bounded time, then fails with
error 11; a DEL removes the chains and flushes the addresses' conntrack entries; other tables'
dropping chains are reported."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from calico_cni.datastore.etcd import KeyValue
from calico_cni.model import keys
from calico_cni.model.keys import workload_endpoint
from calico_cni.model.records import NETWORK_ANNOTATION, WorkloadEndpoint
from calico_cni.dataplane.nftables import NftError
from calico_cni.node import rules
from calico_cni.node.nft_policy import endpoint_chains
from calico_cni.node.rules import Enforcement, RulesController
from calico_cni.node.syncer import Cache
from calico_cni.protocol.errors import TRY_AGAIN_LATER, CniError
from tests.unit.test_nft_rules import ME, FakeNft, pool, whole_tables

API = "projectcalico.org/v3"


class PolicyNft(FakeNft):
    """FakeNft that also answers the start-up question about other tables."""

    def __init__(self, dropping: list[str] | None = None) -> None:
        super().__init__()
        self.dropping = dropping or []

    def dropping_chains(self) -> list[str]:
        return list(self.dropping)


class FakeStore:
    """What `resources.profiles.repair` needs of a datastore: endpoints and profile names, and
    create-only commits (recorded)."""

    def __init__(self, endpoints: list, profiles: set[str]) -> None:
        self.endpoints, self.profiles, self.created = endpoints, profiles, []
        self.client = self

    def workload_endpoints_and_names(self, prefix: str):
        return self.endpoints, set(self.profiles)

    def commit(self, puts=(), deletes=()):
        self.created += [p.name for p in puts]
        return True

    def close(self) -> None:
        pass


def endpoint_doc(name: str, interface: str, address: str, node: str = ME, profiles: tuple[str, ...] = ("net1",)) -> dict:
    """A plain-CNI endpoint named as Calico names it: node--a-cni-<container>-eth0."""
    container = name.split("-cni-", 1)[1].rsplit("-eth0", 1)[0]
    return {
        "apiVersion": API,
        "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": "default", "labels": {"projectcalico.org/namespace": "default", "projectcalico.org/orchestrator": "cni"}},
        "spec": {
            "orchestrator": "cni",
            "node": node,
            "containerID": container,
            "endpoint": "eth0",
            "interfaceName": interface,
            "ipNetworks": [address],
            "profiles": list(profiles),
        },
    }


def kv(key: str, doc: dict, revision: int) -> KeyValue:
    return KeyValue(key, json.dumps(doc).encode(), revision, revision, 1)


def profile(name: str, revision: int = 3) -> KeyValue:
    spec = {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}], "labelsToApply": {name: ""}}
    return kv(keys.RESOURCES + "profiles/" + name, {"apiVersion": API, "kind": "Profile", "metadata": {"name": name}, "spec": spec}, revision)


def controller(cache: Cache, tmp_path, store: FakeStore | None = None, nft: PolicyNft | None = None) -> tuple[RulesController, PolicyNft, FakeStore]:
    store = store if store is not None else FakeStore([], {"net1"})
    nft = nft if nft is not None else PolicyNft()
    c = RulesController(ME, cache, nft=nft, enforcement=Enforcement(str(tmp_path / "policy-enforced"), lambda: store))  # type: ignore[arg-type]
    return c, nft, store


def synced(*items: KeyValue, revision: int = 10) -> Cache:
    cache = Cache()
    cache.replace(items, revision)
    return cache


def chains_written(c: RulesController) -> set[str]:
    return {ch.name for w in c.writer.written.values() for s in w.table.sections for ch in s.chains}


def test_policy_goes_in_with_the_first_pass_and_the_marker_is_written(tmp_path):
    wep = endpoint_doc("node--a-cni-c1-eth0", "cali1111", "198.18.0.5/32")
    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"), kv(workload_endpoint("default", "node--a-cni-c1-eth0"), wep, 5))
    c, nft, store = controller(cache, tmp_path)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    assert store.created == []  # every profile named exists
    assert set(endpoint_chains("cali1111")) <= chains_written(c)
    assert (tmp_path / "policy-enforced").exists() and c.enforcing.is_set()
    assert len(nft.applied) == 1 and whole_tables(nft.applied[0]) == ["ip", "ip6"]  # written whole first, in one transaction


def test_nothing_is_written_until_the_created_profiles_arrive(tmp_path):
    """A profile an endpoint names but nobody created denies: it is created first, and the tables
    (a previous calico-node's, still enforcing) are left as they are until the watch brings it."""
    wep = endpoint_doc("node--a-cni-c1-eth0", "cali1111", "198.18.0.5/32")
    key = workload_endpoint("default", "node--a-cni-c1-eth0")
    items = [pool("p", "198.18.0.0/16"), kv(key, wep, 5)]
    cache = synced(*items)
    annotated = {**wep, "metadata": {**wep["metadata"], "annotations": {NETWORK_ANNOTATION: "net1"}}}
    store = FakeStore([WorkloadEndpoint("default", "node--a-cni-c1-eth0", annotated, 5)], set())
    c, nft, _ = controller(cache, tmp_path, store)
    failure = c.run_pass(cache.snapshot(), now=0.0)
    assert store.created == ["net1"]
    assert failure is not None and "profiles/net1" in failure
    assert nft.applied == [] and not c.enforcing.is_set() and not (tmp_path / "policy-enforced").exists()
    cache.replace([*items, profile("net1", 11)], 11)
    assert c.run_pass(cache.snapshot(), now=0.1) is None
    assert store.created == ["net1"]  # the repair runs once
    assert len(nft.applied) == 1 and c.enforcing.is_set()


def test_a_request_programs_its_endpoint_before_answering_and_the_watch_takes_over(tmp_path, monkeypatch):
    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"))
    c, nft, _ = controller(cache, tmp_path)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    listed = nft.listed
    key = workload_endpoint("default", "node--a-cni-c2-eth0")
    doc = endpoint_doc("node--a-cni-c2-eth0", "cali2222", "198.18.0.6/32")
    c.endpoint_added(key, doc)
    assert set(endpoint_chains("cali2222")) <= chains_written(c)
    assert nft.applied[-1].startswith(("add ", "flush ")), "a delta, not the whole table"
    assert "cali2222" in nft.applied[-1]
    assert nft.listed == listed  # a request does not list the table (the next check adopts it)
    # The watch brings the write: the pending copy is dropped, the chains stay, nothing is written.
    writes = len(nft.applied)
    cache.replace([pool("p", "198.18.0.0/16"), profile("net1"), kv(key, doc, 12)], 12)
    assert c.run_pass(cache.snapshot(), now=0.2) is None
    assert c.pending == {} and set(endpoint_chains("cali2222")) <= chains_written(c)
    assert len(nft.applied) == writes
    # DEL: chains out, then the addresses' conntrack entries, before the request answers.
    flushed = []
    monkeypatch.setattr(rules.conntrack, "flush_addresses", lambda addresses: flushed.append([str(a) for a in addresses]))
    c.endpoint_removed(key, ["198.18.0.6/32"])
    assert not set(endpoint_chains("cali2222")) & chains_written(c)
    assert flushed == [["198.18.0.6"]]


def test_an_abandoned_endpoint_loses_its_chains_at_the_next_pass(tmp_path):
    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"))
    c, _, _ = controller(cache, tmp_path)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    key = workload_endpoint("default", "node--a-cni-c3-eth0")
    c.endpoint_added(key, endpoint_doc("node--a-cni-c3-eth0", "cali3333", "198.18.0.7/32"))
    c.endpoint_abandoned(key)
    assert c.run_pass(cache.snapshot(), now=0.1) is None
    assert not set(endpoint_chains("cali3333")) & chains_written(c)


def test_a_request_before_the_first_programming_waits_then_fails_with_11(tmp_path, monkeypatch):
    monkeypatch.setattr(rules, "SYNC_WAIT", 0.2)
    c, nft, _ = controller(Cache(), tmp_path)  # never synced
    with pytest.raises(CniError) as err:
        c.endpoint_added(workload_endpoint("default", "node--a-cni-c4-eth0"), endpoint_doc("node--a-cni-c4-eth0", "cali4444", "198.18.0.8/32"))
    assert err.value.code == TRY_AGAIN_LATER and "not programmed network policy yet" in err.value.msg
    assert nft.applied == [] and c.pending == {}


def test_a_request_waiting_for_the_first_programming_goes_on_once_it_is_done(tmp_path):
    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"))
    c, _, _ = controller(cache, tmp_path)
    done: list[BaseException | None] = []

    def request() -> None:
        try:
            c.endpoint_added(workload_endpoint("default", "node--a-cni-c5-eth0"), endpoint_doc("node--a-cni-c5-eth0", "cali5555", "198.18.0.9/32"))
            done.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            done.append(exc)

    thread = threading.Thread(target=request)
    thread.start()
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    thread.join(5)
    assert done == [None] and set(endpoint_chains("cali5555")) <= chains_written(c)


def test_other_tables_dropping_chains_are_reported_once(tmp_path, caplog):
    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"))
    c, _, _ = controller(cache, tmp_path, nft=PolicyNft(["inet filter forward (hook forward)"]))
    with caplog.at_level(logging.WARNING, logger="calico_cni.node.rules"):
        assert c.run_pass(cache.snapshot(), now=0.0) is None
        assert c.run_pass(cache.snapshot(), now=10.0) is None
    reports = [r.getMessage() for r in caplog.records if "inet filter forward" in r.getMessage()]
    assert len(reports) == 1 and "policy drop" in reports[0]


def test_without_enforcement_no_policy_and_requests_do_nothing(tmp_path):
    cache = synced(pool("p", "198.18.0.0/16"))
    nft = PolicyNft()
    c = RulesController(ME, cache, nft=nft)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    c.endpoint_added(workload_endpoint("default", "node--a-cni-c6-eth0"), endpoint_doc("node--a-cni-c6-eth0", "cali6666", "198.18.0.10/32"))
    assert len(nft.applied) == 1 and not any(ch.startswith(("tw-", "fw-")) for ch in chains_written(c))


def test_a_del_never_waits_for_policy_nor_fails(tmp_path, monkeypatch, caplog):
    """DEL before the first programming: no wait (nothing of the endpoint is in the kernel yet), its
    connections still flushed; a flush that fails is logged, and the DEL goes on."""
    monkeypatch.setattr(rules, "SYNC_WAIT", 30.0)  # a wait would show as a hung test
    c, nft, _ = controller(Cache(), tmp_path)
    flushed = []
    monkeypatch.setattr(rules.conntrack, "flush_addresses", lambda addresses: flushed.append([str(a) for a in addresses]))
    c.endpoint_removed(workload_endpoint("default", "node--a-cni-c7-eth0"), ["198.18.0.11/32", "fd00:198:18::11/128"])
    assert flushed == [["198.18.0.11", "fd00:198:18::11"]] and nft.applied == []

    def failing(addresses):
        raise rules.DataplaneError("conntrack is not installed")

    monkeypatch.setattr(rules.conntrack, "flush_addresses", failing)
    with caplog.at_level(logging.ERROR, logger="calico_cni.node.rules"):
        c.endpoint_removed(workload_endpoint("default", "node--a-cni-c7-eth0"), ["198.18.0.11/32"])
    assert any("were not flushed" in r.getMessage() and "not installed" in r.getMessage() for r in caplog.records)


def test_a_loop_pass_never_writes_an_older_snapshot_over_a_requests_newer_one(tmp_path):
    """A request wrote from a newer cache version (a Deny policy in it); the loop's pass, holding an
    older snapshot, renders the newest one instead of taking the Deny out again."""
    base = [pool("p", "198.18.0.0/16"), profile("net1")]
    cache = synced(*base)
    c, _, _ = controller(cache, tmp_path)
    old = cache.snapshot()
    assert c.run_pass(old, now=0.0) is None
    deny = kv(
        keys.RESOURCES + "globalnetworkpolicies/default.deny-all",
        {
            "apiVersion": API,
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "default.deny-all"},
            "spec": {"tier": "default", "selector": "all()", "types": ["Ingress"], "ingress": [{"action": "Deny"}]},
        },
        11,
    )
    cache.replace([*base, deny], 11)
    key = workload_endpoint("default", "node--a-cni-c8-eth0")
    c.endpoint_added(key, endpoint_doc("node--a-cni-c8-eth0", "cali8888", "198.18.0.12/32"))
    assert any(name.startswith("pi-") for name in chains_written(c))
    assert c.run_pass(old, now=0.1) is None  # the loop, late, with the snapshot it took before
    assert any(name.startswith("pi-") for name in chains_written(c)), "the Deny policy was taken out"


def test_addresses_leaving_this_nodes_endpoints_any_way_have_their_connections_flushed(tmp_path, monkeypatch):
    """An endpoint deleted without a DEL served here (calicoctl delete, a DEL while calico-node was
    down): the loop flushes its addresses' conntrack entries, once; a DEL served here flushes its
    own and the loop does not again."""
    flushed: list[list[str]] = []
    monkeypatch.setattr(rules.conntrack, "flush_addresses", lambda addresses: flushed.append([str(a) for a in addresses]))
    key1, key2 = workload_endpoint("default", "node--a-cni-c9-eth0"), workload_endpoint("default", "node--a-cni-c10-eth0")
    one = kv(key1, endpoint_doc("node--a-cni-c9-eth0", "cali9999", "198.18.0.13/32"), 5)
    two = kv(key2, endpoint_doc("node--a-cni-c10-eth0", "cali1010", "198.18.0.14/32"), 6)
    base = [pool("p", "198.18.0.0/16"), profile("net1")]
    cache = synced(*base, one, two)
    c, _, _ = controller(cache, tmp_path)
    assert c.run_pass(cache.snapshot(), now=0.0) is None and flushed == []
    cache.replace([*base, two], 11)  # `one` deleted behind our back
    assert c.run_pass(cache.snapshot(), now=0.1) is None
    assert flushed == [["198.18.0.13"]]
    assert c.run_pass(cache.snapshot(), now=0.2) is None and flushed == [["198.18.0.13"]]  # once
    c.endpoint_removed(key2, ["198.18.0.14/32"])  # a DEL served here
    cache.replace(base, 12)
    assert c.run_pass(cache.snapshot(), now=0.3) is None
    assert flushed == [["198.18.0.13"], ["198.18.0.14"]]


def test_a_pending_deletion_gives_way_to_a_newer_endpoint_under_the_same_key(tmp_path):
    """A DEL's pending deletion ends when the key is written again after it (a newer sandbox): that
    endpoint's chains are programmed, not hidden until the pending entry expires."""
    key = workload_endpoint("default", "node--a-cni-c11-eth0")
    doc = endpoint_doc("node--a-cni-c11-eth0", "cali1111", "198.18.0.15/32")
    base = [pool("p", "198.18.0.0/16"), profile("net1")]
    cache = synced(*base, kv(key, doc, 5))
    c, _, _ = controller(cache, tmp_path)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    c.endpoint_removed(key, ["198.18.0.15/32"])
    assert not set(endpoint_chains("cali1111")) & chains_written(c)
    newer = endpoint_doc("node--a-cni-c11-eth0", "cali1212", "198.18.0.16/32")
    cache.replace([*base, kv(key, newer, 13)], 13)
    assert c.run_pass(cache.snapshot(), now=0.1) is None
    assert set(endpoint_chains("cali1212")) <= chains_written(c) and c.pending == {}


def test_an_add_waits_for_the_profile_the_plugin_just_created(tmp_path):
    """The first pod of a network: the plugin created its profile a moment ago; the request waits
    (boundedly) for the watch to bring it rather than program the pod as denied."""
    cache = synced(pool("p", "198.18.0.0/16"), profile("other"))
    c, _, _ = controller(cache, tmp_path)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    arriving = threading.Timer(0.2, lambda: cache.replace([pool("p", "198.18.0.0/16"), profile("other"), profile("net1", 12)], 12))
    arriving.start()
    c.endpoint_added(workload_endpoint("default", "node--a-cni-c12-eth0"), endpoint_doc("node--a-cni-c12-eth0", "cali1313", "198.18.0.17/32"))
    arriving.join()
    tw = next(w.table for w in c.writer.written.values() if w.table.family == "ip")
    (rules_of,) = [ch.rules for s in tw.sections for ch in s.chains if ch.name == "tw-cali1313"]
    assert "jump pri-net1" in rules_of, rules_of


def test_without_a_readable_generation_checks_adopt_and_compare_listings(tmp_path):
    """No nftables generation (netlink refused): each check lists; the first listing after a write
    is adopted, and only a listing that differs from it means a whole write."""

    class Blind(PolicyNft):
        def generation(self) -> int:
            raise rules.NftError("cannot read the nftables generation: Operation not permitted")

    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"))
    c, nft, _ = controller(cache, tmp_path, nft=Blind())
    for step in range(4):
        assert c.run_pass(cache.snapshot(), now=step * rules.PERIOD) is None
    assert len(nft.applied) == 1  # written once, never again
    nft.tables[("ip", "calico")] = "tampered"
    assert c.run_pass(cache.snapshot(), now=5 * rules.PERIOD) is None
    assert len(nft.applied) == 2 and whole_tables(nft.applied[-1]) == ["ip"]


def test_a_failure_of_ours_while_programming_answers_11_not_a_traceback(tmp_path, monkeypatch):
    """A bug in rendering during a request: the ADD gets error 11 naming it, the pending endpoint
    is dropped by the plugin's abandon, and the next loop pass works."""
    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"))
    c, _, _ = controller(cache, tmp_path)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    real = c.compiler.section
    monkeypatch.setattr(c.compiler, "section", lambda *a, **k: (_ for _ in ()).throw(KeyError("boom")))
    key = workload_endpoint("default", "node--a-cni-c13-eth0")
    with pytest.raises(CniError) as err:
        c.endpoint_added(key, endpoint_doc("node--a-cni-c13-eth0", "cali1414", "198.18.0.18/32"))
    assert err.value.code == TRY_AGAIN_LATER and "KeyError" in err.value.details
    c.endpoint_abandoned(key)
    monkeypatch.setattr(c.compiler, "section", real)
    assert c.run_pass(cache.snapshot(), now=0.1) is None


def test_policy_waits_for_created_profiles_only_so_long(tmp_path, monkeypatch):
    """A profile the start-up repair created that never comes through the watch (deleted at once,
    say) holds policy back AWAIT_PROFILES at most, then policy goes in without it."""
    wep = endpoint_doc("node--a-cni-c14-eth0", "cali1515", "198.18.0.19/32")
    annotated = {**wep, "metadata": {**wep["metadata"], "annotations": {NETWORK_ANNOTATION: "net1"}}}
    store = FakeStore([WorkloadEndpoint("default", "node--a-cni-c14-eth0", annotated, 5)], set())
    cache = synced(pool("p", "198.18.0.0/16"), kv(workload_endpoint("default", "node--a-cni-c14-eth0"), wep, 5))
    c, nft, _ = controller(cache, tmp_path, store)
    assert c.run_pass(cache.snapshot(), now=0.0) is not None and nft.applied == []
    assert c.run_pass(cache.snapshot(), now=rules.AWAIT_PROFILES - 1) is not None and nft.applied == []
    assert c.run_pass(cache.snapshot(), now=rules.AWAIT_PROFILES + 1) is None
    assert c.enforcing.is_set() and set(endpoint_chains("cali1515")) <= chains_written(c)


def waiting_in(intake: dict, lock, count: int, timeout: float = 2.0) -> bool:
    """Whether `count` requests registered in the controller's `intake` (read under `lock`) within
    `timeout` seconds: the moment a test opens its gate."""
    for _ in range(int(timeout / 0.01)):
        with lock:
            if len(intake) == count:
                return True
        threading.Event().wait(0.01)
    return False


class GatedNft(PolicyNft):
    """A PolicyNft whose next apply waits until `gate` is set (a pass in progress while more
    requests arrive)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.gated = False

    def apply(self, text: str) -> None:
        if self.gated:
            self.gated = False
            self.entered.set()
            assert self.gate.wait(10)
        super().apply(text)


def test_concurrent_requests_share_a_pass(tmp_path):
    """A burst: while one request's pass writes, the others register; the next pass programs all
    of them, and they answer without a pass of their own (two passes for five pods, not five)."""
    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"))
    nft = GatedNft()
    c, _, _ = controller(cache, tmp_path, nft=nft)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    before = len(nft.applied)
    passes = []
    run_pass = c.run_pass
    c.run_pass = lambda *a, **k: passes.append(1) or run_pass(*a, **k)  # type: ignore[method-assign]
    nft.gated = True
    pods = [
        (workload_endpoint("default", f"node--a-cni-b{i}-eth0"), endpoint_doc(f"node--a-cni-b{i}-eth0", f"calib{i:03d}", f"198.18.0.{30 + i}/32"))
        for i in range(5)
    ]
    errors: list[BaseException] = []

    def add(key: str, doc: dict) -> None:
        try:
            c.endpoint_added(key, doc)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    first = threading.Thread(target=add, args=pods[0])
    first.start()
    assert nft.entered.wait(10)  # the first pass is writing, holding the lock
    others = [threading.Thread(target=add, args=p) for p in pods[1:]]
    for t in others:
        t.start()
    # Every other request has registered its endpoint before the gate opens.
    assert waiting_in(c._intake, c._intake_lock, 4)
    nft.gate.set()
    for t in [first, *others]:
        t.join(10)
    assert errors == []
    assert len(passes) == 2 and len(nft.applied) - before == 2
    for i in range(5):
        assert set(endpoint_chains(f"calib{i:03d}")) <= chains_written(c)


def test_a_request_covered_by_a_failed_pass_runs_its_own(tmp_path):
    """A pass that fails covers nobody: the next request programs its endpoint itself."""
    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"))
    c, nft, _ = controller(cache, tmp_path)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    key = workload_endpoint("default", "node--a-cni-f1-eth0")
    nft.fail = "nft refused the ruleset"
    with pytest.raises(CniError) as failed:
        c.endpoint_added(key, endpoint_doc("node--a-cni-f1-eth0", "calif001", "198.18.0.40/32"))
    assert failed.value.code == TRY_AGAIN_LATER
    nft.fail = None
    c.endpoint_added(key, endpoint_doc("node--a-cni-f1-eth0", "calif001", "198.18.0.40/32"))
    assert set(endpoint_chains("calif001")) <= chains_written(c)


class FirstPassFailsNft(PolicyNft):
    """A PolicyNft that, once `armed`, refuses every apply of the first thread to apply (its pass
    fails, the whole write after the delta included) and takes every other thread's."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.failing: threading.Thread | None = None

    def apply(self, text: str) -> None:
        if self.armed and self.failing is None:
            self.failing = threading.current_thread()
        if threading.current_thread() is self.failing:
            raise NftError("nft refused the ruleset")
        super().apply(text)


def test_an_endpoint_taken_into_a_failed_pass_is_programmed_by_its_own_requests_pass(tmp_path):
    """Two requests register while the lock is held; the first to get it takes both endpoints
    into its pass, which fails: that request answers 11, and the other, which that pass did not
    cover, runs its own and answers success with its chains in the kernel (not the other's
    error, nor success without a pass)."""
    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"))
    nft = FirstPassFailsNft()
    c, _, _ = controller(cache, tmp_path, nft=nft)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    nft.armed = True
    pods = [
        (workload_endpoint("default", f"node--a-cni-g{i}-eth0"), endpoint_doc(f"node--a-cni-g{i}-eth0", f"calig{i:03d}", f"198.18.0.{50 + i}/32"))
        for i in range(2)
    ]
    outcomes: dict[int, BaseException | None] = {}

    def add(i: int) -> None:
        try:
            c.endpoint_added(*pods[i])
            outcomes[i] = None
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcomes[i] = exc

    threads = [threading.Thread(target=add, args=(i,)) for i in range(2)]
    with c.lock:  # a pass in progress: both requests register, then wait for the lock
        for t in threads:
            t.start()
        assert waiting_in(c._intake, c._intake_lock, 2)
    for t in threads:
        t.join(10)
    failed = next(i for i, t in enumerate(threads) if t is nft.failing)
    other = 1 - failed
    assert isinstance(outcomes[failed], CniError) and outcomes[failed].code == TRY_AGAIN_LATER
    assert outcomes[other] is None
    assert set(endpoint_chains(f"calig{other:03d}")) <= chains_written(c)


def test_concurrent_flushes_share_a_walk_of_the_table(tmp_path, monkeypatch):
    """Conntrack flushes walk the whole table: while one runs, the addresses other DELs register
    are taken by the next one, and every caller returns once its addresses were flushed."""
    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"))
    c, _, _ = controller(cache, tmp_path)
    entered, gate = threading.Event(), threading.Event()
    walks: list[list[str]] = []

    def flush_addresses(addresses):
        walks.append(sorted(str(a) for a in addresses))
        if len(walks) == 1:
            entered.set()
            assert gate.wait(10)

    monkeypatch.setattr(rules.conntrack, "flush_addresses", flush_addresses)
    first = threading.Thread(target=c._flush, args=(["198.18.0.1"], "endpoint a deleted"))
    first.start()
    assert entered.wait(10)
    others = [threading.Thread(target=c._flush, args=([f"198.18.0.{i}/32"], f"endpoint {i} deleted")) for i in range(2, 6)]
    for t in others:
        t.start()
    assert waiting_in(c._flush_intake, c._flush_intake_lock, 4)
    gate.set()
    for t in [first, *others]:
        t.join(10)
    assert walks == [["198.18.0.1"], ["198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.5"]]


@pytest.mark.parametrize("address", ["not-an-address", {"cidr": "198.18.0.9/32"}, ["198.18.0.9/32"]])
def test_a_del_of_an_endpoint_with_an_address_that_is_not_one_is_logged_not_raised(tmp_path, monkeypatch, caplog, address):
    """A hand-written endpoint's ipNetworks entry that is no address text (a dict or a list is not
    even hashable for _address's cache): logged, nothing flushed, and the DEL goes on."""
    c, _, _ = controller(Cache(), tmp_path)
    flushed = []
    monkeypatch.setattr(rules.conntrack, "flush_addresses", lambda addresses: flushed.append(addresses))
    with caplog.at_level(logging.ERROR, logger="calico_cni.node.rules"):
        c.endpoint_removed(workload_endpoint("default", "node--a-cni-c9-eth0"), ["198.18.0.9/32", address])
    assert flushed == [] and any("an address that is not one" in r.getMessage() for r in caplog.records)


def test_the_loop_adopts_a_requests_write_only_once_requests_are_quiet(tmp_path, monkeypatch):
    """A listing process exiting right after a commit holds the next commit back: while requests
    write (a burst), the loop's pass does not list the tables to adopt their writes; once they have
    been quiet for ADOPT_QUIET, it does (and the periodic check lists regardless)."""
    monkeypatch.setattr(rules, "ADOPT_QUIET", 0.2)
    cache = synced(pool("p", "198.18.0.0/16"), profile("net1"))
    c, nft, _ = controller(cache, tmp_path)
    assert c.run_pass(cache.snapshot(), now=0.0) is None
    c.endpoint_added(workload_endpoint("default", "node--a-cni-q1-eth0"), endpoint_doc("node--a-cni-q1-eth0", "caliq001", "198.18.0.60/32"))
    listed = nft.listed
    assert c.run_pass(cache.snapshot(), now=0.1) is None
    assert nft.listed == listed, "listed right after a request's write"
    threading.Event().wait(0.25)
    assert c.run_pass(cache.snapshot(), now=0.2) is None
    assert nft.listed > listed and not c.writer.unlisted()
