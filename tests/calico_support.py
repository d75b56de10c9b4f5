"""Namespaces and helpers for the `calico` plugin's tests.

A node is a namespace `calico-test-cnode<N>-<pid>` joined to the fabric namespace (where the test
process and etcd live) by a veth whose fabric end stays in the fabric: the node address is a /32 on
its `lo`, its default route goes via the uplink. Pods are namespaces `calico-test-cpod<N>-<pid>`.
The plugin runs inside a node with `nsenter --net=...`; the machine's own namespace is never
touched. Every fixture removes what it created, also when the test fails.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from dataclasses import dataclass, field

import pytest

from tests import netns
from tests.conftest import FABRIC_ADDRESS, PluginRun, cni_env, plugin_env, plugin_path, run_plugin

_counter = itertools.count(1)
NODE_ADDRESS_BASE = (198, 19, 100)


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: rc={proc.returncode} {proc.stderr.strip()} {proc.stdout.strip()}")
    return proc


def in_ns(name: str, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command inside a named namespace (nsenter: /sys is not remounted)."""
    return sh("nsenter", f"--net={netns.NETNS_DIR}/{name}", *args, check=check, timeout=timeout)


def ip_json(ns: str, *args: str) -> list:
    out = netns.ip("-n", ns, "-j", *args).stdout
    return json.loads(out) if out.strip() else []


def sysctl(ns: str, key: str) -> str:
    """A sysctl read inside a namespace (slash path below /proc/sys)."""
    return in_ns(ns, "cat", f"/proc/sys/{key}").stdout.strip()


@dataclass
class Node:
    """A node namespace with its uplink to the fabric."""

    name: str
    address: str
    fabric_link: str
    pods: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"{netns.NETNS_DIR}/{self.name}"

    def links(self) -> list[dict]:
        return ip_json(self.name, "link", "show")

    def cali_links(self) -> list[dict]:
        return [l for l in self.links() if l["ifname"].startswith("cali")]

    def routes(self, version: int = 4) -> list[dict]:
        return ip_json(self.name, f"-{version}", "route", "show")


def _free_node_address() -> tuple[str, int]:
    used = {r.get("dst") for r in json.loads(netns.ip("-j", "route", "show").stdout or "[]")}
    for n in range(1, 250):
        address = f"{NODE_ADDRESS_BASE[0]}.{NODE_ADDRESS_BASE[1]}.{NODE_ADDRESS_BASE[2] + n // 250}.{n % 250 + 1}"
        if address not in used:
            return address, n
    raise RuntimeError("no free node address")


