"""calicoctl's resource verbs (create, apply, replace, delete, get, patch, label) against a real etcd,
through the command: every verb on every kind, the shapes of a resource file, all-or-nothing
writes, optimistic concurrency, writes that change nothing, uid and creationTimestamp, output
formats and their round trip, namespaces, labels, patches, kind names, the rules that need other
stored resources, large files, the --config file, and one-line errors."""

from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from calico_cni.ctl.main import cli
from calico_cni.datastore.etcd import Range
from calico_cni.model import kinds
from calico_cni.model.resource import Resource
from tests.calicoctl_support import Run, run_exe
from tests.conftest import BIN_DIR

API = "projectcalico.org/v3"
R = "/calico/resources/v3/projectcalico.org/"
NP_ANNOTATION = "projectcalico.org/metadata"

# A minimal valid resource of every kind: (name, spec, a changed spec that is also valid).
MINIMAL: dict[str, tuple[str, dict, dict]] = {
    "IPPool": ("pool1", {"cidr": "198.18.0.0/24"}, {"cidr": "198.18.0.0/24", "natOutgoing": True}),
    "IPReservation": ("res1", {"reservedCIDRs": ["198.19.0.0/28"]}, {"reservedCIDRs": ["198.19.0.0/28", "198.19.1.0/28"]}),
    "Node": ("node1", {"bgp": {"ipv4Address": "192.0.2.10/24"}}, {"bgp": {"ipv4Address": "192.0.2.11/24"}}),
    "BGPConfiguration": ("default", {"asNumber": 64513}, {"asNumber": 64514, "nodeToNodeMeshEnabled": False}),
    "BGPPeer": ("peer1", {"peerIP": "192.0.2.1", "asNumber": 64514}, {"peerIP": "192.0.2.2", "asNumber": 64515}),
    "BGPFilter": (
        "filter1",
        {"exportV4": [{"action": "Accept", "matchOperator": "In", "cidr": "198.18.0.0/16"}]},
        {"exportV4": [{"action": "Reject", "matchOperator": "In", "cidr": "198.18.0.0/16"}]},
    ),
    "FelixConfiguration": ("default", {"logSeverityScreen": "Info"}, {"logSeverityScreen": "Debug"}),
    "KubeControllersConfiguration": ("default", {"controllers": {}}, {"controllers": {}, "logSeverityScreen": "Debug"}),
    "Tier": ("tier1", {"order": 100}, {"order": 200, "defaultAction": "Pass"}),
    "NetworkPolicy": ("np1", {"selector": "all()"}, {"selector": "app == 'web'", "order": 10}),
    "GlobalNetworkPolicy": ("gnp1", {"selector": "all()"}, {"selector": "app == 'web'", "order": 10}),
    "Profile": ("profile1", {}, {"labelsToApply": {"team": "a"}}),
    "NetworkSet": ("set1", {"nets": ["198.51.100.0/28"]}, {"nets": ["198.51.100.16/28"]}),
    "GlobalNetworkSet": ("gset1", {"nets": ["198.51.100.0/28"]}, {"nets": ["198.51.100.16/28"]}),
    "WorkloadEndpoint": (
        "node1-k8s-pod1-eth0",
        {"node": "node1", "orchestrator": "k8s", "pod": "pod1", "endpoint": "eth0", "interfaceName": "cali0", "containerID": "abc"},
        {"node": "node1", "orchestrator": "k8s", "pod": "pod1", "endpoint": "eth0", "interfaceName": "cali1", "containerID": "abc"},
    ),
    "HostEndpoint": ("hep1", {"node": "node1", "interfaceName": "eth0"}, {"node": "node1", "interfaceName": "eth1"}),
}
KIND_NAMES = [k.name for k in kinds.KINDS]
WRITABLE = [k.name for k in kinds.KINDS if k.writable]
READONLY = [k.name for k in kinds.KINDS if not k.writable]


def test_every_kind_has_a_minimal_document():
    # A new kind must get a row in MINIMAL (and so every per-kind test below).
    assert set(WRITABLE) <= set(MINIMAL) and READONLY == ["ClusterInformation"]


def doc(kind: str, name: str | None = None, spec: dict | None = None, changed: bool = False, **meta) -> dict:
    n, s, c = MINIMAL[kind]
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name or n, **meta}, "spec": copy.deepcopy(spec if spec is not None else (c if changed else s))}


def pool(name: str, cidr: str, **spec) -> dict:
    return {"apiVersion": API, "kind": "IPPool", "metadata": {"name": name}, "spec": {"cidr": cidr, **spec}}


def write(path, *docs: dict, fmt: str = "yaml") -> str:
    """The documents in a file: several YAML documents, or one JSON value."""
    if fmt == "json":
        path.write_text(json.dumps(docs[0] if len(docs) == 1 else list(docs), indent=1))
    else:
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def kind_of(name: str):
    k = kinds.by_kind(name)
    assert k is not None
    return k


def key_of(kind: str, name: str, namespace: str | None = None) -> str:
    k = kind_of(kind)
    return Resource(k, {"metadata": {"name": name, **({"namespace": namespace or "default"} if k.namespaced else {})}}).key


def raw(store, key: str):
    """The etcd record at `key` (value bytes, mod_revision...) or None."""
    return store.client.get(key)


def revision(store) -> int:
    """etcd's current revision: any write anywhere moves it."""
    _, rev = store.client.read([Range("/", prefix=True, keys_only=True)])
    return rev


def keys(store, prefix: str = "/calico/") -> list[str]:
    (kvs,), _ = store.client.read([Range(prefix, prefix=True, keys_only=True)])
    return [kv.key for kv in kvs]


def snapshot(store) -> tuple[int, dict[str, bytes]]:
    """Everything in etcd under /calico/, and the revision: to prove nothing was written."""
    (kvs,), rev = store.client.read([Range("/calico/", prefix=True)])
    return rev, {kv.key: kv.value for kv in kvs}


def ok(r: Run) -> Run:
    assert r.rc == 0, (r.stdout, r.stderr)
    return r


