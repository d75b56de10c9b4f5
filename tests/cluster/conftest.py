"""Tests of several nodes, each running calico-node and BIRD, on one fabric (tests/cluster_support.py).

Their plugins always go through each node's own calico-node, so the second CI pass (every plugin
through the session agent) does not run them again: they are not marked `execs_plugins`."""

import pytest

from tests.cluster_support import cluster  # noqa: F401 - the fixture


@pytest.fixture(autouse=True)
def _system(system):
    """Every test here runs as root inside the session's fabric namespace (tests/conftest.py)."""
