"""Hostile CNI_NETNS for the `calico` plugin, run inside a node namespace: a regular file, a missing
path, the plugin's own (node) namespace, a namespace of another kind, a directory and a FIFO.
ADD and CHECK fail with a clear error and change nothing in etcd or in the node's kernel state;
DEL succeeds (it must, whatever the netns) and never touches the node's own interfaces."""

from __future__ import annotations

import json
import os

import pytest

from tests.calico_support import ip_json, run_calico
from tests.conftest import cni_env
from tests.pools import create_pool
from tests.security_support import cni_error, snapshot, succeeded

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)


def kernel_state(node) -> str:
    """The node's links, addresses and routes (both families), as ip prints them."""
    return json.dumps([ip_json(node.name, "link", "show"), ip_json(node.name, "addr", "show"),
                       ip_json(node.name, "-4", "route", "show"), ip_json(node.name, "-6", "route", "show")], sort_keys=True)


PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "calia1b2c3d4e5f", "mac": "ee:ee:ee:ee:ee:ee"},
                   {"name": "uplink", "mac": "02:00:00:00:00:01", "sandbox": "/x"}],
    "ips": [{"interface": 1, "address": "198.18.20.5/32"}],
}


def hostile_paths(node, tmp_path) -> dict[str, str]:
    regular = tmp_path / "regular-file"
    regular.write_text("not a namespace\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {
        "regular file": str(regular),
        "missing path": str(tmp_path / "no-such-netns"),
        "node's own namespace": node.path,
        "own namespace via /proc": "/proc/self/ns/net",
        "mount namespace": "/proc/self/ns/mnt",
        "directory": str(tmp_path),
        "fifo": str(fifo),
    }


CASES = [
    "regular file", "missing path", "node's own namespace", "own namespace via /proc", "mount namespace", "directory",
    "fifo",  # opening it must not block until a writer comes
]


@pytest.fixture
def world(store, node, calico_conf, tmp_path):  # noqa: F811
    create_pool(store, "p1", "198.18.20.0/24", 26)
    return store, node, calico_conf(), hostile_paths(node, tmp_path)


@pytest.mark.parametrize("case", CASES)
def test_add_and_check_refuse_and_change_nothing(world, case):
    store, node, conf, paths = world
    # ifname "uplink": the node's own uplink is what a confused plugin would reconfigure.
    env = cni_env("c1", "uplink", paths[case])
    before_etcd, before_kernel = snapshot(store.client), kernel_state(node)
    add = cni_error(run_calico(node, "ADD", conf, env, timeout=10))
    check = cni_error(run_calico(node, "CHECK", {**conf, "prevResult": PREV}, env, timeout=10))
    assert snapshot(store.client) == before_etcd
    assert kernel_state(node) == before_kernel
    if case == "missing path":
        assert add["code"] == 4 and "does not exist" in add["msg"], add
        assert check["code"] == 103 and "does not exist" in check["msg"], check
    else:
        for err in (add, check):
            assert err["code"] == 4 and "CNI_NETNS" in err["msg"], err
    if case in ("node's own namespace", "own namespace via /proc"):
        assert "own network namespace" in add["msg"], add


@pytest.mark.parametrize("case", CASES)
def test_del_succeeds_and_spares_the_node(world, case):
    store, node, conf, paths = world
    env = cni_env("c1", "uplink", paths[case])
    before_kernel = kernel_state(node)
    succeeded(run_calico(node, "DEL", conf, env, timeout=10))
    succeeded(run_calico(node, "DEL", conf, env, timeout=10))
    assert kernel_state(node) == before_kernel
    assert any(link["ifname"] == "uplink" for link in ip_json(node.name, "link", "show"))