def failed(r: Run, *needles: str, code: int = 1) -> str:
    """A failure: exit `code`, one line on stderr holding each needle, no traceback; returns it."""
    assert r.rc == code, (r.rc, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in err, err
    return err


def get_doc(ctl, kind: str, name: str, *args: str) -> dict:
    return ok(ctl("get", kind, name, "-o", "json", *args)).json()


def ns_args(kind: str) -> tuple[str, ...]:
    return ("-n", "default") if kind_of(kind).namespaced else ()


def decoded_spec(kind: str, spec: dict) -> dict:
    """The spec as stored from a file's `spec` and read back (as `get` shows it: Calico fills in some
    fields on read, such as a policy's default tier)."""
    k, decoded = kinds.decode(doc(kind, spec=spec))
    return Resource.from_stored(k, Resource(k, decoded).to_json(), 1).doc["spec"]


def stored_decoded_spec(kind: str, spec: dict) -> dict:
    """The spec as written to etcd from a file's `spec` (defaults filled in)."""
    return kinds.decode(doc(kind, spec=spec))[1]["spec"]


@pytest.fixture
def cli_in(etcd_endpoint):
    """calicoctl in-process with text on stdin."""

    def run(text: str, *args: str) -> Run:
        result = CliRunner().invoke(cli, ["--etcd-endpoints", etcd_endpoint, *args], input=text, catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def exe_env(etcd_endpoint) -> dict:
    return {"ETCD_ENDPOINTS": etcd_endpoint}


# -- every verb on every kind ------------------------------------------------------------------


@pytest.mark.parametrize("kind", WRITABLE)
def test_create_then_get(ctl, store, tmp_path, kind):
    name, spec, _ = MINIMAL[kind]
    r = ok(ctl("create", "-f", write(tmp_path / "r.yaml", doc(kind))))
    assert r.stdout.strip() == f"Successfully created 1 '{kind}' resource(s)"
    got = get_doc(ctl, kind, name)
    assert got["kind"] == kind and got["apiVersion"] == API and got["metadata"]["name"] == name
    assert got["spec"] == decoded_spec(kind, spec)
    meta = got["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    stored = raw(store, key_of(kind, name))
    assert stored is not None and meta["resourceVersion"] == str(stored.mod_revision)
    assert "resourceVersion" not in json.loads(stored.value)["metadata"]
    assert json.loads(stored.value)["spec"] == stored_decoded_spec(kind, spec)


@pytest.mark.parametrize("kind", WRITABLE)
def test_create_of_an_existing_resource_fails_and_skip_exists_skips_it(ctl, store, tmp_path, kind):
    path = write(tmp_path / "r.yaml", doc(kind))
    ok(ctl("create", "-f", path))
    before = snapshot(store)
    ident = f"{kind}(default/{MINIMAL[kind][0]})" if kind_of(kind).namespaced else f"{kind}({MINIMAL[kind][0]})"
    failed(ctl("create", "-f", path), f"resource already exists: {ident}")
    changed = write(tmp_path / "c.yaml", doc(kind, changed=True))
    r = ok(ctl("create", "--skip-exists", "-f", changed))
    assert r.stdout.startswith("Successfully created") and "1 skipped" in r.stdout
    assert snapshot(store) == before


@pytest.mark.parametrize("kind", WRITABLE)
def test_apply_creates_then_updates_keeping_uid_and_creation_time(ctl, store, tmp_path, kind):
    name, _, changed = MINIMAL[kind]
    r = ok(ctl("apply", "-f", write(tmp_path / "a.yaml", doc(kind))))
    assert r.stdout.strip() == f"Successfully applied 1 '{kind}' resource(s)"
    first = get_doc(ctl, kind, name)
    ok(ctl("apply", "-f", write(tmp_path / "b.yaml", doc(kind, changed=True))))
    second = get_doc(ctl, kind, name)
    assert second["spec"] == decoded_spec(kind, changed) != first["spec"]
    for field in ("uid", "creationTimestamp"):
        assert second["metadata"][field] == first["metadata"][field]
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


@pytest.mark.parametrize("kind", WRITABLE)
def test_replace_needs_an_existing_resource_and_keeps_uid(ctl, store, tmp_path, kind):
    name, _, changed = MINIMAL[kind]
    path = write(tmp_path / "r.yaml", doc(kind, changed=True))
    failed(ctl("replace", "-f", path), "resource does not exist:", f"({'default/' if kind_of(kind).namespaced else ''}{name})")
    assert keys(store, R + kind_of(kind).plural + "/") == []
    ok(ctl("create", "-f", write(tmp_path / "c.yaml", doc(kind))))
    first = get_doc(ctl, kind, name)
    r = ok(ctl("replace", "-f", path))
    assert r.stdout.strip() == f"Successfully replaced 1 '{kind}' resource(s)"
    second = get_doc(ctl, kind, name)
    assert second["spec"] == decoded_spec(kind, changed)
    assert (second["metadata"]["uid"], second["metadata"]["creationTimestamp"]) == (first["metadata"]["uid"], first["metadata"]["creationTimestamp"])


@pytest.mark.parametrize("kind", WRITABLE)
def test_delete_by_file_and_by_name(ctl, store, tmp_path, kind):
    name = MINIMAL[kind][0]
    k = kind_of(kind)
    path = write(tmp_path / "r.yaml", doc(kind))
    ok(ctl("create", "-f", path))
    r = ok(ctl("delete", "-f", path))
    assert f"Successfully deleted 1 '{kind}' resource(s)" in r.stdout
    assert raw(store, key_of(kind, name)) is None
    ok(ctl("create", "-f", path))
    r = ok(ctl("delete", k.plural, name))
    assert f"Successfully deleted 1 '{kind}' resource(s)" in r.stdout
    assert raw(store, key_of(kind, name)) is None
    failed(ctl("delete", k.plural, name), "resource does not exist:")
    r = ok(ctl("delete", k.plural, name, "--skip-not-exists"))
    assert r.stdout.startswith("Successfully deleted") and "1 skipped" in r.stdout
    ok(ctl("delete", "--skip-not-exists", "-f", path))


@pytest.mark.parametrize("kind", WRITABLE)
def test_unchanged_apply_and_replace_write_nothing(ctl, store, tmp_path, kind):
    name = MINIMAL[kind][0]
    path = write(tmp_path / "r.yaml", doc(kind))
    ok(ctl("apply", "-f", path))
    before = snapshot(store)
    key_rev = raw(store, key_of(kind, name)).mod_revision
    r = ok(ctl("apply", "-f", path))
    assert "Successfully applied 1" in r.stdout and "1 unchanged" in r.stderr
    ok(ctl("replace", "-f", path))
    assert snapshot(store) == before
    assert raw(store, key_of(kind, name)).mod_revision == key_rev


@pytest.mark.parametrize("kind", WRITABLE)
def test_get_yaml_applies_back_unchanged(ctl, store, tmp_path, kind):
    name = MINIMAL[kind][0]
    ok(ctl("create", "-f", write(tmp_path / "r.yaml", doc(kind, changed=True))))
    text = ok(ctl("get", kind, name, "-o", "yaml")).stdout
    shown = yaml.safe_load(text)
    assert shown["kind"] == kind and "items" not in shown
    (tmp_path / "back.yaml").write_text(text)
    before = snapshot(store)
    for verb in ("apply", "replace"):
        ok(ctl(verb, "-f", str(tmp_path / "back.yaml")))
    assert snapshot(store) == before
    assert ok(ctl("get", kind, name, "-o", "yaml")).stdout == text


@pytest.mark.parametrize("kind", WRITABLE)
def test_patch_every_kind(ctl, store, tmp_path, kind):
    name = MINIMAL[kind][0]
    ok(ctl("create", "-f", write(tmp_path / "r.yaml", doc(kind))))
    first = get_doc(ctl, kind, name)
    r = ok(ctl("patch", kind.lower(), name, "-p", json.dumps({"metadata": {"labels": {"patched": "yes"}}})))
    assert r.stdout.strip() == f"Successfully patched 1 '{kind}' resource"
    after = get_doc(ctl, kind, name)
    assert after["metadata"]["labels"]["patched"] == "yes"
    assert after["spec"] == first["spec"]
    assert (after["metadata"]["uid"], after["metadata"]["creationTimestamp"]) == (first["metadata"]["uid"], first["metadata"]["creationTimestamp"])
    failed(ctl("patch", kind.lower(), "missing", "-p", "{}"), "resource does not exist")


@pytest.mark.parametrize("kind", WRITABLE)
def test_label_every_kind(ctl, store, tmp_path, kind):
    name = MINIMAL[kind][0]
    ok(ctl("create", "-f", write(tmp_path / "r.yaml", doc(kind))))
    first = get_doc(ctl, kind, name)
    r = ok(ctl("label", kind_of(kind).plural, name, "team=blue"))
    assert r.stdout.strip() == f"Successfully set label team on {kind_of(kind).plural} {name}"
    after = get_doc(ctl, kind, name)
    assert after["metadata"]["labels"]["team"] == "blue"
    assert after["spec"] == first["spec"]
    assert (after["metadata"]["uid"], after["metadata"]["creationTimestamp"]) == (first["metadata"]["uid"], first["metadata"]["creationTimestamp"])
    ok(ctl("label", kind_of(kind).plural, name, "team", "--remove"))
    assert "team" not in (get_doc(ctl, kind, name)["metadata"].get("labels") or {})


@pytest.mark.parametrize("kind", WRITABLE)
def test_get_table_of_every_kind(ctl, tmp_path, kind):
    name = MINIMAL[kind][0]
    ok(ctl("create", "-f", write(tmp_path / "r.yaml", doc(kind))))
    for fmt in ("ps", "wide"):
        lines = ok(ctl("get", kind_of(kind).plural, "-o", fmt)).lines
        # Workload endpoints are listed by workload (the pod), as calicoctl does (-o wide adds NAME first).
        first, shown = ("WORKLOAD", "pod1") if kind == "WorkloadEndpoint" and fmt == "ps" else ("NAME", name)
        assert lines[0].split()[0] == first, lines
        # Profiles also list Calico's built-in projectcalico-default-allow.
        assert [line.split()[0] for line in lines[1:] if line.split()[0] != "projectcalico-default-allow"] == [shown]


# One refused value of every writable kind: (spec change, the path refused, a key phrase of the rule).
REFUSED: dict[str, tuple[dict, str, str]] = {
    "IPPool": ({"blockSize": 7}, "spec.blockSize", "IPv4 block size must be between 20 and 32, got 7"),
    "IPReservation": ({"reservedCIDRs": ["198.19.0.0/33"]}, "spec.reservedCIDRs[0]", "invalid CIDR '198.19.0.0/33'"),
    "Node": ({"bgp": {"ipv4Address": "300.0.0.1/24"}}, "spec.bgp.ipv4Address", "invalid IPv4 CIDR '300.0.0.1/24'"),
    "BGPConfiguration": ({"asNumber": 0}, "spec.asNumber", "invalid AS number 0: expected 1 to 4294967295"),
    "BGPPeer": ({"peerIP": "192.0.2.300"}, "spec.peerIP", "invalid peerIP '192.0.2.300'"),
    "BGPFilter": (
        {"exportV4": [{"action": "Maybe", "matchOperator": "In", "cidr": "198.18.0.0/16"}]},
        "spec.exportV4[0].action",
        "invalid value 'Maybe': expected one of Accept, Reject",
    ),
    "FelixConfiguration": ({"logSeverityScreen": "Loud"}, "spec.logSeverityScreen", "invalid value 'Loud'"),
    "KubeControllersConfiguration": ({"logSeverityScreen": "Loud"}, "spec.logSeverityScreen", "invalid value 'Loud'"),
    "Tier": ({"defaultAction": "Allow"}, "spec.defaultAction", "invalid value 'Allow': expected one of Deny, Pass"),
    "NetworkPolicy": ({"selector": "app =="}, "spec.selector", "invalid selector 'app =='"),
    "GlobalNetworkPolicy": ({"order": "first"}, "spec.order", "expected a number"),
    "Profile": ({"labelsToApply": {"bad key": "x"}}, "spec.labelsToApply.bad key", "invalid label key 'bad key'"),
    "NetworkSet": ({"nets": ["198.51.100.0/33"]}, "spec.nets[0]", "invalid CIDR '198.51.100.0/33'"),
    "GlobalNetworkSet": ({"nets": ["not-a-net"]}, "spec.nets[0]", "invalid CIDR 'not-a-net'"),
    "WorkloadEndpoint": ({"interfaceName": "a" * 16}, "spec.interfaceName", "invalid interface name"),
    "HostEndpoint": ({"interfaceName": "bad/name"}, "spec.interfaceName", "invalid interface name 'bad/name'"),
}


def test_every_kind_has_a_refused_value():
    assert set(REFUSED) == set(WRITABLE)


@pytest.mark.parametrize("kind", WRITABLE)
def test_a_refused_value_names_the_file_the_resource_the_field_and_the_rule(ctl, store, tmp_path, kind):
    name, spec, _ = MINIMAL[kind]
    ok(ctl("create", "-f", write(tmp_path / "r.yaml", doc(kind))))
    before = snapshot(store)
    change, path, phrase = REFUSED[kind]
    bad = str(tmp_path / "bad.yaml")
    write(tmp_path / "bad.yaml", doc(kind, spec={**copy.deepcopy(spec), **change}))
    for verb in ("apply", "create", "replace"):
        failed(ctl(verb, "-f", bad), f"{bad} ({kind} {name}): {path}: {phrase}")
    assert snapshot(store) == before


# -- ClusterInformation is read-only -------------------------------------------------------------


CLUSTER_INFO = {"apiVersion": API, "kind": "ClusterInformation", "metadata": {"name": "default"}, "spec": {"clusterGUID": "abc123", "datastoreReady": True}}


def test_cluster_information_is_readonly(ctl, store, tmp_path):
    kind = kind_of("ClusterInformation")
    _, spec = kinds.decode(CLUSTER_INFO)
    assert store.commit(puts=[Resource(kind, {**spec, "metadata": {"name": "default"}})])
    got = get_doc(ctl, "clusterinformation", "default")
    assert got["spec"]["clusterGUID"] == "abc123"
    assert ok(ctl("get", "clusterinfo")).lines[1].split()[0] == "default"
    path = write(tmp_path / "ci.yaml", CLUSTER_INFO)
    before = snapshot(store)
    for verb in ("create", "apply", "replace", "delete"):
        failed(ctl(verb, "-f", path), "resource is readonly")
    failed(ctl("delete", "clusterinformation", "default"), "resource is readonly")
    failed(ctl("label", "clusterinformation", "default", "a=b"), "resource is readonly")
    failed(ctl("patch", "clusterinformation", "default", "-p", '{"spec":{"clusterGUID":"x"}}'), "resource is readonly")
    assert snapshot(store) == before


def test_a_readonly_document_in_a_file_stops_the_whole_file(ctl, store, tmp_path):
    path = write(tmp_path / "mix.yaml", pool("p1", "198.18.0.0/24"), CLUSTER_INFO)
    failed(ctl("apply", "-f", path), "resource is readonly")
    assert keys(store) == []


# -- the shapes of a resource file --------------------------------------------------------------


def pool_names(store) -> list[str]:
    return [k.rsplit("/", 1)[1] for k in keys(store, R + "ippools/")]


def test_several_yaml_documents(ctl, store, tmp_path):
    path = write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.1.0/24"), pool("c", "198.18.2.0/24"))
    r = ok(ctl("create", "-f", path))
    assert r.stdout.strip() == "Successfully created 3 'IPPool' resource(s)"
    assert pool_names(store) == ["a", "b", "c"]


def test_several_kinds_in_one_file(ctl, store, tmp_path):
    path = write(tmp_path / "m.yaml", pool("a", "198.18.0.0/24"), doc("BGPPeer"), doc("NetworkSet"))
    r = ok(ctl("apply", "-f", path))
    assert r.stdout.strip() == "Successfully applied 3 resource(s)"
    assert raw(store, key_of("BGPPeer", "peer1")) and raw(store, key_of("NetworkSet", "set1"))


def test_a_json_file_and_a_top_level_array(ctl, store, tmp_path):
    ok(ctl("apply", "-f", write(tmp_path / "one.json", pool("j", "198.18.0.0/24"), fmt="json")))
    ok(ctl("apply", "-f", write(tmp_path / "arr.json", pool("a1", "198.18.1.0/24"), pool("a2", "198.18.2.0/24"), fmt="json")))
    (tmp_path / "arr.yaml").write_text(yaml.safe_dump([pool("y1", "198.18.3.0/24"), pool("y2", "198.18.4.0/24")]))
    ok(ctl("apply", "-f", str(tmp_path / "arr.yaml")))
    assert pool_names(store) == ["a1", "a2", "j", "y1", "y2"]


def test_a_typed_list(ctl, store, tmp_path):
    data = {"apiVersion": API, "kind": "IPPoolList", "items": [pool("l1", "198.18.0.0/24"), {"metadata": {"name": "l2"}, "spec": {"cidr": "198.18.1.0/24"}}]}
    (tmp_path / "l.yaml").write_text(yaml.safe_dump(data))
    assert "Successfully created 2 'IPPool'" in ok(ctl("create", "-f", str(tmp_path / "l.yaml"))).stdout
    assert pool_names(store) == ["l1", "l2"]


def test_a_generic_list_is_refused(ctl, store, tmp_path):
    data = {"apiVersion": "v1", "kind": "List", "items": [pool("l1", "198.18.0.0/24")]}
    (tmp_path / "l.yaml").write_text(yaml.safe_dump(data))
    failed(ctl("apply", "-f", str(tmp_path / "l.yaml")), "kind 'List' is not a Calico v3 resource")
    assert keys(store) == []


def test_stdin(cli_in, store):
    text = yaml.safe_dump_all([pool("s1", "198.18.0.0/24"), pool("s2", "198.18.1.0/24")])
    r = cli_in(text, "apply", "-f", "-")
    assert r.rc == 0, r.stderr
    assert pool_names(store) == ["s1", "s2"]
    r = cli_in(text, "delete", "-f", "-")
    assert r.rc == 0 and pool_names(store) == []


def test_a_directory_and_recursion(ctl, store, tmp_path):
    write(tmp_path / "a.yaml", pool("d1", "198.18.0.0/24"))
    write(tmp_path / "b.json", pool("d2", "198.18.1.0/24"), fmt="json")
    (tmp_path / "README.txt").write_text("not a resource")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "c.yml", pool("d3", "198.18.2.0/24"))
    ok(ctl("apply", "-f", str(tmp_path)))
    assert pool_names(store) == ["d1", "d2"]
    r = ok(ctl("apply", "-R", "-f", str(tmp_path)))
    assert "Successfully applied 3 'IPPool'" in r.stdout
    assert pool_names(store) == ["d1", "d2", "d3"]
    ok(ctl("delete", "-R", "-f", str(tmp_path)))
    assert pool_names(store) == []


def test_several_files_in_one_command(ctl, store, tmp_path):
    a = write(tmp_path / "a.yaml", pool("f1", "198.18.0.0/24"))
    b = write(tmp_path / "b.yaml", pool("f2", "198.18.1.0/24"))
    assert "Successfully created 2" in ok(ctl("create", "-f", a, "-f", b)).stdout


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("verb", ["create", "apply", "replace", "delete"])
def test_a_bad_document_anywhere_changes_nothing(ctl, store, tmp_path, verb, position):
    ok(ctl("create", "-f", write(tmp_path / "seed.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.1.0/24"))))
    before = snapshot(store)
    good = [pool("a", "198.18.0.0/24", natOutgoing=True), pool("b", "198.18.1.0/24", natOutgoing=True)]
    docs = good[:position] + [pool("bad", "198.18.9.0/24", ipipMode="Sometimes")] + good[position:]
    path = write(tmp_path / "f.yaml", *docs)
    failed(ctl(verb, "-f", path), f"document {position + 1} (IPPool bad)", "spec.ipipMode")
    assert snapshot(store) == before


def test_a_failure_found_while_writing_changes_nothing(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "seed.yaml", pool("b", "198.18.1.0/24"))))
    before = snapshot(store)
    # a is new; b exists, so create fails on the second document, after the first was planned.
    path = write(tmp_path / "f.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.1.0/24"), doc("BGPPeer"))
    failed(ctl("create", "-f", path), "resource already exists: IPPool(b)")
    assert snapshot(store) == before
    # replace: the third does not exist.
    path = write(tmp_path / "g.yaml", pool("b", "198.18.1.0/24", natOutgoing=True), doc("BGPPeer"))
    failed(ctl("replace", "-f", path), "resource does not exist: BGPPeer(peer1)")
    assert snapshot(store) == before
    # delete: the second does not exist, the first is not deleted either.
    ok(ctl("create", "-f", write(tmp_path / "s.yaml", doc("NetworkSet"))))
    before = snapshot(store)
    path = write(tmp_path / "h.yaml", doc("NetworkSet"), doc("BGPPeer"))
    failed(ctl("delete", "-f", path), "resource does not exist: BGPPeer(peer1)")
    assert snapshot(store) == before


