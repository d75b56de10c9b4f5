"""Several Calico nodes on one fabric, each with its own calico-node and BIRD (tests/cluster).

The session's fabric namespace (tests/conftest.py) holds etcd (198.19.0.1) and, for each cluster, a
bridge for the nodes' subnet (198.19.200.0/24 and fd00:198:19:200::/64): every node namespace has
an uplink on it with its node address, a default route via the bridge, and forwarding on. The
fabric knows no pod address, so pods on different nodes reach each other only through the routes
BIRD installs. Each node's calico-node has its own run and state directories (BIRD's socket and
pid file, the plugins' socket, the nodename file, BIRD's configuration), and the plugins reach it
through the network configuration's `agent_socket` and `nodename_file`.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import netns
from tests.calico_support import in_ns
from tests.conftest import FABRIC_ADDRESS, ETCD_PORT, plugin_env, plugin_path, run_plugin, PluginRun
from tests.processes import stop_process

SUBNET_V4 = "198.19.200"
SUBNET_V6 = "fd00:198:19:200"
GATEWAY_V4 = f"{SUBNET_V4}.1"
GATEWAY_V6 = f"{SUBNET_V6}::1"
_counter = itertools.count(1)


def wait_for(what: str, check, timeout: float = 10.0, interval: float = 0.1):
    """Poll `check()` until it returns something true (returned) or fail naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def block_of(address: str, size: int = 26) -> str:
    """The CIDR of the /`size` block holding `address` (the pools here use Calico's default, /26)."""
    return str(ipaddress.ip_network(f"{address}/{size}", strict=False))


@dataclass
class ClusterNode:
    """One node: its namespace, addresses, directories and calico-node."""

    nodename: str
    ns: str
    index: int
    directory: Path
    fabric_link: str
    proc: subprocess.Popen | None = None
    pods: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def ipv4(self) -> str:
        return f"{SUBNET_V4}.{self.index + 10}"

    @property
    def ipv6(self) -> str:
        return f"{SUBNET_V6}::{self.index + 10:x}"

    @property
    def run_dir(self) -> Path:
        return self.directory / "run"

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def log(self) -> Path:
        return self.directory / "calico-node.log"

    @property
    def socket(self) -> str:
        return str(self.run_dir / "cni.sock")

    def env(self) -> dict[str, str]:
        """calico-node's environment, as an operator's unit would set it."""
        return {
            "PATH": os.environ.get("PATH", ""),
            "NODENAME": self.nodename,
            "IP": f"{self.ipv4}/24",
            "IP6": f"{self.ipv6}/64",
            "DATASTORE_TYPE": "etcdv3",
            "ETCD_ENDPOINTS": f"http://{FABRIC_ADDRESS}:{ETCD_PORT}",
            "NO_DEFAULT_POOLS": "true",
            "CALICO_RUN_DIR": str(self.run_dir),
            "CALICO_STATE_DIR": str(self.state_dir),
            **self.extra_env,
        }

    def start(self, **env: str) -> None:
        """Start calico-node in the node's namespace and wait until it answers on its socket."""
        self.extra_env.update(env)
        log = open(self.log, "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns.NETNS_DIR}/{self.ns}", plugin_path("calico-node")],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        wait_for(f"calico-node of {self.nodename} to register (log {self.log})", lambda: (self.health() or {}).get("registered") or self.proc.poll() is not None, 30)
        assert self.proc.poll() is None, f"calico-node of {self.nodename} exited: {self.log.read_text()[-3000:]}"

    def health(self) -> dict | None:
        """The daemon's health answer, or None when nothing answers."""
        proc = subprocess.run([plugin_path("calico-cni-agent"), "health", "--socket", self.socket], capture_output=True, text=True, timeout=30)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop (or with SIGKILL, kill) calico-node; BIRD keeps running."""
        if self.proc is None:
            return
        if sig == signal.SIGKILL:
            self.proc.kill()
            self.proc.wait(10)
        else:
            stop_process(self.proc, 20, 5)
        self.proc = None

    def bird_pid(self) -> int | None:
        try:
            pid = int((self.run_dir / "bird.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if os.path.exists(f"/proc/{pid}") else None

    def kill_bird(self, sig: int = signal.SIGKILL) -> None:
        """Signal this node's BIRD (every BIRD whose command line names this node's run directory)."""
        for pid in processes_naming(str(self.run_dir), "bird"):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def birdc(self, *command: str) -> str:
        return in_ns(self.ns, "birdc", "-s", str(self.run_dir / "bird.ctl"), *command).stdout

    def routes(self, version: int = 4, *selector: str) -> list[dict]:
        out = in_ns(self.ns, "ip", "-j", f"-{version}", "route", "show", *selector).stdout
        return json.loads(out or "[]")

    def bird_routes(self, version: int = 4) -> dict[str, dict]:
        """The routes BIRD installed in the kernel, by destination."""
        return {r["dst"]: r for r in self.routes(version, "proto", "bird")}

    def conf(self, etcd_endpoint: str, ipv6: bool = False, **extra) -> dict:
        """The `calico` network configuration of this node (through its calico-node's socket)."""
        conf = {
            "cniVersion": "1.0.0",
            "name": "net1",
            "type": "calico",
            "etcd_endpoints": etcd_endpoint,
            "nodename_file": str(self.state_dir / "nodename"),
            "agent_socket": self.socket,
            "log_file_path": str(self.directory / "cni.log"),
            "log_level": "debug",
            "ipam": {"type": "calico-ipam", "assign_ipv6": "true" if ipv6 else "false"},
        }
        conf.update(extra)
        return conf

    def plugin(self, command: str, config: dict, pod: str, **cni_args: str) -> PluginRun:
        """Exec `calico` in this node's namespace for `pod`, through this node's calico-node."""
        from tests.conftest import cni_env

        env = {**cni_env(pod.replace(netns.PREFIX, "ctr-"), "eth0", f"{netns.NETNS_DIR}/{pod}"), "CALICO_CNI_AGENT_SOCKET": self.socket}
        if cni_args:
            env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in cni_args.items())
        return run_plugin("calico", command, config, env, netns_path=f"{netns.NETNS_DIR}/{self.ns}")

    def add_pod(self, etcd_endpoint: str, ipv6: bool = False, **cni_args: str) -> tuple[str, list[str]]:
        """A pod on this node (with an IPv6 address too when `ipv6`): (its namespace, its addresses
        without prefix)."""
        pod = netns.add(f"{netns.PREFIX}cp{next(_counter)}-{os.getpid()}")
        self.pods.append(pod)
        run = self.plugin("ADD", self.conf(etcd_endpoint, ipv6), pod, **cni_args)
        assert run.rc == 0, f"ADD on {self.nodename}: {run.stdout} {run.stderr[-2000:]}"
        return pod, [ip["address"].split("/")[0] for ip in run.out["ips"]]


