"""Helpers for tests through real CNI clients: node namespaces on the fabric, cnitool, podman, traffic.

Everything here runs a tool as a subprocess; a node's tools run inside the node's namespace through
`nsenter --net=<path>` (never `ip netns exec`, which remounts /sys and breaks runc). The test session
itself stays in the fabric namespace (tests/conftest.py). Names of namespaces and containers start
with `calico-test-` and end with `-<pytest pid>`, so a killed run's leftovers can be swept.

Layout of a node (test addresses come from 198.19.0.0/16, never a pool's range, so no pool can hand
out a node's own address):

    fabric namespace                        node namespace calico-test-node<N>-<pid>
    lo 198.19.0.1/32 (etcd listens here)    lo 198.19.255.<N>/32 (the node address)
    fab<N> ---------------- veth ---------- uplink: default via 198.19.0.1 onlink src <node address>
    route <node address>/32 dev fab<N>      net.ipv4.conf.uplink.forwarding = 1
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from tests import netns
from tests.conftest import BIN_DIR, FABRIC_ADDRESS, plugin_env
from tests.processes import stop_process

PID = os.getpid()
REFERENCE_PLUGIN_DIR = "/usr/lib/cni"
# Plugins are looked up in the venv first (calico, calico-ipam), then Debian's reference plugins.
PLUGIN_DIRS: tuple[str, ...] = (str(BIN_DIR), REFERENCE_PLUGIN_DIR)
DEFAULT_CNI_PATH = os.pathsep.join(PLUGIN_DIRS)
NODE_ADDRESS_FORMAT = "198.19.255.{}"  # node N gets 198.19.255.N (outside every test pool)
LIBCNI_CACHE_DIR = "/var/lib/cni"  # cnitool and podman keep each attachment's result there
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
# runc on these machines (cgroup hybrid layout) needs these, see cni-protocol.md.
PODMAN_ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
PODMAN_GLOBAL = ("--runtime", "runc")

_node_numbers = itertools.count(1)
_names = itertools.count(1)


def unique_name(tag: str) -> str:
    """A name for something a test creates: calico-test-<tag><n>-<pid>."""
    return f"{netns.PREFIX}{tag}{next(_names)}-{PID}"


# --- running tools --------------------------------------------------------------------------------


@dataclass
class ClientRun:
    """What a client or tool did: its command line, exit code and output."""

    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"`{' '.join(self.argv)}` exited {self.rc}\n"
            f"--- stdout\n{self.stdout.strip()}\n--- stderr\n{self.stderr.strip()}"
        )

    def ok(self) -> "ClientRun":
        """Fail the test (showing the command and its output) unless it exited 0; returns self."""
        if self.rc != 0:
            raise AssertionError(self.describe())
        return self

    def json(self):
        """`ok()`, then stdout parsed as JSON (fails the test, with the output, if it is not JSON)."""
        self.ok()
        try:
            return json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError(f"not JSON ({exc}): {self.describe()}") from None


def in_netns(netns_path: str | None, argv: Sequence[str]) -> list[str]:
    """The command line that runs argv inside a network namespace (None: the current one)."""
    if netns_path is None:
        return list(argv)
    return ["nsenter", f"--net={netns_path}", *argv]


def run_in(
    netns_path: str | None,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> ClientRun:
    """Run argv inside a network namespace and wait for it; never raises on a non-zero exit."""
    full = in_netns(netns_path, argv)
    proc = subprocess.run(full, env=env, input=input, capture_output=True, text=True, timeout=timeout)
    return ClientRun(full, proc.returncode, proc.stdout, proc.stderr)


def popen_in(netns_path: str | None, argv: Sequence[str], *, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start argv inside a network namespace without waiting (a daemon); its output is dropped."""
    return subprocess.Popen(in_netns(netns_path, argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sysctl(netns_path: str, key: str, value: str | int) -> None:
    """Set a sysctl inside a network namespace (keys under net.* are per namespace)."""
    run_in(netns_path, ["sysctl", "-q", "-w", f"{key}={value}"]).ok()


def kill_netns_processes(name: str) -> None:
    """Kill every process left in a namespace a test created (never this test process)."""
    pids = netns.ip("netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        if int(pid) == PID:
            continue
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_netns(name: str) -> None:
    """Kill what runs in a test namespace, then delete it (missing is fine)."""
    if os.path.exists(f"{netns.NETNS_DIR}/{name}"):
        kill_netns_processes(name)
    netns.delete(name)


# --- namespaces -----------------------------------------------------------------------------------


@dataclass
class Node:
    """A node: a namespace with its address on lo and an uplink veth to the fabric namespace."""

    name: str
    number: int
    address: str
    fabric: str
    fabric_link: str
    uplink: str = "uplink"
    fabric_routes: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"{netns.NETNS_DIR}/{self.name}"

    def run(self, argv: Sequence[str], **kwargs) -> ClientRun:
        """Run a command inside the node namespace."""
        return run_in(self.path, argv, **kwargs)

    def ip(self, *args: str) -> str:
        """`ip -n <node> ...`; returns stdout, raises when it fails."""
        return netns.ip("-n", self.name, *args).stdout

    def route_from_fabric(self, cidr: str) -> None:
        """Route a prefix (say a pod pool) from the fabric namespace to this node."""
        netns.ip("-n", self.fabric, "route", "replace", cidr, "via", self.address, "dev", self.fabric_link, "onlink")
        self.fabric_routes.append(cidr)


def create_node(fabric: str, *, ipv6_forwarding: bool = False) -> Node:
    """Create a node namespace connected to the fabric namespace (see the module docstring).

    The node's uplink forwards IPv4 (traffic from the fabric to pods on this node is forwarded);
    nothing else is enabled: the plugin under test sets up the pods' side. `ipv6_forwarding` sets
    net.ipv6.conf.all.forwarding=1, which pod-to-pod IPv6 through the node needs (testing-here.md).
    """
    number = next(_node_numbers)
    if number > 254:
        raise RuntimeError("more than 254 nodes in one test session")
    name = f"{netns.PREFIX}node{number}-{PID}"
    node = Node(name, number, NODE_ADDRESS_FORMAT.format(number), fabric, f"fab{number}")
    netns.add(name)
    try:
        node.ip("addr", "add", f"{node.address}/32", "dev", "lo")
        netns.ip("-n", fabric, "link", "add", node.fabric_link, "type", "veth", "peer", "name", node.uplink, "netns", name)
        netns.ip("-n", fabric, "link", "set", node.fabric_link, "up")
        node.ip("link", "set", node.uplink, "up")
        node.ip("route", "add", "default", "via", FABRIC_ADDRESS, "dev", node.uplink, "onlink", "src", node.address)
        netns.ip("-n", fabric, "route", "add", f"{node.address}/32", "dev", node.fabric_link, "src", FABRIC_ADDRESS)
        fabric_path = f"{netns.NETNS_DIR}/{fabric}"
        # Node to node (and pod to remote pod) traffic is forwarded by the fabric.
        sysctl(fabric_path, "net.ipv4.ip_forward", 1)
        sysctl(node.path, f"net.ipv4.conf.{node.uplink}.forwarding", 1)
        if ipv6_forwarding:
            sysctl(node.path, "net.ipv6.conf.all.forwarding", 1)
    except BaseException:
        delete_node(node)
        raise
    return node


def delete_node(node: Node) -> None:
    """Remove a node: its processes, namespace, uplink (both ends) and fabric routes."""
    for cidr in node.fabric_routes:
        netns.ip("-n", node.fabric, "route", "del", cidr, check=False)
    remove_netns(node.name)  # deleting the namespace deletes the uplink and with it fab<N>
    netns.ip("-n", node.fabric, "link", "del", node.fabric_link, check=False)


def create_netns(tag: str = "pod") -> str:
    """A bare namespace (loopback up) for a container: returns its path."""
    name = netns.add(unique_name(tag))
    return f"{netns.NETNS_DIR}/{name}"


# --- files ----------------------------------------------------------------------------------------


def write_conflist(directory: str | Path, conflist: dict) -> Path:
    """Write a NetworkConfigList as <directory>/<name>.conflist (the directory is created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{conflist['name']}.conflist"
    path.write_text(json.dumps(conflist, indent=2) + "\n")
    return path


def host_local_addresses(data_dir: str | Path, network: str) -> list[str]:
    """The addresses host-local holds for a network (one file per address in its dataDir)."""
    directory = Path(data_dir) / network
    if not directory.is_dir():
        return []
    held = []
    for path in directory.iterdir():
        try:
            held.append(str(ipaddress.ip_address(path.name)))
        except ValueError:
            pass  # its lock and last_reserved_ip.<range> files
    return sorted(held)


def make_busybox_rootfs(directory: str | Path) -> Path:
    """A container root filesystem of busybox-static: /bin/busybox and a link for every applet."""
    root = Path(directory)
    bindir = root / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, bindir / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            link = bindir / applet
            if not link.exists():
                link.symlink_to("busybox")
    for d in ("etc", "tmp", "www", "proc", "sys", "dev", "run"):
        (root / d).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    return root


# --- traffic --------------------------------------------------------------------------------------


def http_get(netns_path: str | None, url: str, timeout: int = 5) -> ClientRun:
    """busybox wget of a URL from inside a namespace (None: the fabric, where the session runs).

    The time limit is coreutils' `timeout` (exit 124): Debian's static busybox 1.35 wget crashes
    (SIGSEGV) whenever its own -T option is given.
    """
    return run_in(netns_path, ["timeout", str(timeout), BUSYBOX, "wget", "-q", "-O", "-", url], timeout=timeout + 30)


def ping(netns_path: str | None, address: str, count: int = 1, wait: int = 5) -> ClientRun:
    """iputils ping from inside a namespace; rc 0 when a reply came back."""
    return run_in(netns_path, ["ping", "-n", "-c", str(count), "-W", str(wait), address], timeout=count * wait + 30)


def wait_until(probe, what: str, attempts: int = 100, interval: float = 0.1):
    """Call probe() until it returns a true value; raise naming `what` if it never does.

    For readiness (a server that has not bound yet), never as a measurement.
    """
    last = None
    for _ in range(attempts):
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen (last probe: {last!r})")


@contextmanager
def http_server(netns_path: str, directory: str | Path, content: str, port: int = 8080) -> Iterator[subprocess.Popen]:
    """busybox httpd serving `content` as / on 0.0.0.0:<port> inside a namespace, until the block ends.

    Waits until the server answers inside its own namespace; always stops it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.html").write_text(content)
    proc = subprocess.Popen(
        in_netns(netns_path, [BUSYBOX, "httpd", "-f", "-p", f"0.0.0.0:{port}", "-h", str(directory)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        def answered():
            if proc.poll() is not None:
                raise AssertionError(f"httpd exited {proc.returncode}: {proc.stderr.read().decode()}")
            return http_get(netns_path, f"http://127.0.0.1:{port}/", timeout=2).stdout == content

        wait_until(answered, f"httpd on port {port} in {netns_path} answering")
        yield proc
    finally:
        stop_process(proc)
        proc.stderr.close()


# --- checks shared by the client tests -----------------------------------------------------------

PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
BANDWIDTH = {"type": "bandwidth", "capabilities": {"bandwidth": True}}
# Rates in bit/s, bursts in bits (the bandwidth plugin's units).
SHAPING = {"ingressRate": 100_000_000, "ingressBurst": 1_000_000, "egressRate": 100_000_000, "egressBurst": 1_000_000}


def links(netns_path: str, *selector: str) -> list[dict]:
    """`ip -j link show ...` inside a namespace."""
    return run_in(netns_path, ["ip", "-j", "link", "show", *selector]).json()


def ipv4_addresses(netns_path: str, ifname: str) -> list[str]:
    (link,) = run_in(netns_path, ["ip", "-j", "-4", "addr", "show", "dev", ifname]).json()
    return [a["local"] for a in link["addr_info"]]


def has_link(netns_path: str, ifname: str) -> bool:
    return run_in(netns_path, ["ip", "link", "show", "dev", ifname]).rc == 0


def host_interfaces(result: dict) -> list[str]:
    """The result's interfaces outside the sandbox: the main plugin's host veth first, then bandwidth's ifb."""
    return [i["name"] for i in result["interfaces"] if not i.get("sandbox")]


def assert_shaped_and_port_mapped(node: Node, pod: str, pod_ip: str, result: dict, www: str | Path, content: str) -> None:
    """After an ADD of <main plugin> + portmap + bandwidth (host port 18080 to the pod's 8080): the
    shaping qdiscs are on the host veth, the result's other host interfaces are bandwidth's ifbs,
    and a server in the pod is reached through the host port from the fabric and from the node,
    and directly from the node."""
    host_if, *others = host_interfaces(result)
    qdiscs = {q["kind"] for q in run_in(node.path, ["tc", "-j", "qdisc", "show", "dev", host_if]).json()}
    assert {"tbf", "ingress"} <= qdiscs, qdiscs
    assert [link["ifname"] for link in links(node.path, "type", "ifb")] == others != []
    with http_server(pod, www, content, port=8080):
        # From outside the node (the fabric) to the node address and host port: portmap's DNAT.
        assert http_get(None, f"http://{node.address}:18080/").ok().stdout == content
        # From the node itself to the same host port (portmap's OUTPUT rule).
        assert http_get(node.path, f"http://{node.address}:18080/").ok().stdout == content
        assert http_get(node.path, f"http://{pod_ip}:8080/").ok().stdout == content
    ping(node.path, pod_ip).ok()


def assert_shaping_and_port_mapping_gone(node: Node, network: str, pod: str, pod_ip: str) -> None:
    """After the DEL of such an attachment: no pod interface, no ifb, no NAT rule for the pod or
    the host port, no libcni cache entry, and the host port answers no more."""
    assert not has_link(pod, "eth0")
    assert links(node.path, "type", "ifb") == []
    nat = run_in(node.path, ["iptables-save", "-t", "nat"]).ok().stdout
    assert pod_ip not in nat and "18080" not in nat, nat
    assert libcni_cache_files(network, cnitool_container_id(pod)) == []
    assert http_get(None, f"http://{node.address}:18080/", timeout=2).rc != 0


# --- cnitool --------------------------------------------------------------------------------------


def find_cnitool() -> str | None:
    """cnitool from $CNITOOL, the PATH or /usr/local/bin (where scripts/build-cnitool.sh puts it)."""
    for candidate in (os.environ.get("CNITOOL"), shutil.which("cnitool"), "/usr/local/bin/cnitool"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def cnitool_container_id(netns_path: str) -> str:
    """The container ID cnitool gives an attachment: derived from the netns path."""
    digest = hashlib.sha512(os.path.abspath(netns_path).encode()).hexdigest()
    return f"cnitool-{digest[:20]}"


def libcni_cache_files(network: str, container_id: str) -> list[Path]:
    """libcni's cached results (and config) for one attachment of a network."""
    results = Path(LIBCNI_CACHE_DIR) / "results"
    if not results.is_dir():
        return []
    return sorted(results.glob(f"{network}-{container_id}-*"))


def cnitool(
    command: str,
    network: str,
    netns_path: str,
    *,
    node: Node,
    netconf_dir: str | Path,
    cni_path: str = DEFAULT_CNI_PATH,
    cap_args: dict | None = None,
    cni_args: str | None = None,
    ifname: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> ClientRun:
    """Run `cnitool add|check|del <network> <netns path>` inside a node namespace.

    NETCONFPATH is `netconf_dir` (the conflist named `network` must be there), CNI_PATH `cni_path`
    (the venv's bin, then /usr/lib/cni), CAP_ARGS `cap_args` as JSON (it becomes the plugins'
    runtimeConfig, filtered by each plugin's capabilities), CNI_ARGS `cni_args` ("K=V;K2=V2"),
    CNI_IFNAME `ifname` (cnitool's default: eth0). `env` adds variables.
    """
    if command not in ("add", "check", "del"):
        raise ValueError(f"cnitool has no command {command!r}")
    tool = find_cnitool()
    if tool is None:
        raise RuntimeError("cnitool not found: run scripts/build-cnitool.sh")
    full_env = {
        **plugin_env(),
        "NETCONFPATH": str(netconf_dir),
        "CNI_PATH": cni_path,
    }
    if cap_args is not None:
        full_env["CAP_ARGS"] = json.dumps(cap_args)
    if cni_args is not None:
        full_env["CNI_ARGS"] = cni_args
    if ifname is not None:
        full_env["CNI_IFNAME"] = ifname
    full_env.update(env or {})
    return run_in(node.path, [tool, command, network, netns_path], env=full_env, timeout=timeout)


@contextmanager
def cnitool_attachment(network: str, netns_path: str, **kwargs) -> Iterator[ClientRun]:
    """`cnitool add` on entry (yields its run, even a failed one: assert with `.ok()` or `.json()`), and always
    `cnitool del` with the same arguments on exit, then drops libcni's cached result if DEL left it.

    kwargs are those of `cnitool` (node, netconf_dir, cap_args, ...). A test that checks DEL itself
    calls `cnitool("del", ...)` inside the block; the second DEL on exit is then a repeated DEL.
    """
    added = cnitool("add", network, netns_path, **kwargs)
    try:
        yield added
    finally:
        try:
            cnitool("del", network, netns_path, **kwargs)
        finally:
            for path in libcni_cache_files(network, cnitool_container_id(netns_path)):
                path.unlink(missing_ok=True)


# --- podman ---------------------------------------------------------------------------------------


def find_podman() -> str | None:
    return shutil.which("podman")


@dataclass
class Container:
    """A container a test started with `Podman.run`."""

    name: str
    network: str
    started: ClientRun

    def ok(self) -> "Container":
        """Fail the test unless `podman run` succeeded; returns self."""
        self.started.ok()
        return self


class Podman:
    """podman with the CNI backend, run inside a node namespace, its config in test-owned files.

    `workdir` gets `containers.conf` (passed as CONTAINERS_CONF, which podman 4.3 reads instead of
    every other containers.conf) and `net.d/` (its network_config_dir). The config sets
    network_backend "cni" (netavark may be installed too: without this podman would pick it),
    cni_plugin_dirs `plugin_dirs` and runtime runc. Storage and the container database are the
    machine's; containers are named calico-test-ctr<n>-<pid>, and `cleanup` removes every container
    this object started.
    """

    def __init__(self, node: Node, workdir: str | Path, plugin_dirs: Sequence[str] = PLUGIN_DIRS, podman: str | None = None):
        self.node = node
        self.workdir = Path(workdir)
        self.network_dir = self.workdir / "net.d"
        self.network_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.workdir / "containers.conf"
        self.plugin_dirs = list(plugin_dirs)
        self.binary = podman or find_podman() or "podman"
        self.containers: list[str] = []
        self.conf_path.write_text(containers_conf(self.network_dir, self.plugin_dirs))

    @property
    def env(self) -> dict[str, str]:
        return {**plugin_env(), "CONTAINERS_CONF": str(self.conf_path), "HOME": os.environ.get("HOME", "/root")}

    def __call__(self, *args: str, timeout: float = 120) -> ClientRun:
        """`podman --runtime runc <args>` inside the node namespace, with this object's config."""
        return self.node.run([self.binary, *PODMAN_GLOBAL, *args], env=self.env, timeout=timeout)

    def write_network(self, conflist: dict) -> Path:
        """Put a conflist in podman's network_config_dir: the network is named by its `name`."""
        return write_conflist(self.network_dir, conflist)

    def run(self, network: str, rootfs: str | Path, command: Sequence[str], *, options: Sequence[str] = (), name: str | None = None) -> Container:
        """`podman run -d` of `command` from a local rootfs on a network; returns the Container
        (check `.started` or call `.ok()`); `cleanup` removes it whatever happened."""
        name = name or unique_name("ctr")
        self.containers.append(name)
        started = self(
            "run", "-d", "--name", name, "--network", network, *PODMAN_ULIMITS, *options,
            "--rootfs", str(rootfs), *command,
        )
        return Container(name, network, started)

    def rm(self, name: str) -> ClientRun:
        """`podman rm --force --time 0`: stops the container (CNI DEL) and removes it."""
        return self("rm", "--force", "--time", "0", name)

    def exists(self, name: str) -> bool:
        return self("container", "exists", name).rc == 0

    def inspect(self, name: str) -> dict:
        (info,) = self("container", "inspect", name).json()
        return info

    def network_settings(self, container: Container) -> dict:
        """What podman recorded for the container on its network (IPAddress, Gateway,
        GlobalIPv6Address, MacAddress, ...)."""
        return self.inspect(container.name)["NetworkSettings"]["Networks"][container.network]

    def address(self, container: Container) -> str:
        """The IPv4 address podman recorded for the container on its network."""
        return self.network_settings(container)["IPAddress"]

    def exec(self, name: str, *command: str) -> ClientRun:
        return self("exec", name, *command)

    def cleanup(self) -> None:
        """Remove every container this object started; raise if one is still there."""
        left = []
        for name in reversed(self.containers):
            self("rm", "--force", "--ignore", "--time", "0", name)
            if self.exists(name):
                left.append(name)
        self.containers.clear()
        if left:
            raise RuntimeError(f"podman could not remove {left}")


def containers_conf(network_dir: str | Path, plugin_dirs: Sequence[str]) -> str:
    """A containers.conf for the CNI backend with test-owned network config and plugin dirs."""
    dirs = ", ".join(json.dumps(d) for d in plugin_dirs)
    return (
        "[network]\n"
        'network_backend = "cni"\n'
        f"network_config_dir = {json.dumps(str(network_dir))}\n"
        f"cni_plugin_dirs = [{dirs}]\n"
        "\n[engine]\n"
        'runtime = "runc"\n'
    )


def sweep_stale_containers(podman: str, workdir: str | Path) -> None:
    """Remove calico-test-* containers left by killed test runs (their pid is gone)."""
    env = {"PATH": os.environ.get("PATH", ""), "CONTAINERS_CONF": str(Path(workdir) / "containers.conf")}
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "containers.conf").write_text(containers_conf(Path(workdir) / "net.d", PLUGIN_DIRS))
    listed = subprocess.run([podman, "ps", "-a", "--format", "{{.Names}}"], env=env, capture_output=True, text=True, timeout=60)
    for name in listed.stdout.split():
        if not name.startswith(netns.PREFIX):
            continue
        pid = name.rsplit("-", 1)[-1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run([podman, *PODMAN_GLOBAL, "rm", "--force", "--ignore", "--time", "0", name], env=env, capture_output=True, timeout=60)