def test_a_pool_deleted_before_a_failure_is_a_partial_success(ctl, store, tmp_path):
    # IP pools are taken apart one at a time (their blocks and affinities go with them), so a later
    # failure cannot undo the pool: the error says how many were deleted.
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("b", "198.18.1.0/24"))))
    r = ctl("delete", "-f", write(tmp_path / "g.yaml", pool("b", "198.18.1.0/24"), doc("BGPPeer")))
    failed(r, "Partial success: deleted the first 1", "resource does not exist: BGPPeer(peer1)")
    assert "Deleted IP pool b" in r.stdout and pool_names(store) == []


def test_a_partial_delete_says_out_of_how_many(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("b", "198.18.1.0/24"))))
    r = ctl("delete", "-f", write(tmp_path / "g.yaml", pool("b", "198.18.1.0/24"), doc("BGPPeer")))
    failed(r, "Partial success: deleted the first 1 out of 2 resources")


def test_skip_exists_and_skip_not_exists_in_a_file(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "seed.yaml", pool("b", "198.18.1.0/24", natOutgoing=True))))
    b_rev = raw(store, key_of("IPPool", "b")).mod_revision
    path = write(tmp_path / "f.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.1.0/24"))
    r = ok(ctl("create", "--skip-exists", "-f", path))
    assert r.stdout.startswith("Successfully created 1 'IPPool' resource(s)") and "1 skipped" in r.stdout
    assert raw(store, key_of("IPPool", "b")).mod_revision == b_rev
    assert get_doc(ctl, "ippool", "b")["spec"]["natOutgoing"] is True
    ok(ctl("delete", "ippool", "b"))
    r = ok(ctl("delete", "--skip-not-exists", "-f", path))
    assert r.lines[-1].startswith("Successfully deleted 1 'IPPool' resource(s)") and "1 skipped" in r.lines[-1] and pool_names(store) == []
    ok(ctl("create", "-f", write(tmp_path / "one.yaml", pool("a", "198.18.0.0/24"))))
    ok(ctl("delete", "ippool", "a", "b", "--skip-not-exists"))
    assert pool_names(store) == []


def test_delete_several_names_at_once(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", doc("BGPPeer", "p1"), doc("BGPPeer", "p2"), doc("BGPPeer", "p3"))))
    r = ok(ctl("delete", "bgppeer", "p1", "p3"))
    assert "Successfully deleted 2 'BGPPeer' resource(s)" in r.stdout
    assert [k.rsplit("/", 1)[1] for k in keys(store, R + "bgppeers/")] == ["p2"]
    before = snapshot(store)
    failed(ctl("delete", "bgppeer", "p2", "p9"), "resource does not exist: BGPPeer(p9)")
    assert snapshot(store) == before


# -- optimistic concurrency ----------------------------------------------------------------------


def test_stale_resource_version_conflicts_on_apply_replace_and_delete(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("p", "198.18.0.0/24"))))
    old = get_doc(ctl, "ippool", "p")
    ok(ctl("patch", "ippool", "p", "-p", '{"spec":{"natOutgoing":true}}'))
    before = snapshot(store)
    stale = copy.deepcopy(old)
    stale["spec"]["disabled"] = True
    path = write(tmp_path / "stale.yaml", stale)
    for verb in ("apply", "replace", "delete"):
        failed(ctl(verb, "-f", path), "update conflict", "IPPool(p)")
    assert snapshot(store) == before
    # The current resourceVersion works.
    fresh = get_doc(ctl, "ippool", "p")
    fresh["spec"]["disabled"] = True
    ok(ctl("replace", "-f", write(tmp_path / "fresh.yaml", fresh)))
    assert get_doc(ctl, "ippool", "p")["spec"]["disabled"] is True
    fresh = get_doc(ctl, "ippool", "p")
    ok(ctl("delete", "-f", write(tmp_path / "fresh.yaml", fresh)))
    assert pool_names(store) == []


def test_without_a_resource_version_apply_and_replace_update_the_latest(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("p", "198.18.0.0/24"))))
    ok(ctl("patch", "ippool", "p", "-p", '{"spec":{"natOutgoing":true}}'))
    ok(ctl("apply", "-f", write(tmp_path / "q.yaml", pool("p", "198.18.0.0/24", disabled=True))))
    spec = get_doc(ctl, "ippool", "p")["spec"]
    assert spec["disabled"] is True and "natOutgoing" not in spec


