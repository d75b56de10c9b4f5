"""calico-ipam with three etcd endpoints (a real three-member cluster on loopback in the fabric
namespace): with any one member stopped or frozen, ADD and DEL succeed within the deadline, whatever
the order of the endpoints in etcd_endpoints."""

from __future__ import annotations

import itertools
import os
import signal

import pytest

from calico_cni.config import EtcdSettings
from calico_cni.datastore.etcd import EtcdClient
from calico_cni.datastore.store import Datastore
from tests import etcd_secure
from tests.conftest import cni_env, run_plugin
from tests.pools import create_pool
from tests.security_support import succeeded

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

BASE_PORT = 23850  # clients 23850, 23852, 23854; peers one above each


@pytest.fixture(scope="module")
def cluster(fabric, tmp_path_factory):
    c = etcd_secure.start_cluster("127.0.0.1", BASE_PORT, str(tmp_path_factory.mktemp("etcd-cluster")))
    try:
        yield c
    finally:
        for m in c.members:
            if m.proc is not None and m.proc.poll() is None:
                os.kill(m.proc.pid, signal.SIGCONT)
        c.stop()


@pytest.fixture(scope="module")
def cluster_store(cluster):
    ds = Datastore(EtcdClient(EtcdSettings(tuple(cluster.endpoints))))
    create_pool(ds, "p1", "198.18.0.0/24")
    yield ds
    ds.close()


def conf(tmp_path, endpoints) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "net1",
        "type": "calico-ipam",
        "etcd_endpoints": ",".join(endpoints),
        "etcd_timeout": 5,
        "nodename": "node1",
        "log_file_path": str(tmp_path / "cni.log"),
        "log_level": "debug",
        "ipam": {"type": "calico-ipam"},
    }


def add_and_del_in_every_order(cluster, store, tmp_path, label):
    for n, order in enumerate(itertools.permutations(cluster.endpoints)):
        cid = f"{label}-{n}"
        config = conf(tmp_path, order)
        out = succeeded(run_plugin("calico-ipam", "ADD", config, cni_env(cid), timeout=60))
        assert out["ips"][0]["address"].startswith("198.18.0.")
        assert store.handle(f"net1.{cid}") is not None
        succeeded(run_plugin("calico-ipam", "DEL", config, cni_env(cid), timeout=60))
        assert store.handle(f"net1.{cid}") is None


@pytest.mark.parametrize("down", [0, 1, 2])
def test_add_and_del_with_one_member_stopped(cluster, cluster_store, tmp_path, down):
    member = cluster.members[down]
    others = [m for m in cluster.members if m is not member]
    member.stop()
    try:
        cluster.wait_healthy(others, timeout=30)  # the two left have (re-)elected a leader
        add_and_del_in_every_order(cluster, cluster_store, tmp_path, f"stopped{down}")
    finally:
        member.start()
        cluster.wait_healthy(timeout=30)


def test_add_and_del_with_one_member_frozen(cluster, cluster_store, tmp_path):
    """A member that accepts connections and never answers (SIGSTOP): each call gives each endpoint
    only a share of the deadline, so the plugin moves on to a live one."""
    member = cluster.members[1]
    others = [m for m in cluster.members if m is not member]
    os.kill(member.proc.pid, signal.SIGSTOP)
    try:
        cluster.wait_healthy(others, timeout=30)
        add_and_del_in_every_order(cluster, cluster_store, tmp_path, "frozen")
    finally:
        os.kill(member.proc.pid, signal.SIGCONT)
        cluster.wait_healthy(timeout=30)
