"""The machinery of the routing benchmark (bench/routing.py): a fabric namespace with etcd, a bridge
of nodes each running calico-node and BIRD, route monitors, pingers, CPU and etcd-metrics samples.

Everything lives in namespaces this process creates (names start with `calico-test-` and end with
this process's pid, so `tests.netns.sweep_stale` removes the leftovers of a killed run): the
fabric (etcd on 198.19.0.1, the bridge 198.19.210.1/24) and one namespace per node
(198.19.210.<10 + index>) and per pod. The machine's own namespace is never touched. Nodes are
`tests.cluster_support.ClusterNode`s (the tests' calico-node wrapper) on another subnet, IPv4 only
(`IP6=none`, Calico's default), so one BGP session per pair of nodes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator

from bench.env import fabric_with_etcd_server
from tests import etcd_server, netns
from tests.cluster_support import ClusterNode, in_ns, processes_naming, wait_for
from tests.conftest import cni_env, plugin_path, run_plugin, PluginRun

SUBNET = "198.19.210"
GATEWAY = f"{SUBNET}.1"
PID = os.getpid()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_pods = itertools.count(1)
_reaped_ticks = 0  # CPU of the calico-nodes stopped (children of this process) when they were


@contextlib.contextmanager
def fabric_with_etcd() -> Iterator[etcd_server.EtcdServer]:
    """bench/env.py's fabric with etcd on 198.19.0.1:2379, entered; yields the server (its pid is
    measured too)."""
    with fabric_with_etcd_server("rbench-fabric") as (_, server):
        yield server


# --- processes' CPU -------------------------------------------------------------------------------

def _proc_ticks(pid: int | None, children: bool = False) -> int:
    """utime + stime of a process (with `children`, plus those of its waited-for children: the
    `bird -p` checks calico-node runs); 0 when it is gone."""
    if pid is None:
        return 0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU since boot, from /proc/stat's first line."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - idle, total


@dataclass
class CpuSample:
    """CPU counters at one moment: the machine's, each calico-node's, each BIRD's and etcd's."""

    when: float
    machine: tuple[int, int]
    calico_node: dict[str, int]
    bird: dict[str, int]
    etcd: int
    bench: float  # this process and its reaped children (plugin execs, pingers, calicoctl) but calico-nodes, seconds


def cpu_sample(nodes: list[BenchNode], etcd_pid: int) -> CpuSample:
    """Read every counter now."""
    return CpuSample(
        time.monotonic(),
        machine_ticks(),
        {n.nodename: n.cpu_ticks() for n in nodes},
        {n.nodename: _proc_ticks(n.bird_pid()) for n in nodes},
        _proc_ticks(etcd_pid, children=True),
        sum(os.times()[:4]) - _reaped_ticks / CLOCK_TICKS,
    )


def cpu_usage(before: CpuSample, after: CpuSample) -> dict:
    """What was used between two samples: the machine's busy share (percent of all its CPUs, and
    in vCPUs), and per process kind the total (vCPUs) and the mean and max per node (percent of
    one vCPU). A process present in only one sample (started or stopped between) counts from 0.
    `others_vcpu` is what the machine used beyond these and the benchmark itself (other work on
    the machine, the kernel's share of forwarding included)."""
    wall = max(after.when - before.when, 1e-6)
    busy = after.machine[0] - before.machine[0]
    total = max(after.machine[1] - before.machine[1], 1)
    cpus = os.cpu_count() or 1

    def per_node(a: dict[str, int], b: dict[str, int]) -> dict:
        used = [max(b.get(name, 0) - a.get(name, 0), 0) / CLOCK_TICKS / wall * 100 for name in b]
        if not used:
            return {"total_vcpu": 0.0, "mean_pct": 0.0, "max_pct": 0.0}
        return {"total_vcpu": round(sum(used) / 100, 3), "mean_pct": round(sum(used) / len(used), 2), "max_pct": round(max(used), 2)}

    calico_node = per_node(before.calico_node, after.calico_node)
    bird = per_node(before.bird, after.bird)
    etcd = max(after.etcd - before.etcd, 0) / CLOCK_TICKS / wall
    bench = max(after.bench - before.bench, 0.0) / wall
    machine = busy / total * cpus
    return {
        "seconds": round(wall, 1),
        "machine_pct": round(busy / total * 100, 1),
        "machine_vcpu": round(machine, 2),
        "calico_node": calico_node,
        "bird": bird,
        "etcd_vcpu": round(etcd, 3),
        "bench_vcpu": round(bench, 3),
        "others_vcpu": round(max(machine - calico_node["total_vcpu"] - bird["total_vcpu"] - etcd - bench, 0.0), 2),
    }


# --- etcd's own metrics ---------------------------------------------------------------------------

_METRIC = re.compile(r'^(grpc_server_started_total|grpc_server_msg_received_total|grpc_server_msg_sent_total)\{([^}]*)\} (\S+)$')
_PLAIN = ("etcd_debugging_mvcc_events_total", "etcd_mvcc_range_total", "etcd_mvcc_put_total", "etcd_mvcc_txn_total",
          "etcd_mvcc_delete_total", "etcd_network_client_grpc_received_bytes_total", "etcd_network_client_grpc_sent_bytes_total")


def etcd_metrics(endpoint: str) -> dict[str, float]:
    """etcd's counters from its /metrics page (HTTP on the client port, so reading it is no gRPC
    request): `started/<method>` (unary requests, or streams opened), `received/Watch` and
    `sent/Watch` (messages on Watch streams: create and progress requests in, events and progress
    notifications out), and a few mvcc and byte counters by their own names."""
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            if labels.get("grpc_service", "").startswith("etcdserverpb."):
                kind = {"grpc_server_started_total": "started", "grpc_server_msg_received_total": "received"}.get(m.group(1), "sent")
                key = f"{kind}/{labels['grpc_method']}"
                out[key] = out.get(key, 0.0) + float(m.group(3))
            continue
        name, _, value = line.partition(" ")
        if name in _PLAIN:
            out[name] = float(value)
    return out


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counters that moved between two readings."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


# --- kernel route events --------------------------------------------------------------------------

@dataclass(frozen=True)
class RouteEvent:
    """One line of `ip -ts monitor route`: when, added or deleted, the destination, its gateway
    (None for a blackhole or a device route) and type (unicast, blackhole...)."""

    when: float
    deleted: bool
    dst: str
    gateway: str | None
    kind: str


def parse_route_event(line: str) -> RouteEvent | None:
    """A RouteEvent from one monitor line, or None for what is no route line."""
    m = re.match(r"^\[(\S+)\] (.*)$", line.strip())
    if not m:
        return None
    try:
        when = datetime.fromisoformat(m.group(1)).timestamp()  # ip prints local time
    except ValueError:
        return None
    tokens = m.group(2).split()
    deleted = bool(tokens) and tokens[0] == "Deleted"
    if deleted:
        tokens = tokens[1:]
    kind = "unicast"
    if tokens and tokens[0] in ("blackhole", "unreachable", "prohibit", "local", "broadcast", "multicast"):
        kind = tokens.pop(0)
    if not tokens:
        return None
    dst = tokens[0] if "/" in tokens[0] or tokens[0] == "default" else f"{tokens[0]}/32"
    gateway = tokens[tokens.index("via") + 1] if "via" in tokens[:-1] else None
    return RouteEvent(when, deleted, dst, gateway, kind)


class _Stream:
    """A process whose output lines a thread reads into `events` (in order), for `_first` to wait on."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.events: list = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        raise NotImplementedError

    def _add(self, event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def _first(self, match, timeout: float):
        """The first event for which `match(event)` holds, waiting up to `timeout` s; None if none came."""
        with self._cond:
            return self._cond.wait_for(lambda: next((e for e in self.events if match(e)), None), timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class RouteMonitor(_Stream):
    """`ip -ts monitor route` in a node's namespace for the node's lifetime; events kept in order."""

    def __init__(self, ns: str) -> None:
        super().__init__(["nsenter", f"--net={netns.NETNS_DIR}/{ns}", "ip", "-ts", "monitor", "route"])

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                event = parse_route_event(line)
            except (ValueError, IndexError):  # a line of a shape not foreseen: not a route we wait for
                continue
            if event is not None:
                self._add(event)

    def wait(self, match, since: float, timeout: float) -> RouteEvent | None:
        """The first event at or after `since` (unix time) for which `match(event)` holds, waiting
        up to `timeout` seconds for it; None if none came."""
        return self._first(lambda event: event.when >= since and match(event), timeout)


class Pinger:
    """`ping -D -i 0.005` from a namespace: the kernel's receive time (unix) of its first reply.
    A reply is seen at most 5 ms after the address became reachable."""

    def __init__(self, pod_ns: str, address: str) -> None:
        self.first_reply: float | None = None
        self._got = threading.Event()
        self.proc = subprocess.Popen(["nsenter", f"--net={netns.NETNS_DIR}/{pod_ns}", "ping", "-D", "-n", "-i", "0.005", "-w", "60", address],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            m = re.match(r"^\[(\d+\.\d+)\] \d+ bytes from ", line)
            if m and self.first_reply is None:
                self.first_reply = float(m.group(1))
                self._got.set()
        self._got.set()

    def wait(self, timeout: float) -> float | None:
        """The time of the first reply (waiting up to `timeout` s), or None."""
        self._got.wait(timeout)
        return self.first_reply

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class LinkCapture:
    """ICMP echo requests to `dst` seen on a fabric link (an AF_PACKET socket in the fabric, kernel
    receive timestamps): per source address, the unix time of the first one. A request from a pod
    on node B reaches node A's link only once B's kernel routes `dst` via A (before that it goes to
    the fabric's gateway, or to a blackhole), so this is when B's route was in place, to within
    the pinger's interval, whatever A's pod is doing."""

    SO_TIMESTAMPNS = 35

    def __init__(self, link: str, dst: str) -> None:
        self.first: dict[str, float] = {}
        self._cond = threading.Condition()
        self._dst = socket.inet_aton(dst)
        self._stop = threading.Event()
        # Every protocol (ETH_P_ALL): on a bridge port only such taps see the frames (the bridge takes
        # them before per-protocol handlers); SOCK_DGRAM: data starts at the IP header.
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003))
        self.sock.bind((link, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, self.SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, address = self.sock.recvmsg(256, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[1] != 0x0800:
                continue
            source = self._source(data)
            if source is None:
                continue
            when = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == self.SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("qq", value[:16])
                    when = sec + nsec / 1e9
            with self._cond:
                self.first.setdefault(source, when)
                self._cond.notify_all()

    def _source(self, packet: bytes) -> str | None:
        """The source address of `packet` (an IPv4 packet) if it is an ICMP echo request to `dst`."""
        if len(packet) < 28 or packet[9] != 1 or packet[16:20] != self._dst:
            return None
        header = (packet[0] & 0x0F) * 4
        if len(packet) <= header or packet[header] != 8:  # ICMP echo request
            return None
        return socket.inet_ntoa(packet[12:16])

    def wait(self, src: str, timeout: float) -> float | None:
        """The time of the first request from `src`, waiting up to `timeout` s for it (a reply
        already seen means the request passed: only this reader may still be behind)."""
        with self._cond:
            self._cond.wait_for(lambda: src in self.first, timeout)
            return self.first.get(src)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class EtcdEvents(_Stream):
    """`etcdctl watch --prefix` in a process of its own: (arrival time, PUT or DELETE, key, value)
    of every event, timestamped as this process reads them (a few ms after etcd applied them, as
    for any watcher). Opened only around the measurements that need it, so the idle and busy
    etcd counters see none of it."""

    def __init__(self, endpoint: str, prefix: str) -> None:
        super().__init__(["etcdctl", f"--endpoints={endpoint}", "watch", "--prefix", prefix],
                         env={"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def _read(self) -> None:
        lines = iter(self.proc.stdout)
        for line in lines:
            op = line.strip()
            if op not in ("PUT", "DELETE"):
                continue
            when = time.time()
            key = next(lines, "").strip()
            value = next(lines, "").strip() if op == "PUT" else ""
            self._add((when, op, key, value))

    def wait(self, match, timeout: float) -> float | None:
        """The arrival time of the first event with `match(op, key, value)`, waiting up to `timeout`."""
        event = self._first(lambda event: match(*event[1:]), timeout)
        return None if event is None else event[0]


# --- the cluster ----------------------------------------------------------------------------------

class BenchNode(ClusterNode):
    """A ClusterNode on the benchmark's subnet, IPv4 only, with a route monitor and a resident pod
    (the one its pings start from)."""

    monitor: RouteMonitor | None = None
    resident: str | None = None  # the namespace of its resident pod
    resident_ip: str | None = None
    final_ticks: int = 0  # its CPU (with its children's) when it was stopped

    def cpu_ticks(self) -> int:
        """calico-node's CPU so far, with its waited children's (`bird -p`), in clock ticks."""
        return _proc_ticks(self.proc.pid, children=True) if self.proc is not None else self.final_ticks

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop calico-node as ClusterNode does, keeping its CPU so far: once reaped, its time
        would otherwise count as this process's children's."""
        if self.proc is not None:
            ticks = _proc_ticks(self.proc.pid, children=True)
            global _reaped_ticks
            _reaped_ticks += ticks
            self.final_ticks = ticks
        super().stop(sig)

    @property
    def ipv4(self) -> str:
        return f"{SUBNET}.{self.index + 10}"

    def launch(self) -> None:
        """Start calico-node in the node's namespace without waiting for it (many start at once)."""
        log = open(self.log, "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns.NETNS_DIR}/{self.ns}", plugin_path("calico-node")],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

    def watching(self) -> bool:
        """Registered, and its syncer has listed and watches (raises if calico-node exited)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"calico-node of {self.nodename} exited: {self.log.read_text()[-3000:]}")
        health = self.health() or {}
        return bool(health.get("registered") and (health.get("syncer") or {}).get("watching"))

    def remote_routes(self) -> dict[str, str]:
        """BIRD's kernel routes via another node: destination (always with its prefix length, as
        the route monitor's) -> gateway."""
        return {dst if "/" in dst else f"{dst}/32": r["gateway"] for dst, r in self.bird_routes(4).items() if r.get("gateway")}


@dataclass
class BenchCluster:
    """Nodes on one bridge in the fabric; `remove` stops and deletes everything, whatever state
    the run is in."""

    directory: Path
    endpoint: str
    journal: str
    bridge: str = "rbench0"
    node_env: dict[str, str] = field(default_factory=dict)  # more calico-node environment (e.g. the backend)
    nodes: list[BenchNode] = field(default_factory=list)
    _made_bridge: bool = False

    def __post_init__(self) -> None:
        # A MAC of its own (else the lowest port's, which changes as nodes join: see tests/cluster_support.py).
        netns.ip("link", "add", self.bridge, "address", "02:ca:11:c0:01:00", "type", "bridge")
        self._made_bridge = True
        netns.ip("addr", "add", f"{GATEWAY}/24", "dev", self.bridge)
        netns.ip("link", "set", self.bridge, "up")

    def add_nodes(self, count: int, parallel: bool = True, timeout: float = 120) -> float:
        """Create `count` node namespaces and start their calico-nodes, all at once with `parallel`
        (as a cluster's nodes boot), else each once the one before it has registered and its syncer
        watches; the seconds until every one has registered and watches."""
        start = len(self.nodes)
        for index in range(start + 1, start + count + 1):
            name = f"node-{index}"
            ns = netns.add(f"{netns.PREFIX}rb{index}-{PID}")
            node = BenchNode(name, ns, index, self.directory / name, f"rbn{index}",
                             extra_env={"IP6": "none", "ETCD_ENDPOINTS": self.endpoint, **self.node_env})
            self.nodes.append(node)
            node.directory.mkdir(parents=True, exist_ok=True)
            netns.ip("link", "add", node.fabric_link, "type", "veth", "peer", "name", "eth0", "netns", ns)
            netns.ip("link", "set", node.fabric_link, "master", self.bridge, "up")
            netns.ip("-n", ns, "addr", "add", f"{node.ipv4}/24", "dev", "eth0")
            netns.ip("-n", ns, "link", "set", "eth0", "up")
            netns.ip("-n", ns, "route", "add", "default", "via", GATEWAY)
            in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            node.monitor = RouteMonitor(ns)
        began = time.monotonic()
        added = self.nodes[start:]
        if parallel:
            for node in added:
                node.launch()
        for node in added:
            if not parallel:
                node.launch()
            wait_for(f"calico-node of {node.nodename} to register and watch (log {node.log})", node.watching, timeout, 0.1)
        return time.monotonic() - began

    def conf(self, node: BenchNode, pools: list[str] | None = None) -> dict:
        """The `calico` network configuration of `node` (through its calico-node), allocating from
        `pools` when given; warning-level logs, the run's own release journal, and the node's MTU
        file (as the installer's conflist names it: under VXLAN, pods get the encapsulated MTU)."""
        ipam = {"type": "calico-ipam", "assign_ipv6": "false"}
        if pools:
            ipam["ipv4_pools"] = pools
        return node.conf(self.endpoint, log_level="warning", release_journal_dir=self.journal, ipam=ipam,
                         mtu_file=str(node.state_dir / "mtu"))

    def cni(self, node: BenchNode, command: str, pod_ns: str, container: str, conf: dict, **cni_args: str) -> PluginRun:
        """Exec `calico` in `node`'s namespace for the container `container` in `pod_ns`."""
        env = {**cni_env(container, "eth0", f"{netns.NETNS_DIR}/{pod_ns}"), "CALICO_CNI_AGENT_SOCKET": node.socket}
        if cni_args:
            env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in cni_args.items())
        return run_plugin("calico", command, conf, env, netns_path=f"{netns.NETNS_DIR}/{node.ns}")

    def new_pod_ns(self, node: BenchNode) -> str:
        """A new pod namespace, removed with `node`."""
        pod = netns.add(f"{netns.PREFIX}rbp{next(_pods)}-{PID}")
        node.pods.append(pod)
        return pod

    def add_pod(self, node: BenchNode, pools: list[str] | None = None, **cni_args: str) -> tuple[str, str, float]:
        """A new pod on `node`: (its namespace, its IPv4 address, the seconds the ADD took)."""
        pod = self.new_pod_ns(node)
        began = time.monotonic()
        run = self.cni(node, "ADD", pod, pod.replace(netns.PREFIX, "ctr-"), self.conf(node, pools), **cni_args)
        took = time.monotonic() - began
        if run.rc != 0:
            raise RuntimeError(f"ADD on {node.nodename}: {run.stdout} {run.stderr[-2000:]}")
        return pod, run.out["ips"][0]["address"].split("/")[0], took

    def delete_node(self, node: BenchNode) -> subprocess.CompletedProcess:
        """`calicoctl delete node <name> --force` from the fabric."""
        return subprocess.run([plugin_path("calicoctl"), "delete", "node", node.nodename, "--force"], capture_output=True, text=True, timeout=60,
                              env={"ETCD_ENDPOINTS": self.endpoint, "PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def remove(self) -> list[str]:
        """Stop every calico-node, then every BIRD (found by its run directory in its command
        line), every monitor; delete every namespace, link and the bridge. Returns what is still
        running afterwards (should be nothing)."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop(signal.SIGKILL)
            node.kill_bird(signal.SIGKILL)
            if node.monitor is not None:
                with contextlib.suppress(Exception):
                    node.monitor.stop()
            for pod in node.pods:
                netns.delete(pod)
            netns.delete(node.ns)
            netns.ip("link", "del", node.fabric_link, check=False)
        if self._made_bridge:
            netns.ip("link", "del", self.bridge, check=False)
        left = []
        deadline = time.monotonic() + 5
        for node in self.nodes:
            while processes_naming(str(node.run_dir), "bird") and time.monotonic() < deadline:
                time.sleep(0.05)
            left += [f"bird {pid} of {node.nodename}" for pid in processes_naming(str(node.run_dir), "bird")]
        return left


def cluster_with_pool(endpoint: str, workdir: Path, bridge: str, pool: str) -> BenchCluster:
    """What the one-node benchmarks start from: etcd wiped, an IP pool `pool` (blocks of 26)
    stored, and a cluster on `bridge` with no node yet (`remove` it whatever happens next)."""
    from calico_cni.config import EtcdSettings
    from calico_cni.datastore.etcd import EtcdClient
    from calico_cni.datastore.store import Datastore
    from calico_cni.model.records import IPPool
    from tests.conftest import wipe

    wipe(endpoint)
    store = Datastore(EtcdClient(EtcdSettings((endpoint,))))
    try:
        assert store.commit(puts=[IPPool.new("bench", pool, 26)])
    finally:
        store.close()
    return BenchCluster(workdir / "cluster", endpoint, str(workdir / "journal"), bridge=bridge)


def bird_sessions_established(node: BenchNode) -> int:
    """How many of the node's BGP protocols are Established."""
    return node.birdc("show", "protocols").count("Established")


__all__ = ["BenchCluster", "BenchNode", "CpuSample", "EtcdEvents", "LinkCapture", "Pinger", "RouteMonitor", "bird_sessions_established", "cluster_with_pool", "cpu_sample", "cpu_usage",
           "etcd_metrics", "fabric_with_etcd", "metrics_delta", "parse_route_event", "wait_for"]