def test_a_stale_version_in_one_document_stops_the_file(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.1.0/24"))))
    b = get_doc(ctl, "ippool", "b")
    ok(ctl("label", "ippool", "b", "x=y"))
    before = snapshot(store)
    b["spec"]["natOutgoing"] = True
    failed(ctl("apply", "-f", write(tmp_path / "f.yaml", pool("a", "198.18.0.0/24", natOutgoing=True), b)), "update conflict")
    assert snapshot(store) == before


# -- writes that change nothing ------------------------------------------------------------------


def test_an_unchanged_apply_writes_nothing_and_no_watcher_sees_it(ctl, store, tmp_path, etcd_endpoint):
    import pyetcd

    path = write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"), doc("BGPPeer"), doc("NetworkPolicy"))
    ok(ctl("apply", "-f", path))
    rev = revision(store)
    host, port = etcd_endpoint.split("://")[1].rsplit(":", 1)
    client = pyetcd.client(host=host, port=int(port), timeout=5)
    try:
        events, cancel = client.watch_prefix("/calico/", start_revision=rev + 1)
        r = ok(ctl("apply", "-f", path))
        assert "3 unchanged" in r.stderr
        assert revision(store) == rev
        # A real write after it: the watcher's first event is that write, not the unchanged apply.
        ok(ctl("label", "bgppeer", "peer1", "a=b"))
        first = next(iter(events))
        cancel()
    finally:
        client.close()
    assert first.key.decode() == key_of("BGPPeer", "peer1") and first.mod_revision == rev + 1


def test_apply_of_a_changed_and_an_unchanged_document_writes_only_the_changed(ctl, store, tmp_path):
    ok(ctl("apply", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.1.0/24"))))
    a_rev = raw(store, key_of("IPPool", "a")).mod_revision
    r = ok(ctl("apply", "-f", write(tmp_path / "q.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.1.0/24", natOutgoing=True))))
    assert "Successfully applied 2 'IPPool'" in r.stdout and "1 unchanged" in r.stderr
    assert raw(store, key_of("IPPool", "a")).mod_revision == a_rev
    assert get_doc(ctl, "ippool", "b")["spec"]["natOutgoing"] is True


def test_apply_with_the_defaults_spelled_out_is_unchanged(ctl, store, tmp_path):
    ok(ctl("apply", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    rev = revision(store)
    full = pool("a", "198.18.0.0/24", blockSize=26, nodeSelector="all()", ipipMode="Never", vxlanMode="Never", allowedUses=["Workload", "Tunnel"], assignmentMode="Automatic")
    ok(ctl("apply", "-f", write(tmp_path / "q.yaml", full)))
    assert revision(store) == rev


def test_an_unchanged_label_or_patch_writes_nothing(ctl, store, tmp_path):
    ok(ctl("apply", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    ok(ctl("label", "ippool", "a", "x=y"))
    rev = revision(store)
    ok(ctl("label", "ippool", "a", "x=y", "--overwrite"))
    ok(ctl("patch", "ippool", "a", "-p", '{"spec":{"blockSize":26}}'))
    assert revision(store) == rev


# -- uid and creationTimestamp ---------------------------------------------------------------------


def test_uid_and_creation_time_are_set_on_create_and_never_changed(ctl, store, tmp_path):
    given = pool("a", "198.18.0.0/24")
    given["metadata"].update(uid="from-the-file", creationTimestamp="2001-01-01T00:00:00Z")
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", given)))
    meta = get_doc(ctl, "ippool", "a")["metadata"]
    assert meta["uid"] != "from-the-file" and len(meta["uid"]) == 36
    assert meta["creationTimestamp"] != "2001-01-01T00:00:00Z"
    stored = json.loads(raw(store, key_of("IPPool", "a")).value)["metadata"]
    assert (stored["uid"], stored["creationTimestamp"]) == (meta["uid"], meta["creationTimestamp"])
    other = pool("a", "198.18.0.0/24", natOutgoing=True)
    other["metadata"].update(uid="other", creationTimestamp="2002-02-02T00:00:00Z")
    ok(ctl("apply", "-f", write(tmp_path / "q.yaml", other)))
    other["spec"]["disabled"] = True
    ok(ctl("replace", "-f", write(tmp_path / "r.yaml", other)))
    ok(ctl("patch", "ippool", "a", "-p", '{"metadata":{"uid":"patched","creationTimestamp":"2003-03-03T00:00:00Z"},"spec":{"natOutgoing":false}}'))
    ok(ctl("label", "ippool", "a", "k=v"))
    after = get_doc(ctl, "ippool", "a")
    assert after["spec"]["disabled"] is True and after["spec"]["natOutgoing"] is False
    assert (after["metadata"]["uid"], after["metadata"]["creationTimestamp"]) == (meta["uid"], meta["creationTimestamp"])


def test_a_recreated_resource_gets_a_new_uid(ctl, tmp_path):
    path = write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))
    ok(ctl("create", "-f", path))
    first = get_doc(ctl, "ippool", "a")["metadata"]["uid"]
    ok(ctl("delete", "ippool", "a"))
    ok(ctl("create", "-f", path))
    assert get_doc(ctl, "ippool", "a")["metadata"]["uid"] != first


# -- output formats and round trips ---------------------------------------------------------------


def test_yaml_of_a_list_applies_back_unchanged(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.1.0/24", natOutgoing=True, vxlanMode="Always"))))
    ok(ctl("label", "ippool", "a", "x=y"))
    text = ok(ctl("get", "ippools", "-o", "yaml")).stdout
    shown = yaml.safe_load(text)
    assert shown["kind"] == "IPPoolList" and shown["apiVersion"] == API
    assert [i["metadata"]["name"] for i in shown["items"]] == ["a", "b"]
    assert all(i["kind"] == "IPPool" and i["metadata"]["resourceVersion"] for i in shown["items"])
    (tmp_path / "back.yaml").write_text(text)
    before = snapshot(store)
    r = ok(ctl("apply", "-f", str(tmp_path / "back.yaml")))
    assert "2 unchanged" in r.stderr
    assert snapshot(store) == before
    js = ok(ctl("get", "ippools", "-o", "json")).json()
    assert js["kind"] == "IPPoolList" and js["items"] == shown["items"]
    (tmp_path / "back.json").write_text(json.dumps(js))
    ok(ctl("replace", "-f", str(tmp_path / "back.json")))
    assert snapshot(store) == before


def test_one_named_result_is_bare_and_several_are_a_list(ctl, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.1.0/24"))))
    one = ok(ctl("get", "ippool", "a", "-o", "json")).json()
    assert one["kind"] == "IPPool" and one["metadata"]["name"] == "a"
    two = ok(ctl("get", "ippool", "a", "b", "-o", "yaml")).stdout
    assert yaml.safe_load(two)["kind"] == "IPPoolList"
    # Listing the kind is a list even with one resource.
    ok(ctl("delete", "ippool", "b"))
    listed = ok(ctl("get", "ippools", "-o", "json")).json()
    assert listed["kind"] == "IPPoolList" and len(listed["items"]) == 1
    # Nothing at all: an empty list.
    ok(ctl("delete", "ippool", "a"))
    assert ok(ctl("get", "ippools", "-o", "json")).json()["items"] == []


def test_get_with_a_file_shows_what_it_names(ctl, tmp_path):
    path = write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.1.0/24"))
    ok(ctl("create", "-f", path))
    shown = ok(ctl("get", "-f", path, "-o", "yaml")).stdout
    assert [i["metadata"]["name"] for i in yaml.safe_load(shown)["items"]] == ["a", "b"]
    one = write(tmp_path / "one.yaml", pool("b", "198.18.1.0/24"))
    assert ok(ctl("get", "-f", one, "-o", "json")).json()["metadata"]["name"] == "b"
    lines = ok(ctl("get", "-f", path)).lines
    assert lines[0].split() == ["NAME", "CIDR", "SELECTOR"] and len(lines) == 3


def test_get_with_a_file_of_several_kinds_shows_each_as_its_kind(ctl, tmp_path):
    path = write(tmp_path / "m.yaml", pool("a", "198.18.0.0/24"), doc("BGPPeer"))
    ok(ctl("create", "-f", path))
    table = ok(ctl("get", "-f", path)).stdout
    # One table per kind, each with its kind's headings and its rows.
    tables = [[line.split() for line in block.splitlines()] for block in table.strip().split("\n\n")]
    assert len(tables) == 2, table
    assert tables[0] == [["NAME", "CIDR", "SELECTOR"], ["a", "198.18.0.0/24", "all()"]]
    assert tables[1][0][:2] == ["NAME", "PEERIP"] and [row[:2] for row in tables[1][1:]] == [["peer1", "192.0.2.1"]]
    # yaml and json: a sequence of the documents, each as its kind (not a <Kind>List).
    shown = yaml.safe_load(ok(ctl("get", "-f", path, "-o", "yaml")).stdout)
    assert isinstance(shown, list), shown
    assert [(i["apiVersion"], i["kind"], i["metadata"]["name"]) for i in shown] == [(API, "IPPool", "a"), (API, "BGPPeer", "peer1")]
    assert shown[0]["spec"]["cidr"] == "198.18.0.0/24" and shown[1]["spec"]["peerIP"] == "192.0.2.1"
    assert ok(ctl("get", "-f", path, "-o", "json")).json() == shown


def test_get_of_a_missing_resource_fails(ctl, tmp_path):
    failed(ctl("get", "ippool", "nope"), "resource does not exist: IPPool(nope)")
    failed(ctl("get", "-f", write(tmp_path / "p.yaml", pool("nope", "198.18.0.0/24"))), "resource does not exist: IPPool(nope)")
    failed(ctl("get", "-f", str(tmp_path / "absent.yaml")), "cannot read", "absent.yaml: no such file or directory")


def test_get_of_a_file_names_the_first_missing_resource_of_its_kinds_in_turn(ctl, tmp_path):
    # The file's resources are shown kind by kind (in the order the kinds first appear): the
    # missing pool is named, though the missing peer comes first in the file.
    ok(ctl("create", "-f", write(tmp_path / "a.yaml", pool("a", "198.18.0.0/24"))))
    path = write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"), doc("BGPPeer", "ghost"), pool("nope", "198.18.1.0/24"))
    assert "ghost" not in failed(ctl("get", "-f", path), "resource does not exist: IPPool(nope)")


def test_ip_pool_columns(ctl, tmp_path):
    ok(ctl("create", "-f", write(
        tmp_path / "p.yaml",
        pool("a", "198.18.0.0/24"),
        pool("b", "198.18.1.0/24", natOutgoing=True, vxlanMode="CrossSubnet", disabled=True, disableBGPExport=True, nodeSelector="zone == 'x'", assignmentMode="Manual"),
        pool("c", "fd00:198:18::/64"),
    )))
    lines = ok(ctl("get", "ippools")).lines
    assert [line.split() for line in lines] == [
        ["NAME", "CIDR", "SELECTOR"],
        ["a", "198.18.0.0/24", "all()"],
        ["b", "198.18.1.0/24", "zone", "==", "'x'"],
        ["c", "fd00:198:18::/64", "all()"],
    ]
    # Columns line up: each value starts where its header starts.
    assert lines[1].index("198.18.0.0/24") == lines[0].index("CIDR") and lines[1].index("all()") == lines[0].index("SELECTOR")
    wide = ok(ctl("get", "ippools", "-o", "wide")).lines
    assert [line.split() for line in wide] == [
        ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR", "ASSIGNMENTMODE"],
        ["a", "198.18.0.0/24", "false", "Never", "Never", "false", "false", "all()", "Automatic"],
        ["b", "198.18.1.0/24", "true", "Never", "CrossSubnet", "true", "true", "zone", "==", "'x'", "Manual"],
        ["c", "fd00:198:18::/64", "false", "Never", "Never", "false", "false", "all()", "Automatic"],
    ]
    assert wide[2].index("Manual") == wide[0].index("ASSIGNMENTMODE")
    assert ok(ctl("get", "ippool", "b", "-o", "ps")).lines[1].split()[:2] == ["b", "198.18.1.0/24"]


def test_an_unknown_output_format_is_a_usage_error(ctl):
    failed(ctl("get", "ippools", "-o", "xml"), "unrecognized output format 'xml'", code=2)


# -- namespaces ------------------------------------------------------------------------------------


def netset(name: str, namespace: str | None = None, cidr: str = "198.51.100.0/28") -> dict:
    d = {"apiVersion": API, "kind": "NetworkSet", "metadata": {"name": name}, "spec": {"nets": [cidr]}}
    if namespace:
        d["metadata"]["namespace"] = namespace
    return d


def test_namespaces_on_write_and_get(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "d.yaml", netset("s1"))))
    ok(ctl("create", "-n", "team", "-f", write(tmp_path / "t.yaml", netset("s2"))))
    ok(ctl("create", "-f", write(tmp_path / "o.yaml", netset("s3", "other"))))
    assert keys(store, R + "networksets/") == [R + "networksets/default/s1", R + "networksets/other/s3", R + "networksets/team/s2"]
    assert [line.split() for line in ok(ctl("get", "networksets")).lines] == [["NAME"], ["s1"]]
    # calicoctl shows the NAMESPACE column whenever -n or -A is given.
    assert [line.split() for line in ok(ctl("get", "networksets", "-n", "team")).lines] == [["NAMESPACE", "NAME"], ["team", "s2"]]
    lines = ok(ctl("get", "networksets", "-A")).lines
    assert [line.split() for line in lines] == [["NAMESPACE", "NAME"], ["default", "s1"], ["other", "s3"], ["team", "s2"]]
    listed = ok(ctl("get", "netsets", "--all-namespaces", "-o", "yaml")).stdout
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in yaml.safe_load(listed)["items"]] == [("default", "s1"), ("other", "s3"), ("team", "s2")]
    assert get_doc(ctl, "networkset", "s2", "-n", "team")["metadata"]["namespace"] == "team"
    failed(ctl("get", "networkset", "s2"), "resource does not exist: NetworkSet(default/s2)")
    failed(ctl("get", "networkset", "s2", "-A"), "cannot use --all-namespaces flag for getting a single resource", code=2)
    failed(ctl("get", "networksets", "-A", "-n", "team"), code=2)
    # delete, label and patch look in -n's namespace.
    ok(ctl("label", "networkset", "s2", "-n", "team", "a=b"))
    ok(ctl("patch", "networkset", "s2", "-n", "team", "-p", '{"spec":{"nets":["198.51.100.32/28"]}}'))
    assert get_doc(ctl, "networkset", "s2", "-n", "team")["spec"]["nets"] == ["198.51.100.32/28"]
    failed(ctl("delete", "networkset", "s2"), "resource does not exist: NetworkSet(default/s2)")
    ok(ctl("delete", "networkset", "s2", "-n", "team"))
    assert raw(store, R + "networksets/team/s2") is None


def test_a_file_namespace_differing_from_dash_n_is_refused(ctl, store, tmp_path):
    failed(ctl("apply", "-n", "team", "-f", write(tmp_path / "o.yaml", netset("s3", "other"))), "differs from -n team")
    assert keys(store) == []


@pytest.mark.parametrize(
    "args",
    [
        ("get", "ippools", "-A"),
        ("get", "ippools", "-n", "x"),
        ("get", "ippool", "a", "-n", "x"),
        ("get", "ippool", "a", "-n", "default"),
        ("delete", "ippool", "a", "-n", "x"),
        ("patch", "ippool", "a", "-n", "x", "-p", '{"spec":{"disabled":true}}'),
        ("label", "ippool", "a", "k=v", "-n", "x"),
        ("create", "-n", "x", "-f", "{new}"),
        ("apply", "-n", "x", "-f", "{changed}"),
        ("replace", "-n", "x", "-f", "{changed}"),
        ("delete", "-n", "x", "-f", "{changed}"),
        ("get", "-n", "x", "-f", "{changed}"),
        ("get", "-A", "-f", "{changed}"),
    ],
    ids=lambda args: "_".join(args).replace("{", "").replace("}", ""),
)
def test_dash_n_and_dash_a_on_a_kind_without_namespaces_are_refused(ctl, store, tmp_path, args):
    # As calicoctl v3.30 (handleNamespace): every verb, by name or by file.
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    files = {"{new}": write(tmp_path / "new.yaml", pool("b", "198.18.1.0/24")), "{changed}": write(tmp_path / "changed.yaml", pool("a", "198.18.0.0/24", natOutgoing=True))}
    before = snapshot(store)
    r = ctl(*[files.get(a, a) for a in args])
    failed(r, "IPPool is not namespaced")
    assert r.stdout == "" and snapshot(store) == before


def test_workload_endpoints_with_namespaces(ctl, store, tmp_path):
    wep = doc("WorkloadEndpoint", namespace="ns1")
    ok(ctl("apply", "-f", write(tmp_path / "w.yaml", wep)))
    assert raw(store, R + "workloadendpoints/ns1/node1-k8s-pod1-eth0") is not None
    lines = ok(ctl("get", "wep", "-A")).lines
    assert lines[0].split()[:3] == ["NAMESPACE", "WORKLOAD", "NODE"] and lines[1].split()[:3] == ["ns1", "pod1", "node1"]
    assert ok(ctl("get", "wep")).lines[1:] == []
    assert get_doc(ctl, "wep", "node1-k8s-pod1-eth0", "-n", "ns1")["spec"]["pod"] == "pod1"


# -- label and patch ----------------------------------------------------------------------------------


def test_label_add_overwrite_and_remove(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    assert ok(ctl("label", "ippools", "a", "zone=east")).stdout.strip() == "Successfully set label zone on ippools a"
    rev = revision(store)
    failed(ctl("label", "ippools", "a", "zone=west"), "key zone is already present", "--overwrite")
    assert revision(store) == rev
    r = ok(ctl("label", "ippools", "a", "zone=west", "--overwrite"))
    assert r.stdout.strip() == "Successfully updated label zone on ippools a"
    assert get_doc(ctl, "ippool", "a")["metadata"]["labels"] == {"zone": "west"}
    r = ok(ctl("label", "ippools", "a", "zone", "--remove"))
    assert r.stdout.strip() == "Successfully removed label zone from ippools a"
    assert "labels" not in json.loads(raw(store, key_of("IPPool", "a")).value)["metadata"]
    rev = revision(store)
    failed(ctl("label", "ippools", "a", "zone", "--remove"), "key zone does not exist")
    assert revision(store) == rev


def test_label_refusals(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    rev = revision(store)
    failed(ctl("label", "ippools", "a", "bad key=v"), "invalid label key")
    failed(ctl("label", "ippools", "a", "k=bad value!"), "invalid label value")
    failed(ctl("label", "ippools", "a", "novalue"), code=2)
    failed(ctl("label", "ippools", "a", "k=v", "--remove"), code=2)
    failed(ctl("label", "ippools", "missing", "k=v"), "ippool missing not found")
    assert revision(store) == rev


def test_patch_merges_replaces_lists_and_null_removes(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24", natOutgoing=True))))
    ok(ctl("label", "ippool", "a", "keep=1"))
    ok(ctl("patch", "ippool", "a", "-p", '{"spec":{"allowedUses":["Workload"],"natOutgoing":null,"disabled":true},"metadata":{"labels":{"new":"2"}}}'))
    got = get_doc(ctl, "ippool", "a")
    assert got["spec"]["allowedUses"] == ["Workload"]
    assert "natOutgoing" not in got["spec"] and got["spec"]["disabled"] is True
    assert got["spec"]["cidr"] == "198.18.0.0/24" and got["spec"]["blockSize"] == 26
    assert got["metadata"]["labels"] == {"keep": "1", "new": "2"}
    ok(ctl("patch", "ippool", "a", "--type", "merge", "-p", '{"metadata":{"labels":{"keep":null}}}'))
    assert get_doc(ctl, "ippool", "a")["metadata"]["labels"] == {"new": "2"}


@pytest.mark.parametrize(
    "patch, needles",
    [
        ('{"spec":{"ipipMode":"Always","vxlanMode":"Always"}}', ("Cannot enable both VXLAN and IPIP",)),
        ('{"spec":{"cidr":"198.18.5.0/24"}}', ("IPPool CIDR cannot be modified",)),
        ('{"spec":{"blockSize":28}}', ("IPPool BlockSize cannot be modified",)),
        ('{"spec":{"natOutgoin":true}}', ("spec.natOutgoin: unknown field",)),
        ('{"metadata":{"name":"other"}}', ("may not change the kind, name or namespace",)),
        ('{"kind":"BGPPeer"}', ("Failed to patch 'IPPool' resource",)),
        ("not json", ("not valid JSON",)),
        ("[1]", ("must be a JSON object",)),
    ],
)
def test_a_patch_that_breaks_a_rule_is_refused(ctl, store, tmp_path, patch, needles):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.4.0/22"))))
    before = snapshot(store)
    failed(ctl("patch", "ippool", "a", "-p", patch), *needles)
    assert snapshot(store) == before


def test_patch_of_a_missing_namespaced_resource(ctl, store):
    failed(ctl("patch", "networkpolicy", "x", "-p", "{}"), "resource does not exist: NetworkPolicy(default/x)")
    failed(ctl("patch", "networkpolicy", "x", "-n", "ns1", "-p", "{}"), "resource does not exist: NetworkPolicy(ns1/x)")
    assert keys(store) == []


# -- kind names ----------------------------------------------------------------------------------------


ALIASES = [(k.name, alias) for k in kinds.KINDS for alias in k.names()]


@pytest.mark.parametrize("kind, alias", ALIASES, ids=[f"{k}-{a}" for k, a in ALIASES])
def test_every_kind_name_form_works(ctl, tmp_path, kind, alias):
    if kind in MINIMAL:
        ok(ctl("create", "-f", write(tmp_path / "r.yaml", doc(kind))))
        name = MINIMAL[kind][0]
        assert get_doc(ctl, alias, name)["kind"] == kind
    assert ok(ctl("get", alias)).lines[0].split()[0] in ("NAME", "WORKLOAD")


@pytest.mark.parametrize(
    "word, kind",
    [
        ("ippool", "IPPool"), ("ippools", "IPPool"), ("IPPool", "IPPool"), ("IPPOOLS", "IPPool"), ("ipp", "IPPool"), ("pool", "IPPool"),
        ("bgppeer", "BGPPeer"), ("BGPPeers", "BGPPeer"), ("bgpp", "BGPPeer"), ("wep", "WorkloadEndpoint"), ("WorkloadEndpoints", "WorkloadEndpoint"),
        ("hep", "HostEndpoint"), ("gnp", "GlobalNetworkPolicy"), ("np", "NetworkPolicy"), ("felixconfig", "FelixConfiguration"),
        ("bgpconfig", "BGPConfiguration"), ("no", "Node"), ("netsets", "NetworkSet"), ("gnetsets", "GlobalNetworkSet"), ("tier", "Tier"),
    ],
)
def test_calico_kind_words(word, kind):
    assert kinds.lookup(word) is kind_of(kind)


def test_an_unknown_kind_name_is_a_usage_error(ctl):
    err = failed(ctl("get", "ippoool"), "resource type 'ippoool' is not supported", code=2)
    assert "ippools" in err
    failed(ctl("delete", "ippoool", "x"), "resource type 'ippoool' is not supported", code=2)


def test_a_document_kind_must_be_spelt_exactly(ctl, store, tmp_path):
    d = pool("a", "198.18.0.0/24")
    d["kind"] = "ippool"
    failed(ctl("apply", "-f", write(tmp_path / "p.yaml", d)), "unknown resource kind 'ippool'")
    assert keys(store) == []


# -- rules that need other stored resources --------------------------------------------------------


def test_overlapping_pools_are_refused(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "a.yaml", pool("a", "198.18.0.0/24"))))
    before = snapshot(store)
    failed(ctl("create", "-f", write(tmp_path / "b.yaml", pool("b", "198.18.0.128/25"))), "IPPool(b) CIDR 198.18.0.128/25 overlaps with IPPool(a) CIDR 198.18.0.0/24")
    failed(ctl("apply", "-f", write(tmp_path / "c.yaml", pool("c", "198.18.0.0/16"))), "overlaps with IPPool(a)")
    assert snapshot(store) == before
    # Two in one file: nothing is written.
    failed(ctl("apply", "-f", write(tmp_path / "d.yaml", pool("d", "198.18.8.0/24"), pool("e", "198.18.8.0/23"))), "overlaps")
    assert snapshot(store) == before
    # Different families never overlap; an adjacent pool is fine; a pool does not overlap itself.
    ok(ctl("create", "-f", write(tmp_path / "e.yaml", pool("v6", "fd00::/64"), pool("next", "198.18.1.0/24"))))
    ok(ctl("apply", "-f", write(tmp_path / "f.yaml", pool("a", "198.18.0.0/24", natOutgoing=True))))


def test_network_policy_in_a_missing_tier_is_refused(ctl, store, tmp_path):
    np = doc("NetworkPolicy", "secure.np1", spec={"tier": "secure", "selector": "all()"})
    failed(ctl("create", "-f", write(tmp_path / "np.yaml", np)), "resource does not exist: Tier(secure)")
    assert keys(store) == []
    # With the tier before it in the same file, both are written.
    ok(ctl("create", "-f", write(tmp_path / "both.yaml", doc("Tier", "secure"), np)))
    assert raw(store, R + "networkpolicies/default/secure.np1") is not None
    failed(ctl("delete", "tier", "secure"), "Cannot delete a non-empty tier")
    ok(ctl("delete", "networkpolicy", "secure.np1"))
    ok(ctl("delete", "tier", "secure"))


def test_a_default_tier_policy_is_stored_as_calico_stores_it(ctl, store, tmp_path):
    np = doc("NetworkPolicy", "allow-web", spec={"selector": "app == 'web'", "ingress": [{"action": "Allow"}]}, namespace="shop")
    ok(ctl("apply", "-f", write(tmp_path / "np.yaml", np)))
    kv = raw(store, R + "networkpolicies/shop/default.allow-web")
    assert kv is not None and raw(store, R + "networkpolicies/shop/allow-web") is None
    stored = json.loads(kv.value)
    assert stored["metadata"]["name"] == "default.allow-web" and stored["metadata"]["namespace"] == "shop"
    assert json.loads(stored["metadata"]["annotations"][NP_ANNOTATION]) == {"name": "allow-web"}
    assert "resourceVersion" not in stored["metadata"]
    # Calico leaves a default-tier policy's spec.tier empty in etcd and fills it in on read.
    assert "tier" not in stored["spec"] and stored["spec"]["types"] == ["Ingress"]
    # The default tier was created with Calico's defaults.
    tier = json.loads(raw(store, R + "tiers/default").value)
    assert tier["spec"] == {"order": 1000000, "defaultAction": "Deny"}
    got = get_doc(ctl, "networkpolicy", "allow-web", "-n", "shop")
    assert got["metadata"]["name"] == "allow-web" and NP_ANNOTATION not in (got["metadata"].get("annotations") or {})
    assert got["metadata"]["labels"]["projectcalico.org/tier"] == "default"
    lines = ok(ctl("get", "networkpolicies", "-n", "shop")).lines
    assert [line.split() for line in lines] == [["NAMESPACE", "NAME", "TIER"], ["shop", "allow-web", "default"]]
    failed(ctl("delete", "tier", "default"), "Cannot delete default tier")
    ok(ctl("delete", "networkpolicy", "allow-web", "-n", "shop"))
    assert raw(store, R + "networkpolicies/shop/default.allow-web") is None


def test_a_global_policy_in_the_default_tier_is_stored_prefixed(ctl, store, tmp_path):
    ok(ctl("apply", "-f", write(tmp_path / "gnp.yaml", doc("GlobalNetworkPolicy", "deny-all"))))
    stored = json.loads(raw(store, R + "globalnetworkpolicies/default.deny-all").value)
    assert json.loads(stored["metadata"]["annotations"][NP_ANNOTATION]) == {"name": "deny-all"}
    assert ok(ctl("get", "gnp", "deny-all", "-o", "json")).json()["metadata"]["name"] == "deny-all"


# -- large files ---------------------------------------------------------------------------------------


def many_pools(n: int) -> list[dict]:
    return [pool(f"p{i:03d}", f"198.18.{i}.0/24") for i in range(1, n + 1)]


def test_a_file_over_128_documents_is_applied_document_by_document(ctl, store, tmp_path):
    pools = many_pools(130)
    ok(ctl("create", "-f", write(tmp_path / "seed.yaml", pool("p100", "198.18.100.0/24"))))
    r = ctl("create", "-f", write(tmp_path / "many.yaml", *[p for p in pools if p["metadata"]["name"] != "p100"] + [pools[99]]))
    # p100 is last: all 129 others are written first.
    err = failed(r, "Partial success", "129 out of 130", "resource already exists: IPPool(p100)")
    assert err
    assert len(pool_names(store)) == 130


def test_a_failure_at_document_n_of_a_large_file_reports_the_count(ctl, store, tmp_path):
    pools = many_pools(140)
    ok(ctl("create", "-f", write(tmp_path / "seed.yaml", pools[49])))
    failed(ctl("create", "-f", write(tmp_path / "many.yaml", *pools)), "Partial success", "the first 49 out of 140", "IPPool(p050)")
    assert pool_names(store) == [f"p{i:03d}" for i in range(1, 51)]


def test_a_large_file_with_a_bad_document_writes_nothing(ctl, store, tmp_path):
    pools = many_pools(140)
    pools[120]["spec"]["blockSize"] = 7
    failed(ctl("apply", "-f", write(tmp_path / "many.yaml", *pools)), "document 121", "spec.blockSize")
    assert keys(store) == []


def test_a_failure_late_in_a_large_delete_reports_the_count(ctl, store, tmp_path):
    peers = [doc("BGPPeer", f"q{i:03d}") for i in range(1, 131)]
    ok(ctl("create", "-f", write(tmp_path / "x.yaml", *peers)))
    r = ctl("delete", "-f", write(tmp_path / "y.yaml", *peers, doc("BGPPeer", "zz")))
    failed(r, "Partial success: deleted the first 130 out of 131 resources", "BGPPeer(zz)")


def test_a_large_file_applies_and_deletes(ctl, store, tmp_path):
    path = write(tmp_path / "many.yaml", *many_pools(130))
    assert "Successfully applied 130 'IPPool'" in ok(ctl("apply", "-f", path)).stdout
    rev = revision(store)
    assert "130 unchanged" in ok(ctl("apply", "-f", path)).stderr
    assert revision(store) == rev
    assert "Successfully deleted 130" in ok(ctl("delete", "-f", path)).stdout
    assert pool_names(store) == []


def test_a_failure_in_a_file_that_fits_one_transaction_writes_nothing(ctl, store, tmp_path):
    # 120 documents are one transaction: the failure at the last leaves the other 119 unwritten.
    pools = many_pools(120)
    ok(ctl("create", "-f", write(tmp_path / "seed.yaml", pools[-1])))
    before = snapshot(store)
    failed(ctl("create", "-f", write(tmp_path / "many.yaml", *pools)), "resource already exists: IPPool(p120)")
    assert "Partial success" not in ctl("create", "-f", str(tmp_path / "many.yaml")).stderr
    assert snapshot(store) == before


# Each document takes a write and a compare, and two more compares may join (the pools' prefix,
# the default tier): 126 documents are the most etcd's 128 operations take at once; 127 are written
# document by document (a revision each).
@pytest.mark.parametrize(("count", "revisions"), [(126, 1), (127, 127)], ids=["126-one-transaction", "127-document-by-document"])
def test_the_largest_file_written_in_one_transaction(ctl, store, tmp_path, count, revisions):
    path = write(tmp_path / "many.yaml", *many_pools(count))
    rev = revision(store)
    assert ok(ctl("create", "-f", path)).stdout.strip() == f"Successfully created {count} 'IPPool' resource(s)"
    assert revision(store) == rev + revisions
    assert len(pool_names(store)) == count


# -- metadata, stored records written by other tools, and rules of the stored state -------------------


def put_raw(store, key: str, value) -> None:
    """Write `value` (a dict as JSON, or bytes as they are) at `key`, as another tool would."""
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    succeeded, _ = store.client.commit([], puts=[(key, data)])
    assert succeeded


def stored_metadata(store, kind: str, name: str, namespace: str | None = None) -> dict:
    return json.loads(raw(store, key_of(kind, name, namespace)).value)["metadata"]


def test_create_of_a_document_with_a_resource_version_is_refused(ctl, store, tmp_path):
    # As Calico's create, which refuses a resourceVersion; apply of the same document works.
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    shown = get_doc(ctl, "ippool", "a")
    shown["spec"]["natOutgoing"] = True
    path = write(tmp_path / "shown.yaml", shown)
    before = snapshot(store)
    failed(ctl("create", "-f", path), "resourceVersion", "must not be set for a create")
    failed(ctl("create", "--skip-exists", "-f", path), "resourceVersion", "must not be set for a create")
    assert snapshot(store) == before
    ok(ctl("apply", "-f", path))
    assert stored_spec(store, "IPPool", "a")["natOutgoing"] is True
    ok(ctl("delete", "ippool", "a"))
    failed(ctl("create", "-f", path), "resourceVersion", "must not be set for a create")
    assert pool_names(store) == []


STORED_META = {
    "name": "a",
    "uid": "stored-uid",
    "creationTimestamp": "2020-01-01T00:00:00Z",
    "generation": 3,
    "finalizers": ["example.com/keep"],
    "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "owner-uid"}],
    "futureMetadataKey": {"kept": True},
    "labels": {"old": "1"},
    "annotations": {"old": "1"},
}
FILE_META = {
    "generation": 9,
    "finalizers": ["example.com/other"],
    "ownerReferences": [{"apiVersion": "v1", "kind": "Secret", "name": "other", "uid": "other-uid"}],
    "uid": "file-uid",
    "creationTimestamp": "2001-01-01T00:00:00Z",
    "selfLink": "/from/the/file",
}


@pytest.mark.parametrize("verb", ["apply", "replace"])
def test_an_update_keeps_the_stored_metadata_and_takes_labels_and_annotations_from_the_file(ctl, store, tmp_path, verb):
    spec = stored_decoded_spec("IPPool", {"cidr": "198.18.0.0/24"})
    put_raw(store, key_of("IPPool", "a"), {"kind": "IPPool", "apiVersion": API, "metadata": STORED_META, "spec": spec})
    given = pool("a", "198.18.0.0/24", natOutgoing=True)
    given["metadata"].update(copy.deepcopy(FILE_META), labels={"new": "2"}, annotations={"note": "x"})
    ok(ctl(verb, "-f", write(tmp_path / "p.yaml", given)))
    assert stored_metadata(store, "IPPool", "a") == {**STORED_META, "labels": {"new": "2"}, "annotations": {"note": "x"}}
    assert stored_spec(store, "IPPool", "a")["natOutgoing"] is True
    # Labels and annotations the file leaves out are gone; the rest stays.
    ok(ctl(verb, "-f", write(tmp_path / "q.yaml", pool("a", "198.18.0.0/24"))))
    kept = {k: v for k, v in STORED_META.items() if k not in ("labels", "annotations")}
    assert stored_metadata(store, "IPPool", "a") == kept


def test_create_takes_only_the_name_namespace_labels_and_annotations_from_the_file(ctl, store, tmp_path):
    given = netset("s1", "ns1")
    given["metadata"].update(copy.deepcopy(FILE_META), labels={"new": "2"}, annotations={"note": "x"})
    ok(ctl("create", "-f", write(tmp_path / "s.yaml", given)))
    meta = stored_metadata(store, "NetworkSet", "s1", "ns1")
    assert set(meta) == {"name", "namespace", "labels", "annotations", "uid", "creationTimestamp"}, meta
    assert (meta["name"], meta["namespace"], meta["labels"], meta["annotations"]) == ("s1", "ns1", {"new": "2"}, {"note": "x"})
    assert meta["uid"] != "file-uid" and meta["creationTimestamp"] != "2001-01-01T00:00:00Z"


@pytest.mark.parametrize("cidr, block_size", [("198.18.0.0/24", 26), ("fd00:198:18::/64", 122)])
def test_a_pool_record_without_calicos_defaults_reads_back_with_them(ctl, store, tmp_path, cidr, block_size):
    meta = {"name": "old", "uid": "u-1", "creationTimestamp": "2020-01-01T00:00:00Z"}
    put_raw(store, key_of("IPPool", "old"), {"kind": "IPPool", "apiVersion": API, "metadata": meta, "spec": {"cidr": cidr}})
    assert get_doc(ctl, "ippool", "old")["spec"] == {
        "cidr": cidr, "blockSize": block_size, "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic", "ipipMode": "Never", "vxlanMode": "Never",
    }
    before = snapshot(store)
    failed(ctl("apply", "-f", write(tmp_path / "p.yaml", pool("old", cidr, blockSize=block_size + 2))), "BlockSize cannot be modified")
    assert snapshot(store) == before


def test_a_pool_whose_block_size_differs_from_existing_blocks_is_refused(ctl, store, tmp_path):
    from calico_cni.model.records import Block

    assert store.commit(puts=[Block.new("198.18.0.0/28", "node1")])
    before = snapshot(store)
    failed(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))), "conflicts with existing allocations that use a different blockSize")
    failed(ctl("apply", "-f", write(tmp_path / "q.yaml", pool("a", "198.18.0.0/24", blockSize=27))), "conflicts with existing allocations that use a different blockSize")
    assert snapshot(store) == before
    # The blocks' own size is fine, and a pool the block is not in is not concerned.
    ok(ctl("create", "-f", write(tmp_path / "r.yaml", pool("a", "198.18.0.0/24", blockSize=28), pool("b", "198.18.1.0/24"))))
    assert pool_names(store) == ["a", "b"]


def test_a_patch_keeps_a_field_this_calicoctl_does_not_model(ctl, store):
    spec = {**stored_decoded_spec("IPPool", {"cidr": "198.18.0.0/24"}), "futureField": {"x": 1}}
    meta = {"name": "a", "uid": "u-1", "creationTimestamp": "2020-01-01T00:00:00Z"}
    put_raw(store, key_of("IPPool", "a"), {"kind": "IPPool", "apiVersion": API, "metadata": meta, "spec": spec})
    ok(ctl("patch", "ippool", "a", "-p", '{"spec":{"natOutgoing":true}}'))
    assert stored_spec(store, "IPPool", "a") == {**spec, "natOutgoing": True}


def test_a_batch_over_etcds_compare_limit_because_of_its_tiers_is_written_document_by_document(ctl, store, tmp_path):
    # 126 documents fit one transaction, but the three tiers they name add three compares (129).
    ok(ctl("create", "-f", write(tmp_path / "t.yaml", doc("Tier", "t1"), doc("Tier", "t2"), doc("Tier", "t3"))))
    nps = [doc("NetworkPolicy", f"t{i % 3 + 1}.np{i:03d}", spec={"tier": f"t{i % 3 + 1}", "selector": "all()"}) for i in range(126)]
    rev = revision(store)
    r = ok(ctl("apply", "-f", write(tmp_path / "np.yaml", *nps)))
    assert r.stdout.strip() == "Successfully applied 126 'NetworkPolicy' resource(s)" and "etcd" not in r.stderr
    assert len(keys(store, R + "networkpolicies/")) == 126
    assert revision(store) == rev + 126


@pytest.mark.parametrize("kind", ["BGPPeer", "IPPool"])
def test_delete_of_a_file_naming_one_resource_twice_deletes_it_once(ctl, store, tmp_path, kind):
    ok(ctl("create", "-f", write(tmp_path / "r.yaml", doc(kind))))
    r = ctl("delete", "-f", write(tmp_path / "d.yaml", doc(kind), doc(kind)))
    failed(r, "Partial success: deleted the first 1 out of 2", f"resource does not exist: {kind}({MINIMAL[kind][0]})")
    assert raw(store, key_of(kind, MINIMAL[kind][0])) is None


def test_a_record_that_is_not_json_can_be_deleted_by_name(ctl, store):
    key = key_of("BGPPeer", "junk")
    put_raw(store, key, b"not json {")
    err = failed(ctl("get", "bgppeer", "junk"))
    assert "Unreadable" not in err and "junk" in err, err
    r = ok(ctl("delete", "bgppeer", "junk"))
    said = r.stdout + r.stderr
    assert "cannot be read" in said or "unreadable" in said.lower(), said
    assert "Successfully deleted 1 'BGPPeer' resource(s)" in r.stdout
    assert raw(store, key) is None


# -- the --config file -------------------------------------------------------------------------------


def test_config_file_calicoctl_cfg(ctl, store, tmp_path, etcd_endpoint):
    cfg = tmp_path / "calicoctl.cfg"
    cfg.write_text(yaml.safe_dump({"apiVersion": API, "kind": "CalicoAPIConfig", "metadata": {}, "spec": {"datastoreType": "etcdv3", "etcdEndpoints": etcd_endpoint}}))
    path = write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))
    env = {"ETCD_ENDPOINTS": None, "CALICO_ETCD_ENDPOINTS": None}
    ok(ctl("apply", "-f", path, "-c", str(cfg), endpoint=False, env=env))
    assert pool_names(store) == ["a"]
    assert ok(ctl("get", "ippools", "--config", str(cfg), endpoint=False, env=env)).lines[1].split()[0] == "a"


