"""Helpers to put IP pools, nodes and IPAM config into the test etcd."""

from __future__ import annotations

import pytest

from calico_cni.model.records import IPPool, IpamConfig, Node
from calico_cni.datastore.store import Datastore


def create_pool(store: Datastore, name: str, cidr: str, block_size: int | None = None, **spec) -> IPPool:
    pool = IPPool.new(name, cidr, block_size, **spec)
    assert store.commit(puts=[pool]), f"pool {name} exists"
    return pool


def pools_fixture(*pools: tuple[str, str, int | None]):
    """A test module's `pools` fixture: these (name, CIDR, block size) pools in the empty test etcd.
    Each module keeps its own addresses (its assertions depend on them):
    `pools = pools_fixture(("v4", "198.18.10.0/24", 26))`."""

    @pytest.fixture(name="pools")
    def fixture(store) -> None:
        for name, cidr, block_size in pools:
            create_pool(store, name, cidr, block_size)

    return fixture


def set_config(store: Datastore, **fields) -> IpamConfig:
    config = store.ipam_config()
    for k, v in fields.items():
        setattr(config, k, v)
    assert store.commit(puts=[config])
    return config


def label_node(store: Datastore, name: str, **labels: str) -> Node:
    node = store.node(name) or Node.new(name)
    node.labels.update(labels)
    assert store.commit(puts=[node])
    return node
