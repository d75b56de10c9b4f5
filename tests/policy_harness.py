"""Network policy with real traffic (issue 18): one node running calico-node, pods made through the
real plugin (ADD served by calico-node), policy written through the real calicoctl, and probes
that tell whether a packet got through.

`PolicyNode` is the node (a `Cluster` of one `ClusterNode`, tests/cluster_support.py) with one IPv4
and one IPv6 pool (from 198.18.0.0/16 and fd00:198:18::/48, created by `policy_node`). Every pod
(`PolicyNode.pod`) runs a `Server` on every port of `TCP_PORTS` and `UDP_PORTS` (both families):
TCP echoes what it reads, UDP answers each datagram with itself, and every peer is recorded, so a
test can both see a reply and count what reached a pod. Probes (`tcp`, `udp`, `ping`) answer True
when a reply came back within a short timeout (PROBE_TIMEOUT): a dropped packet is a False, a TCP
reset (nothing listening: a broken test, not a policy) raises.

Enforcement arrives through the watch after `calicoctl apply`: `wait_enforced(probe, expected)`
polls the probe until it gives the expected answer within a bounded time and then checks that it
keeps giving it (no flapping); never a blind sleep.

`Scope` (the `pn` fixture of tests/policy/conftest.py) is one test's view of the module's node: the
pods it made and the resources it applied are removed at its end, even when it fails, so tests
share one node and stay independent.
"""

from __future__ import annotations

import ipaddress
import contextvars
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

from tests import netns
from tests.cluster_support import Cluster, ClusterNode, in_ns, wait_for
from tests.conftest import plugin_path

POOL_V4, POOL_V6 = "198.18.70.0/24", "fd00:198:18:70::/112"
TCP_PORTS = (80, 443, 5000, 5001, 5002, 8080)
UDP_PORTS = (53, 5000, 5001, 8080)
PROBE_TIMEOUT = 0.5  # a reply between namespaces on one machine takes well under a millisecond
# A probe expected to answer waits longer: on a loaded (shared) machine a late reply must not read
# as a drop. A probe expected to be dropped keeps PROBE_TIMEOUT (its whole wait is the cost).
ALLOWED_TIMEOUT = 3.0
ENFORCE_TIMEOUT = 5.0  # from `calicoctl apply` to the kernel, through the watch
HOLD = 0.3  # how long an answer must stay once reached (at least two more probes)
NETWORK = "net1"  # the network of the pods (and the profile they name)
API = "projectcalico.org/v3"
_ids = itertools.count(1)


# The timeout of a probe called without one: PROBE_TIMEOUT, or ALLOWED_TIMEOUT while `wait_enforced`
# checks that an expected answer holds (its probes are lambdas, so the timeout travels this way).
_default_timeout: contextvars.ContextVar[float] = contextvars.ContextVar("probe_timeout", default=PROBE_TIMEOUT)


def _timeout(timeout: float | None) -> float:
    return _default_timeout.get() if timeout is None else timeout


class ProbeError(AssertionError):
    """A probe could not be made (nothing listening, a bad address): the test is wrong, not the policy."""


# The pods' server: every TCP and UDP port given, on :: (both families), TCP echoing, UDP answering
# each datagram with itself; one line "<proto> <port> <peer>" per TCP connection or datagram.
_SERVER = r"""
import selectors, socket, sys
tcp = [int(p) for p in sys.argv[1].split(",") if p]
udp = [int(p) for p in sys.argv[2].split(",") if p]
out = open(sys.argv[3], "a", buffering=1)
sel = selectors.DefaultSelector()
def bound(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.setblocking(False)
    return s
for port in tcp:
    s = bound(socket.SOCK_STREAM, port)
    s.listen(64)
    sel.register(s, selectors.EVENT_READ, ("accept", port))
for port in udp:
    sel.register(bound(socket.SOCK_DGRAM, port), selectors.EVENT_READ, ("udp", port))
def peer(address):
    return address[7:] if address.startswith("::ffff:") else address
out.write("READY\n")
while True:
    for key, _ in sel.select():
        kind, port = key.data
        s = key.fileobj
        try:
            if kind == "accept":
                conn, address = s.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, ("conn", port))
                out.write(f"tcp {port} {peer(address[0])}\n")
            elif kind == "udp":
                data, address = s.recvfrom(65535)
                out.write(f"udp {port} {peer(address[0])}\n")
                s.sendto(data, address)
            else:
                data = s.recv(65535)
                if data:
                    s.sendall(data)
                else:
                    sel.unregister(s)
                    s.close()
        except OSError:
            if kind == "conn":
                sel.unregister(s)
                s.close()
"""