def test_config_file_cni_conflist(ctl, store, tmp_path, etcd_endpoint):
    conf = tmp_path / "10-calico.conflist"
    conf.write_text(json.dumps({"cniVersion": "1.0.0", "name": "k8s", "plugins": [{"type": "calico", "etcd_endpoints": etcd_endpoint, "ipam": {"type": "calico-ipam"}}, {"type": "portmap"}]}))
    path = write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))
    env = {"ETCD_ENDPOINTS": None, "CALICO_ETCD_ENDPOINTS": None}
    ok(ctl("create", "-f", path, "-c", str(conf), endpoint=False, env=env))
    assert pool_names(store) == ["a"]


def test_config_file_installed_command(tmp_path, store, etcd_endpoint):
    cfg = tmp_path / "calicoctl.cfg"
    cfg.write_text(yaml.safe_dump({"apiVersion": API, "kind": "CalicoAPIConfig", "spec": {"etcdEndpoints": etcd_endpoint}}))
    path = write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))
    ok(run_exe("apply", "-c", str(cfg), "-f", path))
    assert pool_names(store) == ["a"]


def test_a_bad_config_file_is_one_line(ctl, tmp_path):
    cfg = tmp_path / "calicoctl.cfg"
    cfg.write_text(yaml.safe_dump({"apiVersion": API, "kind": "Something", "spec": {}}))
    failed(ctl("get", "ippools", "-c", str(cfg), endpoint=False, env={"ETCD_ENDPOINTS": None}), "calicoctl.cfg")


