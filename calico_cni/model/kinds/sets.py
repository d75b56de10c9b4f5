"""NetworkSet and GlobalNetworkSet: named lists of networks that policies select by the set's
labels (a NetworkSet only within its namespace). Rules as Calico v3.30's validator applies them.
Standard library only."""

from __future__ import annotations

from calico_cni.model import checks
from calico_cni.model.kinds.metadata import name_of
from calico_cni.model.schema import Column, Invalid, Kind, List, Obj, Str

NAMESPACE_LABEL = "projectcalico.org/namespace"
NETS_CELL_WIDTH = 80


def _prepare_set(doc: dict) -> None:
    """Calico refuses the namespace label on a set: it is Calico's own, mapping a real namespace."""
    if NAMESPACE_LABEL in (doc["metadata"].get("labels") or {}):
        raise Invalid(f"metadata.labels.{NAMESPACE_LABEL}", f"{NAMESPACE_LABEL} is not a valid label name: Calico sets it itself")


def join_truncated(items: list, width: int = NETS_CELL_WIDTH) -> str:
    """Items joined by ',' and cut to `width` characters ending in '...' when longer, as
    calicoctl's NETS column shows them."""
    out = ""
    for i, item in enumerate(items):
        out += ("," if i else "") + str(item)
        if len(out) > width:
            return out[: width - 3] + "..."
    return out


def _nets(doc: dict) -> str:
    return join_truncated((doc.get("spec") or {}).get("nets") or [])


_SPEC = Obj({"nets": List(Str(checks.cidr))})

NETWORK_SET = Kind(
    name="NetworkSet",
    plural="networksets",
    namespaced=True,
    aliases=("networkset", "networksets", "netsets"),
    spec=_SPEC,
    prepare=_prepare_set,
    columns=(Column("NAME", name_of),),
    wide=(Column("NAME", name_of), Column("NETS", _nets)),
)

GLOBAL_NETWORK_SET = Kind(
    name="GlobalNetworkSet",
    plural="globalnetworksets",
    aliases=("globalnetworkset", "globalnetworksets", "gnetsets"),
    spec=_SPEC,
    prepare=_prepare_set,
    columns=(Column("NAME", name_of),),
    wide=(Column("NAME", name_of), Column("NETS", _nets)),
)

KINDS = (NETWORK_SET, GLOBAL_NETWORK_SET)
