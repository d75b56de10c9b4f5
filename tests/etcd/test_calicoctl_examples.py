"""Resource files shaped like Calico's documented examples (written here from the v3 field lists,
not copied), applied through the INSTALLED calicoctl: each applies unchanged, reads back with
`get -o yaml` as the file plus Calico's defaults and the metadata a create adds, and applying the
file again (or what `get` printed) writes nothing."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import pytest
import yaml

from calico_cni.datastore.etcd import Range
from tests.calicoctl_support import run_exe

R = "/calico/resources/v3/projectcalico.org/"

IPPOOL_VXLAN = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: vxlan-pool
spec:
  cidr: 10.244.0.0/16
  vxlanMode: Always
  natOutgoing: true
  nodeSelector: all()
"""

GLOBAL_PEER = """\
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  peerIP: 192.0.2.254
  asNumber: 64567
"""

NODE_PEER = """\
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: node1-upstream
spec:
  node: node1
  peerIP: 192.0.2.253
  asNumber: 64568
  keepOriginalNextHop: true
  sourceAddress: UseNodeIP
"""

BGP_CONFIG = """\
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: false
  asNumber: 64512
  listenPort: 178
  serviceClusterIPs:
  - cidr: 10.96.0.0/12
  serviceExternalIPs:
  - cidr: 203.0.113.0/24
"""

TIER_AND_POLICY = """\
apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: security
spec:
  order: 100
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: security.allow-frontend
  namespace: shop
spec:
  tier: security
  order: 10
  selector: app == 'backend'
  types:
  - Ingress
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: app == 'frontend'
    destination:
      ports:
      - 8080
      - 9000:9100
"""

GLOBAL_POLICY = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: deny-cloud-metadata
spec:
  order: 200
  selector: all()
  types:
  - Egress
  egress:
  - action: Deny
    protocol: TCP
    destination:
      nets:
      - 169.254.169.254/32
  - action: Allow