# -- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (("create",), 2, "give the resources with -f FILE"),
        (("apply", "-f", "/nonexistent/p.yaml"), 1, "cannot read /nonexistent/p.yaml"),
        (("delete",), 2, "give KIND NAME... or -f FILE"),
        (("delete", "ippool"), 2, "give KIND NAME... or -f FILE"),
        (("get",), 2, "give the kind of resource to show"),
        (("get", "ippool", "nope"), 1, "resource does not exist: IPPool(nope)"),
        (("patch", "ippool", "nope", "-p", "{}"), 1, "resource does not exist: IPPool(nope)"),
        (("label", "ippool", "nope", "a=b"), 1, "ippool nope not found"),
        (("get", "foo"), 2, "resource type 'foo' is not supported"),
    ],
)
def test_errors_are_one_line_without_traceback(ctl, args, code, needle):
    failed(ctl(*args), needle, code=code)


def test_a_yaml_error_is_one_line_with_its_line_number(ctl, store, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: a\n spec: [\n")
    failed(ctl("apply", "-f", str(path)), "is not valid YAML or JSON at line")
    assert keys(store) == []


# -- the installed command, one invocation per verb ----------------------------------------------------


def test_installed_command_every_verb(tmp_path, store, exe_env):
    path = write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"), doc("BGPPeer"))
    r = ok(run_exe("create", "-f", path, env=exe_env))
    assert r.stdout.strip() == "Successfully created 2 resource(s)"
    r = run_exe("create", "-f", path, env=exe_env)
    failed(r, "resource already exists: IPPool(a)")
    assert r.stderr.startswith("Error: ") or "Error" in r.stderr
    ok(run_exe("create", "--skip-exists", "-f", path, env=exe_env))
    ok(run_exe("apply", "-f", write(tmp_path / "q.yaml", pool("a", "198.18.0.0/24", natOutgoing=True)), env=exe_env))
    ok(run_exe("replace", "-f", write(tmp_path / "r.yaml", pool("a", "198.18.0.0/24", natOutgoing=True, disabled=True)), env=exe_env))
    ok(run_exe("patch", "ippool", "a", "-p", '{"spec":{"disabled":false}}', env=exe_env))
    ok(run_exe("label", "ippool", "a", "zone=east", env=exe_env))
    got = ok(run_exe("get", "ippool", "a", "-o", "yaml", env=exe_env)).stdout
    shown = yaml.safe_load(got)
    assert shown["spec"]["natOutgoing"] is True and shown["spec"]["disabled"] is False and shown["metadata"]["labels"] == {"zone": "east"}
    wide = ok(run_exe("get", "ippools", "-o", "wide", env=exe_env)).lines
    assert wide[0].split()[:3] == ["NAME", "CIDR", "NAT"] and wide[1].split()[:3] == ["a", "198.18.0.0/24", "true"]
    back = tmp_path / "back.yaml"
    back.write_text(got)
    rev = revision(store)
    ok(run_exe("apply", "-f", str(back), env=exe_env))
    assert revision(store) == rev
    ok(run_exe("delete", "bgppeer", "peer1", env=exe_env))
    ok(run_exe("delete", "-f", str(back), env=exe_env))
    assert keys(store, R) == []


def test_installed_command_reads_stdin(store, exe_env):
    text = yaml.safe_dump_all([pool("s1", "198.18.0.0/24"), pool("s2", "198.18.1.0/24")])
    env = {"PATH": os.environ.get("PATH", ""), **exe_env}
    proc = subprocess.run([str(BIN_DIR / "calicoctl"), "apply", "-f", "-"], input=text, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert pool_names(store) == ["s1", "s2"]


def test_installed_command_error_is_one_line(tmp_path, store, exe_env):
    path = write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.0.0/25"))
    failed(run_exe("apply", "-f", path, env=exe_env), "overlaps")
    failed(run_exe("label", "ippool", "a", "x=y", env=exe_env), "ippool a not found")
    assert keys(store) == []


# -- races with another writer (injected between the read and the commit) ------------------------------


@pytest.fixture
def race(monkeypatch, store):
    """`race(fn, times=1, on="read")`: run fn() right after the verbs' next read of stored
    resources (`on`: "read" for the resources themselves, "list_kind" for the pool listing of
    the overlap check), as another writer would between calicoctl's read and its commit."""
    from calico_cni.datastore import resources as stored

    def arm(fn, times: int = 1, on: str = "read") -> list[int]:
        real = getattr(stored, on)
        fired: list[int] = []

        def wrapper(*args, **kwargs):
            out = real(*args, **kwargs)
            if len(fired) < times:
                fired.append(1)
                fn()
            return out

        monkeypatch.setattr(stored, on, wrapper)
        return fired

    return arm


def plant(store, document: dict) -> None:
    """Write a resource directly, as another client would."""
    kind, decoded = kinds.decode(document)
    decoded["metadata"].update(uid="planted", creationTimestamp="2020-01-01T00:00:00Z")
    assert store.commit(puts=[Resource(kind, decoded)])


def relabel(store, kind: str, name: str, labels: dict) -> None:
    from calico_cni.datastore import resources as stored

    current = stored.get(store, stored.Ref(kind_of(kind), name))
    current.doc["metadata"]["labels"] = {**(current.doc["metadata"].get("labels") or {}), **labels}
    assert store.commit(puts=[current])


def test_a_pool_created_concurrently_cannot_slip_past_the_overlap_check(ctl, store, tmp_path, race):
    fired = race(lambda: plant(store, pool("sneaky", "198.18.0.0/16")), on="list_kind")
    failed(ctl("create", "-f", write(tmp_path / "p.yaml", pool("mine", "198.18.5.0/24"))), "overlaps with IPPool(sneaky)")
    assert fired and pool_names(store) == ["sneaky"]


def test_apply_without_a_version_retries_a_lost_race_and_wins(ctl, store, tmp_path, race):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    uid = get_doc(ctl, "ippool", "a")["metadata"]["uid"]
    fired = race(lambda: relabel(store, "IPPool", "a", {"other": "writer"}))
    ok(ctl("apply", "-f", write(tmp_path / "q.yaml", pool("a", "198.18.0.0/24", natOutgoing=True))))
    got = get_doc(ctl, "ippool", "a")
    assert fired and got["spec"]["natOutgoing"] is True and got["metadata"]["uid"] == uid
    # apply replaces the whole document: the other writer's label is not kept.
    assert "labels" not in got["metadata"]


def test_a_version_read_before_a_lost_race_is_a_conflict(ctl, store, tmp_path, race):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    current = get_doc(ctl, "ippool", "a")
    current["spec"]["natOutgoing"] = True
    race(lambda: relabel(store, "IPPool", "a", {"other": "writer"}))
    failed(ctl("replace", "-f", write(tmp_path / "q.yaml", current)), "update conflict")
    got = get_doc(ctl, "ippool", "a")
    assert got["metadata"]["labels"] == {"other": "writer"} and "natOutgoing" not in got["spec"]


def test_label_and_patch_keep_a_concurrent_writers_change(ctl, store, tmp_path, race):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    race(lambda: relabel(store, "IPPool", "a", {"first": "1"}), on="get")
    ok(ctl("label", "ippool", "a", "second=2"))
    assert get_doc(ctl, "ippool", "a")["metadata"]["labels"] == {"first": "1", "second": "2"}
    race(lambda: relabel(store, "IPPool", "a", {"third": "3"}), on="get")
    ok(ctl("patch", "ippool", "a", "-p", '{"spec":{"disabled":true}}'))
    got = get_doc(ctl, "ippool", "a")
    assert got["metadata"]["labels"] == {"first": "1", "second": "2", "third": "3"} and got["spec"]["disabled"] is True


def test_a_resource_that_keeps_changing_gives_up_with_a_conflict(ctl, store, tmp_path, race):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    counter = iter(range(100))
    race(lambda: relabel(store, "IPPool", "a", {"n": str(next(counter))}), times=100)
    failed(ctl("apply", "-f", write(tmp_path / "q.yaml", pool("a", "198.18.0.0/24", natOutgoing=True))), "update conflict", "try again")
    assert "natOutgoing" not in get_doc(ctl, "ippool", "a")["spec"]


# -- more round trips and names ------------------------------------------------------------------------


def test_a_default_tier_policy_named_with_or_without_its_prefix_is_one_resource(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "np.yaml", doc("NetworkPolicy", "allow-web", namespace="shop"))))
    prefixed = write(tmp_path / "np2.yaml", doc("NetworkPolicy", "default.allow-web", namespace="shop"))
    failed(ctl("create", "-f", prefixed), "resource already exists: NetworkPolicy(shop/")
    assert get_doc(ctl, "np", "default.allow-web", "-n", "shop")["metadata"]["name"] == "allow-web"
    ok(ctl("label", "np", "default.allow-web", "-n", "shop", "a=b"))
    ok(ctl("patch", "np", "allow-web", "-n", "shop", "-p", '{"spec":{"order":5}}'))
    assert keys(store, R + "networkpolicies/") == [R + "networkpolicies/shop/default.allow-web"]
    got = get_doc(ctl, "np", "allow-web", "-n", "shop")
    assert got["spec"]["order"] == 5 and got["metadata"]["labels"]["a"] == "b"
    ok(ctl("delete", "np", "default.allow-web", "-n", "shop"))
    assert keys(store, R + "networkpolicies/") == []


def test_all_namespaces_yaml_applies_back_unchanged(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "s.yaml", netset("s1"), netset("s2", "team"), netset("s3", "other"))))
    text = ok(ctl("get", "networksets", "-A", "-o", "yaml")).stdout
    (tmp_path / "back.yaml").write_text(text)
    before = snapshot(store)
    r = ok(ctl("apply", "-f", str(tmp_path / "back.yaml")))
    assert "3 unchanged" in r.stderr and snapshot(store) == before


