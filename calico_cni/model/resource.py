"""One Calico v3 resource as etcd stores it: its key, its JSON, and the revision it was read at.

Keys are Calico's: `/calico/resources/v3/projectcalico.org/<plural>/<name>`, or
`.../<plural>/<namespace>/<name>` for namespaced kinds. Policies are stored as Calico v3.30 stores
them: under their tier-prefixed name (`default.<name>` in the default tier, `<tier>.<name>`
elsewhere, which is already the user's name), with the user's name kept in the
`projectcalico.org/metadata` annotation, so Calico's own tools read back the name they wrote.
`resourceVersion` is never stored: it is the key's etcd mod revision. Standard library only.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from calico_cni.model.keys import RESOURCES
from calico_cni.model.records import dumps
from calico_cni.model.schema import Kind

METADATA_ANNOTATION = "projectcalico.org/metadata"
TIER_LABEL = "projectcalico.org/tier"
DEFAULT_TIER = "default"


# The tier of the policies Calico's translators name (Kubernetes network policies, admin network
# policies, OpenStack security groups): such names are complete as they are.
FORMATTED_TIERS = {
    "knp.default.": DEFAULT_TIER,
    "kanp.adminnetworkpolicy.": "adminnetworkpolicy",
    "kbanp.baselineadminnetworkpolicy.": "baselineadminnetworkpolicy",
    "ossg.": DEFAULT_TIER,
}
FORMATTED_PREFIXES = tuple(FORMATTED_TIERS)


def stored_name(kind: Kind, name: str) -> str:
    """The name a resource is stored under: a policy's tier-prefixed name (a name without a tier
    prefix is in the default tier), any other resource's own name."""
    if not kind.tiered or "." in name or name.startswith(FORMATTED_PREFIXES):
        return name
    return f"{DEFAULT_TIER}.{name}"


def tier_of(name: str) -> str:
    """The tier a policy name puts the policy in: a translator's tier, else the part before the
    first dot, else default."""
    for name_prefix, tier in FORMATTED_TIERS.items():
        if name.startswith(name_prefix):
            return tier
    return name.split(".", 1)[0] if "." in name else DEFAULT_TIER


def prefix(kind: Kind, namespace: str | None = None) -> str:
    """The etcd prefix holding every resource of `kind` (in `namespace`, for namespaced kinds)."""
    base = f"{RESOURCES}{kind.plural}/"
    return f"{base}{namespace}/" if kind.namespaced and namespace else base


def key(kind: Kind, name: str, namespace: str | None = None) -> str:
    """The etcd key of the resource `name` of `kind`."""
    if kind.namespaced:
        return f"{RESOURCES}{kind.plural}/{namespace or 'default'}/{stored_name(kind, name)}"
    return f"{RESOURCES}{kind.plural}/{stored_name(kind, name)}"


def identifier(kind: Kind, name: str, namespace: str | None = None) -> str:
    """How Calico names a resource in its messages: `IPPool(pool1)`, `NetworkPolicy(ns/name)`."""
    return f"{kind.name}({namespace}/{name})" if kind.namespaced else f"{kind.name}({name})"


@dataclass
class Resource:
    """A resource document (`doc`, as the user sees it: their name, no resourceVersion) and the etcd
    revision it was read at (0: not stored)."""

    kind: Kind
    doc: dict[str, Any]
    revision: int = 0

    @property
    def name(self) -> str:
        """metadata.name, as the user wrote it."""
        return self.doc["metadata"]["name"]

    @property
    def namespace(self) -> str | None:
        """metadata.namespace (namespaced kinds only)."""
        return self.doc["metadata"].get("namespace") if self.kind.namespaced else None

    @property
    def key(self) -> str:
        """The etcd key."""
        return key(self.kind, self.name, self.namespace)

    @property
    def identifier(self) -> str:
        """`Kind(name)` or `Kind(namespace/name)`, as Calico's messages say it."""
        return identifier(self.kind, self.name, self.namespace)

    def stored(self) -> dict[str, Any]:
        """The document as etcd holds it: no resourceVersion; a policy under its stored name with the
        user's name in the metadata annotation."""
        doc = copy.deepcopy(self.doc)
        meta = doc.setdefault("metadata", {})
        meta.pop("resourceVersion", None)
        if self.kind.tiered:
            annotations = dict(meta.get("annotations") or {})
            annotations[METADATA_ANNOTATION] = json.dumps({"name": self.name}, separators=(",", ":"))
            meta["annotations"] = annotations
            meta["name"] = stored_name(self.kind, self.name)
        return doc

    def to_json(self) -> bytes:
        """The JSON written to etcd."""
        return dumps(self.stored())

    def document(self) -> dict[str, Any]:
        """The document as calicoctl shows it: apiVersion, kind, metadata (with resourceVersion, the
        etcd revision), spec, then anything else the record holds."""
        doc = copy.deepcopy(self.doc)
        meta = doc.get("metadata") or {}
        if self.revision:
            meta["resourceVersion"] = str(self.revision)
        ordered = {"apiVersion": doc.pop("apiVersion", None), "kind": doc.pop("kind", self.kind.name), "metadata": meta}
        doc.pop("metadata", None)
        ordered["spec"] = doc.pop("spec", {})
        ordered.update(doc)
        return ordered

    @classmethod
    def from_stored(cls, kind: Kind, value: bytes, revision: int) -> "Resource":
        """A resource as read from etcd, every field kept (design rule 15); a policy gets back the
        name its annotation records, and its tier and tier label as Calico's client shows them.
        `ValueError` when the value is not a JSON object."""
        doc = json.loads(value)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        meta = doc.setdefault("metadata", {})
        if kind.tiered:
            annotations = dict(meta.get("annotations") or {})
            recorded = annotations.pop(METADATA_ANNOTATION, None)
            if recorded:
                try:
                    meta["name"] = json.loads(recorded)["name"]
                except (ValueError, KeyError, TypeError):
                    pass
            if annotations:
                meta["annotations"] = annotations
            else:
                meta.pop("annotations", None)
            spec = doc.setdefault("spec", {})
            spec.setdefault("tier", tier_of(str(meta.get("name", ""))))
            meta.setdefault("labels", {}).setdefault(TIER_LABEL, spec["tier"])
        meta.pop("resourceVersion", None)
        if kind.on_read is not None:
            kind.on_read(doc)
        return cls(kind, doc, revision)
