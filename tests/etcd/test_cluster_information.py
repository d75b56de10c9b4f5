"""Calico's ClusterInformation and the migration lock (issue 15 item 3).

Records are shaped as Calico v3.30 writes them: libcalico-go/lib/clientv3/client.go
ensureClusterInformation (clusterGUID = hex of a UUID, clusterType, datastoreReady written as a
pointer to true) and ensureTierExists (default Deny 1e6, adminnetworkpolicy Pass 1000,
baselineadminnetworkpolicy Pass 1e7); calicoctl/commands/datastore/migrate/lock.go and unlock.go set
spec.datastoreReady to false and true."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from calico_cni.resources import cluster
from tests.calico_support import assert_node_clean, ok, pod_env, pod_links, run_calico
from tests.calicoctl_support import run_exe
from tests.conftest import cni_env, run_plugin
from tests.pools import pools_fixture

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

R = "/calico/resources/v3/projectcalico.org/"
INFO = R + "clusterinformations/default"

pools = pools_fixture(("v4", "198.18.41.0/24", 26))


def raw(store, key: str):
    kv = store.client.get(key)
    return (json.loads(kv.value), kv.mod_revision) if kv else (None, 0)


def put_calico_info(store, **spec) -> None:
    """A ClusterInformation as Calico's calico-node writes it (v3.30), with `spec` overriding."""
    doc = {
        "kind": "ClusterInformation",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "default", "uid": "0b8f3a57-5a52-4f6e-9d3c-7b8e2c1f0a11", "creationTimestamp": "2026-11-30T10:00:00Z"},
        "spec": {"clusterGUID": "3f2c0d8e9a1b4c5d8e7f6a5b4c3d2e1f", "clusterType": "k8s,bgp", "calicoVersion": "v3.30.0", "datastoreReady": True, **spec},
    }
    assert store.client.commit([], [(INFO, json.dumps(doc).encode())])[0]


def test_initialise_writes_calicos_records_and_leaves_calico_version_empty(store):
    info = cluster.initialise(store)
    doc, _ = raw(store, INFO)
    spec = doc["spec"]
    assert len(spec["clusterGUID"]) == 32 and int(spec["clusterGUID"], 16) >= 0
    assert spec["datastoreReady"] is True and spec["clusterType"] == "bgp" and "calicoVersion" not in spec
    assert info.doc["spec"] == spec
    tiers = {t: raw(store, R + "tiers/" + t)[0]["spec"] for t in ("default", "adminnetworkpolicy", "baselineadminnetworkpolicy")}
    assert tiers == {
        "default": {"order": 1_000_000.0, "defaultAction": "Deny"},
        "adminnetworkpolicy": {"order": 1_000.0, "defaultAction": "Pass"},
        "baselineadminnetworkpolicy": {"order": 10_000_000.0, "defaultAction": "Pass"},
    }
    # A second run changes nothing (no write: the revisions stay).
    before = [raw(store, k)[1] for k in (INFO, R + "tiers/default")]
    cluster.initialise(store)
    assert [raw(store, k)[1] for k in (INFO, R + "tiers/default")] == before


def test_initialise_completes_calicos_record_without_changing_what_it_set(store):
    put_calico_info(store, clusterGUID="", datastoreReady=None)
    cluster.initialise(store, "bgp,typha")
    spec = raw(store, INFO)[0]["spec"]
    assert spec["calicoVersion"] == "v3.30.0" and spec["clusterType"] == "k8s,bgp,typha"
    assert spec["datastoreReady"] is True and len(spec["clusterGUID"]) == 32


def test_lock_refuses_add_with_try_again_and_del_journals_until_unlock(store, pools, ipam_conf, tmp_path):
    journal = str(tmp_path / "journal")
    conf = {**ipam_conf(), "release_journal_dir": journal}
    env = {"ETCD_ENDPOINTS": conf["etcd_endpoints"], "CALICO_RELEASE_JOURNAL_DIR": journal}
    added = run_plugin("calico-ipam", "ADD", conf, cni_env("c1"))
    assert added.rc == 0, added.stdout

    locked = run_exe("datastore", "migrate", "lock", env=env)
    assert (locked.rc, locked.stdout) == (0, "Datastore locked.\n"), locked.stderr
    assert raw(store, INFO)[0]["spec"]["datastoreReady"] is False
    assert run_exe("datastore", "migrate", "lock", env=env).stdout == "Datastore was already locked.\n"

    refused = run_plugin("calico-ipam", "ADD", conf, cni_env("c2"))
    assert refused.rc != 0 and refused.out["code"] == 11, refused.stdout
    assert refused.out["msg"] == "Calico is currently not ready to process requests"
    assert "calicoctl datastore migrate unlock" in refused.out["details"]
    assert [h.handle_id for h in store.handles()] == ["net1.c1"]  # nothing allocated for c2

    deleted = run_plugin("calico-ipam", "DEL", conf, cni_env("c1"))
    assert deleted.rc == 0, deleted.stdout
    assert len(os.listdir(os.path.join(journal, "pending"))) == 1
    assert [h.handle_id for h in store.handles()] == ["net1.c1"]  # released only after the unlock

    unlocked = run_exe("datastore", "migrate", "unlock", env=env)
    assert (unlocked.rc, unlocked.stdout) == (0, "Datastore unlocked.\n"), unlocked.stderr
    assert raw(store, INFO)[0]["spec"]["datastoreReady"] is True
    assert os.listdir(os.path.join(journal, "pending")) == [] and store.handles() == []  # calicoctl replayed it
    assert run_plugin("calico-ipam", "ADD", conf, cni_env("c2")).rc == 0