def test_an_edited_get_output_with_an_unquoted_timestamp_is_still_unchanged(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    text = ok(ctl("get", "ippool", "a", "-o", "yaml")).stdout
    created = get_doc(ctl, "ippool", "a")["metadata"]["creationTimestamp"]
    edited = text.replace(f"'{created}'", created)
    assert edited != text and f"creationTimestamp: {created}\n" in edited
    (tmp_path / "e.yaml").write_text(edited)
    before = snapshot(store)
    ok(ctl("apply", "-f", str(tmp_path / "e.yaml")))
    assert snapshot(store) == before


def test_a_workload_endpoint_without_a_name_gets_its_name_from_the_spec(ctl, store, tmp_path):
    wep = doc("WorkloadEndpoint", namespace="ns1")
    del wep["metadata"]["name"]
    ok(ctl("create", "-f", write(tmp_path / "w.yaml", wep)))
    assert keys(store, R + "workloadendpoints/") == [R + "workloadendpoints/ns1/node1-k8s-pod1-eth0"]


def test_a_default_tier_policy_can_be_patched_by_its_prefixed_name(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "np.yaml", doc("NetworkPolicy", "allow-web", namespace="shop"))))
    ok(ctl("patch", "np", "default.allow-web", "-n", "shop", "-p", '{"spec":{"order":5}}'))
    assert get_doc(ctl, "np", "allow-web", "-n", "shop")["spec"]["order"] == 5
    assert keys(store, R + "networkpolicies/") == [R + "networkpolicies/shop/default.allow-web"]