def make_node(uplink_mtu: int | None = None) -> Node:
    n = next(_counter)
    name = f"{netns.PREFIX}cnode{n}-{os.getpid()}"
    address, _ = _free_node_address()
    fabric_link = f"calnode{n}"
    netns.add(name)
    node = Node(name, address, fabric_link)
    try:
        netns.ip("link", "add", fabric_link, "type", "veth", "peer", "name", "uplink", "netns", name)
        netns.ip("-n", name, "addr", "add", f"{address}/32", "dev", "lo")
        if uplink_mtu:
            netns.ip("-n", name, "link", "set", "uplink", "mtu", str(uplink_mtu))
            netns.ip("link", "set", fabric_link, "mtu", str(uplink_mtu))
        netns.ip("-n", name, "link", "set", "uplink", "up")
        netns.ip("link", "set", fabric_link, "up")
        netns.ip("-n", name, "route", "add", f"{FABRIC_ADDRESS}/32", "dev", "uplink", "scope", "link")
        netns.ip("-n", name, "route", "add", "default", "via", FABRIC_ADDRESS, "dev", "uplink")
        netns.ip("route", "add", f"{address}/32", "dev", fabric_link)
        # IPv6 through a node needs global forwarding (the kernel forwards IPv6 only with it; the installer checks it).
        in_ns(name, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding")
    except BaseException:
        remove_node(node)
        raise
    return node


def remove_node(node: Node) -> None:
    for pod in node.pods:
        netns.delete(pod)
    netns.delete(node.name)
    netns.ip("link", "del", node.fabric_link, check=False)


def make_pod(node: Node | None = None) -> str:
    name = f"{netns.PREFIX}cpod{next(_counter)}-{os.getpid()}"
    netns.add(name)
    if node is not None:
        node.pods.append(name)
    return name


@pytest.fixture
def node():
    """A fresh node namespace (removed with its pods afterwards)."""
    made = make_node()
    try:
        yield made
    finally:
        remove_node(made)


@pytest.fixture
def nodes():
    """A factory of node namespaces (all removed afterwards)."""
    made: list[Node] = []

    def factory(**kwargs) -> Node:
        made.append(make_node(**kwargs))
        return made[-1]

    try:
        yield factory
    finally:
        for n in made:
            remove_node(n)


@pytest.fixture
def pod(node):
    """A factory of pod namespaces on `node` (removed with the node)."""

    def factory() -> str:
        return make_pod(node)

    return factory


@pytest.fixture
def calico_conf(etcd_endpoint, tmp_path):
    """A `calico` network config factory on the test etcd."""

    def make(cni_version: str = "1.0.0", name: str = "net1", node: str = "node1", ipam: dict | None = None, **extra) -> dict:
        conf = {
            "cniVersion": cni_version,
            "name": name,
            "type": "calico",
            "etcd_endpoints": etcd_endpoint,
            "nodename": node,
            "log_file_path": str(tmp_path / "cni.log"),
            "log_level": "debug",
            "ipam": {"type": "calico-ipam", **(ipam or {})},
        }
        conf.update(extra)
        return conf

    return make


def pod_env(pod_name: str, container_id: str | None = None, ifname: str = "eth0", **extra: str) -> dict:
    """CNI_* variables for a pod namespace."""
    return cni_env(container_id or pod_name.replace(netns.PREFIX, "ctr-"), ifname, f"{netns.NETNS_DIR}/{pod_name}", **extra)


def run_calico(node: Node, command: str, config: dict, env: dict, plugin: str = "calico", timeout: float = 60) -> PluginRun:
    """Exec a plugin inside the node's namespace as a runtime would."""
    return run_plugin(plugin, command, config, env, timeout, netns_path=node.path)


def popen_calico(node: Node, command: str, config: dict, env: dict, plugin: str = "calico") -> subprocess.Popen:
    """Start `calico` (or `plugin`) inside the node's namespace without waiting (a test that kills it);
    its stdout and stderr are pipes, its stdin (the config) is already written and closed."""
    full_env = {**plugin_env(), "CNI_COMMAND": command, **env}
    proc = subprocess.Popen(["nsenter", f"--net={node.path}", plugin_path(plugin)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
    proc.stdin.write(json.dumps(config).encode())
    proc.stdin.close()
    proc.stdin = None  # communicate() must not flush it again
    return proc


def ok(run: PluginRun) -> dict | None:
    """Assert a plugin run succeeded; return its output."""
    assert run.rc == 0, f"rc={run.rc} stdout={run.stdout} stderr={run.stderr[-3000:]}"
    return run.out


def pod_links(pod_name: str) -> list[str]:
    """Interface names inside a pod, loopback excluded."""
    return [l["ifname"] for l in ip_json(pod_name, "link", "show") if l["ifname"] != "lo"]


def held_addresses(store) -> dict[str, list[str]]:
    """Every allocated address by handle (released and cooling-down ordinals excluded)."""
    out: dict[str, list[str]] = {}
    for block in store.all_blocks():
        for o in range(block.size):
            attr = block.attribute(o) or {}
            if attr.get("handle_id"):
                out.setdefault(attr["handle_id"], []).append(str(block.address(o)))
    return out


def assert_node_clean(node: Node) -> None:
    """No cali link and no route to a pod address is left on the node."""
    assert node.cali_links() == [], [l["ifname"] for l in node.cali_links()]
    for version in (4, 6):
        pod_routes = [r for r in node.routes(version) if r["dst"].startswith(("198.18.", "fd00:198:18:"))]
        assert pod_routes == [], pod_routes


def assert_datastore_clean(store) -> None:
    """No endpoint, handle or allocation is left in etcd."""
    assert store.workload_endpoints() == []
    assert store.handles() == []
    assert held_addresses(store) == {}