def test_a_lock_set_by_calicos_calicoctl_is_honoured(store, pools, ipam_conf):
    put_calico_info(store, datastoreReady=False)
    refused = run_plugin("calico-ipam", "ADD", ipam_conf(), cni_env("c1"))
    assert refused.out["code"] == 11 and store.handles() == []
    status = run_plugin("calico-ipam", "STATUS", ipam_conf("1.1.0"), {})
    assert status.out["code"] == 50 and status.out["msg"] == "datastore locked: Calico is currently not ready to process requests", status.stdout


@pytest.mark.parametrize("spec", [{}, {"datastoreReady": None}], ids=["no record", "no datastoreReady"])
def test_a_missing_record_or_flag_is_ready(store, pools, ipam_conf, spec):
    if spec:
        put_calico_info(store, **spec)
    assert run_plugin("calico-ipam", "ADD", ipam_conf(), cni_env("c1")).rc == 0


@pytest.mark.parametrize("value", [b"{not json", b'{"spec": "locked"}', b"[]"], ids=["not JSON", "spec not an object", "not an object"])
def test_an_unreadable_record_is_ready(store, pools, ipam_conf, value):
    """A ClusterInformation nobody can read says nothing of a lock: the datastore counts as ready."""
    assert store.client.commit([], [(INFO, value)])[0]
    assert run_plugin("calico-ipam", "ADD", ipam_conf(), cni_env("c1")).rc == 0


def test_unlock_of_an_unlocked_datastore_initialises_it(store, etcd_endpoint):
    r = run_exe("datastore", "migrate", "unlock", env={"ETCD_ENDPOINTS": etcd_endpoint})
    assert (r.rc, r.stdout) == (0, "Datastore was not locked.\n"), r.stderr
    assert raw(store, INFO)[0]["spec"]["datastoreReady"] is True


def test_calico_under_a_lock_refuses_add_untouched_and_del_waits_for_the_unlock(store, pools, node, pod, calico_conf, tmp_path):
    """The calico plugin checks the lock in its first datastore read: a refused ADD writes nothing
    (no profile, no address, no interface); a DEL removes the pod's interfaces and leaves the
    endpoint and the address to the journal, which the unlock's calicoctl run finishes."""
    journal = str(tmp_path / "journal")
    conf = calico_conf(release_journal_dir=journal)
    env = {"ETCD_ENDPOINTS": conf["etcd_endpoints"], "CALICO_RELEASE_JOURNAL_DIR": journal}
    a, b = pod(), pod()
    ok(run_calico(node, "ADD", conf, pod_env(a)))
    assert run_exe("datastore", "migrate", "lock", env=env).rc == 0
    profiles_before = raw(store, R + "profiles/net1")[1]

    # Another network, whose profile does not exist yet: the refused ADD must not create it.
    refused = run_calico(node, "ADD", calico_conf(name="net2", release_journal_dir=journal), pod_env(b))
    assert refused.rc != 0 and refused.out["code"] == 11, refused.stdout
    assert refused.out["msg"] == "Calico is currently not ready to process requests"
    assert pod_links(b) == [] and len(store.workload_endpoints()) == 1 and len(node.cali_links()) == 1
    assert raw(store, R + "profiles/net2") == (None, 0) and len(store.handles()) == 1

    ok(run_calico(node, "DEL", conf, pod_env(a)))
    assert pod_links(a) == [] and node.cali_links() == []
    assert len(store.workload_endpoints()) == 1 and len(store.handles()) == 1  # waits for the unlock
    assert raw(store, R + "profiles/net1")[1] == profiles_before

    assert run_exe("datastore", "migrate", "unlock", env=env).rc == 0
    assert store.workload_endpoints() == [] and store.handles() == []
    assert_node_clean(node)


