"""The `metadata` of every v3 resource (Kubernetes' ObjectMeta, as calicoctl decodes it) and the
name and label rules it carries. Standard library only."""

from __future__ import annotations

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
