"""The `metadata` of every v3 resource (Kubernetes' ObjectMeta, as calicoctl decodes it), the
name and label rules it carries, and the cells every kind's `get` table reads from a document.
Standard library only."""

from __future__ import annotations

from typing import Any

from calico_cni.model import checks
from calico_cni.model.schema import Free, Int, Map, Obj, Str

LABELS = Map(Str(checks.label_value), key=checks.label_key)
ANNOTATIONS = Map(Str())

# Every ObjectMeta field calicoctl's strict decoder knows; the ones Calico ignores are kept as given.
METADATA = Obj(
    {
        "name": Str(),
        "generateName": Str(),
        "namespace": Str(checks.dns_label),
        "selfLink": Str(),
        "uid": Str(),
        "resourceVersion": Str(),
        "generation": Int(),
        "creationTimestamp": Free(),
        "deletionTimestamp": Free(),
        "deletionGracePeriodSeconds": Int(),
        "labels": LABELS,
        "annotations": ANNOTATIONS,
        "ownerReferences": Free(),
        "finalizers": Free(),
        "managedFields": Free(),
    }
)


def name_of(doc: dict) -> str:
    """metadata.name: the NAME cell of every kind's table."""
    return doc["metadata"]["name"]


def spec_value(doc: dict, key: str) -> Any:
    """spec[key] as a table cell shows it: "" when absent or null."""
    value = (doc.get("spec") or {}).get(key)
    return "" if value is None else value
