"""Node records as calicoctl changes them: labels set and removed in one compare-and-swap step,
retried from a fresh read when another writer got there first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from calico_cni.datastore.retry import Conflict, with_retries
from calico_cni.datastore.store import Datastore
from calico_cni.model.records import Node


@dataclass
class Labelled:
    """A node as written by `label_node`, and the labels asked to be removed that it did not have."""

    node: Node
    absent: list[str] = field(default_factory=list)


def label_node(
    store: Datastore,
    name: str,
    sets: Mapping[str, str],
    removes: Sequence[str],
    new_node: Callable[[], Node] | None = None,
) -> Labelled | None:
    """Set the labels `sets` and remove the labels `removes` of node `name`. A node that does not
    exist is created from `new_node()` when it is given (nodes register on their first pod, so an
    operator may label one before that); without it, None and nothing is written."""

    def step(attempt: int) -> Labelled | None:
        record = store.node(name)
        if record is None:
            if new_node is None:
                return None
            record = new_node()
        absent = [key for key in removes if record.labels.pop(key, None) is None]
        record.labels.update(sets)
        if not store.commit(puts=[record]):
            raise Conflict()
        return Labelled(record, absent)

    return with_retries(f"labelling node {name}", step)
