"""Network policy with real traffic (issue 18, tests/policy_harness.py): one node running calico-node
per module (`policy`), and per test a `Scope` (`pn`) whose pods and resources go at its end.

The module's etcd is emptied when its node starts; the tests read and write it only through
calicoctl (and a raw client for records calicoctl refuses): the per-test `etcd_endpoint` fixture
would wipe the node's records."""

from __future__ import annotations

import pytest

from tests.conftest import wipe
from tests.policy_harness import PolicyNode, Scope, policy_node


@pytest.fixture(autouse=True)
def _system(system):
    """Every test here runs as root inside the session's fabric namespace (tests/conftest.py)."""


@pytest.fixture(scope="module")
def policy(system, etcd, tmp_path_factory) -> PolicyNode:
    """The module's node, enforcing policy, with its pools."""
    wipe(etcd.endpoint)
    with policy_node(etcd.endpoint, tmp_path_factory.mktemp("policy")) as node:
        yield node


@pytest.fixture
def pn(policy) -> Scope:
    """This test's pods and resources on the module's node, removed at its end."""
    scope = Scope(policy)
    try:
        yield scope
    finally:
        scope.close()