class Server:
    """The echo server of a namespace (`_SERVER`), started at construction, stopped by `stop`."""

    def __init__(self, ns: str, path: Path, tcp: tuple[int, ...] = TCP_PORTS, udp: tuple[int, ...] = UDP_PORTS) -> None:
        self.ns, self.path = ns, path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self.proc: subprocess.Popen | None = subprocess.Popen(
            [
                "nsenter",
                f"--net={netns.NETNS_DIR}/{ns}",
                sys.executable,
                "-I",
                "-S",
                "-c",
                _SERVER,
                ",".join(map(str, tcp)),
                ",".join(map(str, udp)),
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            wait_for(f"the server in {ns}", lambda: "READY" in path.read_text() or self.proc.poll() is not None, 10, 0.02)
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            err = self.proc.stderr.read()
            self.proc = None
            raise RuntimeError(f"the server in {ns} exited: {err[-1000:]}")

    def seen(self, proto: str | None = None, port: int | None = None, source: str | None = None) -> int:
        """How many TCP connections or UDP datagrams reached the server (of a protocol, port, source)."""
        count = 0
        for line in self.path.read_text().splitlines():
            if line == "READY" or not line:
                continue
            p, n, peer = line.split(" ", 2)
            if (proto is None or p == proto) and (port is None or int(n) == port) and (source is None or same_address(peer, source)):
                count += 1
        return count

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def same_address(a: str, b: str) -> bool:
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


@dataclass
class Pod:
    """A pod made through the plugin: its namespace, endpoint, addresses and server."""

    ns: str
    name: str  # the WorkloadEndpoint's name
    namespace: str  # the WorkloadEndpoint's namespace
    interface: str  # the host end of its veth (cali...)
    v4: str
    v6: str | None
    server: Server
    cni_args: dict[str, str] = field(default_factory=dict)
    conf: dict = field(default_factory=dict)

    def address(self, v6: bool = False) -> str:
        if v6:
            assert self.v6, f"{self.name} has no IPv6 address"
            return self.v6
        return self.v4


Target = "Pod | str"


def _address(target: Pod | str, v6: bool) -> str:
    return target.address(v6) if isinstance(target, Pod) else target


def _ns(source: Pod | str) -> str:
    return source.ns if isinstance(source, Pod) else source


@contextmanager
def socket_in(ns: str, family: int, kind: int) -> Iterator[socket.socket]:
    """A socket created in namespace `ns` (it stays there after the thread comes back)."""
    with netns.inside(ns):
        s = socket.socket(family, kind)
    try:
        yield s
    finally:
        s.close()


def _bind(s: socket.socket, family: int, bind: str | None, bind_port: int) -> None:
    if bind or bind_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((bind or ("::" if family == socket.AF_INET6 else "0.0.0.0"), bind_port))


def tcp(source: Pod | str, target: Pod | str, port: int, v6: bool = False, timeout: float | None = None, bind: str | None = None, bind_port: int = 0) -> bool:
    """A TCP connection from `source` (a pod or a namespace) to `target` (a pod or an address) was
    established and echoed a few bytes back within `timeout` (PROBE_TIMEOUT unless given; from the
    source address `bind` and port `bind_port` when given)."""
    timeout = _timeout(timeout)
    address = _address(target, v6)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket_in(_ns(source), family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        _bind(s, family, bind, bind_port)
        try:
            s.connect((address, port))
        except ConnectionRefusedError as exc:
            raise ProbeError(f"nothing listens on {address}:{port} (TCP)") from exc
        except (TimeoutError, socket.timeout, OSError):
            return False
        try:
            s.sendall(b"probe")
            return s.recv(16) == b"probe"
        except (TimeoutError, socket.timeout, OSError):
            return False


def udp(source: Pod | str, target: Pod | str, port: int, v6: bool = False, timeout: float | None = None, bind: str | None = None, bind_port: int = 0) -> bool:
    """A UDP datagram from `source` to `target` was answered within `timeout`."""
    timeout = _timeout(timeout)
    address = _address(target, v6)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket_in(_ns(source), family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        _bind(s, family, bind, bind_port)
        payload = f"probe-{next(_ids)}".encode()
        try:
            s.sendto(payload, (address, port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                data, _ = s.recvfrom(4096)
                if data == payload:
                    return True
        except ConnectionRefusedError as exc:
            raise ProbeError(f"nothing listens on {address}:{port} (UDP)") from exc
        except (TimeoutError, socket.timeout, OSError):
            return False
        return False


def ping(source: Pod | str, target: Pod | str, v6: bool = False, timeout: float | None = None) -> bool:
    """One echo request from `source` to `target` answered within `timeout`."""
    timeout = _timeout(timeout)
    address = _address(target, v6)
    six = ["-6"] if ":" in address else ["-4"]
    wait = f"{timeout:g}"
    proc = subprocess.run(
        ["ip", "netns", "exec", _ns(source), "ping", *six, "-n", "-c", "1", "-W", wait, "-q", address], capture_output=True, text=True, timeout=30
    )
    return proc.returncode == 0


class Probe:
    """A probe to run later (`expect` runs several at once): `probe(tcp, a, b, 80, v6=True)`."""

    def __init__(self, fn: Callable[..., bool], *args, **kwargs) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self, timeout: float | None = None) -> bool:
        """The probe's answer (with `timeout` unless the probe was given its own)."""
        kwargs = self.kwargs if timeout is None or "timeout" in self.kwargs else {**self.kwargs, "timeout": timeout}
        return self.fn(*self.args, **kwargs)

    def __str__(self) -> str:
        def name(x) -> str:
            return f"pod {x.name}" if isinstance(x, Pod) else str(x)

        extra = "".join(f" {k}={v}" for k, v in self.kwargs.items())
        return f"{self.fn.__name__} {' '.join(name(a) for a in self.args)}{extra}"


probe = Probe


def expect(allowed: Iterable[Probe] = (), denied: Iterable[Probe] = ()) -> None:
    """Run the probes concurrently (a dropped packet costs one timeout for all of them) and assert
    that every `allowed` one got an answer (within ALLOWED_TIMEOUT) and no `denied` one did (within
    PROBE_TIMEOUT), naming each that did not."""
    cases = [(p, True) for p in allowed] + [(p, False) for p in denied]
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(cases)))) as pool:
        answers = list(pool.map(lambda case: case[0](ALLOWED_TIMEOUT if case[1] else PROBE_TIMEOUT), cases))
    wrong = [f"{p}: {'answered' if got else 'no answer'} (expected {'allowed' if want else 'denied'})" for (p, want), got in zip(cases, answers) if got != want]
    assert not wrong, "; ".join(wrong)


def wait_enforced(probe: Callable[[], bool], expected: bool, what: str = "the probe", timeout: float = ENFORCE_TIMEOUT, hold: float = HOLD) -> float:
    """Poll `probe` until it answers `expected` (within `timeout`), then check it keeps answering it
    for `hold` seconds (at least once more). While holding an expected answer, the probes' own
    timeout is ALLOWED_TIMEOUT (a late reply is no flap); an expected drop keeps PROBE_TIMEOUT.
    Returns the seconds it took to reach the answer."""
    start = time.monotonic()
    deadline = start + timeout
    answer = None
    while True:
        answer = probe()
        if answer == expected:
            break
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: still {answer} after {timeout:g}s (expected {expected})")
        time.sleep(0.05)
    took = time.monotonic() - start
    until = time.monotonic() + hold
    checks = 0
    token = _default_timeout.set(ALLOWED_TIMEOUT if expected else PROBE_TIMEOUT)
    try:
        while checks < 1 or time.monotonic() < until:
            again = probe()
            assert again == expected, f"{what}: flapped back to {again} after reaching {expected}"
            checks += 1
            if time.monotonic() < until:
                time.sleep(0.1)
    finally:
        _default_timeout.reset(token)
    return took


def calicoctl(endpoint: str, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """The installed calicoctl against `endpoint`."""
    proc = subprocess.run(
        [plugin_path("calicoctl"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={"ETCD_ENDPOINTS": endpoint, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert not check or proc.returncode == 0, f"calicoctl {' '.join(args)}: rc={proc.returncode} {proc.stdout} {proc.stderr}"
    return proc


def document(kind: str, name: str, spec: dict, namespace: str | None = None, labels: dict | None = None) -> dict:
    """A v3 document."""
    meta: dict = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec}


class PolicyNode:
    """The module's node: calico-node enforcing policy, its pools; pods and resources are made
    through `Scope`."""

    def __init__(self, cluster: Cluster, node: ClusterNode, endpoint: str, directory: Path, pool_v4: str = POOL_V4, pool_v6: str = POOL_V6) -> None:
        self.cluster, self.node, self.endpoint, self.directory = cluster, node, endpoint, directory
        self.pool_v4, self.pool_v6 = pool_v4, pool_v6
        self.pods: list[Pod] = []

    @property
    def marker(self) -> Path:
        """The file calico-node writes once it enforces policy."""
        return Path(self.node.socket).parent / "policy-enforced"

    def ctl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return calicoctl(self.endpoint, *args, stdin=stdin, check=check)

    def conf(self, v6: bool = True, **extra) -> dict:
        """The pods' network configuration (through the node's calico-node)."""
        conf = self.node.conf(self.endpoint, ipv6=v6, **extra)
        conf["ipam"]["ipv4_pools"] = [self.pool_v4]
        if v6:
            conf["ipam"]["ipv6_pools"] = [self.pool_v6]
        return conf

    def add_pod(
        self, v6: bool = True, labels: dict[str, str] | None = None, conf: dict | None = None, server: bool = True, ns: str | None = None, **cni_args: str
    ) -> Pod:
        """A pod through the plugin's ADD (labels from the network config's `args.cni.labels`),
        with its server running (unless `server` is False: then `pod.server` is None), in a new
        namespace or in `ns` (made by the caller, removed with the pod)."""
        config = self.conf(v6, **(conf or {}))
        if labels:
            config.setdefault("args", {}).setdefault("cni", {})["labels"] = [{"key": k, "value": v} for k, v in labels.items()]
        ns = ns or netns.add(f"{netns.PREFIX}pp{next(_ids)}-{os.getpid()}")
        self.node.pods.append(ns)
        # The server starts before ADD (it binds the wildcard address), so it counts whatever
        # reaches the pod from its very first packet.
        srv = None
        try:
            srv = Server(ns, self.directory / f"server-{ns}") if server else None
            run = self.node.plugin("ADD", config, ns, **cni_args)
            if run.rc != 0:
                raise AssertionError(f"ADD: rc={run.rc} {run.stdout} {run.stderr[-2000:]}")
        except BaseException:
            # Nothing of a failed ADD stays: the server stops (even when ADD raised), the
            # namespace goes.
            if srv is not None:
                srv.stop()
            self.node.pods.remove(ns)
            netns.delete(ns)
            raise
        ips = [ip["address"].split("/")[0] for ip in run.out["ips"]]
        v4 = next(a for a in ips if ":" not in a)
        v6a = next((a for a in ips if ":" in a), None)
        interface = next(i["name"] for i in run.out["interfaces"] if "sandbox" not in i)
        wep = self.endpoint_of(interface)
        pod = Pod(ns, wep["metadata"]["name"], wep["metadata"]["namespace"], interface, v4, v6a, srv, dict(cni_args), config)
        self.pods.append(pod)
        return pod

    def endpoint_of(self, interface: str) -> dict:
        """The WorkloadEndpoint whose interface is `interface`."""
        weps = json.loads(self.ctl("get", "workloadendpoints", "-A", "-o", "json").stdout)
        items = weps.get("items", [weps]) if "items" in weps or weps.get("kind", "").endswith("List") else [weps]
        for wep in items:
            if wep.get("spec", {}).get("interfaceName") == interface:
                return wep
        raise AssertionError(f"no WorkloadEndpoint with interface {interface}: {[w.get('metadata', {}).get('name') for w in items]}")

    def wep(self, pod: Pod) -> dict:
        return json.loads(self.ctl("get", "workloadendpoint", pod.name, "-n", pod.namespace, "-o", "json").stdout)

    def remove_pod(self, pod: Pod) -> None:
        """The plugin's DEL, then the pod's server and namespace go."""
        if pod.server is not None:
            pod.server.stop()
        run = self.node.plugin("DEL", pod.conf, pod.ns, **pod.cni_args)
        netns.delete(pod.ns)
        if pod.ns in self.node.pods:
            self.node.pods.remove(pod.ns)
        if pod in self.pods:
            self.pods.remove(pod)
        assert run.rc == 0, f"DEL: rc={run.rc} {run.stdout} {run.stderr[-2000:]}"

    # --- the node's kernel --------------------------------------------------------------------

    def nft(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return in_ns(self.node.ns, "nft", *args, check=check)

    def chains(self, family: str = "ip") -> set[str]:
        """The chains of the daemon's table of `family`."""
        out = json.loads(self.nft("-j", "list", "table", family, "calico").stdout)
        return {item["chain"]["name"] for item in out["nftables"] if "chain" in item}

    def chain_counters(self, chain: str, family: str = "ip") -> list[tuple[int, str]]:
        """(packets, rule text) of every rule with a counter in `chain`."""
        out = json.loads(self.nft("-j", "list", "chain", family, "calico", chain).stdout)
        found = []
        for item in out["nftables"]:
            rule = item.get("rule")
            if not rule:
                continue
            packets = next((e["counter"]["packets"] for e in rule["expr"] if isinstance(e, dict) and "counter" in e), None)
            if packets is not None:
                found.append((packets, json.dumps(rule["expr"])))
        return found

    def conntrack(self, address: str) -> list[str]:
        """The node's conntrack entries with `address` as original source or destination."""
        family = ["-f", "ipv6"] if ":" in address else []
        lines = []
        for flag in ("-s", "-d"):
            proc = in_ns(self.node.ns, "conntrack", "-L", *family, flag, address, check=False)
            lines += [line for line in proc.stdout.splitlines() if line.strip()]
        return lines

    def log_text(self) -> str:
        return self.node.log.read_text(errors="replace")

    # --- calico-node caught up ----------------------------------------------------------------

    def etcd_revision(self) -> int:
        """etcd's current revision (the header of a read): after a write, at least that write's."""
        client = etcd_client(self.endpoint)
        try:
            return client.get_response("/calico/").header.revision
        finally:
            client.close()

    def programmed_revision(self) -> int:
        """The revision calico-node last programmed its tables from (its rules part's health
        detail), or -1 (no answer, or the rules part not ready)."""
        found = re.search(r"nftables tables programmed from revision (\d+)", json.dumps(self.node.health() or {}))
        return int(found.group(1)) if found else -1

    def wait_programmed(self, timeout: float = 20.0) -> None:
        """Wait until calico-node programmed its tables from etcd's current revision or a later one:
        everything written before the call is in the kernel. A test calls it after each write so a
        wait for an answer that was already true before the change cannot pass before the change
        arrived (the watch's header revision covers writes to any key, so the rules part's
        revision reaches the current one at its next pass at the latest)."""
        wanted = self.etcd_revision()
        try:
            wait_for(f"calico-node to program revision {wanted}", lambda: self.programmed_revision() >= wanted, timeout, 0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (last programmed: {self.programmed_revision()})\ncalico-node's log, last lines:\n{self.log_text()[-3000:]}") from None


class Scope:
    """One test's use of the module's `PolicyNode`: what it makes is removed by `close`."""

    def __init__(self, node: PolicyNode) -> None:
        self.pn = node
        self.node = node.node
        self.endpoint = node.endpoint
        self.pods: list[Pod] = []
        self.applied: list[tuple[str, str, str | None]] = []  # (kind, name, namespace)
        self.servers: list[Server] = []
        self.cleanups: list[Callable[[], None]] = []

    # pods
    def pod(self, labels: dict[str, str] | None = None, v6: bool = True, **kwargs) -> Pod:
        """A pod of this test (removed at its end); `labels` from `args.cni.labels`."""
        made = self.pn.add_pod(v6=v6, labels=labels, **kwargs)
        self.pods.append(made)
        return made

    def k8s_pod(self, namespace: str, name: str | None = None, labels: dict[str, str] | None = None, v6: bool = True, conf: dict | None = None) -> Pod:
        """A Kubernetes pod (K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS): an endpoint of `namespace`
        (`conf` {"policy": {"type": "k8s"}} names the namespace's profile `kns.<namespace>`)."""
        name = name or f"pod{next(_ids)}"
        return self.pod(labels, v6, conf=conf, K8S_POD_NAMESPACE=namespace, K8S_POD_NAME=name, K8S_POD_INFRA_CONTAINER_ID=f"infra{next(_ids)}")

    def server(self, ns: str, tcp_ports: tuple[int, ...] = TCP_PORTS, udp_ports: tuple[int, ...] = UDP_PORTS) -> Server:
        """A server in any namespace (the node's, say), stopped at the end."""
        srv = Server(ns, self.pn.directory / f"server-{ns}-{next(_ids)}", tcp_ports, udp_ports)
        self.servers.append(srv)
        return srv

    # resources
    def apply(self, doc: dict | str) -> subprocess.CompletedProcess:
        """`calicoctl apply` of a document (a dict, or YAML/JSON text of one or more documents or a
        v3 list); every document is deleted at the end (recorded before the apply, so a partial
        apply is cleaned too). Returns once calico-node programmed what was written."""
        import yaml

        text = json.dumps(doc) if isinstance(doc, dict) else doc
        docs = [doc] if isinstance(doc, dict) else [d for d in yaml.safe_load_all(doc) if d]
        for item in [i for d in docs for i in (d.get("items") or [] if d.get("kind", "").endswith("List") else [d])]:
            meta = item["metadata"]
            ref = (item["kind"], meta["name"], meta.get("namespace"))
            if ref not in self.applied:
                self.applied.append(ref)
        proc = self.pn.ctl("apply", "-f", "-", stdin=text)
        self.pn.wait_programmed()
        return proc

    def policy(self, name: str, spec: dict, namespace: str | None = None, tier: str | None = None) -> dict:
        """Apply a GlobalNetworkPolicy (or a NetworkPolicy with `namespace`); `tier` prefixes the name."""
        full = f"{tier}.{name}" if tier and tier != "default" else name
        if tier:
            spec = {"tier": tier, **spec}
        doc = document("NetworkPolicy" if namespace else "GlobalNetworkPolicy", full, spec, namespace)
        self.apply(doc)
        return doc

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.pn.ctl("delete", kind, name, *ns)
        ref = (kind, name, namespace)
        if ref in self.applied:
            self.applied.remove(ref)
        self.pn.wait_programmed()

    def label(self, pod: Pod, key: str, value: str | None, check: bool = True) -> None:
        """`calicoctl label workloadendpoint` (value None removes the label); returns once
        calico-node programmed the change."""
        if value is None:
            self.pn.ctl("label", "workloadendpoint", pod.name, key, "--remove", "-n", pod.namespace, check=check)
        else:
            self.pn.ctl("label", "workloadendpoint", pod.name, f"{key}={value}", "--overwrite", "-n", pod.namespace)
        self.pn.wait_programmed()

    def policy_chain(self, kind: str, name: str, direction: str, namespace: str | None = None) -> str:
        """The name of a stored policy's chain (nft_policy.policy_chain of the record in etcd)."""
        from calico_cni.node.nft_policy import policy_chain
        from calico_cni.node.policy_model import read_record

        key, value, revision = self._stored(kind, name, namespace)
        record = read_record(key, _Stored(value, revision))
        return policy_chain(record, direction)

    def _stored(self, kind: str, name: str, namespace: str | None) -> tuple[str, bytes, int]:

        plural = {"GlobalNetworkPolicy": "globalnetworkpolicies", "NetworkPolicy": "networkpolicies"}[kind]
        stored_name = name if "." in name else f"default.{name}"
        key = f"/calico/resources/v3/projectcalico.org/{plural}/" + (f"{namespace}/" if namespace else "") + stored_name
        client = etcd_client(self.endpoint)
        try:
            value, meta = client.get(key)
        finally:
            client.close()
        assert value is not None, f"{key} is not in etcd"
        return key, value, getattr(meta, "mod_revision", 1)

    def edit_endpoint(self, pod: Pod, change: Callable[[dict], None]) -> None:
        """`calicoctl replace` of the pod's WorkloadEndpoint after `change(document)` (ports,
        profiles); returns once calico-node programmed the change."""
        doc = self.pn.wep(pod)
        change(doc)
        self.pn.ctl("replace", "-f", "-", stdin=json.dumps(doc))
        self.pn.wait_programmed()

    def chains_gone(self, names: set[str], timeout: float = 10.0) -> None:
        """Wait until none of the chains `names` is in either of the daemon's tables."""
        wait_for(f"the chains {sorted(names)} to leave the tables", lambda: not (names & (self.pn.chains("ip") | self.pn.chains("ip6"))), timeout)

    def _policy_chains(self, kind: str, name: str, namespace: str | None) -> set[str]:
        """The chains of an applied policy or profile (empty when it cannot be read)."""
        from calico_cni.node.nft_policy import profile_chain
        from calico_cni.node.policy_model import EGRESS, INGRESS

        try:
            if kind == "Profile":
                return {profile_chain(name, d) for d in (INGRESS, EGRESS)}
            if kind in ("GlobalNetworkPolicy", "NetworkPolicy"):
                return {self.policy_chain(kind, name, d, namespace) for d in (INGRESS, EGRESS)}
        except Exception:  # noqa: BLE001 - no barrier for a record that is not there
            pass
        return set()

    def close(self) -> None:
        """Remove what the test made: resources (policies first), pods, servers. Waits until the
        chains of the policies and profiles it deleted left the kernel, so the next test starts
        from the module's baseline rather than racing the watch."""
        errors = []
        gone: set[str] = set()
        for kind, name, namespace in self.applied:
            gone |= self._policy_chains(kind, name, namespace)
        for kind, name, namespace in reversed(self.applied):
            ns = ["-n", namespace] if namespace else []
            try:
                proc = self.pn.ctl("delete", kind, name, *ns, check=False)
            except Exception as exc:  # noqa: BLE001 - one failed delete (a timeout) must not keep the rest
                errors.append(f"delete {kind} {name}: {exc!r}")
                continue
            if proc.returncode != 0 and "not found" not in (proc.stdout + proc.stderr).lower():
                errors.append(f"delete {kind} {name}: {proc.stderr.strip()}")
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                errors.append(repr(exc))
        for pod in reversed(self.pods):
            if pod in self.pn.pods:
                try:
                    self.pn.remove_pod(pod)
                except Exception as exc:  # noqa: BLE001 - cleanup goes on
                    errors.append(repr(exc))
        for srv in self.servers:
            srv.stop()
        try:
            # The next test starts from what this one left, all of it in the kernel.
            self.pn.wait_programmed()
        except AssertionError as exc:
            errors.append(str(exc))
        if gone:
            try:
                self.chains_gone(gone)
            except AssertionError as exc:
                errors.append(str(exc))
        assert not errors, f"clean-up: {errors}"


@dataclass
class _Stored:
    value: bytes
    mod_revision: int


def etcd_client(endpoint: str):
    """A raw etcd client (pyetcd) on the test etcd: for records calicoctl would refuse."""
    import pyetcd

    host, port = endpoint.split("://")[1].rsplit(":", 1)
    return pyetcd.client(host=host, port=int(port), timeout=5)


def apply_pool(endpoint: str, name: str, cidr: str, block_size: int) -> None:
    calicoctl(
        endpoint,
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            document(
                "IPPool",
                name,
                {"cidr": cidr, "blockSize": block_size, "ipipMode": "Never", "vxlanMode": "Never", "natOutgoing": False, "nodeSelector": "all()"},
            )
        ),
    )


@contextmanager
def policy_node(endpoint: str, directory: Path, pool_v4: str = POOL_V4, pool_v6: str = POOL_V6) -> Iterator[PolicyNode]:
    """One node enforcing policy with its pools (on an etcd the caller emptied), removed at the end."""
    apply_pool(endpoint, "policy-v4", pool_v4, 26)
    apply_pool(endpoint, "policy-v6", pool_v6, 122)
    cluster = Cluster(directory / "cluster")
    try:
        node = cluster.add_node()
        made = PolicyNode(cluster, node, endpoint, directory, pool_v4, pool_v6)
        try:
            wait_for("calico-node to enforce policy (its marker)", lambda: made.marker.exists(), 60)
        except AssertionError as exc:
            # Say why: calico-node's own account (its log is gone with the test's directory).
            raise AssertionError(f"{exc}\ncalico-node's log, last lines:\n{made.log_text()[-4000:]}") from None
        yield made
    finally:
        for pod in list(getattr(locals().get("made"), "pods", [])):
            if pod.server is not None:
                pod.server.stop()
        cluster.remove()


__all__ = [
    "POOL_V4",
    "POOL_V6",
    "TCP_PORTS",
    "UDP_PORTS",
    "PROBE_TIMEOUT",
    "ENFORCE_TIMEOUT",
    "ALLOWED_TIMEOUT",
    "NETWORK",
    "Pod",
    "PolicyNode",
    "ProbeError",
    "Scope",
    "Server",
    "calicoctl",
    "document",
    "etcd_client",
    "expect",
    "Probe",
    "probe",
    "ping",
    "policy_node",
    "same_address",
    "socket_in",
    "tcp",
    "udp",
    "wait_enforced",
]
