"""Policy records as calicoctl stores them, and as someone writes them straight to etcd, for the
policy model and view tests (issue 18)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from calico_cni.model import kinds
from calico_cni.model.keys import RESOURCES
from calico_cni.model.resource import Resource

API = "projectcalico.org/v3"


@dataclass
class KV:
    value: bytes
    mod_revision: int = 7


def stored(kind: str, name: str, spec: dict, namespace: str | None = None, labels: dict | None = None) -> tuple[str, KV]:
    """(key, record) as calicoctl stores the document (decoded with its rules, policy names
    tier-prefixed with the user's name in the annotation)."""
    meta: dict = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    k, doc = kinds.decode({"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec})
    resource = Resource(k, doc)
    return resource.key, KV(resource.to_json())


def raw(key: str, doc: dict) -> tuple[str, KV]:
    """A record written straight to etcd, as given."""
    return RESOURCES + key, KV(json.dumps(doc).encode())


def wep(name: str = "web", namespace: str = "prod", labels: dict | None = None, profiles: list | None = None, **spec) -> tuple[str, KV]:
    body = {
        "orchestrator": "k8s",
        "node": "node1",
        "pod": name,
        "endpoint": "eth0",
        "interfaceName": f"cali{name}",
        "ipNetworks": ["10.0.0.1/32"],
        "profiles": profiles if profiles is not None else [],
        **spec,
    }
    return stored("WorkloadEndpoint", "", body, namespace, labels)