def test_a_del_under_the_lock_without_held_file_deletes_its_endpoint_after_the_unlock(store, pools, node, pod, calico_conf, tmp_path):
    """The held file may be gone (a tmpfs journal after a reboot, an ADD of an older release): the
    read that found the lock also read the endpoint, whose uid the journal entry keeps, so the
    replay after the unlock deletes it and releases its address."""
    journal = str(tmp_path / "journal")
    conf = calico_conf(release_journal_dir=journal)
    env = {"ETCD_ENDPOINTS": conf["etcd_endpoints"], "CALICO_RELEASE_JOURNAL_DIR": journal}
    a = pod()
    ok(run_calico(node, "ADD", conf, pod_env(a)))
    shutil.rmtree(os.path.join(journal, "held"))
    assert run_exe("datastore", "migrate", "lock", env=env).rc == 0
    ok(run_calico(node, "DEL", conf, pod_env(a)))
    [entry] = [os.path.join(journal, "pending", f) for f in os.listdir(os.path.join(journal, "pending"))]
    assert json.load(open(entry))["endpoint"]["uid"] == store.workload_endpoints()[0].doc["metadata"]["uid"]
    assert run_exe("datastore", "migrate", "unlock", env=env).rc == 0
    assert store.workload_endpoints() == [] and store.handles() == []
    assert_node_clean(node)


def test_several_dels_under_one_lock_each_journal_their_endpoint(store, pools, node, pod, calico_conf, tmp_path):
    """After the first DEL's entry is pending, a later DEL's replay finds the lock before its own
    read: its endpoint is read anyway (a lock allows reads), so every entry names its endpoint and
    the unlock finishes all of them, held files or not."""
    journal = str(tmp_path / "journal")
    conf = calico_conf(release_journal_dir=journal)
    env = {"ETCD_ENDPOINTS": conf["etcd_endpoints"], "CALICO_RELEASE_JOURNAL_DIR": journal}
    pods = [pod() for _ in range(3)]
    for p in pods:
        ok(run_calico(node, "ADD", conf, pod_env(p)))
    shutil.rmtree(os.path.join(journal, "held"))
    assert run_exe("datastore", "migrate", "lock", env=env).rc == 0
    for p in pods:
        ok(run_calico(node, "DEL", conf, pod_env(p)))
    entries = [json.load(open(os.path.join(journal, "pending", f))) for f in os.listdir(os.path.join(journal, "pending"))]
    assert len(entries) == 3 and all(e["endpoint"] and e["endpoint"]["uid"] for e in entries)
    assert run_exe("datastore", "migrate", "unlock", env=env).rc == 0
    assert store.workload_endpoints() == [] and store.handles() == []
    assert_node_clean(node)


def test_the_journal_is_not_replayed_while_the_datastore_is_locked(store, pools, node, pod, calico_conf, tmp_path):
    """An entry finished by the replay (endpoint and address) waits while the datastore is locked,
    whatever invocation comes first; calicoctl says so in a warning line."""
    journal = str(tmp_path / "journal")
    conf = calico_conf(release_journal_dir=journal)
    env = {"ETCD_ENDPOINTS": conf["etcd_endpoints"], "CALICO_RELEASE_JOURNAL_DIR": journal}
    a = pod()
    ok(run_calico(node, "ADD", conf, pod_env(a)))
    assert run_exe("datastore", "migrate", "lock", env=env).rc == 0
    ok(run_calico(node, "DEL", conf, pod_env(a)))
    shown = run_exe("get", "ippools", env=env)
    assert shown.rc == 0 and "pending releases not replayed yet: Calico is currently not ready" in shown.stderr
    assert len(store.workload_endpoints()) == 1 and len(store.handles()) == 1
    assert len(os.listdir(os.path.join(journal, "pending"))) == 1
    assert run_exe("datastore", "migrate", "unlock", env=env).rc == 0
    assert store.workload_endpoints() == [] and store.handles() == []


def test_lock_and_unlock_keep_a_calico_record_as_it_is_apart_from_the_flag(store, etcd_endpoint):
    """Calico's lock.go initialises with an empty cluster type, which changes nothing."""
    put_calico_info(store, clusterType="typha,kdd,k8s,operator")
    before = raw(store, INFO)[0]
    assert run_exe("datastore", "migrate", "lock", env={"ETCD_ENDPOINTS": etcd_endpoint}).rc == 0
    after = raw(store, INFO)[0]
    assert after["spec"] == {**before["spec"], "datastoreReady": False} and after["metadata"] == before["metadata"]
    assert run_exe("datastore", "migrate", "unlock", env={"ETCD_ENDPOINTS": etcd_endpoint}).rc == 0
    assert raw(store, INFO)[0]["spec"] == before["spec"]
