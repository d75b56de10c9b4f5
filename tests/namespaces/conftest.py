"""Tests that build node and pod namespaces and exec the plugins in them."""

import pytest


@pytest.fixture(autouse=True)
def _system(system):
    """Every test here runs as root inside the session's fabric namespace (tests/conftest.py)."""