"""


@dataclass
class Expect:
    """One resource of an example file: where it is stored, and what Calico adds on read-back."""

    plural: str
    name: str
    key: str
    namespace: str | None = None
    spec_defaults: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)


EXAMPLES = {
    "ippool-vxlan": (
        IPPOOL_VXLAN,
        [Expect("ippools", "vxlan-pool", R + "ippools/vxlan-pool", spec_defaults={
            "blockSize": 26, "ipipMode": "Never", "allowedUses": ["Workload", "Tunnel"], "assignmentMode": "Automatic",
        })],
    ),
    "bgppeer-global": (GLOBAL_PEER, [Expect("bgppeers", "rack1-tor", R + "bgppeers/rack1-tor")]),
    "bgppeer-node": (NODE_PEER, [Expect("bgppeers", "node1-upstream", R + "bgppeers/node1-upstream")]),
    "bgpconfiguration": (BGP_CONFIG, [Expect("bgpconfigurations", "default", R + "bgpconfigurations/default")]),
    "tier-and-policy": (
        TIER_AND_POLICY,
        [
            Expect("tiers", "security", R + "tiers/security", spec_defaults={"defaultAction": "Deny"}),
            Expect("networkpolicies", "security.allow-frontend", R + "networkpolicies/shop/security.allow-frontend", namespace="shop",
                   labels={"projectcalico.org/tier": "security"}),
        ],
    ),
    "globalnetworkpolicy": (
        GLOBAL_POLICY,
        [Expect("globalnetworkpolicies", "deny-cloud-metadata", R + "globalnetworkpolicies/default.deny-cloud-metadata",
                spec_defaults={"tier": "default"}, labels={"projectcalico.org/tier": "default"})],
    ),
}


def expected(document: dict, e: Expect) -> dict:
    """The file's document as `get -o yaml` shows it, without uid, creationTimestamp and
    resourceVersion (checked on their own)."""
    out = copy.deepcopy(document)
    out["spec"] = {**out["spec"], **e.spec_defaults}
    if e.labels:
        out["metadata"]["labels"] = {**(out["metadata"].get("labels") or {}), **e.labels}
    return out


def revision(store) -> int:
    _, rev = store.client.read([Range("/", prefix=True, keys_only=True)])
    return rev


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_example_applies_and_reads_back(tmp_path, store, etcd_endpoint, example):
    env = {"ETCD_ENDPOINTS": etcd_endpoint}
    text, expects = EXAMPLES[example]
    path = tmp_path / f"{example}.yaml"
    path.write_text(text)
    r = run_exe("apply", "-f", str(path), env=env)
    assert r.rc == 0, r.stderr
    assert r.stdout.startswith(f"Successfully applied {len(expects)} ")
    documents = list(yaml.safe_load_all(text))
    for document, e in zip(documents, expects):
        ns = ("-n", e.namespace) if e.namespace else ()
        got = run_exe("get", e.plural, e.name, *ns, "-o", "yaml", env=env)
        assert got.rc == 0, got.stderr
        shown = yaml.safe_load(got.stdout)
        meta = shown["metadata"]
        uid, created, version = meta.pop("uid"), meta.pop("creationTimestamp"), meta.pop("resourceVersion")
        assert shown == expected(document, e)
        assert len(uid) == 36 and created.endswith("Z")
        # Stored under Calico's key, without resourceVersion: that is the key's mod revision.
        kv = store.client.get(e.key)
        assert kv is not None and version == str(kv.mod_revision)
        stored = json.loads(kv.value)
        assert "resourceVersion" not in stored["metadata"] and stored["metadata"]["uid"] == uid
    # The same file again, and what get printed, write nothing.
    before = revision(store)
    again = run_exe("apply", "-f", str(path), env=env)
    assert again.rc == 0 and f"{len(expects)} unchanged" in again.stderr, again.stderr
    for e in expects:
        ns = ("-n", e.namespace) if e.namespace else ()
        shown_path = tmp_path / f"{e.name}.shown.yaml"
        shown_path.write_text(run_exe("get", e.plural, e.name, *ns, "-o", "yaml", env=env).stdout)
        assert run_exe("replace", "-f", str(shown_path), env=env).rc == 0
    assert revision(store) == before


def test_all_examples_in_one_directory(tmp_path, store, etcd_endpoint):
    env = {"ETCD_ENDPOINTS": etcd_endpoint}
    for example, (text, _) in EXAMPLES.items():
        (tmp_path / f"{example}.yaml").write_text(text)
    r = run_exe("create", "-f", str(tmp_path), env=env)
    total = sum(len(e) for _, e in EXAMPLES.values())
    assert r.rc == 0 and r.stdout.strip() == f"Successfully created {total} resource(s)", (r.stdout, r.stderr)
    peers = run_exe("get", "bgppeers", "-o", "wide", env=env)
    assert [line.split() for line in peers.stdout.splitlines()] == [
        ["NAME", "PEERIP", "NODE", "ASN"],
        ["node1-upstream", "192.0.2.253", "node1", "64568"],
        ["rack1-tor", "192.0.2.254", "(global)", "64567"],
    ]
    pools = run_exe("get", "ippools", "-o", "wide", env=env)
    assert pools.stdout.splitlines()[1].split() == ["vxlan-pool", "10.244.0.0/16", "true", "Never", "Always", "false", "false", "all()", "Automatic"]
    policies = run_exe("get", "networkpolicies", "-A", "-o", "wide", env=env)
    assert policies.stdout.splitlines()[1].split() == ["shop", "security.allow-frontend", "security", "10", "app", "==", "'backend'"]
    # The tier comes before its policy in the file; deleted together, the tier is empty.
    r = run_exe("delete", "-f", str(tmp_path), env=env)
    assert r.rc == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"Successfully deleted {total} resource(s)"
    # Only the default tier (created for the global policy) is left.
    (kvs,), _ = store.client.read([Range(R, prefix=True, keys_only=True)])
    assert [kv.key for kv in kvs] == [R + "tiers/default"]