def stored_spec(store, kind: str, name: str, namespace: str | None = None) -> dict:
    return json.loads(raw(store, key_of(kind, name, namespace)).value)["spec"]


def test_apply_of_a_file_naming_one_resource_twice_ends_with_the_second(ctl, store, tmp_path):
    # calicoctl handles the documents in file order: the second updates what the first created.
    path = write(tmp_path / "d.yaml", pool("a", "198.18.0.0/24"), pool("a", "198.18.0.0/24", natOutgoing=True))
    assert ok(ctl("apply", "-f", path)).stdout.strip() == "Successfully applied 2 'IPPool' resource(s)"
    assert stored_spec(store, "IPPool", "a")["natOutgoing"] is True


def test_create_of_a_file_naming_one_resource_twice_creates_the_first(ctl, store, tmp_path):
    path = write(tmp_path / "d.yaml", pool("a", "198.18.0.0/24"), pool("a", "198.18.0.0/24", natOutgoing=True))
    failed(ctl("create", "-f", path), "Partial success: created the first 1 out of 2", "resource already exists: IPPool(a)")
    assert pool_names(store) == ["a"] and "natOutgoing" not in stored_spec(store, "IPPool", "a")


def test_a_missing_pool_after_a_deleted_one_is_a_partial_success(ctl, store, tmp_path):
    ok(ctl("create", "-f", write(tmp_path / "p.yaml", pool("a", "198.18.0.0/24"))))
    r = ctl("delete", "-f", write(tmp_path / "d.yaml", pool("a", "198.18.0.0/24"), pool("b", "198.18.1.0/24")))
    assert pool_names(store) == []
    failed(r, "Partial success: deleted the first 1 out of 2 resources", "IPPool(b)")


@pytest.mark.parametrize("kind", WRITABLE)
def test_a_stale_version_conflicts_for_every_kind(ctl, store, tmp_path, kind):
    name = MINIMAL[kind][0]
    ok(ctl("create", "-f", write(tmp_path / "r.yaml", doc(kind))))
    old = get_doc(ctl, kind, name)
    ok(ctl("label", kind_of(kind).plural, name, "bump=1"))
    before = snapshot(store)
    stale = copy.deepcopy(old)
    stale["spec"] = copy.deepcopy(MINIMAL[kind][2])
    path = write(tmp_path / "stale.yaml", stale)
    for verb in ("apply", "replace", "delete"):
        failed(ctl(verb, "-f", path), "update conflict")
    assert snapshot(store) == before
