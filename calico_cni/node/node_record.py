"""Changes to a Node resource by compare-and-swap, shared by calico-node's start-up and its
tunnel-address controller: one way to copy, change, tidy and write the document."""

from __future__ import annotations

import copy
from typing import Any, Callable

from calico_cni.datastore import resources as stored
from calico_cni.datastore.resources import Ref
from calico_cni.datastore.retry import Conflict, with_retries
from calico_cni.datastore.store import Datastore
from calico_cni.model.kinds.routing import NODE
from calico_cni.model.resource import Resource

# Changes a copy of the Node document in place.
Mutation = Callable[[dict[str, Any]], None]


def changed(doc: dict[str, Any], mutate: Mutation) -> dict[str, Any]:
    """A copy of the Node document changed by `mutate` (`doc` is left as it is). A `spec.bgp`
    left empty is removed, as Calico sets it to nil (libcalico refuses an empty one)."""
    out = copy.deepcopy(doc)
    mutate(out)
    spec = out.get("spec")
    if isinstance(spec, dict) and "bgp" in spec and not spec["bgp"]:
        del spec["bgp"]
    return out


def write_node(store: Datastore, current: Resource, mutate: Mutation) -> Resource:
    """`current` `changed` by `mutate`, written by compare-and-swap against the revision it was
    read at; `Conflict` when someone changed it meanwhile (the caller reads again). Nothing is
    written when the change changes nothing: `current` is returned."""
    doc = changed(current.doc, mutate)
    if doc == current.doc:
        return current
    written = Resource(NODE, doc, current.revision)
    if not store.commit(puts=[written]):
        raise Conflict()
    return written  # the commit gave it its new revision


def update_node(store: Datastore, name: str, mutate: Mutation) -> Resource | None:
    """Node(name) read, changed by `mutate` and written (`write_node`), read and changed again
    from scratch each time someone else's write wins meanwhile; None (nothing written) when the
    Node does not exist; else the Node as stored now."""

    def step(attempt: int) -> Resource | None:
        current = stored.get(store, Ref(NODE, name))
        return None if current is None else write_node(store, current, mutate)

    return with_retries(f"updating Node({name})", step)
