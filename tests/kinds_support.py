"""Helpers the tests of the resource kinds share (`tests/unit/test_kinds_*.py`): decode a document
as calicoctl's strict decoder does, or get the refusal it raises. Pure: no etcd, no root."""

from __future__ import annotations

import copy

import pytest

from calico_cni.model import kinds
from calico_cni.model.schema import Invalid

API = "projectcalico.org/v3"


def decode(doc: dict) -> dict:
    """The decoded document (`apiVersion` filled in when the document has none); the given
    document is left as it was."""
    return kinds.decode(copy.deepcopy({"apiVersion": API, **doc}))[1]


def refused(doc: dict) -> Invalid:
    """The `Invalid` decoding `doc` raises (the test fails when it is accepted)."""
    with pytest.raises(Invalid) as info:
        decode(doc)
    return info.value
