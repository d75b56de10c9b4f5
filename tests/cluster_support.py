"""Several Calico nodes on one fabric, each with its own calico-node and BIRD (tests/cluster).

The session's fabric namespace (tests/conftest.py) holds etcd (198.19.0.1) and, for each cluster, a
bridge for the nodes' subnet (198.19.200.0/24 and fd00:198:19:200::/64): every node namespace has
an uplink on it with its node address, a default route via the bridge, and forwarding on. The
fabric knows no pod address, so pods on different nodes reach each other only through the routes
BIRD installs. Each node's calico-node has its own run and state directories (BIRD's socket and
pid file, the plugins' socket, the nodename file, BIRD's configuration), and the plugins reach it
through the network configuration's `agent_socket` and `nodename_file`.

`RoutedCluster` is the two-subnet topology of the VXLAN tests: the fabric holds two bridges that
are plain L2 segments (no address: the fabric routes nothing for them), subnet A (198.19.201.0/24,
fd00:198:19:201::/64) and subnet B (198.19.202.0/24, fd00:198:19:202::/64). A ROUTER namespace owns
their gateways (.1 / ::1) through one leg on each bridge ("leg-a", "leg-b"), has forwarding on
and knows no pod address. Its third leg ("up", 198.19.203.2, fabric end 198.19.203.1) is its default route into
the fabric, which routes the node subnets back through it: that is how every node reaches etcd at
198.19.0.1. Its fourth leg ("out", 198.19.250.1 / fd00:198:19:250::1) leads to the OUTSIDE namespace
(198.19.250.2 / fd00:198:19:250::2), which routes only 198.19.0.0/16 and fd00:198:19::/48 back to
the router, so a pod reaches it only when masqueraded to its node's address. The router's own
nftables table (`inet calico_test_router`) counts what it forwards (`router_counts()`): UDP to
4789 between the two node legs, everything else between them, and anything with a pool address.
The bridges stay in the fabric rather than the router because br_netfilter is loaded on these
machines: bridged frames pass the netfilter hooks of the namespace that owns the bridge, and the
router's counters must see routed packets alone (same-subnet traffic never reaches them).
`Listener` runs a small TCP or UDP server (the venv's Python) in any namespace and records the
source address of each peer; `connect`/`send_udp` are its clients.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
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
    subnet_v4: str = SUBNET_V4  # the first three octets of the node's subnet (a /24)
    subnet_v6: str = SUBNET_V6  # the first four groups of its IPv6 subnet (a /64)
    uplink: str = "eth0"  # the node's interface on its subnet (holds the node addresses)

    @property
    def ipv4(self) -> str:
        return f"{self.subnet_v4}.{self.index + 10}"

    @property
    def ipv6(self) -> str:
        return f"{self.subnet_v6}::{self.index + 10:x}"

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

    def bgp_established(self) -> int:
        """The BGP sessions BIRD has Established; 0 while its control socket is not up yet (BIRD
        starts with calico-node's routing part, after registration: a loaded machine is slower)."""
        proc = in_ns(self.ns, "birdc", "-s", str(self.run_dir / "bird.ctl"), "show", "protocols", check=False)
        if proc.returncode != 0:
            return 0
        return sum(1 for line in proc.stdout.splitlines() if line.split()[1:2] == ["BGP"] and "Established" in line)

    def routes(self, version: int = 4, *selector: str) -> list[dict]:
        out = in_ns(self.ns, "ip", "-j", f"-{version}", "route", "show", *selector).stdout
        return json.loads(out or "[]")

    def bird_routes(self, version: int = 4) -> dict[str, dict]:
        """The routes BIRD installed in the kernel, by destination."""
        return {r["dst"]: r for r in self.routes(version, "proto", "bird")}

    def ip_json(self, *args: str) -> list[dict]:
        """`ip -j <args>` in the node's namespace, parsed."""
        return json.loads(in_ns(self.ns, "ip", "-j", *args).stdout or "[]")

    def bridge_json(self, *args: str) -> list[dict]:
        """`bridge -j <args>` in the node's namespace (the FDB), parsed."""
        return json.loads(in_ns(self.ns, "bridge", "-j", *args).stdout or "[]")

    def link(self, name: str) -> dict | None:
        """`ip -d -j link show <name>` in the node's namespace, or None when there is no such link."""
        proc = in_ns(self.ns, "ip", "-d", "-j", "link", "show", name, check=False)
        return (json.loads(proc.stdout) or [None])[0] if proc.returncode == 0 else None

    def calicoctl_here(self, *args: str) -> subprocess.CompletedProcess:
        """calicoctl run in the node's namespace with its run directory (as `calicoctl node status`
        runs on a node)."""
        return subprocess.run(
            ["nsenter", f"--net={netns.NETNS_DIR}/{self.ns}", plugin_path("calicoctl"), *args],
            capture_output=True, text=True, timeout=30,
            env={"CALICO_RUN_DIR": str(self.run_dir), "ETCD_ENDPOINTS": f"http://{FABRIC_ADDRESS}:{ETCD_PORT}", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )

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

    def add_pod(self, etcd_endpoint: str, ipv6: bool = False, ipam: dict | None = None, conf: dict | None = None,
                **cni_args: str) -> tuple[str, list[str]]:
        """A pod on this node (with an IPv6 address too when `ipv6`): (its namespace, its addresses
        without prefix). `ipam` adds to the conf's ipam section (e.g. {"ipv4_pools": ["vx"]}),
        `conf` to the conf itself (e.g. {"mtu_file": ...})."""
        pod = netns.add(f"{netns.PREFIX}cp{next(_counter)}-{os.getpid()}")
        self.pods.append(pod)
        config = self.conf(etcd_endpoint, ipv6, **(conf or {}))
        config["ipam"].update(ipam or {})
        run = self.plugin("ADD", config, pod, **cni_args)
        assert run.rc == 0, f"ADD on {self.nodename}: {run.stdout} {run.stderr[-2000:]}"
        return pod, [ip["address"].split("/")[0] for ip in run.out["ips"]]

    def remove_pod(self, etcd_endpoint: str, pod: str, ipv6: bool = False, ipam: dict | None = None, conf: dict | None = None) -> None:
        """CNI DEL of a pod `add_pod` made (same arguments), then its namespace goes."""
        config = self.conf(etcd_endpoint, ipv6, **(conf or {}))
        config["ipam"].update(ipam or {})
        run = self.plugin("DEL", config, pod)
        assert run.rc == 0, f"DEL on {self.nodename}: {run.stdout} {run.stderr[-2000:]}"
        netns.delete(pod)
        self.pods.remove(pod)


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


@dataclass(frozen=True)
class Subnet:
    """A node subnet: a /24 and a /64 on one fabric bridge, its gateways at .1 and ::1."""

    v4: str  # first three octets
    v6: str  # first four groups
    bridge: str

    @property
    def gateway_v4(self) -> str:
        return f"{self.v4}.1"

    @property
    def gateway_v6(self) -> str:
        return f"{self.v6}::1"


class Cluster:
    """Nodes on one fabric bridge; everything is removed by `remove`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.id = next(_counter)
        self.bridge = f"calbr{self.id}"
        self.nodes: list[ClusterNode] = []
        self.subnets = {"default": Subnet(SUBNET_V4, SUBNET_V6, self.bridge)}
        self._add_bridge(self.bridge, 0, gateways=True)

    def _add_bridge(self, name: str, number: int, gateways: bool) -> None:
        """A bridge in the fabric (with the default subnet's gateway addresses when `gateways`)."""
        # A MAC of its own: a bridge without one takes the lowest of its ports', which changes when a
        # node with a lower one joins, and nodes that learnt the old one lose the fabric (and etcd)
        # until their ARP entry is checked again.
        netns.ip("link", "add", name, "address", f"02:ca:11:c0:{number:02x}:{self.id % 256:02x}", "type", "bridge")
        if gateways:
            netns.ip("addr", "add", f"{GATEWAY_V4}/24", "dev", name)
            netns.ip("addr", "add", f"{GATEWAY_V6}/64", "dev", name, "nodad")
        netns.ip("link", "set", name, "up")

    def add_node(self, nodename: str | None = None, start: bool = True, subnet: str = "default", **env: str) -> ClusterNode:
        """A node namespace on the bridge of `subnet` (a key of `self.subnets`) and its calico-node,
        started unless `start` is False."""
        net = self.subnets[subnet]
        index = len(self.nodes) + 1
        nodename = nodename or f"node-{index}"
        ns = netns.add(f"{netns.PREFIX}k{self.id}n{index}-{os.getpid()}")
        link = f"calk{self.id}n{index}"
        node = ClusterNode(nodename, ns, index, self.directory / nodename, link, extra_env=dict(env), subnet_v4=net.v4, subnet_v6=net.v6)
        self.nodes.append(node)
        node.directory.mkdir(parents=True, exist_ok=True)
        netns.ip("link", "add", link, "type", "veth", "peer", "name", node.uplink, "netns", ns)
        netns.ip("link", "set", link, "master", net.bridge, "up")
        netns.ip("-n", ns, "addr", "add", f"{node.ipv4}/24", "dev", node.uplink)
        netns.ip("-n", ns, "addr", "add", f"{node.ipv6}/64", "dev", node.uplink, "nodad")
        netns.ip("-n", ns, "link", "set", node.uplink, "up")
        netns.ip("-n", ns, "route", "add", "default", "via", net.gateway_v4)
        netns.ip("-n", ns, "-6", "route", "add", "default", "via", net.gateway_v6)
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            in_ns(ns, "sysctl", "-qw", f"{key}=1")
        if start:
            node.start()
        return node

    def remove(self) -> None:
        """Stop every calico-node and BIRD, remove every namespace, link and the bridges."""
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
        for net in self.subnets.values():
            netns.ip("link", "del", net.bridge, check=False)


# The routed topology's addresses (see the module docstring).
SUBNET_A = ("198.19.201", "fd00:198:19:201")
SUBNET_B = ("198.19.202", "fd00:198:19:202")
TRANSIT_ROUTER, TRANSIT_FABRIC = "198.19.203.2", "198.19.203.1"
OUTSIDE_V4, OUTSIDE_ROUTER_V4 = "198.19.250.2", "198.19.250.1"
OUTSIDE_V6, OUTSIDE_ROUTER_V6 = "fd00:198:19:250::2", "fd00:198:19:250::1"
POOLS_V4, POOLS_V6 = "198.18.0.0/16", "fd00:198:18::/48"
VXLAN_PORT = 4789
ROUTER_TABLE = "calico_test_router"

ROUTER_RULES = f"""\
table inet {ROUTER_TABLE} {{
    counter vxlan {{ }}
    counter other {{ }}
    counter pools {{ }}
    chain forward {{
        type filter hook forward priority 0; policy accept;
        ip saddr {POOLS_V4} counter name pools
        ip daddr {POOLS_V4} counter name pools
        ip6 saddr {POOLS_V6} counter name pools
        ip6 daddr {POOLS_V6} counter name pools
        iifname {{ "leg-a", "leg-b" }} oifname {{ "leg-a", "leg-b" }} udp dport {VXLAN_PORT} counter name vxlan accept
        iifname {{ "leg-a", "leg-b" }} oifname {{ "leg-a", "leg-b" }} counter name other
    }}
}}
"""


class RoutedCluster(Cluster):
    """Nodes on two subnets ("a" and "b") joined by a router namespace that knows no pod address,
    and an outside namespace behind the router (see the module docstring). `remove` takes it all
    down, and a constructor that fails half-way removes what it made."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.id = next(_counter)
        self.nodes = []
        self.bridge = f"calba{self.id}"  # subnet A's; Cluster's callers know one bridge
        self.subnets = {
            "a": Subnet(*SUBNET_A, self.bridge),
            "b": Subnet(*SUBNET_B, f"calbb{self.id}"),
        }
        self.router = f"{netns.PREFIX}rtr{self.id}-{os.getpid()}"
        self.outside = f"{netns.PREFIX}out{self.id}-{os.getpid()}"
        self._fabric_links = [f"calra{self.id}", f"calrb{self.id}", f"calrf{self.id}"]
        self.listeners: list[Listener] = []
        try:
            self._build()
        except BaseException:
            self.remove()
            raise

    def _build(self) -> None:
        r = self.router
        netns.add(r)
        netns.add(self.outside)
        for number, ((name, net), fabric_end) in enumerate(zip(self.subnets.items(), self._fabric_links), 1):
            leg = f"leg-{name}"
            self._add_bridge(net.bridge, number, gateways=False)
            netns.ip("link", "add", fabric_end, "type", "veth", "peer", "name", leg, "netns", r)
            netns.ip("link", "set", fabric_end, "master", net.bridge, "up")
            netns.ip("-n", r, "addr", "add", f"{net.gateway_v4}/24", "dev", leg)
            netns.ip("-n", r, "addr", "add", f"{net.gateway_v6}/64", "dev", leg, "nodad")
            netns.ip("-n", r, "link", "set", "dev", leg, "up")
        # The leg into the fabric: the router's default route, and the fabric's way back to the
        # node subnets (etcd answers through it).
        transit = self._fabric_links[2]
        netns.ip("link", "add", transit, "type", "veth", "peer", "name", "up", "netns", r)
        netns.ip("addr", "add", f"{TRANSIT_FABRIC}/24", "dev", transit)
        netns.ip("link", "set", transit, "up")
        netns.ip("-n", r, "addr", "add", f"{TRANSIT_ROUTER}/24", "dev", "up")
        netns.ip("-n", r, "link", "set", "dev", "up", "up")
        netns.ip("-n", r, "route", "add", "default", "via", TRANSIT_FABRIC)
        for net in self.subnets.values():
            netns.ip("route", "add", f"{net.v4}.0/24", "via", TRANSIT_ROUTER)
        # The outside: routes only the node and fabric ranges back, never the pools.
        netns.ip("-n", r, "link", "add", "out", "type", "veth", "peer", "name", "eth0", "netns", self.outside)
        netns.ip("-n", r, "addr", "add", f"{OUTSIDE_ROUTER_V4}/24", "dev", "out")
        netns.ip("-n", r, "addr", "add", f"{OUTSIDE_ROUTER_V6}/64", "dev", "out", "nodad")
        netns.ip("-n", r, "link", "set", "dev", "out", "up")
        o = self.outside
        netns.ip("-n", o, "addr", "add", f"{OUTSIDE_V4}/24", "dev", "eth0")
        netns.ip("-n", o, "addr", "add", f"{OUTSIDE_V6}/64", "dev", "eth0", "nodad")
        netns.ip("-n", o, "link", "set", "eth0", "up")
        netns.ip("-n", o, "route", "add", "198.19.0.0/16", "via", OUTSIDE_ROUTER_V4)
        netns.ip("-n", o, "-6", "route", "add", "fd00:198:19::/48", "via", OUTSIDE_ROUTER_V6)
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            in_ns(r, "sysctl", "-qw", f"{key}=1")
        _nft(r, ROUTER_RULES)

    def router_counts(self) -> dict[str, int]:
        """Packets the router forwarded: {"vxlan": UDP to 4789 between the two node legs, "other":
        anything else between them, "pools": anything from or to a pool address (any legs)}."""
        out = json.loads(in_ns(self.router, "nft", "-j", "list", "counters", "table", "inet", ROUTER_TABLE).stdout)
        return {item["counter"]["name"]: item["counter"]["packets"] for item in out["nftables"] if "counter" in item}

    def reset_router_counts(self) -> None:
        """Zero the router's counters."""
        in_ns(self.router, "nft", "reset", "counters", "table", "inet", ROUTER_TABLE)

    def listen(self, ns: str, address: str, port: int, proto: str = "tcp") -> Listener:
        """A `Listener` in `ns` (stopped by `remove`, or earlier by its `stop`)."""
        listener = Listener(ns, address, port, proto, self.directory / f"listener-{next(_counter)}")
        self.listeners.append(listener)
        return listener

    def remove(self) -> None:
        """Everything: nodes, listeners, the router, the outside, the bridges and fabric links."""
        for listener in getattr(self, "listeners", []):
            listener.stop()
        super().remove()
        netns.delete(self.router)
        netns.delete(self.outside)
        for link in self._fabric_links:
            netns.ip("link", "del", link, check=False)


def _nft(ns: str, rules: str) -> None:
    """Load an nftables ruleset into a namespace."""
    proc = subprocess.run(["nsenter", f"--net={netns.NETNS_DIR}/{ns}", "nft", "-f", "-"], input=rules, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"nft in {ns}: {proc.stderr.strip()}")


# A server that records each peer's source address, one per line, in its file (flushed), after
# writing READY once it listens. TCP: accept, read what comes, close. UDP: one line per datagram.
_LISTENER = r"""
import socket, sys
address, port, proto, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
family = socket.AF_INET6 if ":" in address else socket.AF_INET
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(family, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((address, port))
if proto == "tcp":
    s.listen(16)
out = open(path, "a", buffering=1)
out.write("READY\n")
while True:
    if proto == "tcp":
        conn, peer = s.accept()
        conn.settimeout(2)
        try:
            conn.recv(64)
        except OSError:
            pass
        conn.close()
    else:
        _, peer = s.recvfrom(65535)
    out.write(peer[0] + "\n")
"""


class Listener:
    """A TCP or UDP server in a namespace that records the source address of everything that
    reaches it (`peers()`); started at construction, stopped by `stop`."""

    def __init__(self, ns: str, address: str, port: int, proto: str, path: Path) -> None:
        self.ns, self.address, self.port, self.proto, self.path = ns, address, port, proto, path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self.proc: subprocess.Popen | None = subprocess.Popen(
            ["nsenter", f"--net={netns.NETNS_DIR}/{ns}", sys.executable, "-I", "-S", "-c", _LISTENER, address, str(port), proto, str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            wait_for(f"the {proto} listener on {address}:{port}", lambda: "READY" in path.read_text() or self.proc.poll() is not None, 10)
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            err = self.proc.stderr.read()
            self.proc = None
            raise RuntimeError(f"the {proto} listener on {address}:{port} in {ns} exited: {err[-1000:]}")

    def peers(self) -> list[str]:
        """The source addresses seen so far, in order."""
        return [line for line in self.path.read_text().splitlines() if line and line != "READY"]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


_CLIENT = r"""
import socket, sys
address, port, proto, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
payload = bytes.fromhex(sys.argv[5]) if len(sys.argv) > 5 else b"hello"
if proto == "tcp":
    with socket.create_connection((address, port), timeout=timeout) as s:
        s.sendall(payload)
else:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.sendto(payload, (address, port))
"""


def connect(ns: str, address: str, port: int, timeout: float = 3.0) -> bool:
    """A TCP connection from `ns` to address:port was established (and a few bytes sent)."""
    proc = subprocess.run(["nsenter", f"--net={netns.NETNS_DIR}/{ns}", sys.executable, "-I", "-S", "-c", _CLIENT, address, str(port), "tcp", str(timeout)],
                          capture_output=True, text=True, timeout=timeout + 20)
    return proc.returncode == 0


def send_udp(ns: str, address: str, port: int, payload: bytes) -> None:
    """One UDP datagram carrying `payload` from `ns` to address:port."""
    subprocess.run(["nsenter", f"--net={netns.NETNS_DIR}/{ns}", sys.executable, "-I", "-S", "-c", _CLIENT, address, str(port), "udp", "1", payload.hex()],
                   check=True, capture_output=True, timeout=20)


@pytest.fixture
def cluster(tmp_path, etcd_endpoint):
    """A factory-style cluster on the empty test etcd (removed afterwards, even on failure)."""
    made = Cluster(tmp_path / "cluster")
    try:
        yield made
    finally:
        made.remove()


@contextmanager
def routed_cluster(directory: Path):
    """A `RoutedCluster` for a `with` block (a module fixture shares one), removed at its end."""
    made = RoutedCluster(directory)
    try:
        yield made
    finally:
        made.remove()


__all__ = ["Cluster", "ClusterNode", "RoutedCluster", "Listener", "Subnet", "cluster", "routed_cluster", "connect", "send_udp",
           "ping", "wait_for", "in_ns", "block_of", "plugin_env", "stop_process"]
