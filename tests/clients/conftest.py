"""Fixtures for tests through real CNI clients. Each removes what it created, even when the test fails.

The session runs in the fabric namespace (tests/conftest.py); nodes are namespaces connected to it.
A missing client is an error naming the package to install (scripts/test-deps.txt), except on a
machine without apt-get, where the Debian packages these tests rely on cannot exist: there the tests
are skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.clients import harness

REPO = Path(__file__).resolve().parents[2]


def require(path: str | None, what: str, install: str) -> str:
    """`path` when the tool exists; otherwise fail saying how to install it (skip off Debian)."""
    if path:
        return path
    if shutil.which("apt-get") is None:
        pytest.skip(f"{what} is not installed and this is not a Debian machine ({install})")
    pytest.fail(f"{what} is not installed: {install} (the list is in scripts/test-deps.txt)", pytrace=False)


@pytest.fixture(scope="session")
def cnitool_bin() -> str:
    """cnitool, built from Debian's source package by scripts/build-cnitool.sh."""
    return require(harness.find_cnitool(), "cnitool", f"run {REPO / 'scripts/build-cnitool.sh'} as root")


@pytest.fixture(scope="session")
def podman_bin(tmp_path_factory) -> str:
    """podman (with runc), after removing containers that killed test runs left behind."""
    for tool, package in (("runc", "runc"), ("nsenter", "util-linux")):
        require(shutil.which(tool), tool, f"apt-get install {package}")
    podman = require(harness.find_podman(), "podman", "apt-get install podman")
    harness.sweep_stale_containers(podman, tmp_path_factory.mktemp("podman-sweep"))
    return podman


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory) -> Path:
    """A busybox-static root filesystem for `podman run --rootfs` (shared: write into a --tmpfs)."""
    require(shutil.which("busybox"), "busybox", "apt-get install busybox-static")
    return harness.make_busybox_rootfs(tmp_path_factory.mktemp("busybox-rootfs"))


@pytest.fixture
def make_node(fabric):
    """Factory: `make_node(ipv6_forwarding=False) -> Node`, a node namespace on the fabric."""
    nodes: list[harness.Node] = []

    def make(**kwargs) -> harness.Node:
        node = harness.create_node(fabric, **kwargs)
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        for node in reversed(nodes):
            harness.delete_node(node)


@pytest.fixture
def node(make_node) -> harness.Node:
    """One node namespace on the fabric."""
    return make_node()


@pytest.fixture
def make_netns():
    """Factory: `make_netns(tag="pod") -> path` of a bare namespace for a container (cnitool)."""
    paths: list[str] = []

    def make(tag: str = "pod") -> str:
        path = harness.create_netns(tag)
        paths.append(path)
        return path

    try:
        yield make
    finally:
        for path in reversed(paths):
            harness.remove_netns(Path(path).name)


@pytest.fixture
def netconf_dir(tmp_path) -> Path:
    """An empty directory for conflists (cnitool's NETCONFPATH)."""
    path = tmp_path / "net.d"
    path.mkdir()
    return path


@pytest.fixture
def make_podman(make_node, podman_bin, tmp_path):
    """Factory: `make_podman(node, plugin_dirs=PLUGIN_DIRS) -> Podman` running in that node.

    Its containers are removed before the nodes are (this fixture depends on make_node).
    """
    made: list[harness.Podman] = []

    def make(node: harness.Node, plugin_dirs=harness.PLUGIN_DIRS) -> harness.Podman:
        podman = harness.Podman(node, tmp_path / f"podman-{len(made)}", plugin_dirs, podman_bin)
        made.append(podman)
        return podman

    try:
        yield make
    finally:
        errors = []
        for podman in reversed(made):
            try:
                podman.cleanup()
            except Exception as exc:  # noqa: BLE001 - keep removing the others, then report
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def podman(make_podman, node) -> harness.Podman:
    """podman (CNI backend, test-owned network dir) running in the `node` namespace."""
    return make_podman(node)


@pytest.fixture(autouse=True)
def _system(system):
    """Every test here runs as root inside the session's fabric namespace (tests/conftest.py)."""
