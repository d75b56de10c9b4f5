"""Tests against a real etcd (started once per session in the fabric namespace); no node namespaces."""

import pytest


@pytest.fixture(autouse=True)
def _system(system):
    """Every test here runs as root inside the session's fabric namespace (tests/conftest.py)."""