def processes_naming(text: str, program: str) -> list[int]:
    """Pids of the processes running `program` with `text` in their command line."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0].decode(errors="replace")) == program and text.encode() in b" ".join(argv):
            found.append(int(entry))
    return found


def ping(pod: str, address: str, count: int = 1, timeout: int = 2) -> bool:
    """One ping from a pod namespace to `address` answered."""
    six = ["-6"] if ":" in address else []
    proc = subprocess.run(["ip", "netns", "exec", pod, "ping", *six, "-c", str(count), "-W", str(timeout), "-q", address], capture_output=True, text=True, timeout=count * timeout + 10)
    return proc.returncode == 0


class Cluster:
    """Nodes on one fabric bridge; everything is removed by `remove`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.id = next(_counter)
        self.bridge = f"calbr{self.id}"
        self.nodes: list[ClusterNode] = []
        # A MAC of its own: a bridge without one takes the lowest of its ports', which changes when a
        # node with a lower one joins, and nodes that learnt the old one lose the fabric (and etcd)
        # until their ARP entry is checked again.
        netns.ip("link", "add", self.bridge, "address", f"02:ca:11:c0:00:{self.id % 256:02x}", "type", "bridge")
        netns.ip("addr", "add", f"{GATEWAY_V4}/24", "dev", self.bridge)
        netns.ip("addr", "add", f"{GATEWAY_V6}/64", "dev", self.bridge, "nodad")
        netns.ip("link", "set", self.bridge, "up")

    def add_node(self, nodename: str | None = None, start: bool = True, **env: str) -> ClusterNode:
        """A node namespace on the bridge (and its calico-node, started unless `start` is False)."""
        index = len(self.nodes) + 1
        nodename = nodename or f"node-{index}"
        ns = netns.add(f"{netns.PREFIX}k{self.id}n{index}-{os.getpid()}")
        link = f"calk{self.id}n{index}"
        node = ClusterNode(nodename, ns, index, self.directory / nodename, link, extra_env=dict(env))
        self.nodes.append(node)
        node.directory.mkdir(parents=True, exist_ok=True)
        netns.ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
        netns.ip("link", "set", link, "master", self.bridge, "up")
        netns.ip("-n", ns, "addr", "add", f"{node.ipv4}/24", "dev", "eth0")
        netns.ip("-n", ns, "addr", "add", f"{node.ipv6}/64", "dev", "eth0", "nodad")
        netns.ip("-n", ns, "link", "set", "eth0", "up")
        netns.ip("-n", ns, "route", "add", "default", "via", GATEWAY_V4)
        netns.ip("-n", ns, "-6", "route", "add", "default", "via", GATEWAY_V6)
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            in_ns(ns, "sysctl", "-qw", f"{key}=1")
        if start:
            node.start()
        return node

    def remove(self) -> None:
        """Stop every calico-node and BIRD, remove every namespace, link and the bridge."""
        for node in self.nodes:
            try:
                node.stop(signal.SIGKILL)
            except Exception:  # noqa: BLE001 - cleanup goes on
                pass
            node.kill_bird(signal.SIGKILL)
            for pod in node.pods:
                netns.delete(pod)
            netns.delete(node.ns)
            netns.ip("link", "del", node.fabric_link, check=False)
        netns.ip("link", "del", self.bridge, check=False)


@pytest.fixture
def cluster(tmp_path, etcd_endpoint):
    """A factory-style cluster on the empty test etcd (removed afterwards, even on failure)."""
    made = Cluster(tmp_path / "cluster")
    try:
        yield made
    finally:
        made.remove()


__all__ = ["Cluster", "ClusterNode", "cluster", "ping", "wait_for", "in_ns", "block_of", "plugin_env", "stop_process"]
